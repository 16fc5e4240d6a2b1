//! The report aggregate: a document rendered from an engagement's findings, reviewed and then
//! published (after which it never changes).

use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use pwnbook_events::report::{ReportCreated, ReportEvent, ReportGenerated, ReportUpdated};
use pwnbook_events::{Empty, StatusChange};
use serde::{Deserialize, Serialize};

use crate::validate::{self, Errors};
use crate::DomainError;

pub const FORMATS: &[&str] = &["markdown", "html", "json"];
pub const STATUSES: &[&str] = &["draft", "in_review", "approved", "published"];

/// Forward through review to publication, or back one step before publication.
pub fn status_allowed(from: &str, to: &str) -> bool {
    matches!(
        (from, to),
        ("draft", "in_review")
            | ("in_review", "draft" | "approved")
            | ("approved", "in_review" | "published")
    )
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReportPatch {
    pub title: Option<String>,
    pub format: Option<String>,
    pub status: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ReportCommand {
    Create {
        organization_id: String,
        engagement_id: String,
        title: String,
        format: Option<String>,
    },
    Update {
        organization_id: String,
        patch: ReportPatch,
    },
    /// `content` is the document the caller rendered in the report's current format.
    Generate {
        organization_id: String,
        format: String,
        content: String,
        finding_ids: Vec<String>,
        /// The moment the content names as its generation (RFC 3339).
        generated_at: String,
    },
    Delete {
        organization_id: String,
    },
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub exists: bool,
    pub deleted: bool,
    pub organization_id: String,
    pub engagement_id: String,
    pub title: String,
    pub format: String,
    pub status: String,
    pub generated: bool,
}

impl Report {
    /// A live report of the organization that may still change.
    fn writable_by(&self, organization_id: &str) -> Result<(), DomainError> {
        if !(self.exists && !self.deleted && self.organization_id == organization_id) {
            return Err(DomainError::NotFound);
        }
        if self.status == "published" {
            return Err(DomainError::Conflict("the report is published and immutable".to_owned()));
        }
        Ok(())
    }

    fn update(&self, patch: ReportPatch) -> Result<Vec<ReportEvent>, DomainError> {
        let mut errors = Errors::default();
        let mut changed = ReportUpdated::default();
        if let Some(title) = patch.title {
            changed.title =
                errors.check(validate::text("title", &title, 1, 300)).filter(|t| *t != self.title);
        }
        if let Some(format) = patch.format {
            changed.format =
                errors.check(validate::one_of("format", &format, FORMATS)).filter(|f| *f != self.format);
        }
        let status = patch.status.and_then(|s| errors.check(validate::one_of("status", &s, STATUSES)));
        errors.finish()?;
        let mut events = Vec::new();
        if !changed.is_empty() {
            events.push(ReportEvent::Updated(changed));
        }
        if let Some(to) = status.filter(|s| *s != self.status) {
            if !status_allowed(&self.status, &to) {
                return Err(DomainError::Conflict(format!(
                    "a report cannot go from {} to {to}",
                    self.status
                )));
            }
            if to == "published" && !self.generated {
                return Err(DomainError::Conflict("generate the report before publishing it".to_owned()));
            }
            events.push(ReportEvent::StatusChanged(StatusChange { from: self.status.clone(), to }));
        }
        Ok(events)
    }
}

impl Aggregate for Report {
    const TYPE: &'static str = "report";
    type Command = ReportCommand;
    type Event = ReportEvent;
    type Error = DomainError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), DomainError> {
        let events = match command {
            ReportCommand::Create { organization_id, engagement_id, title, format } => {
                if self.exists {
                    return Err(DomainError::Conflict("the report already exists".to_owned()));
                }
                let mut errors = Errors::default();
                let title = errors.check(validate::text("title", &title, 1, 300));
                let format = format.map(|f| errors.check(validate::one_of("format", &f, FORMATS)));
                errors.finish()?;
                vec![ReportEvent::Created(ReportCreated {
                    organization_id,
                    engagement_id,
                    title: title.unwrap_or_default(),
                    format: format.flatten().unwrap_or_else(|| "markdown".to_owned()),
                    status: "draft".to_owned(),
                })]
            }
            ReportCommand::Update { organization_id, patch } => {
                self.writable_by(&organization_id)?;
                self.update(patch)?
            }
            ReportCommand::Generate { organization_id, format, content, finding_ids, generated_at } => {
                self.writable_by(&organization_id)?;
                if self.status == "approved" {
                    return Err(DomainError::Conflict(
                        "an approved report goes back to in_review before it is generated again".to_owned(),
                    ));
                }
                if format != self.format {
                    return Err(DomainError::Conflict(
                        "the report's format changed; generate again".to_owned(),
                    ));
                }
                vec![ReportEvent::Generated(ReportGenerated {
                    format,
                    content,
                    finding_ids,
                    generated_at: Some(generated_at),
                })]
            }
            ReportCommand::Delete { organization_id } => {
                self.writable_by(&organization_id)?;
                vec![ReportEvent::Deleted(Empty {})]
            }
        };
        for event in events {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            ReportEvent::Created(c) => {
                *self = Self {
                    exists: true,
                    deleted: false,
                    organization_id: c.organization_id,
                    engagement_id: c.engagement_id,
                    title: c.title,
                    format: c.format,
                    status: c.status,
                    generated: false,
                }
            }
            ReportEvent::Updated(u) => {
                if let Some(title) = u.title {
                    self.title = title;
                }
                if let Some(format) = u.format {
                    self.format = format;
                }
            }
            ReportEvent::Generated(_) => self.generated = true,
            ReportEvent::StatusChanged(c) => self.status = c.to,
            ReportEvent::Deleted(_) => self.deleted = true,
        }
    }
}

#[cfg(test)]
mod tests {
    use cqrs_es::test::TestFramework;

    use super::*;

    type Given = TestFramework<Report>;
    const ORG: &str = "org_01j9k2m3n4p5q6r7s8t9";
    const ENG: &str = "eng_01j9k2m3n4p5q6r7s8t9";

    fn org() -> String {
        ORG.to_owned()
    }

    fn created() -> ReportEvent {
        ReportEvent::Created(ReportCreated {
            organization_id: org(),
            engagement_id: ENG.to_owned(),
            title: "Final report".to_owned(),
            format: "html".to_owned(),
            status: "draft".to_owned(),
        })
    }

    fn generated() -> ReportEvent {
        ReportEvent::Generated(ReportGenerated {
            format: "html".to_owned(),
            content: "<html></html>".to_owned(),
            finding_ids: vec![],
            generated_at: Some("2025-01-15T10:30:00.000Z".to_owned()),
        })
    }

    fn moved(from: &str, to: &str) -> ReportEvent {
        ReportEvent::StatusChanged(StatusChange { from: from.to_owned(), to: to.to_owned() })
    }

    fn to(status: &str) -> ReportCommand {
        ReportCommand::Update {
            organization_id: org(),
            patch: ReportPatch { status: Some(status.to_owned()), ..ReportPatch::default() },
        }
    }

    fn generate(format: &str) -> ReportCommand {
        ReportCommand::Generate {
            organization_id: org(),
            format: format.to_owned(),
            content: "<html></html>".to_owned(),
            finding_ids: vec![],
            generated_at: "2025-01-15T10:30:00.000Z".to_owned(),
        }
    }

    fn published() -> Vec<ReportEvent> {
        vec![
            created(),
            generated(),
            moved("draft", "in_review"),
            moved("in_review", "approved"),
            moved("approved", "published"),
        ]
    }

    #[test]
    fn create_validates_and_defaults_to_a_markdown_draft() {
        let create = |title: &str, format: Option<&str>| ReportCommand::Create {
            organization_id: org(),
            engagement_id: ENG.to_owned(),
            title: title.to_owned(),
            format: format.map(str::to_owned),
        };
        Given::with(())
            .given_no_previous_events()
            .when(create(" Final report ", Some("html")))
            .then_expect_events(vec![created()]);
        let CreatedFormat(format) = CreatedFormat::of(
            Given::with(()).given_no_previous_events().when(create("R", None)).inspect_result(),
        );
        assert_eq!(format, "markdown");
        Given::with(())
            .given_no_previous_events()
            .when(create("R", Some("pdf")))
            .then_expect_error(DomainError::invalid("format", "must be one of markdown, html, json"));
        Given::with(())
            .given(vec![created()])
            .when(create("R", None))
            .then_expect_error(DomainError::Conflict("the report already exists".to_owned()));
    }

    struct CreatedFormat(String);

    impl CreatedFormat {
        fn of(result: Result<Vec<ReportEvent>, DomainError>) -> Self {
            match result.as_deref() {
                Ok([ReportEvent::Created(c)]) => Self(c.format.clone()),
                other => panic!("expected report.created, got {other:?}"),
            }
        }
    }

    #[test]
    fn the_status_follows_its_lifecycle() {
        Given::with(())
            .given(vec![created()])
            .when(to("in_review"))
            .then_expect_events(vec![moved("draft", "in_review")]);
        Given::with(())
            .given(vec![created()])
            .when(to("approved"))
            .then_expect_error(DomainError::Conflict("a report cannot go from draft to approved".to_owned()));
        let approved = vec![created(), moved("draft", "in_review"), moved("in_review", "approved")];
        Given::with(())
            .given(approved.clone())
            .when(to("published"))
            .then_expect_error(DomainError::Conflict("generate the report before publishing it".to_owned()));
        let mut ready = approved;
        ready.insert(1, generated());
        Given::with(())
            .given(ready.clone())
            .when(to("published"))
            .then_expect_events(vec![moved("approved", "published")]);
        Given::with(())
            .given(ready)
            .when(to("in_review"))
            .then_expect_events(vec![moved("approved", "in_review")]);
        assert!(!status_allowed("draft", "published") && !status_allowed("published", "draft"));
    }

    #[test]
    fn generation_needs_the_current_format_and_an_unapproved_report() {
        Given::with(()).given(vec![created()]).when(generate("html")).then_expect_events(vec![generated()]);
        Given::with(()).given(vec![created()]).when(generate("json")).then_expect_error(
            DomainError::Conflict("the report's format changed; generate again".to_owned()),
        );
        Given::with(())
            .given(vec![created(), moved("draft", "in_review"), moved("in_review", "approved")])
            .when(generate("html"))
            .then_expect_error(DomainError::Conflict(
                "an approved report goes back to in_review before it is generated again".to_owned(),
            ));
    }

    #[test]
    fn a_published_report_is_immutable() {
        let immutable = DomainError::Conflict("the report is published and immutable".to_owned());
        for command in [
            to("approved"),
            generate("html"),
            ReportCommand::Update {
                organization_id: org(),
                patch: ReportPatch { title: Some("x".to_owned()), ..ReportPatch::default() },
            },
            ReportCommand::Delete { organization_id: org() },
        ] {
            Given::with(()).given(published()).when(command).then_expect_error(immutable.clone());
        }
    }

    #[test]
    fn update_and_delete() {
        let patch = ReportPatch {
            title: Some("Final report".to_owned()),
            format: Some("json".to_owned()),
            ..ReportPatch::default()
        };
        Given::with(())
            .given(vec![created()])
            .when(ReportCommand::Update { organization_id: org(), patch })
            .then_expect_events(vec![ReportEvent::Updated(ReportUpdated {
                format: Some("json".to_owned()),
                ..ReportUpdated::default()
            })]);
        Given::with(())
            .given(vec![created()])
            .when(ReportCommand::Delete { organization_id: org() })
            .then_expect_events(vec![ReportEvent::Deleted(Empty {})]);
        Given::with(())
            .given(vec![created(), ReportEvent::Deleted(Empty {})])
            .when(to("in_review"))
            .then_expect_error(DomainError::NotFound);
    }
}
