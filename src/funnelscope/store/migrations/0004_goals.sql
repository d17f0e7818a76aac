-- SMART goals, their last evaluation, status history and webhook subscriptions
-- (analysis/goals/; docs/goals.md).

CREATE TABLE goals (
    name         VARCHAR NOT NULL,
    spec         JSON NOT NULL,        -- GoalSpec.to_dict()
    owner        VARCHAR,
    kpi          VARCHAR NOT NULL,
    start_date   DATE NOT NULL,
    deadline     DATE NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL,
    updated_at   TIMESTAMPTZ NOT NULL,
    status       VARCHAR,              -- of the last check (NULL before the first)
    probability  DOUBLE,
    checked_at   TIMESTAMPTZ
);

-- One row each time a check finds a status different from the previous one (the first check
-- included): the goal's status over time.
CREATE TABLE goal_status_history (
    goal             VARCHAR NOT NULL,
    evaluated_at     TIMESTAMPTZ NOT NULL,
    status           VARCHAR NOT NULL,
    previous_status  VARCHAR,
    probability      DOUBLE,
    current_value    DOUBLE,
    target_value     DOUBLE,
    forecast_mean    DOUBLE,
    forecast_lower80 DOUBLE,
    forecast_upper80 DOUBLE
);

-- Where status changes are posted; goal NULL = every goal.
CREATE TABLE goal_webhooks (
    goal        VARCHAR,
    url         VARCHAR NOT NULL,
    secret      VARCHAR NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL
);
