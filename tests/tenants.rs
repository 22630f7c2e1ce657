//! Several partner tenants (issue 20), first step: the migration that puts the tenant in every
//! table and key keeps every row, assigns it to the tenant `default`, and lets two tenants hold
//! the same customer and subscription as separate rows.

mod common;

use common::TestDb;
use sqlx::{Connection, PgConnection};

const TENANT_MIGRATION: i64 = 20261201000016;

const TABLES: [&str; 13] = [
    "pcsync.customers",
    "pcsync.subscriptions",
    "pcsync.managed_services",
    "pcsync.subscribed_skus",
    "pcsync.subscription_history",
    "pcsync.subscribed_sku_history",
    "pcsync.change_events",
    "pcsync.activity_log",
    "pcsync.sync_runs",
    "pcsync.sync_errors",
    "pcsync.renewal_announcements",
    "pcsync.cancellation_window_announcements",
    "pcsync_private.refresh_tokens",
];

/// The migrations before the tenant's, as `pcsync migrate` applies them.
async fn migrate_before_tenants(url: &str) {
    let mut conn = PgConnection::connect(url).await.expect("connect");
    sqlx::query("CREATE SCHEMA IF NOT EXISTS pcsync")
        .execute(&mut conn)
        .await
        .expect("schema");
    sqlx::query("SET search_path TO pcsync, public")
        .execute(&mut conn)
        .await
        .expect("path");
    let mut before = sqlx::migrate!("./migrations");
    before.migrations = std::borrow::Cow::Owned(
        before
            .migrations
            .iter()
            .filter(|m| m.version < TENANT_MIGRATION)
            .cloned()
            .collect(),
    );
    before.run(&mut conn).await.expect("the earlier migrations");
}

/// A row in every table, written as the passes before the migration wrote them.
const ROWS: &str = "
INSERT INTO pcsync.sync_runs (run_id, trigger, status, finished_at, kind)
    VALUES ('00000000-0000-0000-0000-00000000000a', 'test', 'succeeded', now(), 'full');
INSERT INTO pcsync.customers (customer_id, company_name, source)
    VALUES ('c0000000-0000-0000-0000-000000000001', 'Contoso', 'file');
INSERT INTO pcsync.subscriptions (customer_id, subscription_id, offer_id, quantity, status, raw, first_seen_at, changed_at)
    VALUES ('c0000000-0000-0000-0000-000000000001', 's-1', 'O', 5, 'active', '{}', now(), now());
INSERT INTO pcsync.managed_services (customer_id, service_id, name, raw, first_seen_at, changed_at)
    VALUES ('c0000000-0000-0000-0000-000000000001', 'Exchange', 'Exchange', '{}', now(), now());
INSERT INTO pcsync.subscribed_skus (customer_id, sku_id, sku_part_number, raw, first_seen_at, changed_at)
    VALUES ('c0000000-0000-0000-0000-000000000001', 'k-1', 'SPE_E3', '{}', now(), now());
INSERT INTO pcsync.subscription_history (customer_id, subscription_id, valid_from, run_id, offer_id, quantity, status)
    VALUES ('c0000000-0000-0000-0000-000000000001', 's-1', now() - interval '1 day', '00000000-0000-0000-0000-00000000000a', 'O', 5, 'active');
INSERT INTO pcsync.subscribed_sku_history (customer_id, sku_id, valid_from, run_id, sku_part_number)
    VALUES ('c0000000-0000-0000-0000-000000000001', 'k-1', now() - interval '1 day', '00000000-0000-0000-0000-00000000000a', 'SPE_E3');
INSERT INTO pcsync.change_events (run_id, customer_id, entity, entity_id, kind, detected_at)
    VALUES ('00000000-0000-0000-0000-00000000000a', 'c0000000-0000-0000-0000-000000000001', 'subscription', 's-1', 'added', now());
INSERT INTO pcsync.sync_errors (run_id, customer_id, operation, message, occurred_at)
    VALUES ('00000000-0000-0000-0000-00000000000a', 'c0000000-0000-0000-0000-000000000001', 'get_subscriptions', 'boom', now());
INSERT INTO pcsync.renewal_announcements (customer_id, subscription_id, ends_on, threshold_days, kind, run_id, announced_at)
    VALUES ('c0000000-0000-0000-0000-000000000001', 's-1', current_date + 20, 30, 'decision', '00000000-0000-0000-0000-00000000000a', now());
INSERT INTO pcsync.cancellation_window_announcements (customer_id, subscription_id, allowed_until, run_id, announced_at)
    VALUES ('c0000000-0000-0000-0000-000000000001', 's-1', now() + interval '1 day', '00000000-0000-0000-0000-00000000000a', now());
INSERT INTO pcsync.activity_log (record_id, run_id, resource_type, operation_at, raw, customer_id)
    VALUES ('r-1', '00000000-0000-0000-0000-00000000000a', 'subscription', now(), '{}', 'c0000000-0000-0000-0000-000000000001');
INSERT INTO pcsync_private.refresh_tokens (tenant_id, client_id, refresh_token, seed_fingerprint, obtained_at)
    VALUES ('contoso.onmicrosoft.com', 'app', 'secret-token', 'f', now());
";

async fn counts(pool: &sqlx::PgPool) -> Vec<i64> {
    let mut out = Vec::new();
    for t in TABLES {
        out.push(
            sqlx::query_scalar::<_, i64>(&format!("SELECT count(*) FROM {t}"))
                .fetch_one(pool)
                .await
                .expect(t),
        );
    }
    out
}

#[tokio::test]
async fn the_tenant_migration_keeps_every_row_and_puts_the_tenant_in_every_key() {
    let db = TestDb::empty().await;
    migrate_before_tenants(&db.url).await;
    sqlx::raw_sql(ROWS)
        .execute(&db.pool)
        .await
        .unwrap_or_else(|e| panic!("rows as the earlier schema took them: {e}"));
    let before = counts(&db.pool).await;
    assert!(before.iter().all(|n| *n == 1), "{before:?}");

    let applied = pcsync::db::migrate(&db.pool)
        .await
        .expect("the tenant migration");
    assert!(applied >= 1, "migration 16 and those after it");
    assert_eq!(counts(&db.pool).await, before, "every table keeps its rows");
    // The populated tables have statistics on the new column (the planner would otherwise take
    // `tenant = ...` for a handful of rows: 6.2 s for one departure sweep of 10,000 customers).
    let analyzed: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_stats WHERE schemaname = 'pcsync' AND attname = 'tenant'
           AND tablename IN ('customers', 'subscriptions', 'change_events')",
    )
    .fetch_one(&db.pool)
    .await
    .expect("stats");
    assert_eq!(analyzed, 3);
    for t in TABLES {
        let others: i64 = sqlx::query_scalar(&format!(
            "SELECT count(*) FROM {t} WHERE tenant IS DISTINCT FROM 'default'"
        ))
        .fetch_one(&db.pool)
        .await
        .expect(t);
        assert_eq!(others, 0, "{t}: every row belongs to the tenant default");
    }
    let tenants: Vec<String> = sqlx::query_scalar("SELECT name FROM pcsync.partner_tenants")
        .fetch_all(&db.pool)
        .await
        .expect("tenants");
    assert_eq!(tenants, vec!["default".to_string()]);

    // The keys of customers and records lead with the tenant.
    for (table, key) in [
        ("pcsync.customers", "PRIMARY KEY (tenant, customer_id)"),
        (
            "pcsync.subscriptions",
            "PRIMARY KEY (tenant, customer_id, subscription_id)",
        ),
        (
            "pcsync.managed_services",
            "PRIMARY KEY (tenant, customer_id, service_id)",
        ),
        (
            "pcsync.subscribed_skus",
            "PRIMARY KEY (tenant, customer_id, sku_id)",
        ),
        ("pcsync.activity_log", "PRIMARY KEY (tenant, record_id)"),
    ] {
        let defs: Vec<String> = sqlx::query_scalar(
            "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = $1::regclass",
        )
        .bind(table)
        .fetch_all(&db.pool)
        .await
        .expect("constraints");
        assert!(defs.iter().any(|d| d == key), "{table}: {defs:?}");
    }

    // A second tenant holds the same customer and subscription as rows of its own.
    sqlx::raw_sql(
        "INSERT INTO pcsync.partner_tenants (name) VALUES ('brand-b');
         INSERT INTO pcsync.customers (tenant, customer_id, company_name, source)
             VALUES ('brand-b', 'c0000000-0000-0000-0000-000000000001', 'Contoso', 'api');
         INSERT INTO pcsync.subscriptions (tenant, customer_id, subscription_id, quantity, raw, first_seen_at, changed_at)
             VALUES ('brand-b', 'c0000000-0000-0000-0000-000000000001', 's-1', 9, '{}', now(), now());
         INSERT INTO pcsync.subscription_history (tenant, customer_id, subscription_id, valid_from, run_id, quantity)
             VALUES ('brand-b', 'c0000000-0000-0000-0000-000000000001', 's-1', now() - interval '1 day',
                     '00000000-0000-0000-0000-00000000000a', 9);",
    )
    .execute(&db.pool)
    .await
    .expect("a shared customer under a second tenant");
    let quantities: Vec<(String, i64)> = sqlx::query_as(
        "SELECT tenant, quantity FROM pcsync.subscriptions WHERE subscription_id = 's-1' ORDER BY tenant",
    )
    .fetch_all(&db.pool)
    .await
    .expect("rows");
    assert_eq!(
        quantities,
        vec![("brand-b".to_string(), 9), ("default".to_string(), 5)]
    );
    let unknown = sqlx::query(
        "INSERT INTO pcsync.customers (tenant, customer_id, source) VALUES ('nobody', gen_random_uuid(), 'file')",
    )
    .execute(&db.pool)
    .await;
    assert!(
        unknown.is_err(),
        "a tenant must be known to partner_tenants"
    );
}

/// The first pass records the partner tenant's GUID; a pass whose GUID differs from the one
/// recorded for its tenant name stops, naming both, and changes nothing.
#[tokio::test]
async fn a_pass_records_its_partner_tenant_and_refuses_another_under_the_same_name() {
    use common::sim;
    use pcsync::simulator::SimConfig;
    let s = sim::setup(SimConfig {
        customers: 3,
        ..SimConfig::default()
    })
    .await;
    let configured = sim::settings(&s, &[])
        .auth
        .tenant_id
        .clone()
        .expect("tenant id");
    let first = sim::pass(&s, &[]).await;
    assert_eq!(first.status.as_str(), "succeeded");
    let recorded: Option<uuid::Uuid> = sqlx::query_scalar(
        "SELECT partner_tenant_id FROM pcsync.partner_tenants WHERE name = 'default'",
    )
    .fetch_one(&s.db.pool)
    .await
    .expect("tenant");
    assert_eq!(recorded.map(|g| g.to_string()), Some(configured.clone()));

    // The database holds another partner's data under the name.
    let other = "0f0f0f0f-0000-4000-8000-000000000001";
    sqlx::query("UPDATE pcsync.partner_tenants SET partner_tenant_id = $1 WHERE name = 'default'")
        .bind(uuid::Uuid::parse_str(other).expect("uuid"))
        .execute(&s.db.pool)
        .await
        .expect("update");
    let subscriptions = sim::count(&s.db.pool, "SELECT count(*) FROM pcsync.subscriptions").await;
    let refused = sim::pass(&s, &[]).await;
    assert_eq!(refused.status.as_str(), "failed");
    let error = refused.error.unwrap_or_default();
    assert!(
        error.contains(other) && error.contains(&configured) && error.contains("\"default\""),
        "{error}"
    );
    assert_eq!(
        sim::count(&s.db.pool, "SELECT count(*) FROM pcsync.subscriptions").await,
        subscriptions
    );
    assert_eq!(
        sim::count(
            &s.db.pool,
            "SELECT count(*) FROM pcsync.customers WHERE last_status = 'failed'"
        )
        .await,
        0,
        "no customer is blamed"
    );
}

/// After the migration the first pass keeps using the newest rotated refresh token the earlier
/// passes stored (the configured one was revoked when it was rotated), and records the tenant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_pass_after_the_migration_keeps_the_rotated_refresh_token() {
    use pcsync::simulator::{
        PARTNER_CENTER_RESOURCE, SIM_CLIENT_ID, SIM_CLIENT_SECRET, SIM_REFRESH_TOKEN,
        SIM_TENANT_ID, SimConfig, Simulator,
    };
    let db = TestDb::empty().await;
    migrate_before_tenants(&db.url).await;
    let sim = Simulator::start(SimConfig {
        customers: 3,
        keep_rotated_refresh_tokens: false,
        ..SimConfig::default()
    })
    .await
    .expect("simulator");
    // An earlier pass rotated the configured token and stored the new one.
    let answer: serde_json::Value = reqwest::Client::new()
        .post(format!("{}/{SIM_TENANT_ID}/oauth2/token", sim.authority()))
        .form(&[
            ("grant_type", "refresh_token"),
            ("client_id", SIM_CLIENT_ID),
            ("client_secret", SIM_CLIENT_SECRET),
            ("refresh_token", SIM_REFRESH_TOKEN),
            ("resource", PARTNER_CENTER_RESOURCE),
        ])
        .send()
        .await
        .expect("token endpoint")
        .json()
        .await
        .expect("json");
    let rotated = answer["refresh_token"]
        .as_str()
        .expect("rotated")
        .to_string();
    assert!(
        !sim.refresh_token_valid(SIM_REFRESH_TOKEN),
        "the configured one is spent"
    );
    let seed = pcsync::partner_center::auth::fingerprint(&secrecy::SecretString::from(
        SIM_REFRESH_TOKEN.to_string(),
    ));
    sqlx::query(
        "INSERT INTO pcsync_private.refresh_tokens (tenant_id, client_id, refresh_token, seed_fingerprint, obtained_at)
         VALUES ($1, $2, $3, $4, now())",
    )
    .bind(SIM_TENANT_ID)
    .bind(SIM_CLIENT_ID)
    .bind(&rotated)
    .bind(seed)
    .execute(&db.pool)
    .await
    .expect("the stored token");
    pcsync::db::migrate(&db.pool).await.expect("migrate");

    let dir = tempfile::tempdir().expect("dir");
    let csv = dir.path().join("customers.csv");
    std::fs::write(&csv, sim.customers_csv()).expect("csv");
    let mut env: std::collections::HashMap<String, String> = sim.env_vars().into_iter().collect();
    env.insert("PCSYNC__DATABASE__URL".into(), db.url.clone());
    env.insert(
        "PCSYNC__CUSTOMERS__FILE".into(),
        csv.to_string_lossy().to_string(),
    );
    env.insert(
        "PCSYNC__PARTNER_CENTER__REQUESTS_PER_MINUTE".into(),
        "100000".into(),
    );
    let settings = pcsync::config::Settings::load(&pcsync::config::Sources { file: None, env })
        .expect("settings");
    let report = pcsync::sync::run_pass(
        &settings,
        &db.pool,
        pcsync::sync::Trigger::Test,
        pcsync::sync::PassChoice::Full,
        tokio_util::sync::CancellationToken::new(),
    )
    .await
    .expect("the pass runs");
    assert_eq!(report.status.as_str(), "succeeded", "{:?}", report.error);
    let (tenant, token): (String, String) =
        sqlx::query_as("SELECT tenant, refresh_token FROM pcsync_private.refresh_tokens")
            .fetch_one(&db.pool)
            .await
            .expect("one token row");
    assert_eq!(tenant, "default");
    assert!(
        sim.refresh_token_valid(&token),
        "the newest rotation is kept"
    );
    let guid: Option<uuid::Uuid> = sqlx::query_scalar(
        "SELECT partner_tenant_id FROM pcsync.partner_tenants WHERE name = 'default'",
    )
    .fetch_one(&db.pool)
    .await
    .expect("tenant");
    assert_eq!(guid.map(|g| g.to_string()).as_deref(), Some(SIM_TENANT_ID));
}

/// A fresh database's tables are left unanalyzed by the migrations: statistics saying "empty"
/// made the first load's batch statement plan nested loops over the growing tables (scenario A
/// took 253 s instead of 35 s).
#[tokio::test]
async fn a_fresh_database_is_not_analyzed_empty() {
    let db = TestDb::migrated().await;
    let analyzed: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = 'pcsync' AND c.relkind = 'r' AND c.reltuples >= 0",
    )
    .fetch_all(&db.pool)
    .await
    .expect("tables");
    let grown = [
        "customers",
        "subscriptions",
        "subscription_history",
        "change_events",
    ];
    assert!(
        !analyzed.iter().any(|t| grown.contains(&t.as_str())),
        "analyzed while empty: {analyzed:?}"
    );
}
