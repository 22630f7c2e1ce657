//! Webhook notifications after a pass (issue 12), received by a local HTTP server in the test.
#![cfg(feature = "simulator")]

mod common;

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use common::sim::{Setup, count, pass, setup};
use pcsync::simulator::SimConfig;
use pcsync::sync::RunStatus;
use serde_json::Value;

/// Bodies received, and how many of the next requests to answer 500.
#[derive(Default)]
struct Receiver {
    bodies: Vec<Value>,
    fail_next: u32,
    attempts: u32,
}

async fn receive(State(r): State<Arc<Mutex<Receiver>>>, body: String) -> StatusCode {
    let mut r = r.lock().unwrap_or_else(|e| e.into_inner());
    r.attempts += 1;
    if r.fail_next > 0 {
        r.fail_next -= 1;
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    r.bodies
        .push(serde_json::from_str(&body).unwrap_or(Value::Null));
    StatusCode::OK
}

async fn receiver() -> (String, Arc<Mutex<Receiver>>) {
    let state = Arc::new(Mutex::new(Receiver::default()));
    let app = Router::new()
        .route("/hooks/SECRET-PATH", post(receive))
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}/hooks/SECRET-PATH"), state)
}

fn change_one(s: &Setup, n: usize, quantity: i64) {
    common::sim::set_quantity(s, s.sim.customer_ids()[n], quantity);
}

#[tokio::test]
async fn one_post_per_pass_with_its_events_retried_and_never_failing_the_pass() {
    let s = setup(SimConfig {
        customers: 4,
        ..SimConfig::default()
    })
    .await;
    let (url, got) = receiver().await;
    let hook = [("PCSYNC__NOTIFY__WEBHOOK_URL", url.as_str())];

    // A first load: every object added, in one POST grouped by customer.
    let first = pass(&s, &hook).await;
    {
        let r = got.lock().expect("lock");
        assert_eq!(r.bodies.len(), 1, "one POST for the pass");
        let body = &r.bodies[0];
        assert_eq!(body["run_id"], first.run_id.to_string());
        let events: usize = body["changes"]
            .as_array()
            .expect("changes")
            .iter()
            .map(|c| c["events"].as_array().map_or(0, Vec::len))
            .sum();
        assert_eq!(events as u64, first.changes);
        assert_eq!(
            body["changes"].as_array().map(Vec::len),
            Some(4),
            "by customer"
        );
        assert!(
            body["text"]
                .as_str()
                .is_some_and(|t| t.starts_with("pcsync: "))
        );
        let text = body.to_string();
        for secret in [
            "sim-client-secret",
            "sim-refresh-token",
            "SECRET-PATH",
            "sim-rt-",
        ] {
            assert!(!text.contains(secret), "{secret} in the notification");
        }
    }

    // Nothing to say: nothing sent.
    pass(&s, &hook).await;
    assert_eq!(got.lock().expect("lock").bodies.len(), 1);

    // A change, the receiver failing twice: retried, delivered once, with that change only.
    change_one(&s, 1, 55);
    got.lock().expect("lock").fail_next = 2;
    let attempts_before = got.lock().expect("lock").attempts;
    let third = pass(&s, &hook).await;
    {
        let r = got.lock().expect("lock");
        assert_eq!(r.attempts - attempts_before, 3, "two 500s, then delivered");
        assert_eq!(r.bodies.len(), 2);
        let events = &r.bodies[1]["changes"][0]["events"];
        assert_eq!(events.as_array().map(Vec::len), Some(1));
        assert_eq!(events[0]["field"], "quantity");
        assert_eq!(events[0]["new_value"], "55");
        assert_eq!(r.bodies[1]["run_id"], third.run_id.to_string());
    }

    // Filters: only status changes wanted, a quantity change says nothing.
    change_one(&s, 2, 66);
    let filtered = [
        ("PCSYNC__NOTIFY__WEBHOOK_URL", url.as_str()),
        ("PCSYNC__NOTIFY__FIELDS", "status"),
    ];
    pass(&s, &filtered).await;
    assert_eq!(got.lock().expect("lock").bodies.len(), 2);
}

#[tokio::test]
async fn a_dead_receiver_does_not_change_the_pass() {
    let s = setup(SimConfig {
        customers: 2,
        ..SimConfig::default()
    })
    .await;
    // Nothing listens there.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = l.local_addr().expect("addr");
        drop(l);
        format!("http://{addr}/hook")
    };
    let report = pass(&s, &[("PCSYNC__NOTIFY__WEBHOOK_URL", dead.as_str())]).await;
    assert_eq!(report.status, RunStatus::Succeeded);
    assert_eq!(
        count(
            &s.db.pool,
            "SELECT count(*) FROM pcsync.sync_errors WHERE operation = 'notify' AND customer_id IS NULL"
        )
        .await,
        1,
        "the failed notification is recorded"
    );
    let message: String =
        sqlx::query_scalar("SELECT message FROM pcsync.sync_errors WHERE operation = 'notify'")
            .fetch_one(&s.db.pool)
            .await
            .expect("message");
    assert!(!message.contains("/hook"), "the URL is a secret: {message}");
    let status: String = sqlx::query_scalar("SELECT status FROM pcsync.sync_runs")
        .fetch_one(&s.db.pool)
        .await
        .expect("run");
    assert_eq!(status, "succeeded");
}
