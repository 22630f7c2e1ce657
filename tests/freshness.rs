//! Freshness between full passes (issue 15), on one clock shared by the simulator and the pass:
//! what Microsoft changes on a date is seen by the next incremental pass, an incomplete or
//! partly unreadable customer list marks nobody as having left, and an hourly worker announces
//! an ending once per threshold.
#![cfg(feature = "simulator")]

mod common;

use chrono::{DateTime, Duration, NaiveDate, Utc};
use common::sim::{Setup, count, our_subscription, pass, pass_as, setup};
use pcsync::clock::Clock;
use pcsync::simulator::{Actor, Change, FaultKind, FaultRule, Knobs, SimConfig};
use pcsync::sync::{PassChoice, PassKind, PassReport, RunStatus};
use serde_json::{Value, json};
use uuid::Uuid;

/// The simulator's first day in these tests.
fn day0() -> NaiveDate {
    NaiveDate::from_ymd_opt(2027, 3, 1).expect("day")
}

fn at(day: NaiveDate, hour: u32, minute: u32) -> DateTime<Utc> {
    day.and_hms_opt(hour, minute, 0).expect("time").and_utc()
}

fn text(day: NaiveDate) -> String {
    format!("{}T00:00:00Z", day.format("%Y-%m-%d"))
}

async fn world(customers: u32, clock: &Clock) -> Setup {
    setup(SimConfig {
        customers,
        subscriptions_per_customer: 4,
        clock: clock.clone(),
        ..SimConfig::default()
    })
    .await
}

/// Changes fields of a subscription as Microsoft would: no activity record.
fn microsoft_sets(s: &Setup, customer: Uuid, subscription: &str, fields: &[(&str, Value)]) {
    common::sim::set_fields_as(s, &Actor::System, customer, subscription, fields);
}

/// Moves every date of the customer's subscriptions far ahead and closes its refund windows,
/// so nothing about it comes due in these tests.
fn quiet(s: &Setup, customer: Uuid) {
    let far = text(day0() + Duration::days(200));
    for sub in s.sim.customer(customer).expect("customer").subscriptions {
        let id = sub["id"].as_str().expect("id").to_string();
        microsoft_sets(
            s,
            customer,
            &id,
            &[
                ("commitmentEndDate", json!(far)),
                ("billingCycleEndDate", json!(far)),
                (
                    "refundableQuantity",
                    json!({"totalQuantity": 0, "details": []}),
                ),
            ],
        );
    }
}

async fn stored<T>(s: &Setup, customer: Uuid, subscription: &str, column: &str) -> T
where
    T: for<'r> sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres> + Send + Unpin,
{
    sqlx::query_scalar(&format!(
        "SELECT {column} FROM pcsync.subscriptions WHERE customer_id = $1 AND subscription_id = $2"
    ))
    .bind(customer)
    .bind(subscription)
    .fetch_one(&s.db.pool)
    .await
    .expect(column)
}

/// Whether the pass fetched and stored the customer (its `sync_runs.confirmed_customers`).
async fn fetched(s: &Setup, report: &PassReport, customer: Uuid) -> bool {
    sqlx::query_scalar(
        "SELECT coalesce($2 = ANY (confirmed_customers), false) FROM pcsync.sync_runs WHERE run_id = $1",
    )
    .bind(report.run_id)
    .bind(customer)
    .fetch_one(&s.db.pool)
    .await
    .expect("run")
}

#[tokio::test]
async fn a_roll_over_an_expiry_and_a_new_billing_cycle_are_seen_by_the_next_incremental_pass() {
    let clock = Clock::at(at(day0(), 1, 30));
    let s = world(10, &clock).await;
    let ids = s.sim.customer_ids();
    let (monthly, annual, cycle, untouched) = (ids[1], ids[2], ids[3], ids[4]);
    let (sub_m, sub_a, sub_c) = (
        our_subscription(&s, monthly),
        our_subscription(&s, annual),
        our_subscription(&s, cycle),
    );
    // (subscription, auto-renew, term, billing cycle, term's end, billing cycle's end)
    let in_200_days = day0() + Duration::days(200);
    let setups = [
        (monthly, &sub_m, true, "P1M", "monthly", day0(), day0()),
        (annual, &sub_a, false, "P1Y", "annual", day0(), day0()),
        (cycle, &sub_c, true, "P1Y", "monthly", in_200_days, day0()),
    ];
    for (customer, sub, renews, term, billing, end, cycle_end) in setups {
        microsoft_sets(
            &s,
            customer,
            sub,
            &[
                ("status", json!("active")),
                ("autoRenewEnabled", json!(renews)),
                ("termDuration", json!(term)),
                ("billingCycle", json!(billing)),
                ("commitmentEndDate", json!(text(end))),
                ("billingCycleEndDate", json!(text(cycle_end))),
            ],
        );
    }
    quiet(&s, untouched);
    assert_eq!(pass(&s, &[]).await.status, RunStatus::Succeeded);
    let records = s.sim.audit_records().len();

    // Two days on: Microsoft processed each date during the day after it, without a record.
    clock.set(at(day0() + Duration::days(2), 0, 30));
    let report = pass_as(&s, PassChoice::Incremental, &[]).await;
    assert_eq!(s.sim.audit_records().len(), records, "no activity record");
    assert_eq!(report.kind, PassKind::Incremental);
    assert_eq!(report.status, RunStatus::Succeeded);
    let next_month = day0() + chrono::Months::new(1);
    assert_eq!(
        stored::<NaiveDate>(&s, monthly, &sub_m, "commitment_end_date").await,
        next_month,
        "the monthly term rolled over"
    );
    assert_eq!(
        stored::<String>(&s, annual, &sub_a, "status").await,
        "expired",
        "the term without auto-renew expired"
    );
    assert_eq!(
        stored::<NaiveDate>(&s, cycle, &sub_c, "billing_cycle_end_date").await,
        next_month,
        "a new billing cycle"
    );
    for customer in [monthly, annual, cycle] {
        assert!(fetched(&s, &report, customer).await, "{customer} was due");
    }
    assert!(
        !fetched(&s, &report, untouched).await,
        "a customer that is neither due nor named is not fetched"
    );
    assert!(report.fetched.due >= 3, "{:?}", report.fetched);
    assert_eq!(report.fetched.named, 0);
    let due_column = count(
        &s.db.pool,
        &format!(
            "SELECT customers_due::bigint FROM pcsync.sync_runs WHERE run_id = '{}'",
            report.run_id
        ),
    )
    .await;
    assert_eq!(due_column as u64, report.fetched.due);
    // The changes are events of their own, with old and new values.
    let expired = count(
        &s.db.pool,
        &format!(
            "SELECT count(*) FROM pcsync.change_events WHERE run_id = '{}' AND entity_id = '{sub_a}'
               AND field = 'status' AND old_value = 'active' AND new_value = 'expired'",
            report.run_id
        ),
    )
    .await;
    assert_eq!(expired, 1);
}

#[tokio::test]
async fn a_due_customer_is_refetched_at_most_every_recheck_and_for_three_days_at_most() {
    let clock = Clock::at(at(day0(), 1, 0));
    let s = world(8, &clock).await;
    let ids = s.sim.customer_ids();
    let (stuck, old, untouched) = (ids[1], ids[2], ids[3]);
    for c in [stuck, old, untouched] {
        quiet(&s, c);
    }
    // Suspended: Microsoft does not move these dates, so they stay due until the window ends.
    let sub = our_subscription(&s, stuck);
    microsoft_sets(
        &s,
        stuck,
        &sub,
        &[
            ("status", json!("suspended")),
            ("commitmentEndDate", json!(text(day0() - Duration::days(1)))),
        ],
    );
    let old_sub = our_subscription(&s, old);
    microsoft_sets(
        &s,
        old,
        &old_sub,
        &[
            ("status", json!("suspended")),
            ("commitmentEndDate", json!(text(day0() - Duration::days(5)))),
        ],
    );
    pass(&s, &[]).await;
    // Due since 00:00 today; the full pass at 01:00 fetched it: then every 6 hours at most.
    let mut seen = Vec::new();
    for hours in [1, 5, 6, 7, 11, 12] {
        clock.set(at(day0(), 1, 0) + Duration::hours(hours));
        let r = pass_as(&s, PassChoice::Incremental, &[]).await;
        assert!(!fetched(&s, &r, old).await, "a date 5 days old is not due");
        assert!(!fetched(&s, &r, untouched).await);
        seen.push((hours, fetched(&s, &r, stuck).await));
    }
    assert_eq!(
        seen,
        vec![
            (1, false),
            (5, false),
            (6, true),
            (7, false),
            (11, false),
            (12, true)
        ],
        "at most every sync.due_recheck_secs (6 h)"
    );
    // Just before the 3 days end it is still due; after, never again.
    clock.set(at(day0() + Duration::days(2), 23, 0));
    let r = pass_as(&s, PassChoice::Incremental, &[]).await;
    assert!(fetched(&s, &r, stuck).await);
    clock.set(at(day0() + Duration::days(3), 6, 0));
    let r = pass_as(&s, PassChoice::Incremental, &[]).await;
    assert!(!fetched(&s, &r, stuck).await, "due for 3 days at most");
    // A shorter recheck is honoured.
    let short = [("PCSYNC__SYNC__DUE_RECHECK_SECS", "3600")];
    let clock2 = Clock::at(at(day0(), 1, 0));
    let s2 = world(4, &clock2).await;
    let c = s2.sim.customer_ids()[1];
    quiet(&s2, c);
    let sub = our_subscription(&s2, c);
    microsoft_sets(
        &s2,
        c,
        &sub,
        &[
            ("status", json!("suspended")),
            ("commitmentEndDate", json!(text(day0() - Duration::days(1)))),
        ],
    );
    pass(&s2, &short).await;
    clock2.set(at(day0(), 2, 0));
    let r = pass_as(&s2, PassChoice::Incremental, &short).await;
    assert!(fetched(&s2, &r, c).await, "rechecked after an hour");
}

#[tokio::test]
async fn a_microsoft_side_suspension_waits_for_the_next_full_pass() {
    let clock = Clock::at(at(day0(), 3, 0));
    let s = world(6, &clock).await;
    let c = s.sim.customer_ids()[2];
    quiet(&s, c);
    let sub = our_subscription(&s, c);
    microsoft_sets(&s, c, &sub, &[("status", json!("active"))]);
    pass(&s, &[]).await;
    // Suspended for non-payment: no date, no record.
    microsoft_sets(&s, c, &sub, &[("status", json!("suspended"))]);
    clock.set(at(day0(), 4, 0));
    let r = pass_as(&s, PassChoice::Incremental, &[]).await;
    assert!(!fetched(&s, &r, c).await);
    assert_eq!(stored::<String>(&s, c, &sub, "status").await, "active");
    clock.set(at(day0(), 5, 0));
    assert_eq!(pass(&s, &[]).await.kind, PassKind::Full);
    assert_eq!(stored::<String>(&s, c, &sub, "status").await, "suspended");
}

const API: [(&str, &str); 1] = [("PCSYNC__CUSTOMERS__SOURCE", "api")];

async fn left(s: &Setup) -> i64 {
    count(
        &s.db.pool,
        "SELECT count(*) FROM pcsync.customers WHERE left_list_at IS NOT NULL",
    )
    .await
}

#[tokio::test]
async fn an_incomplete_customer_list_syncs_what_it_names_and_marks_nobody_as_left() {
    let clock = Clock::at(at(day0(), 1, 0));
    let s = world(12, &clock).await;
    assert_eq!(pass(&s, &API).await.status, RunStatus::Succeeded);
    let stored_customers = count(&s.db.pool, "SELECT count(*) FROM pcsync.customers").await;
    assert_eq!(stored_customers, 12);
    let ids = s.sim.customer_ids();

    // The list answers only its first customer while its totalCount says 12.
    s.sim.set_knobs(Knobs {
        faults: vec![
            FaultRule::always(FaultKind::CountMismatch).on(pcsync::simulator::Endpoint::Customers),
        ],
        ..Knobs::default()
    });
    common::sim::set_quantity(&s, ids[5], 77);
    clock.set(at(day0(), 2, 0));
    let r = pass_as(&s, PassChoice::Incremental, &API).await;
    assert_eq!(r.status, RunStatus::Partial, "not failed: partial");
    assert_eq!(r.customer_list_complete, Some(false));
    assert_eq!(left(&s).await, 0, "nobody is marked as having left");
    assert!(
        fetched(&s, &r, ids[5]).await,
        "a customer the log names is fetched from the stored list"
    );
    let q: i64 = stored(&s, ids[5], &our_subscription(&s, ids[5]), "quantity").await;
    assert_eq!(q, 77);
    let why = count(
        &s.db.pool,
        &format!(
            "SELECT count(*) FROM pcsync.sync_errors WHERE run_id = '{}' AND operation = 'read_customer_list'
               AND message LIKE '%totalCount says 12 but 1 items arrived%'",
            r.run_id
        ),
    )
    .await;
    assert_eq!(why, 1, "the incompleteness is recorded");
    let full = pass(&s, &API).await;
    assert_eq!(full.status, RunStatus::Partial);
    assert!(
        fetched_full(&s, &full, ids[0]).await,
        "the customer it names is synced"
    );
    assert_eq!(left(&s).await, 0);
    let listed = count(
        &s.db.pool,
        "SELECT count(DISTINCT customer_id) FROM pcsync.current_subscriptions",
    )
    .await;
    assert!(
        listed >= 11,
        "their subscriptions stay in the views: {listed}"
    );

    // Microsoft's own published example: totalCount 25, 2 items, no next link.
    if let Some(dir) = common::pc_real_dir() {
        let published = std::fs::read_to_string(dir.join(
            "customers__MicrosoftDocs_partner-center-sdk__get-a-list-of-customers-2017-totalCount25.json",
        ))
        .expect("the published customer list");
        s.sim.set_knobs(Knobs {
            customer_list_body: Some(published),
            ..Knobs::default()
        });
        let confirmed = |id: Uuid| {
            let pool = s.db.pool.clone();
            async move {
                sqlx::query_scalar::<_, Option<DateTime<Utc>>>(
                    "SELECT last_confirmed_at FROM pcsync.customer_health WHERE customer_id = $1",
                )
                .bind(id)
                .fetch_one(&pool)
                .await
                .expect("health")
            }
        };
        let before = confirmed(ids[3]).await;
        clock.set(at(day0(), 3, 0));
        let r = pass(&s, &API).await;
        assert_eq!(
            confirmed(ids[3]).await,
            before,
            "a customer the list left out is not confirmed by the pass"
        );
        assert_eq!(r.status, RunStatus::Partial, "{:?}", r.error);
        assert_eq!(r.customers_total, 2, "the two customers it names");
        assert_eq!(left(&s).await, 0);
        let why: String = sqlx::query_scalar(
            "SELECT message FROM pcsync.sync_errors WHERE run_id = $1 AND operation = 'read_customer_list'",
        )
        .bind(r.run_id)
        .fetch_one(&s.db.pool)
        .await
        .expect("recorded");
        assert!(
            why.contains("totalCount says 25 but 2 items arrived"),
            "{why}"
        );
    }

    // Whole again: a customer that is really gone is marked as having left.
    s.sim.set_knobs(Knobs::default());
    s.sim
        .apply(Change::RemoveRelationship {
            customer_id: ids[7],
        })
        .expect("removed");
    let r = pass(&s, &API).await;
    assert_eq!(r.customer_list_complete, Some(true));
    assert!(left(&s).await >= 1);
}

/// A full pass confirms every customer it did not fail (no per-customer row).
async fn fetched_full(s: &Setup, report: &PassReport, customer: Uuid) -> bool {
    let failed = count(
        &s.db.pool,
        &format!(
            "SELECT count(*) FROM pcsync.sync_errors WHERE run_id = '{}' AND customer_id = '{customer}'",
            report.run_id
        ),
    )
    .await;
    failed == 0 && report.customers_succeeded > 0
}

#[tokio::test]
async fn an_unreadable_list_item_marks_nobody_as_left() {
    let clock = Clock::at(at(day0(), 1, 0));
    let s = world(6, &clock).await;
    pass(&s, &API).await;
    let ids = s.sim.customer_ids();
    let odd = ids[3];
    let items: Vec<Value> = ids
        .iter()
        .map(|id| {
            let mut c = s.sim.customer(*id).expect("customer").customer_json();
            if *id == odd {
                c["companyProfile"]["companyName"] = json!({"value": "Fabrikam"});
            }
            c
        })
        .collect();
    let body = json!({"totalCount": items.len(), "items": items,
                      "links": {"self": {"uri": "/customers?size=500", "method": "GET", "headers": []}},
                      "attributes": {"objectType": "Collection"}});
    s.sim.set_knobs(Knobs {
        customer_list_body: Some(body.to_string()),
        ..Knobs::default()
    });
    let r = pass(&s, &API).await;
    assert_eq!(r.status, RunStatus::Partial);
    assert_eq!(r.customers_total, 5);
    assert_eq!(left(&s).await, 0, "the unreadable customer has not left");
    let visible = count(
        &s.db.pool,
        &format!("SELECT count(*) FROM pcsync.current_subscriptions WHERE customer_id = '{odd}'"),
    )
    .await;
    assert!(
        visible > 0,
        "its subscriptions stay in current_subscriptions"
    );
    let recorded = count(
        &s.db.pool,
        &format!(
            "SELECT count(*) FROM pcsync.sync_errors WHERE run_id = '{}' AND customer_id = '{odd}'
               AND operation = 'read_customer_list'",
            r.run_id
        ),
    )
    .await;
    assert_eq!(recorded, 1, "the unreadable item is recorded by its id");
}

#[tokio::test]
async fn an_hourly_worker_announces_an_ending_once_per_threshold() {
    let clock = Clock::at(at(day0(), 0, 10));
    let s = world(4, &clock).await;
    let ids = s.sim.customer_ids();
    for c in &ids[1..] {
        quiet(&s, *c);
    }
    let c = ids[1];
    let sub = our_subscription(&s, c);
    // Ends in 20 days without auto-renew: inside notify.renewal_days (30).
    let ends = day0() + Duration::days(20);
    microsoft_sets(
        &s,
        c,
        &sub,
        &[
            ("status", json!("active")),
            ("autoRenewEnabled", json!(false)),
            ("commitmentEndDate", json!(text(ends))),
        ],
    );
    let (url, got) = common::sim::webhook().await;
    let hook = [("PCSYNC__NOTIFY__WEBHOOK_URL", url.as_str())];
    let ending = |body: &Value| -> Vec<(String, i64)> {
        body["ending_without_renewal"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["subscription_id"] == sub.as_str())
            .map(|e| {
                (
                    e["ends_on"].as_str().unwrap_or_default().to_string(),
                    e["threshold_days"].as_i64().unwrap_or(-1),
                )
            })
            .collect()
    };
    pass(&s, &hook).await;
    // Three hourly passes that change nothing: nothing to say.
    for h in 1..=3 {
        clock.set(at(day0(), h, 10));
        pass_as(&s, PassChoice::Auto, &hook).await;
    }
    let announced: Vec<(String, i64)> = {
        let g = got.lock().expect("lock");
        g.iter().flat_map(&ending).collect()
    };
    assert_eq!(
        announced,
        vec![(ends.to_string(), 30)],
        "announced once when it entered 30 days"
    );
    let posts = got.lock().expect("lock").len();
    assert_eq!(posts, 1, "passes with nothing new send nothing");
    // At 7 days left it is announced again, once.
    for (d, h) in [(13, 1), (13, 2), (14, 1)] {
        clock.set(at(day0() + Duration::days(d), h, 10));
        pass_as(&s, PassChoice::Auto, &hook).await;
    }
    let announced: Vec<(String, i64)> = {
        let g = got.lock().expect("lock");
        g.iter().flat_map(&ending).collect()
    };
    assert_eq!(
        announced,
        vec![(ends.to_string(), 30), (ends.to_string(), 7)]
    );
}

#[tokio::test]
async fn a_record_an_earlier_pass_acted_on_is_old_news() {
    let clock = Clock::at(at(day0(), 1, 0));
    let s = world(6, &clock).await;
    let ids = s.sim.customer_ids();
    for c in &ids[1..] {
        quiet(&s, *c);
    }
    pass(&s, &[]).await;
    common::sim::set_quantity(&s, ids[2], 42);
    clock.set(at(day0(), 2, 0));
    let r = pass_as(&s, PassChoice::Incremental, &[]).await;
    assert!(fetched(&s, &r, ids[2]).await, "named by a new record");
    assert_eq!(r.fetched.named, 1);
    // The next pass reads the same record again (the log is re-read with a day's overlap),
    // but the earlier pass already fetched the customer after it.
    clock.set(at(day0(), 3, 0));
    let r = pass_as(&s, PassChoice::Incremental, &[]).await;
    assert!(r.activity_records >= 1, "the record is read again");
    assert!(
        !fetched(&s, &r, ids[2]).await,
        "old news is not fetched again"
    );
    assert_eq!(r.fetched.named, 0);
}
