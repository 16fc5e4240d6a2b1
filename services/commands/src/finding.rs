//! The finding aggregate: a vulnerability with its CVSS score and two lifecycles (remediation
//! `status` and `reviewStatus`).

use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use pwnbook_events::finding::{Cvss, FindingCreated, FindingEvent, FindingUpdated, Transition};
use pwnbook_events::{Empty, StatusChange};
use serde::{Deserialize, Serialize};

use crate::validate::{self, Errors};
use crate::{DomainError, FieldError};

pub const SEVERITIES: &[&str] = &["critical", "high", "medium", "low", "info"];
pub const STATUSES: &[&str] = &["draft", "open", "remediated", "accepted_risk", "false_positive", "closed"];
pub const REVIEW_STATUSES: &[&str] = &["in_progress", "ready_for_review", "approved", "needs_improvement"];
const LONG_TEXT: usize = 50_000;

/// The remediation lifecycle of SPEC §3; anything else is a conflict.
pub fn status_allowed(from: &str, to: &str) -> bool {
    matches!(
        (from, to),
        ("draft", "open" | "false_positive")
            | ("open", "remediated" | "accepted_risk" | "false_positive" | "closed")
            | ("remediated", "closed" | "open")
            | ("closed" | "accepted_risk" | "false_positive", "open")
    )
}

/// The review lifecycle of SPEC §3.
pub fn review_status_allowed(from: &str, to: &str) -> bool {
    matches!(
        (from, to),
        ("in_progress", "ready_for_review")
            | ("ready_for_review", "approved" | "needs_improvement")
            | ("needs_improvement", "in_progress" | "ready_for_review")
            | ("approved", "in_progress")
    )
}

/// The numeric rank that severity sorts by (`critical` highest).
pub fn severity_rank(severity: &str) -> i64 {
    match severity {
        "critical" => 4,
        "high" => 3,
        "medium" => 2,
        "low" => 1,
        _ => 0,
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct NewFinding {
    pub title: String,
    pub severity: Option<String>,
    pub cvss_vector: Option<String>,
    pub cwe: Vec<String>,
    pub cve: Vec<String>,
    pub description: Option<String>,
    pub impact: Option<String>,
    pub remediation: Option<String>,
    pub steps_to_reproduce: Option<String>,
    pub references: Vec<String>,
    /// Already checked by the caller to be targets of the same engagement.
    pub affected_target_ids: Vec<String>,
    pub retest_notes: Option<String>,
    pub tags: Vec<String>,
}

/// A merge patch: `None` leaves a field alone, `Some(None)` clears it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FindingPatch {
    pub title: Option<String>,
    pub severity: Option<String>,
    pub cvss_vector: Option<Option<String>>,
    pub cwe: Option<Vec<String>>,
    pub cve: Option<Vec<String>>,
    pub description: Option<Option<String>>,
    pub impact: Option<Option<String>>,
    pub remediation: Option<Option<String>>,
    pub steps_to_reproduce: Option<Option<String>>,
    pub references: Option<Vec<String>>,
    pub affected_target_ids: Option<Vec<String>>,
    pub retest_notes: Option<Option<String>>,
    pub tags: Option<Vec<String>>,
    pub status: Option<String>,
    pub review_status: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum FindingCommand {
    Create {
        organization_id: String,
        engagement_id: String,
        finding: NewFinding,
    },
    Update {
        organization_id: String,
        patch: FindingPatch,
    },
    Transition {
        organization_id: String,
        status: Option<String>,
        review_status: Option<String>,
        comment: Option<String>,
    },
    Delete {
        organization_id: String,
    },
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    pub exists: bool,
    pub deleted: bool,
    pub organization_id: String,
    pub engagement_id: String,
    pub title: String,
    pub severity: String,
    pub cvss: Option<Cvss>,
    pub cwe: Vec<String>,
    pub cve: Vec<String>,
    pub description: Option<String>,
    pub impact: Option<String>,
    pub remediation: Option<String>,
    pub steps_to_reproduce: Option<String>,
    pub references: Vec<String>,
    pub affected_target_ids: Vec<String>,
    pub status: String,
    pub review_status: String,
    pub retest_notes: Option<String>,
    pub tags: Vec<String>,
}

fn scored(errors: &mut Errors, vector: &str) -> Option<(Cvss, &'static str)> {
    errors
        .check(validate::cvss("cvss.vector", vector))
        .map(|s| (Cvss { vector: s.vector, score: s.score, version: s.version.to_owned() }, s.severity))
}

fn long_text(errors: &mut Errors, field: &str, value: Option<String>) -> Option<Option<String>> {
    value.map(|v| errors.check(validate::text(field, &v, 0, LONG_TEXT)))
}

fn cwes(values: &[String]) -> Result<Vec<String>, FieldError> {
    validate::list("cwe", values, 50, validate::cwe, "a CWE id like CWE-79")
}

fn cves(values: &[String]) -> Result<Vec<String>, FieldError> {
    validate::list("cve", values, 50, validate::cve, "a CVE id like CVE-2021-44228")
}

fn references(values: &[String]) -> Result<Vec<String>, FieldError> {
    validate::list("references", values, 100, validate::http_url, "an http(s) URL")
}

fn target_ids(values: &[String]) -> Result<Vec<String>, FieldError> {
    validate::list("affectedTargetIds", values, 500, |v| Some(v.to_owned()), "a target id")
}

/// What is wrong with `new`'s fields, as its creation would report it: for a caller that found
/// other errors first (an unknown target, say) and answers with every invalid field at once.
pub fn field_errors(new: &NewFinding) -> Vec<FieldError> {
    match Finding::create(String::new(), String::new(), new.clone()) {
        Err(DomainError::Validation(errors)) => errors,
        _ => Vec::new(),
    }
}

/// A patch value that differs from the current one, or nothing.
fn differs<T: PartialEq>(new: Option<T>, current: &T) -> Option<T> {
    new.filter(|v| v != current)
}

impl Finding {
    fn visible_to(&self, organization_id: &str) -> Result<(), DomainError> {
        if self.exists && !self.deleted && self.organization_id == organization_id {
            Ok(())
        } else {
            Err(DomainError::NotFound)
        }
    }

    fn create(
        organization_id: String,
        engagement_id: String,
        new: NewFinding,
    ) -> Result<FindingCreated, DomainError> {
        let mut errors = Errors::default();
        let title = errors.check(validate::text("title", &new.title, 1, 300));
        let severity = new.severity.map(|s| errors.check(validate::one_of("severity", &s, SEVERITIES)));
        let cvss = new.cvss_vector.map(|v| scored(&mut errors, &v));
        let severity = match (severity, &cvss) {
            (Some(given), _) => given,
            (None, Some(Some((_, rating)))) => Some((*rating).to_owned()),
            (None, Some(None)) => None,
            (None, None) => {
                errors.push(FieldError::new("severity", "is required when no CVSS vector is given"));
                None
            }
        };
        let cwe = errors.check(cwes(&new.cwe));
        let cve = errors.check(cves(&new.cve));
        let description = long_text(&mut errors, "description", new.description);
        let impact = long_text(&mut errors, "impact", new.impact);
        let remediation = long_text(&mut errors, "remediation", new.remediation);
        let steps = long_text(&mut errors, "stepsToReproduce", new.steps_to_reproduce);
        let references = errors.check(references(&new.references));
        let targets = errors.check(target_ids(&new.affected_target_ids));
        let retest_notes = long_text(&mut errors, "retestNotes", new.retest_notes);
        let tags = errors.check(validate::tags("tags", &new.tags));
        errors.finish()?;
        Ok(FindingCreated {
            organization_id,
            engagement_id,
            title: title.unwrap_or_default(),
            severity: severity.unwrap_or_default(),
            cvss: cvss.flatten().map(|(c, _)| c),
            cwe: cwe.unwrap_or_default(),
            cve: cve.unwrap_or_default(),
            description: description.flatten(),
            impact: impact.flatten(),
            remediation: remediation.flatten(),
            steps_to_reproduce: steps.flatten(),
            references: references.unwrap_or_default(),
            affected_target_ids: targets.unwrap_or_default(),
            status: "draft".to_owned(),
            review_status: "in_progress".to_owned(),
            retest_notes: retest_notes.flatten(),
            tags: tags.unwrap_or_default(),
        })
    }

    fn update(&self, patch: FindingPatch, errors: &mut Errors) -> FindingUpdated {
        let mut changed = FindingUpdated::default();
        if let Some(title) = patch.title {
            changed.title = differs(errors.check(validate::text("title", &title, 1, 300)), &self.title);
        }
        let mut severity =
            patch.severity.and_then(|s| errors.check(validate::one_of("severity", &s, SEVERITIES)));
        if let Some(vector) = patch.cvss_vector {
            let cvss = match vector {
                None => Some(None),
                Some(v) => scored(errors, &v).map(|(cvss, rating)| {
                    // A new score carries its rating along unless the client set a severity too.
                    severity.get_or_insert_with(|| rating.to_owned());
                    Some(cvss)
                }),
            };
            changed.cvss = differs(cvss, &self.cvss);
        }
        changed.severity = differs(severity, &self.severity);
        let optional =
            |errors: &mut Errors, field: &str, value: Option<Option<String>>, current: &Option<String>| {
                match value {
                    None => None,
                    Some(None) => current.is_some().then_some(None),
                    Some(Some(v)) => {
                        differs(errors.check(validate::text(field, &v, 0, LONG_TEXT)).map(Some), current)
                    }
                }
            };
        changed.description = optional(errors, "description", patch.description, &self.description);
        changed.impact = optional(errors, "impact", patch.impact, &self.impact);
        changed.remediation = optional(errors, "remediation", patch.remediation, &self.remediation);
        changed.steps_to_reproduce =
            optional(errors, "stepsToReproduce", patch.steps_to_reproduce, &self.steps_to_reproduce);
        changed.retest_notes = optional(errors, "retestNotes", patch.retest_notes, &self.retest_notes);
        changed.cwe = patch.cwe.and_then(|v| differs(errors.check(cwes(&v)), &self.cwe));
        changed.cve = patch.cve.and_then(|v| differs(errors.check(cves(&v)), &self.cve));
        changed.references =
            patch.references.and_then(|v| differs(errors.check(references(&v)), &self.references));
        changed.affected_target_ids = patch
            .affected_target_ids
            .and_then(|v| differs(errors.check(target_ids(&v)), &self.affected_target_ids));
        changed.tags = patch.tags.and_then(|v| differs(errors.check(validate::tags("tags", &v)), &self.tags));
        changed
    }

    /// The lifecycle events for the requested statuses (none for a status already current).
    fn transitions(
        &self,
        status: Option<String>,
        review_status: Option<String>,
        comment: Option<String>,
        errors: &mut Errors,
    ) -> Result<Vec<FindingEvent>, DomainError> {
        let status = status.and_then(|s| errors.check(validate::one_of("status", &s, STATUSES)));
        let review =
            review_status.and_then(|s| errors.check(validate::one_of("reviewStatus", &s, REVIEW_STATUSES)));
        let comment = comment.and_then(|c| errors.check(validate::text("comment", &c, 1, 10_000)));
        let mut events = Vec::new();
        let step = |from: &str, to: String| Transition {
            change: StatusChange { from: from.to_owned(), to },
            comment: comment.clone(),
        };
        if let Some(to) = status.filter(|s| *s != self.status) {
            if !status_allowed(&self.status, &to) {
                return Err(DomainError::Conflict(format!(
                    "a finding cannot go from status {} to {to}",
                    self.status
                )));
            }
            events.push(FindingEvent::StatusChanged(step(&self.status, to)));
        }
        if let Some(to) = review.filter(|s| *s != self.review_status) {
            if !review_status_allowed(&self.review_status, &to) {
                return Err(DomainError::Conflict(format!(
                    "a finding cannot go from review status {} to {to}",
                    self.review_status
                )));
            }
            events.push(FindingEvent::ReviewStatusChanged(step(&self.review_status, to)));
        }
        Ok(events)
    }
}

impl Aggregate for Finding {
    const TYPE: &'static str = "finding";
    type Command = FindingCommand;
    type Event = FindingEvent;
    type Error = DomainError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), DomainError> {
        let events = match command {
            FindingCommand::Create { organization_id, engagement_id, finding } => {
                if self.exists {
                    return Err(DomainError::Conflict("the finding already exists".to_owned()));
                }
                vec![FindingEvent::Created(Self::create(organization_id, engagement_id, finding)?)]
            }
            FindingCommand::Update { organization_id, mut patch } => {
                self.visible_to(&organization_id)?;
                let mut errors = Errors::default();
                let (status, review) = (patch.status.take(), patch.review_status.take());
                let changed = self.update(patch, &mut errors);
                let transitions = self.transitions(status, review, None, &mut errors);
                errors.finish()?;
                let mut events = Vec::new();
                if !changed.is_empty() {
                    events.push(FindingEvent::Updated(changed));
                }
                events.extend(transitions?);
                events
            }
            FindingCommand::Transition { organization_id, status, review_status, comment } => {
                self.visible_to(&organization_id)?;
                if status.is_none() && review_status.is_none() {
                    return Err(DomainError::invalid("status", "status or reviewStatus is required"));
                }
                let mut errors = Errors::default();
                let transitions = self.transitions(status, review_status, comment, &mut errors);
                errors.finish()?;
                transitions?
            }
            FindingCommand::Delete { organization_id } => {
                self.visible_to(&organization_id)?;
                vec![FindingEvent::Deleted(Empty {})]
            }
        };
        for event in events {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            FindingEvent::Created(c) => {
                *self = Self {
                    exists: true,
                    deleted: false,
                    organization_id: c.organization_id,
                    engagement_id: c.engagement_id,
                    title: c.title,
                    severity: c.severity,
                    cvss: c.cvss,
                    cwe: c.cwe,
                    cve: c.cve,
                    description: c.description,
                    impact: c.impact,
                    remediation: c.remediation,
                    steps_to_reproduce: c.steps_to_reproduce,
                    references: c.references,
                    affected_target_ids: c.affected_target_ids,
                    status: c.status,
                    review_status: c.review_status,
                    retest_notes: c.retest_notes,
                    tags: c.tags,
                }
            }
            FindingEvent::Updated(u) => {
                fn set<T>(slot: &mut T, value: Option<T>) {
                    if let Some(value) = value {
                        *slot = value;
                    }
                }
                set(&mut self.title, u.title);
                set(&mut self.severity, u.severity);
                set(&mut self.cvss, u.cvss);
                set(&mut self.cwe, u.cwe);
                set(&mut self.cve, u.cve);
                set(&mut self.description, u.description);
                set(&mut self.impact, u.impact);
                set(&mut self.remediation, u.remediation);
                set(&mut self.steps_to_reproduce, u.steps_to_reproduce);
                set(&mut self.references, u.references);
                set(&mut self.affected_target_ids, u.affected_target_ids);
                set(&mut self.retest_notes, u.retest_notes);
                set(&mut self.tags, u.tags);
            }
            FindingEvent::StatusChanged(t) => self.status = t.change.to,
            FindingEvent::ReviewStatusChanged(t) => self.review_status = t.change.to,
            FindingEvent::Deleted(_) => self.deleted = true,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use cqrs_es::test::TestFramework;

    use super::*;

    type Given = TestFramework<Finding>;
    const ORG: &str = "org_01j9k2m3n4p5q6r7s8t9";
    const ENG: &str = "eng_01j9k2m3n4p5q6r7s8t9";
    const TGT: &str = "tgt_01j9k2m3n4p5q6r7s8t9";
    const VECTOR: &str = "CVSS:3.1/AV:N/AC:L/PR:N/UI:R/S:C/C:L/I:L/A:N";

    fn org() -> String {
        ORG.to_owned()
    }

    fn new_finding() -> NewFinding {
        NewFinding {
            title: " Reflected XSS in search ".to_owned(),
            cvss_vector: Some(VECTOR.to_owned()),
            cwe: vec!["cwe-79".to_owned(), "CWE-79".to_owned()],
            cve: vec!["CVE-2024-12345".to_owned()],
            references: vec!["https://owasp.org/www-community/attacks/xss/".to_owned()],
            affected_target_ids: vec![TGT.to_owned()],
            tags: vec!["web".to_owned()],
            ..NewFinding::default()
        }
    }

    fn created() -> FindingEvent {
        FindingEvent::Created(FindingCreated {
            organization_id: org(),
            engagement_id: ENG.to_owned(),
            title: "Reflected XSS in search".to_owned(),
            severity: "medium".to_owned(),
            cvss: Some(Cvss { vector: VECTOR.to_owned(), score: 6.1, version: "3.1".to_owned() }),
            cwe: vec!["CWE-79".to_owned()],
            cve: vec!["CVE-2024-12345".to_owned()],
            description: None,
            impact: None,
            remediation: None,
            steps_to_reproduce: None,
            references: vec!["https://owasp.org/www-community/attacks/xss/".to_owned()],
            affected_target_ids: vec![TGT.to_owned()],
            status: "draft".to_owned(),
            review_status: "in_progress".to_owned(),
            retest_notes: None,
            tags: vec!["web".to_owned()],
        })
    }

    fn status(from: &str, to: &str) -> FindingEvent {
        FindingEvent::StatusChanged(Transition {
            change: StatusChange { from: from.to_owned(), to: to.to_owned() },
            comment: None,
        })
    }

    fn review(from: &str, to: &str) -> FindingEvent {
        FindingEvent::ReviewStatusChanged(Transition {
            change: StatusChange { from: from.to_owned(), to: to.to_owned() },
            comment: None,
        })
    }

    fn transition(status: Option<&str>, review_status: Option<&str>) -> FindingCommand {
        FindingCommand::Transition {
            organization_id: org(),
            status: status.map(str::to_owned),
            review_status: review_status.map(str::to_owned),
            comment: None,
        }
    }

    fn update(patch: FindingPatch) -> FindingCommand {
        FindingCommand::Update { organization_id: org(), patch }
    }

    #[test]
    fn create_scores_the_vector_and_derives_the_severity() {
        Given::with(())
            .given_no_previous_events()
            .when(FindingCommand::Create {
                organization_id: org(),
                engagement_id: ENG.to_owned(),
                finding: new_finding(),
            })
            .then_expect_events(vec![created()]);
    }

    #[test]
    fn a_given_severity_wins_over_the_rating_and_none_rates_info() {
        let finding = NewFinding { severity: Some("high".to_owned()), ..new_finding() };
        let FindingEvent::Created(event) = &Given::with(())
            .given_no_previous_events()
            .when(FindingCommand::Create { organization_id: org(), engagement_id: ENG.to_owned(), finding })
            .inspect_result()
            .unwrap()[0]
        else {
            panic!("expected finding.created")
        };
        assert_eq!(event.severity, "high");
        let finding = NewFinding {
            cvss_vector: Some("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:N/I:N/A:N".to_owned()),
            ..new_finding()
        };
        let FindingEvent::Created(event) = &Given::with(())
            .given_no_previous_events()
            .when(FindingCommand::Create { organization_id: org(), engagement_id: ENG.to_owned(), finding })
            .inspect_result()
            .unwrap()[0]
        else {
            panic!("expected finding.created")
        };
        assert_eq!((event.severity.as_str(), event.cvss.as_ref().map(|c| c.score)), ("info", Some(0.0)));
    }

    #[test]
    fn create_reports_every_invalid_field() {
        let finding = NewFinding {
            title: "".to_owned(),
            cvss_vector: Some("CVSS:3.1/AV:N".to_owned()),
            cwe: vec!["79".to_owned()],
            cve: vec!["CVE-24-1".to_owned()],
            references: vec!["javascript:alert(1)".to_owned()],
            ..NewFinding::default()
        };
        let fields: Vec<String> = match Given::with(())
            .given_no_previous_events()
            .when(FindingCommand::Create { organization_id: org(), engagement_id: ENG.to_owned(), finding })
            .inspect_result()
        {
            Err(DomainError::Validation(errors)) => errors.into_iter().map(|e| e.field).collect(),
            other => panic!("expected a validation error, got {other:?}"),
        };
        assert_eq!(fields, ["title", "cvss.vector", "cwe", "cve", "references"]);
        let finding = NewFinding { cvss_vector: None, ..new_finding() };
        Given::with(())
            .given_no_previous_events()
            .when(FindingCommand::Create { organization_id: org(), engagement_id: ENG.to_owned(), finding })
            .then_expect_error(DomainError::invalid("severity", "is required when no CVSS vector is given"));
    }

    #[test]
    fn create_twice_conflicts() {
        Given::with(())
            .given(vec![created()])
            .when(FindingCommand::Create {
                organization_id: org(),
                engagement_id: ENG.to_owned(),
                finding: new_finding(),
            })
            .then_expect_error(DomainError::Conflict("the finding already exists".to_owned()));
    }

    #[test]
    fn update_records_changed_fields_and_a_new_vector_moves_the_severity() {
        let vector = "CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N";
        let patch = FindingPatch {
            title: Some("Reflected XSS in search".to_owned()),
            cvss_vector: Some(Some(vector.to_owned())),
            description: Some(Some("Details".to_owned())),
            tags: Some(vec!["web".to_owned()]),
            ..FindingPatch::default()
        };
        Given::with(()).given(vec![created()]).when(update(patch)).then_expect_events(vec![
            FindingEvent::Updated(FindingUpdated {
                severity: Some("critical".to_owned()),
                cvss: Some(Some(Cvss { vector: vector.to_owned(), score: 9.3, version: "4.0".to_owned() })),
                description: Some(Some("Details".to_owned())),
                ..FindingUpdated::default()
            }),
        ]);
        let patch = FindingPatch { cvss_vector: Some(None), ..FindingPatch::default() };
        Given::with(()).given(vec![created()]).when(update(patch)).then_expect_events(vec![
            FindingEvent::Updated(FindingUpdated { cvss: Some(None), ..FindingUpdated::default() }),
        ]);
    }

    #[test]
    fn update_can_change_both_statuses_after_the_fields() {
        let patch = FindingPatch {
            severity: Some("low".to_owned()),
            status: Some("open".to_owned()),
            review_status: Some("ready_for_review".to_owned()),
            ..FindingPatch::default()
        };
        Given::with(()).given(vec![created()]).when(update(patch)).then_expect_events(vec![
            FindingEvent::Updated(FindingUpdated {
                severity: Some("low".to_owned()),
                ..FindingUpdated::default()
            }),
            status("draft", "open"),
            review("in_progress", "ready_for_review"),
        ]);
        let patch = FindingPatch { severity: Some("urgent".to_owned()), ..FindingPatch::default() };
        Given::with(()).given(vec![created()]).when(update(patch)).then_expect_error(DomainError::invalid(
            "severity",
            "must be one of critical, high, medium, low, info",
        ));
        Given::with(())
            .given(vec![created()])
            .when(update(FindingPatch { title: Some("Same".to_owned()), ..FindingPatch::default() }))
            .then_expect_events(vec![FindingEvent::Updated(FindingUpdated {
                title: Some("Same".to_owned()),
                ..FindingUpdated::default()
            })]);
        Given::with(())
            .given(vec![created()])
            .when(update(FindingPatch { tags: Some(vec!["web".to_owned()]), ..FindingPatch::default() }))
            .then_expect_events(vec![]);
    }

    #[test]
    fn every_status_transition_follows_the_table() {
        let path = |steps: &[&str]| -> Vec<FindingEvent> {
            let mut events = vec![created()];
            for pair in steps.windows(2) {
                events.push(status(pair[0], pair[1]));
            }
            events
        };
        for from in STATUSES {
            let given = match *from {
                "draft" => path(&["draft"]),
                "open" => path(&["draft", "open"]),
                "remediated" => path(&["draft", "open", "remediated"]),
                "closed" => path(&["draft", "open", "closed"]),
                other => path(&["draft", "open", other]),
            };
            for to in STATUSES.iter().filter(|to| *to != from) {
                let result = Given::with(()).given(given.clone()).when(transition(Some(to), None));
                if status_allowed(from, to) {
                    result.then_expect_events(vec![status(from, to)]);
                } else {
                    result.then_expect_error(DomainError::Conflict(format!(
                        "a finding cannot go from status {from} to {to}"
                    )));
                }
            }
        }
        assert!(status_allowed("remediated", "open") && !status_allowed("draft", "closed"));
        assert!(!status_allowed("accepted_risk", "closed") && !status_allowed("false_positive", "draft"));
    }

    #[test]
    fn every_review_transition_follows_the_table() {
        let given = |at: &str| -> Vec<FindingEvent> {
            match at {
                "in_progress" => vec![created()],
                "ready_for_review" => vec![created(), review("in_progress", "ready_for_review")],
                other => vec![
                    created(),
                    review("in_progress", "ready_for_review"),
                    review("ready_for_review", other),
                ],
            }
        };
        for from in REVIEW_STATUSES {
            for to in REVIEW_STATUSES.iter().filter(|to| *to != from) {
                let result = Given::with(()).given(given(from)).when(transition(None, Some(to)));
                if review_status_allowed(from, to) {
                    result.then_expect_events(vec![review(from, to)]);
                } else {
                    result.then_expect_error(DomainError::Conflict(format!(
                        "a finding cannot go from review status {from} to {to}"
                    )));
                }
            }
        }
    }

    #[test]
    fn transition_keeps_the_comment_and_needs_a_status() {
        let command = FindingCommand::Transition {
            organization_id: org(),
            status: Some("open".to_owned()),
            review_status: Some("in_progress".to_owned()),
            comment: Some("confirmed by retest".to_owned()),
        };
        Given::with(()).given(vec![created()]).when(command).then_expect_events(vec![
            FindingEvent::StatusChanged(Transition {
                change: StatusChange { from: "draft".to_owned(), to: "open".to_owned() },
                comment: Some("confirmed by retest".to_owned()),
            }),
        ]);
        Given::with(())
            .given(vec![created()])
            .when(transition(None, None))
            .then_expect_error(DomainError::invalid("status", "status or reviewStatus is required"));
        Given::with(()).given(vec![created()]).when(transition(Some("fixed"), None)).then_expect_error(
            DomainError::invalid(
                "status",
                "must be one of draft, open, remediated, accepted_risk, false_positive, closed",
            ),
        );
    }

    #[test]
    fn delete_hides_the_finding() {
        Given::with(())
            .given(vec![created()])
            .when(FindingCommand::Delete { organization_id: org() })
            .then_expect_events(vec![FindingEvent::Deleted(Empty {})]);
        Given::with(())
            .given(vec![created(), FindingEvent::Deleted(Empty {})])
            .when(transition(Some("open"), None))
            .then_expect_error(DomainError::NotFound);
        Given::with(())
            .given(vec![created()])
            .when(FindingCommand::Delete { organization_id: "org_00000000000000000000".to_owned() })
            .then_expect_error(DomainError::NotFound);
    }

    #[test]
    fn severity_ranks_order_critical_first() {
        let ranks: Vec<i64> = SEVERITIES.iter().map(|s| severity_rank(s)).collect();
        assert_eq!(ranks, [4, 3, 2, 1, 0]);
    }
}
