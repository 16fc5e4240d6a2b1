//! The task aggregate: a to-do of an engagement, `open` → `in_progress` → `closed` (and reopened).

use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use pwnbook_events::task::{TaskCreated, TaskEvent, TaskUpdated};
use pwnbook_events::{Empty, StatusChange};
use serde::{Deserialize, Serialize};

use crate::validate::{self, Errors};
use crate::{DomainError, FieldError};

pub const STATUSES: &[&str] = &["open", "in_progress", "closed"];
pub const PRIORITIES: &[&str] = &["low", "medium", "high"];

/// `low` 0, `medium` 1, `high` 2: priority sorts by rank.
pub fn priority_rank(priority: &str) -> i64 {
    match priority {
        "high" => 2,
        "medium" => 1,
        _ => 0,
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct NewTask {
    pub title: String,
    pub description: Option<String>,
    pub priority: Option<String>,
    pub due_date: Option<String>,
}

/// A merge patch: `None` leaves a field alone, `Some(None)` clears it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TaskPatch {
    pub title: Option<String>,
    pub description: Option<Option<String>>,
    pub priority: Option<String>,
    pub due_date: Option<Option<String>>,
    pub status: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum TaskCommand {
    Create { organization_id: String, engagement_id: String, task: NewTask },
    Update { organization_id: String, patch: TaskPatch },
    Close { organization_id: String },
    Delete { organization_id: String },
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Task {
    pub exists: bool,
    pub deleted: bool,
    pub organization_id: String,
    pub engagement_id: String,
    pub title: String,
    pub description: Option<String>,
    pub status: String,
    pub priority: String,
    pub due_date: Option<String>,
}

impl Task {
    fn visible_to(&self, organization_id: &str) -> Result<(), DomainError> {
        if self.exists && !self.deleted && self.organization_id == organization_id {
            Ok(())
        } else {
            Err(DomainError::NotFound)
        }
    }

    /// The event that moves the task to `to`, if it is not there already.
    fn move_to(&self, to: &str) -> Option<TaskEvent> {
        let change = StatusChange { from: self.status.clone(), to: to.to_owned() };
        match (self.status.as_str(), to) {
            (from, to) if from == to => None,
            (_, "closed") => Some(TaskEvent::Closed(change)),
            ("closed", _) => Some(TaskEvent::Reopened(change)),
            _ => Some(TaskEvent::StatusChanged(change)),
        }
    }

    fn create(
        organization_id: String,
        engagement_id: String,
        new: NewTask,
    ) -> Result<TaskCreated, DomainError> {
        let mut errors = Errors::default();
        let title = errors.check(validate::text("title", &new.title, 1, 300));
        let description = new.description.map(|d| errors.check(validate::text("description", &d, 0, 10_000)));
        let priority = new.priority.map(|p| errors.check(validate::one_of("priority", &p, PRIORITIES)));
        let due_date = new.due_date.map(|d| errors.check(validate::date("dueDate", &d)));
        errors.finish()?;
        Ok(TaskCreated {
            organization_id,
            engagement_id,
            title: title.unwrap_or_default(),
            description: description.flatten(),
            status: "open".to_owned(),
            priority: priority.flatten().unwrap_or_else(|| "medium".to_owned()),
            due_date: due_date.flatten(),
        })
    }

    fn update(&self, patch: TaskPatch) -> Result<Vec<TaskEvent>, DomainError> {
        let mut errors = Errors::default();
        let mut changed = TaskUpdated::default();
        if let Some(title) = patch.title {
            changed.title =
                errors.check(validate::text("title", &title, 1, 300)).filter(|t| *t != self.title);
        }
        let optional = |errors: &mut Errors,
                        value: Option<Option<String>>,
                        current: &Option<String>,
                        check: &dyn Fn(&str) -> Result<String, FieldError>| match value
        {
            None => None,
            Some(None) => current.is_some().then_some(None),
            Some(Some(v)) => errors.check(check(&v)).filter(|v| current.as_ref() != Some(v)).map(Some),
        };
        changed.description = optional(&mut errors, patch.description, &self.description, &|v| {
            validate::text("description", v, 0, 10_000)
        });
        changed.due_date =
            optional(&mut errors, patch.due_date, &self.due_date, &|v| validate::date("dueDate", v));
        if let Some(priority) = patch.priority {
            changed.priority = errors
                .check(validate::one_of("priority", &priority, PRIORITIES))
                .filter(|p| *p != self.priority);
        }
        let status = patch.status.and_then(|s| errors.check(validate::one_of("status", &s, STATUSES)));
        errors.finish()?;
        let mut events = Vec::new();
        if !changed.is_empty() {
            events.push(TaskEvent::Updated(changed));
        }
        events.extend(status.and_then(|s| self.move_to(&s)));
        Ok(events)
    }
}

impl Aggregate for Task {
    const TYPE: &'static str = "task";
    type Command = TaskCommand;
    type Event = TaskEvent;
    type Error = DomainError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), DomainError> {
        let events = match command {
            TaskCommand::Create { organization_id, engagement_id, task } => {
                if self.exists {
                    return Err(DomainError::Conflict("the task already exists".to_owned()));
                }
                vec![TaskEvent::Created(Self::create(organization_id, engagement_id, task)?)]
            }
            TaskCommand::Update { organization_id, patch } => {
                self.visible_to(&organization_id)?;
                self.update(patch)?
            }
            TaskCommand::Close { organization_id } => {
                self.visible_to(&organization_id)?;
                let Some(closed) = self.move_to("closed") else {
                    return Err(DomainError::Conflict("the task is already closed".to_owned()));
                };
                vec![closed]
            }
            TaskCommand::Delete { organization_id } => {
                self.visible_to(&organization_id)?;
                vec![TaskEvent::Deleted(Empty {})]
            }
        };
        for event in events {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            TaskEvent::Created(c) => {
                *self = Self {
                    exists: true,
                    deleted: false,
                    organization_id: c.organization_id,
                    engagement_id: c.engagement_id,
                    title: c.title,
                    description: c.description,
                    status: c.status,
                    priority: c.priority,
                    due_date: c.due_date,
                }
            }
            TaskEvent::Updated(u) => {
                if let Some(title) = u.title {
                    self.title = title;
                }
                if let Some(description) = u.description {
                    self.description = description;
                }
                if let Some(priority) = u.priority {
                    self.priority = priority;
                }
                if let Some(due_date) = u.due_date {
                    self.due_date = due_date;
                }
            }
            TaskEvent::StatusChanged(c) | TaskEvent::Closed(c) | TaskEvent::Reopened(c) => self.status = c.to,
            TaskEvent::Deleted(_) => self.deleted = true,
        }
    }
}

#[cfg(test)]
mod tests {
    use cqrs_es::test::TestFramework;

    use super::*;

    type Given = TestFramework<Task>;
    const ORG: &str = "org_01j9k2m3n4p5q6r7s8t9";
    const ENG: &str = "eng_01j9k2m3n4p5q6r7s8t9";

    fn org() -> String {
        ORG.to_owned()
    }

    fn created() -> TaskEvent {
        TaskEvent::Created(TaskCreated {
            organization_id: org(),
            engagement_id: ENG.to_owned(),
            title: "Run nmap".to_owned(),
            description: None,
            status: "open".to_owned(),
            priority: "medium".to_owned(),
            due_date: Some("2025-02-01".to_owned()),
        })
    }

    fn change(from: &str, to: &str) -> StatusChange {
        StatusChange { from: from.to_owned(), to: to.to_owned() }
    }

    fn update(patch: TaskPatch) -> TaskCommand {
        TaskCommand::Update { organization_id: org(), patch }
    }

    #[test]
    fn create_defaults_to_open_and_medium() {
        let task = NewTask {
            title: " Run nmap ".to_owned(),
            due_date: Some("2025-02-01".to_owned()),
            ..NewTask::default()
        };
        Given::with(())
            .given_no_previous_events()
            .when(TaskCommand::Create { organization_id: org(), engagement_id: ENG.to_owned(), task })
            .then_expect_events(vec![created()]);
    }

    #[test]
    fn create_reports_every_invalid_field() {
        let task = NewTask {
            title: "".to_owned(),
            priority: Some("urgent".to_owned()),
            due_date: Some("2025-02-30".to_owned()),
            ..NewTask::default()
        };
        let fields: Vec<String> = match Given::with(())
            .given_no_previous_events()
            .when(TaskCommand::Create { organization_id: org(), engagement_id: ENG.to_owned(), task })
            .inspect_result()
        {
            Err(DomainError::Validation(errors)) => errors.into_iter().map(|e| e.field).collect(),
            other => panic!("expected a validation error, got {other:?}"),
        };
        assert_eq!(fields, ["title", "priority", "dueDate"]);
        Given::with(())
            .given(vec![created()])
            .when(TaskCommand::Create {
                organization_id: org(),
                engagement_id: ENG.to_owned(),
                task: NewTask::default(),
            })
            .then_expect_error(DomainError::Conflict("the task already exists".to_owned()));
    }

    #[test]
    fn update_records_changed_fields_then_the_status() {
        let patch = TaskPatch {
            title: Some("Run nmap".to_owned()),
            priority: Some("high".to_owned()),
            due_date: Some(None),
            status: Some("in_progress".to_owned()),
            ..TaskPatch::default()
        };
        Given::with(()).given(vec![created()]).when(update(patch)).then_expect_events(vec![
            TaskEvent::Updated(TaskUpdated {
                priority: Some("high".to_owned()),
                due_date: Some(None),
                ..TaskUpdated::default()
            }),
            TaskEvent::StatusChanged(change("open", "in_progress")),
        ]);
        Given::with(())
            .given(vec![created()])
            .when(update(TaskPatch { status: Some("done".to_owned()), ..TaskPatch::default() }))
            .then_expect_error(DomainError::invalid("status", "must be one of open, in_progress, closed"));
        Given::with(())
            .given(vec![created()])
            .when(update(TaskPatch { status: Some("open".to_owned()), ..TaskPatch::default() }))
            .then_expect_events(vec![]);
    }

    #[test]
    fn close_and_reopen() {
        Given::with(())
            .given(vec![created()])
            .when(TaskCommand::Close { organization_id: org() })
            .then_expect_events(vec![TaskEvent::Closed(change("open", "closed"))]);
        let closed = vec![created(), TaskEvent::Closed(change("open", "closed"))];
        Given::with(())
            .given(closed.clone())
            .when(TaskCommand::Close { organization_id: org() })
            .then_expect_error(DomainError::Conflict("the task is already closed".to_owned()));
        Given::with(())
            .given(closed)
            .when(update(TaskPatch { status: Some("in_progress".to_owned()), ..TaskPatch::default() }))
            .then_expect_events(vec![TaskEvent::Reopened(change("closed", "in_progress"))]);
    }

    #[test]
    fn delete_hides_the_task() {
        Given::with(())
            .given(vec![created()])
            .when(TaskCommand::Delete { organization_id: org() })
            .then_expect_events(vec![TaskEvent::Deleted(Empty {})]);
        Given::with(())
            .given(vec![created(), TaskEvent::Deleted(Empty {})])
            .when(TaskCommand::Close { organization_id: org() })
            .then_expect_error(DomainError::NotFound);
        Given::with(())
            .given(vec![created()])
            .when(TaskCommand::Close { organization_id: "org_00000000000000000000".to_owned() })
            .then_expect_error(DomainError::NotFound);
    }
}
