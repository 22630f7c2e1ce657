//! Trust under faults (issue 9): every failure seen in the field, reproduced against the
//! simulator and a real PostgreSQL. A failed or unproven fetch never removes anything; a pass
//! can always be stopped; a pass killed outright is closed by the next one.
#![cfg(feature = "simulator")]
#![allow(clippy::type_complexity)]

mod common;

use std::time::{Duration, Instant};

use common::sim::{Setup, count, pass, pcsync_command, setup};
use pcsync::simulator::{
    Change, Endpoint, FaultKind, FaultRule, Knobs, OTHER_MPN_IDS, SEED_MPN_ID, SimConfig,
};
use pcsync::sync::RunStatus;
use serde_json::json;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

async fn synced(customers: u32) -> Setup {
    let s = setup(SimConfig {
        customers,
        ..SimConfig::default()
    })
    .await;
    let first = pass(&s, &[]).await;
    assert_eq!(first.status, RunStatus::Succeeded);
    s
}

/// (present subscriptions, their quantities added up) of a customer.
async fn holdings(s: &Setup, customer: Uuid) -> (i64, i64) {
    sqlx::query_as(
        "SELECT count(*), coalesce(sum(quantity), 0)::bigint FROM pcsync.subscriptions
         WHERE customer_id = $1 AND removed_at IS NULL",
    )
    .bind(customer)
    .fetch_one(&s.db.pool)
    .await
    .expect("holdings")
}

async fn events_of(s: &Setup, run: Uuid, customer: Uuid) -> Vec<(String, String)> {
    sqlx::query_as(
        "SELECT kind, entity_id FROM pcsync.change_events
         WHERE run_id = $1 AND customer_id = $2 AND entity <> 'subscribed_sku'",
    )
    .bind(run)
    .bind(customer)
    .fetch_all(&s.db.pool)
    .await
    .expect("events")
}

async fn last_error(s: &Setup, customer: Uuid) -> (String, Option<String>, i64) {
    let (status, error): (String, Option<String>) = sqlx::query_as(
        "SELECT last_status, last_error FROM pcsync.customers WHERE customer_id = $1",
    )
    .bind(customer)
    .fetch_one(&s.db.pool)
    .await
    .expect("customer");
    let errors: i64 =
        sqlx::query_scalar("SELECT count(*) FROM pcsync.sync_errors WHERE customer_id = $1")
            .bind(customer)
            .fetch_one(&s.db.pool)
            .await
            .expect("errors");
    (status, error, errors)
}

/// Second fetches a pass made before applying a mass removal (`sync_runs.second_looks`).
async fn second_looks(s: &Setup, run: Uuid) -> i32 {
    sqlx::query_scalar("SELECT second_looks FROM pcsync.sync_runs WHERE run_id = $1")
        .bind(run)
        .fetch_one(&s.db.pool)
        .await
        .expect("second_looks")
}

/// Failure 1 (and the 3xx of "a complete fetch is proven"): a 200 without `items`, an empty
/// object, a `totalCount` the items do not reach, a redirect to an empty page. Each is that
/// customer's error; nothing it holds is removed.
#[tokio::test]
async fn an_answer_that_is_not_a_complete_list_removes_nothing() {
    let s = synced(8).await;
    let ids = s.sim.customer_ids();
    let faulted = [
        (ids[1], FaultKind::NoItems, "items"),
        (ids[2], FaultKind::EmptyObject, "items"),
        (ids[3], FaultKind::CountMismatch, "totalCount"),
        (ids[4], FaultKind::Redirect, "redirect"),
    ];
    let mut before = Vec::new();
    for (id, _, _) in &faulted {
        before.push(holdings(&s, *id).await);
        assert!(
            before.last().is_some_and(|h| h.0 >= 2),
            "{id} has subscriptions"
        );
    }
    s.sim.set_knobs(Knobs {
        faults: faulted
            .iter()
            .map(|(id, kind, _)| {
                FaultRule::always(*kind)
                    .for_customer(*id)
                    .on(Endpoint::Subscriptions)
            })
            .collect(),
        ..Knobs::default()
    });
    let report = pass(&s, &[]).await;
    assert_eq!(report.status, RunStatus::Partial, "{report:?}");
    assert_eq!(report.customers_failed, 4);
    assert_eq!(report.customers_succeeded, 4);
    assert_eq!(report.changes, 0, "no event at all");
    for ((id, kind, says), was) in faulted.iter().zip(before) {
        assert_eq!(
            holdings(&s, *id).await,
            was,
            "{kind:?}: stored rows untouched"
        );
        assert!(
            events_of(&s, report.run_id, *id).await.is_empty(),
            "{kind:?}"
        );
        let (status, error, errors) = last_error(&s, *id).await;
        assert_eq!(status, "failed", "{kind:?}");
        assert_eq!(errors, 1, "{kind:?}: one sync_errors row");
        let error = error.unwrap_or_default();
        assert!(error.contains(says), "{kind:?}: {error}");
    }
    let open_history: i64 = count(
        &s.db.pool,
        "SELECT count(*) FROM pcsync.subscription_history WHERE valid_to IS NOT NULL",
    )
    .await;
    assert_eq!(open_history, 0, "no history version was closed");
}

/// Failure 2: changing a customer's partner filter records nothing as removed; the rows of
/// the partner no longer asked for stop being tracked, with an event of their own, and leave
/// the reporting views.
#[tokio::test]
async fn a_new_partner_filter_untracks_instead_of_removing() {
    let s = synced(6).await;
    let ids = s.sim.customer_ids();
    let tracked_before = count(&s.db.pool, "SELECT count(*) FROM pcsync.subscriptions").await;
    assert!(tracked_before > 0);
    let other = OTHER_MPN_IDS[0];
    let csv = std::fs::read_to_string(&s.csv).expect("csv");
    std::fs::write(&s.csv, csv.replace(SEED_MPN_ID, other)).expect("csv");
    let report = pass(&s, &[]).await;
    assert_eq!(report.status, RunStatus::Succeeded);
    let removed = count(
        &s.db.pool,
        "SELECT count(*) FROM pcsync.change_events WHERE kind = 'removed'",
    )
    .await;
    assert_eq!(
        removed, 0,
        "Partner Center still has them: nothing was removed"
    );
    let untracked = count(
        &s.db.pool,
        &format!(
            "SELECT count(*) FROM pcsync.subscriptions WHERE partner_id = '{SEED_MPN_ID}'
             AND untracked_at IS NOT NULL AND removed_at IS NULL"
        ),
    )
    .await;
    assert_eq!(
        untracked, tracked_before,
        "every seed-partner row is untracked"
    );
    let untracked_events = count(
        &s.db.pool,
        "SELECT count(*) FROM pcsync.change_events WHERE kind = 'untracked'",
    )
    .await;
    assert_eq!(untracked_events, tracked_before);
    let in_view = count(
        &s.db.pool,
        &format!(
            "SELECT count(*) FROM pcsync.current_subscriptions WHERE partner_id = '{SEED_MPN_ID}'"
        ),
    )
    .await;
    assert_eq!(in_view, 0, "the views leave untracked rows out");
    let other_rows = count(
        &s.db.pool,
        &format!("SELECT count(*) FROM pcsync.current_subscriptions WHERE partner_id = '{other}'"),
    )
    .await;
    let want: usize = ids
        .iter()
        .map(|id| {
            s.sim
                .customer(*id)
                .map(|c| {
                    c.subscriptions
                        .iter()
                        .filter(|x| x["partnerId"] == other)
                        .count()
                })
                .unwrap_or(0)
        })
        .sum();
    assert_eq!(other_rows as usize, want);

    // Back to the first filter: the rows are tracked again, the other partner's untracked,
    // and still nothing was removed or added.
    let csv = std::fs::read_to_string(&s.csv).expect("csv");
    std::fs::write(&s.csv, csv.replace(other, SEED_MPN_ID)).expect("csv");
    let back = pass(&s, &[]).await;
    assert_eq!(back.status, RunStatus::Succeeded);
    let still_untracked = count(
        &s.db.pool,
        &format!(
            "SELECT count(*) FROM pcsync.subscriptions WHERE partner_id = '{SEED_MPN_ID}' AND untracked_at IS NOT NULL"
        ),
    )
    .await;
    assert_eq!(still_untracked, 0);
    let kinds: Vec<(String, i64)> = sqlx::query_as(
        "SELECT kind, count(*) FROM pcsync.change_events WHERE run_id = $1 GROUP BY kind ORDER BY kind",
    )
    .bind(back.run_id)
    .fetch_all(&s.db.pool)
    .await
    .expect("kinds");
    assert_eq!(
        kinds,
        vec![
            ("tracked".to_string(), tracked_before),
            ("untracked".to_string(), other_rows)
        ]
    );
}

/// Failure 3: SIGTERM while every request hangs: `pcsync run --once` ends within the grace
/// period with 143, the run is `interrupted`, and the customers it was fetching are untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_while_partner_center_hangs_exits_within_the_grace_period() {
    let s = setup(SimConfig {
        customers: 10,
        knobs: Knobs {
            faults: vec![FaultRule::always(FaultKind::Hang).on(Endpoint::Subscriptions)],
            hang_secs: Some(120),
            ..Knobs::default()
        },
        ..SimConfig::default()
    })
    .await;
    let child = pcsync_command(&s, &[]).spawn().expect("spawn");
    let pid = child.id().expect("pid");
    // Wait until requests are hanging.
    for _ in 0..100 {
        if s.sim.stats().faults_injected > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        s.sim.stats().faults_injected > 0,
        "requests reached the simulator"
    );
    let sent = Instant::now();
    let killed = tokio::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .await
        .expect("kill");
    assert!(killed.success());
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("pcsync ended within 30 s of SIGTERM")
        .expect("ends");
    let took = sent.elapsed();
    assert!(
        took < Duration::from_secs(10),
        "ended {took:?} after SIGTERM"
    );
    assert_eq!(
        out.status.code(),
        Some(143),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (status, finished): (String, bool) =
        sqlx::query_as("SELECT status, finished_at IS NOT NULL FROM pcsync.sync_runs")
            .fetch_one(&s.db.pool)
            .await
            .expect("run");
    assert_eq!(status, "interrupted");
    assert!(finished);
    assert_eq!(
        count(
            &s.db.pool,
            "SELECT count(*) FROM pcsync.customers WHERE last_status <> 'never'"
        )
        .await,
        0,
        "cancelled customers are untouched"
    );
    assert_eq!(
        count(
            &s.db.pool,
            "SELECT count(*) FROM pcsync.sync_errors WHERE customer_id IS NOT NULL"
        )
        .await,
        0
    );
}

/// Failure 4: a pass killed outright (OOM, node loss) leaves a `running` row; the next pass
/// closes it as `abandoned`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_pass_is_closed_as_abandoned_by_the_next() {
    let s = setup(SimConfig {
        customers: 4,
        knobs: Knobs {
            faults: vec![FaultRule::always(FaultKind::Hang).on(Endpoint::Subscriptions)],
            hang_secs: Some(120),
            ..Knobs::default()
        },
        ..SimConfig::default()
    })
    .await;
    let mut child = pcsync_command(&s, &[]).spawn().expect("spawn");
    let mut running = 0;
    for _ in 0..100 {
        running = count(
            &s.db.pool,
            "SELECT count(*) FROM pcsync.sync_runs WHERE status = 'running'",
        )
        .await;
        if running == 1 && s.sim.stats().faults_injected > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(running, 1);
    child.kill().await.expect("SIGKILL");
    let _ = child.wait().await;
    // The server notices the dead session (and frees its lock) a moment later, as the next
    // scheduled pass would find it.
    for _ in 0..100 {
        if count(
            &s.db.pool,
            "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database
             WHERE l.locktype = 'advisory' AND d.datname = current_database()",
        )
        .await
            == 0
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    s.sim.set_knobs(Knobs::default());
    let report = pass(&s, &[]).await;
    assert_eq!(report.status, RunStatus::Succeeded);
    let (status, finished, error): (String, bool, Option<String>) = sqlx::query_as(
        "SELECT status, finished_at IS NOT NULL, error FROM pcsync.sync_runs WHERE run_id <> $1",
    )
    .bind(report.run_id)
    .fetch_one(&s.db.pool)
    .await
    .expect("the killed run");
    assert_eq!(status, "abandoned");
    assert!(finished);
    assert!(error.is_some_and(|e| e.contains("ended without closing")));
    assert_eq!(
        count(
            &s.db.pool,
            "SELECT count(*) FROM pcsync.sync_runs WHERE status = 'running'"
        )
        .await,
        0
    );
}

/// "Two writers must never overlap": a pass whose lock connection is lost stops writing and
/// ends failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pass_that_loses_its_lock_stops_writing() {
    let s = setup(SimConfig {
        customers: 40,
        knobs: Knobs {
            latency_ms: 100,
            ..Knobs::default()
        },
        ..SimConfig::default()
    })
    .await;
    let settings = common::sim::settings(&s, &[("PCSYNC__PARTNER_CENTER__MAX_CONCURRENCY", "2")]);
    let pool = s.db.pool.clone();
    let running = tokio::spawn(async move {
        let never = CancellationToken::new();
        pcsync::sync::run_pass(
            &settings,
            &pool,
            pcsync::sync::Trigger::Test,
            pcsync::sync::PassChoice::Full,
            never,
        )
        .await
    });
    // Wait for some customers to be stored, then end the session that holds the lock.
    for _ in 0..100 {
        if count(
            &s.db.pool,
            "SELECT count(*) FROM pcsync.customers WHERE last_status = 'succeeded'",
        )
        .await
            > 0
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ended: i64 = count(
        &s.db.pool,
        "SELECT count(pg_terminate_backend(pid)) FROM pg_locks
         WHERE locktype = 'advisory' AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
    )
    .await;
    assert_eq!(ended, 1, "one session held the lock");
    let at_loss = count(
        &s.db.pool,
        "SELECT count(*) FROM pcsync.customers WHERE last_status = 'succeeded'",
    )
    .await;
    let report = running.await.expect("joins").expect("the pass reports");
    assert_eq!(report.status, RunStatus::Failed, "{report:?}");
    assert!(
        report.error.as_deref().is_some_and(|e| e.contains("lock")),
        "{report:?}"
    );
    let after = count(
        &s.db.pool,
        "SELECT count(*) FROM pcsync.customers WHERE last_status = 'succeeded'",
    )
    .await;
    assert!(
        after <= at_loss + 1,
        "at most the batch in flight lands after the loss: {at_loss} then {after}"
    );
    assert!(after < 40, "the pass did not go on writing");
}

/// Failure 5: the token endpoint is retried like any request.
#[tokio::test]
async fn a_transient_token_endpoint_failure_is_retried() {
    let s = setup(SimConfig {
        customers: 3,
        knobs: Knobs {
            faults: vec![
                FaultRule::always(FaultKind::Status503)
                    .on(Endpoint::Token)
                    .times(1),
                FaultRule::always(FaultKind::Status429)
                    .on(Endpoint::Token)
                    .times(1),
            ],
            ..Knobs::default()
        },
        ..SimConfig::default()
    })
    .await;
    let report = pass(&s, &[("PCSYNC__PARTNER_CENTER__MAX_ATTEMPTS", "3")]).await;
    assert_eq!(report.status, RunStatus::Succeeded, "{report:?}");
    let stats = s.sim.stats();
    assert_eq!(stats.count(Endpoint::Token, 503), 1);
    assert_eq!(stats.count(Endpoint::Token, 429), 1);
    assert_eq!(stats.count(Endpoint::Token, 200), 1);
}

/// Failure 6: the Partner Center customer list names a customer twice.
#[tokio::test]
async fn a_customer_listed_twice_by_the_api_is_synced_once() {
    let s = setup(SimConfig {
        customers: 7,
        knobs: Knobs {
            faults: vec![FaultRule::always(FaultKind::Duplicate).on(Endpoint::Customers)],
            ..Knobs::default()
        },
        ..SimConfig::default()
    })
    .await;
    let report = pass(&s, &[("PCSYNC__CUSTOMERS__SOURCE", "api")]).await;
    assert_eq!(report.status, RunStatus::Succeeded, "{report:?}");
    assert_eq!(report.customers_total, 7);
    assert_eq!(report.customers_succeeded, 7);
    assert_eq!(
        count(&s.db.pool, "SELECT count(*) FROM pcsync.customers").await,
        7
    );
}

/// Failure 9: a value of the wrong type fails its customer, names the field and the value,
/// and leaves the stored value as it was.
#[tokio::test]
async fn a_value_of_the_wrong_type_is_the_customers_error() {
    let s = synced(4).await;
    let id = s.sim.customer_ids()[1];
    let sub = common::sim::our_subscription(&s, id);
    let before = holdings(&s, id).await;
    s.sim
        .apply(Change::SetSubscriptionField {
            customer_id: id,
            subscription_id: sub.clone(),
            field: "quantity".into(),
            value: json!("five"),
        })
        .expect("change");
    let report = pass(&s, &[]).await;
    assert_eq!(report.status, RunStatus::Partial);
    assert_eq!(report.changes, 0);
    assert_eq!(holdings(&s, id).await, before, "quantity kept");
    let (status, error, _) = last_error(&s, id).await;
    assert_eq!(status, "failed");
    let error = error.unwrap_or_default();
    assert!(
        error.contains("quantity") && error.contains("five") && error.contains(&sub),
        "{error}"
    );
}

/// "A second look before a mass removal": one answer that would remove most of a customer's
/// subscriptions is checked by a second fetch; a one-off empty answer changes nothing, a real
/// mass removal is applied.
#[tokio::test]
async fn a_mass_removal_needs_two_answers_that_agree() {
    let s = synced(4).await;
    let ids = s.sim.customer_ids();
    let flaky = ids[1];
    let before = holdings(&s, flaky).await;
    assert!(before.0 >= 2);
    s.sim.set_knobs(Knobs {
        faults: vec![
            FaultRule::always(FaultKind::Empty)
                .for_customer(flaky)
                .on(Endpoint::Subscriptions)
                .times(1),
        ],
        ..Knobs::default()
    });
    let report = pass(&s, &[]).await;
    assert_eq!(second_looks(&s, report.run_id).await, 1, "{report:?}");
    assert_eq!(
        holdings(&s, flaky).await,
        before,
        "the second answer disagreed"
    );
    let (status, error, _) = last_error(&s, flaky).await;
    assert_eq!(status, "failed");
    assert!(error.is_some_and(|e| e.contains("second")));
    assert_eq!(report.changes, 0);

    // A real mass removal: both answers agree, the removals are applied.
    let gone = ids[2];
    let c = s.sim.customer(gone).expect("customer");
    for sub in c
        .subscriptions
        .iter()
        .filter(|x| x["partnerId"] == SEED_MPN_ID)
    {
        s.sim
            .apply(Change::RemoveSubscription {
                customer_id: gone,
                subscription_id: sub["id"].as_str().expect("id").to_string(),
            })
            .expect("remove");
    }
    let held = holdings(&s, gone).await.0;
    s.sim.set_knobs(Knobs::default());
    let report = pass(&s, &[]).await;
    assert_eq!(report.status, RunStatus::Succeeded);
    assert_eq!(second_looks(&s, report.run_id).await, 1);
    assert_eq!(holdings(&s, gone).await.0, 0);
    assert_eq!(
        events_of(&s, report.run_id, gone)
            .await
            .iter()
            .filter(|(k, _)| k == "removed")
            .count() as i64,
        held
    );
}

/// A pass that cannot stop on its own (its database writes are blocked) still ends within
/// `sync.shutdown_grace_secs` of SIGTERM; and a second signal ends it at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_pass_exits_within_the_grace_period_or_at_a_second_signal() {
    for (grace, second_signal) in [("2", false), ("60", true)] {
        let s = setup(SimConfig {
            customers: 3,
            ..SimConfig::default()
        })
        .await;
        // Hold the customers table: the pass blocks on its first write to it.
        let mut blocker = s.db.pool.begin().await.expect("tx");
        sqlx::query("LOCK TABLE pcsync.customers IN ACCESS EXCLUSIVE MODE")
            .execute(&mut *blocker)
            .await
            .expect("lock");
        let child = pcsync_command(&s, &[("PCSYNC__SYNC__SHUTDOWN_GRACE_SECS", grace)])
            .spawn()
            .expect("spawn");
        let pid = child.id().expect("pid").to_string();
        for _ in 0..100 {
            if count(
                &s.db.pool,
                "SELECT count(*) FROM pcsync.sync_runs WHERE status = 'running'",
            )
            .await
                == 1
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let term = || {
            tokio::process::Command::new("kill")
                .args(["-TERM", &pid])
                .status()
        };
        let sent = Instant::now();
        assert!(term().await.expect("kill").success());
        if second_signal {
            tokio::time::sleep(Duration::from_millis(500)).await;
            assert!(term().await.expect("kill").success());
        }
        let out = tokio::time::timeout(Duration::from_secs(20), child.wait_with_output())
            .await
            .expect("pcsync ended")
            .expect("ends");
        let took = sent.elapsed();
        assert_eq!(
            out.status.code(),
            Some(143),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        if second_signal {
            assert!(took < Duration::from_secs(3), "second signal: {took:?}");
        } else {
            assert!(
                took >= Duration::from_millis(1900) && took < Duration::from_secs(5),
                "grace of 2 s: {took:?}"
            );
        }
        blocker.rollback().await.expect("release");
    }
}
