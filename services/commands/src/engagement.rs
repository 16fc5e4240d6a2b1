//! The engagement aggregate: create, update, archive, unarchive, delete.

use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use pwnbook_events::engagement::{EngagementCreated, EngagementEvent, EngagementUpdated};
use pwnbook_events::{Empty, NameClaim, StatusChange};
use serde::{Deserialize, Serialize};

use crate::validate::{self, Errors};
use crate::{Claim, DomainError, FieldError};

pub const NAME_SCOPE: &str = "engagement_name";
const ACTIVE: &str = "active";
const ARCHIVED: &str = "archived";

/// The fields of a new engagement as the client sent them (validated by the aggregate).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NewEngagement {
    pub name: String,
    pub description: Option<String>,
    pub client_name: Option<String>,
    pub start_date: Option<String>,
    pub end_date: Option<String>,
    pub tags: Vec<String>,
}

/// A merge patch: `None` leaves a field alone, `Some(None)` clears it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EngagementPatch {
    pub name: Option<String>,
    pub description: Option<Option<String>>,
    pub client_name: Option<Option<String>>,
    pub start_date: Option<Option<String>>,
    pub end_date: Option<Option<String>>,
    pub tags: Option<Vec<String>>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum EngagementCommand {
    Create { organization_id: String, engagement: NewEngagement },
    Update { organization_id: String, patch: EngagementPatch },
    Archive { organization_id: String },
    Unarchive { organization_id: String },
    Delete { organization_id: String },
}

impl EngagementCommand {
    /// The unique-name claim this command makes (checked before, enforced during the commit).
    pub fn claim(&self) -> Option<Claim> {
        let reserve = |name: &str| Claim {
            claim: NameClaim::Reserve { scope: NAME_SCOPE.to_owned(), key: name_key(name) },
            conflict: format!("an engagement named {:?} already exists", name.trim()),
        };
        match self {
            Self::Create { engagement, .. } => Some(reserve(&engagement.name)),
            Self::Update { patch: EngagementPatch { name: Some(name), .. }, .. } => Some(reserve(name)),
            Self::Delete { .. } => Some(Claim {
                claim: NameClaim::Release { scope: NAME_SCOPE.to_owned() },
                conflict: String::new(),
            }),
            _ => None,
        }
    }
}

/// Names are unique per organization case-insensitively (after trimming).
pub fn name_key(name: &str) -> String {
    name.trim().to_lowercase()
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Engagement {
    pub exists: bool,
    pub deleted: bool,
    pub organization_id: String,
    pub name: String,
    pub description: Option<String>,
    pub client_name: Option<String>,
    pub start_date: Option<String>,
    pub end_date: Option<String>,
    pub tags: Vec<String>,
    pub status: String,
}

impl Engagement {
    /// The live engagement of `organization_id`, or 404 (also for another organization's).
    fn visible_to(&self, organization_id: &str) -> Result<(), DomainError> {
        if self.exists && !self.deleted && self.organization_id == organization_id {
            Ok(())
        } else {
            Err(DomainError::NotFound)
        }
    }

    fn writable_by(&self, organization_id: &str) -> Result<(), DomainError> {
        self.visible_to(organization_id)?;
        if self.status == ARCHIVED {
            return Err(DomainError::Conflict("the engagement is archived and read-only".to_owned()));
        }
        Ok(())
    }

    fn create(organization_id: String, new: NewEngagement) -> Result<EngagementCreated, DomainError> {
        let mut errors = Errors::default();
        let name = errors.check(validate::text("name", &new.name, 1, 200));
        let description = new.description.map(|d| errors.check(validate::text("description", &d, 0, 10_000)));
        let client_name = new.client_name.map(|c| errors.check(validate::text("clientName", &c, 1, 200)));
        let start_date = new.start_date.map(|d| errors.check(validate::date("startDate", &d)));
        let end_date = new.end_date.map(|d| errors.check(validate::date("endDate", &d)));
        let tags = errors.check(validate::tags("tags", &new.tags));
        if let (Some(Some(start)), Some(Some(end))) = (&start_date, &end_date) {
            check_date_order(&mut errors, Some(start), Some(end));
        }
        errors.finish()?;
        Ok(EngagementCreated {
            organization_id,
            name: name.unwrap_or_default(),
            description: description.flatten(),
            client_name: client_name.flatten(),
            start_date: start_date.flatten(),
            end_date: end_date.flatten(),
            tags: tags.unwrap_or_default(),
            status: ACTIVE.to_owned(),
        })
    }

    /// The changed fields only; an empty result means the patch changes nothing.
    fn update(&self, patch: EngagementPatch) -> Result<EngagementUpdated, DomainError> {
        let mut errors = Errors::default();
        let mut changed = EngagementUpdated::default();
        if let Some(name) = patch.name {
            if let Some(name) = errors.check(validate::text("name", &name, 1, 200)) {
                changed.name = (name != self.name).then_some(name);
            }
        }
        let optional = |errors: &mut Errors,
                        value: Option<Option<String>>,
                        current: &Option<String>,
                        check: &dyn Fn(&str) -> Result<String, FieldError>| {
            match value {
                None => None,
                Some(None) => current.is_some().then_some(None),
                Some(Some(v)) => errors.check(check(&v)).filter(|v| current.as_ref() != Some(v)).map(Some),
            }
        };
        changed.description = optional(&mut errors, patch.description, &self.description, &|v| {
            validate::text("description", v, 0, 10_000)
        });
        changed.client_name = optional(&mut errors, patch.client_name, &self.client_name, &|v| {
            validate::text("clientName", v, 1, 200)
        });
        changed.start_date =
            optional(&mut errors, patch.start_date, &self.start_date, &|v| validate::date("startDate", v));
        changed.end_date =
            optional(&mut errors, patch.end_date, &self.end_date, &|v| validate::date("endDate", v));
        if let Some(tags) = patch.tags {
            if let Some(tags) = errors.check(validate::tags("tags", &tags)) {
                changed.tags = (tags != self.tags).then_some(tags);
            }
        }
        let start = changed.start_date.clone().unwrap_or_else(|| self.start_date.clone());
        let end = changed.end_date.clone().unwrap_or_else(|| self.end_date.clone());
        check_date_order(&mut errors, start.as_ref(), end.as_ref());
        errors.finish()?;
        Ok(changed)
    }
}

fn check_date_order(errors: &mut Errors, start: Option<&String>, end: Option<&String>) {
    if let (Some(start), Some(end)) = (start, end) {
        // Zero-padded ISO dates order correctly as strings.
        if end < start {
            errors.push(FieldError::new("endDate", "must not be before startDate"));
        }
    }
}

impl Aggregate for Engagement {
    const TYPE: &'static str = "engagement";
    type Command = EngagementCommand;
    type Event = EngagementEvent;
    type Error = DomainError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), DomainError> {
        let event = match command {
            EngagementCommand::Create { organization_id, engagement } => {
                if self.exists {
                    return Err(DomainError::Conflict("the engagement already exists".to_owned()));
                }
                EngagementEvent::Created(Self::create(organization_id, engagement)?)
            }
            EngagementCommand::Update { organization_id, patch } => {
                self.writable_by(&organization_id)?;
                let changed = self.update(patch)?;
                if changed.is_empty() {
                    return Ok(());
                }
                EngagementEvent::Updated(changed)
            }
            EngagementCommand::Archive { organization_id } => {
                self.writable_by(&organization_id)?;
                EngagementEvent::Archived(StatusChange { from: ACTIVE.to_owned(), to: ARCHIVED.to_owned() })
            }
            EngagementCommand::Unarchive { organization_id } => {
                self.visible_to(&organization_id)?;
                if self.status != ARCHIVED {
                    return Err(DomainError::Conflict("the engagement is not archived".to_owned()));
                }
                EngagementEvent::Unarchived(StatusChange { from: ARCHIVED.to_owned(), to: ACTIVE.to_owned() })
            }
            EngagementCommand::Delete { organization_id } => {
                self.writable_by(&organization_id)?;
                EngagementEvent::Deleted(Empty {})
            }
        };
        sink.write(event, self).await;
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            EngagementEvent::Created(created) => {
                *self = Self {
                    exists: true,
                    deleted: false,
                    organization_id: created.organization_id,
                    name: created.name,
                    description: created.description,
                    client_name: created.client_name,
                    start_date: created.start_date,
                    end_date: created.end_date,
                    tags: created.tags,
                    status: created.status,
                }
            }
            EngagementEvent::Updated(changed) => {
                if let Some(name) = changed.name {
                    self.name = name;
                }
                if let Some(description) = changed.description {
                    self.description = description;
                }
                if let Some(client_name) = changed.client_name {
                    self.client_name = client_name;
                }
                if let Some(start_date) = changed.start_date {
                    self.start_date = start_date;
                }
                if let Some(end_date) = changed.end_date {
                    self.end_date = end_date;
                }
                if let Some(tags) = changed.tags {
                    self.tags = tags;
                }
            }
            EngagementEvent::Archived(change) | EngagementEvent::Unarchived(change) => {
                self.status = change.to
            }
            EngagementEvent::Deleted(_) => self.deleted = true,
        }
    }
}

#[cfg(test)]
mod tests {
    use cqrs_es::test::TestFramework;

    use super::*;

    type Given = TestFramework<Engagement>;
    const ORG: &str = "org_01j9k2m3n4p5q6r7s8t9";

    fn created() -> EngagementEvent {
        EngagementEvent::Created(EngagementCreated {
            organization_id: ORG.to_owned(),
            name: "Acme external".to_owned(),
            description: None,
            client_name: Some("Acme".to_owned()),
            start_date: Some("2025-01-01".to_owned()),
            end_date: Some("2025-01-31".to_owned()),
            tags: vec!["web".to_owned()],
            status: ACTIVE.to_owned(),
        })
    }

    fn archived() -> EngagementEvent {
        EngagementEvent::Archived(StatusChange { from: ACTIVE.to_owned(), to: ARCHIVED.to_owned() })
    }

    fn new_engagement() -> NewEngagement {
        NewEngagement {
            name: "  Acme external ".to_owned(),
            client_name: Some("Acme".to_owned()),
            start_date: Some("2025-01-01".to_owned()),
            end_date: Some("2025-01-31".to_owned()),
            tags: vec!["web".to_owned(), "web".to_owned()],
            ..NewEngagement::default()
        }
    }

    fn org() -> String {
        ORG.to_owned()
    }

    #[test]
    fn create_trims_the_name_and_deduplicates_tags() {
        Given::with(())
            .given_no_previous_events()
            .when(EngagementCommand::Create { organization_id: org(), engagement: new_engagement() })
            .then_expect_events(vec![created()]);
    }

    #[test]
    fn create_reports_every_invalid_field() {
        let engagement = NewEngagement {
            name: " ".to_owned(),
            start_date: Some("2025-02-01".to_owned()),
            end_date: Some("2025-01-01".to_owned()),
            tags: vec!["x".repeat(51)],
            ..NewEngagement::default()
        };
        let fields: Vec<String> = match Given::with(())
            .given_no_previous_events()
            .when(EngagementCommand::Create { organization_id: org(), engagement })
            .inspect_result()
        {
            Err(DomainError::Validation(errors)) => errors.into_iter().map(|e| e.field).collect(),
            other => panic!("expected a validation error, got {other:?}"),
        };
        assert_eq!(fields, ["name", "tags", "endDate"]);
    }

    #[test]
    fn create_rejects_a_bad_date_and_an_overlong_description() {
        let engagement = NewEngagement {
            start_date: Some("2025-13-01".to_owned()),
            description: Some("d".repeat(10_001)),
            ..new_engagement()
        };
        Given::with(())
            .given_no_previous_events()
            .when(EngagementCommand::Create { organization_id: org(), engagement })
            .then_expect_error(DomainError::Validation(vec![
                FieldError::new("description", "must have at most 10000 characters"),
                FieldError::new("startDate", "must be a calendar date YYYY-MM-DD"),
            ]));
    }

    #[test]
    fn create_twice_conflicts() {
        Given::with(())
            .given(vec![created()])
            .when(EngagementCommand::Create { organization_id: org(), engagement: new_engagement() })
            .then_expect_error(DomainError::Conflict("the engagement already exists".to_owned()));
    }

    #[test]
    fn update_records_only_changed_fields() {
        let patch = EngagementPatch {
            name: Some("Acme external".to_owned()),
            description: Some(Some("Scope: *.acme.test".to_owned())),
            client_name: Some(None),
            tags: Some(vec!["web".to_owned()]),
            ..EngagementPatch::default()
        };
        Given::with(())
            .given(vec![created()])
            .when(EngagementCommand::Update { organization_id: org(), patch })
            .then_expect_events(vec![EngagementEvent::Updated(EngagementUpdated {
                description: Some(Some("Scope: *.acme.test".to_owned())),
                client_name: Some(None),
                ..EngagementUpdated::default()
            })]);
    }

    #[test]
    fn update_that_changes_nothing_emits_nothing() {
        let patch =
            EngagementPatch { name: Some(" Acme external ".to_owned()), ..EngagementPatch::default() };
        Given::with(())
            .given(vec![created()])
            .when(EngagementCommand::Update { organization_id: org(), patch })
            .then_expect_events(vec![]);
    }

    #[test]
    fn update_checks_dates_against_the_current_ones() {
        let patch =
            EngagementPatch { end_date: Some(Some("2024-12-31".to_owned())), ..EngagementPatch::default() };
        Given::with(())
            .given(vec![created()])
            .when(EngagementCommand::Update { organization_id: org(), patch })
            .then_expect_error(DomainError::invalid("endDate", "must not be before startDate"));
    }

    #[test]
    fn another_organization_sees_nothing() {
        Given::with(())
            .given(vec![created()])
            .when(EngagementCommand::Archive { organization_id: "org_00000000000000000000".to_owned() })
            .then_expect_error(DomainError::NotFound);
    }

    #[test]
    fn archive_and_unarchive_record_the_transition() {
        Given::with(())
            .given(vec![created()])
            .when(EngagementCommand::Archive { organization_id: org() })
            .then_expect_events(vec![archived()]);
        Given::with(())
            .given(vec![created(), archived()])
            .when(EngagementCommand::Unarchive { organization_id: org() })
            .then_expect_events(vec![EngagementEvent::Unarchived(StatusChange {
                from: ARCHIVED.to_owned(),
                to: ACTIVE.to_owned(),
            })]);
    }

    #[test]
    fn illegal_transitions_conflict() {
        Given::with(())
            .given(vec![created(), archived()])
            .when(EngagementCommand::Archive { organization_id: org() })
            .then_expect_error(DomainError::Conflict("the engagement is archived and read-only".to_owned()));
        Given::with(())
            .given(vec![created()])
            .when(EngagementCommand::Unarchive { organization_id: org() })
            .then_expect_error(DomainError::Conflict("the engagement is not archived".to_owned()));
    }

    #[test]
    fn an_archived_engagement_is_read_only() {
        let patch = EngagementPatch { name: Some("Renamed".to_owned()), ..EngagementPatch::default() };
        Given::with(())
            .given(vec![created(), archived()])
            .when(EngagementCommand::Update { organization_id: org(), patch })
            .then_expect_error(DomainError::Conflict("the engagement is archived and read-only".to_owned()));
        Given::with(())
            .given(vec![created(), archived()])
            .when(EngagementCommand::Delete { organization_id: org() })
            .then_expect_error(DomainError::Conflict("the engagement is archived and read-only".to_owned()));
    }

    #[test]
    fn delete_hides_the_engagement() {
        Given::with(())
            .given(vec![created()])
            .when(EngagementCommand::Delete { organization_id: org() })
            .then_expect_events(vec![EngagementEvent::Deleted(Empty {})]);
        Given::with(())
            .given(vec![created(), EngagementEvent::Deleted(Empty {})])
            .when(EngagementCommand::Archive { organization_id: org() })
            .then_expect_error(DomainError::NotFound);
    }

    #[test]
    fn commands_on_a_missing_engagement_are_not_found() {
        Given::with(())
            .given_no_previous_events()
            .when(EngagementCommand::Delete { organization_id: org() })
            .then_expect_error(DomainError::NotFound);
    }

    #[test]
    fn claims_follow_the_name() {
        let create = EngagementCommand::Create { organization_id: org(), engagement: new_engagement() };
        assert_eq!(
            create.claim().map(|c| c.claim),
            Some(NameClaim::Reserve { scope: NAME_SCOPE.to_owned(), key: "acme external".to_owned() })
        );
        let archive = EngagementCommand::Archive { organization_id: org() };
        assert_eq!(archive.claim(), None);
    }
}
