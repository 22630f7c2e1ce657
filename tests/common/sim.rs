//! A simulator, a fresh database and a customer file, wired together for sync tests.

use std::collections::HashMap;
use std::path::PathBuf;

use pcsync::config::{Settings, Sources};
use pcsync::simulator::{SimConfig, Simulator};
use pcsync::sync::{self, PassChoice, PassReport, Trigger};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use super::TestDb;

pub struct Setup {
    pub db: TestDb,
    pub sim: Simulator,
    pub dir: tempfile::TempDir,
    pub csv: PathBuf,
}

pub async fn setup(config: SimConfig) -> Setup {
    let db = TestDb::migrated().await;
    let sim = Simulator::start(config).await.expect("simulator");
    let dir = tempfile::tempdir().expect("dir");
    let csv = dir.path().join("customers.csv");
    std::fs::write(&csv, sim.customers_csv()).expect("csv");
    Setup { db, sim, dir, csv }
}

/// The environment of a pass against the simulator: fast budget, two attempts per request.
pub fn env(s: &Setup, extra: &[(&str, &str)]) -> HashMap<String, String> {
    let mut env: HashMap<String, String> = s.sim.env_vars().into_iter().collect();
    env.insert("PCSYNC__DATABASE__URL".into(), s.db.url.clone());
    env.insert(
        "PCSYNC__CUSTOMERS__FILE".into(),
        s.csv.to_string_lossy().to_string(),
    );
    env.insert(
        "PCSYNC__PARTNER_CENTER__REQUESTS_PER_MINUTE".into(),
        "100000".into(),
    );
    env.insert("PCSYNC__PARTNER_CENTER__MAX_CONCURRENCY".into(), "8".into());
    env.insert("PCSYNC__PARTNER_CENTER__MAX_ATTEMPTS".into(), "2".into());
    for (k, v) in extra {
        env.insert(k.to_string(), v.to_string());
    }
    env
}

/// The settings of a pass against the setup, on the simulator's clock.
pub fn settings(s: &Setup, extra: &[(&str, &str)]) -> Settings {
    let mut settings = Settings::load(&Sources {
        file: None,
        env: env(s, extra),
    })
    .expect("valid settings");
    settings.clock = s.sim.clock();
    settings
}

/// One full pass in this process, never stopped.
pub async fn pass(s: &Setup, extra: &[(&str, &str)]) -> PassReport {
    pass_as(s, PassChoice::Full, extra).await
}

/// One pass of the kind asked for, in this process, never stopped, followed by the webhook
/// notification as the command that runs a pass sends it.
pub async fn pass_as(s: &Setup, choice: PassChoice, extra: &[(&str, &str)]) -> PassReport {
    let settings = settings(s, extra);
    let report = sync::run_pass(
        &settings,
        &s.db.pool,
        Trigger::Test,
        choice,
        CancellationToken::new(),
    )
    .await
    .expect("the pass runs");
    pcsync::notify::after_pass(
        &s.db.pool,
        &settings.notify,
        &settings.clock,
        settings.partner_center.request_timeout,
        pcsync::partner_center::retry::Backoff::default(),
        &report,
    )
    .await;
    report
}

pub async fn count(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.expect(sql)
}

/// `pcsync run --once` as a child process against the setup.
pub fn pcsync_command(s: &Setup, extra: &[(&str, &str)]) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_pcsync"));
    cmd.args(["run", "--once"])
        .env_remove("DATABASE_URL")
        .envs(env(s, extra))
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    cmd
}

/// The partner's (seed MPN id's) first subscription of a customer.
pub fn our_subscription(s: &Setup, customer: uuid::Uuid) -> String {
    s.sim
        .customer(customer)
        .expect("customer")
        .subscriptions
        .iter()
        .find(|x| x["partnerId"] == pcsync::simulator::SEED_MPN_ID)
        .and_then(|x| x["id"].as_str())
        .expect("a subscription of the seed partner")
        .to_string()
}

/// Sets the quantity of the customer's first subscription of our partner (a partner-made
/// change: the activity log records it).
pub fn set_quantity(s: &Setup, customer: uuid::Uuid, quantity: i64) {
    s.sim
        .apply(pcsync::simulator::Change::SetSubscriptionField {
            customer_id: customer,
            subscription_id: our_subscription(s, customer),
            field: "quantity".into(),
            value: serde_json::json!(quantity),
        })
        .expect("change");
}

/// A webhook on loopback that answers 200: its URL, and the JSON bodies it received.
pub async fn webhook() -> (
    String,
    std::sync::Arc<std::sync::Mutex<Vec<serde_json::Value>>>,
) {
    use axum::routing::post;
    let got: std::sync::Arc<std::sync::Mutex<Vec<serde_json::Value>>> = Default::default();
    let state = got.clone();
    let app = axum::Router::new().route(
        "/hook",
        post(move |body: String| {
            let state = state.clone();
            async move {
                let mut g = state.lock().unwrap_or_else(|e| e.into_inner());
                g.push(serde_json::from_str(&body).unwrap_or(serde_json::Value::Null));
                axum::http::StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}/hook"), got)
}

/// Sets fields of a subscription as `actor` (`Actor::System`: as Microsoft would, without an
/// activity record).
pub fn set_fields_as(
    s: &Setup,
    actor: &pcsync::simulator::Actor,
    customer: uuid::Uuid,
    subscription: &str,
    fields: &[(&str, serde_json::Value)],
) {
    for (field, value) in fields {
        s.sim
            .apply_as(
                pcsync::simulator::Change::SetSubscriptionField {
                    customer_id: customer,
                    subscription_id: subscription.to_string(),
                    field: field.to_string(),
                    value: value.clone(),
                },
                actor,
            )
            .expect("change");
    }
}
