-- Tasks, wiki pages and reports; like targets and findings, every query joins the live engagement.
CREATE TABLE tasks (
    id              TEXT PRIMARY KEY,
    organization_id TEXT NOT NULL,
    engagement_id   TEXT NOT NULL,
    title           TEXT NOT NULL,
    title_key       TEXT NOT NULL,
    description     TEXT,
    status          TEXT NOT NULL,
    priority        TEXT NOT NULL,
    -- low 0, medium 1, high 2: priority sorts by rank.
    priority_rank   INTEGER NOT NULL,
    due_date        TEXT,
    -- due_date with '' for none, so the keyset (due_date_key, id) is total.
    due_date_key    TEXT NOT NULL,
    closed_at       INTEGER,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    version         INTEGER NOT NULL
);
CREATE INDEX tasks_org_created ON tasks (organization_id, created_at, id);
CREATE INDEX tasks_org_updated ON tasks (organization_id, updated_at, id);
CREATE INDEX tasks_org_due ON tasks (organization_id, due_date_key, id);
CREATE INDEX tasks_org_priority ON tasks (organization_id, priority_rank, id);
CREATE INDEX tasks_org_title ON tasks (organization_id, title_key, id);
CREATE INDEX tasks_org_status ON tasks (organization_id, status, created_at, id);
CREATE INDEX tasks_org_eng ON tasks (organization_id, engagement_id, created_at, id);

CREATE TABLE wiki_pages (
    id              TEXT PRIMARY KEY,
    organization_id TEXT NOT NULL,
    engagement_id   TEXT NOT NULL,
    title           TEXT NOT NULL,
    title_key       TEXT NOT NULL,
    slug            TEXT NOT NULL,
    content         TEXT NOT NULL,
    parent_id       TEXT,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    version         INTEGER NOT NULL
);
CREATE INDEX wiki_pages_org_eng_created ON wiki_pages (organization_id, engagement_id, created_at, id);
CREATE INDEX wiki_pages_org_eng_updated ON wiki_pages (organization_id, engagement_id, updated_at, id);
CREATE INDEX wiki_pages_org_eng_title ON wiki_pages (organization_id, engagement_id, title_key, id);
CREATE INDEX wiki_pages_org_eng_slug ON wiki_pages (organization_id, engagement_id, slug, id);
CREATE INDEX wiki_pages_parent ON wiki_pages (parent_id, id);

CREATE TABLE reports (
    id              TEXT PRIMARY KEY,
    organization_id TEXT NOT NULL,
    engagement_id   TEXT NOT NULL,
    title           TEXT NOT NULL,
    title_key       TEXT NOT NULL,
    format          TEXT NOT NULL,
    status          TEXT NOT NULL,
    -- The last generated document, in content_format.
    content         TEXT,
    content_format  TEXT,
    finding_count   INTEGER,
    generated_at    INTEGER,
    published_at    INTEGER,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    version         INTEGER NOT NULL
);
CREATE INDEX reports_org_created ON reports (organization_id, created_at, id);
CREATE INDEX reports_org_updated ON reports (organization_id, updated_at, id);
CREATE INDEX reports_org_title ON reports (organization_id, title_key, id);
CREATE INDEX reports_org_status ON reports (organization_id, status, created_at, id);
CREATE INDEX reports_org_eng ON reports (organization_id, engagement_id, created_at, id);
