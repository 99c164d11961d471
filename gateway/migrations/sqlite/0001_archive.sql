-- The archive (SQLite): conversations with their figures, lifecycle events, messages with a
-- full-text index, operators' status changes, API keys, remembered idempotent answers.

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
    created_at INTEGER NOT NULL,
    assigned_at INTEGER,
    closed_at INTEGER,
    first_visitor_ts INTEGER,
    first_operator_ts INTEGER,
    message_count INTEGER NOT NULL DEFAULT 0,
    last_seq INTEGER NOT NULL DEFAULT 0,
    version INTEGER NOT NULL DEFAULT 0,
    snapshot TEXT NOT NULL
);
CREATE INDEX conversations_site_created ON conversations (site, created_at DESC, id DESC);
CREATE INDEX conversations_site_visitor ON conversations (site, visitor_id);
CREATE INDEX conversations_site_closed ON conversations (site, closed_at);

CREATE VIRTUAL TABLE conversations_fts USING fts5 (
    visitor_name, visitor_email, content = 'conversations', content_rowid = 'rowid'
);
CREATE TRIGGER conversations_fts_insert AFTER INSERT ON conversations BEGIN
    INSERT INTO conversations_fts (rowid, visitor_name, visitor_email)
    VALUES (new.rowid, new.visitor_name, new.visitor_email);
END;
CREATE TRIGGER conversations_fts_delete AFTER DELETE ON conversations BEGIN
    INSERT INTO conversations_fts (conversations_fts, rowid, visitor_name, visitor_email)
    VALUES ('delete', old.rowid, old.visitor_name, old.visitor_email);
END;
CREATE TRIGGER conversations_fts_update AFTER UPDATE OF visitor_name, visitor_email ON conversations BEGIN
    INSERT INTO conversations_fts (conversations_fts, rowid, visitor_name, visitor_email)
    VALUES ('delete', old.rowid, old.visitor_name, old.visitor_email);
    INSERT INTO conversations_fts (rowid, visitor_name, visitor_email)
    VALUES (new.rowid, new.visitor_name, new.visitor_email);
END;

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
    ts INTEGER NOT NULL,
    by_id TEXT,
    to_id TEXT,
    reason TEXT,
    PRIMARY KEY (conv, key)
);

CREATE TABLE messages (
    id INTEGER PRIMARY KEY,
    conv TEXT NOT NULL,
    seq INTEGER NOT NULL,
    site TEXT NOT NULL,
    role TEXT NOT NULL,
    author_id TEXT NOT NULL,
    author_name TEXT,
    text TEXT NOT NULL,
    ts INTEGER NOT NULL,
    cid TEXT,
    code TEXT,
    args TEXT,
    UNIQUE (conv, seq)
);

CREATE VIRTUAL TABLE messages_fts USING fts5 (text, content = 'messages', content_rowid = 'id');
CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages BEGIN
    INSERT INTO messages_fts (rowid, text) VALUES (new.id, new.text);
END;
CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages BEGIN
    INSERT INTO messages_fts (messages_fts, rowid, text) VALUES ('delete', old.id, old.text);
END;

CREATE TABLE operator_events (
    site TEXT NOT NULL,
    operator TEXT NOT NULL,
    name TEXT NOT NULL,
    status TEXT NOT NULL,
    online INTEGER NOT NULL,
    ts INTEGER NOT NULL
);
CREATE INDEX operator_events_site_ts ON operator_events (site, ts);

CREATE TABLE api_keys (
    id TEXT PRIMARY KEY,
    site TEXT,
    name TEXT NOT NULL,
    scopes TEXT NOT NULL,
    hash TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    last_used_at INTEGER,
    revoked_at INTEGER
);

CREATE TABLE idempotency (
    scope TEXT NOT NULL,
    key TEXT NOT NULL,
    status INTEGER NOT NULL,
    body TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (scope, key)
);
