//! Targets: `target(id:)`, `engagement.targets`, and the mutations of targets.

use std::collections::HashMap;

use async_graphql::{Context, Enum, InputObject, MaybeUndefined, Object, ID};
use pwnbook_projections::batch::{self, PerParent};
use pwnbook_projections::list::SortValue;
use pwnbook_projections::targets::{TargetRow, TargetSort};
use serde::Serialize;
use sqlx::AnyPool;

use crate::error::ApiError;
use crate::graphql::connection::{self, Filters};
use crate::graphql::context::{allowed, route};
use crate::graphql::engagements::Engagement;
use crate::graphql::errors::Result;
use crate::graphql::events::EventFeed;
use crate::graphql::loaders::{child_kind, ChildKind, EngagementById};
use crate::graphql::loaders::{Node, Siblings};
use crate::graphql::shared::{body, history_of, if_match, past, related};
use crate::graphql::view::View;
use crate::pagination::ListRequest;
use crate::routes::targets as rest;

/// A target in an engagement's scope.
pub struct Target(pub Node);

impl Target {
    pub fn of(row: &TargetRow) -> Self {
        Self(Siblings::alone(Self::view(row)))
    }

    /// The REST view of a row.
    pub fn view(row: &TargetRow) -> View {
        View::of(rest::render(row))
    }
}

/// A target in an engagement's scope.
#[Object]
impl Target {
    async fn id(&self) -> Result<ID> {
        self.0.id()
    }

    async fn engagement_id(&self) -> Result<ID> {
        Ok(ID(self.0.str("engagementId")?.to_owned()))
    }

    /// `domain`, `hostname`, `ip`, `cidr`, `url` or `service`.
    #[graphql(name = "type")]
    async fn kind(&self) -> Result<&str> {
        self.0.str("type")
    }

    async fn value(&self) -> Result<&str> {
        self.0.str("value")
    }

    async fn port(&self) -> Option<i64> {
        self.0.opt_int("port")
    }

    /// `tcp`, `udp` or null.
    async fn protocol(&self) -> Option<&str> {
        self.0.opt_str("protocol")
    }

    async fn in_scope(&self) -> Result<bool> {
        self.0.boolean("inScope")
    }

    async fn tags(&self) -> Vec<String> {
        self.0.strings("tags")
    }

    async fn notes(&self) -> Option<&str> {
        self.0.opt_str("notes")
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
        history_of::<rest::Tracked>(ctx, route::TARGET_HISTORY, self.0.str("id")?, after, limit).await
    }
}

/// The `engagement` field of a child (engagements:read), batched.
pub async fn engagement_of(ctx: &Context<'_>, child: &Node) -> Result<Option<Engagement>> {
    let session = allowed(ctx, route::ENGAGEMENT)?;
    let found = related(
        child,
        "engagement",
        |view| view.opt_str("engagementId").map(str::to_owned).into_iter().collect(),
        |ids| async move {
            let rows = session.loader.load_many(ids.into_iter().map(EngagementById)).await?;
            Ok(rows.into_values().map(|row| (row.id.clone(), Engagement::view(&row))).collect())
        },
    )
    .await?;
    let node = found.get(child.str("engagementId")?).cloned().ok_or(ApiError::NotFound)?;
    Ok(Some(Engagement(node)))
}

/// Sort fields of target lists.
#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
pub enum TargetSortField {
    CreatedAt,
    UpdatedAt,
    /// Case-insensitive.
    Value,
}

impl TargetSortField {
    pub fn rest(self) -> &'static str {
        match self {
            Self::CreatedAt => "createdAt",
            Self::UpdatedAt => "updatedAt",
            Self::Value => "value",
        }
    }
}

/// Filters of target lists (those of `GET /engagements/{id}/targets`).
#[derive(InputObject, Default)]
pub struct TargetFilterInput {
    /// Target types.
    #[graphql(name = "type")]
    pub kind: Option<Vec<String>>,
    pub in_scope: Option<bool>,
    pub tag: Option<Vec<String>>,
    /// Case-insensitive substring of the value.
    pub q: Option<String>,
}

impl TargetFilterInput {
    pub fn pairs(filter: Option<Self>) -> Vec<(String, String)> {
        let Some(f) = filter else { return Vec::new() };
        Filters::default()
            .list("type", f.kind)
            .flag("inScope", f.in_scope)
            .list("tag", f.tag)
            .one("q", f.q)
            .done()
    }
}

/// Targets listed per engagement.
pub struct TargetsOf;

child_kind!(TargetsOf, TargetSort, TargetRow, Target, scope: String::new(), page: batch::targets_page, count: batch::targets_count);

#[derive(Default)]
pub struct TargetQuery;

#[Object]
impl TargetQuery {
    /// A target (targets:read); with `version` or `asOf` (RFC 3339), as it was then.
    async fn target(
        &self,
        ctx: &Context<'_>,
        id: ID,
        version: Option<i64>,
        #[graphql(name = "asOf")] as_of: Option<String>,
    ) -> Result<Option<Target>> {
        let session = allowed(ctx, route::TARGET)?;
        if let Some(view) = past::<rest::Tracked>(session, &id, version, as_of).await? {
            return Ok(Some(Target(Siblings::alone(view))));
        }
        Ok(Some(Target::of(&rest::load(&session.state, &session.caller, &id).await?)))
    }
}

/// A new target (the body of `POST /engagements/{id}/targets`).
#[derive(InputObject, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateTargetInput {
    /// Required: `domain`, `hostname`, `ip`, `cidr`, `url` or `service`.
    #[graphql(name = "type")]
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Required.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    /// Default true.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub in_scope: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notes: Option<String>,
}

/// Changed fields only (the body of `PATCH /targets/{id}`).
#[derive(InputObject, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UpdateTargetInput {
    #[graphql(name = "type")]
    #[serde(rename = "type", skip_serializing_if = "MaybeUndefined::is_undefined")]
    pub kind: MaybeUndefined<String>,
    #[serde(skip_serializing_if = "MaybeUndefined::is_undefined")]
    pub value: MaybeUndefined<String>,
    #[serde(skip_serializing_if = "MaybeUndefined::is_undefined")]
    pub port: MaybeUndefined<i64>,
    #[serde(skip_serializing_if = "MaybeUndefined::is_undefined")]
    pub protocol: MaybeUndefined<String>,
    #[serde(skip_serializing_if = "MaybeUndefined::is_undefined")]
    pub in_scope: MaybeUndefined<bool>,
    #[serde(skip_serializing_if = "MaybeUndefined::is_undefined")]
    pub tags: MaybeUndefined<Vec<String>>,
    #[serde(skip_serializing_if = "MaybeUndefined::is_undefined")]
    pub notes: MaybeUndefined<String>,
}

#[derive(Default)]
pub struct TargetMutation;

#[Object]
impl TargetMutation {
    /// Add a target to an engagement's scope (targets:write).
    async fn create_target(
        &self,
        ctx: &Context<'_>,
        engagement_id: ID,
        input: CreateTargetInput,
    ) -> Result<Option<Target>> {
        let session = allowed(ctx, route::CREATE_TARGET)?;
        let row = rest::create_row(&session.state, &session.caller, &engagement_id, body(input)?).await?;
        Ok(Some(Target::of(&row)))
    }

    /// Update a target (targets:write).
    async fn update_target(
        &self,
        ctx: &Context<'_>,
        id: ID,
        input: UpdateTargetInput,
        if_match: Option<i64>,
    ) -> Result<Option<Target>> {
        let session = allowed(ctx, route::UPDATE_TARGET)?;
        let body = body(input)?;
        let row =
            rest::update_row(&session.state, &session.caller, &id, body, self::if_match(if_match)).await?;
        Ok(Some(Target::of(&row)))
    }

    /// Delete a target (targets:write; `CONFLICT` while findings list it). Returns the id.
    async fn delete_target(&self, ctx: &Context<'_>, id: ID, if_match: Option<i64>) -> Result<Option<ID>> {
        let session = allowed(ctx, route::DELETE_TARGET)?;
        rest::delete_row(&session.state, &session.caller, &id, self::if_match(if_match)).await?;
        Ok(Some(id))
    }
}
