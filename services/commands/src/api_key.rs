//! The API key aggregate: created with a set of permissions, revoked.

use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use pwnbook_events::api_key::{ApiKeyCreated, ApiKeyEvent};
use pwnbook_events::Empty;
use serde::{Deserialize, Serialize};

use crate::permissions::{grants, Permission};
use crate::validate::{self, Errors};
use crate::{DomainError, FieldError};

/// A new key. The caller generates the secret and passes only what may be stored.
#[derive(Debug, Clone, PartialEq)]
pub struct NewApiKey {
    pub name: String,
    pub environment: String,
    pub permissions: Vec<String>,
    /// RFC 3339.
    pub expires_at: Option<String>,
    pub prefix: String,
    pub last_four: String,
    pub secret_hash: String,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ApiKeyCommand {
    /// `granted_by` holds the creating key's permissions (`None` for the system: CLI, bootstrap).
    Create {
        organization_id: String,
        key: NewApiKey,
        granted_by: Option<Vec<Permission>>,
        now_millis: i64,
    },
    Revoke {
        organization_id: String,
    },
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ApiKey {
    pub exists: bool,
    pub revoked: bool,
    pub organization_id: String,
}

fn validate_new(
    key: &NewApiKey,
    granted_by: Option<&[Permission]>,
    now_millis: i64,
) -> Result<Vec<String>, DomainError> {
    let mut errors = Errors::default();
    errors.check(validate::text("name", &key.name, 1, 200));
    if key.environment != "live" && key.environment != "test" {
        errors.push(FieldError::new("environment", "must be live or test"));
    }
    let mut permissions: Vec<Permission> = Vec::new();
    if key.permissions.is_empty() {
        errors.push(FieldError::new("permissions", "must name at least one permission"));
    }
    for name in &key.permissions {
        match name.parse::<Permission>() {
            Ok(p) if !permissions.contains(&p) => permissions.push(p),
            Ok(_) => {}
            Err(e) => errors.push(FieldError::new("permissions", e.to_string())),
        }
    }
    if let Some(expires_at) = &key.expires_at {
        match chrono::DateTime::parse_from_rfc3339(expires_at) {
            Ok(at) if at.timestamp_millis() > now_millis => {}
            Ok(_) => errors.push(FieldError::new("expiresAt", "must be in the future")),
            Err(_) => errors.push(FieldError::new("expiresAt", "must be an RFC 3339 timestamp")),
        }
    }
    errors.finish()?;
    if let Some(held) = granted_by {
        if let Some(missing) = permissions.iter().find(|p| !grants(held, **p)) {
            return Err(DomainError::Forbidden(format!(
                "a key cannot grant the permission {missing} it does not hold"
            )));
        }
    }
    Ok(permissions.iter().map(|p| p.as_str().to_owned()).collect())
}

impl Aggregate for ApiKey {
    const TYPE: &'static str = "api_key";
    type Command = ApiKeyCommand;
    type Event = ApiKeyEvent;
    type Error = DomainError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), DomainError> {
        let event = match command {
            ApiKeyCommand::Create { organization_id, key, granted_by, now_millis } => {
                if self.exists {
                    return Err(DomainError::Conflict("the key already exists".to_owned()));
                }
                let permissions = validate_new(&key, granted_by.as_deref(), now_millis)?;
                ApiKeyEvent::Created(ApiKeyCreated {
                    organization_id,
                    name: key.name.trim().to_owned(),
                    environment: key.environment,
                    prefix: key.prefix,
                    last_four: key.last_four,
                    secret_hash: key.secret_hash,
                    permissions,
                    expires_at: key.expires_at,
                })
            }
            ApiKeyCommand::Revoke { organization_id } => {
                if !self.exists || self.organization_id != organization_id {
                    return Err(DomainError::NotFound);
                }
                if self.revoked {
                    return Err(DomainError::Conflict("the key is already revoked".to_owned()));
                }
                ApiKeyEvent::Revoked(Empty {})
            }
        };
        sink.write(event, self).await;
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            ApiKeyEvent::Created(created) => {
                *self = Self { exists: true, revoked: false, organization_id: created.organization_id };
            }
            ApiKeyEvent::Revoked(_) => self.revoked = true,
        }
    }
}

#[cfg(test)]
mod tests {
    use cqrs_es::test::TestFramework;

    use super::*;

    type Given = TestFramework<ApiKey>;
    const ORG: &str = "org_01j9k2m3n4p5q6r7s8t9";
    const NOW: i64 = 1_750_000_000_000;

    fn new_key(permissions: &[&str]) -> NewApiKey {
        NewApiKey {
            name: "CI".to_owned(),
            environment: "live".to_owned(),
            permissions: permissions.iter().map(|p| (*p).to_owned()).collect(),
            expires_at: None,
            prefix: "pwbk_live_".to_owned(),
            last_four: "abcd".to_owned(),
            secret_hash: "ff".repeat(32),
        }
    }

    fn create(permissions: &[&str], granted_by: Option<Vec<Permission>>) -> ApiKeyCommand {
        ApiKeyCommand::Create {
            organization_id: ORG.to_owned(),
            key: new_key(permissions),
            granted_by,
            now_millis: NOW,
        }
    }

    fn created(permissions: &[&str]) -> ApiKeyEvent {
        ApiKeyEvent::Created(ApiKeyCreated {
            organization_id: ORG.to_owned(),
            name: "CI".to_owned(),
            environment: "live".to_owned(),
            prefix: "pwbk_live_".to_owned(),
            last_four: "abcd".to_owned(),
            secret_hash: "ff".repeat(32),
            permissions: permissions.iter().map(|p| (*p).to_owned()).collect(),
            expires_at: None,
        })
    }

    #[test]
    fn create_stores_the_hash_and_normalized_permissions() {
        Given::with(())
            .given_no_previous_events()
            .when(create(&["engagements:read", "engagements:read", "engagements:write"], None))
            .then_expect_events(vec![created(&["engagements:read", "engagements:write"])]);
    }

    #[test]
    fn create_rejects_unknown_permissions_and_bad_fields() {
        let key = NewApiKey {
            environment: "prod".to_owned(),
            expires_at: Some("tomorrow".to_owned()),
            ..new_key(&["engagements:admin"])
        };
        Given::with(())
            .given_no_previous_events()
            .when(ApiKeyCommand::Create {
                organization_id: ORG.to_owned(),
                key,
                granted_by: None,
                now_millis: NOW,
            })
            .then_expect_error(DomainError::Validation(vec![
                FieldError::new("environment", "must be live or test"),
                FieldError::new("permissions", "unknown permission \"engagements:admin\""),
                FieldError::new("expiresAt", "must be an RFC 3339 timestamp"),
            ]));
        let key = NewApiKey { expires_at: Some("2020-01-01T00:00:00Z".to_owned()), ..new_key(&["*"]) };
        Given::with(())
            .given_no_previous_events()
            .when(ApiKeyCommand::Create {
                organization_id: ORG.to_owned(),
                key,
                granted_by: None,
                now_millis: NOW,
            })
            .then_expect_error(DomainError::invalid("expiresAt", "must be in the future"));
    }

    #[test]
    fn a_key_cannot_grant_what_it_lacks() {
        Given::with(())
            .given_no_previous_events()
            .when(create(
                &["engagements:write"],
                Some(vec![Permission::EngagementsRead, Permission::KeysManage]),
            ))
            .then_expect_error(DomainError::Forbidden(
                "a key cannot grant the permission engagements:write it does not hold".to_owned(),
            ));
        Given::with(())
            .given_no_previous_events()
            .when(create(&["*"], Some(vec![Permission::KeysManage])))
            .then_expect_error(DomainError::Forbidden(
                "a key cannot grant the permission * it does not hold".to_owned(),
            ));
        Given::with(())
            .given_no_previous_events()
            .when(create(&["audit:read"], Some(vec![Permission::All])))
            .then_expect_events(vec![created(&["audit:read"])]);
    }

    #[test]
    fn revoke_once_within_the_organization() {
        Given::with(())
            .given(vec![created(&["*"])])
            .when(ApiKeyCommand::Revoke { organization_id: ORG.to_owned() })
            .then_expect_events(vec![ApiKeyEvent::Revoked(Empty {})]);
        Given::with(())
            .given(vec![created(&["*"]), ApiKeyEvent::Revoked(Empty {})])
            .when(ApiKeyCommand::Revoke { organization_id: ORG.to_owned() })
            .then_expect_error(DomainError::Conflict("the key is already revoked".to_owned()));
        Given::with(())
            .given(vec![created(&["*"])])
            .when(ApiKeyCommand::Revoke { organization_id: "org_00000000000000000000".to_owned() })
            .then_expect_error(DomainError::NotFound);
    }
}
