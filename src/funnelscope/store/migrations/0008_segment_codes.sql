-- Segment side tables with coded names (store/segments.py; docs/data-model.md "Storage").
-- A side table written from now on holds `person_id` and the integer codes of `event` and
-- `channel`; the names behind the codes are kept here, and `seq` is the segment's first_seq plus
-- the row's position in its file. Writing 4-byte codes costs a third of writing the names as
-- text, and reading them back through a list of names is no slower. Side tables written before
-- keep their form (seq, person_id, event and channel as text): NULL names here.

ALTER TABLE event_segments ADD COLUMN event_names VARCHAR[];
ALTER TABLE event_segments ADD COLUMN channel_names VARCHAR[];
