-- Sessions (analysis/sessions.py; docs/sessions.md). A cache, never a source of truth: the rows
-- are the result of the one sessions SQL over the stitched events, rebuilt whenever the events
-- or the stitching change (sessions_state.fingerprint) or another timeout is asked for.

CREATE TABLE sessions (
    person_id         INTEGER NOT NULL,   -- canonical (stitched) person
    session_number    BIGINT NOT NULL,    -- 1 = the person's first session ever
    started_at        TIMESTAMPTZ NOT NULL,
    ended_at          TIMESTAMPTZ NOT NULL,
    first_event_id    VARCHAR NOT NULL,
    last_event_id     VARCHAR NOT NULL,
    landing_page      VARCHAR,
    exit_page         VARCHAR,
    duration_us       BIGINT NOT NULL,
    event_count       BIGINT NOT NULL,
    page_count        BIGINT NOT NULL,
    interactions      BIGINT NOT NULL,    -- events other than page/product/list/promotion views
    product_views     BIGINT NOT NULL,
    cart_adds         BIGINT NOT NULL,
    first_add_at      TIMESTAMPTZ,
    first_checkout_at TIMESTAMPTZ,
    timed_page_us     BIGINT NOT NULL,
    timed_pages       BIGINT NOT NULL,
    channel           VARCHAR NOT NULL,
    utm_source        VARCHAR,
    utm_medium        VARCHAR,
    utm_campaign      VARCHAR,
    device_type       VARCHAR,
    country           VARCHAR,
    is_new_visitor    BOOLEAN NOT NULL
);

CREATE TABLE sessions_state (
    timeout_us   BIGINT NOT NULL,
    fingerprint  VARCHAR NOT NULL
);
