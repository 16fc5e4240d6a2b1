//! DataLoaders: the nested fields of many objects are read in one statement per kind, not one
//! per object (no N+1). `engagements(first: 50) { … findings { … affectedTargets { … } } }`
//! reads the engagements, then every engagement's page of findings at once (and their totals
//! at once), then every affected target at once.
//!
//! Objects resolved together share a `Siblings` group, and the first of them to resolve a
//! nested field loads it for all of them with one `load_many` on the request's `DataLoader`
//! (the `Loader`s below); a DataLoader alone batches only the keys that arrive within its
//! delay, so a big page could be split into several statements by timing.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::future::Future;
use std::hash::{Hash, Hasher};
use std::marker::PhantomData;
use std::sync::{Arc, Mutex};

use async_graphql::dataloader::Loader;
use pwnbook_projections::batch;
use pwnbook_projections::engagements::EngagementRow;
use pwnbook_projections::list::SortValue;
use pwnbook_projections::targets::TargetRow;
use pwnbook_projections::wiki::WikiPageRow;
use sqlx::AnyPool;
use tokio::sync::OnceCell;

use crate::error::ApiError;
use crate::graphql::connection::ListArgs;
use crate::graphql::view::View;
use crate::pagination::ListRequest;
use crate::state::AppState;

/// The loader of one request (or one WebSocket connection): every read is scoped to the
/// caller's organization.
pub struct Batch {
    state: AppState,
    organization_id: String,
}

impl Batch {
    pub fn new(state: AppState, organization_id: String) -> Self {
        Self { state, organization_id }
    }

    fn pool(&self) -> &AnyPool {
        self.state.store.pool()
    }
}

/// A kind of child of an engagement, listed per engagement.
pub trait ChildKind: Send + Sync + 'static {
    type Sort: Copy + Send + Sync + 'static;
    type Row: Clone + Send + Sync + 'static;
    /// The REST list's sorts and filter parameters.
    const SORTS: &'static [(&'static str, Self::Sort)];
    const FILTERS: &'static [&'static str];

    fn accepts(sort: Self::Sort, value: &SortValue) -> bool;
    fn key_of(sort: Self::Sort, row: &Self::Row) -> (SortValue, String);
    fn engagement_of(row: &Self::Row) -> &str;
    /// The REST view of a row.
    fn view_of(row: &Self::Row) -> View;

    /// A page per engagement of `engagement_ids`, for `request`.
    fn page(
        pool: &AnyPool,
        organization_id: &str,
        engagement_ids: &[String],
        request: &ListRequest<Self::Sort>,
    ) -> impl Future<Output = Result<Vec<Self::Row>, ApiError>> + Send;

    /// The total per engagement of `engagement_ids`, for `request`'s filters.
    fn counts(
        pool: &AnyPool,
        organization_id: &str,
        engagement_ids: &[String],
        request: &ListRequest<Self::Sort>,
    ) -> impl Future<Output = Result<HashMap<String, i64>, ApiError>> + Send;
}

/// The [`ChildKind`] of a resource listed per engagement: every kind reads its page and totals
/// through the same steps, only the types, the REST module's filter parsing (`rest` at the call
/// site, with `scope` as the engagement part of its filter) and the batch queries differ.
macro_rules! child_kind {
    ($kind:ident, $sort:ty, $row:ty, $object:ident, scope: $scope:expr, page: $page:path, count: $count:path) => {
        impl ChildKind for $kind {
            type Sort = $sort;
            type Row = $row;
            const SORTS: &'static [(&'static str, $sort)] = rest::SORTS;
            const FILTERS: &'static [&'static str] = rest::FILTERS;

            fn accepts(sort: $sort, value: &SortValue) -> bool {
                sort.accepts(value)
            }

            fn key_of(sort: $sort, row: &$row) -> (SortValue, String) {
                (sort.value_of(row), row.id.clone())
            }

            fn engagement_of(row: &$row) -> &str {
                &row.engagement_id
            }

            fn view_of(row: &$row) -> View {
                $object::view(row)
            }

            async fn page(
                pool: &AnyPool,
                organization_id: &str,
                engagement_ids: &[String],
                request: &ListRequest<$sort>,
            ) -> std::result::Result<Vec<$row>, ApiError> {
                let filter = rest::filter_of(request, $scope)?;
                let page =
                    PerParent { order: request.order, after: request.after(), limit: request.per_page + 1 };
                Ok($page(pool, organization_id, engagement_ids, &filter, request.sort, page).await?)
            }

            async fn counts(
                pool: &AnyPool,
                organization_id: &str,
                engagement_ids: &[String],
                request: &ListRequest<$sort>,
            ) -> std::result::Result<HashMap<String, i64>, ApiError> {
                let filter = rest::filter_of(request, $scope)?;
                Ok($count(pool, organization_id, engagement_ids, &filter).await?)
            }
        }
    };
}
pub(crate) use child_kind;

/// The page of `C` children of one engagement for some connection arguments.
pub struct Children<C> {
    pub engagement_id: String,
    pub args: Arc<ListArgs>,
    /// Whether the total is wanted too.
    pub total: bool,
    kind: PhantomData<fn() -> C>,
}

impl<C> Children<C> {
    pub fn new(engagement_id: String, args: Arc<ListArgs>, total: bool) -> Self {
        Self { engagement_id, args, total, kind: PhantomData }
    }
}

impl<C> Clone for Children<C> {
    fn clone(&self) -> Self {
        Self::new(self.engagement_id.clone(), self.args.clone(), self.total)
    }
}

impl<C> PartialEq for Children<C> {
    fn eq(&self, other: &Self) -> bool {
        self.engagement_id == other.engagement_id && self.args == other.args && self.total == other.total
    }
}

impl<C> Eq for Children<C> {}

impl<C> Hash for Children<C> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.engagement_id.hash(state);
        self.args.hash(state);
        self.total.hash(state);
    }
}

/// One engagement's page (one row more than asked, to tell whether more follow) and total.
#[derive(Clone)]
pub struct ChildPage<R> {
    pub rows: Vec<R>,
    pub total: Option<i64>,
}

impl<C: ChildKind> Loader<Children<C>> for Batch {
    type Value = ChildPage<C::Row>;
    type Error = async_graphql::Error;

    async fn load(&self, keys: &[Children<C>]) -> Result<HashMap<Children<C>, Self::Value>, Self::Error> {
        // One statement (and one count) per distinct set of arguments: usually one.
        let mut groups: HashMap<(Arc<ListArgs>, bool), Vec<String>> = HashMap::new();
        for key in keys {
            groups.entry((key.args.clone(), key.total)).or_default().push(key.engagement_id.clone());
        }
        let mut pages = HashMap::new();
        for ((args, total), parents) in groups {
            let request = args.request(C::SORTS, C::FILTERS, C::accepts)?;
            let rows = C::page(self.pool(), &self.organization_id, &parents, &request).await?;
            let totals = if total {
                Some(C::counts(self.pool(), &self.organization_id, &parents, &request).await?)
            } else {
                None
            };
            let mut by_parent: HashMap<String, Vec<C::Row>> = HashMap::new();
            for row in rows {
                by_parent.entry(C::engagement_of(&row).to_owned()).or_default().push(row);
            }
            for parent in parents {
                let page = ChildPage {
                    rows: by_parent.remove(&parent).unwrap_or_default(),
                    total: totals.as_ref().map(|t| t.get(&parent).copied().unwrap_or(0)),
                };
                pages.insert(Children::new(parent, args.clone(), total), page);
            }
        }
        Ok(pages)
    }
}

/// An engagement by id (a child's `engagement`).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct EngagementById(pub String);

impl Loader<EngagementById> for Batch {
    type Value = EngagementRow;
    type Error = async_graphql::Error;

    async fn load(
        &self,
        keys: &[EngagementById],
    ) -> Result<HashMap<EngagementById, EngagementRow>, Self::Error> {
        let ids: Vec<String> = keys.iter().map(|k| k.0.clone()).collect();
        let rows = batch::engagements_by_ids(self.pool(), &self.organization_id, &ids)
            .await
            .map_err(ApiError::from)?;
        Ok(rows.into_iter().map(|row| (EngagementById(row.id.clone()), row)).collect())
    }
}

/// A target by id (a finding's `affectedTargets`).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct TargetById(pub String);

impl Loader<TargetById> for Batch {
    type Value = TargetRow;
    type Error = async_graphql::Error;

    async fn load(&self, keys: &[TargetById]) -> Result<HashMap<TargetById, TargetRow>, Self::Error> {
        let ids: Vec<String> = keys.iter().map(|k| k.0.clone()).collect();
        let rows =
            batch::targets_by_ids(self.pool(), &self.organization_id, &ids).await.map_err(ApiError::from)?;
        Ok(rows.into_iter().map(|row| (TargetById(row.id.clone()), row)).collect())
    }
}

/// A wiki page by id (a page's `parent`).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct WikiPageById(pub String);

impl Loader<WikiPageById> for Batch {
    type Value = WikiPageRow;
    type Error = async_graphql::Error;

    async fn load(&self, keys: &[WikiPageById]) -> Result<HashMap<WikiPageById, WikiPageRow>, Self::Error> {
        let ids: Vec<String> = keys.iter().map(|k| k.0.clone()).collect();
        let rows = batch::wiki_pages_by_ids(self.pool(), &self.organization_id, &ids)
            .await
            .map_err(ApiError::from)?;
        Ok(rows.into_iter().map(|row| (WikiPageById(row.id.clone()), row)).collect())
    }
}

/// A report's last generated document by report id: `(format, content)`.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ReportContent(pub String);

impl Loader<ReportContent> for Batch {
    type Value = (String, String);
    type Error = async_graphql::Error;

    async fn load(
        &self,
        keys: &[ReportContent],
    ) -> Result<HashMap<ReportContent, (String, String)>, Self::Error> {
        let ids: Vec<String> = keys.iter().map(|k| k.0.clone()).collect();
        let documents =
            batch::report_contents(self.pool(), &self.organization_id, &ids).await.map_err(ApiError::from)?;
        Ok(documents.into_iter().map(|(id, document)| (ReportContent(id), document)).collect())
    }
}

/// Objects resolved together: the nodes of one list page, or every child read in one batch. A
/// nested field of any of them is loaded for all of them, once, when the first asks (the
/// others wait for that load): one `load_many` on the request's DataLoader, so one statement
/// per kind however many objects there are, and independent of timing.
pub struct Siblings {
    views: Vec<View>,
    loads: Mutex<HashMap<LoadKey, Arc<Loaded>>>,
}

/// A group's load: set once, by the first member that asks.
type Loaded = OnceCell<Arc<dyn Any + Send + Sync>>;

/// What a group loads for all its members.
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum LoadKey {
    /// A nested connection: the kind of child, its arguments, whether totals are wanted.
    Children(TypeId, Arc<ListArgs>, bool),
    /// A nested field without arguments (`affectedTargets`, `engagement`, `parent`, `content`).
    Field(&'static str),
}

impl Siblings {
    /// The nodes of `views`, in order, as one group.
    pub fn group(views: Vec<View>) -> Vec<Node> {
        let count = views.len();
        let siblings = Arc::new(Self { views, loads: Mutex::new(HashMap::new()) });
        (0..count).map(|index| Node { siblings: siblings.clone(), index }).collect()
    }

    /// A group of one.
    pub fn alone(view: View) -> Node {
        Self::group(vec![view]).pop().unwrap_or_default()
    }

    pub fn members(&self) -> usize {
        self.views.len()
    }

    /// Every value `of` gives for the members, without repeats, in order.
    pub fn all(&self, of: impl Fn(&View) -> Vec<String>) -> Vec<String> {
        let mut seen = std::collections::HashSet::new();
        self.views.iter().flat_map(of).filter(|v| seen.insert(v.clone())).collect()
    }

    /// The value `load` gives for `key`, loaded once for the whole group.
    pub async fn once<T, F, Fut>(&self, key: LoadKey, load: F) -> Result<Arc<T>, async_graphql::Error>
    where
        T: Send + Sync + 'static,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, async_graphql::Error>>,
    {
        let cell = {
            let mut loads =
                self.loads.lock().map_err(|_| ApiError::Internal("a loader lock was poisoned".to_owned()))?;
            loads.entry(key).or_default().clone()
        };
        let value = cell
            .get_or_try_init(|| async {
                Ok::<_, async_graphql::Error>(Arc::new(load().await?) as Arc<dyn Any + Send + Sync>)
            })
            .await?
            .clone();
        value
            .downcast::<T>()
            .map_err(|_| ApiError::Internal("a loader cached another type".to_owned()).into())
    }
}

/// One object of a group: its view, and its siblings for batched nested fields.
#[derive(Clone)]
pub struct Node {
    siblings: Arc<Siblings>,
    index: usize,
}

impl Default for Node {
    fn default() -> Self {
        Siblings::alone(View::default())
    }
}

impl Node {
    pub fn siblings(&self) -> &Siblings {
        &self.siblings
    }
}

impl std::ops::Deref for Node {
    type Target = View;

    fn deref(&self) -> &View {
        &self.siblings.views[self.index]
    }
}
