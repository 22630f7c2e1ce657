//! No secret reaches the log, at any level: a full fetch traced at TRACE (every crate's
//! events, hyper's and reqwest's included) is searched for every secret and token value.
//! Its own test binary, so its subscriber can be the process-wide default.
#![cfg(feature = "simulator")]

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::TestDb;
use pcsync::config::{Settings, Sources};
use pcsync::partner_center::retry::Backoff;
use pcsync::partner_center::{PartnerCenterClient, RefreshTokenStore};
use pcsync::simulator::{
    FaultKind, FaultRule, Knobs, SEED_MPN_ID, SIM_CLIENT_SECRET, SIM_REFRESH_TOKEN, SimConfig,
    Simulator,
};
use pcsync::sync::resource::{ManagedService, Subscription};
use secrecy::ExposeSecret;
use uuid::Uuid;

/// A `tracing` writer that keeps everything in memory.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().map(|mut v| v.extend_from_slice(buf)).ok();
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[tokio::test]
async fn no_secret_reaches_the_log_even_at_trace_level() {
    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(captured.clone())
        .with_ansi(false)
        .finish();
    tracing::subscriber::set_global_default(subscriber).expect("the only subscriber");

    let db = TestDb::migrated().await;
    let sim = Simulator::start(SimConfig {
        access_token_lifetime: Duration::from_secs(1),
        ..SimConfig::default()
    })
    .await
    .expect("sim");
    sim.set_knobs(Knobs {
        faults: vec![FaultRule::always(FaultKind::Status500).times(1)],
        ..Knobs::default()
    });
    let mut env: HashMap<String, String> = sim.env_vars().into_iter().collect();
    env.insert(
        "PCSYNC__PARTNER_CENTER__REQUESTS_PER_MINUTE".into(),
        "100000".into(),
    );
    let settings = Settings::load(&Sources { file: None, env }).expect("settings");
    let creds = settings.auth.credentials().expect("credentials");
    let store = RefreshTokenStore::new(db.pool.clone());
    let c = PartnerCenterClient::new(&settings.partner_center, creds, Some(store), Uuid::new_v4())
        .await
        .expect("client")
        .with_backoff(Backoff {
            base: Duration::from_millis(10),
            cap: Duration::from_millis(100),
        });
    for id in sim.customer_ids().into_iter().take(5) {
        c.subscriptions(id, Some(SEED_MPN_ID), Subscription::from_raw)
            .await
            .expect("subs");
        c.managed_services(id, ManagedService::from_raw)
            .await
            .expect("services");
    }
    tokio::time::sleep(Duration::from_millis(1100)).await;
    c.customers(50).collect_all().await.expect("list");
    let access = c.tokens().token().await.expect("token");
    let rotated: String =
        sqlx::query_scalar("SELECT refresh_token FROM pcsync_private.refresh_tokens")
            .fetch_one(&db.pool)
            .await
            .expect("stored");

    let log = String::from_utf8_lossy(&captured.0.lock().expect("lock")).to_string();
    assert!(log.contains("TRACE"), "the log was captured at TRACE level");
    assert!(
        log.contains("server error; retrying"),
        "and holds the client's events"
    );
    for secret in [
        SIM_CLIENT_SECRET,
        SIM_REFRESH_TOKEN,
        rotated.as_str(),
        access.expose_secret(),
        "sim-at-",
        "sim-rt-",
    ] {
        assert!(!log.contains(secret), "{secret} appears in the log");
    }
}
