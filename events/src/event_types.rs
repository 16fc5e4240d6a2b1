//! The event types a client may name (SPEC §4): `<resource>.created|updated|deleted` for every
//! resource, and the lifecycle events. Filters and webhook subscriptions take a type or every
//! type of a resource (`finding.*`); a name outside this list is the client's mistake (a typo
//! would otherwise match nothing, silently), not an empty selection.

/// Every event type, including the spec's `<resource>.created|updated|deleted` that no command
/// emits yet (an organization is never deleted, an API key is revoked rather than updated), and
/// one the spec does not name: `task.status_changed`, a task moving between `open` and
/// `in_progress` (neither a close nor a reopen).
pub const EVENT_TYPES: &[&str] = &[
    "organization.created",
    "organization.updated",
    "organization.deleted",
    "api_key.created",
    "api_key.updated",
    "api_key.deleted",
    "api_key.revoked",
    "engagement.created",
    "engagement.updated",
    "engagement.deleted",
    "engagement.archived",
    "engagement.unarchived",
    "target.created",
    "target.updated",
    "target.deleted",
    "finding.created",
    "finding.updated",
    "finding.deleted",
    "finding.status_changed",
    "finding.review_status_changed",
    "task.created",
    "task.updated",
    "task.deleted",
    "task.status_changed",
    "task.closed",
    "task.reopened",
    "wiki_page.created",
    "wiki_page.updated",
    "wiki_page.deleted",
    "report.created",
    "report.updated",
    "report.deleted",
    "report.generated",
    "report.status_changed",
    "webhook.created",
    "webhook.updated",
    "webhook.deleted",
];

/// What an entry of a type filter selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TypeSelector<'a> {
    /// One event type, `engagement.created`.
    Type(&'a str),
    /// Every type of a resource, `finding.*`, as the prefix `finding.`.
    Prefix(&'a str),
}

/// `engagement.created` or `finding.*`, when it names a known type or resource; `None` otherwise.
pub fn type_selector(entry: &str) -> Option<TypeSelector<'_>> {
    match entry.strip_suffix('*') {
        Some(prefix) if prefix.ends_with('.') && EVENT_TYPES.iter().any(|t| t.starts_with(prefix)) => {
            Some(TypeSelector::Prefix(prefix))
        }
        Some(_) => None,
        None => EVENT_TYPES.contains(&entry).then_some(TypeSelector::Type(entry)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_types_and_resource_prefixes_are_selectors_and_nothing_else() {
        assert_eq!(type_selector("engagement.created"), Some(TypeSelector::Type("engagement.created")));
        assert_eq!(type_selector("finding.*"), Some(TypeSelector::Prefix("finding.")));
        assert_eq!(type_selector("wiki_page.*"), Some(TypeSelector::Prefix("wiki_page.")));
        for unknown in [
            "bogus",
            "finding.bogus",
            "bogus.*",
            "finding.created.*",
            "*",
            ".*",
            "finding*",
            "Finding.created",
            "",
        ] {
            assert_eq!(type_selector(unknown), None, "{unknown}");
        }
    }
}
