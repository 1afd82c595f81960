-- Federation groups, PostgreSQL flavour. Keep in step with ../sqlite/0002_federation_groups.sql.
-- An entry may federate with named groups of trust domains and with every relationship of the
-- hub, besides its own list: what it federates with then follows the groups' membership and
-- the relationships without the entry being edited.

-- The change feed gains the kind `federation_group` (key: the group name).
ALTER TABLE changes DROP CONSTRAINT changes_kind_check;
ALTER TABLE changes ADD CONSTRAINT changes_kind_check
    CHECK (kind IN ('bundle', 'federation', 'entry', 'agent', 'federation_group'));

-- Named groups of trust domains; each member has a federation relationship.
CREATE TABLE federation_groups (
    name TEXT COLLATE "C" PRIMARY KEY,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE federation_group_members (
    group_name TEXT COLLATE "C" NOT NULL REFERENCES federation_groups (name) ON DELETE CASCADE,
    trust_domain TEXT COLLATE "C" NOT NULL REFERENCES federation_relationships (trust_domain),
    PRIMARY KEY (group_name, trust_domain)
);
CREATE INDEX federation_group_members_trust_domain ON federation_group_members (trust_domain);

-- The federation groups an entry federates with.
CREATE TABLE entry_federation_groups (
    entry_id TEXT COLLATE "C" NOT NULL REFERENCES entries (id) ON DELETE CASCADE,
    group_name TEXT COLLATE "C" NOT NULL REFERENCES federation_groups (name),
    PRIMARY KEY (entry_id, group_name)
);
CREATE INDEX entry_federation_groups_group_name ON entry_federation_groups (group_name);

-- Whether an entry federates with every trust domain the hub has a relationship with.
ALTER TABLE entries ADD COLUMN federates_with_all SMALLINT NOT NULL DEFAULT 0
    CHECK (federates_with_all IN (0, 1));
