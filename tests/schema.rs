//! The migrations against a real PostgreSQL server: they apply to an empty database, apply a
//! second time without change, document every object, and their constraints hold.
#![cfg(feature = "simulator")] // the harness finds its server through pcsync::pgserver

mod common;

use common::TestDb;
use sqlx::PgPool;
use uuid::Uuid;

const TABLES: &[&str] = &[
    "activity_log",
    "customers",
    "subscriptions",
    "managed_services",
    "change_events",
    "subscription_history",
    "sync_runs",
    "sync_errors",
    "renewal_announcements",
    "cancellation_window_announcements",
    "subscribed_skus",
    "subscribed_sku_history",
    "usage_exclusions",
    "usage_settings",
    "sku_offers",
    "partner_tenants",
];

async fn table_names(pool: &PgPool) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables
         WHERE table_schema = 'pcsync' AND table_type = 'BASE TABLE' AND table_name <> '_sqlx_migrations'
         ORDER BY 1",
    )
    .fetch_all(pool)
    .await
    .expect("list tables")
}

#[tokio::test]
async fn migrations_create_the_whole_schema_then_are_a_no_op() {
    let db = TestDb::empty().await;
    let applied = pcsync::db::migrate(&db.pool).await.expect("first run");
    assert_eq!(applied, pcsync::db::MIGRATOR.iter().count());

    let mut expected: Vec<String> = TABLES.iter().map(|t| t.to_string()).collect();
    expected.sort();
    assert_eq!(table_names(&db.pool).await, expected);

    // sqlx's bookkeeping lives in our schema, not in public.
    let in_public: bool =
        sqlx::query_scalar("SELECT to_regclass('public._sqlx_migrations') IS NOT NULL")
            .fetch_one(&db.pool)
            .await
            .expect("query");
    assert!(!in_public);

    let columns_before: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM information_schema.columns WHERE table_schema = 'pcsync'",
    )
    .fetch_one(&db.pool)
    .await
    .expect("count");
    let again = pcsync::db::migrate(&db.pool).await.expect("second run");
    assert_eq!(again, 0, "nothing applied the second time");
    let columns_after: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM information_schema.columns WHERE table_schema = 'pcsync'",
    )
    .fetch_one(&db.pool)
    .await
    .expect("count");
    assert_eq!(columns_before, columns_after);
}

#[tokio::test]
async fn every_table_and_column_is_documented() {
    let db = TestDb::migrated().await;
    let undocumented: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_class c
         JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = 'pcsync' AND c.relkind IN ('r', 'v')
           AND c.relname <> '_sqlx_migrations' AND obj_description(c.oid, 'pg_class') IS NULL
         UNION ALL
         SELECT c.relname || '.' || a.attname FROM pg_class c
         JOIN pg_namespace n ON n.oid = c.relnamespace
         JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
         WHERE n.nspname = 'pcsync' AND c.relkind IN ('r', 'v')
           AND c.relname <> '_sqlx_migrations' AND col_description(c.oid, a.attnum) IS NULL
         UNION ALL
         SELECT p.proname::text || '()' FROM pg_proc p
         JOIN pg_namespace n ON n.oid = p.pronamespace
         WHERE n.nspname = 'pcsync' AND obj_description(p.oid, 'pg_proc') IS NULL
         ORDER BY 1",
    )
    .fetch_all(&db.pool)
    .await
    .expect("query comments");
    assert!(undocumented.is_empty(), "undocumented: {undocumented:?}");
}

async fn insert_run(pool: &PgPool) -> Uuid {
    let run_id = Uuid::new_v4();
    sqlx::query("INSERT INTO pcsync.sync_runs (run_id, trigger) VALUES ($1, 'test')")
        .bind(run_id)
        .execute(pool)
        .await
        .expect("insert run");
    run_id
}

async fn insert_customer_and_subscription(pool: &PgPool) -> (Uuid, &'static str) {
    let customer = Uuid::new_v4();
    sqlx::query(
        "INSERT INTO pcsync.customers (customer_id, mpn_id, source) VALUES ($1, '4847383', 'file')",
    )
    .bind(customer)
    .execute(pool)
    .await
    .expect("insert customer");
    sqlx::query(
        "INSERT INTO pcsync.subscriptions (customer_id, subscription_id, status, raw)
         VALUES ($1, 'sub-1', 'active', '{}'::jsonb)",
    )
    .bind(customer)
    .execute(pool)
    .await
    .expect("insert subscription");
    (customer, "sub-1")
}

/// The SQLSTATE of a statement that must fail.
async fn refused(pool: &PgPool, sql: &str, customer: Uuid, run: Uuid) -> String {
    let err = sqlx::query(sql)
        .bind(customer)
        .bind(run)
        .execute(pool)
        .await
        .expect_err(sql);
    err.as_database_error()
        .and_then(|d| d.code().map(|c| c.to_string()))
        .unwrap_or_default()
}

#[tokio::test]
async fn overlapping_history_versions_are_refused() {
    let db = TestDb::migrated().await;
    let run = insert_run(&db.pool).await;
    let (customer, sub) = insert_customer_and_subscription(&db.pool).await;
    let insert = "INSERT INTO pcsync.subscription_history
        (customer_id, subscription_id, valid_from, valid_to, run_id, status)
        VALUES ($1, $2, $3, $4, $5, 'active')";
    let version = |from: &'static str, to: Option<&'static str>| {
        sqlx::query(insert)
            .bind(customer)
            .bind(sub)
            .bind(from.parse::<chrono::DateTime<chrono::Utc>>().expect("ts"))
            .bind(to.map(|t| t.parse::<chrono::DateTime<chrono::Utc>>().expect("ts")))
            .bind(run)
    };
    version("2026-01-01T00:00:00Z", Some("2026-02-01T00:00:00Z"))
        .execute(&db.pool)
        .await
        .expect("first version");
    // Adjacent versions are fine: valid_to is exclusive.
    version("2026-02-01T00:00:00Z", None)
        .execute(&db.pool)
        .await
        .expect("current version");
    // Overlapping a closed version.
    let err = version("2026-01-15T00:00:00Z", Some("2026-01-20T00:00:00Z"))
        .execute(&db.pool)
        .await
        .expect_err("overlap refused");
    assert_eq!(
        err.as_database_error().and_then(|d| d.code()).as_deref(),
        Some("23P01"),
        "exclusion violation"
    );
    // A second open-ended version overlaps the current one.
    let err = version("2026-03-01T00:00:00Z", None)
        .execute(&db.pool)
        .await
        .expect_err("second current version refused");
    assert!(err.as_database_error().is_some());
    // An empty or inverted interval.
    let err = version("2026-05-01T00:00:00Z", Some("2026-04-01T00:00:00Z"))
        .execute(&db.pool)
        .await
        .expect_err("inverted interval refused");
    assert_eq!(
        err.as_database_error().and_then(|d| d.code()).as_deref(),
        Some("23514")
    );
}

#[tokio::test]
async fn bad_enumeration_values_are_refused() {
    let db = TestDb::migrated().await;
    let run = insert_run(&db.pool).await;
    let (customer, _) = insert_customer_and_subscription(&db.pool).await;
    let check_violation = "23514";
    let cases = [
        "INSERT INTO pcsync.change_events (run_id, customer_id, entity, entity_id, kind)
         VALUES ($2, $1, 'invoice', 'x', 'added')",
        "INSERT INTO pcsync.change_events (run_id, customer_id, entity, entity_id, kind)
         VALUES ($2, $1, 'subscription', 'x', 'renamed')",
        // A change names its field; an addition does not.
        "INSERT INTO pcsync.change_events (run_id, customer_id, entity, entity_id, kind)
         VALUES ($2, $1, 'subscription', 'x', 'changed')",
        "INSERT INTO pcsync.change_events (run_id, customer_id, entity, entity_id, kind, field)
         VALUES ($2, $1, 'subscription', 'x', 'added', 'status')",
        "UPDATE pcsync.sync_runs SET status = 'done', finished_at = now() WHERE run_id = $2 AND $1 IS NOT NULL",
        "UPDATE pcsync.sync_runs SET status = 'succeeded' WHERE run_id = $2 AND $1 IS NOT NULL",
        "UPDATE pcsync.customers SET source = 'csv' WHERE customer_id = $1 AND $2 IS NOT NULL",
        "UPDATE pcsync.customers SET last_status = 'failed' WHERE customer_id = $1 AND $2 IS NOT NULL",
        "UPDATE pcsync.customers SET mpn_id = '48A' WHERE customer_id = $1 AND $2 IS NOT NULL",
        "INSERT INTO pcsync.sync_errors (run_id, customer_id, operation, http_status, message)
         VALUES ($2, $1, 'get_subscriptions', 42, 'x')",
        "INSERT INTO pcsync.managed_services (customer_id, service_id, raw)
         VALUES ($1, 'Exchange', '[]'::jsonb) ON CONFLICT DO NOTHING RETURNING $2::uuid",
    ];
    for sql in cases {
        assert_eq!(
            refused(&db.pool, sql, customer, run).await,
            check_violation,
            "{sql}"
        );
    }
    // The valid forms of the same rows are accepted.
    sqlx::query(
        "INSERT INTO pcsync.change_events (run_id, customer_id, entity, entity_id, kind, field, old_value, new_value)
         VALUES ($2, $1, 'subscription', 'sub-1', 'changed', 'status', 'active', 'suspended')",
    )
    .bind(customer)
    .bind(run)
    .execute(&db.pool)
    .await
    .expect("a valid change event");
    sqlx::query(
        "UPDATE pcsync.sync_runs SET status = 'partial', finished_at = now() WHERE run_id = $1",
    )
    .bind(run)
    .execute(&db.pool)
    .await
    .expect("a valid run end");
}

#[tokio::test]
async fn rows_need_their_customer() {
    let db = TestDb::migrated().await;
    let err = sqlx::query(
        "INSERT INTO pcsync.subscriptions (customer_id, subscription_id, raw) VALUES ($1, 's', '{}')",
    )
    .bind(Uuid::new_v4())
    .execute(&db.pool)
    .await
    .expect_err("orphan refused");
    assert_eq!(
        err.as_database_error().and_then(|d| d.code()).as_deref(),
        Some("23503")
    );
}

/// Each resource's one description and its tables agree: every field is a column of its
/// table and of its history table, of the type its kind says; the key, `raw` and (for a
/// resource fetched per partner) `untracked_at` are there; `change_events` takes its entity.
#[tokio::test]
async fn each_description_and_its_tables_agree() {
    use pcsync::sync::resource::{MANAGED_SERVICES, SUBSCRIBED_SKUS, SUBSCRIPTIONS};
    let db = TestDb::migrated().await;
    let type_of = |table: &'static str, column: &'static str| {
        let pool = db.pool.clone();
        async move {
            sqlx::query_scalar::<_, String>(
                "SELECT format_type(a.atttypid, a.atttypmod) FROM pg_attribute a
                 WHERE a.attrelid = ('pcsync.' || $1)::regclass AND a.attname = $2 AND NOT a.attisdropped",
            )
            .bind(table)
            .bind(column)
            .fetch_optional(&pool)
            .await
            .expect("type")
        }
    };
    let entity_check: String = sqlx::query_scalar(
        "SELECT string_agg(pg_get_constraintdef(oid), ' ') FROM pg_constraint
         WHERE conrelid = 'pcsync.change_events'::regclass AND contype = 'c'
           AND pg_get_constraintdef(oid) LIKE '%entity%'",
    )
    .fetch_one(&db.pool)
    .await
    .expect("the entity check");
    for r in [&SUBSCRIPTIONS, &MANAGED_SERVICES, &SUBSCRIBED_SKUS] {
        let tables = std::iter::once(r.table).chain(r.history);
        for table in tables {
            for field in r.fields {
                assert_eq!(
                    type_of(table, field.column).await.as_deref(),
                    Some(field.kind.sql_type()),
                    "{table}.{}",
                    field.column
                );
            }
            assert_eq!(
                type_of(table, r.key).await.as_deref(),
                Some("text"),
                "{table}.{}",
                r.key
            );
        }
        assert_eq!(type_of(r.table, "raw").await.as_deref(), Some("jsonb"));
        assert_eq!(
            type_of(r.table, "untracked_at").await.is_some(),
            r.partner.is_some(),
            "{}: untracked_at only where a partner filter applies",
            r.table
        );
        assert!(
            entity_check.contains(&format!("'{}'", r.entity)),
            "change_events takes entity {}: {entity_check}",
            r.entity
        );
    }
}
