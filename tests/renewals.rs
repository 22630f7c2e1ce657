//! What to decide before a term renews, and the windows in which seats can still be returned
//! (issue 16, first step), on the simulator's clock against a real PostgreSQL.
#![cfg(feature = "simulator")]

mod common;

use chrono::{DateTime, Duration, NaiveDate, Utc};
use common::sim::{Setup, our_subscription, pass, setup};
use pcsync::clock::Clock;
use pcsync::simulator::{Actor, Change, SimConfig};
use serde_json::{Value, json};
use uuid::Uuid;

fn day0() -> NaiveDate {
    NaiveDate::from_ymd_opt(2027, 5, 3).expect("day")
}

fn noon() -> DateTime<Utc> {
    day0().and_hms_opt(12, 0, 0).expect("time").and_utc()
}

fn day_text(d: NaiveDate) -> String {
    format!("{}T00:00:00Z", d.format("%Y-%m-%d"))
}

fn sets(s: &Setup, customer: Uuid, subscription: &str, fields: &[(&str, Value)]) {
    common::sim::set_fields_as(s, &Actor::System, customer, subscription, fields);
}

/// A term of `term` ending in `days`, auto-renewing or not, with no refund window open.
fn term(s: &Setup, customer: Uuid, sub: &str, term: &str, renews: bool, days: i64) {
    sets(
        s,
        customer,
        sub,
        &[
            ("status", json!("active")),
            ("termDuration", json!(term)),
            ("billingCycle", json!("annual")),
            ("autoRenewEnabled", json!(renews)),
            ("quantity", json!(40)),
            (
                "commitmentEndDate",
                json!(day_text(day0() + Duration::days(days))),
            ),
            (
                "billingCycleEndDate",
                json!(day_text(day0() + Duration::days(days))),
            ),
            (
                "refundableQuantity",
                json!({"totalQuantity": 0, "details": []}),
            ),
        ],
    );
    s.sim
        .apply_as(
            Change::SetSubscriptionField {
                customer_id: customer,
                subscription_id: sub.to_string(),
                field: "scheduledNextTermInstructions".into(),
                value: Value::Null,
            },
            &Actor::System,
        )
        .expect("change");
}

type Decision = (String, i32, String, i64, i64);

async fn decision(s: &Setup, sub: &str) -> Option<Decision> {
    let mut tx = s.db.pool.begin().await.expect("tx");
    pcsync::clock::set_for_transaction(&mut tx, &s.sim.clock())
        .await
        .expect("clock");
    sqlx::query_as(
        "SELECT subscription_id, days_left, decision, licenses, licenses_next_term
         FROM pcsync.renewal_decisions WHERE subscription_id = $1",
    )
    .bind(sub)
    .fetch_optional(&mut *tx)
    .await
    .expect("decisions")
}

#[tokio::test]
async fn renewal_decisions_tell_a_decision_from_a_monthly_roll_over() {
    let clock = Clock::at(noon());
    let s = setup(SimConfig {
        customers: 8,
        subscriptions_per_customer: 4,
        clock: clock.clone(),
        ..SimConfig::default()
    })
    .await;
    let ids = s.sim.customer_ids();
    let subs: Vec<String> = ids[1..6].iter().map(|c| our_subscription(&s, *c)).collect();
    term(&s, ids[1], &subs[0], "P1Y", true, 20);
    term(&s, ids[2], &subs[1], "P1Y", true, 20);
    sets(
        &s,
        ids[2],
        &subs[1],
        &[(
            "scheduledNextTermInstructions",
            json!({"product": {"productId": "CFQ7TTC0LH18", "skuId": "0001", "availabilityId": "CFQ7TTC0K5SX",
                               "billingCycle": "annual", "termDuration": "P1Y"}, "quantity": 25}),
        )],
    );
    term(&s, ids[3], &subs[2], "P3Y", false, 45);
    term(&s, ids[4], &subs[3], "P1M", true, 20);
    term(&s, ids[5], &subs[4], "P1Y", true, 120);
    pass(&s, &[]).await;

    assert_eq!(
        decision(&s, &subs[0]).await,
        Some((subs[0].clone(), 20, "renews".into(), 40, 40)),
        "an annual auto-renewing term ending in 20 days"
    );
    let changed = decision(&s, &subs[1]).await.expect("listed");
    assert_eq!(changed.2, "renews with changes");
    assert_eq!(changed.4, 25, "the scheduled quantity");
    assert_eq!(
        decision(&s, &subs[2]).await.map(|d| (d.2, d.4)),
        Some(("ends".into(), 0))
    );
    assert_eq!(
        decision(&s, &subs[3]).await,
        None,
        "a monthly term is no decision"
    );
    assert_eq!(decision(&s, &subs[4]).await, None, "beyond 90 days");
    // With the matched SKU's unassigned seats, counted once per customer and SKU.
    let mut tx = s.db.pool.begin().await.expect("tx");
    pcsync::clock::set_for_transaction(&mut tx, &clock)
        .await
        .expect("clock");
    let (seats, counted, usage): (Option<i64>, bool, Option<i64>) = sqlx::query_as(
        "SELECT d.unassigned_seats, d.unassigned_counted,
                (SELECT u.unassigned FROM pcsync.license_usage u
                 WHERE u.customer_id = d.customer_id AND u.offer_id = d.offer_id)
         FROM pcsync.renewal_decisions d WHERE d.subscription_id = $1",
    )
    .bind(&subs[0])
    .fetch_one(&mut *tx)
    .await
    .expect("decision");
    drop(tx);
    assert!(seats.is_some(), "the simulator's SKUs match its offers");
    assert_eq!(seats, usage);
    assert!(counted);

    // On the clock: 10 days later it has 10 days left.
    clock.set(noon() + Duration::days(10));
    assert_eq!(decision(&s, &subs[0]).await.map(|d| d.1), Some(10));
}

#[tokio::test]
async fn cancellation_windows_show_each_open_window_with_its_hours() {
    let clock = Clock::at(noon());
    let s = setup(SimConfig {
        customers: 4,
        subscriptions_per_customer: 3,
        clock: clock.clone(),
        ..SimConfig::default()
    })
    .await;
    let c = s.sim.customer_ids()[1];
    let sub = our_subscription(&s, c);
    // Seven fractional digits, as Partner Center writes them.
    let closes = noon() + Duration::hours(30) + Duration::nanoseconds(123_456_700);
    sets(
        &s,
        c,
        &sub,
        &[
            ("status", json!("active")),
            (
                "commitmentEndDate",
                json!(day_text(day0() + Duration::days(300))),
            ),
            (
                "billingCycleEndDate",
                json!(day_text(day0() + Duration::days(300))),
            ),
            (
                "refundableQuantity",
                json!({"totalQuantity": 5, "details": [
                    {"quantity": 3, "allowedUntilDateTime": closes.format("%Y-%m-%dT%H:%M:%S.1234567Z").to_string()},
                    {"quantity": "2", "allowedUntilDateTime": (noon() - Duration::hours(1)).to_rfc3339()},
                    {"quantity": 1, "allowedUntilDateTime": "not a date"}
                ]}),
            ),
        ],
    );
    pass(&s, &[]).await;
    let mut tx = s.db.pool.begin().await.expect("tx");
    pcsync::clock::set_for_transaction(&mut tx, &clock)
        .await
        .expect("clock");
    let rows: Vec<(i64, DateTime<Utc>, f64)> = sqlx::query_as(
        "SELECT refundable_quantity, allowed_until, hours_left::float8
         FROM pcsync.cancellation_windows WHERE subscription_id = $1",
    )
    .bind(&sub)
    .fetch_all(&mut *tx)
    .await
    .expect("windows");
    // PostgreSQL rounds the seventh digit to microseconds.
    assert_eq!(
        rows,
        vec![(3, closes + Duration::nanoseconds(300), 30.0)],
        "the open window only: not the closed one, not the unreadable one"
    );
}

#[tokio::test]
async fn the_webhook_carries_each_decision_and_closing_window_once_and_no_roll_over() {
    let clock = Clock::at(noon());
    let s = setup(SimConfig {
        customers: 6,
        subscriptions_per_customer: 3,
        clock: clock.clone(),
        ..SimConfig::default()
    })
    .await;
    let ids = s.sim.customer_ids();
    // Every other subscription out of the way: far dates, no windows, auto-renewing.
    for c in &ids[1..] {
        for sub in s.sim.customer(*c).expect("customer").subscriptions {
            let id = sub["id"].as_str().expect("id").to_string();
            term(&s, *c, &id, "P1Y", true, 300);
        }
    }
    let annual = our_subscription(&s, ids[1]);
    let ending = our_subscription(&s, ids[2]);
    let monthly = our_subscription(&s, ids[3]);
    let window = our_subscription(&s, ids[4]);
    term(&s, ids[1], &annual, "P1Y", true, 35);
    term(&s, ids[2], &ending, "P1Y", false, 20);
    term(&s, ids[3], &monthly, "P1M", true, 10);
    let closes = noon() + Duration::hours(30);
    sets(
        &s,
        ids[4],
        &window,
        &[(
            "refundableQuantity",
            json!({"totalQuantity": 4, "details": [{"quantity": 4, "allowedUntilDateTime": closes.to_rfc3339()}]}),
        )],
    );
    let (url, got) = common::sim::webhook().await;
    let hook = [("PCSYNC__NOTIFY__WEBHOOK_URL", url.as_str())];
    let said = |key: &str| -> Vec<String> {
        got.lock()
            .expect("lock")
            .iter()
            .flat_map(|b| b[key].as_array().cloned().unwrap_or_default())
            .map(|x| {
                format!(
                    "{} {}",
                    x["subscription_id"].as_str().unwrap_or_default(),
                    x["decision"].as_str().unwrap_or_default()
                )
                .trim()
                .to_string()
            })
            .collect()
    };
    pass(&s, &hook).await;
    assert_eq!(
        said("renewal_decisions"),
        vec![format!("{ending} ends")],
        "the term without auto-renew within 30 days; the annual one is 35 days out"
    );
    assert!(
        said("ending_without_renewal").is_empty(),
        "a decision is not said twice as an ending"
    );
    let first = got.lock().expect("lock")[0]["renewal_decisions"][0].clone();
    assert!(
        first["unassigned_seats"].is_i64(),
        "a decision says the matched SKU's unassigned seats: {first}"
    );
    assert!(said("cancellation_windows").is_empty(), "30 h left");

    // Hourly passes on: the window enters its last 24 h, the annual term its 30 days.
    for hours in [1, 7, 8, 24 * 5, 24 * 5 + 1] {
        clock.set(noon() + Duration::hours(hours));
        pcsync_pass(&s, &hook).await;
    }
    assert_eq!(said("cancellation_windows"), vec![window.clone()], "once");
    assert_eq!(
        said("renewal_decisions"),
        vec![format!("{ending} ends"), format!("{annual} renews")],
        "each decision once"
    );
    for key in [
        "renewal_decisions",
        "ending_without_renewal",
        "cancellation_windows",
    ] {
        assert!(
            !said(key).iter().any(|x| x.contains(&monthly)),
            "a monthly roll-over never alerts ({key})"
        );
    }
}

async fn pcsync_pass(s: &Setup, extra: &[(&str, &str)]) {
    common::sim::pass_as(s, pcsync::sync::PassChoice::Auto, extra).await;
}
