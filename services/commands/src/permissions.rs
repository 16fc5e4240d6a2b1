//! Permission names of SPEC §2. `:write` does not imply `:read`; `*` grants everything.

use std::fmt;
use std::str::FromStr;

macro_rules! permissions {
    ($($variant:ident => $name:literal,)*) => {
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Permission {
            $($variant,)*
        }

        impl Permission {
            pub const ALL: &'static [Permission] = &[$(Permission::$variant,)*];

            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Permission::$variant => $name,)*
                }
            }
        }

        impl FromStr for Permission {
            type Err = UnknownPermission;

            fn from_str(name: &str) -> Result<Self, Self::Err> {
                match name {
                    $($name => Ok(Permission::$variant),)*
                    _ => Err(UnknownPermission(name.to_owned())),
                }
            }
        }
    };
}

permissions! {
    All => "*",
    EngagementsRead => "engagements:read",
    EngagementsWrite => "engagements:write",
    EngagementsDelete => "engagements:delete",
    TargetsRead => "targets:read",
    TargetsWrite => "targets:write",
    TasksRead => "tasks:read",
    TasksWrite => "tasks:write",
    WikiRead => "wiki:read",
    WikiWrite => "wiki:write",
    ReportsRead => "reports:read",
    ReportsWrite => "reports:write",
    OrganizationsRead => "organizations:read",
    OrganizationsWrite => "organizations:write",
    ApiRequestsRead => "api-requests:read",
    ApiRequestsWrite => "api-requests:write",
    FindingsRead => "findings:read",
    FindingsWrite => "findings:write",
    FindingsDelete => "findings:delete",
    KeysManage => "keys:manage",
    AuditRead => "audit:read",
    WebhooksManage => "webhooks:manage",
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown permission {0:?}")]
pub struct UnknownPermission(pub String);

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether a key holding `held` may act with `needed`.
pub fn grants(held: &[Permission], needed: Permission) -> bool {
    held.iter().any(|p| *p == Permission::All || *p == needed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_round_trips() {
        for permission in Permission::ALL {
            assert_eq!(permission.as_str().parse::<Permission>(), Ok(*permission));
        }
        assert_eq!(Permission::ALL.len(), 22);
        assert!("engagements:admin".parse::<Permission>().is_err());
    }

    #[test]
    fn write_does_not_imply_read_and_star_implies_all() {
        assert!(!grants(&[Permission::EngagementsWrite], Permission::EngagementsRead));
        assert!(grants(&[Permission::All], Permission::AuditRead));
    }
}
