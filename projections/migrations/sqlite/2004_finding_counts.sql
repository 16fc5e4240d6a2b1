-- Children of a deleted engagement now leave the read tables with it (the projectors' new schema
-- versions rebuild them), so reads no longer check per row that the engagement exists.

-- Exact page-mode totals without counting every match: the findings projector keeps one counter
-- per organization, engagement and counted filter value, in the transaction that moves the rows.
CREATE TABLE finding_counts (
    organization_id TEXT NOT NULL,
    engagement_id   TEXT NOT NULL,
    severity        TEXT NOT NULL,
    status          TEXT NOT NULL,
    review_status   TEXT NOT NULL,
    n               BIGINT NOT NULL,
    PRIMARY KEY (organization_id, engagement_id, severity, status, review_status)
);

-- An engagement's findings by severity: the index order is the list order (id breaks ties).
DROP INDEX findings_org_eng_rank;
CREATE INDEX findings_org_eng_rank ON findings (organization_id, engagement_id, severity_rank, id);
