//! The wiki page aggregate: markdown notes of an engagement, addressed by a slug unique in it.

use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use pwnbook_events::wiki::{WikiPageCreated, WikiPageEvent, WikiPageUpdated};
use pwnbook_events::{Empty, NameClaim};
use serde::{Deserialize, Serialize};

use crate::validate::{self, Errors};
use crate::{Claim, DomainError, FieldError};

const MAX_CONTENT: usize = 500_000;
const MAX_SLUG: usize = 100;

/// Slugs are unique per engagement.
pub fn claim_scope(engagement_id: &str) -> String {
    format!("wiki:{engagement_id}")
}

/// Lowercase ASCII letters and digits, runs of anything else become one `-`.
pub fn slugify(title: &str) -> String {
    let mut slug = String::new();
    for c in title.trim().to_lowercase().chars() {
        if c.is_ascii_alphanumeric() {
            slug.push(c);
        } else if !slug.is_empty() && !slug.ends_with('-') {
            slug.push('-');
        }
    }
    let mut slug: String = slug.chars().take(MAX_SLUG).collect();
    while slug.ends_with('-') {
        slug.pop();
    }
    slug
}

fn check_slug(slug: &str) -> Result<String, FieldError> {
    let valid = (1..=MAX_SLUG).contains(&slug.len())
        && slug.split('-').all(|part| {
            !part.is_empty() && part.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        });
    if valid {
        Ok(slug.to_owned())
    } else {
        Err(FieldError::new(
            "slug",
            "must be 1 to 100 lowercase letters and digits in hyphen-separated words",
        ))
    }
}

/// The slug a new page gets: the given one, or one derived from the title.
pub fn slug_for(title: &str, slug: Option<&str>) -> Result<String, FieldError> {
    match slug {
        Some(slug) => check_slug(slug),
        None => check_slug(&slugify(title))
            .map_err(|_| FieldError::new("slug", "cannot be derived from the title; give one")),
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct NewWikiPage {
    pub title: String,
    pub slug: Option<String>,
    pub content: String,
    /// Already checked by the caller to be a page of the same engagement.
    pub parent_id: Option<String>,
}

/// A merge patch: `None` leaves a field alone, `Some(None)` clears it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WikiPagePatch {
    pub title: Option<String>,
    pub slug: Option<String>,
    pub content: Option<String>,
    pub parent_id: Option<Option<String>>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum WikiPageCommand {
    Create { organization_id: String, engagement_id: String, page: NewWikiPage },
    Update { organization_id: String, patch: WikiPagePatch },
    Delete { organization_id: String },
}

impl WikiPageCommand {
    /// The slug claim of this command in `engagement_id` (an invalid slug claims nothing: the
    /// aggregate rejects the command).
    pub fn claim(&self, engagement_id: &str) -> Option<Claim> {
        let reserve = |slug: String| Claim {
            conflict: format!("the engagement already has a wiki page with slug {slug:?}"),
            claim: NameClaim::Reserve { scope: claim_scope(engagement_id), key: slug },
        };
        match self {
            Self::Create { page, .. } => slug_for(&page.title, page.slug.as_deref()).ok().map(reserve),
            Self::Update { patch: WikiPagePatch { slug: Some(slug), .. }, .. } => {
                check_slug(slug).ok().map(reserve)
            }
            Self::Update { .. } => None,
            Self::Delete { .. } => Some(Claim {
                claim: NameClaim::Release { scope: claim_scope(engagement_id) },
                conflict: String::new(),
            }),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WikiPage {
    pub exists: bool,
    pub deleted: bool,
    pub organization_id: String,
    pub engagement_id: String,
    pub title: String,
    pub slug: String,
    pub content: String,
    pub parent_id: Option<String>,
}

impl WikiPage {
    fn visible_to(&self, organization_id: &str) -> Result<(), DomainError> {
        if self.exists && !self.deleted && self.organization_id == organization_id {
            Ok(())
        } else {
            Err(DomainError::NotFound)
        }
    }
}

impl Aggregate for WikiPage {
    const TYPE: &'static str = "wiki_page";
    type Command = WikiPageCommand;
    type Event = WikiPageEvent;
    type Error = DomainError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), DomainError> {
        let event = match command {
            WikiPageCommand::Create { organization_id, engagement_id, page } => {
                if self.exists {
                    return Err(DomainError::Conflict("the wiki page already exists".to_owned()));
                }
                let (title, slug) = checked(&page)?;
                WikiPageEvent::Created(WikiPageCreated {
                    organization_id,
                    engagement_id,
                    title,
                    slug,
                    // Markdown keeps its whitespace: store the content as sent.
                    content: page.content,
                    parent_id: page.parent_id,
                })
            }
            WikiPageCommand::Update { organization_id, patch } => {
                self.visible_to(&organization_id)?;
                let mut errors = Errors::default();
                let mut changed = WikiPageUpdated::default();
                if let Some(title) = patch.title {
                    changed.title =
                        errors.check(validate::text("title", &title, 1, 300)).filter(|t| *t != self.title);
                }
                if let Some(slug) = patch.slug {
                    changed.slug = errors.check(check_slug(&slug)).filter(|s| *s != self.slug);
                }
                if let Some(content) = patch.content {
                    if errors.check(validate::text("content", &content, 0, MAX_CONTENT)).is_some()
                        && content != self.content
                    {
                        changed.content = Some(content);
                    }
                }
                // The caller checked that a new parent is a page of the engagement outside this
                // page's subtree.
                if let Some(parent) = patch.parent_id {
                    changed.parent_id = (parent != self.parent_id).then_some(parent);
                }
                errors.finish()?;
                if changed.is_empty() {
                    return Ok(());
                }
                WikiPageEvent::Updated(changed)
            }
            WikiPageCommand::Delete { organization_id } => {
                self.visible_to(&organization_id)?;
                WikiPageEvent::Deleted(Empty {})
            }
        };
        sink.write(event, self).await;
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            WikiPageEvent::Created(c) => {
                *self = Self {
                    exists: true,
                    deleted: false,
                    organization_id: c.organization_id,
                    engagement_id: c.engagement_id,
                    title: c.title,
                    slug: c.slug,
                    content: c.content,
                    parent_id: c.parent_id,
                }
            }
            WikiPageEvent::Updated(u) => {
                if let Some(title) = u.title {
                    self.title = title;
                }
                if let Some(slug) = u.slug {
                    self.slug = slug;
                }
                if let Some(content) = u.content {
                    self.content = content;
                }
                if let Some(parent_id) = u.parent_id {
                    self.parent_id = parent_id;
                }
            }
            WikiPageEvent::Deleted(_) => self.deleted = true,
        }
    }
}

/// A new page's title and slug, checked with its content: every invalid field at once.
fn checked(page: &NewWikiPage) -> Result<(String, String), DomainError> {
    let mut errors = Errors::default();
    let title = errors.check(validate::text("title", &page.title, 1, 300));
    // A slug given is checked whatever the title; one derived needs a valid title.
    let slug = match (&title, page.slug.as_deref()) {
        (_, Some(slug)) => errors.check(check_slug(slug)),
        (Some(title), None) => errors.check(slug_for(title, None)),
        (None, None) => None,
    };
    errors.check(validate::text("content", &page.content, 0, MAX_CONTENT));
    errors.finish()?;
    Ok((title.unwrap_or_default(), slug.unwrap_or_default()))
}

/// What is wrong with `page`'s fields, as its creation would report it: for a caller that found
/// other errors first (a parent of another engagement, say) and answers with every invalid field.
pub fn field_errors(page: &NewWikiPage) -> Vec<FieldError> {
    match checked(page) {
        Err(DomainError::Validation(errors)) => errors,
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use cqrs_es::test::TestFramework;

    use super::*;

    type Given = TestFramework<WikiPage>;
    const ORG: &str = "org_01j9k2m3n4p5q6r7s8t9";
    const ENG: &str = "eng_01j9k2m3n4p5q6r7s8t9";
    const PARENT: &str = "wik_01j9k2m3n4p5q6r7s8t9";

    fn org() -> String {
        ORG.to_owned()
    }

    fn created() -> WikiPageEvent {
        WikiPageEvent::Created(WikiPageCreated {
            organization_id: org(),
            engagement_id: ENG.to_owned(),
            title: "Active Directory: notes & loot".to_owned(),
            slug: "active-directory-notes-loot".to_owned(),
            content: "# AD\n\n  indented\n".to_owned(),
            parent_id: None,
        })
    }

    fn create(page: NewWikiPage) -> WikiPageCommand {
        WikiPageCommand::Create { organization_id: org(), engagement_id: ENG.to_owned(), page }
    }

    #[test]
    fn slugs_are_derived_from_titles() {
        assert_eq!(slugify("  Active Directory: notes & loot! "), "active-directory-notes-loot");
        assert_eq!(slugify("Ünïcode → ASCII"), "n-code-ascii");
        assert_eq!(slugify("!!!"), "");
        assert_eq!(slugify(&"a-".repeat(80)).len(), 99);
        assert!(slug_for("!!!", None).is_err());
        assert!(slug_for("x", Some("Bad Slug")).is_err());
        assert!(slug_for("x", Some("a--b")).is_err());
        assert_eq!(slug_for("x", Some("recon-2")), Ok("recon-2".to_owned()));
    }

    #[test]
    fn create_derives_the_slug_and_keeps_the_markdown() {
        let page = NewWikiPage {
            title: " Active Directory: notes & loot ".to_owned(),
            content: "# AD\n\n  indented\n".to_owned(),
            ..NewWikiPage::default()
        };
        Given::with(()).given_no_previous_events().when(create(page)).then_expect_events(vec![created()]);
        let page = NewWikiPage { title: "!!!".to_owned(), ..NewWikiPage::default() };
        Given::with(())
            .given_no_previous_events()
            .when(create(page))
            .then_expect_error(DomainError::invalid("slug", "cannot be derived from the title; give one"));
        Given::with(())
            .given(vec![created()])
            .when(create(NewWikiPage { title: "x".to_owned(), ..NewWikiPage::default() }))
            .then_expect_error(DomainError::Conflict("the wiki page already exists".to_owned()));
    }

    #[test]
    fn update_records_only_changed_fields() {
        let patch = WikiPagePatch {
            title: Some("Active Directory: notes & loot".to_owned()),
            slug: Some("ad".to_owned()),
            parent_id: Some(Some(PARENT.to_owned())),
            ..WikiPagePatch::default()
        };
        Given::with(())
            .given(vec![created()])
            .when(WikiPageCommand::Update { organization_id: org(), patch })
            .then_expect_events(vec![WikiPageEvent::Updated(WikiPageUpdated {
                slug: Some("ad".to_owned()),
                parent_id: Some(Some(PARENT.to_owned())),
                ..WikiPageUpdated::default()
            })]);
        let patch = WikiPagePatch { slug: Some("Not OK".to_owned()), ..WikiPagePatch::default() };
        Given::with(())
            .given(vec![created()])
            .when(WikiPageCommand::Update { organization_id: org(), patch })
            .then_expect_error(DomainError::invalid(
                "slug",
                "must be 1 to 100 lowercase letters and digits in hyphen-separated words",
            ));
        let patch = WikiPagePatch { parent_id: Some(None), ..WikiPagePatch::default() };
        Given::with(())
            .given(vec![created()])
            .when(WikiPageCommand::Update { organization_id: org(), patch })
            .then_expect_events(vec![]);
    }

    #[test]
    fn delete_hides_the_page_and_releases_its_slug() {
        Given::with(())
            .given(vec![created()])
            .when(WikiPageCommand::Delete { organization_id: org() })
            .then_expect_events(vec![WikiPageEvent::Deleted(Empty {})]);
        Given::with(())
            .given(vec![created(), WikiPageEvent::Deleted(Empty {})])
            .when(WikiPageCommand::Delete { organization_id: org() })
            .then_expect_error(DomainError::NotFound);
        let delete = WikiPageCommand::Delete { organization_id: org() };
        assert_eq!(delete.claim(ENG).map(|c| c.claim), Some(NameClaim::Release { scope: claim_scope(ENG) }));
        let create = create(NewWikiPage { title: "Recon Notes".to_owned(), ..NewWikiPage::default() });
        assert_eq!(
            create.claim(ENG).map(|c| c.claim),
            Some(NameClaim::Reserve { scope: claim_scope(ENG), key: "recon-notes".to_owned() })
        );
    }
}
