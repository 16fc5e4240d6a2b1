//! Webhooks: `webhook(id:)`, `webhooks(…)`, a webhook's `deliveries`, and the mutations of
//! webhooks (the secret is shown once, as `secret`).

use async_graphql::{Context, Enum, InputObject, MaybeUndefined, Object, ID};
use pwnbook_projections::list::SortValue;
use pwnbook_projections::webhooks::{self, WebhookRow};
use serde::Serialize;

use crate::extract::QueryParams;
use crate::graphql::connection::{self, page, Connection, Filters, ListArgs, SortOrder};
use crate::graphql::context::{allowed, route};
use crate::graphql::errors::Result;
use crate::graphql::events::EventFeed;
use crate::graphql::loaders::{Node, Siblings};
use crate::graphql::shared::{body, history_of, if_match, past};
use crate::graphql::view::View;
use crate::openapi::to_json;
use crate::routes::webhooks as rest;

/// A webhook: events matching `events` are POSTed to `url`, signed with its secret.
pub struct Webhook(pub Node);

impl Webhook {
    pub fn of(row: &WebhookRow) -> Self {
        Self(Siblings::alone(Self::view(row)))
    }

    /// The REST view of a row.
    pub fn view(row: &WebhookRow) -> View {
        View::of(rest::render(row))
    }
}

/// A webhook: events matching `events` are POSTed to `url`, signed with its secret.
#[Object]
impl Webhook {
    async fn id(&self) -> Result<ID> {
        self.0.id()
    }

    async fn url(&self) -> Result<&str> {
        self.0.str("url")
    }

    /// Event types; `finding.*` matches a prefix.
    async fn events(&self) -> Vec<String> {
        self.0.strings("events")
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

    /// The signing secret: only in the answer to `createWebhook`.
    async fn secret(&self) -> Option<&str> {
        self.0.opt_str("secret")
    }

    /// The newest `limit` delivery attempts (1 to 1000, default 100), oldest first
    /// (webhooks:manage).
    #[graphql(complexity = "connection::per_item(limit, child_complexity)")]
    async fn deliveries(
        &self,
        ctx: &Context<'_>,
        limit: Option<i64>,
    ) -> Result<Option<Vec<WebhookDelivery>>> {
        let session = allowed(ctx, route::WEBHOOK_DELIVERIES)?;
        let pairs = Filters::default().one("limit", limit.map(|l| l.to_string())).done();
        let params = QueryParams::from_pairs(&pairs);
        let page = rest::deliveries_page(&session.state, &session.caller, self.0.str("id")?, params).await?;
        Ok(Some(View::from_value(to_json(page)).objects("data").into_iter().map(WebhookDelivery).collect()))
    }

    /// Its events (audit:read).
    #[graphql(complexity = "connection::per_item(limit, child_complexity)")]
    async fn history(
        &self,
        ctx: &Context<'_>,
        after: Option<i64>,
        limit: Option<i64>,
    ) -> Result<Option<EventFeed>> {
        history_of::<rest::Tracked>(ctx, route::WEBHOOK_HISTORY, self.0.str("id")?, after, limit).await
    }
}

/// One delivery attempt.
pub struct WebhookDelivery(View);

/// One delivery attempt.
#[Object]
impl WebhookDelivery {
    /// The same across the retries of one event (`X-Pwnbook-Delivery`).
    async fn id(&self) -> Result<ID> {
        self.0.id()
    }

    async fn event_id(&self) -> Result<ID> {
        Ok(ID(self.0.str("eventId")?.to_owned()))
    }

    async fn event_type(&self) -> Result<&str> {
        self.0.str("eventType")
    }

    async fn position(&self) -> Result<i64> {
        self.0.int("position")
    }

    async fn attempt(&self) -> Result<i64> {
        self.0.int("attempt")
    }

    /// The receiver's HTTP status; null when it could not be reached.
    async fn status_code(&self) -> Option<i64> {
        self.0.opt_int("statusCode")
    }

    async fn success(&self) -> Result<bool> {
        self.0.boolean("success")
    }

    async fn error(&self) -> Option<&str> {
        self.0.opt_str("error")
    }

    async fn duration_ms(&self) -> Result<i64> {
        self.0.int("durationMs")
    }

    async fn attempted_at(&self) -> Result<&str> {
        self.0.str("attemptedAt")
    }
}

/// Sort fields of `webhooks`.
#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
pub enum WebhookSortField {
    CreatedAt,
}

#[derive(Default)]
pub struct WebhookQuery;

#[Object]
impl WebhookQuery {
    /// A webhook (webhooks:manage); with `version` or `asOf` (RFC 3339), as it was then.
    async fn webhook(
        &self,
        ctx: &Context<'_>,
        id: ID,
        version: Option<i64>,
        #[graphql(name = "asOf")] as_of: Option<String>,
    ) -> Result<Option<Webhook>> {
        let session = allowed(ctx, route::WEBHOOK)?;
        if let Some(view) = past::<rest::Tracked>(session, &id, version, as_of).await? {
            return Ok(Some(Webhook(Siblings::alone(view))));
        }
        Ok(Some(Webhook::of(&rest::find(&session.state, &session.caller, &id).await?)))
    }

    /// Webhooks (webhooks:manage), as `GET /webhooks`.
    #[graphql(complexity = "connection::complexity(first, child_complexity)")]
    async fn webhooks(
        &self,
        ctx: &Context<'_>,
        sort: Option<WebhookSortField>,
        order: Option<SortOrder>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<Option<Connection<Webhook>>> {
        let session = allowed(ctx, route::WEBHOOKS)?;
        let args = ListArgs::new(first, after, sort.map(|_| "createdAt"), order, Vec::new());
        let request = args.request(rest::SORTS, &[], |_, value| matches!(value, SortValue::Int(_)))?;
        request.filters().finish()?;
        let (pool, org) = (session.state.store.pool(), session.organization_id());
        let window = request.probe_window();
        let rows = webhooks::list(pool, org, request.order, &window);
        let count = || webhooks::count(pool, org);
        Ok(Some(
            page(
                ctx,
                &request,
                rows,
                count,
                |row| (row.sort_value(), row.id.clone()),
                Webhook::view,
                Webhook,
            )
            .await?,
        ))
    }
}

/// A new webhook (the body of `POST /webhooks`).
#[derive(InputObject, Serialize)]
pub struct CreateWebhookInput {
    /// Required: an http(s) URL; loopback, private and link-local addresses are refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Required: event types, `prefix.*` allowed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub events: Option<Vec<String>>,
    /// The signing secret; generated (and returned once) when omitted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

/// Changed fields only (the body of `PATCH /webhooks/{id}`).
#[derive(InputObject, Serialize)]
pub struct UpdateWebhookInput {
    /// Cannot be null (the webhook keeps a URL).
    #[serde(skip_serializing_if = "MaybeUndefined::is_undefined")]
    pub url: MaybeUndefined<String>,
    /// Cannot be null.
    #[serde(skip_serializing_if = "MaybeUndefined::is_undefined")]
    pub events: MaybeUndefined<Vec<String>>,
    /// Cannot be null.
    #[serde(skip_serializing_if = "MaybeUndefined::is_undefined")]
    pub secret: MaybeUndefined<String>,
}

#[derive(Default)]
pub struct WebhookMutation;

#[Object]
impl WebhookMutation {
    /// Create a webhook (webhooks:manage); the answer's `secret` is shown only here.
    async fn create_webhook(&self, ctx: &Context<'_>, input: CreateWebhookInput) -> Result<Option<Webhook>> {
        let session = allowed(ctx, route::CREATE_WEBHOOK)?;
        let (row, secret) = rest::create_row(&session.state, &session.caller, body(input)?).await?;
        session.effects.reveal(&secret);
        Ok(Some(Webhook(Siblings::alone(View::from_value(rest::render_created(&row, secret))))))
    }

    /// Update a webhook (webhooks:manage).
    async fn update_webhook(
        &self,
        ctx: &Context<'_>,
        id: ID,
        input: UpdateWebhookInput,
        if_match: Option<i64>,
    ) -> Result<Option<Webhook>> {
        let session = allowed(ctx, route::UPDATE_WEBHOOK)?;
        let body = body(input)?;
        let row =
            rest::update_row(&session.state, &session.caller, &id, body, self::if_match(if_match)).await?;
        Ok(Some(Webhook::of(&row)))
    }

    /// Delete a webhook (webhooks:manage); deliveries stop. Returns the id.
    async fn delete_webhook(&self, ctx: &Context<'_>, id: ID, if_match: Option<i64>) -> Result<Option<ID>> {
        let session = allowed(ctx, route::DELETE_WEBHOOK)?;
        rest::delete_row(&session.state, &session.caller, &id, self::if_match(if_match)).await?;
        Ok(Some(id))
    }
}
