-- fedhub registry schema, PostgreSQL flavour. Keep in step with ../sqlite/0001_initial.sql.
-- Timestamps are unix seconds; booleans are 0/1 smallints (the sqlx Any driver cannot read
-- SQLite booleans, so both schemas use integers). Identifier columns use the "C" collation so
-- they sort bytewise, as in SQLite. Shipped migrations are never edited.

-- Change feed. `change_head` is a single row holding the latest revision: every write
-- transaction updates it first, which serialises writers (also across hub replicas), so
-- revisions are gap-free and committed in revision order (a poller reading `revision > N`
-- never skips one).
CREATE TABLE change_head (
    id SMALLINT PRIMARY KEY CHECK (id = 1),
    revision BIGINT NOT NULL
);
INSERT INTO change_head (id, revision) VALUES (1, 0);

CREATE TABLE changes (
    revision BIGINT PRIMARY KEY,
    at BIGINT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('bundle', 'federation', 'entry', 'agent')),
    key TEXT COLLATE "C" NOT NULL
);
CREATE INDEX changes_at ON changes (at);

-- Bundles of every trust domain, our own and foreign ones; `document` is SPIFFE bundle JSON.
CREATE TABLE bundles (
    trust_domain TEXT COLLATE "C" PRIMARY KEY,
    document TEXT NOT NULL,
    sequence BIGINT CHECK (sequence >= 0),
    updated_at BIGINT NOT NULL
);

CREATE TABLE federation_relationships (
    trust_domain TEXT COLLATE "C" PRIMARY KEY,
    bundle_endpoint_url TEXT NOT NULL,
    profile TEXT NOT NULL CHECK (profile IN ('https_web', 'https_spiffe')),
    endpoint_spiffe_id TEXT COLLATE "C",
    extra_ca_pem TEXT,
    accept_empty_bundle SMALLINT NOT NULL CHECK (accept_empty_bundle IN (0, 1)),
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    -- refresh status
    last_attempt_at BIGINT,
    last_success_at BIGINT,
    last_error TEXT,
    consecutive_failures BIGINT NOT NULL DEFAULT 0 CHECK (consecutive_failures >= 0),
    next_refresh_at BIGINT,
    etag TEXT,
    -- refresh lease: which hub replica is fetching this relationship, until when
    lease_owner TEXT,
    lease_until BIGINT,
    CHECK ((profile = 'https_spiffe') = (endpoint_spiffe_id IS NOT NULL)),
    CHECK (profile = 'https_web' OR extra_ca_pem IS NULL)
);
CREATE INDEX federation_relationships_next_refresh_at ON federation_relationships (next_refresh_at);

-- Registration entries. `selectors` and `dns_names` are JSON arrays of strings (selectors
-- sorted); `identity_key` is the SHA-256 of spiffe_id, parent_id and the sorted selectors, so
-- the same entry cannot be registered twice.
CREATE TABLE entries (
    id TEXT COLLATE "C" PRIMARY KEY,
    spiffe_id TEXT COLLATE "C" NOT NULL,
    parent_id TEXT COLLATE "C" NOT NULL,
    selectors TEXT NOT NULL,
    identity_key TEXT NOT NULL UNIQUE,
    x509_svid_ttl BIGINT CHECK (x509_svid_ttl > 0),
    jwt_svid_ttl BIGINT CHECK (jwt_svid_ttl > 0),
    dns_names TEXT NOT NULL,
    hint TEXT,
    expires_at BIGINT,
    revision BIGINT NOT NULL CHECK (revision > 0),
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX entries_spiffe_id ON entries (spiffe_id);
CREATE INDEX entries_parent_id ON entries (parent_id);

-- The trust domains an entry federates with; each must have a federation relationship.
CREATE TABLE entry_federation (
    entry_id TEXT COLLATE "C" NOT NULL REFERENCES entries (id) ON DELETE CASCADE,
    trust_domain TEXT COLLATE "C" NOT NULL REFERENCES federation_relationships (trust_domain),
    PRIMARY KEY (entry_id, trust_domain)
);
CREATE INDEX entry_federation_trust_domain ON entry_federation (trust_domain);

-- Attested node agents. `selectors` is a JSON array of the node's selectors.
CREATE TABLE agents (
    spiffe_id TEXT COLLATE "C" PRIMARY KEY,
    attestation_type TEXT NOT NULL,
    serial TEXT,
    svid_expires_at BIGINT,
    selectors TEXT NOT NULL,
    banned SMALLINT NOT NULL CHECK (banned IN (0, 1)),
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    last_seen_at BIGINT
);

-- Join tokens: only the SHA-256 (hex) of the token is stored, never the token.
CREATE TABLE join_tokens (
    token_hash TEXT PRIMARY KEY,
    spiffe_id TEXT,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at BIGINT
);

-- Admin changes; `details` is a JSON object.
CREATE TABLE audit_log (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at BIGINT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    details TEXT NOT NULL
);
