//! The sync end to end: a real PostgreSQL database per test and the simulator over HTTP.
#![cfg(feature = "simulator")]
// Row tuples read straight from SQL are clearer inline than behind aliases.
#![allow(clippy::type_complexity)]

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::sim::{count, env, pass, pcsync_command, setup};
use pcsync::partner_center::fields::Kind;
use pcsync::simulator::{Change, FaultKind, FaultRule, Knobs, SimConfig, Simulator};
use pcsync::sync::RunStatus;
use pcsync::sync::diff::Entity;
use pcsync::sync::resource::ManagedService;
use pcsync::sync::resource::Subscription;
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

fn object(v: &Value) -> serde_json::Map<String, Value> {
    v.as_object().cloned().unwrap_or_default()
}

/// What a correct sync must hold for a customer: the simulator's objects, typed the same way.
fn expected(sim: &Simulator, id: Uuid) -> (Vec<Subscription>, Vec<ManagedService>) {
    let c = sim.customer(id).expect("customer");
    let subs = c
        .subscriptions
        .iter()
        .filter(|s| s["partnerId"] == pcsync::simulator::SEED_MPN_ID)
        .map(|s| Subscription::from_json(s.clone()).expect("valid"))
        .collect();
    let services = c
        .managed_services
        .iter()
        .map(|s| ManagedService::from_json(s.clone()).expect("valid"))
        .collect();
    (subs, services)
}

type Row = (String, Vec<Option<String>>, Value);

/// Stored present rows of a customer as (id, business fields as text, raw).
async fn stored_subscriptions(pool: &PgPool, customer: Uuid) -> Vec<Row> {
    let rows: Vec<(String, Value)> = sqlx::query_as(
        "SELECT subscription_id, to_jsonb(s) FROM pcsync.subscriptions s
         WHERE customer_id = $1 AND removed_at IS NULL ORDER BY subscription_id",
    )
    .bind(customer)
    .fetch_all(pool)
    .await
    .expect("rows");
    rows.into_iter()
        .map(|(id, row)| {
            let fields = Subscription::FIELDS
                .iter()
                .map(|f| match (&row[f.column], f.kind) {
                    (Value::Null, _) => None,
                    (Value::String(s), Kind::Timestamp) => Some(normalize_ts(s)),
                    (Value::String(s), _) => Some(s.clone()),
                    (other, _) => Some(other.to_string()),
                })
                .collect();
            (id, fields, row["raw"].clone())
        })
        .collect()
}

/// PostgreSQL's to_jsonb writes timestamps as 2024-06-05T19:26:38.366763+00:00.
fn normalize_ts(s: &str) -> String {
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|d| {
            d.to_utc()
                .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
        })
        .unwrap_or_else(|_| s.to_string())
}

#[tokio::test]
async fn the_first_sync_stores_exactly_what_partner_center_holds() {
    let s = setup(SimConfig {
        customers: 40,
        ..SimConfig::default()
    })
    .await;
    let report = pass(&s, &[]).await;
    assert_eq!(report.status, RunStatus::Succeeded);
    assert_eq!(report.customers_succeeded, 40);
    assert_eq!(
        report.api_requests, 120,
        "three requests per customer: subscriptions, managed services, subscribed SKUs"
    );

    let mut total_subs = 0;
    for id in s.sim.customer_ids() {
        let (subs, services) = expected(&s.sim, id);
        total_subs += subs.len();
        let mut want: Vec<Row> = subs
            .iter()
            .map(|x| {
                let raw: Value = serde_json::from_str(x.raw.get()).expect("raw");
                (x.id.clone(), Entity::values(x), raw)
            })
            .collect();
        want.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            stored_subscriptions(&s.db.pool, id).await,
            want,
            "customer {id}"
        );

        let stored: Vec<(String, Option<String>, Option<String>, Option<String>, Value)> =
            sqlx::query_as(
                "SELECT service_id, name, group_name, admin_service_uri, raw FROM pcsync.managed_services
                 WHERE customer_id = $1 ORDER BY service_id",
            )
            .bind(id)
            .fetch_all(&s.db.pool)
            .await
            .expect("services");
        let mut want: Vec<_> = services
            .iter()
            .map(|m| {
                (
                    m.id.clone(),
                    m.text("name").map(str::to_string),
                    m.text("group_name").map(str::to_string),
                    m.text("admin_service_uri").map(str::to_string),
                    serde_json::from_str::<Value>(m.raw.get()).expect("json"),
                )
            })
            .collect();
        want.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(stored, want, "managed services of {id}");
    }
    // Every row has its history version and its 'added' event.
    assert_eq!(
        count(
            &s.db.pool,
            "SELECT count(*) FROM pcsync.subscription_history WHERE valid_to IS NULL"
        )
        .await,
        total_subs as i64
    );
    let added = count(
        &s.db.pool,
        "SELECT count(*) FROM pcsync.change_events WHERE kind = 'added'",
    )
    .await;
    assert_eq!(added as u64, report.changes);
    let (name, status): (Option<String>, String) = sqlx::query_as(
        "SELECT company_name, last_status FROM pcsync.customers WHERE customer_id = $1",
    )
    .bind(s.sim.customer_ids()[0])
    .fetch_one(&s.db.pool)
    .await
    .expect("customer");
    assert_eq!(name.as_deref(), Some("Contoso Seed Customer"));
    assert_eq!(status, "succeeded");
}

/// (rows, newest writing transaction) of a table: any insert or update raises the second,
/// since every write stamps its row with a newer transaction id than all before it.
async fn write_mark(pool: &PgPool, table: &str) -> (i64, i64) {
    sqlx::query_as(&format!(
        "SELECT count(*), coalesce(max(xmin::text::bigint), 0) FROM pcsync.{table}"
    ))
    .fetch_one(pool)
    .await
    .expect("mark")
}

#[tokio::test]
async fn a_resync_without_change_writes_nothing() {
    let s = setup(SimConfig {
        customers: 30,
        ..SimConfig::default()
    })
    .await;
    pass(&s, &[]).await;
    let xmins: Vec<String> = sqlx::query_scalar(
        "SELECT xmin::text FROM pcsync.subscriptions ORDER BY customer_id, subscription_id",
    )
    .fetch_all(&s.db.pool)
    .await
    .expect("xmin");
    // Every table but the run ledger: a pass with nothing to say writes nothing, per-customer
    // state included (freshness comes from the run ledger).
    let tables = [
        "customers",
        "subscriptions",
        "managed_services",
        "subscription_history",
        "change_events",
        "sync_errors",
    ];
    let mut before = Vec::new();
    for t in tables {
        before.push(write_mark(&s.db.pool, t).await);
    }
    let report = pass(&s, &[]).await;
    assert_eq!(report.status, RunStatus::Succeeded);
    assert_eq!(report.changes, 0);
    assert_eq!(report.rows_written, 0);
    for (t, b) in tables.iter().zip(before) {
        assert_eq!(write_mark(&s.db.pool, t).await, b, "rows written to {t}");
    }
    let after: Vec<String> = sqlx::query_scalar(
        "SELECT xmin::text FROM pcsync.subscriptions ORDER BY customer_id, subscription_id",
    )
    .fetch_all(&s.db.pool)
    .await
    .expect("xmin");
    assert_eq!(xmins, after, "no row was rewritten");
}

type Event = (
    String,
    String,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
);

async fn events_of_run(pool: &PgPool, run: Uuid) -> Vec<Event> {
    sqlx::query_as(
        "SELECT entity, entity_id, kind, field, old_value, new_value FROM pcsync.change_events
         WHERE run_id = $1 AND entity <> 'subscribed_sku' ORDER BY entity, entity_id, kind, field",
    )
    .bind(run)
    .fetch_all(pool)
    .await
    .expect("events")
}

#[tokio::test]
async fn targeted_changes_give_exactly_the_expected_events_and_history() {
    let s = setup(SimConfig {
        customers: 10,
        ..SimConfig::default()
    })
    .await;
    pass(&s, &[]).await;
    let ids = s.sim.customer_ids();
    let seed = ids[0];
    let legacy = "aaaa0a0a-bb1b-cc2c-dd3d-eeeeee4e4e4e";
    let nce = "bbbb1b1b-cc2c-dd3d-ee4e-ffffff5f5f5f";
    let set = |sub: &str, field: &str, value: Value| Change::SetSubscriptionField {
        customer_id: seed,
        subscription_id: sub.to_string(),
        field: field.to_string(),
        value,
    };
    s.sim
        .apply(set(legacy, "status", json!("suspended")))
        .expect("status");
    s.sim
        .apply(set(legacy, "quantity", json!(9)))
        .expect("quantity");
    s.sim
        .apply(set(nce, "commitmentEndDate", json!("2025-07-04T00:00:00Z")))
        .expect("renewal");
    s.sim
        .apply(set(nce, "renewalTermDuration", json!("P1Y")))
        .expect("term");
    let removed_service = s
        .sim
        .apply(Change::RemoveManagedService {
            customer_id: ids[1],
            service_id: s.sim.customer(ids[1]).expect("c").managed_services[0]["id"]
                .as_str()
                .expect("id")
                .to_string(),
        })
        .expect("remove service");
    let c2 = s.sim.customer(ids[2]).expect("c");
    let gone = c2
        .subscriptions
        .iter()
        .find(|x| x["partnerId"] == pcsync::simulator::SEED_MPN_ID)
        .expect("one of ours")["id"]
        .as_str()
        .expect("id")
        .to_string();
    let gone_object = c2
        .subscriptions
        .iter()
        .find(|x| x["id"] == gone.as_str())
        .cloned()
        .expect("object");
    s.sim
        .apply(Change::RemoveSubscription {
            customer_id: ids[2],
            subscription_id: gone.clone(),
        })
        .expect("remove");
    let mut added = s
        .sim
        .apply(Change::AddSubscription {
            customer_id: ids[3],
            subscription: None,
        })
        .expect("add");
    let added_id = added.remove(0).entity_id;
    // The added one may belong to another partner; make it ours so the filter keeps it.
    s.sim
        .apply(Change::SetSubscriptionField {
            customer_id: ids[3],
            subscription_id: added_id.clone(),
            field: "partnerId".into(),
            value: json!(pcsync::simulator::SEED_MPN_ID),
        })
        .expect("ours");

    let report = pass(&s, &[]).await;
    assert_eq!(report.status, RunStatus::Succeeded);
    let mut want: Vec<Event> = vec![
        (
            "managed_service".into(),
            removed_service[0].entity_id.clone(),
            "removed".into(),
            None,
            None,
            None,
        ),
        (
            "subscription".into(),
            added_id.clone(),
            "added".into(),
            None,
            None,
            None,
        ),
        (
            "subscription".into(),
            gone.clone(),
            "removed".into(),
            None,
            None,
            None,
        ),
        (
            "subscription".into(),
            legacy.into(),
            "changed".into(),
            Some("quantity".into()),
            Some("5".into()),
            Some("9".into()),
        ),
        (
            "subscription".into(),
            legacy.into(),
            "changed".into(),
            Some("status".into()),
            Some("active".into()),
            Some("suspended".into()),
        ),
        (
            "subscription".into(),
            nce.into(),
            "changed".into(),
            Some("commitment_end_date".into()),
            Some("2024-07-04".into()),
            Some("2025-07-04".into()),
        ),
        (
            "subscription".into(),
            nce.into(),
            "changed".into(),
            Some("renewal_term_duration".into()),
            None,
            Some("P1Y".into()),
        ),
    ];
    want.sort();
    assert_eq!(events_of_run(&s.db.pool, report.run_id).await, want);
    // The licence counts follow the subscriptions (the simulator derives them): their events
    // come on top, one per changed count.
    let sku_events = common::sim::count(
        &s.db.pool,
        &format!(
            "SELECT count(*) FROM pcsync.change_events WHERE run_id = '{}' AND entity = 'subscribed_sku'",
            report.run_id
        ),
    )
    .await;
    assert!(sku_events > 0);
    assert_eq!(report.changes, 7 + sku_events as u64);

    // History: the changed subscriptions have a closed and an open version, the removed one a
    // closed version only, the added one an open version.
    let versions = |sub: String| {
        let pool = s.db.pool.clone();
        async move {
            sqlx::query_as::<_, (Option<String>, Option<i64>, bool)>(
                "SELECT status, quantity, valid_to IS NULL FROM pcsync.subscription_history
                 WHERE subscription_id = $1 ORDER BY valid_from",
            )
            .bind(sub)
            .fetch_all(&pool)
            .await
            .expect("history")
        }
    };
    assert_eq!(
        versions(legacy.into()).await,
        vec![
            (Some("active".into()), Some(5), false),
            (Some("suspended".into()), Some(9), true)
        ]
    );
    assert_eq!(versions(gone.clone()).await.len(), 1);
    assert!(!versions(gone.clone()).await[0].2, "closed");
    assert_eq!(versions(added_id.clone()).await.len(), 1);
    let removed_at: Option<chrono::DateTime<chrono::Utc>> = sqlx::query_scalar(
        "SELECT removed_at FROM pcsync.subscriptions WHERE subscription_id = $1",
    )
    .bind(&gone)
    .fetch_one(&s.db.pool)
    .await
    .expect("kept, marked");
    assert!(removed_at.is_some());

    // It comes back: added again, a new history version, removed_at cleared.
    s.sim
        .apply(Change::AddSubscription {
            customer_id: ids[2],
            subscription: Some(object(&Value::Object(gone_object))),
        })
        .expect("back");
    let report = pass(&s, &[]).await;
    let events = events_of_run(&s.db.pool, report.run_id).await;
    assert_eq!(
        events,
        vec![(
            "subscription".into(),
            gone.clone(),
            "added".into(),
            None,
            None,
            None
        )]
    );
    assert_eq!(versions(gone.clone()).await.len(), 2);
    assert_eq!(
        count(
            &s.db.pool,
            "SELECT count(*) FROM pcsync.subscriptions WHERE removed_at IS NOT NULL"
        )
        .await,
        0
    );
    // The reporting views show it.
    let in_view = count(
        &s.db.pool,
        &format!(
            "SELECT count(*) FROM pcsync.current_subscriptions WHERE subscription_id = '{gone}'"
        ),
    )
    .await;
    assert_eq!(in_view, 1);
}

#[tokio::test]
async fn failing_customers_keep_their_data_and_the_others_go_on() {
    let s = setup(SimConfig {
        customers: 12,
        ..SimConfig::default()
    })
    .await;
    pass(&s, &[]).await;
    let ids = s.sim.customer_ids();
    let before: Vec<Vec<Row>> = {
        let mut v = Vec::new();
        for id in &ids[1..5] {
            v.push(stored_subscriptions(&s.db.pool, *id).await);
        }
        v
    };
    // Customer 1 unknown (404), 2 relationship removed (403 20002), 3 always 500, 4 malformed.
    // Meanwhile every customer loses a subscription in Partner Center: only the healthy ones
    // may report it removed.
    for id in &ids {
        let c = s.sim.customer(*id).expect("c");
        if let Some(sub) = c
            .subscriptions
            .iter()
            .find(|x| x["partnerId"] == pcsync::simulator::SEED_MPN_ID)
        {
            s.sim
                .apply(Change::RemoveSubscription {
                    customer_id: *id,
                    subscription_id: sub["id"].as_str().expect("id").to_string(),
                })
                .expect("remove");
        }
    }
    s.sim
        .apply(Change::RemoveRelationship {
            customer_id: ids[2],
        })
        .expect("403");
    s.sim.set_knobs(Knobs {
        faults: vec![
            FaultRule::always(FaultKind::Status500).for_customer(ids[3]),
            FaultRule::always(FaultKind::Malformed).for_customer(ids[4]),
        ],
        ..Knobs::default()
    });
    // Customer 1 is replaced in the file by an id Partner Center does not know.
    let unknown = Uuid::new_v4();
    let text = std::fs::read_to_string(&s.csv)
        .expect("csv")
        .replace(&ids[1].to_string(), &unknown.to_string());
    std::fs::write(&s.csv, text).expect("csv");
    let report = pass(&s, &[]).await;
    assert_eq!(report.status, RunStatus::Partial);
    assert_eq!(report.customers_failed, 4);
    assert_eq!(report.customers_succeeded, 8);
    let exit = pcsync::cli::pass_exit(&report, None);
    assert_eq!(exit.code(), 2);

    for (i, id) in ids[2..5].iter().enumerate() {
        assert_eq!(
            stored_subscriptions(&s.db.pool, *id).await,
            before[i + 1],
            "customer {id} kept its data"
        );
        let removed: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pcsync.change_events WHERE customer_id = $1 AND kind = 'removed'",
        )
        .bind(id)
        .fetch_one(&s.db.pool)
        .await
        .expect("count");
        assert_eq!(removed, 0, "no removal read into a failed fetch");
    }
    // The healthy ones did see their removals.
    let removed_healthy = count(
        &s.db.pool,
        "SELECT count(DISTINCT customer_id) FROM pcsync.change_events WHERE kind = 'removed'",
    )
    .await;
    assert!(removed_healthy >= 7, "{removed_healthy}");

    let errors: Vec<(
        Option<Uuid>,
        String,
        Option<i32>,
        Option<String>,
        Option<String>,
    )> = sqlx::query_as(
        "SELECT customer_id, operation, http_status, error_code, request_id FROM pcsync.sync_errors
         WHERE run_id = $1 ORDER BY http_status NULLS LAST",
    )
    .bind(report.run_id)
    .fetch_all(&s.db.pool)
    .await
    .expect("errors");
    let by_customer: HashMap<Uuid, (Option<i32>, Option<String>, bool)> = errors
        .iter()
        .filter_map(|(c, _, st, code, rid)| c.map(|c| (c, (*st, code.clone(), rid.is_some()))))
        .collect();
    assert_eq!(by_customer[&unknown].0, Some(404));
    assert_eq!(
        by_customer[&ids[2]],
        (Some(403), Some("20002".into()), true)
    );
    assert_eq!(by_customer[&ids[3]].0, Some(500));
    assert_eq!(by_customer[&ids[4]].0, Some(200), "malformed body on a 200");
    let (status, error): (String, Option<String>) = sqlx::query_as(
        "SELECT last_status, last_error FROM pcsync.customers WHERE customer_id = $1",
    )
    .bind(ids[2])
    .fetch_one(&s.db.pool)
    .await
    .expect("customer");
    assert_eq!(status, "failed");
    assert!(error.is_some_and(|e| e.contains("no relationship")));
    // The customer replaced in the file has left the list and keeps its data.
    let left: Option<chrono::DateTime<chrono::Utc>> =
        sqlx::query_scalar("SELECT left_list_at FROM pcsync.customers WHERE customer_id = $1")
            .bind(ids[1])
            .fetch_one(&s.db.pool)
            .await
            .expect("kept");
    assert!(left.is_some());
    assert_eq!(stored_subscriptions(&s.db.pool, ids[1]).await, before[0]);
}

#[tokio::test]
async fn bad_lines_of_the_customer_file_are_reported_and_skipped() {
    let s = setup(SimConfig {
        customers: 5,
        ..SimConfig::default()
    })
    .await;
    let ids = s.sim.customer_ids();
    let text = format!(
        "customer_id,mpn_id,name\n{},4847383,A\nnot-a-guid,4847383,B\n{},12x,C\n{},,D\n{},4847383,A again\n",
        ids[0], ids[1], ids[2], ids[0]
    );
    std::fs::write(&s.csv, text).expect("csv");
    let report = pass(&s, &[("PCSYNC__CUSTOMERS__DEFAULT_MPN_ID", "4847383")]).await;
    assert_eq!(report.status, RunStatus::Succeeded);
    assert_eq!(report.customers_total, 2);
    assert_eq!(report.customers_succeeded, 2);
    let messages: Vec<String> = sqlx::query_scalar(
        "SELECT message FROM pcsync.sync_errors WHERE run_id = $1 AND operation = 'read_customer_file' ORDER BY error_id",
    )
    .bind(report.run_id)
    .fetch_all(&s.db.pool)
    .await
    .expect("errors");
    assert_eq!(messages.len(), 3, "{messages:?}");
    assert!(messages[0].contains("line 3") && messages[0].contains("not a GUID"));
    assert!(messages[1].contains("line 4") && messages[1].contains("Partner ID"));
    assert!(messages[2].contains("line 6") && messages[2].contains("repeats line 2"));
    let mpn: Option<String> =
        sqlx::query_scalar("SELECT mpn_id FROM pcsync.customers WHERE customer_id = $1")
            .bind(ids[2])
            .fetch_one(&s.db.pool)
            .await
            .expect("customer");
    assert_eq!(mpn.as_deref(), Some("4847383"), "default mpn id filled in");
}

#[tokio::test]
async fn app_only_mode_skips_managed_services_and_keeps_the_stored_ones() {
    let s = setup(SimConfig {
        customers: 5,
        ..SimConfig::default()
    })
    .await;
    pass(&s, &[]).await;
    let services = count(&s.db.pool, "SELECT count(*) FROM pcsync.managed_services").await;
    assert!(services > 0);
    let report = pass(&s, &[("PCSYNC__AUTH__MODE", "app_only")]).await;
    assert_eq!(report.status, RunStatus::Succeeded);
    assert_eq!(
        report.api_requests,
        1 + 5,
        "the activity log (for who changed what), then subscriptions only"
    );
    assert_eq!(report.changes, 0, "nothing removed");
    assert_eq!(
        count(
            &s.db.pool,
            "SELECT count(*) FROM pcsync.managed_services WHERE removed_at IS NULL"
        )
        .await,
        services
    );
}

#[tokio::test]
async fn bad_credentials_fail_the_run_once_not_every_customer() {
    let s = setup(SimConfig {
        customers: 5,
        ..SimConfig::default()
    })
    .await;
    let report = pass(&s, &[("PCSYNC__AUTH__CLIENT_SECRET", "wrong")]).await;
    assert_eq!(report.status, RunStatus::Failed);
    assert!(
        report
            .error
            .as_deref()
            .is_some_and(|e| e.contains("invalid_client"))
    );
    assert_eq!(report.api_requests, 0);
    let (status, error): (String, Option<String>) =
        sqlx::query_as("SELECT status, error FROM pcsync.sync_runs WHERE run_id = $1")
            .bind(report.run_id)
            .fetch_one(&s.db.pool)
            .await
            .expect("run");
    assert_eq!(status, "failed");
    assert!(
        error.is_some_and(|e| !e.contains("wrong")),
        "no secret in the ledger"
    );
}

#[tokio::test]
async fn the_customer_list_can_come_from_partner_center() {
    let s = setup(SimConfig {
        customers: 23,
        ..SimConfig::default()
    })
    .await;
    let report = pass(
        &s,
        &[
            ("PCSYNC__CUSTOMERS__SOURCE", "api"),
            ("PCSYNC__CUSTOMERS__PAGE_SIZE", "5"),
        ],
    )
    .await;
    assert_eq!(report.status, RunStatus::Succeeded);
    assert_eq!(report.customers_total, 23);
    assert_eq!(report.api_requests, 5 + 3 * 23);
    let (source, domain): (String, Option<String>) =
        sqlx::query_as("SELECT source, domain FROM pcsync.customers WHERE customer_id = $1")
            .bind(s.sim.customer_ids()[1])
            .fetch_one(&s.db.pool)
            .await
            .expect("customer");
    assert_eq!(source, "api");
    assert!(domain.is_some_and(|d| d.ends_with(".onmicrosoft.com")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_concurrent_runs_one_runs_the_other_says_so() {
    let s = setup(SimConfig {
        customers: 20,
        knobs: Knobs {
            latency_ms: 100,
            ..Knobs::default()
        },
        ..SimConfig::default()
    })
    .await;
    let slow = [("PCSYNC__PARTNER_CENTER__MAX_CONCURRENCY", "2")];
    let first = pcsync_command(&s, &slow).spawn().expect("first");
    tokio::time::sleep(Duration::from_millis(700)).await;
    let second = pcsync_command(&s, &slow).output().await.expect("second");
    let first = first.wait_with_output().await.expect("first ends");
    assert_eq!(
        first.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert_eq!(second.status.code(), Some(3));
    let said = String::from_utf8_lossy(&second.stderr);
    assert!(
        said.contains("another pcsync pass of partner tenant \"default\" holds its lock"),
        "{said}"
    );
    assert_eq!(
        count(&s.db.pool, "SELECT count(*) FROM pcsync.sync_runs").await,
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_run_interrupts_cleanly() {
    let s = setup(SimConfig {
        customers: 60,
        knobs: Knobs {
            latency_ms: 150,
            ..Knobs::default()
        },
        ..SimConfig::default()
    })
    .await;
    let child = pcsync_command(&s, &[("PCSYNC__PARTNER_CENTER__MAX_CONCURRENCY", "2")])
        .spawn()
        .expect("spawn");
    let pid = child.id().expect("pid");
    // Let a few customers finish, then stop it.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let killed = tokio::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .await
        .expect("kill");
    assert!(killed.success());
    let out = child.wait_with_output().await.expect("ends");
    assert_eq!(
        out.status.code(),
        Some(143),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let (status, succeeded, finished): (String, i32, bool) = sqlx::query_as(
        "SELECT status, customers_succeeded, finished_at IS NOT NULL FROM pcsync.sync_runs",
    )
    .fetch_one(&s.db.pool)
    .await
    .expect("run");
    assert_eq!(status, "interrupted");
    assert!(finished);
    assert!(succeeded > 0 && succeeded < 60, "{succeeded}");
    // Every customer is all or nothing: synced with all its rows, or untouched.
    for id in s.sim.customer_ids() {
        let last: String =
            sqlx::query_scalar("SELECT last_status FROM pcsync.customers WHERE customer_id = $1")
                .bind(id)
                .fetch_one(&s.db.pool)
                .await
                .expect("customer");
        let rows = stored_subscriptions(&s.db.pool, id).await.len();
        let history: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pcsync.subscription_history WHERE customer_id = $1",
        )
        .bind(id)
        .fetch_one(&s.db.pool)
        .await
        .expect("history");
        let want = expected(&s.sim, id).0.len();
        match last.as_str() {
            "succeeded" => {
                assert_eq!(rows, want, "{id}");
                assert_eq!(history as usize, want, "{id}");
            }
            "never" => {
                assert_eq!(rows, 0, "{id}");
                assert_eq!(history, 0, "{id}");
            }
            other => panic!("customer {id} ended {other}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_runs_on_its_schedule_without_overlapping_itself() {
    let s = setup(SimConfig {
        customers: 5,
        ..SimConfig::default()
    })
    .await;
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_pcsync"));
    cmd.arg("run")
        .env_remove("DATABASE_URL")
        .envs(env(&s, &[("PCSYNC__SYNC__SCHEDULE", "*/2 * * * * *")]))
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let child = cmd.spawn().expect("spawn");
    let pid = child.id().expect("pid");
    let mut runs = 0;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        runs = count(
            &s.db.pool,
            "SELECT count(*) FROM pcsync.sync_runs WHERE trigger = 'schedule' AND status = 'succeeded'",
        )
        .await;
        if runs >= 2 {
            break;
        }
    }
    assert!(runs >= 2, "two scheduled passes within 20 s, saw {runs}");
    tokio::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .await
        .expect("kill");
    let out = child.wait_with_output().await.expect("ends");
    assert_eq!(
        out.status.code(),
        Some(143),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let overlapping = count(
        &s.db.pool,
        "SELECT count(*) FROM pcsync.sync_runs a JOIN pcsync.sync_runs b
           ON a.run_id <> b.run_id AND a.started_at < b.started_at AND b.started_at < a.finished_at",
    )
    .await;
    assert_eq!(overlapping, 0);
    // Fired on even seconds, as the expression says.
    let odd: i64 = count(
        &s.db.pool,
        "SELECT count(*) FROM pcsync.sync_runs WHERE floor(extract(second FROM started_at))::int % 2 = 1",
    )
    .await;
    assert_eq!(odd, 0);
}
