-- Targets and findings. Rows of a deleted engagement stay until rebuilt; every query joins the
-- live engagement so they answer 404 (the engagements row is deleted with the engagement).
CREATE TABLE targets (
    id              TEXT PRIMARY KEY,
    organization_id TEXT NOT NULL,
    engagement_id   TEXT NOT NULL,
    type            TEXT NOT NULL,
    value           TEXT NOT NULL,
    -- lowercase value: the `q` filter and the `value` sort.
    value_key       TEXT NOT NULL,
    port            BIGINT,
    protocol        TEXT,
    in_scope        BIGINT NOT NULL,
    tags            TEXT NOT NULL,
    notes           TEXT,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    version         BIGINT NOT NULL
);
CREATE INDEX targets_org_eng_created ON targets (organization_id, engagement_id, created_at, id);
CREATE INDEX targets_org_eng_updated ON targets (organization_id, engagement_id, updated_at, id);
CREATE INDEX targets_org_eng_value ON targets (organization_id, engagement_id, value_key, id);
CREATE INDEX targets_org_eng_type ON targets (organization_id, engagement_id, type, created_at, id);

CREATE TABLE target_tags (
    target_id TEXT NOT NULL,
    tag       TEXT NOT NULL,
    PRIMARY KEY (target_id, tag)
);
CREATE INDEX target_tags_tag ON target_tags (tag, target_id);

CREATE TABLE findings (
    id                  TEXT PRIMARY KEY,
    organization_id     TEXT NOT NULL,
    engagement_id       TEXT NOT NULL,
    title               TEXT NOT NULL,
    title_key           TEXT NOT NULL,
    severity            TEXT NOT NULL,
    -- critical 4 … info 0: severity sorts by rank.
    severity_rank       BIGINT NOT NULL,
    cvss_vector         TEXT,
    cvss_version        TEXT,
    -- score × 10 as an integer (exact on both backends), -1 without a vector so the keyset is total.
    cvss_score          BIGINT NOT NULL,
    cwe                 TEXT NOT NULL,
    cve                 TEXT NOT NULL,
    description         TEXT,
    impact              TEXT,
    remediation         TEXT,
    steps_to_reproduce  TEXT,
    refs                TEXT NOT NULL,
    affected_target_ids TEXT NOT NULL,
    status              TEXT NOT NULL,
    review_status       TEXT NOT NULL,
    retest_notes        TEXT,
    tags                TEXT NOT NULL,
    opened_at           BIGINT,
    remediated_at       BIGINT,
    closed_at           BIGINT,
    created_at          BIGINT NOT NULL,
    updated_at          BIGINT NOT NULL,
    version             BIGINT NOT NULL
);
CREATE INDEX findings_org_created ON findings (organization_id, created_at, id);
CREATE INDEX findings_org_updated ON findings (organization_id, updated_at, id);
CREATE INDEX findings_org_rank ON findings (organization_id, severity_rank, id);
CREATE INDEX findings_org_score ON findings (organization_id, cvss_score, id);
CREATE INDEX findings_org_title ON findings (organization_id, title_key, id);
CREATE INDEX findings_org_status ON findings (organization_id, status, created_at, id);
-- engagement_id last: the live-engagement check and the page-mode count stay index-only.
CREATE INDEX findings_org_severity_score ON findings (organization_id, severity, cvss_score, id, engagement_id);
CREATE INDEX findings_org_severity_created ON findings (organization_id, severity, created_at, id);
CREATE INDEX findings_org_review ON findings (organization_id, review_status, created_at, id);
CREATE INDEX findings_org_eng_created ON findings (organization_id, engagement_id, created_at, id);
CREATE INDEX findings_org_eng_rank ON findings (organization_id, engagement_id, severity_rank, cvss_score, id);

-- Multi-valued filters.
CREATE TABLE finding_tags (
    finding_id TEXT NOT NULL,
    tag        TEXT NOT NULL,
    PRIMARY KEY (finding_id, tag)
);
CREATE INDEX finding_tags_tag ON finding_tags (tag, finding_id);
CREATE TABLE finding_cwes (
    finding_id TEXT NOT NULL,
    cwe        TEXT NOT NULL,
    PRIMARY KEY (finding_id, cwe)
);
CREATE INDEX finding_cwes_cwe ON finding_cwes (cwe, finding_id);
CREATE TABLE finding_cves (
    finding_id TEXT NOT NULL,
    cve        TEXT NOT NULL,
    PRIMARY KEY (finding_id, cve)
);
CREATE INDEX finding_cves_cve ON finding_cves (cve, finding_id);
CREATE TABLE finding_targets (
    finding_id TEXT NOT NULL,
    target_id  TEXT NOT NULL,
    PRIMARY KEY (finding_id, target_id)
);
CREATE INDEX finding_targets_target ON finding_targets (target_id, finding_id);
