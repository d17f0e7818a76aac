-- Exact deduplication of known-valid loads (the collector's journal; ingest/pipeline.py,
-- docs/collector.md "Deduplication"). One row per stored event: the first 64 bits of its
-- event_id's MD5 (stable across DuckDB versions, unlike hash()) and its seq. A load looks its
-- ids' hashes up here, a scan of 16 bytes per stored event instead of every id's text, and
-- confirms a match by reading the event at that seq (a hash match is not proof: a collision).
CREATE TABLE event_id_hashes (
    h    UBIGINT NOT NULL,
    seq  BIGINT NOT NULL
);

-- Every stored event with seq < covered_seq has its row in event_id_hashes. Writers that do
-- not maintain the table (file imports, segments) leave a gap above it, which the next load
-- fills from the events view before it looks anything up; 0: nothing hashed yet (a store
-- migrated from the old layout is hashed by its first load).
CREATE TABLE event_id_hashes_state (covered_seq BIGINT NOT NULL);
INSERT INTO event_id_hashes_state VALUES (0);
