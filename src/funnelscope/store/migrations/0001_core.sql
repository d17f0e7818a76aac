-- Core schema: events, identities, facts, quarantine, imports. Timestamps are UTC (TIMESTAMPTZ,
-- every connection runs with TimeZone = 'UTC'). Money is DECIMAL(18,4) with an ISO currency code.

CREATE TABLE meta (key VARCHAR PRIMARY KEY, value VARCHAR NOT NULL);
INSERT INTO meta VALUES ('store_currency', 'USD');

CREATE TABLE events (
    event_id      VARCHAR NOT NULL,
    "timestamp"   TIMESTAMPTZ NOT NULL,
    received_at   TIMESTAMPTZ NOT NULL,
    event         VARCHAR NOT NULL,
    raw_event     VARCHAR,
    user_id       VARCHAR,
    anonymous_id  VARCHAR,
    person_id     INTEGER NOT NULL,
    session_id    VARCHAR,
    properties    JSON,
    page_url      VARCHAR,
    page_path     VARCHAR,
    page_title    VARCHAR,
    referrer      VARCHAR,
    utm_source    VARCHAR,
    utm_medium    VARCHAR,
    utm_campaign  VARCHAR,
    utm_term      VARCHAR,
    utm_content   VARCHAR,
    device_type   VARCHAR,
    os            VARCHAR,
    browser       VARCHAR,
    country       VARCHAR,
    channel       VARCHAR NOT NULL,
    revenue       DECIMAL(18, 4),
    currency      VARCHAR,
    order_id      VARCHAR,
    cart_id       VARCHAR,
    product_id    VARCHAR,
    items         STRUCT(product_id VARCHAR, sku VARCHAR, name VARCHAR, category VARCHAR,
                         brand VARCHAR, variant VARCHAR, price DECIMAL(18, 4), quantity INTEGER)[],
    source        VARCHAR,
    seq           BIGINT NOT NULL  -- arrival order: the incremental layout refresh reads seq > watermark
);

-- Every distinct id ever seen (user ids and anonymous ids) -> its dense person id.
CREATE TABLE identities (
    distinct_id  VARCHAR NOT NULL,
    is_user      BOOLEAN NOT NULL,
    person_id    INTEGER NOT NULL,
    first_seen   TIMESTAMPTZ NOT NULL
);

-- Stitching: person_id -> canonical person id. Dense ids make the lookup an array gather.
CREATE TABLE person_map (
    person_id     INTEGER NOT NULL,
    canonical_id  INTEGER NOT NULL
);

CREATE TABLE ad_spend (
    "date"       DATE NOT NULL,
    channel      VARCHAR NOT NULL,
    source       VARCHAR,
    campaign     VARCHAR,
    impressions  BIGINT NOT NULL,
    clicks       BIGINT NOT NULL,
    spend        DECIMAL(18, 4) NOT NULL,
    currency     VARCHAR NOT NULL,
    reach        BIGINT
);

CREATE TABLE email_campaigns (
    campaign_id  VARCHAR NOT NULL,
    name         VARCHAR,
    sent_at      TIMESTAMPTZ NOT NULL,
    recipients   BIGINT NOT NULL,
    delivered    BIGINT NOT NULL
);

CREATE TABLE survey_responses (
    response_id  VARCHAR NOT NULL,
    answered_at  TIMESTAMPTZ NOT NULL,
    user_id      VARCHAR,
    anonymous_id VARCHAR,
    person_id    INTEGER,
    score        INTEGER NOT NULL,
    comment      VARCHAR,
    survey       VARCHAR NOT NULL DEFAULT 'nps'
);

CREATE TABLE products (
    product_id  VARCHAR NOT NULL,
    sku         VARCHAR,
    name        VARCHAR,
    category    VARCHAR,
    brand       VARCHAR,
    price       DECIMAL(18, 4),
    currency    VARCHAR
);

-- rate = units of the store currency for one unit of `currency`, valid from `date` on.
CREATE TABLE currency_rates (
    "date"    DATE NOT NULL,
    currency  VARCHAR NOT NULL,
    rate      DOUBLE NOT NULL
);

CREATE TABLE quarantine (
    quarantined_at  TIMESTAMPTZ NOT NULL,
    source          VARCHAR NOT NULL,
    row_number      BIGINT,
    reason_code     VARCHAR NOT NULL,
    message         VARCHAR NOT NULL,
    payload         BLOB
);

CREATE TABLE imports (
    import_id    VARCHAR NOT NULL,
    started_at   TIMESTAMPTZ NOT NULL,
    finished_at  TIMESTAMPTZ,
    source       VARCHAR NOT NULL,
    kind         VARCHAR NOT NULL,
    rows         BIGINT NOT NULL,
    accepted     BIGINT NOT NULL,
    rejected     BIGINT NOT NULL,
    inserted     BIGINT NOT NULL
);
