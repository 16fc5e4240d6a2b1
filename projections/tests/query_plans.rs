//! The finding list filtered by severity and sorted by CVSS score stays an index scan at
//! 100 000 findings in one organization, and so does its page-mode count once (auto)vacuum has
//! marked the pages all-visible (PostgreSQL; run with `--nocapture` to see the plans).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use pwnbook_events::testing::TestDb;
use pwnbook_events::Store;
use pwnbook_projections::findings::{self, FindingFilter, FindingSort};
use pwnbook_projections::list::{Keyset, Order, SortValue, Window};
use pwnbook_projections::sql::Sql;
use sqlx::Row;

const ORG: &str = "org_01j9k2m3n4p5q6r7s8t9";
const OTHER_ORG: &str = "org_01j9k2m3n4p5q6r7s8t8";
const ENG: &str = "eng_01j9k2m3n4p5q6r7s8t9";

async fn plan(store: &Store, query: &Sql) -> String {
    let rows =
        query.query_with_text(&format!("EXPLAIN {}", query.text())).fetch_all(store.pool()).await.unwrap();
    rows.iter().map(|r| r.try_get::<String, _>(0).unwrap()).collect::<Vec<_>>().join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn severity_filtered_cvss_sorted_finding_lists_use_an_index() {
    let Some(db) = TestDb::postgres().await else { return };
    let store = Store::open(&db.url).await.unwrap();
    pwnbook_projections::migrate(&store).await.unwrap();
    sqlx::query(
        "INSERT INTO engagements (id, organization_id, name, name_key, status, start_date_key, tags, created_at, \
         updated_at, version) VALUES ($1, $2, 'Big', 'big', 'active', '', '[]', 0, 0, 1)",
    )
    .bind(ENG)
    .bind(ORG)
    .execute(store.pool())
    .await
    .unwrap();
    // 100 000 findings in one organization (and some in another), severities and scores spread.
    sqlx::query(
        "INSERT INTO findings (id, organization_id, engagement_id, title, title_key, severity, severity_rank, \
         cvss_score, cwe, cve, refs, affected_target_ids, status, review_status, tags, created_at, updated_at, version) \
         SELECT 'fnd_' || lpad(g::text, 20, '0'), CASE WHEN g > 100000 THEN $2 ELSE $1 END, $3, \
                'Finding ' || g, 'finding ' || g, \
                (ARRAY['critical', 'high', 'medium', 'low', 'info'])[1 + g % 5], 4 - g % 5, (g * 37) % 101, \
                '[]', '[]', '[]', '[]', 'open', 'in_progress', '[]', 1700000000000 + g, 1700000000000 + g, 1 \
         FROM generate_series(1, 110000) AS g",
    )
    .bind(ORG)
    .bind(OTHER_ORG)
    .bind(ENG)
    .execute(store.pool())
    .await
    .unwrap();
    // The counters the projector keeps alongside the rows.
    sqlx::query(
        "INSERT INTO finding_counts (organization_id, engagement_id, severity, status, review_status, n) \
         SELECT organization_id, engagement_id, severity, status, review_status, COUNT(*) FROM findings \
         GROUP BY organization_id, engagement_id, severity, status, review_status",
    )
    .execute(store.pool())
    .await
    .unwrap();
    sqlx::query("VACUUM ANALYZE findings").execute(store.pool()).await.unwrap();
    sqlx::query("ANALYZE engagements").execute(store.pool()).await.unwrap();

    let filter = FindingFilter { severity: vec!["critical".to_owned()], ..FindingFilter::default() };
    let windows = [
        Window::Offset { offset: 0, limit: 20 },
        Window::Offset { offset: 2_000, limit: 20 },
        Window::After {
            key: Keyset { value: SortValue::Int(50), id: "fnd_00000000000000050000".to_owned() },
            limit: 21,
        },
    ];
    for order in [Order::Desc, Order::Asc] {
        for window in &windows {
            let query = findings::list_query(ORG, &filter, FindingSort::CvssScore, order, window);
            let plan = plan(&store, &query).await;
            println!("{order:?} {window:?}\n{plan}\n");
            assert!(!plan.contains("Seq Scan on findings"), "the list scans the table:\n{plan}");
            assert!(plan.contains("findings_org_severity_score"), "the list does not use the index:\n{plan}");
            assert!(!plan.contains("Sort "), "the index order is the list order:\n{plan}");
        }
    }
    // Page mode also counts the filter's rows.
    let plan = plan(&store, &findings::count_query(ORG, &filter)).await;
    println!("count\n{plan}\n");
    assert!(!plan.contains("Seq Scan on findings"), "the count scans the table:\n{plan}");
    let counted: i64 =
        findings::count_query(ORG, &filter).query().fetch_one(store.pool()).await.unwrap().get(0);
    assert_eq!(counted, 20_000);
    // The total page mode reports comes from the counters, and agrees.
    assert!(findings::counter_query(ORG, &filter).is_some());
    let total = findings::count(store.pool(), ORG, &filter).await.unwrap();
    assert_eq!(total, 20_000);
    let rows = findings::list(store.pool(), ORG, &filter, FindingSort::CvssScore, Order::Desc, &windows[0])
        .await
        .unwrap();
    assert_eq!(rows.len(), 20);
    assert!(rows.iter().all(|r| r.severity == "critical" && r.organization_id == ORG));
    assert!(rows
        .windows(2)
        .all(|w| w[0].cvss.as_ref().map(|c| c.score) >= w[1].cvss.as_ref().map(|c| c.score)));
    store.close().await;
}
