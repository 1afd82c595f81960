-- Bundle revisions and dropped sequences, SQLite flavour. Keep in step with
-- ../postgres/0005_bundle_revisions_and_sequence_drops.sql.

-- Each bundle write records the change feed revision it appended: a federation refresh stores
-- its result only while the bundle it judged the fetched one against is still stored (compare
-- and swap), so a `bundle set` made while a fetch is in flight is not overwritten by it.
-- Feed revisions are never reused, so a bundle deleted and stored again has a new one. Rows
-- written before this migration keep 0 until their next write.
ALTER TABLE bundles ADD COLUMN revision INTEGER NOT NULL DEFAULT 0 CHECK (revision >= 0);

-- A relationship may refuse a fetched bundle without `spiffe_sequence` while the stored one has
-- a sequence (by default such a bundle is applied, as the most recent fetch, and flagged).
ALTER TABLE federation_relationships ADD COLUMN require_sequence INTEGER NOT NULL DEFAULT 0
    CHECK (require_sequence IN (0, 1));
-- Refresh status: since when the peer has stopped sending `spiffe_sequence`, and the last
-- sequence stored before it did; both cleared when a fetched bundle carries a sequence again.
ALTER TABLE federation_relationships ADD COLUMN sequence_dropped_at INTEGER;
ALTER TABLE federation_relationships ADD COLUMN sequence_dropped_after INTEGER
    CHECK (sequence_dropped_after >= 0);
