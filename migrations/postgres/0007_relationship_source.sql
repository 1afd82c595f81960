-- Relationships through a relay, PostgreSQL flavour. Keep in step with
-- ../sqlite/0007_relationship_source.sql.

-- Where a relationship takes its foreign bundle from: 'direct', the bundle endpoint serves the
-- trust domain's own bundle (every relationship before this migration), or 'relay', the
-- endpoint serves a bundle map and the relationship takes the entry of its trust domain.
ALTER TABLE federation_relationships ADD COLUMN source TEXT NOT NULL DEFAULT 'direct'
    CHECK (source IN ('direct', 'relay'));
