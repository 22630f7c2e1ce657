//! The reporting schema (issue 10) as an analyst meets it: views over a real PostgreSQL
//! database filled by real passes against the simulator.
#![cfg(feature = "simulator")]
#![allow(clippy::type_complexity)]

mod common;

use chrono::{DateTime, Utc};
use common::sim::{count, pass, setup};
use pcsync::simulator::{Change, FaultKind, FaultRule, Knobs, SimConfig};
use pcsync::sync::RunStatus;
use uuid::Uuid;

async fn in_view(pool: &sqlx::PgPool, view: &str, customer: Uuid) -> i64 {
    sqlx::query_scalar(&format!(
        "SELECT count(*) FROM pcsync.{view} WHERE customer_id = $1"
    ))
    .bind(customer)
    .fetch_one(pool)
    .await
    .expect(view)
}

/// `customer_health` says who is failing, since when, who lost access and who left the list;
/// the current views leave out customers that left or lost access.
#[tokio::test]
async fn customer_health_and_the_current_views() {
    let s = setup(SimConfig {
        customers: 6,
        ..SimConfig::default()
    })
    .await;
    let first = pass(&s, &[]).await;
    assert_eq!(first.status, RunStatus::Succeeded);
    let ids = s.sim.customer_ids();
    let (lost, failing, left, healthy) = (ids[1], ids[2], ids[3], ids[4]);
    for id in [lost, failing, left, healthy] {
        assert!(in_view(&s.db.pool, "current_subscriptions", id).await > 0);
        assert!(in_view(&s.db.pool, "license_totals", id).await > 0);
    }

    s.sim
        .apply(Change::RemoveRelationship { customer_id: lost })
        .expect("403");
    s.sim.set_knobs(Knobs {
        faults: vec![FaultRule::always(FaultKind::Status500).for_customer(failing)],
        ..Knobs::default()
    });
    let csv = std::fs::read_to_string(&s.csv).expect("csv");
    let without_left: String = csv
        .lines()
        .filter(|l| !l.starts_with(&left.to_string()))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&s.csv, without_left).expect("csv");
    let second = pass(&s, &[]).await;
    assert_eq!(second.status, RunStatus::Partial);
    let first_finished: DateTime<Utc> =
        sqlx::query_scalar("SELECT finished_at FROM pcsync.sync_runs WHERE run_id = $1")
            .bind(first.run_id)
            .fetch_one(&s.db.pool)
            .await
            .expect("run");
    let second_finished: DateTime<Utc> =
        sqlx::query_scalar("SELECT finished_at FROM pcsync.sync_runs WHERE run_id = $1")
            .bind(second.run_id)
            .fetch_one(&s.db.pool)
            .await
            .expect("run");

    let health = |id: Uuid| {
        let pool = s.db.pool.clone();
        async move {
            let row: (
                bool,
                String,
                Option<DateTime<Utc>>,
                Option<DateTime<Utc>>,
                Option<String>,
                bool,
            ) = sqlx::query_as(
                "SELECT listed, status, last_confirmed_at, failing_since, last_error_code, access_lost
                 FROM pcsync.customer_health WHERE customer_id = $1",
            )
            .bind(id)
            .fetch_one(&pool)
            .await
            .expect("health");
            row
        }
    };
    let (listed, status, confirmed, since, code, access_lost) = health(lost).await;
    assert!(listed);
    assert_eq!(status, "failed");
    assert_eq!(
        confirmed,
        Some(first_finished),
        "last confirmed by the first pass"
    );
    assert!(since.is_some());
    assert_eq!(code.as_deref(), Some("20002"));
    assert!(access_lost);

    let (_, status, confirmed, since, code, access_lost) = health(failing).await;
    assert_eq!(status, "failed");
    assert_eq!(confirmed, Some(first_finished));
    assert!(since.is_some());
    assert_eq!(code.as_deref(), Some("500"));
    assert!(!access_lost);

    let (listed, _, confirmed, _, _, _) = health(left).await;
    assert!(!listed);
    assert_eq!(
        confirmed,
        Some(first_finished),
        "not confirmed after it left"
    );

    let (listed, status, confirmed, since, code, access_lost) = health(healthy).await;
    assert!(listed);
    assert_eq!(status, "succeeded");
    assert_eq!(confirmed, Some(second_finished));
    assert_eq!((since, code, access_lost), (None, None, false));

    // Lost access and left the list: out of the current views. Failing: still there, with
    // the data of its last confirmation.
    for id in [lost, left] {
        assert_eq!(in_view(&s.db.pool, "current_subscriptions", id).await, 0);
        assert_eq!(in_view(&s.db.pool, "license_totals", id).await, 0);
    }
    for id in [failing, healthy] {
        assert!(in_view(&s.db.pool, "current_subscriptions", id).await > 0);
    }
    let as_of: Option<DateTime<Utc>> = sqlx::query_scalar(
        "SELECT DISTINCT data_as_of FROM pcsync.current_subscriptions WHERE customer_id = $1",
    )
    .bind(failing)
    .fetch_one(&s.db.pool)
    .await
    .expect("as of");
    assert_eq!(as_of, Some(first_finished));

    // Access comes back: the customer is healthy and in the views again.
    s.sim
        .apply(Change::RestoreRelationship { customer_id: lost })
        .expect("restore");
    s.sim.set_knobs(Knobs::default());
    pass(&s, &[]).await;
    let (_, status, _, since, _, access_lost) = health(lost).await;
    assert_eq!(
        (status.as_str(), since, access_lost),
        ("succeeded", None, false)
    );
    assert!(in_view(&s.db.pool, "current_subscriptions", lost).await > 0);
    assert_eq!(
        count(
            &s.db.pool,
            "SELECT count(*) FROM pcsync.customers WHERE access_lost_at IS NOT NULL"
        )
        .await,
        0
    );
}

/// `pcsync_reader` (made by a migration) reads every table and view of `pcsync`, including
/// ones added by later migrations, and neither writes nor sees `pcsync_private`.
#[tokio::test]
async fn the_reader_role_reads_every_view_and_nothing_private() {
    let s = setup(SimConfig {
        customers: 3,
        ..SimConfig::default()
    })
    .await;
    pass(&s, &[]).await;
    let mut conn = s.db.pool.acquire().await.expect("conn");
    let relations: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = 'pcsync' AND c.relkind IN ('r', 'v') ORDER BY 1",
    )
    .fetch_all(&mut *conn)
    .await
    .expect("relations");
    for view in [
        "current_subscriptions",
        "license_totals",
        "recent_changes",
        "customer_health",
    ] {
        assert!(relations.iter().any(|r| r == view), "{view} exists");
    }
    sqlx::query("SET ROLE pcsync_reader")
        .execute(&mut *conn)
        .await
        .expect("the role exists");
    for r in &relations {
        sqlx::query(&format!("SELECT * FROM pcsync.{r} LIMIT 1"))
            .fetch_all(&mut *conn)
            .await
            .unwrap_or_else(|e| panic!("pcsync_reader cannot read {r}: {e}"));
    }
    for forbidden in [
        "SELECT * FROM pcsync_private.refresh_tokens",
        "UPDATE pcsync.customers SET company_name = 'x'",
        "DELETE FROM pcsync.change_events",
        "CREATE TABLE pcsync.mine (x int)",
    ] {
        let e = sqlx::query(forbidden)
            .execute(&mut *conn)
            .await
            .expect_err(forbidden);
        assert!(
            e.to_string().contains("permission denied"),
            "{forbidden}: {e}"
        );
    }
    sqlx::query("RESET ROLE")
        .execute(&mut *conn)
        .await
        .expect("reset");
    let ext_schema: String = sqlx::query_scalar(
        "SELECT n.nspname::text FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
         WHERE e.extname = 'btree_gist'",
    )
    .fetch_one(&mut *conn)
    .await
    .expect("btree_gist");
    assert_eq!(
        ext_schema, "pcsync_ext",
        "extensions live apart from the data"
    );
}

/// `pcsync run` works as a writer role without DDL rights once the schema is current (as the
/// README's three-role setup grants it), and never needs CREATEDB for an existing database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_works_as_a_writer_role_without_ddl_rights() {
    let s = setup(SimConfig {
        customers: 4,
        ..SimConfig::default()
    })
    .await;
    let writer = format!("pcsync_writer_{}", Uuid::new_v4().simple());
    for grant in [
        format!("CREATE ROLE {writer} LOGIN NOCREATEDB NOCREATEROLE"),
        format!("GRANT USAGE ON SCHEMA pcsync, pcsync_private TO {writer}"),
        format!("GRANT SELECT, INSERT, UPDATE ON ALL TABLES IN SCHEMA pcsync TO {writer}"),
        format!("GRANT USAGE ON ALL SEQUENCES IN SCHEMA pcsync TO {writer}"),
        format!("GRANT SELECT, INSERT, UPDATE ON pcsync_private.refresh_tokens TO {writer}"),
    ] {
        sqlx::query(&grant)
            .execute(&s.db.pool)
            .await
            .unwrap_or_else(|e| panic!("{grant}: {e}"));
    }
    let may_create: bool =
        sqlx::query_scalar("SELECT has_schema_privilege($1, 'pcsync', 'CREATE')")
            .bind(&writer)
            .fetch_one(&s.db.pool)
            .await
            .expect("privilege");
    assert!(!may_create, "the writer has no DDL rights");
    let mut url = reqwest::Url::parse(&s.db.url).expect("url");
    url.set_username(&writer).expect("user");
    let out = common::sim::pcsync_command(&s, &[("PCSYNC__DATABASE__URL", url.as_str())])
        .output()
        .await
        .expect("runs");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        count(
            &s.db.pool,
            "SELECT count(*) FROM pcsync.sync_runs WHERE status = 'succeeded'"
        )
        .await,
        1
    );
    for cleanup in [
        format!("DROP OWNED BY {writer}"),
        format!("DROP ROLE {writer}"),
    ] {
        let _ = sqlx::query(&cleanup).execute(&s.db.pool).await;
    }
}

/// Every new column, read from the seed pages' JSON (the seed customer's new-commerce
/// subscription) and from a Subscription resource with the fields the pages do not show.
#[tokio::test]
async fn every_field_of_the_seed_pages_and_the_subscription_resource_is_a_column() {
    let s = setup(SimConfig {
        customers: 2,
        ..SimConfig::default()
    })
    .await;
    let seed = Uuid::parse_str(pcsync::simulator::SEED_CUSTOMER_ID).expect("seed id");
    let addon = serde_json::json!({
        "id": "addon-1", "offerId": "CFQ7TTC0LH0R:0002:CFQ7TTC0KP0P", "offerName": "Teams Phone",
        "quantity": 3, "status": "suspended", "partnerId": pcsync::simulator::SEED_MPN_ID,
        "parentSubscriptionId": "bbbb1b1b-cc2c-dd3d-ee4e-ffffff5f5f5f",
        "entitlementId": "ent-42", "promotionId": "39NFJQT1Q5KL:0001", "customTermEndDate": "2025-01-31",
        "suspensionReasons": ["CustomerCancellation"],
        "scheduledNextTermInstructions": {
            "product": {"productId": "CFQ7TTC0LH0R", "skuId": "0003", "availabilityId": "CFQ7TTC0KP0Q",
                        "billingCycle": "annual", "termDuration": "P1Y"},
            "quantity": 5, "customTermEndDate": "2026-01-31"
        }
    });
    s.sim
        .apply(Change::AddSubscription {
            customer_id: seed,
            subscription: addon.as_object().cloned(),
        })
        .expect("add");
    assert_eq!(pass(&s, &[]).await.status, RunStatus::Succeeded);
    let row = |id: &'static str| {
        let pool = s.db.pool.clone();
        async move {
            let v: serde_json::Value = sqlx::query_scalar(
                "SELECT to_jsonb(s) FROM pcsync.subscriptions s WHERE subscription_id = $1",
            )
            .bind(id)
            .fetch_one(&pool)
            .await
            .expect("row");
            v
        }
    };
    let nce = row("bbbb1b1b-cc2c-dd3d-ee4e-ffffff5f5f5f").await;
    for (column, want) in [
        ("billing_cycle_end_date", serde_json::json!("2024-07-04")),
        ("commitment_end_date", serde_json::json!("2024-07-04")),
        ("effective_start_date", serde_json::json!("2024-06-05")),
        (
            "commitment_end_date_time",
            serde_json::json!("2024-07-04T23:59:59+00:00"),
        ),
        ("refundable_quantity", serde_json::json!(1)),
        (
            "refundable_quantity_details",
            serde_json::json!([{"quantity": 1, "allowedUntilDateTime": "2024-06-14T17:41:13.4675407Z"}]),
        ),
        ("attention_needed", serde_json::json!(false)),
        ("action_taken", serde_json::json!(false)),
        ("has_purchasable_addons", serde_json::json!(false)),
        ("is_microsoft_product", serde_json::json!(true)),
        ("product_id", serde_json::json!("CFQ7TTC0LH18")),
        ("sku_id", serde_json::json!("0001")),
        ("availability_id", serde_json::json!("CFQ7TTC0P0WS")),
        ("scheduled_next_term", serde_json::Value::Null),
    ] {
        assert_eq!(nce[column], want, "{column}");
    }
    let legacy = row("aaaa0a0a-bb1b-cc2c-dd3d-eeeeee4e4e4e").await;
    assert_eq!(
        legacy["product_id"],
        serde_json::Value::Null,
        "a GUID offer has no parts"
    );

    let addon = row("addon-1").await;
    for (column, want) in [
        (
            "parent_subscription_id",
            serde_json::json!("bbbb1b1b-cc2c-dd3d-ee4e-ffffff5f5f5f"),
        ),
        ("entitlement_id", serde_json::json!("ent-42")),
        ("promotion_id", serde_json::json!("39NFJQT1Q5KL:0001")),
        ("custom_term_end_date", serde_json::json!("2025-01-31")),
        (
            "suspension_reasons",
            serde_json::json!(["CustomerCancellation"]),
        ),
        ("next_term_product_id", serde_json::json!("CFQ7TTC0LH0R")),
        ("next_term_sku_id", serde_json::json!("0003")),
        (
            "next_term_availability_id",
            serde_json::json!("CFQ7TTC0KP0Q"),
        ),
        ("next_term_billing_cycle", serde_json::json!("annual")),
        ("next_term_duration", serde_json::json!("P1Y")),
        ("next_term_quantity", serde_json::json!(5)),
        ("product_id", serde_json::json!("CFQ7TTC0LH0R")),
    ] {
        assert_eq!(addon[column], want, "{column}");
    }
    assert_eq!(
        addon["scheduled_next_term"]["quantity"],
        serde_json::json!(5)
    );
    // The history keeps the same columns.
    let next_quantity: Option<i64> = sqlx::query_scalar(
        "SELECT next_term_quantity FROM pcsync.subscription_history WHERE subscription_id = 'addon-1'",
    )
    .fetch_one(&s.db.pool)
    .await
    .expect("history");
    assert_eq!(next_quantity, Some(5));
}

/// A change only inside `raw` (a field without a column) is one `changed` event naming the
/// JSON path, with old and new values, and no new history version; a change of the renewal
/// forecast is a field event with a new version.
#[tokio::test]
async fn a_change_only_inside_raw_is_one_event() {
    let s = setup(SimConfig {
        customers: 2,
        ..SimConfig::default()
    })
    .await;
    pass(&s, &[]).await;
    let seed = Uuid::parse_str(pcsync::simulator::SEED_CUSTOMER_ID).expect("seed id");
    let nce = "bbbb1b1b-cc2c-dd3d-ee4e-ffffff5f5f5f";
    let set = |field: &str, value: serde_json::Value| Change::SetSubscriptionField {
        customer_id: seed,
        subscription_id: nce.into(),
        field: field.into(),
        value,
    };
    s.sim
        .apply(set(
            "billingCycleEndDateTime",
            serde_json::json!("2024-08-04T23:59:59Z"),
        ))
        .expect("change");
    let report = pass(&s, &[]).await;
    let events: Vec<(
        String,
        Option<String>,
        Option<Vec<String>>,
        Option<String>,
        Option<String>,
    )> = sqlx::query_as(
        "SELECT kind, field, json_paths, old_value, new_value FROM pcsync.change_events
             WHERE run_id = $1",
    )
    .bind(report.run_id)
    .fetch_all(&s.db.pool)
    .await
    .expect("events");
    assert_eq!(
        events,
        vec![(
            "changed".to_string(),
            Some("raw".to_string()),
            Some(vec!["billingCycleEndDateTime".to_string()]),
            Some(r#"{"billingCycleEndDateTime":"2024-07-04T23:59:59Z"}"#.to_string()),
            Some(r#"{"billingCycleEndDateTime":"2024-08-04T23:59:59Z"}"#.to_string()),
        )]
    );
    let versions = |pool: sqlx::PgPool| async move {
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pcsync.subscription_history WHERE subscription_id = $1",
        )
        .bind(nce)
        .fetch_one(&pool)
        .await
        .expect("versions");
        n
    };
    assert_eq!(
        versions(s.db.pool.clone()).await,
        1,
        "no new version for raw"
    );
    let stored_raw: String = sqlx::query_scalar(
        "SELECT raw->>'billingCycleEndDateTime' FROM pcsync.subscriptions WHERE subscription_id = $1",
    )
    .bind(nce)
    .fetch_one(&s.db.pool)
    .await
    .expect("raw");
    assert_eq!(stored_raw, "2024-08-04T23:59:59Z", "raw is kept current");

    s.sim
        .apply(set(
            "scheduledNextTermInstructions",
            serde_json::json!({"product": {"productId": "CFQ7TTC0LH18", "skuId": "0001",
                "availabilityId": "CFQ7TTC0P0WS", "billingCycle": "monthly", "termDuration": "P1Y"},
                "quantity": 7}),
        ))
        .expect("change");
    let report = pass(&s, &[]).await;
    let fields: Vec<(String, Option<String>)> = sqlx::query_as(
        "SELECT field, new_value FROM pcsync.change_events WHERE run_id = $1 ORDER BY field",
    )
    .bind(report.run_id)
    .fetch_all(&s.db.pool)
    .await
    .expect("events");
    let names: Vec<&str> = fields.iter().map(|f| f.0.as_str()).collect();
    assert_eq!(
        names,
        vec![
            "next_term_availability_id",
            "next_term_billing_cycle",
            "next_term_duration",
            "next_term_product_id",
            "next_term_quantity",
            "next_term_sku_id",
            "scheduled_next_term"
        ]
    );
    assert_eq!(versions(s.db.pool.clone()).await, 2, "a new version");
}

/// A date-only field is the same day whatever the session's time zone (a BI tool west of UTC
/// used to show the day before).
#[tokio::test]
async fn date_only_fields_read_the_same_day_in_every_time_zone() {
    let s = setup(SimConfig {
        customers: 1,
        ..SimConfig::default()
    })
    .await;
    pass(&s, &[]).await;
    for zone in ["America/Los_Angeles", "Asia/Tokyo", "UTC"] {
        let mut conn = s.db.pool.acquire().await.expect("conn");
        sqlx::query(&format!("SET TIME ZONE '{zone}'"))
            .execute(&mut *conn)
            .await
            .expect("zone");
        let (end, start, end_day_of_instant): (String, String, String) = sqlx::query_as(
            "SELECT commitment_end_date::text, effective_start_date::text,
                    commitment_end_date_time::date::text
             FROM pcsync.subscriptions WHERE subscription_id = 'bbbb1b1b-cc2c-dd3d-ee4e-ffffff5f5f5f'",
        )
        .fetch_one(&mut *conn)
        .await
        .expect("dates");
        assert_eq!(
            (end.as_str(), start.as_str()),
            ("2024-07-04", "2024-06-05"),
            "{zone}"
        );
        // The instant, by contrast, is a different day in Tokyo: why dates are dates.
        let want = if zone == "Asia/Tokyo" {
            "2024-07-05"
        } else {
            "2024-07-04"
        };
        assert_eq!(end_day_of_instant, want, "{zone}");
        sqlx::query("RESET TIME ZONE")
            .execute(&mut *conn)
            .await
            .expect("reset");
    }
}

/// Upgrading: rows stored before the new columns existed are filled from their raw JSON by
/// the migration, exactly as pcsync reads it, so the next pass reports nothing.
#[tokio::test]
async fn the_upgrade_fills_new_columns_so_the_next_pass_reports_nothing() {
    let s = setup(SimConfig {
        customers: 30,
        ..SimConfig::default()
    })
    .await;
    pass(&s, &[]).await;
    let filled = count(
        &s.db.pool,
        "SELECT count(*) FROM pcsync.subscriptions WHERE commitment_end_date_time IS NOT NULL
           AND refundable_quantity IS NOT NULL AND next_term_quantity IS NOT NULL",
    )
    .await;
    assert!(filled > 0, "the simulated data has the new fields");
    // Back to rows as an older pcsync left them, then the migration's fill.
    let migration = include_str!("../migrations/20261122000008_every_field_a_column.sql");
    let fill = &migration[migration
        .find("CREATE FUNCTION pg_temp.pcsync_text")
        .expect("functions")
        ..migration.find("-- backfill: end").expect("end")];
    // The columns migration 8 added: every field after publisher_name.
    let fields = pcsync::sync::resource::SUBSCRIPTION_FIELDS;
    let first_new = 1 + fields
        .iter()
        .position(|f| f.column == "publisher_name")
        .expect("publisher_name");
    let columns: Vec<&str> = fields[first_new..].iter().map(|f| f.column).collect();
    let mut conn = s.db.pool.acquire().await.expect("conn");
    sqlx::query(&format!(
        "UPDATE pcsync.subscriptions SET {}",
        columns
            .iter()
            .map(|c| format!("{c} = NULL"))
            .collect::<Vec<_>>()
            .join(", ")
    ))
    .execute(&mut *conn)
    .await
    .expect("older rows");
    sqlx::raw_sql(fill).execute(&mut *conn).await.expect("fill");
    drop(conn);
    let report = pass(&s, &[]).await;
    assert_eq!(report.status, RunStatus::Succeeded);
    assert_eq!(report.changes, 0, "no change that did not happen");
    assert_eq!(report.rows_written, 0);
}

/// `upcoming_renewals` and the license counts over time, on crafted rows with known answers.
#[tokio::test]
async fn renewals_and_license_counts_on_a_crafted_history() {
    let db = common::TestDb::migrated().await;
    let run = Uuid::new_v4();
    let customer = Uuid::new_v4();
    let setup_sql = format!(
        "INSERT INTO pcsync.sync_runs (run_id, trigger, status, finished_at) VALUES ('{run}', 'test', 'succeeded', now());
         INSERT INTO pcsync.customers (customer_id, company_name, source) VALUES ('{customer}', 'Contoso', 'file');
         INSERT INTO pcsync.subscriptions (customer_id, subscription_id, offer_id, offer_name, quantity, status,
                auto_renew_enabled, commitment_end_date, next_term_quantity, raw) VALUES
            ('{customer}', 'soon-renews', 'P1:0001:A1', 'E3', 10, 'active', true, current_date + 10, 12, '{{}}'),
            ('{customer}', 'soon-ends', 'P2:0001:A1', 'Teams', 4, 'active', false, current_date + 20, NULL, '{{}}'),
            ('{customer}', 'in-45-days', 'P1:0001:A1', 'E3', 7, 'active', true, current_date + 45, NULL, '{{}}'),
            ('{customer}', 'next-year', 'P1:0001:A1', 'E3', 1, 'active', true, current_date + 200, NULL, '{{}}'),
            ('{customer}', 'ended', 'P1:0001:A1', 'E3', 1, 'expired', false, current_date - 3, NULL, '{{}}');
         -- E3 licenses: 5 from January, 8 from 15 February, 0 (deleted) from 10 March 2026.
         INSERT INTO pcsync.subscription_history
                (customer_id, subscription_id, valid_from, valid_to, run_id, offer_id, offer_name, quantity, status) VALUES
            ('{customer}', 'soon-renews', '2026-01-01', '2026-02-15', '{run}', 'P1:0001:A1', 'E3', 5, 'active'),
            ('{customer}', 'soon-renews', '2026-02-15', '2026-03-10', '{run}', 'P1:0001:A1', 'E3', 8, 'active'),
            ('{customer}', 'soon-renews', '2026-03-10', NULL, '{run}', 'P1:0001:A1', 'E3', 8, 'deleted'),
            ('{customer}', 'soon-ends', '2026-02-01', NULL, '{run}', 'P2:0001:A1', 'Teams', 4, 'active');"
    );
    sqlx::raw_sql(&setup_sql)
        .execute(&db.pool)
        .await
        .expect("crafted rows");

    let renewals: Vec<(String, i32, String, bool, i64)> = sqlx::query_as(
        "SELECT subscription_id, days_left, window_days, auto_renews, licenses_after_renewal
         FROM pcsync.upcoming_renewals ORDER BY ends_on",
    )
    .fetch_all(&db.pool)
    .await
    .expect("renewals");
    assert_eq!(
        renewals,
        vec![
            ("soon-renews".into(), 10, "0-30".into(), true, 12),
            ("soon-ends".into(), 20, "0-30".into(), false, 0),
            ("in-45-days".into(), 45, "31-60".into(), true, 7),
            ("next-year".into(), 200, "later".into(), true, 1),
        ]
    );

    let at = |when: &'static str| {
        let pool = db.pool.clone();
        async move {
            let rows: Vec<(String, i64)> = sqlx::query_as(
                "SELECT offer_name, licenses FROM pcsync.license_counts_at($1::timestamptz)
                 ORDER BY offer_name",
            )
            .bind(when)
            .fetch_all(&pool)
            .await
            .expect("counts");
            rows
        }
    };
    assert_eq!(at("2025-12-31").await, vec![]);
    assert_eq!(at("2026-01-20").await, vec![("E3".to_string(), 5)]);
    assert_eq!(
        at("2026-03-01").await,
        vec![("E3".to_string(), 8), ("Teams".to_string(), 4)],
        "on 1 March"
    );
    assert_eq!(
        at("2026-03-10").await,
        vec![("Teams".to_string(), 4)],
        "deleted is not counted; valid_from is inclusive, valid_to exclusive"
    );

    let months: Vec<(chrono::NaiveDate, String, i64)> = sqlx::query_as(
        "SELECT month, offer_name, licenses FROM pcsync.license_counts_monthly
         WHERE month < '2026-04-01' ORDER BY month, offer_name",
    )
    .fetch_all(&db.pool)
    .await
    .expect("monthly");
    let day = |m: u32| chrono::NaiveDate::from_ymd_opt(2026, m, 1).expect("date");
    assert_eq!(
        months,
        vec![
            (day(1), "E3".into(), 5),
            (day(1), "Teams".into(), 4),
            (day(2), "E3".into(), 8),
            (day(2), "Teams".into(), 4),
            (day(3), "Teams".into(), 4),
        ]
    );
}

/// Every query of the README's "Questions you can ask" runs against a synced database.
#[tokio::test]
async fn the_readme_questions_run() {
    let s = setup(SimConfig {
        customers: 5,
        ..SimConfig::default()
    })
    .await;
    pass(&s, &[]).await;
    let readme = include_str!("../README.md");
    let start = readme
        .find("### Questions you can ask")
        .expect("the section");
    let block = &readme[start..];
    let sql_start = block.find("```sql").expect("a SQL block") + "```sql".len();
    let sql = &block[sql_start..sql_start + block[sql_start..].find("```").expect("its end")];
    let queries: Vec<&str> = sql
        .split(';')
        .map(str::trim)
        .filter(|q| {
            q.lines()
                .any(|l| !l.trim().is_empty() && !l.trim().starts_with("--"))
        })
        .collect();
    assert!(queries.len() >= 10, "{} queries", queries.len());
    for q in queries {
        sqlx::query(q)
            .fetch_all(&s.db.pool)
            .await
            .unwrap_or_else(|e| panic!("README query fails: {e}\n{q}"));
    }
}
