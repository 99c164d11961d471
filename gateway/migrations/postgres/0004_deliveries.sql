-- What leaves the gateway for people and systems outside it: e-mails and webhook calls. A
-- delivery's id is made from what caused it (`mail:<conv>:transcript:<address>`), so the same
-- event never makes two, however often it is seen. A sender claims due deliveries for a
-- while (`lease_until`), sends, and records the attempt; a failed one is due again later.
CREATE TABLE deliveries (
    id          TEXT PRIMARY KEY,
    site        TEXT NOT NULL,
    kind        TEXT NOT NULL,
    target      TEXT NOT NULL,
    body        TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    due_at      BIGINT NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 0,
    lease_until BIGINT NOT NULL DEFAULT 0,
    done_at     BIGINT,
    failed_at   BIGINT,
    last_error  TEXT
);
CREATE INDEX deliveries_due ON deliveries (due_at) WHERE done_at IS NULL AND failed_at IS NULL;
CREATE INDEX deliveries_by_target ON deliveries (site, target, created_at);

-- Every attempt of a delivery (a webhook's delivery log).
CREATE TABLE delivery_attempts (
    delivery TEXT NOT NULL,
    n        INTEGER NOT NULL,
    at       BIGINT NOT NULL,
    ok       INTEGER NOT NULL,
    status   INTEGER,
    error    TEXT,
    ms       BIGINT NOT NULL,
    PRIMARY KEY (delivery, n)
);
