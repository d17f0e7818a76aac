-- Event segments (store/segments.py; docs/data-model.md "Storage").
-- The native event table becomes `event_log`; `events` becomes a view over it and over every
-- imported segment (an immutable Parquet file next to the store plus, for a file referenced as
-- imported, a narrow side table `event_segment_<id>` with the computed columns). Every reader
-- keeps reading `events`; writers insert into `event_log`.

ALTER TABLE events RENAME TO event_log;

CREATE TABLE event_segments (
    segment_id   INTEGER NOT NULL,      -- names the file (<id>.parquet) and the side table
    kind         VARCHAR NOT NULL,      -- 'reference': the imported file as is + side table
    file         VARCHAR NOT NULL,      -- relative to the store's segments folder
    columns      JSON NOT NULL,         -- reference: {stored column: column of the file}
    source       VARCHAR NOT NULL,      -- the import's source, for rows without one
    received_at  TIMESTAMPTZ NOT NULL,
    row_count    BIGINT NOT NULL,
    first_seq    BIGINT NOT NULL,
    last_seq     BIGINT NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL
);

CREATE VIEW events AS SELECT * FROM event_log;
-- What the deduplication looks up: narrow, so it never reads a segment's wide columns.
CREATE VIEW event_keys AS SELECT event_id, "timestamp" FROM event_log;
