//! The BI views (`pcsync_bi`): what a BI tool needs of them, on a real PostgreSQL, and on a
//! quarter of history written by real passes against the simulator (the demo's world).

mod common;

use chrono::{Datelike, Duration, NaiveDate, TimeZone, Utc};
use common::TestDb;
use pcsync::demo::World;
use sqlx::{Connection, PgPool};

const VIEWS: [&str; 13] = [
    "current_subscriptions",
    "license_totals",
    "upcoming_renewals",
    "customer_health",
    "recent_changes",
    "sync_runs",
    "license_usage",
    "unassigned_seats",
    "renewal_decisions",
    "cancellation_windows",
    "license_counts_daily",
    "license_counts_month_end",
    "license_counts_quarter_end",
];

/// Every name is a view in `pcsync_bi`, with no column of a type a BI tool cannot take, a
/// comment that begins "One row per" and says what may be summed, a comment on every column,
/// a time column first where it has one, and `pcsync_reader` reads it.
#[tokio::test]
async fn every_bi_view_is_there_typed_commented_and_readable() {
    let db = TestDb::migrated().await;
    for view in VIEWS {
        let comment: Option<String> = sqlx::query_scalar(
            "SELECT obj_description(c.oid, 'pg_class') FROM pg_class c
             JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = 'pcsync_bi' AND c.relname = $1 AND c.relkind = 'v'",
        )
        .bind(view)
        .fetch_optional(&db.pool)
        .await
        .expect("catalog")
        .unwrap_or_else(|| panic!("pcsync_bi.{view} is not a view"));
        let comment = comment.unwrap_or_else(|| panic!("pcsync_bi.{view} has no comment"));
        assert!(comment.starts_with("One row per"), "{view}: {comment}");
        assert!(
            comment.contains("summed") || comment.contains("No measure to sum"),
            "{view} says what may be summed: {comment}"
        );
        let columns: Vec<(String, String, String, Option<String>)> = sqlx::query_as(
            "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod), t.typcategory::text,
                    col_description(a.attrelid, a.attnum)
             FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
             WHERE a.attrelid = ('pcsync_bi.' || $1)::regclass AND a.attnum > 0 AND NOT a.attisdropped
             ORDER BY a.attnum",
        )
        .bind(view)
        .fetch_all(&db.pool)
        .await
        .expect("columns");
        assert!(!columns.is_empty(), "{view}");
        for (name, ty, category, comment) in &columns {
            assert!(
                !matches!(ty.as_str(), "uuid" | "jsonb" | "json") && category != "A",
                "pcsync_bi.{view}.{name} is {ty}"
            );
            assert!(
                comment.as_deref().is_some_and(|c| !c.is_empty()),
                "pcsync_bi.{view}.{name} has no comment"
            );
        }
        let (first, first_type) = (&columns[0].0, &columns[0].1);
        assert!(
            first_type == "date" || first_type.starts_with("timestamp"),
            "pcsync_bi.{view}: the time column first, not {first} ({first_type})"
        );
        if view != "customer_health" {
            continue;
        }
        assert_eq!(
            first, "last_confirmed_at",
            "not left_list_at, empty when listed"
        );
    }
    // The uuid trap: MAX(customer_id) answers.
    sqlx::query("SELECT max(customer_id), min(run_id) FROM pcsync_bi.recent_changes")
        .execute(&db.pool)
        .await
        .expect("max over an id");

    let mut conn = db.pool.acquire().await.expect("conn");
    sqlx::query("SET ROLE pcsync_reader")
        .execute(&mut *conn)
        .await
        .expect("set role");
    for view in VIEWS {
        sqlx::query(&format!("SELECT * FROM pcsync_bi.{view} LIMIT 1"))
            .execute(&mut *conn)
            .await
            .unwrap_or_else(|e| panic!("pcsync_reader cannot read pcsync_bi.{view}: {e}"));
    }
    let write = sqlx::query("CREATE VIEW pcsync_bi.mine AS SELECT 1")
        .execute(&mut *conn)
        .await;
    assert!(write.is_err(), "a reader creates nothing in pcsync_bi");
    sqlx::query("RESET ROLE")
        .execute(&mut *conn)
        .await
        .expect("reset");
}

/// A quarter of history written as the demo writes it, in a database of its own.
async fn quarter(customers: u32) -> (TestDb, World) {
    let db = TestDb::migrated().await;
    let dir = std::env::temp_dir().join(format!("pcsync-bi-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("dir");
    let world = World::start(&db.url, customers, Utc::now(), &dir)
        .await
        .expect("world");
    world.first_load(&db.pool).await.expect("first load");
    let h = world.quarter(&db.pool).await.expect("quarter");
    assert_eq!(h.failed, 0);
    assert!(h.full >= 12 && h.incremental >= 70, "{h:?}");
    world.clock.set(world.now);
    (db, world)
}

/// Runs `sql` in one session on the world's clock (`pcsync.now`).
async fn on_clock<T>(pool: &PgPool, world: &World, sql: &str) -> T
where
    T: Send + Unpin + for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow>,
{
    let mut conn = pool.acquire().await.expect("conn");
    let mut tx = conn.begin().await.expect("tx");
    pcsync::clock::set_for_transaction(&mut tx, &world.clock)
        .await
        .expect("clock");
    let row = sqlx::query_as::<_, T>(sql)
        .fetch_one(&mut *tx)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    tx.commit().await.expect("commit");
    row
}

fn quarter_start(d: NaiveDate) -> NaiveDate {
    let month = (d.month0() / 3) * 3 + 1;
    NaiveDate::from_ymd_opt(d.year(), month, 1).expect("a date")
}

#[tokio::test]
async fn a_quarter_of_history_charts_as_lines_and_the_counts_agree() {
    let (db, world) = quarter(40).await;
    let pool = &db.pool;

    // Daily counts span the quarter.
    let (days, first_day): (i64, Option<NaiveDate>) = on_clock(
        pool,
        &world,
        "SELECT count(DISTINCT day), min(day) FROM pcsync_bi.license_counts_daily",
    )
    .await;
    assert!(days >= 80, "{days} days of counts");
    assert_eq!(first_day, Some(world.start.date_naive()));

    // The quarter-end counts equal license_counts_at at the quarter's end: the quarter the
    // history began in (ended) and the current one (at now).
    let now = world.now;
    let current = quarter_start(now.date_naive());
    let earlier = quarter_start(world.start.date_naive());
    assert_ne!(current, earlier, "the history spans two quarters");
    for (quarter, at) in [
        (
            earlier,
            Utc.from_utc_datetime(&current.and_hms_opt(0, 0, 0).expect("midnight")),
        ),
        (current, now),
    ] {
        let sql = format!(
            "SELECT
                (SELECT coalesce(sum(licenses), 0)::bigint FROM pcsync_bi.license_counts_quarter_end
                 WHERE quarter = '{quarter}'),
                (SELECT coalesce(sum(licenses), 0)::bigint FROM pcsync.license_counts_at('{at}')),
                (SELECT count(*) FROM (
                    SELECT customer_id::text, offer_id, status, licenses FROM pcsync.license_counts_at('{at}')
                    EXCEPT
                    SELECT customer_id, offer_id, status, licenses FROM pcsync_bi.license_counts_quarter_end
                    WHERE quarter = '{quarter}') d)"
        );
        let (bi, at_end, differ): (i64, i64, i64) = on_clock(pool, &world, &sql).await;
        assert!(bi > 0, "{quarter}: licenses counted");
        assert_eq!((bi, differ), (at_end, 0), "quarter {quarter} at {at}");
        // The last day of the quarter in the daily view says the same.
        let last_day = if quarter == current {
            now.date_naive()
        } else {
            current - Duration::days(1)
        };
        let (daily,): (i64,) = on_clock(
            pool,
            &world,
            &format!(
                "SELECT coalesce(sum(licenses), 0)::bigint FROM pcsync_bi.license_counts_daily WHERE day = '{last_day}'"
            ),
        )
        .await;
        assert_eq!(daily, at_end, "daily count on {last_day}");
    }

    // Changes spread over the quarter, not one moment: events on most weeks.
    let (weeks,): (i64,) = on_clock(
        pool,
        &world,
        "SELECT count(DISTINCT date_trunc('week', detected_at)) FROM pcsync_bi.recent_changes WHERE NOT first_load",
    )
    .await;
    assert!(weeks >= 12, "changes on {weeks} weeks");

    // Every chart of the report over time has a line: points on many days or weeks.
    let data = pcsync::report::read(pool, &world.clock, None)
        .await
        .expect("report");
    let distinct = |points: &[(NaiveDate, String, i64)]| {
        points
            .iter()
            .map(|p| p.0)
            .collect::<std::collections::BTreeSet<_>>()
            .len()
    };
    assert!(
        distinct(&data.licenses_by_day) >= 28,
        "licenses over 30 days"
    );
    assert!(distinct(&data.changes_by_day) >= 20, "changes over 30 days");
    assert!(distinct(&data.decisions_by_week) >= 3, "decisions by week");
    let renewal_weeks: std::collections::BTreeSet<_> = data.renewals.iter().map(|r| r.0).collect();
    assert!(renewal_weeks.len() >= 3, "renewals by week");

    // The planner's estimate is within 10 x of the rows, for every view.
    for view in VIEWS {
        let mut conn = pool.acquire().await.expect("conn");
        let mut tx = conn.begin().await.expect("tx");
        pcsync::clock::set_for_transaction(&mut tx, &world.clock)
            .await
            .expect("clock");
        let (plan,): (serde_json::Value,) = sqlx::query_as(&format!(
            "EXPLAIN (ANALYZE, FORMAT JSON) SELECT * FROM pcsync_bi.{view}"
        ))
        .fetch_one(&mut *tx)
        .await
        .expect("explain");
        let top = &plan[0]["Plan"];
        let estimated = top["Plan Rows"].as_f64().unwrap_or(0.0).max(1.0);
        let actual = top["Actual Rows"].as_f64().unwrap_or(0.0).max(1.0);
        let ratio = (estimated / actual).max(actual / estimated);
        assert!(
            ratio <= 10.0,
            "pcsync_bi.{view}: estimated {estimated} rows, {actual} actual"
        );
        tx.rollback().await.expect("rollback");
    }
}
