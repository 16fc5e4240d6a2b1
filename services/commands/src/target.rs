//! The target aggregate: a host, network, URL or service in an engagement's scope.

use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use pwnbook_events::target::{TargetCreated, TargetEvent, TargetUpdated};
use pwnbook_events::{Empty, NameClaim};
use serde::{Deserialize, Serialize};

use crate::validate::{self, Errors};
use crate::{Claim, DomainError, FieldError};

pub const TYPES: &[&str] = &["domain", "hostname", "ip", "cidr", "url", "service"];
pub const PROTOCOLS: &[&str] = &["tcp", "udp"];

#[derive(Debug, Clone, PartialEq)]
pub struct NewTarget {
    pub kind: String,
    pub value: String,
    pub port: Option<i64>,
    pub protocol: Option<String>,
    pub in_scope: bool,
    pub tags: Vec<String>,
    pub notes: Option<String>,
}

/// A merge patch: `None` leaves a field alone, `Some(None)` clears it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TargetPatch {
    pub kind: Option<String>,
    pub value: Option<String>,
    pub port: Option<Option<i64>>,
    pub protocol: Option<Option<String>>,
    pub in_scope: Option<bool>,
    pub tags: Option<Vec<String>>,
    pub notes: Option<Option<String>>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum TargetCommand {
    Create { organization_id: String, engagement_id: String, target: NewTarget },
    Update { organization_id: String, patch: TargetPatch },
    Delete { organization_id: String },
}

/// Targets are unique per engagement by (type, normalized value, port).
pub fn claim_scope(engagement_id: &str) -> String {
    format!("target:{engagement_id}")
}

fn claim_key(kind: &str, value: &str, port: Option<u16>) -> String {
    format!("{kind}|{value}|{}", port.map(|p| p.to_string()).unwrap_or_default())
}

fn reserve(engagement_id: &str, kind: &str, value: &str, port: Option<u16>) -> Claim {
    Claim {
        claim: NameClaim::Reserve { scope: claim_scope(engagement_id), key: claim_key(kind, value, port) },
        conflict: format!(
            "the engagement already has the {kind} target {value}{}",
            port.map(|p| format!(" on port {p}")).unwrap_or_default()
        ),
    }
}

impl TargetCommand {
    /// The uniqueness claim of this command. `current` is the target's (engagement, type, value,
    /// port) as last read, which an update merges its patch into; an invalid identity claims
    /// nothing because the aggregate rejects the command anyway.
    pub fn claim(&self, current: Option<(&str, &str, &str, Option<u16>)>) -> Option<Claim> {
        match (self, current) {
            (Self::Create { engagement_id, target, .. }, _) => {
                let port = port(target.port).ok()?;
                let value = normalize(&target.kind, &target.value, port).ok()?;
                Some(reserve(engagement_id, &target.kind, &value, port))
            }
            (Self::Update { patch, .. }, Some((engagement_id, kind, value, current_port))) => {
                if patch.kind.is_none() && patch.value.is_none() && patch.port.is_none() {
                    return None;
                }
                let kind = patch.kind.as_deref().unwrap_or(kind);
                let port = match patch.port {
                    Some(p) => port(p).ok()?,
                    None => current_port,
                };
                let value = normalize(kind, patch.value.as_deref().unwrap_or(value), port).ok()?;
                Some(reserve(engagement_id, kind, &value, port))
            }
            (Self::Delete { .. }, Some((engagement_id, ..))) => Some(Claim {
                claim: NameClaim::Release { scope: claim_scope(engagement_id) },
                conflict: String::new(),
            }),
            _ => None,
        }
    }
}

fn port(port: Option<i64>) -> Result<Option<u16>, FieldError> {
    port.map(|p| {
        u16::try_from(p)
            .ok()
            .filter(|p| *p >= 1)
            .ok_or_else(|| FieldError::new("port", "must be from 1 to 65535"))
    })
    .transpose()
}

/// The value in normalized form for its type, or why it is not one.
pub fn normalize(kind: &str, value: &str, port: Option<u16>) -> Result<String, FieldError> {
    let value = value.trim();
    let normalized = match kind {
        "domain" => validate::dns_name(value, 2, true),
        "hostname" => validate::dns_name(value, 1, false),
        "ip" => validate::ip(value),
        "cidr" => validate::cidr(value),
        "url" => validate::target_url(value),
        "service" => {
            if port.is_none() {
                return Err(FieldError::new("port", "is required for a service target"));
            }
            validate::ip(value).or_else(|| validate::dns_name(value, 1, false))
        }
        _ => return Err(FieldError::new("type", format!("must be one of {}", TYPES.join(", ")))),
    };
    let expected = match kind {
        "domain" => "a domain name",
        "hostname" => "a hostname",
        "ip" => "an IPv4 or IPv6 address",
        "cidr" => "a CIDR network (address/prefix without host bits)",
        "url" => "an absolute URL with a host",
        _ => "an IP address or hostname",
    };
    normalized.ok_or_else(|| FieldError::new("value", format!("must be {expected}")))
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Target {
    pub exists: bool,
    pub deleted: bool,
    pub organization_id: String,
    pub engagement_id: String,
    pub kind: String,
    pub value: String,
    pub port: Option<u16>,
    pub protocol: Option<String>,
    pub in_scope: bool,
    pub tags: Vec<String>,
    pub notes: Option<String>,
}

impl Target {
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
        new: NewTarget,
    ) -> Result<TargetCreated, DomainError> {
        let mut errors = Errors::default();
        let kind = errors.check(validate::one_of("type", &new.kind, TYPES));
        let port = errors.check(port(new.port));
        let value = match &kind {
            // An invalid port is named already; the value is still checked, as if it were valid.
            Some(kind) => errors.check(normalize(kind, &new.value, port.unwrap_or(Some(1)))),
            None => None,
        };
        let protocol = new.protocol.map(|p| errors.check(validate::one_of("protocol", &p, PROTOCOLS)));
        let tags = errors.check(validate::tags("tags", &new.tags));
        let notes = new.notes.map(|n| errors.check(validate::text("notes", &n, 0, 10_000)));
        errors.finish()?;
        Ok(TargetCreated {
            organization_id,
            engagement_id,
            kind: kind.unwrap_or_default(),
            value: value.unwrap_or_default(),
            port: port.flatten(),
            protocol: protocol.flatten(),
            in_scope: new.in_scope,
            tags: tags.unwrap_or_default(),
            notes: notes.flatten(),
        })
    }

    fn update(&self, patch: TargetPatch) -> Result<TargetUpdated, DomainError> {
        let mut errors = Errors::default();
        let mut changed = TargetUpdated::default();
        let kind = match &patch.kind {
            Some(kind) => errors.check(validate::one_of("type", kind, TYPES)),
            None => Some(self.kind.clone()),
        };
        let port = match patch.port {
            Some(p) => errors.check(port(p)),
            None => Some(self.port),
        };
        // A new type or port re-validates the current value against it (an invalid port, named
        // already, as if it were valid).
        if let Some(kind) = &kind {
            let value = patch.value.as_deref().unwrap_or(&self.value);
            if let Some(value) = errors.check(normalize(kind, value, port.unwrap_or(Some(1)))) {
                changed.value = (value != self.value).then_some(value);
            }
            changed.kind = (*kind != self.kind).then(|| kind.clone());
            if let Some(port) = port {
                changed.port = (port != self.port).then_some(port);
            }
        }
        if let Some(protocol) = patch.protocol {
            let protocol = match protocol {
                None => Some(None),
                Some(p) => errors.check(validate::one_of("protocol", &p, PROTOCOLS)).map(Some),
            };
            changed.protocol = protocol.filter(|p| *p != self.protocol);
        }
        changed.in_scope = patch.in_scope.filter(|s| *s != self.in_scope);
        if let Some(tags) = patch.tags {
            if let Some(tags) = errors.check(validate::tags("tags", &tags)) {
                changed.tags = (tags != self.tags).then_some(tags);
            }
        }
        if let Some(notes) = patch.notes {
            let notes = match notes {
                None => Some(None),
                Some(n) => errors.check(validate::text("notes", &n, 0, 10_000)).map(Some),
            };
            changed.notes = notes.filter(|n| *n != self.notes);
        }
        errors.finish()?;
        Ok(changed)
    }
}

impl Aggregate for Target {
    const TYPE: &'static str = "target";
    type Command = TargetCommand;
    type Event = TargetEvent;
    type Error = DomainError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), DomainError> {
        let event = match command {
            TargetCommand::Create { organization_id, engagement_id, target } => {
                if self.exists {
                    return Err(DomainError::Conflict("the target already exists".to_owned()));
                }
                TargetEvent::Created(Self::create(organization_id, engagement_id, target)?)
            }
            TargetCommand::Update { organization_id, patch } => {
                self.visible_to(&organization_id)?;
                let changed = self.update(patch)?;
                if changed.is_empty() {
                    return Ok(());
                }
                TargetEvent::Updated(changed)
            }
            TargetCommand::Delete { organization_id } => {
                self.visible_to(&organization_id)?;
                TargetEvent::Deleted(Empty {})
            }
        };
        sink.write(event, self).await;
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            TargetEvent::Created(c) => {
                *self = Self {
                    exists: true,
                    deleted: false,
                    organization_id: c.organization_id,
                    engagement_id: c.engagement_id,
                    kind: c.kind,
                    value: c.value,
                    port: c.port,
                    protocol: c.protocol,
                    in_scope: c.in_scope,
                    tags: c.tags,
                    notes: c.notes,
                }
            }
            TargetEvent::Updated(u) => {
                if let Some(kind) = u.kind {
                    self.kind = kind;
                }
                if let Some(value) = u.value {
                    self.value = value;
                }
                if let Some(port) = u.port {
                    self.port = port;
                }
                if let Some(protocol) = u.protocol {
                    self.protocol = protocol;
                }
                if let Some(in_scope) = u.in_scope {
                    self.in_scope = in_scope;
                }
                if let Some(tags) = u.tags {
                    self.tags = tags;
                }
                if let Some(notes) = u.notes {
                    self.notes = notes;
                }
            }
            TargetEvent::Deleted(_) => self.deleted = true,
        }
    }
}

#[cfg(test)]
mod tests {
    use cqrs_es::test::TestFramework;

    use super::*;

    type Given = TestFramework<Target>;
    const ORG: &str = "org_01j9k2m3n4p5q6r7s8t9";
    const ENG: &str = "eng_01j9k2m3n4p5q6r7s8t9";

    fn org() -> String {
        ORG.to_owned()
    }

    fn new_target(kind: &str, value: &str, port: Option<i64>) -> NewTarget {
        NewTarget {
            kind: kind.to_owned(),
            value: value.to_owned(),
            port,
            protocol: None,
            in_scope: true,
            tags: vec![],
            notes: None,
        }
    }

    fn created() -> TargetEvent {
        TargetEvent::Created(TargetCreated {
            organization_id: org(),
            engagement_id: ENG.to_owned(),
            kind: "ip".to_owned(),
            value: "2001:db8::1".to_owned(),
            port: Some(443),
            protocol: Some("tcp".to_owned()),
            in_scope: true,
            tags: vec!["dmz".to_owned()],
            notes: None,
        })
    }

    fn create(target: NewTarget) -> TargetCommand {
        TargetCommand::Create { organization_id: org(), engagement_id: ENG.to_owned(), target }
    }

    #[test]
    fn an_invalid_port_does_not_hide_an_invalid_value() {
        let fields: Vec<String> = match Given::with(())
            .given_no_previous_events()
            .when(create(new_target("ip", "999.1.1.1", Some(0))))
            .inspect_result()
        {
            Err(DomainError::Validation(errors)) => errors.into_iter().map(|e| e.field).collect(),
            other => panic!("expected a validation error, got {other:?}"),
        };
        assert_eq!(fields, ["port", "value"]);
    }

    #[test]
    fn create_normalizes_the_value() {
        let target = NewTarget {
            protocol: Some("tcp".to_owned()),
            tags: vec!["dmz".to_owned(), "dmz".to_owned()],
            ..new_target("ip", " 2001:DB8:0::1 ", Some(443))
        };
        Given::with(()).given_no_previous_events().when(create(target)).then_expect_events(vec![created()]);
    }

    #[test]
    fn create_rejects_values_that_do_not_fit_the_type() {
        for (kind, value, port, field) in [
            ("ip", "10.0.0.300", None, "value"),
            ("cidr", "10.0.0.1/24", None, "value"),
            ("domain", "not a domain", None, "value"),
            ("url", "acme.test/login", None, "value"),
            ("service", "10.0.0.1", None, "port"),
            ("ip", "10.0.0.1", Some(0), "port"),
            ("ip", "10.0.0.1", Some(65_536), "port"),
            ("host", "x", None, "type"),
        ] {
            let fields: Vec<String> = match Given::with(())
                .given_no_previous_events()
                .when(create(new_target(kind, value, port)))
                .inspect_result()
            {
                Err(DomainError::Validation(errors)) => errors.into_iter().map(|e| e.field).collect(),
                other => panic!("{kind} {value}: expected a validation error, got {other:?}"),
            };
            assert_eq!(fields, [field], "{kind} {value}");
        }
        let target = NewTarget { protocol: Some("icmp".to_owned()), ..new_target("ip", "10.0.0.1", None) };
        Given::with(())
            .given_no_previous_events()
            .when(create(target))
            .then_expect_error(DomainError::invalid("protocol", "must be one of tcp, udp"));
    }

    #[test]
    fn create_twice_conflicts() {
        Given::with(())
            .given(vec![created()])
            .when(create(new_target("ip", "10.0.0.1", None)))
            .then_expect_error(DomainError::Conflict("the target already exists".to_owned()));
    }

    #[test]
    fn update_records_only_changed_fields_and_revalidates_the_value() {
        let patch = TargetPatch {
            value: Some("2001:db8:0::1".to_owned()),
            port: Some(None),
            in_scope: Some(false),
            notes: Some(Some("behind WAF".to_owned())),
            ..TargetPatch::default()
        };
        Given::with(())
            .given(vec![created()])
            .when(TargetCommand::Update { organization_id: org(), patch })
            .then_expect_events(vec![TargetEvent::Updated(TargetUpdated {
                port: Some(None),
                in_scope: Some(false),
                notes: Some(Some("behind WAF".to_owned())),
                ..TargetUpdated::default()
            })]);
        let patch = TargetPatch { kind: Some("cidr".to_owned()), ..TargetPatch::default() };
        Given::with(())
            .given(vec![created()])
            .when(TargetCommand::Update { organization_id: org(), patch })
            .then_expect_error(DomainError::invalid(
                "value",
                "must be a CIDR network (address/prefix without host bits)",
            ));
    }

    #[test]
    fn update_that_changes_nothing_emits_nothing() {
        let patch = TargetPatch { tags: Some(vec!["dmz".to_owned()]), ..TargetPatch::default() };
        Given::with(())
            .given(vec![created()])
            .when(TargetCommand::Update { organization_id: org(), patch })
            .then_expect_events(vec![]);
    }

    #[test]
    fn delete_hides_the_target_from_every_command() {
        Given::with(())
            .given(vec![created()])
            .when(TargetCommand::Delete { organization_id: org() })
            .then_expect_events(vec![TargetEvent::Deleted(Empty {})]);
        Given::with(())
            .given(vec![created(), TargetEvent::Deleted(Empty {})])
            .when(TargetCommand::Delete { organization_id: org() })
            .then_expect_error(DomainError::NotFound);
        Given::with(())
            .given(vec![created()])
            .when(TargetCommand::Update {
                organization_id: "org_00000000000000000000".to_owned(),
                patch: TargetPatch::default(),
            })
            .then_expect_error(DomainError::NotFound);
    }

    #[test]
    fn claims_use_type_normalized_value_and_port() {
        let command = create(new_target("domain", "WWW.Acme.Test", None));
        assert_eq!(
            command.claim(None).map(|c| c.claim),
            Some(NameClaim::Reserve { scope: claim_scope(ENG), key: "domain|www.acme.test|".to_owned() })
        );
        let update = TargetCommand::Update {
            organization_id: org(),
            patch: TargetPatch { port: Some(Some(8443)), ..TargetPatch::default() },
        };
        assert_eq!(
            update.claim(Some((ENG, "ip", "2001:db8::1", Some(443)))).map(|c| c.claim),
            Some(NameClaim::Reserve { scope: claim_scope(ENG), key: "ip|2001:db8::1|8443".to_owned() })
        );
        let notes_only = TargetCommand::Update {
            organization_id: org(),
            patch: TargetPatch { notes: Some(None), ..TargetPatch::default() },
        };
        assert_eq!(notes_only.claim(Some((ENG, "ip", "2001:db8::1", Some(443)))), None);
        let delete = TargetCommand::Delete { organization_id: org() };
        assert_eq!(
            delete.claim(Some((ENG, "ip", "2001:db8::1", None))).map(|c| c.claim),
            Some(NameClaim::Release { scope: claim_scope(ENG) })
        );
    }
}
