//! The stored JSON of the domain events is stable API: these tests freeze it, and check that
//! every event's `event_type` is its serde tag.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use cqrs_es::DomainEvent;
use pwnbook_events::finding::{Cvss, FindingEvent, FindingUpdated, Transition};
use pwnbook_events::report::{ReportEvent, ReportGenerated};
use pwnbook_events::target::{TargetCreated, TargetEvent, TargetUpdated};
use pwnbook_events::task::TaskEvent;
use pwnbook_events::wiki::{WikiPageEvent, WikiPageUpdated};
use pwnbook_events::{Empty, StatusChange};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};

fn check<E: DomainEvent + Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(
    event: E,
    expected: Value,
) {
    let json = serde_json::to_value(&event).unwrap();
    assert_eq!(json, expected);
    let tag = json.as_object().unwrap().keys().next().unwrap().clone();
    assert_eq!(event.event_type(), tag);
    assert_eq!(serde_json::from_value::<E>(json).unwrap(), event);
}

fn change(from: &str, to: &str) -> StatusChange {
    StatusChange { from: from.to_owned(), to: to.to_owned() }
}

#[test]
fn target_events() {
    check(
        TargetEvent::Created(TargetCreated {
            organization_id: "org_1".to_owned(),
            engagement_id: "eng_1".to_owned(),
            kind: "ip".to_owned(),
            value: "10.0.0.1".to_owned(),
            port: Some(443),
            protocol: None,
            in_scope: true,
            tags: vec![],
            notes: None,
        }),
        json!({"target.created": {
            "organizationId": "org_1", "engagementId": "eng_1", "type": "ip", "value": "10.0.0.1",
            "port": 443, "protocol": null, "inScope": true, "tags": [], "notes": null
        }}),
    );
    check(
        TargetEvent::Updated(TargetUpdated {
            port: Some(None),
            in_scope: Some(false),
            ..TargetUpdated::default()
        }),
        json!({"target.updated": {"port": null, "inScope": false}}),
    );
    check(TargetEvent::Deleted(Empty {}), json!({"target.deleted": {}}));
}

#[test]
fn finding_events() {
    check(
        FindingEvent::Updated(FindingUpdated {
            cvss: Some(Some(Cvss {
                vector: "CVSS:3.1/AV:N".to_owned(),
                score: 6.1,
                version: "3.1".to_owned(),
            })),
            description: Some(None),
            ..FindingUpdated::default()
        }),
        json!({"finding.updated": {"cvss": {"vector": "CVSS:3.1/AV:N", "score": 6.1, "version": "3.1"}, "description": null}}),
    );
    check(
        FindingEvent::StatusChanged(Transition {
            change: change("draft", "open"),
            comment: Some("ok".to_owned()),
        }),
        json!({"finding.status_changed": {"from": "draft", "to": "open", "comment": "ok"}}),
    );
    check(
        FindingEvent::ReviewStatusChanged(Transition {
            change: change("in_progress", "ready_for_review"),
            comment: None,
        }),
        json!({"finding.review_status_changed": {"from": "in_progress", "to": "ready_for_review"}}),
    );
    check(FindingEvent::Deleted(Empty {}), json!({"finding.deleted": {}}));
}

#[test]
fn task_wiki_and_report_events() {
    check(
        TaskEvent::Closed(change("open", "closed")),
        json!({"task.closed": {"from": "open", "to": "closed"}}),
    );
    check(
        TaskEvent::Reopened(change("closed", "open")),
        json!({"task.reopened": {"from": "closed", "to": "open"}}),
    );
    check(
        TaskEvent::StatusChanged(change("open", "in_progress")),
        json!({"task.status_changed": {"from": "open", "to": "in_progress"}}),
    );
    check(
        WikiPageEvent::Updated(WikiPageUpdated { parent_id: Some(None), ..WikiPageUpdated::default() }),
        json!({"wiki_page.updated": {"parentId": null}}),
    );
    check(
        ReportEvent::Generated(ReportGenerated {
            format: "html".to_owned(),
            content: "<html></html>".to_owned(),
            finding_ids: vec!["fnd_1".to_owned()],
            generated_at: Some("2025-01-15T10:30:00.000Z".to_owned()),
        }),
        json!({"report.generated": {"format": "html", "content": "<html></html>", "findingIds": ["fnd_1"],
            "generatedAt": "2025-01-15T10:30:00.000Z"}}),
    );
    check(
        ReportEvent::StatusChanged(change("approved", "published")),
        json!({"report.status_changed": {"from": "approved", "to": "published"}}),
    );
}
