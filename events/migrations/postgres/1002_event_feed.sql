-- Indexes for the event feed's filters and resource histories (GET /events, /{resource}/{id}/history).
CREATE INDEX event_log_org_engagement ON event_log (organization_id, engagement_id, position);
CREATE INDEX event_log_org_type ON event_log (organization_id, event_type, position);
CREATE INDEX event_log_org_resource ON event_log (organization_id, aggregate_id, position);
