-- Federation groups, SQLite flavour. Keep in step with ../postgres/0002_federation_groups.sql.
-- An entry may federate with named groups of trust domains and with every relationship of the
-- hub, besides its own list: what it federates with then follows the groups' membership and
-- the relationships without the entry being edited.

-- The change feed gains the kind `federation_group` (key: the group name). SQLite cannot alter
-- a CHECK constraint, so the table is rebuilt with its rows.
CREATE TABLE changes_new (
    revision INTEGER PRIMARY KEY,
    at INTEGER NOT NULL,
    kind TEXT NOT NULL
        CHECK (kind IN ('bundle', 'federation', 'entry', 'agent', 'federation_group')),
    key TEXT NOT NULL
);
INSERT INTO changes_new (revision, at, kind, key) SELECT revision, at, kind, key FROM changes;
DROP TABLE changes;
ALTER TABLE changes_new RENAME TO changes;
CREATE INDEX changes_at ON changes (at);

-- Named groups of trust domains; each member has a federation relationship.
CREATE TABLE federation_groups (
    name TEXT PRIMARY KEY,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);

CREATE TABLE federation_group_members (
    group_name TEXT NOT NULL REFERENCES federation_groups (name) ON DELETE CASCADE,
    trust_domain TEXT NOT NULL REFERENCES federation_relationships (trust_domain),
    PRIMARY KEY (group_name, trust_domain)
);
CREATE INDEX federation_group_members_trust_domain ON federation_group_members (trust_domain);

-- The federation groups an entry federates with.
CREATE TABLE entry_federation_groups (
    entry_id TEXT NOT NULL REFERENCES entries (id) ON DELETE CASCADE,
    group_name TEXT NOT NULL REFERENCES federation_groups (name),
    PRIMARY KEY (entry_id, group_name)
);
CREATE INDEX entry_federation_groups_group_name ON entry_federation_groups (group_name);

-- Whether an entry federates with every trust domain the hub has a relationship with.
ALTER TABLE entries ADD COLUMN federates_with_all INTEGER NOT NULL DEFAULT 0
    CHECK (federates_with_all IN (0, 1));
