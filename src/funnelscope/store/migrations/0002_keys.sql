-- API keys (keys.py; docs/collector.md "Keys").
-- Write keys are public (they ship inside web pages and apps) and identify a source: the key
-- itself is stored so `funnelscope keys list` can show it again. Read keys are secrets: only
-- their SHA-256 is stored, and the key is shown once, when created.

CREATE TABLE api_keys (
    key_id       VARCHAR PRIMARY KEY,   -- public handle used by `keys revoke`: key_<hex>
    kind         VARCHAR NOT NULL,      -- 'write' | 'read'
    source       VARCHAR NOT NULL,      -- write: the source name events are tagged with; read: a label
    prefix       VARCHAR NOT NULL,      -- the key's first characters, for display
    write_key    VARCHAR,               -- write keys only: the key itself
    secret_hash  VARCHAR,               -- read keys only: hex SHA-256 of the key
    created_at   TIMESTAMPTZ NOT NULL,
    revoked_at   TIMESTAMPTZ
);
