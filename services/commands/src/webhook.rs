//! The webhook aggregate: a subscription of an organization's events to a URL. The URL's
//! reachability rules (SSRF) need DNS, so the API checks them before it sends a command; the
//! aggregate checks the shape of every field.

use std::fmt;

use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use pwnbook_events::event_types::type_selector;
use pwnbook_events::webhook::{WebhookCreated, WebhookEvent, WebhookUpdated};
use pwnbook_events::Empty;
use serde::{Deserialize, Serialize};

use crate::validate::Errors;
use crate::{DomainError, FieldError};

#[derive(Clone, PartialEq)]
pub enum WebhookCommand {
    Create {
        organization_id: String,
        url: String,
        events: Vec<String>,
        secret: String,
    },
    Update {
        organization_id: String,
        url: Option<String>,
        events: Option<Vec<String>>,
        secret: Option<String>,
    },
    Delete {
        organization_id: String,
    },
}

#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Webhook {
    pub exists: bool,
    pub deleted: bool,
    pub organization_id: String,
    pub url: String,
    pub events: Vec<String>,
    pub secret: String,
}

/// Debug output never shows the signing secret.
const REDACTED: &str = "<redacted>";

impl fmt::Debug for WebhookCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Create { organization_id, url, events, .. } => f
                .debug_struct("Create")
                .field("organization_id", organization_id)
                .field("url", url)
                .field("events", events)
                .field("secret", &REDACTED)
                .finish(),
            Self::Update { organization_id, url, events, secret } => f
                .debug_struct("Update")
                .field("organization_id", organization_id)
                .field("url", url)
                .field("events", events)
                .field("secret", &secret.as_ref().map(|_| REDACTED))
                .finish(),
            Self::Delete { organization_id } => {
                f.debug_struct("Delete").field("organization_id", organization_id).finish()
            }
        }
    }
}

impl fmt::Debug for Webhook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Webhook")
            .field("exists", &self.exists)
            .field("deleted", &self.deleted)
            .field("organization_id", &self.organization_id)
            .field("url", &self.url)
            .field("events", &self.events)
            .field("secret", &REDACTED)
            .finish()
    }
}

/// An absolute `http://` or `https://` URL of at most 2000 characters, without credentials: the
/// URL is shown back to anyone who may read the webhook and logged with each delivery, and the
/// signing secret is what authenticates a delivery.
fn check_url(url: &str) -> Result<String, FieldError> {
    let url = url.trim();
    let rest = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://"));
    match rest {
        Some(rest) if !rest.is_empty() && !rest.starts_with('/') && url.len() <= 2000 => {
            let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
            if authority.contains('@') {
                return Err(FieldError::new(
                    "url",
                    "must not hold credentials (user:password@); the signing secret authenticates deliveries",
                ));
            }
            Ok(url.to_owned())
        }
        _ => Err(FieldError::new("url", "must be an absolute http:// or https:// URL")),
    }
}

/// One to 50 event types (`engagement.created`), resource prefixes (`finding.*`) or `*`, each
/// one the log can hold (a typo would never match); duplicates dropped.
fn check_events(events: &[String]) -> Result<Vec<String>, FieldError> {
    if events.is_empty() || events.len() > 50 {
        return Err(FieldError::new("events", "must name 1 to 50 event types"));
    }
    let mut out: Vec<String> = Vec::new();
    for event in events {
        if event != "*" && type_selector(event).is_none() {
            return Err(FieldError::new(
                "events",
                format!("{event:?} is not an event type such as engagement.created, a prefix such as finding.*, or *"),
            ));
        }
        if !out.contains(event) {
            out.push(event.clone());
        }
    }
    Ok(out)
}

fn check_secret(secret: &str) -> Result<String, FieldError> {
    if (16..=200).contains(&secret.chars().count()) {
        Ok(secret.to_owned())
    } else {
        Err(FieldError::new("secret", "must have 16 to 200 characters"))
    }
}

impl Aggregate for Webhook {
    const TYPE: &'static str = "webhook";
    type Command = WebhookCommand;
    type Event = WebhookEvent;
    type Error = DomainError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), DomainError> {
        let event = match command {
            WebhookCommand::Create { organization_id, url, events, secret } => {
                if self.exists {
                    return Err(DomainError::Conflict("the webhook already exists".to_owned()));
                }
                let mut errors = Errors::default();
                let url = errors.check(check_url(&url));
                let events = errors.check(check_events(&events));
                let secret = errors.check(check_secret(&secret));
                errors.finish()?;
                WebhookEvent::Created(WebhookCreated {
                    organization_id,
                    url: url.unwrap_or_default(),
                    events: events.unwrap_or_default(),
                    secret: secret.unwrap_or_default(),
                })
            }
            WebhookCommand::Update { organization_id, url, events, secret } => {
                self.visible_to(&organization_id)?;
                let mut errors = Errors::default();
                let url = url.and_then(|u| errors.check(check_url(&u)));
                let events = events.and_then(|e| errors.check(check_events(&e)));
                let secret = secret.and_then(|s| errors.check(check_secret(&s)));
                errors.finish()?;
                let changed = WebhookUpdated {
                    url: url.filter(|u| *u != self.url),
                    events: events.filter(|e| *e != self.events),
                    secret: secret.filter(|s| *s != self.secret),
                };
                if changed.is_empty() {
                    return Ok(());
                }
                WebhookEvent::Updated(changed)
            }
            WebhookCommand::Delete { organization_id } => {
                self.visible_to(&organization_id)?;
                WebhookEvent::Deleted(Empty {})
            }
        };
        sink.write(event, self).await;
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            WebhookEvent::Created(created) => {
                *self = Self {
                    exists: true,
                    deleted: false,
                    organization_id: created.organization_id,
                    url: created.url,
                    events: created.events,
                    secret: created.secret,
                };
            }
            WebhookEvent::Updated(changed) => {
                if let Some(url) = changed.url {
                    self.url = url;
                }
                if let Some(events) = changed.events {
                    self.events = events;
                }
                if let Some(secret) = changed.secret {
                    self.secret = secret;
                }
            }
            WebhookEvent::Deleted(_) => self.deleted = true,
        }
    }
}

impl Webhook {
    fn visible_to(&self, organization_id: &str) -> Result<(), DomainError> {
        if self.exists && !self.deleted && self.organization_id == organization_id {
            Ok(())
        } else {
            Err(DomainError::NotFound)
        }
    }
}

#[cfg(test)]
mod tests {
    use cqrs_es::test::TestFramework;

    use super::*;

    #[test]
    fn debug_output_never_shows_the_secret() {
        let create = WebhookCommand::Create {
            organization_id: "org_01j9k2m3n4p5q6r7s8t9".to_owned(),
            url: "https://hooks.example/x".to_owned(),
            events: vec!["finding.*".to_owned()],
            secret: "whsec_topsecretvalue".to_owned(),
        };
        let update = WebhookCommand::Update {
            organization_id: "org_01j9k2m3n4p5q6r7s8t9".to_owned(),
            url: None,
            events: None,
            secret: Some("whsec_topsecretvalue".to_owned()),
        };
        let state = Webhook { secret: "whsec_topsecretvalue".to_owned(), ..Webhook::default() };
        for text in [format!("{create:?}"), format!("{update:?}"), format!("{state:?}")] {
            assert!(!text.contains("topsecret"), "{text}");
        }
        assert!(format!("{create:?}").starts_with("Create {"));
    }

    type Given = TestFramework<Webhook>;
    const ORG: &str = "org_01j9k2m3n4p5q6r7s8t9";
    const SECRET: &str = "0123456789abcdef";

    fn created() -> WebhookEvent {
        WebhookEvent::Created(WebhookCreated {
            organization_id: ORG.to_owned(),
            url: "https://hooks.example.com/in".to_owned(),
            events: vec!["engagement.*".to_owned()],
            secret: SECRET.to_owned(),
        })
    }

    #[test]
    fn create_checks_every_field() {
        Given::with(())
            .given_no_previous_events()
            .when(WebhookCommand::Create {
                organization_id: ORG.to_owned(),
                url: " https://hooks.example.com/in ".to_owned(),
                events: vec!["engagement.*".to_owned(), "engagement.*".to_owned()],
                secret: SECRET.to_owned(),
            })
            .then_expect_events(vec![created()]);
        Given::with(())
            .given_no_previous_events()
            .when(WebhookCommand::Create {
                organization_id: ORG.to_owned(),
                url: "ftp://x".to_owned(),
                events: vec![],
                secret: "short".to_owned(),
            })
            .then_expect_error(DomainError::Validation(vec![
                FieldError::new("url", "must be an absolute http:// or https:// URL"),
                FieldError::new("events", "must name 1 to 50 event types"),
                FieldError::new("secret", "must have 16 to 200 characters"),
            ]));
        for with_credentials in ["https://user:pass@hooks.example.com/in", "http://token@hooks.example.com"] {
            Given::with(())
                .given_no_previous_events()
                .when(WebhookCommand::Create {
                    organization_id: ORG.to_owned(),
                    url: with_credentials.to_owned(),
                    events: vec!["finding.*".to_owned()],
                    secret: SECRET.to_owned(),
                })
                .then_expect_error(DomainError::Validation(vec![FieldError::new(
                    "url",
                    "must not hold credentials (user:password@); the signing secret authenticates deliveries",
                )]));
        }
        for unknown in ["finding.bogus", "bogus.*", "Finding.created"] {
            Given::with(())
                .given_no_previous_events()
                .when(WebhookCommand::Create {
                    organization_id: ORG.to_owned(),
                    url: "https://hooks.example.com/in".to_owned(),
                    events: vec!["finding.*".to_owned(), unknown.to_owned()],
                    secret: SECRET.to_owned(),
                })
                .then_expect_error(DomainError::Validation(vec![FieldError::new(
                    "events",
                    format!("{unknown:?} is not an event type such as engagement.created, a prefix such as finding.*, or *"),
                )]));
        }
    }

    #[test]
    fn update_records_only_changes_and_delete_hides_it() {
        Given::with(())
            .given(vec![created()])
            .when(WebhookCommand::Update {
                organization_id: ORG.to_owned(),
                url: Some("https://hooks.example.com/in".to_owned()),
                events: Some(vec!["finding.*".to_owned()]),
                secret: None,
            })
            .then_expect_events(vec![WebhookEvent::Updated(WebhookUpdated {
                events: Some(vec!["finding.*".to_owned()]),
                ..WebhookUpdated::default()
            })]);
        Given::with(())
            .given(vec![created(), WebhookEvent::Deleted(Empty {})])
            .when(WebhookCommand::Delete { organization_id: ORG.to_owned() })
            .then_expect_error(DomainError::NotFound);
        Given::with(())
            .given(vec![created()])
            .when(WebhookCommand::Delete { organization_id: "org_00000000000000000000".to_owned() })
            .then_expect_error(DomainError::NotFound);
    }
}
