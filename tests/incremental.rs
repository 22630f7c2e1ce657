//! Incremental passes from the activity log (issue 11), against the simulator's log and a real
//! PostgreSQL: they record what a full pass would, say who made each change, miss only what
//! the log cannot see, and fall back to a full pass when they must.
#![cfg(feature = "simulator")]
#![allow(clippy::type_complexity)]

mod common;

use chrono::{DateTime, Utc};
use common::sim::{Setup, count, pass, pass_as, setup};
use pcsync::simulator::{
    Actor, Change, Endpoint, FaultKind, FaultRule, Knobs, SEED_MPN_ID, SimConfig,
};
use pcsync::sync::{PassChoice, PassKind, RunStatus};
use serde_json::json;
use uuid::Uuid;

type Event = (
    Uuid,
    String,
    String,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
);

async fn events(s: &Setup, run: Uuid) -> Vec<Event> {
    sqlx::query_as(
        "SELECT customer_id, entity, entity_id, kind, field, old_value, new_value
         FROM pcsync.change_events WHERE run_id = $1
         ORDER BY customer_id, entity, entity_id, kind, field",
    )
    .bind(run)
    .fetch_all(&s.db.pool)
    .await
    .expect("events")
}

/// The partner-made changes both setups get: a quantity edit, a status flip, a new and a
/// removed subscription, a removed managed service.
fn partner_changes(s: &Setup) -> usize {
    let ids = s.sim.customer_ids();
    let ours = |id: Uuid, n: usize| -> String {
        s.sim
            .customer(id)
            .expect("customer")
            .subscriptions
            .iter()
            .filter(|x| x["partnerId"] == SEED_MPN_ID)
            .nth(n)
            .and_then(|x| x["id"].as_str())
            .expect("a subscription")
            .to_string()
    };
    let set = |id: Uuid, field: &str, value: serde_json::Value| Change::SetSubscriptionField {
        customer_id: id,
        subscription_id: ours(id, 0),
        field: field.into(),
        value,
    };
    let changes = vec![
        set(ids[1], "quantity", json!(77)),
        set(ids[2], "status", json!("suspended")),
        Change::AddSubscription {
            customer_id: ids[3],
            subscription: None,
        },
        Change::RemoveSubscription {
            customer_id: ids[4],
            subscription_id: ours(ids[4], 1),
        },
        Change::RemoveManagedService {
            customer_id: ids[5],
            service_id: s.sim.customer(ids[5]).expect("c").managed_services[0]["id"]
                .as_str()
                .expect("id")
                .to_string(),
        },
    ];
    let n = changes.len();
    for c in changes {
        s.sim.apply(c).expect("change");
    }
    n
}

async fn synced(customers: u32) -> Setup {
    let s = setup(SimConfig {
        customers,
        ..SimConfig::default()
    })
    .await;
    let first = pass_as(&s, PassChoice::Auto, &[]).await;
    assert_eq!(first.kind, PassKind::Full, "no watermark yet");
    assert_eq!(first.status, RunStatus::Succeeded);
    s
}

#[tokio::test]
async fn an_incremental_pass_records_what_a_full_pass_would_and_who_made_it() {
    let (a, b) = (synced(30).await, synced(30).await);
    assert_eq!(partner_changes(&a), partner_changes(&b));
    a.sim.reset_stats();
    let inc = pass_as(&a, PassChoice::Auto, &[]).await;
    let full = pass(&b, &[]).await;
    assert_eq!(inc.kind, PassKind::Incremental);
    assert_eq!(inc.status, RunStatus::Succeeded);
    let (inc_events, full_events) = (events(&a, inc.run_id).await, events(&b, full.run_id).await);
    assert!(!full_events.is_empty());
    assert_eq!(inc_events, full_events, "the same events as a full pass");
    // Only the log and the five changed customers were asked for.
    let stats = a.sim.stats();
    assert_eq!(stats.total(Endpoint::AuditRecords), 1);
    assert_eq!(inc.customers_total, 5);
    assert_eq!(inc.api_requests, 1 + 3 * 5);
    assert_eq!(
        full.api_requests,
        1 + 3 * 30,
        "a full pass reads the log too, to say who made its changes"
    );
    assert_eq!(full.attributed, 4);
    // Who made each subscription change.
    let attributed: Vec<(
        String,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<DateTime<Utc>>,
    )> = sqlx::query_as(
        "SELECT entity, changed_by, changed_via, operation, operation_at
             FROM pcsync.change_events WHERE run_id = $1 ORDER BY entity, entity_id",
    )
    .bind(inc.run_id)
    .fetch_all(&a.db.pool)
    .await
    .expect("attribution");
    for (entity, by, via, op, at) in &attributed {
        if entity == "subscription" {
            assert_eq!(
                by.as_deref(),
                Some("admin@simulated-partner.onmicrosoft.com")
            );
            assert_eq!(via.as_deref(), Some(pcsync::simulator::SIM_CLIENT_ID));
            assert!(op.is_some() && at.is_some());
        }
    }
    let operations: Vec<String> = sqlx::query_scalar(
        "SELECT DISTINCT operation FROM pcsync.change_events WHERE run_id = $1 AND operation IS NOT NULL ORDER BY 1",
    )
    .bind(inc.run_id)
    .fetch_all(&a.db.pool)
    .await
    .expect("operations");
    assert_eq!(
        operations,
        vec!["cancel_subscription", "create_order", "update_subscription"]
    );
    assert_eq!(inc.attributed, 4, "the four subscription changes");
    // The records are kept, their serialized resources parsed.
    let quantity: Option<i64> = sqlx::query_scalar(
        "SELECT (resource_new_value->>'Quantity')::bigint FROM pcsync.activity_log
         WHERE operation_type = 'update_subscription' AND resource_new_value ? 'Quantity'",
    )
    .fetch_one(&a.db.pool)
    .await
    .expect("record");
    assert_eq!(quantity, Some(77));
    // And a full pass afterwards finds nothing the incremental one missed.
    let after = pass(&a, &[]).await;
    assert_eq!(after.changes, 0);
}

#[tokio::test]
async fn a_system_change_is_missed_by_incremental_and_caught_by_the_next_full_pass() {
    let s = synced(6).await;
    let id = s.sim.customer_ids()[2];
    let sub = s.sim.customer(id).expect("c").subscriptions[0]["id"]
        .as_str()
        .expect("id")
        .to_string();
    // A renewal: Microsoft moves the term's end; nobody at the partner did anything.
    s.sim
        .apply_as(
            Change::SetSubscriptionField {
                customer_id: id,
                subscription_id: sub.clone(),
                field: "commitmentEndDate".into(),
                value: json!("2031-01-01T00:00:00Z"),
            },
            &Actor::System,
        )
        .expect("renewal");
    let inc = pass_as(&s, PassChoice::Incremental, &[]).await;
    assert_eq!(inc.kind, PassKind::Incremental);
    assert_eq!(inc.changes, 0, "the log cannot see it");
    assert_eq!(inc.customers_total, 0);
    let full = pass_as(&s, PassChoice::Full, &[]).await;
    let caught = events(&s, full.run_id).await;
    assert_eq!(caught.len(), 1);
    assert_eq!(caught[0].4.as_deref(), Some("commitment_end_date"));
    let by: Option<String> =
        sqlx::query_scalar("SELECT changed_by FROM pcsync.change_events WHERE run_id = $1")
            .bind(full.run_id)
            .fetch_one(&s.db.pool)
            .await
            .expect("event");
    assert_eq!(by, None, "no record explains a renewal");
}

async fn watermark(s: &Setup) -> Option<DateTime<Utc>> {
    sqlx::query_scalar(
        "SELECT max(activity_read_through) FROM pcsync.sync_runs WHERE status IN ('succeeded', 'partial')",
    )
    .fetch_one(&s.db.pool)
    .await
    .expect("watermark")
}

#[tokio::test]
async fn the_watermark_does_not_advance_on_a_failed_pass() {
    let s = synced(4).await;
    let before = watermark(&s).await;
    assert!(before.is_some());
    partner_changes_small(&s);
    // No customer can succeed: MFA is required now.
    s.sim.set_knobs(Knobs {
        faults: vec![FaultRule::always(FaultKind::MfaRequired).on(Endpoint::Subscriptions)],
        ..Knobs::default()
    });
    let failed = pass_as(&s, PassChoice::Incremental, &[]).await;
    assert_eq!(failed.status, RunStatus::Failed);
    assert_eq!(watermark(&s).await, before, "not advanced");
    // The next pass reads the same window again and catches the change.
    s.sim.set_knobs(Knobs::default());
    let next = pass_as(&s, PassChoice::Incremental, &[]).await;
    assert_eq!(next.status, RunStatus::Succeeded);
    assert_eq!(next.changes, 1);
    assert!(watermark(&s).await > before);
}

fn partner_changes_small(s: &Setup) {
    common::sim::set_quantity(s, s.sim.customer_ids()[1], 4242);
}

#[tokio::test]
async fn a_watermark_older_than_the_log_keeps_falls_back_to_a_full_pass() {
    let s = synced(3).await;
    sqlx::query(
        "UPDATE pcsync.sync_runs SET activity_read_through = now() - interval '91 days',
            started_at = now() - interval '91 days'",
    )
    .execute(&s.db.pool)
    .await
    .expect("age the ledger");
    s.sim.reset_stats();
    let report = pass_as(&s, PassChoice::Incremental, &[]).await;
    assert_eq!(report.kind, PassKind::Full);
    assert_eq!(report.customers_total, 3);
    assert_eq!(
        s.sim.stats().total(Endpoint::AuditRecords),
        0,
        "the log is not asked for a range it no longer keeps"
    );
    assert!(
        watermark(&s)
            .await
            .is_some_and(|w| Utc::now() - w < chrono::Duration::minutes(5))
    );
}

#[tokio::test]
async fn a_customer_new_to_the_list_is_fetched_by_an_incremental_pass() {
    let s = synced(3).await;
    // Added to the list without any activity record naming it.
    let added = s
        .sim
        .apply_as(Change::AddCustomer, &Actor::System)
        .expect("customer")[0]
        .customer_id;
    std::fs::write(&s.csv, s.sim.customers_csv()).expect("csv");
    let report = pass_as(&s, PassChoice::Incremental, &[]).await;
    assert_eq!(report.kind, PassKind::Incremental);
    let stored = count(
        &s.db.pool,
        &format!("SELECT count(*) FROM pcsync.subscriptions WHERE customer_id = '{added}'"),
    )
    .await;
    assert!(stored > 0, "the new customer's subscriptions are stored");
    let status: String =
        sqlx::query_scalar("SELECT last_status FROM pcsync.customers WHERE customer_id = $1")
            .bind(added)
            .fetch_one(&s.db.pool)
            .await
            .expect("customer");
    assert_eq!(status, "succeeded");
}
