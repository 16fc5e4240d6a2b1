//! The organization aggregate: created (by the CLI or the bootstrap) and renamed.

use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use pwnbook_events::organization::{OrganizationCreated, OrganizationEvent, OrganizationUpdated};
use serde::{Deserialize, Serialize};

use crate::{validate, DomainError};

#[derive(Debug, Clone, PartialEq)]
pub enum OrganizationCommand {
    Create { name: String },
    Rename { name: String },
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Organization {
    pub exists: bool,
    pub name: String,
    pub slug: String,
}

/// A URL-friendly form of `name`: lowercase ASCII letters and digits, words joined by single dashes.
pub fn slugify(name: &str) -> String {
    let mut slug = String::with_capacity(name.len());
    for c in name.chars().flat_map(char::to_lowercase) {
        if c.is_ascii_alphanumeric() {
            slug.push(c);
        } else if c.is_alphanumeric() {
            // Letters without an ASCII form are dropped rather than splitting the word.
        } else if !slug.is_empty() && !slug.ends_with('-') {
            slug.push('-');
        }
    }
    let slug = slug.trim_end_matches('-');
    if slug.is_empty() {
        "org".to_owned()
    } else {
        slug.to_owned()
    }
}

impl Aggregate for Organization {
    const TYPE: &'static str = "organization";
    type Command = OrganizationCommand;
    type Event = OrganizationEvent;
    type Error = DomainError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), DomainError> {
        let event = match command {
            OrganizationCommand::Create { name } => {
                if self.exists {
                    return Err(DomainError::Conflict("the organization already exists".to_owned()));
                }
                let name =
                    validate::text("name", &name, 1, 200).map_err(|e| DomainError::Validation(vec![e]))?;
                OrganizationEvent::Created(OrganizationCreated { slug: slugify(&name), name })
            }
            OrganizationCommand::Rename { name } => {
                if !self.exists {
                    return Err(DomainError::NotFound);
                }
                let name =
                    validate::text("name", &name, 1, 200).map_err(|e| DomainError::Validation(vec![e]))?;
                if name == self.name {
                    return Ok(());
                }
                OrganizationEvent::Updated(OrganizationUpdated { name })
            }
        };
        sink.write(event, self).await;
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            OrganizationEvent::Created(created) => {
                *self = Self { exists: true, name: created.name, slug: created.slug };
            }
            OrganizationEvent::Updated(updated) => self.name = updated.name,
        }
    }
}

#[cfg(test)]
mod tests {
    use cqrs_es::test::TestFramework;

    use super::*;

    type Given = TestFramework<Organization>;

    fn created() -> OrganizationEvent {
        OrganizationEvent::Created(OrganizationCreated {
            name: "Acme Red Team".to_owned(),
            slug: "acme-red-team".to_owned(),
        })
    }

    #[test]
    fn create_derives_the_slug() {
        Given::with(())
            .given_no_previous_events()
            .when(OrganizationCommand::Create { name: " Acme Red Team ".to_owned() })
            .then_expect_events(vec![created()]);
        assert_eq!(slugify("  Ünïcode & Co. -- 2025!"), "ncode-co-2025");
        assert_eq!(slugify("!!!"), "org");
    }

    #[test]
    fn create_rejects_an_empty_name_and_a_second_create() {
        Given::with(())
            .given_no_previous_events()
            .when(OrganizationCommand::Create { name: "  ".to_owned() })
            .then_expect_error(DomainError::invalid("name", "must not be empty"));
        Given::with(())
            .given(vec![created()])
            .when(OrganizationCommand::Create { name: "Other".to_owned() })
            .then_expect_error(DomainError::Conflict("the organization already exists".to_owned()));
    }

    #[test]
    fn rename_records_the_new_name_and_skips_no_ops() {
        Given::with(())
            .given(vec![created()])
            .when(OrganizationCommand::Rename { name: "Acme Blue".to_owned() })
            .then_expect_events(vec![OrganizationEvent::Updated(OrganizationUpdated {
                name: "Acme Blue".to_owned(),
            })]);
        Given::with(())
            .given(vec![created()])
            .when(OrganizationCommand::Rename { name: "Acme Red Team".to_owned() })
            .then_expect_events(vec![]);
        Given::with(())
            .given_no_previous_events()
            .when(OrganizationCommand::Rename { name: "x".to_owned() })
            .then_expect_error(DomainError::NotFound);
    }
}
