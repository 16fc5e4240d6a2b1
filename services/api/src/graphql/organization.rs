//! The caller's organization: `organization` and `updateOrganization`.

use async_graphql::{Context, InputObject, MaybeUndefined, Object, ID};
use serde::Serialize;

use crate::graphql::connection;
use crate::graphql::context::{allowed, route};
use crate::graphql::errors::Result;
use crate::graphql::events::EventFeed;
use crate::graphql::shared::{body, history_of, if_match, past};
use crate::graphql::view::View;
use crate::routes::organizations as rest;

/// The caller's organization.
pub struct Organization(View);

/// The caller's organization.
#[Object]
impl Organization {
    async fn id(&self) -> Result<ID> {
        self.0.id()
    }

    async fn name(&self) -> Result<&str> {
        self.0.str("name")
    }

    async fn slug(&self) -> Result<&str> {
        self.0.str("slug")
    }

    async fn created_at(&self) -> Result<&str> {
        self.0.str("createdAt")
    }

    async fn updated_at(&self) -> Result<&str> {
        self.0.str("updatedAt")
    }

    /// Live (not deleted) engagements.
    async fn engagement_count(&self) -> Result<i64> {
        self.0.int("engagementCount")
    }

    /// The organization's own events (audit:read).
    #[graphql(complexity = "connection::per_item(limit, child_complexity)")]
    async fn history(
        &self,
        ctx: &Context<'_>,
        after: Option<i64>,
        limit: Option<i64>,
    ) -> Result<Option<EventFeed>> {
        history_of::<rest::Tracked>(ctx, route::ORGANIZATION_HISTORY, self.0.str("id")?, after, limit).await
    }
}

#[derive(Default)]
pub struct OrganizationQuery;

#[Object]
impl OrganizationQuery {
    /// The caller's organization (organizations:read); with `version` or `asOf` (RFC 3339), as it was then
    /// (its engagement count as of that moment).
    async fn organization(
        &self,
        ctx: &Context<'_>,
        version: Option<i64>,
        #[graphql(name = "asOf")] as_of: Option<String>,
    ) -> Result<Option<Organization>> {
        let session = allowed(ctx, route::ORGANIZATION)?;
        let id = session.organization_id().to_owned();
        if let Some(view) = past::<rest::Tracked>(session, &id, version, as_of).await? {
            return Ok(Some(Organization(view)));
        }
        let row = rest::load(&session.state, &session.caller).await?;
        Ok(Some(Organization(View::from_value(rest::view(&session.state, &row).await?))))
    }
}

/// The organization's new name (the body of `PATCH /organizations/current`).
#[derive(InputObject, Serialize)]
pub struct UpdateOrganizationInput {
    /// Cannot be null.
    #[serde(skip_serializing_if = "MaybeUndefined::is_undefined")]
    pub name: MaybeUndefined<String>,
}

#[derive(Default)]
pub struct OrganizationMutation;

#[Object]
impl OrganizationMutation {
    /// Rename the caller's organization (organizations:write).
    async fn update_organization(
        &self,
        ctx: &Context<'_>,
        input: UpdateOrganizationInput,
        if_match: Option<i64>,
    ) -> Result<Option<Organization>> {
        let session = allowed(ctx, route::UPDATE_ORGANIZATION)?;
        let body = body(input)?;
        let row = rest::update_row(&session.state, &session.caller, body, self::if_match(if_match)).await?;
        Ok(Some(Organization(View::from_value(rest::view(&session.state, &row).await?))))
    }
}
