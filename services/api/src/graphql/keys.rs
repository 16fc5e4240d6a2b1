//! API keys: `apiKey(id:)`, `apiKeys(…)`, `createApiKey` (the secret is shown once, as `key`)
//! and `revokeApiKey`.

use async_graphql::{Context, Enum, InputObject, Object, ID};
use pwnbook_projections::api_keys::{self, ApiKeyRow, ApiKeySort};
use serde::Serialize;

use crate::graphql::connection::{self, page, Connection, Filters, ListArgs, SortOrder};
use crate::graphql::context::{allowed, route};
use crate::graphql::errors::Result;
use crate::graphql::events::EventFeed;
use crate::graphql::loaders::{Node, Siblings};
use crate::graphql::shared::{body, history_of, if_match, past};
use crate::graphql::view::View;
use crate::routes::api_keys as rest;

/// An API key (never its secret, except once in `createApiKey`'s answer as `key`).
pub struct ApiKey(pub Node);

impl ApiKey {
    pub fn of(row: &ApiKeyRow) -> Self {
        Self(Siblings::alone(Self::view(row)))
    }

    /// The REST view of a row.
    pub fn view(row: &ApiKeyRow) -> View {
        View::of(rest::render(row))
    }
}

/// An API key (never its secret, except once in `createApiKey`'s answer as `key`).
#[Object]
impl ApiKey {
    async fn id(&self) -> Result<ID> {
        self.0.id()
    }

    async fn name(&self) -> Result<&str> {
        self.0.str("name")
    }

    /// `pwbk_live_` or `pwbk_test_`.
    async fn prefix(&self) -> Result<&str> {
        self.0.str("prefix")
    }

    async fn last_four(&self) -> Result<&str> {
        self.0.str("lastFour")
    }

    async fn permissions(&self) -> Vec<String> {
        self.0.strings("permissions")
    }

    /// `live` or `test`.
    async fn environment(&self) -> Result<&str> {
        self.0.str("environment")
    }

    async fn created_at(&self) -> Result<&str> {
        self.0.str("createdAt")
    }

    async fn last_used_at(&self) -> Option<&str> {
        self.0.opt_str("lastUsedAt")
    }

    async fn expires_at(&self) -> Option<&str> {
        self.0.opt_str("expiresAt")
    }

    async fn revoked_at(&self) -> Option<&str> {
        self.0.opt_str("revokedAt")
    }

    /// The secret: only in the answer to `createApiKey`.
    async fn key(&self) -> Option<&str> {
        self.0.opt_str("key")
    }

    /// Its events (audit:read).
    #[graphql(complexity = "connection::per_item(limit, child_complexity)")]
    async fn history(
        &self,
        ctx: &Context<'_>,
        after: Option<i64>,
        limit: Option<i64>,
    ) -> Result<Option<EventFeed>> {
        history_of::<rest::Tracked>(ctx, route::API_KEY_HISTORY, self.0.str("id")?, after, limit).await
    }
}

/// Sort fields of `apiKeys`.
#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
pub enum ApiKeySortField {
    CreatedAt,
    Name,
    /// Never-used keys as the oldest use.
    LastUsedAt,
}

impl ApiKeySortField {
    fn rest(self) -> &'static str {
        match self {
            Self::CreatedAt => "createdAt",
            Self::Name => "name",
            Self::LastUsedAt => "lastUsedAt",
        }
    }
}

/// Filters of `apiKeys` (those of `GET /api-keys`).
#[derive(InputObject, Default)]
pub struct ApiKeyFilterInput {
    /// `live` and/or `test`.
    pub environment: Option<Vec<String>>,
    pub revoked: Option<bool>,
}

#[derive(Default)]
pub struct ApiKeyQuery;

#[Object]
impl ApiKeyQuery {
    /// An API key (keys:manage); with `version` or `asOf` (RFC 3339), as it was then.
    async fn api_key(
        &self,
        ctx: &Context<'_>,
        id: ID,
        version: Option<i64>,
        #[graphql(name = "asOf")] as_of: Option<String>,
    ) -> Result<Option<ApiKey>> {
        let session = allowed(ctx, route::API_KEY)?;
        if let Some(view) = past::<rest::Tracked>(session, &id, version, as_of).await? {
            return Ok(Some(ApiKey(Siblings::alone(view))));
        }
        Ok(Some(ApiKey::of(&rest::find(&session.state, &session.caller, &id).await?)))
    }

    /// API keys (keys:manage), as `GET /api-keys`.
    #[graphql(complexity = "connection::complexity(first, child_complexity)")]
    async fn api_keys(
        &self,
        ctx: &Context<'_>,
        filter: Option<ApiKeyFilterInput>,
        sort: Option<ApiKeySortField>,
        order: Option<SortOrder>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<Option<Connection<ApiKey>>> {
        let session = allowed(ctx, route::API_KEYS)?;
        let f = filter.unwrap_or_default();
        let filters = Filters::default().list("environment", f.environment).flag("revoked", f.revoked).done();
        let args = ListArgs::new(first, after, sort.map(ApiKeySortField::rest), order, filters);
        let request = args.request(rest::SORTS, rest::FILTERS, ApiKeySort::accepts)?;
        let filter = rest::filter_of(&request)?;
        let (pool, org) = (session.state.store.pool(), session.organization_id());
        let window = request.probe_window();
        let rows = api_keys::list(pool, org, &filter, request.sort, request.order, &window);
        let count = || api_keys::count(pool, org, &filter);
        let sort = request.sort;
        Ok(Some(
            page(
                ctx,
                &request,
                rows,
                count,
                |row| (sort.value_of(row), row.id.clone()),
                ApiKey::view,
                ApiKey,
            )
            .await?,
        ))
    }
}

/// A new key (the body of `POST /api-keys`).
#[derive(InputObject, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateApiKeyInput {
    /// Required.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Required: permission names; a key cannot grant one it does not hold.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub permissions: Option<Vec<String>>,
    /// `live` (default) or `test`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    /// RFC 3339; the key stops working then.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
}

#[derive(Default)]
pub struct ApiKeyMutation;

#[Object]
impl ApiKeyMutation {
    /// Create an API key (keys:manage); the answer's `key` is the secret, shown only here.
    async fn create_api_key(&self, ctx: &Context<'_>, input: CreateApiKeyInput) -> Result<Option<ApiKey>> {
        let session = allowed(ctx, route::CREATE_API_KEY)?;
        let (row, secret) = rest::create_row(&session.state, &session.caller, body(input)?).await?;
        session.effects.reveal(secret.expose());
        Ok(Some(ApiKey(Siblings::alone(View::from_value(rest::render_created(&row, &secret))))))
    }

    /// Revoke an API key (keys:manage): it is refused from the next request on. Returns it.
    async fn revoke_api_key(
        &self,
        ctx: &Context<'_>,
        id: ID,
        if_match: Option<i64>,
    ) -> Result<Option<ApiKey>> {
        let session = allowed(ctx, route::REVOKE_API_KEY)?;
        let row = rest::revoke_row(&session.state, &session.caller, &id, self::if_match(if_match)).await?;
        Ok(Some(ApiKey::of(&row)))
    }
}
