-- Read tables. Each is a function of event_log alone and is rebuilt from it on demand.
CREATE TABLE projector_checkpoints (
    name           TEXT PRIMARY KEY,
    position       INTEGER NOT NULL,
    schema_version INTEGER NOT NULL
);

CREATE TABLE organizations (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL,
    slug       TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    version    INTEGER NOT NULL
);

CREATE TABLE api_keys (
    id              TEXT PRIMARY KEY,
    organization_id TEXT NOT NULL,
    name            TEXT NOT NULL,
    name_key        TEXT NOT NULL,
    prefix          TEXT NOT NULL,
    last_four       TEXT NOT NULL,
    secret_hash     TEXT NOT NULL,
    permissions     TEXT NOT NULL,
    environment     TEXT NOT NULL,
    expires_at      INTEGER,
    revoked_at      INTEGER,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    version         INTEGER NOT NULL
);
CREATE UNIQUE INDEX api_keys_secret_hash ON api_keys (secret_hash);
CREATE INDEX api_keys_org_created ON api_keys (organization_id, created_at, id);
CREATE INDEX api_keys_org_name ON api_keys (organization_id, name_key, id);

-- Usage is operational data, not history: written by the API at most once a minute per key.
CREATE TABLE api_key_usage (
    key_id       TEXT PRIMARY KEY,
    last_used_at INTEGER NOT NULL
);

CREATE TABLE engagements (
    id              TEXT PRIMARY KEY,
    organization_id TEXT NOT NULL,
    name            TEXT NOT NULL,
    name_key        TEXT NOT NULL,
    description     TEXT,
    status          TEXT NOT NULL,
    client_name     TEXT,
    start_date      TEXT,
    -- start_date with '' for none, so the keyset (start_date_key, id) is total.
    start_date_key  TEXT NOT NULL,
    end_date        TEXT,
    tags            TEXT NOT NULL,
    archived_at     INTEGER,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    version         INTEGER NOT NULL
);
CREATE INDEX engagements_org_created ON engagements (organization_id, created_at, id);
CREATE INDEX engagements_org_updated ON engagements (organization_id, updated_at, id);
CREATE INDEX engagements_org_name ON engagements (organization_id, name_key, id);
CREATE INDEX engagements_org_start ON engagements (organization_id, start_date_key, id);
CREATE INDEX engagements_org_status ON engagements (organization_id, status, created_at, id);
CREATE INDEX engagements_org_client ON engagements (organization_id, client_name, created_at, id);

CREATE TABLE engagement_tags (
    engagement_id TEXT NOT NULL,
    tag           TEXT NOT NULL,
    PRIMARY KEY (engagement_id, tag)
);
CREATE INDEX engagement_tags_tag ON engagement_tags (tag, engagement_id);
