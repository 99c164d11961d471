-- The directory: a site's lines, groups, staff, catalogues and bans, one JSON document per
-- item (the gateway reads and checks them as typed values), and a version per site that
-- every change bumps, so that nodes know their copy is current.
CREATE TABLE directory (
    site       TEXT NOT NULL,
    kind       TEXT NOT NULL,
    id         TEXT NOT NULL,
    body       TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (site, kind, id)
);

CREATE TABLE directory_versions (
    site    TEXT PRIMARY KEY,
    version BIGINT NOT NULL
);

-- Staff sessions made by signing in with a password: revocable, each to its token's `sid`.
CREATE TABLE staff_sessions (
    id         TEXT PRIMARY KEY,
    site       TEXT NOT NULL,
    staff      TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    revoked_at BIGINT
);
CREATE INDEX staff_sessions_by_staff ON staff_sessions (site, staff);
