-- Rule segments, their members and sizes over time, webhook subscriptions and the webhook outbox
-- (analysis/segments.py, webhooks.py; docs/customers.md).

CREATE TABLE segments (
    name          VARCHAR NOT NULL,
    definition    JSON NOT NULL,       -- the rule tree, as the JSON form of the rule language
    description   VARCHAR,
    created_at    TIMESTAMPTZ NOT NULL,
    updated_at    TIMESTAMPTZ NOT NULL,
    refreshed_at  TIMESTAMPTZ
);

-- Current members (canonical person ids at the last refresh).
CREATE TABLE segment_members (
    segment    VARCHAR NOT NULL,
    person_id  INTEGER NOT NULL,
    user_id    VARCHAR,
    joined_at  TIMESTAMPTZ NOT NULL
);

-- One row per refresh: the size and how many joined and left since the previous refresh.
CREATE TABLE segment_sizes (
    segment      VARCHAR NOT NULL,
    computed_at  TIMESTAMPTZ NOT NULL,
    size         BIGINT NOT NULL,
    joins        BIGINT NOT NULL,
    leaves       BIGINT NOT NULL
);

-- Where a segment's joins and leaves are posted.
CREATE TABLE segment_webhooks (
    segment     VARCHAR NOT NULL,
    url         VARCHAR NOT NULL,
    secret      VARCHAR NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL
);

-- Durable outbox: a delivery is written here first (in the same transaction as the change it
-- reports) and removed from the queue only when the receiver answered 2xx.
CREATE TABLE webhook_outbox (
    delivery_id      VARCHAR NOT NULL,
    idempotency_key  VARCHAR NOT NULL,
    url              VARCHAR NOT NULL,
    secret           VARCHAR NOT NULL,
    event_type       VARCHAR NOT NULL,
    payload          JSON NOT NULL,
    created_at       TIMESTAMPTZ,
    status           VARCHAR NOT NULL,   -- pending, delivered, failed
    attempts         INTEGER NOT NULL,
    next_attempt_at  TIMESTAMPTZ NOT NULL,
    delivered_at     TIMESTAMPTZ,
    last_status      INTEGER,
    last_error       VARCHAR
);
