-- Several active hub replicas, SQLite flavour. Keep in step with ../postgres/0003_bundle_replicas.sql.
-- Each replica keeps its own CA and JWT keys and records here the authorities it publishes;
-- the stored own bundle (table `bundles`) is the union of every replica's unexpired
-- authorities, recomputed in the write transaction of each publication.

-- One row per replica (its id is kept in the replica's data directory).
CREATE TABLE bundle_replicas (
    replica_id TEXT PRIMARY KEY,
    trust_domain TEXT NOT NULL,
    refresh_hint INTEGER CHECK (refresh_hint > 0),
    published_at INTEGER NOT NULL
);

-- The authorities a replica publishes. `kind` is 'x509' (key_id: SHA-256 of the certificate,
-- hex) or 'jwt' (key_id: the kid); `document` is SPIFFE bundle JSON holding just this
-- authority. An authority leaves the own bundle at `not_after`.
CREATE TABLE bundle_replica_authorities (
    replica_id TEXT NOT NULL REFERENCES bundle_replicas (replica_id) ON DELETE CASCADE,
    kind TEXT NOT NULL CHECK (kind IN ('x509', 'jwt')),
    key_id TEXT NOT NULL,
    document TEXT NOT NULL,
    not_after INTEGER NOT NULL,
    PRIMARY KEY (replica_id, kind, key_id)
);
CREATE INDEX bundle_replica_authorities_not_after ON bundle_replica_authorities (not_after);
