//! The Partner Center client against the simulator, over real HTTP on loopback.
#![cfg(feature = "simulator")]

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::TestDb;
use pcsync::config::{Settings, Sources};
use pcsync::partner_center::fields::FieldValue;
use pcsync::partner_center::retry::Backoff;
use pcsync::partner_center::{
    ApiError, AuthError, CustomerAnswer, PartnerCenterClient, RefreshTokenStore,
};
use pcsync::simulator::{
    Change, Endpoint, FaultKind, FaultRule, Knobs, SEED_CUSTOMER_ID, SEED_MPN_ID,
    SIM_REFRESH_TOKEN, SimConfig, Simulator,
};
use pcsync::sync::resource::{ManagedService, SubscribedSku, Subscription};
use uuid::Uuid;

fn settings(sim: &Simulator, extra: &[(&str, &str)]) -> Settings {
    let mut env: HashMap<String, String> = sim.env_vars().into_iter().collect();
    for (k, v) in extra {
        env.insert(k.to_string(), v.to_string());
    }
    Settings::load(&Sources { file: None, env }).expect("valid settings")
}

async fn client_with(
    sim: &Simulator,
    extra: &[(&str, &str)],
    store: Option<RefreshTokenStore>,
) -> Result<PartnerCenterClient, AuthError> {
    let s = settings(sim, extra);
    let creds = s.auth.credentials().expect("complete credentials");
    Ok(
        PartnerCenterClient::new(&s.partner_center, creds, store, Uuid::new_v4())
            .await?
            .with_backoff(Backoff {
                base: Duration::from_millis(10),
                cap: Duration::from_millis(100),
            }),
    )
}

async fn client(sim: &Simulator, extra: &[(&str, &str)]) -> PartnerCenterClient {
    client_with(sim, extra, None).await.expect("client")
}

fn seed() -> Uuid {
    Uuid::parse_str(SEED_CUSTOMER_ID).expect("guid")
}

/// Unlimited budget, for tests about something else.
const FAST: (&str, &str) = ("PCSYNC__PARTNER_CENTER__REQUESTS_PER_MINUTE", "100000");

#[tokio::test]
async fn app_user_reads_subscriptions_and_managed_services() {
    let sim = Simulator::start(SimConfig::default()).await.expect("sim");
    let c = client(&sim, &[FAST]).await;
    let subs = c
        .subscriptions(seed(), Some(SEED_MPN_ID), Subscription::from_raw)
        .await
        .expect("subscriptions");
    assert_eq!(subs.len(), 2);
    let nce = subs
        .iter()
        .find(|s| s.id == "bbbb1b1b-cc2c-dd3d-ee4e-ffffff5f5f5f")
        .expect("the new-commerce subscription");
    assert_eq!(nce.text("offer_id"), Some("CFQ7TTC0LH18:0001:CFQ7TTC0P0WS"));
    assert_eq!(nce.get("quantity"), Some(&FieldValue::Integer(2)));
    assert_eq!(nce.get("renewal_term_duration"), None);
    assert_eq!(nce.text("order_id"), Some("79d9f5e2f43a"));
    assert_eq!(nce.text("product_type"), Some("OnlineServicesNCE"));
    assert_eq!(
        nce.get("creation_date").map(FieldValue::to_text).as_deref(),
        Some("2024-06-05T19:26:38.366763Z"),
        "7 digits, truncated to the microseconds PostgreSQL keeps"
    );
    assert!(nce.raw.get().contains("\"refundableQuantity\""));
    let services = c
        .managed_services(seed(), ManagedService::from_raw)
        .await
        .expect("managed services");
    assert_eq!(
        services.iter().map(|m| m.id.as_str()).collect::<Vec<_>>(),
        vec!["Exchange", "MicrosoftCommunicationsOnline"]
    );
    assert!(
        services[0]
            .text("admin_service_uri")
            .is_some_and(|u| u.contains("CSDEST=Exchange"))
    );

    // Without the partner filter every partner's subscriptions come back.
    let id = sim.customer_ids()[3];
    let all = c
        .subscriptions(id, None, Subscription::from_raw)
        .await
        .expect("all");
    let mine = c
        .subscriptions(id, Some(SEED_MPN_ID), Subscription::from_raw)
        .await
        .expect("mine");
    assert!(mine.len() <= all.len());
    assert!(
        mine.iter()
            .all(|s| s.text("partner_id") == Some(SEED_MPN_ID))
    );
}

#[tokio::test]
async fn app_only_and_v2_tokens() {
    let sim = Simulator::start(SimConfig::default()).await.expect("sim");
    let c = client(
        &sim,
        &[
            FAST,
            ("PCSYNC__AUTH__MODE", "app_only"),
            ("PCSYNC__AUTH__TOKEN_VERSION", "v2"),
        ],
    )
    .await;
    assert_eq!(
        c.subscriptions(seed(), None, Subscription::from_raw)
            .await
            .expect("subs")
            .len(),
        2
    );
    let err = c
        .managed_services(seed(), ManagedService::from_raw)
        .await
        .expect_err("App+User only");
    assert!(matches!(err, ApiError::Forbidden(_)), "{err}");
    let c = client(&sim, &[FAST, ("PCSYNC__AUTH__TOKEN_VERSION", "v2")]).await;
    assert_eq!(
        c.managed_services(seed(), ManagedService::from_raw)
            .await
            .expect("services")
            .len(),
        2
    );
}

#[tokio::test]
async fn short_lived_tokens_are_refreshed_once_per_expiry_not_per_request() {
    let sim = Simulator::start(SimConfig {
        access_token_lifetime: Duration::from_secs(2),
        ..SimConfig::default()
    })
    .await
    .expect("sim");
    let c = Arc::new(
        client(
            &sim,
            &[FAST, ("PCSYNC__PARTNER_CENTER__MAX_CONCURRENCY", "8")],
        )
        .await,
    );
    let ids = sim.customer_ids();
    let started = Instant::now();
    let mut requests = 0;
    // About five seconds of concurrent requests: two or three token lifetimes.
    while started.elapsed() < Duration::from_secs(5) {
        let mut set = tokio::task::JoinSet::new();
        for id in ids.iter().take(16).copied() {
            let c = c.clone();
            set.spawn(async move {
                c.subscriptions(id, None, Subscription::from_raw)
                    .await
                    .map(|s| s.len())
            });
        }
        while let Some(r) = set.join_next().await {
            r.expect("task")
                .expect("request succeeds across token expiry");
            requests += 1;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let token_requests = c.tokens().token_requests();
    let stats = sim.stats();
    assert!(requests > 200, "{requests}");
    // 5 s of 2 s tokens refreshed 10% early: 3 or 4 fetches, never one per request.
    assert!(
        (2..=5).contains(&token_requests),
        "{token_requests} token requests"
    );
    assert_eq!(stats.token_requests, token_requests);
    assert_eq!(
        stats.count(Endpoint::Subscriptions, 401),
        0,
        "refreshed ahead of expiry"
    );
}

#[tokio::test]
async fn an_expired_token_gets_one_refresh_and_a_retry() {
    let sim = Simulator::start(SimConfig::default()).await.expect("sim");
    let c = client(&sim, &[FAST]).await;
    c.subscriptions(seed(), None, Subscription::from_raw)
        .await
        .expect("first");
    sim.expire_access_tokens();
    c.subscriptions(seed(), None, Subscription::from_raw)
        .await
        .expect("after a 401 and a refresh");
    assert_eq!(sim.stats().count(Endpoint::Subscriptions, 401), 1);
    assert_eq!(c.tokens().token_requests(), 2);
}

#[tokio::test]
async fn rotated_refresh_tokens_are_persisted_and_used_after_a_restart() {
    let db = TestDb::migrated().await;
    let sim = Simulator::start(SimConfig {
        keep_rotated_refresh_tokens: false,
        ..SimConfig::default()
    })
    .await
    .expect("sim");
    let store = RefreshTokenStore::new(db.pool.clone());
    let first = client_with(&sim, &[FAST], Some(store.clone()))
        .await
        .expect("client");
    first
        .subscriptions(seed(), None, Subscription::from_raw)
        .await
        .expect("works");
    assert!(!sim.refresh_token_valid(SIM_REFRESH_TOKEN), "rotated away");
    let stored: String =
        sqlx::query_scalar("SELECT refresh_token FROM pcsync_private.refresh_tokens")
            .fetch_one(&db.pool)
            .await
            .expect("stored");
    assert!(sim.refresh_token_valid(&stored));

    // A restart with the same (now dead) configured token uses the stored one.
    let second = client_with(&sim, &[FAST], Some(store.clone()))
        .await
        .expect("client");
    second
        .subscriptions(seed(), None, Subscription::from_raw)
        .await
        .expect("works after restart");

    // Without the store the configured token is all there is, and it is dead.
    let third = client_with(&sim, &[FAST], None).await.expect("client");
    let err = third
        .subscriptions(seed(), None, Subscription::from_raw)
        .await
        .expect_err("dead token");
    assert!(
        matches!(err, ApiError::Auth(AuthError::InvalidGrant(_))),
        "{err}"
    );
    assert!(err.is_fatal());

    // Reporting roles see the pcsync schema, not this one.
    let private_in_pcsync: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM information_schema.columns WHERE table_schema = 'pcsync' AND column_name = 'refresh_token'",
    )
    .fetch_one(&db.pool)
    .await
    .expect("query");
    assert_eq!(private_in_pcsync, 0);
}

#[tokio::test]
async fn a_newly_configured_refresh_token_wins_over_the_stored_chain() {
    let db = TestDb::migrated().await;
    let sim = Simulator::start(SimConfig::default()).await.expect("sim");
    let store = RefreshTokenStore::new(db.pool.clone());
    client_with(&sim, &[FAST], Some(store.clone()))
        .await
        .expect("client")
        .subscriptions(seed(), None, Subscription::from_raw)
        .await
        .expect("works");
    // The operator consents again and configures the new token.
    let stored: String =
        sqlx::query_scalar("SELECT refresh_token FROM pcsync_private.refresh_tokens")
            .fetch_one(&db.pool)
            .await
            .expect("stored");
    sqlx::query("UPDATE pcsync_private.refresh_tokens SET refresh_token = 'revoked-junk'")
        .execute(&db.pool)
        .await
        .expect("update");
    let c = client_with(
        &sim,
        &[FAST, ("PCSYNC__AUTH__REFRESH_TOKEN", &stored)],
        Some(store),
    )
    .await
    .expect("client");
    c.subscriptions(seed(), None, Subscription::from_raw)
        .await
        .expect("the configured token is used, not the junk in the store");
}

#[tokio::test]
async fn auth_failures_say_what_to_do() {
    let sim = Simulator::start(SimConfig::default()).await.expect("sim");
    let c = client(&sim, &[FAST, ("PCSYNC__AUTH__CLIENT_SECRET", "wrong")]).await;
    let err = c
        .subscriptions(seed(), None, Subscription::from_raw)
        .await
        .expect_err("bad secret");
    assert!(
        matches!(err, ApiError::Auth(AuthError::InvalidClient(_))),
        "{err}"
    );
    assert!(err.to_string().contains("auth.client_secret"));
    assert!(!err.to_string().contains("wrong"));

    sim.expire_refresh_tokens();
    let c = client(&sim, &[FAST]).await;
    let err = c
        .subscriptions(seed(), None, Subscription::from_raw)
        .await
        .expect_err("expired");
    assert!(
        matches!(err, ApiError::Auth(AuthError::RefreshTokenExpired(_))),
        "{err}"
    );
    assert!(err.to_string().contains("AADSTS700082"));

    let sim = Simulator::start(SimConfig::default()).await.expect("sim");
    sim.set_knobs(Knobs {
        faults: vec![FaultRule::always(FaultKind::MfaRequired)],
        ..Knobs::default()
    });
    let c = client(&sim, &[FAST]).await;
    let err = c
        .subscriptions(seed(), None, Subscription::from_raw)
        .await
        .expect_err("no MFA");
    assert!(
        matches!(err, ApiError::Auth(AuthError::MfaRequired(_))),
        "{err}"
    );
    assert!(err.to_string().contains("900421"));
}

#[tokio::test]
async fn retry_after_is_honoured_and_counted() {
    let sim = Simulator::start(SimConfig {
        knobs: Knobs {
            requests_per_minute: Some(60),
            burst: Some(1),
            ..Knobs::default()
        },
        ..SimConfig::default()
    })
    .await
    .expect("sim");
    // pcsync believes it may send far more than the simulator allows.
    let c = client(&sim, &[FAST]).await;
    c.subscriptions(seed(), None, Subscription::from_raw)
        .await
        .expect("first");
    let started = Instant::now();
    c.subscriptions(seed(), None, Subscription::from_raw)
        .await
        .expect("second, after waiting");
    let waited = started.elapsed();
    let stats = sim.stats();
    assert!(stats.throttled >= 1);
    // The simulator said Retry-After: 1 (whole seconds, rounded up).
    assert!(waited >= Duration::from_secs(1), "waited only {waited:?}");
    let counters = c.counters();
    assert_eq!(counters.throttled, stats.throttled);
    assert!(counters.retries >= 1);
}

#[tokio::test]
async fn the_budget_keeps_the_simulator_from_throttling() {
    let sim = Simulator::start(SimConfig {
        knobs: Knobs {
            requests_per_minute: Some(1200),
            burst: Some(5),
            ..Knobs::default()
        },
        ..SimConfig::default()
    })
    .await
    .expect("sim");
    let c = Arc::new(
        client(
            &sim,
            &[
                ("PCSYNC__PARTNER_CENTER__REQUESTS_PER_MINUTE", "1200"),
                ("PCSYNC__PARTNER_CENTER__MAX_CONCURRENCY", "16"),
            ],
        )
        .await,
    );
    let started = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for id in sim.customer_ids().into_iter().take(60) {
        let c = c.clone();
        set.spawn(async move {
            c.managed_services(id, ManagedService::from_raw)
                .await
                .map(|s| s.len())
        });
    }
    while let Some(r) = set.join_next().await {
        r.expect("task").expect("request");
    }
    let elapsed = started.elapsed();
    let stats = sim.stats();
    assert_eq!(stats.throttled, 0, "a healthy run meets no 429");
    assert_eq!(stats.api_requests, 60);
    // 60 requests at 20/s: at least 59 intervals of 50 ms.
    assert!(elapsed >= Duration::from_millis(2800), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(6), "{elapsed:?}");
    assert!(stats.max_concurrent <= 16);
}

#[tokio::test]
async fn server_errors_are_retried_then_reported() {
    let sim = Simulator::start(SimConfig::default()).await.expect("sim");
    let ids = sim.customer_ids();
    sim.set_knobs(Knobs {
        faults: vec![
            FaultRule::always(FaultKind::Status503)
                .for_customer(ids[1])
                .times(2),
            FaultRule::always(FaultKind::Status500).for_customer(ids[2]),
        ],
        ..Knobs::default()
    });
    let c = client(&sim, &[FAST, ("PCSYNC__PARTNER_CENTER__MAX_ATTEMPTS", "3")]).await;
    c.subscriptions(ids[1], None, Subscription::from_raw)
        .await
        .expect("third attempt succeeds");
    assert_eq!(c.counters().retries, 2);
    let err = c
        .subscriptions(ids[2], None, Subscription::from_raw)
        .await
        .expect_err("always 500");
    let ApiError::Server(ctx) = &err else {
        panic!("expected a server error, got {err}");
    };
    assert_eq!(ctx.http_status, Some(500));
    assert_eq!(ctx.code.as_deref(), Some("500"));
    assert!(Uuid::parse_str(&ctx.request_id).is_ok());
    assert_eq!(ctx.correlation_id, c.correlation_id().to_string());
    assert!(
        err.to_string().contains(&ctx.request_id),
        "ids in the message: {err}"
    );
    assert_eq!(
        sim.stats().count(Endpoint::Subscriptions, 500),
        3,
        "3 attempts"
    );
}

#[tokio::test]
async fn a_hung_request_times_out_and_is_retried() {
    let sim = Simulator::start(SimConfig::default()).await.expect("sim");
    sim.set_knobs(Knobs {
        faults: vec![
            FaultRule::always(FaultKind::Hang)
                .for_customer(seed())
                .times(1),
        ],
        hang_secs: Some(60),
        ..Knobs::default()
    });
    let c = client(
        &sim,
        &[FAST, ("PCSYNC__PARTNER_CENTER__REQUEST_TIMEOUT_SECS", "1")],
    )
    .await;
    let started = Instant::now();
    c.subscriptions(seed(), None, Subscription::from_raw)
        .await
        .expect("second attempt");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(c.counters().retries, 1);
    assert_eq!(
        sim.stats().repeated_request_ids,
        1,
        "the retry after the timeout carried the same MS-RequestId"
    );
}

#[tokio::test]
async fn client_errors_are_typed_and_not_retried() {
    let sim = Simulator::start(SimConfig::default()).await.expect("sim");
    let c = client(&sim, &[FAST]).await;
    let gone = sim.customer_ids()[4];
    sim.apply(Change::RemoveRelationship { customer_id: gone })
        .expect("applies");
    let err = c
        .subscriptions(gone, None, Subscription::from_raw)
        .await
        .expect_err("403");
    let ApiError::AccessRevoked(ctx) = &err else {
        panic!("expected access revoked, got {err}");
    };
    assert_eq!(
        (ctx.http_status, ctx.code.as_deref()),
        (Some(403), Some("20002"))
    );
    let err = c
        .subscriptions(Uuid::new_v4(), None, Subscription::from_raw)
        .await
        .expect_err("404");
    assert!(matches!(err, ApiError::NotFound(_)), "{err}");
    let err = c
        .subscriptions(seed(), Some("12ab"), Subscription::from_raw)
        .await
        .expect_err("bad mpn");
    assert!(matches!(err, ApiError::InvalidInput(_)), "{err}");
    assert_eq!(c.counters().retries, 0);
    assert_eq!(
        sim.stats().api_requests,
        2,
        "the bad MPN id never left the process"
    );
}

#[tokio::test]
async fn bom_is_accepted_and_broken_json_is_a_typed_error() {
    let sim = Simulator::start(SimConfig::default()).await.expect("sim");
    let ids = sim.customer_ids();
    sim.set_knobs(Knobs {
        faults: vec![
            FaultRule::always(FaultKind::Bom).for_customer(ids[0]),
            FaultRule::always(FaultKind::Malformed).for_customer(ids[1]),
            FaultRule::always(FaultKind::Truncated).for_customer(ids[2]),
        ],
        ..Knobs::default()
    });
    let c = client(&sim, &[FAST]).await;
    assert_eq!(
        c.subscriptions(ids[0], None, Subscription::from_raw)
            .await
            .expect("BOM is fine")
            .len(),
        2
    );
    for id in &ids[1..3] {
        let err = c
            .subscriptions(*id, None, Subscription::from_raw)
            .await
            .expect_err("broken body");
        let ApiError::Decode(ctx) = &err else {
            panic!("expected a decode error, got {err}");
        };
        assert_eq!(ctx.http_status, Some(200));
        assert!(
            ctx.description
                .as_deref()
                .is_some_and(|d| d.contains("JSON"))
        );
    }
}

#[tokio::test]
async fn customer_list_pages_to_the_end_in_both_forms() {
    for with_v1 in [false, true] {
        let sim = Simulator::start(SimConfig {
            customers: 1234,
            next_link_with_v1: with_v1,
            ..SimConfig::default()
        })
        .await
        .expect("sim");
        let c = client(&sim, &[FAST]).await;
        let answer = c.customers(100).collect_all().await.expect("every page");
        let CustomerAnswer::Complete(all) = answer else {
            panic!("the list is complete: {answer:?}");
        };
        assert_eq!(all.len(), 1234);
        let unique: HashSet<Uuid> = all.iter().map(|c| c.id).collect();
        assert_eq!(unique.len(), 1234);
        assert_eq!(sim.stats().count(Endpoint::Customers, 200), 13);
        assert_eq!(sim.stats().total(Endpoint::Other), 0, "no /v1//v1 request");
        assert_eq!(
            all[0].company_name.as_deref(),
            Some("Contoso Seed Customer")
        );
    }
}

/// An item of an answer as the object Partner Center sent.
fn as_object(
    raw: Box<serde_json::value::RawValue>,
) -> Result<serde_json::Map<String, serde_json::Value>, pcsync::partner_center::ParseError> {
    pcsync::partner_center::models::object_of(&raw)
}

/// The published Partner Center bodies whose names start with `prefix` (see
/// `common::pc_real_dir`).
fn published(prefix: &str) -> Vec<(String, String)> {
    let Some(dir) = common::pc_real_dir() else {
        return Vec::new();
    };
    let Ok(entries) = std::fs::read_dir(&dir) else {
        panic!("{} cannot be read", dir.display());
    };
    let mut files: Vec<(String, String)> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            name.starts_with(prefix)
                .then(|| std::fs::read_to_string(e.path()).ok().map(|t| (name, t)))
                .flatten()
        })
        .collect();
    files.sort();
    files
}

#[tokio::test]
async fn subscribed_skus_read_every_published_body_and_refuse_the_broken_ones() {
    let sim = Simulator::start(SimConfig::default()).await.expect("sim");
    let c = client(&sim, &[FAST]).await;
    let bodies = published("subscribedskus__");
    for (name, body) in &bodies {
        sim.set_knobs(Knobs {
            subscribed_skus_body: Some(body.clone()),
            ..Knobs::default()
        });
        let answer = c.subscribed_skus(seed(), SubscribedSku::from_raw).await;
        if name.ends_with(".json") {
            let text = body.trim_start_matches('\u{feff}');
            let expected: serde_json::Value = serde_json::from_str(text).expect("valid JSON");
            let items = expected["items"].as_array().cloned().unwrap_or_default();
            let got = answer.unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(got.len(), items.len(), "{name}: every item");
            for (g, e) in got.iter().zip(&items) {
                let kept: serde_json::Value = serde_json::from_str(g.raw.get()).expect("json");
                assert_eq!(kept, *e, "{name}: kept whole");
            }
        } else {
            assert!(answer.is_err(), "{name} is not JSON: refused");
        }
    }
    // The simulated ones: a SKU per offer held, and free SKUs no subscription matches.
    sim.set_knobs(Knobs::default());
    let id = sim.customer_ids()[5];
    let skus = c.subscribed_skus(id, as_object).await.expect("skus");
    assert!(skus.len() >= 3, "{}", skus.len());
    for s in skus.iter() {
        let n = |k: &str| s.get(k).and_then(serde_json::Value::as_i64).unwrap_or(-1);
        assert!(n("consumedUnits") >= 0 && n("consumedUnits") <= n("activeUnits").max(3));
        assert!(
            s["productSku"]["id"]
                .as_str()
                .is_some_and(|i| Uuid::parse_str(i).is_ok())
        );
    }
    assert!(
        skus.iter()
            .any(|s| s["productSku"]["skuPartNumber"] == "FLOW_FREE")
    );
    assert_eq!(
        c.subscribed_skus(id, as_object).await.expect("again"),
        skus,
        "the same answer until something changes"
    );
    let app_only = client(&sim, &[FAST, ("PCSYNC__AUTH__MODE", "app_only")]).await;
    let err = app_only
        .subscribed_skus(id, as_object)
        .await
        .expect_err("App+User only");
    assert!(matches!(err, ApiError::Forbidden(_)), "{err}");
}
