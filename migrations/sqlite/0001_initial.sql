-- fedhub registry schema, SQLite flavour. Keep in step with ../postgres/0001_initial.sql.
-- Timestamps are unix seconds; booleans are 0/1 integers. Shipped migrations are never edited.

-- Change feed. `change_head` is a single row holding the latest revision: every write
-- transaction updates it first, which serialises writers, so revisions are gap-free and
-- committed in revision order (a poller reading `revision > N` never skips one).
CREATE TABLE change_head (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    revision INTEGER NOT NULL
);
INSERT INTO change_head (id, revision) VALUES (1, 0);

CREATE TABLE changes (
    revision INTEGER PRIMARY KEY,
    at INTEGER NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('bundle', 'federation', 'entry', 'agent')),
    key TEXT NOT NULL
);
CREATE INDEX changes_at ON changes (at);

-- Bundles of every trust domain, our own and foreign ones; `document` is SPIFFE bundle JSON.
CREATE TABLE bundles (
    trust_domain TEXT PRIMARY KEY,
    document TEXT NOT NULL,
    sequence INTEGER CHECK (sequence >= 0),
    updated_at INTEGER NOT NULL
);

CREATE TABLE federation_relationships (
    trust_domain TEXT PRIMARY KEY,
    bundle_endpoint_url TEXT NOT NULL,
    profile TEXT NOT NULL CHECK (profile IN ('https_web', 'https_spiffe')),
    endpoint_spiffe_id TEXT,
    extra_ca_pem TEXT,
    accept_empty_bundle INTEGER NOT NULL CHECK (accept_empty_bundle IN (0, 1)),
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    -- refresh status
    last_attempt_at INTEGER,
    last_success_at INTEGER,
    last_error TEXT,
    consecutive_failures INTEGER NOT NULL DEFAULT 0 CHECK (consecutive_failures >= 0),
    next_refresh_at INTEGER,
    etag TEXT,
    -- refresh lease: which hub replica is fetching this relationship, until when
    lease_owner TEXT,
    lease_until INTEGER,
    CHECK ((profile = 'https_spiffe') = (endpoint_spiffe_id IS NOT NULL)),
    CHECK (profile = 'https_web' OR extra_ca_pem IS NULL)
);
CREATE INDEX federation_relationships_next_refresh_at ON federation_relationships (next_refresh_at);

-- Registration entries. `selectors` and `dns_names` are JSON arrays of strings (selectors
-- sorted); `identity_key` is the SHA-256 of spiffe_id, parent_id and the sorted selectors, so
-- the same entry cannot be registered twice.
CREATE TABLE entries (
    id TEXT PRIMARY KEY,
    spiffe_id TEXT NOT NULL,
    parent_id TEXT NOT NULL,
    selectors TEXT NOT NULL,
    identity_key TEXT NOT NULL UNIQUE,
    x509_svid_ttl INTEGER CHECK (x509_svid_ttl > 0),
    jwt_svid_ttl INTEGER CHECK (jwt_svid_ttl > 0),
    dns_names TEXT NOT NULL,
    hint TEXT,
    expires_at INTEGER,
    revision INTEGER NOT NULL CHECK (revision > 0),
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE INDEX entries_spiffe_id ON entries (spiffe_id);
CREATE INDEX entries_parent_id ON entries (parent_id);

-- The trust domains an entry federates with; each must have a federation relationship.
CREATE TABLE entry_federation (
    entry_id TEXT NOT NULL REFERENCES entries (id) ON DELETE CASCADE,
    trust_domain TEXT NOT NULL REFERENCES federation_relationships (trust_domain),
    PRIMARY KEY (entry_id, trust_domain)
);
CREATE INDEX entry_federation_trust_domain ON entry_federation (trust_domain);

-- Attested node agents. `selectors` is a JSON array of the node's selectors.
CREATE TABLE agents (
    spiffe_id TEXT PRIMARY KEY,
    attestation_type TEXT NOT NULL,
    serial TEXT,
    svid_expires_at INTEGER,
    selectors TEXT NOT NULL,
    banned INTEGER NOT NULL CHECK (banned IN (0, 1)),
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    last_seen_at INTEGER
);

-- Join tokens: only the SHA-256 (hex) of the token is stored, never the token.
CREATE TABLE join_tokens (
    token_hash TEXT PRIMARY KEY,
    spiffe_id TEXT,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    used_at INTEGER
);

-- Admin changes; `details` is a JSON object.
CREATE TABLE audit_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at INTEGER NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    details TEXT NOT NULL
);
