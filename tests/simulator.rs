//! The Partner Center simulator over real HTTP on loopback: the wire format of the seed pages,
//! paging, tokens, throttling, faults and mutations.
#![cfg(feature = "simulator")]

use std::collections::HashSet;
use std::time::{Duration, Instant};

use pcsync::simulator::{
    Change, Endpoint, FaultKind, FaultRule, Knobs, SEED_CUSTOMER_ID, SEED_MPN_ID, SIM_CLIENT_ID,
    SIM_CLIENT_SECRET, SIM_REFRESH_TOKEN, SIM_TENANT_ID, SimConfig, Simulator,
};
use serde_json::{Value, json};
use uuid::Uuid;

const RESOURCE: &str = "https://api.partnercenter.microsoft.com";

async fn start(config: SimConfig) -> Simulator {
    Simulator::start(config).await.expect("simulator starts")
}

fn http() -> reqwest::Client {
    reqwest::Client::new()
}

async fn exchange(sim: &Simulator, form: &[(&str, &str)], v2: bool) -> reqwest::Response {
    let path = if v2 {
        "oauth2/v2.0/token"
    } else {
        "oauth2/token"
    };
    http()
        .post(format!("{}/{SIM_TENANT_ID}/{path}", sim.authority()))
        .form(form)
        .send()
        .await
        .expect("token endpoint answers")
}

async fn refresh(sim: &Simulator, refresh_token: &str) -> (reqwest::StatusCode, Value) {
    let r = exchange(
        sim,
        &[
            ("grant_type", "refresh_token"),
            ("client_id", SIM_CLIENT_ID),
            ("client_secret", SIM_CLIENT_SECRET),
            ("refresh_token", refresh_token),
            ("resource", RESOURCE),
        ],
        false,
    )
    .await;
    let status = r.status();
    (status, r.json().await.expect("json body"))
}

async fn user_token(sim: &Simulator) -> String {
    let (status, body) = refresh(sim, SIM_REFRESH_TOKEN).await;
    assert_eq!(status, 200, "{body}");
    body["access_token"]
        .as_str()
        .expect("access token")
        .to_string()
}

async fn app_token(sim: &Simulator) -> String {
    let r = exchange(
        sim,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", SIM_CLIENT_ID),
            ("client_secret", SIM_CLIENT_SECRET),
            ("scope", "https://api.partnercenter.microsoft.com/.default"),
        ],
        true,
    )
    .await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.expect("json");
    body["access_token"].as_str().expect("token").to_string()
}

async fn get(sim: &Simulator, token: &str, path: &str) -> reqwest::Response {
    http()
        .get(format!("{}{path}", sim.base_url()))
        .bearer_auth(token)
        .header("Accept", "application/json")
        .send()
        .await
        .expect("API answers")
}

async fn get_json(sim: &Simulator, token: &str, path: &str) -> (u16, Value) {
    let r = get(sim, token, path).await;
    let status = r.status().as_u16();
    (status, r.json().await.expect("json body"))
}

/// The JSON of a seed page's "Response example", as the page prints it (the managed services
/// page is cut off after its last item: the collection is closed here).
fn seed_page_items(file: &str, after: &str) -> Vec<Value> {
    let path = format!("{}/tests/fixtures/seeds/{file}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).expect("seed page");
    let start = text[text.find(after).expect("response example")..]
        .find('{')
        .map(|i| i + text.find(after).unwrap_or(0))
        .expect("json start");
    let body = match text[start..].find("See also") {
        Some(end) => text[start..start + end].to_string(),
        None => format!("{}]}}", text[start..].trim_end()),
    };
    let v: Value = serde_json::from_str(&body).expect("seed JSON parses");
    v["items"].as_array().expect("items").clone()
}

#[tokio::test]
async fn seed_customer_answers_exactly_the_seed_pages() {
    let sim = start(SimConfig::default()).await;
    let token = user_token(&sim).await;

    let expected = seed_page_items("003_e095fb185104e33c.txt", "Date: Thu, 13 Apr 2024");
    let (status, body) = get_json(
        &sim,
        &token,
        &format!("/v1/customers/{SEED_CUSTOMER_ID}/subscriptions?mpn_id={SEED_MPN_ID}"),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["totalCount"], 2);
    assert_eq!(body["attributes"]["objectType"], "Collection");
    assert_eq!(body["items"].as_array().expect("items"), &expected);

    let expected = seed_page_items("000_071f434e7ad58669.txt", "Date: Mon, 23 Nov 2015");
    let (status, body) = get_json(
        &sim,
        &token,
        &format!("/v1/customers/{SEED_CUSTOMER_ID}/managedservices"),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["totalCount"], 2);
    assert_eq!(body["items"].as_array().expect("items"), &expected);
}

/// Follows `links.next` as a correct client must: the uri is relative and may or may not start
/// with /v1; the headers are sent exactly as given.
async fn list_all(sim: &Simulator, token: &str, size: usize) -> (Vec<String>, Vec<String>) {
    let mut uri = format!("/v1/customers?size={size}");
    let mut headers: Vec<(String, String)> = Vec::new();
    let mut ids = Vec::new();
    let mut next_uris = Vec::new();
    loop {
        let mut req = http()
            .get(format!("{}{uri}", sim.base_url()))
            .bearer_auth(token);
        for (k, v) in &headers {
            req = req.header(k, v);
        }
        let r = req.send().await.expect("page");
        assert_eq!(r.status(), 200, "{uri}");
        let page: Value = r.json().await.expect("json");
        for c in page["items"].as_array().expect("items") {
            ids.push(c["id"].as_str().expect("id").to_string());
            assert_eq!(c["companyProfile"]["tenantId"], c["id"]);
        }
        let Some(next) = page["links"].get("next") else {
            break;
        };
        let raw = next["uri"].as_str().expect("next uri").to_string();
        next_uris.push(raw.clone());
        uri = if raw.starts_with("/v1/") {
            raw
        } else {
            format!("/v1{raw}")
        };
        headers = next["headers"]
            .as_array()
            .expect("headers")
            .iter()
            .map(|h| {
                (
                    h["key"].as_str().expect("key").to_string(),
                    h["value"].as_str().expect("value").to_string(),
                )
            })
            .collect();
    }
    (ids, next_uris)
}

#[tokio::test]
async fn customer_list_pages_to_the_end_in_both_next_uri_forms() {
    for with_v1 in [false, true] {
        let sim = start(SimConfig {
            customers: 1234,
            next_link_with_v1: with_v1,
            ..SimConfig::default()
        })
        .await;
        let token = user_token(&sim).await;
        let (ids, next_uris) = list_all(&sim, &token, 100).await;
        assert_eq!(ids.len(), 1234);
        assert_eq!(ids.iter().collect::<HashSet<_>>().len(), 1234, "no repeats");
        assert_eq!(next_uris.len(), 12, "13 pages");
        assert!(
            next_uris.iter().all(|u| u.starts_with("/v1/") == with_v1),
            "{next_uris:?}"
        );
        let expected: Vec<String> = sim.customer_ids().iter().map(Uuid::to_string).collect();
        assert_eq!(ids, expected);
    }
}

#[tokio::test]
async fn the_doubled_v1_prefix_bug_and_bad_paging_input_are_refused() {
    let sim = start(SimConfig {
        next_link_with_v1: true,
        ..SimConfig::default()
    })
    .await;
    let token = user_token(&sim).await;
    let (status, body) = get_json(&sim, &token, "/v1//v1/customers?size=10").await;
    assert_eq!(status, 404, "{body}");
    let (status, _) = get_json(&sim, &token, "/v1/customers?size=501").await;
    assert_eq!(status, 400);
    let r = http()
        .get(format!("{}/v1/customers?size=10", sim.base_url()))
        .bearer_auth(&token)
        .header("MS-ContinuationToken", "forged")
        .send()
        .await
        .expect("answers");
    assert_eq!(r.status(), 400);
}

#[tokio::test]
async fn throttles_with_retry_after_once_the_budget_is_spent() {
    let sim = start(SimConfig {
        knobs: Knobs {
            requests_per_minute: Some(60),
            burst: Some(3),
            ..Knobs::default()
        },
        ..SimConfig::default()
    })
    .await;
    let token = user_token(&sim).await;
    let path = format!("/v1/customers/{SEED_CUSTOMER_ID}/managedservices");
    for _ in 0..3 {
        assert_eq!(get(&sim, &token, &path).await.status(), 200);
    }
    let r = get(&sim, &token, &path).await;
    assert_eq!(r.status(), 429);
    let retry_after: u64 = r
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("Retry-After in seconds");
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["statusCode"], 429);
    assert_eq!(
        body["message"],
        format!("Rate limit is exceeded. Try again in {retry_after} seconds.")
    );
    let stats = sim.stats();
    assert_eq!(stats.throttled, 1);
    assert_eq!(stats.count(Endpoint::ManagedServices, 200), 3);
}

#[tokio::test]
async fn access_tokens_expire_and_refresh_tokens_rotate() {
    let sim = start(SimConfig {
        access_token_lifetime: Duration::from_secs(1),
        keep_rotated_refresh_tokens: false,
        ..SimConfig::default()
    })
    .await;
    let (status, body) = refresh(&sim, SIM_REFRESH_TOKEN).await;
    assert_eq!(status, 200);
    // v1 carries numbers as strings.
    assert_eq!(body["expires_in"], "1");
    assert_eq!(body["resource"], RESOURCE);
    let access = body["access_token"].as_str().expect("access").to_string();
    let rotated = body["refresh_token"].as_str().expect("rotated").to_string();
    assert_ne!(rotated, SIM_REFRESH_TOKEN);

    let path = format!("/v1/customers/{SEED_CUSTOMER_ID}/subscriptions");
    assert_eq!(get(&sim, &access, &path).await.status(), 200);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (status, body) = get_json(&sim, &access, &path).await;
    assert_eq!(status, 401, "expired token refused");
    assert_eq!(body["code"], 900401);
    assert_eq!(get(&sim, "", &path).await.status(), 401, "missing token");

    // The exchanged token was revoked by the rotation; the new one works once.
    let (status, body) = refresh(&sim, SIM_REFRESH_TOKEN).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"], "invalid_grant");
    assert!(
        body["error_description"]
            .as_str()
            .expect("text")
            .starts_with("AADSTS70000")
    );
    assert!(!sim.refresh_token_valid(SIM_REFRESH_TOKEN));
    let (status, body) = refresh(&sim, &rotated).await;
    assert_eq!(status, 200);
    let newest = body["refresh_token"].as_str().expect("rotated").to_string();

    sim.expire_refresh_tokens();
    let (status, body) = refresh(&sim, &newest).await;
    assert_eq!(status, 400);
    assert_eq!(body["error_codes"], json!([700082]));
}

#[tokio::test]
async fn v2_endpoint_numbers_and_entra_errors() {
    let sim = start(SimConfig::default()).await;
    let r = exchange(
        &sim,
        &[
            ("grant_type", "refresh_token"),
            ("client_id", SIM_CLIENT_ID),
            ("client_secret", SIM_CLIENT_SECRET),
            ("refresh_token", SIM_REFRESH_TOKEN),
            (
                "scope",
                "https://api.partnercenter.microsoft.com/user_impersonation offline_access",
            ),
        ],
        true,
    )
    .await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["expires_in"], 3600, "v2 carries numbers");
    assert!(body["refresh_token"].is_string());

    let r = exchange(
        &sim,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", SIM_CLIENT_ID),
            ("client_secret", "wrong"),
            ("resource", RESOURCE),
        ],
        false,
    )
    .await;
    assert_eq!(r.status(), 401);
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["error"], "invalid_client");

    // A token for another audience is refused by the API with 900420.
    let r = exchange(
        &sim,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", SIM_CLIENT_ID),
            ("client_secret", SIM_CLIENT_SECRET),
            ("resource", "https://graph.microsoft.com"),
        ],
        false,
    )
    .await;
    let body: Value = r.json().await.expect("json");
    let token = body["access_token"].as_str().expect("token");
    let (status, body) = get_json(&sim, token, "/v1/customers?size=1").await;
    assert_eq!(status, 401);
    assert_eq!(body["code"], 900420);
    assert_eq!(sim.stats().token_requests, 3);
}

#[tokio::test]
async fn app_only_tokens_are_refused_by_managed_services_only() {
    let sim = start(SimConfig::default()).await;
    let token = app_token(&sim).await;
    let (status, _) = get_json(
        &sim,
        &token,
        &format!("/v1/customers/{SEED_CUSTOMER_ID}/subscriptions"),
    )
    .await;
    assert_eq!(status, 200);
    let (status, body) = get_json(
        &sim,
        &token,
        &format!("/v1/customers/{SEED_CUSTOMER_ID}/managedservices"),
    )
    .await;
    assert_eq!(status, 403);
    assert!(
        body["description"]
            .as_str()
            .expect("text")
            .contains("App+User")
    );
}

#[tokio::test]
async fn customer_errors_have_partner_center_shapes() {
    let sim = start(SimConfig::default()).await;
    let token = user_token(&sim).await;
    let (status, body) = get_json(&sim, &token, "/v1/customers/not-a-guid/subscriptions").await;
    assert_eq!((status, body["code"].clone()), (400, json!(900118)));
    let unknown = Uuid::new_v4();
    let (status, body) = get_json(
        &sim,
        &token,
        &format!("/v1/customers/{unknown}/subscriptions"),
    )
    .await;
    assert_eq!(status, 404);
    assert_eq!(body["source"], "PartnerFD");
    let (status, _) = get_json(
        &sim,
        &token,
        &format!("/v1/customers/{SEED_CUSTOMER_ID}/subscriptions?mpn_id=12ab"),
    )
    .await;
    assert_eq!(status, 400);

    let customer = sim.customer_ids()[5];
    sim.apply(Change::RemoveRelationship {
        customer_id: customer,
    })
    .expect("applies");
    for path in ["subscriptions", "managedservices"] {
        let (status, body) =
            get_json(&sim, &token, &format!("/v1/customers/{customer}/{path}")).await;
        assert_eq!(status, 403);
        assert_eq!(body["code"], 20002);
    }
    let (ids, _) = list_all(&sim, &token, 500).await;
    assert!(!ids.contains(&customer.to_string()), "gone from the list");
}

#[tokio::test]
async fn subscriptions_filter_by_partner_id() {
    let sim = start(SimConfig {
        customers: 30,
        ..SimConfig::default()
    })
    .await;
    let token = user_token(&sim).await;
    let mut filtered_out = 0;
    for id in sim.customer_ids() {
        let (_, all) = get_json(&sim, &token, &format!("/v1/customers/{id}/subscriptions")).await;
        let (_, mine) = get_json(
            &sim,
            &token,
            &format!("/v1/customers/{id}/subscriptions?mpn_id={SEED_MPN_ID}"),
        )
        .await;
        let all = all["items"].as_array().expect("items").clone();
        let mine = mine["items"].as_array().expect("items").clone();
        assert!(mine.iter().all(|s| s["partnerId"] == SEED_MPN_ID));
        assert_eq!(
            mine.len(),
            all.iter().filter(|s| s["partnerId"] == SEED_MPN_ID).count()
        );
        filtered_out += all.len() - mine.len();
    }
    assert!(
        filtered_out > 0,
        "some subscriptions belong to other partners"
    );
}

#[tokio::test]
async fn faults_are_injected_as_configured() {
    let sim = start(SimConfig::default()).await;
    let token = user_token(&sim).await;
    let ids = sim.customer_ids();
    let path = |i: usize| format!("/v1/customers/{}/subscriptions", ids[i]);
    sim.set_knobs(Knobs {
        faults: vec![
            FaultRule::always(FaultKind::Status500)
                .for_customer(ids[1])
                .times(2),
            FaultRule::always(FaultKind::Status503).for_customer(ids[2]),
            FaultRule::always(FaultKind::Truncated).for_customer(ids[3]),
            FaultRule::always(FaultKind::Malformed).for_customer(ids[4]),
            FaultRule::always(FaultKind::Bom).for_customer(ids[5]),
            FaultRule::always(FaultKind::MfaRequired).for_customer(ids[6]),
        ],
        hang_secs: Some(30),
        ..Knobs::default()
    });
    // 500 twice, then healthy.
    for _ in 0..2 {
        let (status, body) = get_json(&sim, &token, &path(1)).await;
        assert_eq!((status, body["code"].clone()), (500, json!(500)));
    }
    assert_eq!(get(&sim, &token, &path(1)).await.status(), 200);
    let r = get(&sim, &token, &path(2)).await;
    assert_eq!(r.status(), 503);
    assert!(r.bytes().await.expect("body").is_empty());
    let text = get(&sim, &token, &path(3))
        .await
        .text()
        .await
        .expect("body");
    assert!(serde_json::from_str::<Value>(&text).is_err(), "truncated");
    assert!(text.starts_with("{\""));
    let text = get(&sim, &token, &path(4))
        .await
        .text()
        .await
        .expect("body");
    assert!(serde_json::from_str::<Value>(&text).is_err(), "malformed");
    let bytes = get(&sim, &token, &path(5))
        .await
        .bytes()
        .await
        .expect("body");
    assert_eq!(&bytes[..3], b"\xEF\xBB\xBF");
    assert!(serde_json::from_slice::<Value>(&bytes[3..]).is_ok());
    let (status, body) = get_json(&sim, &token, &path(6)).await;
    assert_eq!((status, body["code"].clone()), (401, json!(900421)));
    assert_eq!(sim.stats().faults_injected, 7);

    // A hang outlasts a client's timeout.
    sim.set_knobs(Knobs {
        faults: vec![FaultRule::always(FaultKind::Hang).for_customer(ids[7])],
        hang_secs: Some(30),
        ..Knobs::default()
    });
    let started = Instant::now();
    let r = http()
        .get(format!("{}{}", sim.base_url(), path(7)))
        .bearer_auth(&token)
        .timeout(Duration::from_millis(300))
        .send()
        .await;
    assert!(r.is_err_and(|e| e.is_timeout()));
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn latency_and_concurrency_are_measured() {
    let sim = start(SimConfig {
        knobs: Knobs {
            latency_ms: 100,
            ..Knobs::default()
        },
        ..SimConfig::default()
    })
    .await;
    let token = user_token(&sim).await;
    let started = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for id in sim.customer_ids().into_iter().take(8) {
        let url = format!("{}/v1/customers/{id}/managedservices", sim.base_url());
        let token = token.clone();
        set.spawn(async move {
            http()
                .get(url)
                .bearer_auth(token)
                .send()
                .await
                .map(|r| r.status())
        });
    }
    while let Some(r) = set.join_next().await {
        assert_eq!(r.expect("task").expect("request"), 200);
    }
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_millis(100), "{elapsed:?}");
    let stats = sim.stats();
    assert_eq!(stats.max_concurrent, 8, "all eight were in flight together");
    assert_eq!(stats.api_requests, 8);
}

#[tokio::test]
async fn mutations_are_deterministic_and_visible_over_http() {
    let config = SimConfig {
        customers: 100,
        seed: 7,
        ..SimConfig::default()
    };
    let a = start(config.clone()).await;
    let b = start(config).await;
    let changes_a = a.mutate(0.05, 42);
    let changes_b = b.mutate(0.05, 42);
    assert!(!changes_a.is_empty());
    assert_eq!(changes_a, changes_b);

    // Over the control API too, and the API shows the change.
    let first = &changes_a[0];
    let token = user_token(&a).await;
    let (_, body) = get_json(
        &a,
        &token,
        &format!("/v1/customers/{}/subscriptions", first.customer_id),
    )
    .await;
    let field = first.field.clone().expect("a field change");
    let sub = body["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|s| s["id"] == first.entity_id.as_str())
        .expect("subscription");
    assert_eq!(Some(&sub[field.as_str()]), first.new.as_ref());

    let r = http()
        .post(format!("{}/_sim/change", a.base_url()))
        .json(&json!({"op": "add_customer"}))
        .send()
        .await
        .expect("control answers");
    assert_eq!(r.status(), 200);
    assert_eq!(a.customer_ids().len(), 101);
    let r = http()
        .post(format!("{}/_sim/mutate", a.base_url()))
        .json(&json!({"fraction": 0.01, "seed": 3}))
        .send()
        .await
        .expect("control answers");
    assert_eq!(r.status(), 200);
    let stats: Value = http()
        .get(format!("{}/_sim/stats", a.base_url()))
        .send()
        .await
        .expect("stats")
        .json()
        .await
        .expect("json");
    assert_eq!(stats["api_requests"], 1);
    assert_eq!(stats["token_requests"], 1);
}
