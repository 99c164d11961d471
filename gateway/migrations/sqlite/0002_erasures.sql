-- Visitors erased at a request: what the archive is given later about their conversations
-- from before the erasure (a close still on its way through the outbox) is kept without
-- their details and messages.
CREATE TABLE erasures (
    site TEXT NOT NULL,
    visitor TEXT NOT NULL,
    erased_at BIGINT NOT NULL,
    PRIMARY KEY (site, visitor)
);
