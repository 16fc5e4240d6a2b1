//! Wiki pages: `wikiPage(id:)`, `engagement.wikiPages` (REST's `/engagements/{id}/wiki`), a
//! page's `parent`, and the mutations of wiki pages.

use std::collections::HashMap;

use async_graphql::{Context, Enum, InputObject, MaybeUndefined, Object, ID};
use pwnbook_projections::batch::{self, PerParent};
use pwnbook_projections::list::SortValue;
use pwnbook_projections::wiki::{WikiPageRow, WikiSort};
use serde::Serialize;
use sqlx::AnyPool;

use crate::error::ApiError;
use crate::graphql::connection::{self, Filters};
use crate::graphql::context::{allowed, route};
use crate::graphql::engagements::Engagement;
use crate::graphql::errors::Result;
use crate::graphql::events::EventFeed;
use crate::graphql::loaders::{child_kind, ChildKind, WikiPageById};
use crate::graphql::loaders::{Node, Siblings};
use crate::graphql::shared::{body, history_of, id_strings, if_match, past, related};
use crate::graphql::targets::engagement_of;
use crate::graphql::view::View;
use crate::pagination::ListRequest;
use crate::routes::wiki as rest;

/// A wiki page of an engagement.
pub struct WikiPage(pub Node);

impl WikiPage {
    pub fn of(row: &WikiPageRow) -> Self {
        Self(Siblings::alone(Self::view(row)))
    }

    /// The REST view of a row.
    pub fn view(row: &WikiPageRow) -> View {
        View::of(rest::render(row))
    }
}

/// A wiki page of an engagement.
#[Object]
impl WikiPage {
    async fn id(&self) -> Result<ID> {
        self.0.id()
    }

    async fn engagement_id(&self) -> Result<ID> {
        Ok(ID(self.0.str("engagementId")?.to_owned()))
    }

    async fn title(&self) -> Result<&str> {
        self.0.str("title")
    }

    /// Unique in the engagement; derived from the title when not given.
    async fn slug(&self) -> Result<&str> {
        self.0.str("slug")
    }

    /// Markdown.
    async fn content(&self) -> Result<&str> {
        self.0.str("content")
    }

    async fn parent_id(&self) -> Option<ID> {
        self.0.opt_id("parentId")
    }

    async fn created_at(&self) -> Result<&str> {
        self.0.str("createdAt")
    }

    async fn updated_at(&self) -> Result<&str> {
        self.0.str("updatedAt")
    }

    async fn version(&self) -> Result<i64> {
        self.0.int("version")
    }

    /// The parent page (wiki:read); null at the top.
    async fn parent(&self, ctx: &Context<'_>) -> Result<Option<WikiPage>> {
        let session = allowed(ctx, route::WIKI_PAGE)?;
        let Some(parent) = self.0.opt_str("parentId") else { return Ok(None) };
        let parents = |view: &View| view.opt_str("parentId").map(str::to_owned).into_iter().collect();
        let found = related(&self.0, "parent", parents, |ids| async move {
            let rows = session.loader.load_many(ids.into_iter().map(WikiPageById)).await?;
            Ok(rows.into_values().map(|row| (row.id.clone(), WikiPage::view(&row))).collect())
        })
        .await?;
        Ok(found.get(parent).cloned().map(WikiPage))
    }

    /// The engagement it belongs to (engagements:read).
    async fn engagement(&self, ctx: &Context<'_>) -> Result<Option<Engagement>> {
        engagement_of(ctx, &self.0).await
    }

    /// Its events (audit:read).
    #[graphql(complexity = "connection::per_item(limit, child_complexity)")]
    async fn history(
        &self,
        ctx: &Context<'_>,
        after: Option<i64>,
        limit: Option<i64>,
    ) -> Result<Option<EventFeed>> {
        history_of::<rest::Tracked>(ctx, route::WIKI_HISTORY, self.0.str("id")?, after, limit).await
    }
}

/// Sort fields of wiki page lists.
#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
pub enum WikiSortField {
    CreatedAt,
    UpdatedAt,
    Title,
    Slug,
}

impl WikiSortField {
    pub fn rest(self) -> &'static str {
        match self {
            Self::CreatedAt => "createdAt",
            Self::UpdatedAt => "updatedAt",
            Self::Title => "title",
            Self::Slug => "slug",
        }
    }
}

/// Filters of wiki page lists (those of `GET /engagements/{id}/wiki`).
#[derive(InputObject, Default)]
pub struct WikiFilterInput {
    /// Children of these pages.
    pub parent_id: Option<Vec<ID>>,
    pub slug: Option<Vec<String>>,
    /// Case-insensitive substring of the title.
    pub q: Option<String>,
}

impl WikiFilterInput {
    pub fn pairs(filter: Option<Self>) -> Vec<(String, String)> {
        let Some(f) = filter else { return Vec::new() };
        Filters::default().list("parentId", id_strings(f.parent_id)).list("slug", f.slug).one("q", f.q).done()
    }
}

/// Wiki pages listed per engagement.
pub struct WikiPagesOf;

child_kind!(WikiPagesOf, WikiSort, WikiPageRow, WikiPage, scope: String::new(), page: batch::wiki_pages_page, count: batch::wiki_pages_count);

#[derive(Default)]
pub struct WikiQuery;

#[Object]
impl WikiQuery {
    /// A wiki page (wiki:read); with `version` or `asOf` (RFC 3339), as it was then.
    async fn wiki_page(
        &self,
        ctx: &Context<'_>,
        id: ID,
        version: Option<i64>,
        #[graphql(name = "asOf")] as_of: Option<String>,
    ) -> Result<Option<WikiPage>> {
        let session = allowed(ctx, route::WIKI_PAGE)?;
        if let Some(view) = past::<rest::Tracked>(session, &id, version, as_of).await? {
            return Ok(Some(WikiPage(Siblings::alone(view))));
        }
        Ok(Some(WikiPage::of(&rest::load(&session.state, &session.caller, &id).await?)))
    }
}

/// A new wiki page (the body of `POST /engagements/{id}/wiki`).
#[derive(InputObject, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateWikiPageInput {
    /// Required.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Derived from the title when not given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slug: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent_id: Option<ID>,
}

/// Changed fields only (the body of `PATCH /wiki/{id}`); `parentId: null` moves the page to
/// the top.
#[derive(InputObject, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UpdateWikiPageInput {
    #[serde(skip_serializing_if = "MaybeUndefined::is_undefined")]
    pub title: MaybeUndefined<String>,
    #[serde(skip_serializing_if = "MaybeUndefined::is_undefined")]
    pub slug: MaybeUndefined<String>,
    #[serde(skip_serializing_if = "MaybeUndefined::is_undefined")]
    pub content: MaybeUndefined<String>,
    #[serde(skip_serializing_if = "MaybeUndefined::is_undefined")]
    pub parent_id: MaybeUndefined<ID>,
}

#[derive(Default)]
pub struct WikiMutation;

#[Object]
impl WikiMutation {
    /// Add a wiki page to an engagement (wiki:write).
    async fn create_wiki_page(
        &self,
        ctx: &Context<'_>,
        engagement_id: ID,
        input: CreateWikiPageInput,
    ) -> Result<Option<WikiPage>> {
        let session = allowed(ctx, route::CREATE_WIKI_PAGE)?;
        let row = rest::create_row(&session.state, &session.caller, &engagement_id, body(input)?).await?;
        Ok(Some(WikiPage::of(&row)))
    }

    /// Update a wiki page (wiki:write).
    async fn update_wiki_page(
        &self,
        ctx: &Context<'_>,
        id: ID,
        input: UpdateWikiPageInput,
        if_match: Option<i64>,
    ) -> Result<Option<WikiPage>> {
        let session = allowed(ctx, route::UPDATE_WIKI_PAGE)?;
        let body = body(input)?;
        let row =
            rest::update_row(&session.state, &session.caller, &id, body, self::if_match(if_match)).await?;
        Ok(Some(WikiPage::of(&row)))
    }

    /// Delete a wiki page (wiki:write; `CONFLICT` while it has child pages). Returns the id.
    async fn delete_wiki_page(&self, ctx: &Context<'_>, id: ID, if_match: Option<i64>) -> Result<Option<ID>> {
        let session = allowed(ctx, route::DELETE_WIKI_PAGE)?;
        rest::delete_row(&session.state, &session.caller, &id, self::if_match(if_match)).await?;
        Ok(Some(id))
    }
}
