-- The archive (PostgreSQL): conversations with their figures, lifecycle events, messages with
-- a full-text index (tsvector, the 'simple' configuration: the sites speak several
-- languages), operators' status changes, API keys, remembered idempotent answers.

CREATE TABLE conversations (
    id TEXT PRIMARY KEY,
    site TEXT NOT NULL,
    queue TEXT NOT NULL,
    state TEXT NOT NULL,
    visitor_id TEXT NOT NULL,
    visitor_name TEXT,
    visitor_email TEXT,
    operator_id TEXT,
    outcome TEXT,
    tags TEXT NOT NULL DEFAULT '[]',
    created_at BIGINT NOT NULL,
    assigned_at BIGINT,
    closed_at BIGINT,
    first_visitor_ts BIGINT,
    first_operator_ts BIGINT,
    message_count BIGINT NOT NULL DEFAULT 0,
    last_seq BIGINT NOT NULL DEFAULT 0,
    version BIGINT NOT NULL DEFAULT 0,
    snapshot TEXT NOT NULL,
    search tsvector GENERATED ALWAYS AS (
        to_tsvector('simple', coalesce(visitor_name, '') || ' ' || coalesce(visitor_email, ''))
    ) STORED
);
CREATE INDEX conversations_site_created ON conversations (site, created_at DESC, id DESC);
CREATE INDEX conversations_site_visitor ON conversations (site, visitor_id);
CREATE INDEX conversations_site_closed ON conversations (site, closed_at);
CREATE INDEX conversations_search ON conversations USING GIN (search);

CREATE TABLE conversation_tags (
    conv TEXT NOT NULL,
    site TEXT NOT NULL,
    tag TEXT NOT NULL,
    PRIMARY KEY (conv, tag)
);
CREATE INDEX conversation_tags_site_tag ON conversation_tags (site, tag);

CREATE TABLE events (
    conv TEXT NOT NULL,
    key TEXT NOT NULL,
    site TEXT NOT NULL,
    type TEXT NOT NULL,
    ts BIGINT NOT NULL,
    by_id TEXT,
    to_id TEXT,
    reason TEXT,
    PRIMARY KEY (conv, key)
);

CREATE TABLE messages (
    id BIGSERIAL PRIMARY KEY,
    conv TEXT NOT NULL,
    seq BIGINT NOT NULL,
    site TEXT NOT NULL,
    role TEXT NOT NULL,
    author_id TEXT NOT NULL,
    author_name TEXT,
    text TEXT NOT NULL,
    ts BIGINT NOT NULL,
    cid TEXT,
    code TEXT,
    args TEXT,
    search tsvector GENERATED ALWAYS AS (to_tsvector('simple', text)) STORED,
    UNIQUE (conv, seq)
);
CREATE INDEX messages_search ON messages USING GIN (search);

CREATE TABLE operator_events (
    site TEXT NOT NULL,
    operator TEXT NOT NULL,
    name TEXT NOT NULL,
    status TEXT NOT NULL,
    online BIGINT NOT NULL,
    ts BIGINT NOT NULL
);
CREATE INDEX operator_events_site_ts ON operator_events (site, ts);

CREATE TABLE api_keys (
    id TEXT PRIMARY KEY,
    site TEXT,
    name TEXT NOT NULL,
    scopes TEXT NOT NULL,
    hash TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    last_used_at BIGINT,
    revoked_at BIGINT
);

CREATE TABLE idempotency (
    scope TEXT NOT NULL,
    key TEXT NOT NULL,
    status BIGINT NOT NULL,
    body TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (scope, key)
);
