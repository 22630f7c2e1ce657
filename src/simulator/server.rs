//! The simulator's HTTP side: routes, Entra ID token exchange, bearer checks, the rate budget,
//! injected faults and the counters.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::rejection::{FormRejection, JsonRejection};
use axum::extract::{Form, Json, Path, Query, State as AxState};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use super::data::{Parts, Rng};
use super::{
    Endpoint, FaultKind, Knobs, PARTNER_CENTER_RESOURCE, RefreshToken, State, Token, limiter_for,
    lock,
};
use crate::config::is_mpn_id;

type Shared = Arc<State>;

pub(crate) fn router(state: Shared) -> Router {
    Router::new()
        .route("/{tenant}/oauth2/token", post(token_v1))
        .route("/{tenant}/oauth2/v2.0/token", post(token_v2))
        .route("/v1/customers", get(customers))
        .route("/v1/customers/{id}/subscriptions", get(subscriptions))
        .route("/v1/customers/{id}/managedservices", get(managed_services))
        .route("/v1/customers/{id}/subscribedskus", get(subscribed_skus))
        .route("/v1/auditrecords", get(audit_records))
        .route(EMPTY_PAGE, get(empty_page))
        .route("/_sim/stats", get(stats))
        .route("/_sim/reset_stats", post(reset_stats))
        .route("/_sim/mutate", post(mutate))
        .route("/_sim/change", post(change))
        .route("/_sim/knobs", get(get_knobs).put(put_knobs))
        .fallback(not_found)
        .with_state(state)
}

/// Several partner tenants behind one address: a request goes to the router of the tenant its
/// token endpoint path names, or whose access token it carries; anything else (no token, an
/// unknown one, `/_sim/…`) to the first tenant, which answers as it would alone.
pub(crate) fn tenants_router(states: Vec<Shared>) -> Router {
    let routers: Arc<Vec<(Shared, Router)>> =
        Arc::new(states.into_iter().map(|s| (s.clone(), router(s))).collect());
    Router::new().fallback(move |req: axum::extract::Request| {
        let routers = routers.clone();
        async move {
            let path_tenant = req
                .uri()
                .path()
                .trim_start_matches('/')
                .split_once('/')
                .filter(|(_, rest)| rest.starts_with("oauth2/"))
                .map(|(t, _)| t.to_string());
            let bearer = req
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(str::to_string);
            let pick = routers
                .iter()
                .position(|(s, _)| match (&path_tenant, &bearer) {
                    (Some(t), _) => s.config.tenant.tenant_id == *t,
                    (None, Some(b)) => lock(&s.auth).access.contains_key(b),
                    (None, None) => false,
                })
                .unwrap_or(0);
            let mut chosen = routers[pick].1.clone();
            match tower_service::Service::call(&mut chosen, req).await {
                Ok(response) => response,
                Err(never) => match never {},
            }
        }
    })
}

pub(crate) fn set_knobs(state: &State, knobs: Knobs) {
    *lock(&state.limiter) = limiter_for(&knobs);
    *lock(&state.knobs) = knobs;
}

fn record(state: &State, endpoint: Endpoint, status: StatusCode) {
    let mut s = lock(&state.stats);
    *s.requests
        .entry(endpoint)
        .or_default()
        .entry(status.as_u16())
        .or_default() += 1;
    match endpoint {
        Endpoint::Token => s.token_requests += 1,
        Endpoint::Customers
        | Endpoint::Subscriptions
        | Endpoint::ManagedServices
        | Endpoint::SubscribedSkus
        | Endpoint::AuditRecords => {
            s.api_requests += 1;
            if status == StatusCode::TOO_MANY_REQUESTS {
                s.throttled += 1;
            }
        }
        Endpoint::Control | Endpoint::Other => {}
    }
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    raw_response(status, bytes)
}

fn raw_response(status: StatusCode, body: Vec<u8>) -> Response {
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    r
}

// ---- Entra ID ------------------------------------------------------------------------------

/// Entra ID's error shape: `{"error": ..., "error_description": "AADSTS...: ...", "error_codes": [...]}`.
fn entra_error(status: StatusCode, error: &str, code: u32, description: &str) -> Response {
    json_response(
        status,
        &json!({
            "error": error,
            "error_description": format!("AADSTS{code}: {description} Trace ID: {} Correlation ID: {} Timestamp: {}",
                Uuid::new_v4(), Uuid::new_v4(), chrono::Utc::now().format("%Y-%m-%d %H:%M:%SZ")),
            "error_codes": [code],
            "timestamp": chrono::Utc::now().format("%Y-%m-%d %H:%M:%SZ").to_string(),
            "trace_id": Uuid::new_v4().to_string(),
            "correlation_id": Uuid::new_v4().to_string(),
        }),
    )
}

async fn token_v1(
    AxState(state): AxState<Shared>,
    Path(tenant): Path<String>,
    form: Result<Form<HashMap<String, String>>, FormRejection>,
) -> Response {
    token(&state, &tenant, false, form).await
}

async fn token_v2(
    AxState(state): AxState<Shared>,
    Path(tenant): Path<String>,
    form: Result<Form<HashMap<String, String>>, FormRejection>,
) -> Response {
    token(&state, &tenant, true, form).await
}

async fn token(
    state: &State,
    tenant: &str,
    v2: bool,
    form: Result<Form<HashMap<String, String>>, FormRejection>,
) -> Response {
    let response = match token_fault(state).await {
        Some(r) => r,
        None => token_inner(state, tenant, v2, form),
    };
    record(state, Endpoint::Token, response.status());
    response
}

/// Faults of the token endpoint (rules with `endpoint = token`): Entra ID has bad moments too.
async fn token_fault(state: &State) -> Option<Response> {
    let knobs = lock(&state.knobs).clone();
    let n = state.request_counter.fetch_add(1, Ordering::Relaxed);
    let mut rng = Rng::derive(state.config.seed, 0x70CE, n);
    let kind = pick_fault(state, &knobs, Endpoint::Token, None, &mut rng)?;
    lock(&state.stats).faults_injected += 1;
    Some(match kind {
        FaultKind::Status500 => entra_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "temporarily_unavailable",
            50001,
            "The service is temporarily unavailable.",
        ),
        FaultKind::Status503 => {
            let mut r = raw_response(StatusCode::SERVICE_UNAVAILABLE, Vec::new());
            r.headers_mut().remove(header::CONTENT_TYPE);
            r
        }
        FaultKind::Status429 => throttled(1),
        FaultKind::Hang => {
            tokio::time::sleep(Duration::from_secs(knobs.hang_secs.unwrap_or(300))).await;
            raw_response(StatusCode::GATEWAY_TIMEOUT, Vec::new())
        }
        FaultKind::Redirect => redirect_to_empty(),
        _ => raw_response(
            StatusCode::OK,
            b"<html><body>sign-in page</body></html>".to_vec(),
        ),
    })
}

fn token_inner(
    state: &State,
    tenant: &str,
    v2: bool,
    form: Result<Form<HashMap<String, String>>, FormRejection>,
) -> Response {
    let Ok(Form(form)) = form else {
        return entra_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            900144,
            "The request body must contain the following parameter: 'grant_type'.",
        );
    };
    let field = |k: &str| form.get(k).map(String::as_str).unwrap_or_default();
    let me = &state.config.tenant;
    if tenant != me.tenant_id {
        return entra_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            90002,
            &format!("Tenant '{tenant}' not found."),
        );
    }
    if field("client_id") != me.client_id {
        return entra_error(
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            700016,
            "Application with identifier was not found in the directory.",
        );
    }
    if field("client_secret") != me.client_secret {
        return entra_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            7000215,
            "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID.",
        );
    }
    let audience = if v2 {
        // "https://api.partnercenter.microsoft.com/.default" or ".../user_impersonation offline_access"
        let scope = field("scope");
        let first = scope.split_whitespace().next().unwrap_or_default();
        match first.rsplit_once('/') {
            Some((resource, _)) => resource.to_string(),
            None => String::new(),
        }
    } else {
        field("resource").trim_end_matches('/').to_string()
    };
    if audience.is_empty() {
        let param = if v2 { "scope" } else { "resource" };
        return entra_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            900144,
            &format!("The request body must contain the following parameter: '{param}'."),
        );
    }
    let now = Instant::now();
    let mut auth = lock(&state.auth);
    let (app_only, new_refresh) = match field("grant_type") {
        "client_credentials" => (true, None),
        "refresh_token" => {
            let presented = field("refresh_token").to_string();
            match auth.refresh.get(&presented) {
                None => {
                    return entra_error(
                        StatusCode::BAD_REQUEST,
                        "invalid_grant",
                        9002313,
                        "Invalid request. Request is malformed or invalid.",
                    );
                }
                Some(t) if t.revoked => {
                    return entra_error(
                        StatusCode::BAD_REQUEST,
                        "invalid_grant",
                        70000,
                        "The provided value for the input parameter 'refresh_token' is not valid: the token was already redeemed and has been revoked.",
                    );
                }
                Some(t) if t.expires <= now => {
                    return entra_error(
                        StatusCode::BAD_REQUEST,
                        "invalid_grant",
                        700082,
                        "The refresh token has expired due to inactivity. The token was issued on 2026-01-01T00:00:00Z and was inactive for 90.00:00:00.",
                    );
                }
                Some(_) => {}
            }
            if !state.config.keep_rotated_refresh_tokens {
                if let Some(t) = auth.refresh.get_mut(&presented) {
                    t.revoked = true;
                }
            }
            auth.issued += 1;
            let rotated = format!("sim-rt-{}-{}", auth.issued, Uuid::new_v4().simple());
            auth.refresh.insert(
                rotated.clone(),
                RefreshToken {
                    expires: now + state.config.refresh_token_lifetime,
                    revoked: false,
                },
            );
            (false, Some(rotated))
        }
        other => {
            return entra_error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                70003,
                &format!("The app requested an unsupported grant type '{other}'."),
            );
        }
    };
    auth.issued += 1;
    let access = format!("sim-at-{}-{}", auth.issued, Uuid::new_v4().simple());
    let lifetime = state.config.access_token_lifetime;
    auth.access.insert(
        access.clone(),
        Token {
            expires: now + lifetime,
            app_only,
            audience: audience.clone(),
        },
    );
    drop(auth);
    let secs = lifetime.as_secs();
    let expires_on = chrono::Utc::now().timestamp() + secs as i64;
    let mut body = if v2 {
        json!({
            "token_type": "Bearer",
            "scope": field("scope"),
            "expires_in": secs,
            "ext_expires_in": secs,
            "access_token": access,
        })
    } else {
        // v1 carries its numbers as strings.
        json!({
            "token_type": "Bearer",
            "expires_in": secs.to_string(),
            "ext_expires_in": secs.to_string(),
            "expires_on": expires_on.to_string(),
            "not_before": chrono::Utc::now().timestamp().to_string(),
            "resource": audience,
            "access_token": access,
        })
    };
    if let (Some(rt), Some(obj)) = (new_refresh, body.as_object_mut()) {
        obj.insert("refresh_token".into(), json!(rt));
    }
    json_response(StatusCode::OK, &body)
}

// ---- Partner Center API ---------------------------------------------------------------------

/// Partner Center's usual error body. `code` goes out as a number, as it does in the wild.
fn pc_error(status: StatusCode, code: u32, description: &str) -> Response {
    json_response(
        status,
        &json!({"code": code, "description": description, "data": [], "source": "PartnerFD"}),
    )
}

struct InFlight<'a>(&'a State);

impl<'a> InFlight<'a> {
    fn enter(state: &'a State) -> InFlight<'a> {
        let now = state.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        let mut s = lock(&state.stats);
        s.max_concurrent = s.max_concurrent.max(now as u64);
        InFlight(state)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// What the route itself answers, before faults and framing.
enum Answer {
    Ok(Value),
    /// A 200 with this body, byte for byte (a published Partner Center body).
    Verbatim(Vec<u8>),
    Error(StatusCode, u32, String),
}

struct Caller {
    app_only: bool,
}

/// The path every API request takes: latency, bearer check, rate budget, faults, framing,
/// counters. `produce` builds the answer for an authenticated, admitted caller.
async fn api(
    state: &Shared,
    headers: &HeaderMap,
    endpoint: Endpoint,
    customer: Option<Uuid>,
    produce: impl FnOnce(&Caller) -> Answer,
) -> Response {
    let _guard = InFlight::enter(state);
    if let Some(id) = headers.get("ms-requestid").and_then(|v| v.to_str().ok()) {
        if state.seen_request_id(id) {
            lock(&state.stats).repeated_request_ids += 1;
        }
    }
    let n = state.request_counter.fetch_add(1, Ordering::Relaxed);
    let mut rng = Rng::derive(state.config.seed, 0xFA17, n);
    let knobs = lock(&state.knobs).clone();
    let delay = knobs.latency_ms + rng.below(knobs.jitter_ms + 1);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let mut response = respond(
        state, headers, endpoint, customer, &knobs, &mut rng, produce,
    )
    .await;
    record(state, endpoint, response.status());
    let h = response.headers_mut();
    for name in ["ms-requestid", "ms-correlationid"] {
        let value = headers
            .get(name)
            .cloned()
            .or_else(|| HeaderValue::from_str(&Uuid::new_v4().to_string()).ok());
        if let Some(v) = value {
            h.insert(name, v);
        }
    }
    response
}

async fn respond(
    state: &Shared,
    headers: &HeaderMap,
    endpoint: Endpoint,
    customer: Option<Uuid>,
    knobs: &Knobs,
    rng: &mut Rng,
    produce: impl FnOnce(&Caller) -> Answer,
) -> Response {
    // Authentication first, as the front door does.
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    let caller = {
        let auth = lock(&state.auth);
        match auth.access.get(bearer) {
            None => {
                return pc_error(
                    StatusCode::UNAUTHORIZED,
                    900401,
                    "Authorization failed: the access token is missing or invalid.",
                );
            }
            Some(t) if t.expires <= Instant::now() => {
                return pc_error(
                    StatusCode::UNAUTHORIZED,
                    900401,
                    "Authorization failed: the access token has expired.",
                );
            }
            Some(t) if t.audience != PARTNER_CENTER_RESOURCE => {
                return pc_error(
                    StatusCode::UNAUTHORIZED,
                    900420,
                    "The token audience is invalid: expected https://api.partnercenter.microsoft.com.",
                );
            }
            Some(t) => Caller {
                app_only: t.app_only,
            },
        }
    };

    // The rate budget per partner tenant (there is one tenant here).
    if let Some(limiter) = lock(&state.limiter).as_mut() {
        if let Err(wait) = limiter.try_acquire(state.epoch.elapsed()) {
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            return throttled(secs.max(1));
        }
    }

    let mut bom = false;
    let mut body_fault = None;
    if let Some(kind) = pick_fault(state, knobs, endpoint, customer, rng) {
        lock(&state.stats).faults_injected += 1;
        match kind {
            FaultKind::Status500 => {
                return pc_error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    500,
                    "An unexpected error occurred while processing the request.",
                );
            }
            FaultKind::Status503 => {
                let mut r = raw_response(StatusCode::SERVICE_UNAVAILABLE, Vec::new());
                r.headers_mut().remove(header::CONTENT_TYPE);
                return r;
            }
            FaultKind::Hang => {
                tokio::time::sleep(Duration::from_secs(knobs.hang_secs.unwrap_or(300))).await;
                return pc_error(StatusCode::GATEWAY_TIMEOUT, 504, "Gateway timeout.");
            }
            FaultKind::MfaRequired if !caller.app_only => {
                return pc_error(
                    StatusCode::UNAUTHORIZED,
                    900421,
                    "Multi-factor authentication is required: the access token has no MFA claim.",
                );
            }
            FaultKind::MfaRequired => {}
            FaultKind::Status429 => return throttled(1),
            FaultKind::Redirect => return redirect_to_empty(),
            FaultKind::Bom => bom = true,
            FaultKind::Truncated
            | FaultKind::Malformed
            | FaultKind::NoItems
            | FaultKind::EmptyObject
            | FaultKind::CountMismatch
            | FaultKind::Duplicate
            | FaultKind::Empty => body_fault = Some(kind),
        }
    }

    match produce(&caller) {
        Answer::Error(status, code, description) => pc_error(status, code, &description),
        Answer::Verbatim(bytes) => raw_response(StatusCode::OK, bytes),
        Answer::Ok(mut body) => {
            if let Some(kind) = body_fault {
                reshape_collection(kind, &mut body);
            }
            let mut bytes = Vec::new();
            if bom {
                bytes.extend_from_slice("\u{feff}".as_bytes());
            }
            match body_fault {
                Some(FaultKind::Truncated) => {
                    let full = serde_json::to_vec(&body).unwrap_or_default();
                    bytes.extend_from_slice(&full[..full.len() / 2]);
                }
                Some(FaultKind::Malformed) => bytes.extend_from_slice(
                    b"<html><head><title>502 Bad Gateway</title></head><body>upstream error</body></html>",
                ),
                _ => bytes.extend(serde_json::to_vec(&body).unwrap_or_default()),
            }
            raw_response(StatusCode::OK, bytes)
        }
    }
}

/// Partner Center's throttling answer: 429, `Retry-After`, and its own body shape.
fn throttled(secs: u64) -> Response {
    let mut r = json_response(
        StatusCode::TOO_MANY_REQUESTS,
        &json!({"statusCode": 429, "message": format!("Rate limit is exceeded. Try again in {secs} seconds.")}),
    );
    if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
        r.headers_mut().insert(header::RETRY_AFTER, v);
    }
    r
}

/// A 302 to [`EMPTY_PAGE`], as a proxy or captive portal in the way would answer.
fn redirect_to_empty() -> Response {
    let mut r = raw_response(StatusCode::FOUND, Vec::new());
    r.headers_mut()
        .insert(header::LOCATION, HeaderValue::from_static(EMPTY_PAGE));
    r
}

/// Where the `redirect` fault points: a 200 with an empty collection, no token needed.
const EMPTY_PAGE: &str = "/_sim/empty";

async fn empty_page(AxState(state): AxState<Shared>) -> Response {
    record(&state, Endpoint::Other, StatusCode::OK);
    json_response(
        StatusCode::OK,
        &json!({"totalCount": 0, "items": [], "attributes": {"objectType": "Collection"}}),
    )
}

/// The collection faults that keep a 200: items gone, an empty object, a count that does not
/// match, an item sent twice.
fn reshape_collection(kind: FaultKind, body: &mut Value) {
    let Some(obj) = body.as_object_mut() else {
        return;
    };
    match kind {
        FaultKind::NoItems => {
            obj.remove("items");
            obj.insert("totalCount".into(), json!(0));
        }
        FaultKind::EmptyObject => obj.clear(),
        FaultKind::Empty => {
            obj.insert("items".into(), json!([]));
            obj.insert("totalCount".into(), json!(0));
            obj.remove("links");
        }
        FaultKind::CountMismatch => {
            if let Some(items) = obj.get_mut("items").and_then(Value::as_array_mut) {
                let total = items.len().max(2);
                items.truncate(1);
                obj.insert("totalCount".into(), json!(total));
            }
        }
        FaultKind::Duplicate => {
            if let Some(items) = obj.get_mut("items").and_then(Value::as_array_mut) {
                if let Some(first) = items.first().cloned() {
                    items.push(first);
                }
                let n = items.len();
                obj.insert("totalCount".into(), json!(n));
            }
        }
        _ => {}
    }
}

/// The first rule that matches this request and fires; spends one of its `times`.
fn pick_fault(
    state: &State,
    knobs: &Knobs,
    endpoint: Endpoint,
    customer: Option<Uuid>,
    rng: &mut Rng,
) -> Option<FaultKind> {
    if knobs.faults.is_empty() {
        return None;
    }
    let mut live = lock(&state.knobs);
    for rule in live.faults.iter_mut() {
        // A rule without an endpoint is for the API; the token endpoint must be named.
        let other_endpoint = match rule.endpoint {
            Some(e) => e != endpoint,
            None => endpoint == Endpoint::Token,
        };
        if other_endpoint
            || rule.customer_id.is_some_and(|c| Some(c) != customer)
            || rule.times == Some(0)
        {
            continue;
        }
        if !rng.chance(rule.probability.unwrap_or(1.0)) {
            continue;
        }
        if let Some(t) = rule.times.as_mut() {
            *t -= 1;
        }
        return Some(rule.kind);
    }
    None
}

fn link(uri: &str) -> Value {
    json!({"uri": uri, "method": "GET", "headers": []})
}

/// Opaque to clients; tamper-evident here.
fn continuation_token(seed: u64, offset: usize) -> String {
    let check = Rng::derive(seed, 0xC0DE, offset as u64).next_u64();
    format!("{offset:x}.{check:016x}")
}

fn parse_continuation(seed: u64, token: &str) -> Option<usize> {
    let (offset, _) = token.split_once('.')?;
    let offset = usize::from_str_radix(offset, 16).ok()?;
    (continuation_token(seed, offset) == token).then_some(offset)
}

/// A seek-paged list's page size (`size`, 1 to 500, default 500) and where the page starts
/// (the `MS-ContinuationToken` of the previous page's next link), or the 400 to answer.
fn seek_window(
    size: Option<&str>,
    token: Option<&str>,
    seed: u64,
) -> Result<(usize, usize), Answer> {
    let size = match size.map(str::parse::<usize>) {
        None => 500,
        Some(Ok(n)) if (1..=500).contains(&n) => n,
        Some(_) => {
            return Err(Answer::Error(
                StatusCode::BAD_REQUEST,
                400,
                "The size parameter must be a whole number from 1 to 500.".into(),
            ));
        }
    };
    let offset = match token {
        None => 0,
        Some(t) => parse_continuation(seed, t).ok_or_else(|| {
            Answer::Error(
                StatusCode::BAD_REQUEST,
                400,
                "The continuation token is invalid or expired.".into(),
            )
        })?,
    };
    Ok((size, offset))
}

#[derive(Deserialize)]
struct ListQuery {
    size: Option<String>,
}

async fn customers(
    AxState(state): AxState<Shared>,
    headers: HeaderMap,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let size = query.ok().and_then(|Query(q)| q.size);
    let token = headers
        .get("ms-continuationtoken")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let st = state.clone();
    let verbatim = lock(&state.knobs).customer_list_body.clone();
    api(&state, &headers, Endpoint::Customers, None, move |_| {
        if let Some(body) = verbatim {
            return Answer::Verbatim(body.into_bytes());
        }
        let seed = st.config.seed;
        let (size, offset) = match seek_window(size.as_deref(), token.as_deref(), seed) {
            Ok(w) => w,
            Err(e) => return e,
        };
        let world = lock(&st.world);
        let listed: Vec<&Uuid> = world
            .order
            .iter()
            .filter(|id| !world.relationship_removed.contains(id))
            .collect();
        let end = (offset + size).min(listed.len());
        let items: Vec<Value> = listed
            .get(offset..end)
            .unwrap_or_default()
            .iter()
            .filter_map(|id| world.get_parts(id, Parts::PROFILE))
            .map(|c| c.customer_json())
            .collect();
        let prefix = if st.config.next_link_with_v1 {
            "/v1"
        } else {
            ""
        };
        let mut links = json!({"self": link(&format!("{prefix}/customers?size={size}"))});
        if end < listed.len() {
            links["next"] = json!({
                "uri": format!("{prefix}/customers?size={size}&seekOperation=Next"),
                "method": "GET",
                "headers": [{"key": "MS-ContinuationToken", "value": continuation_token(seed, end)}]
            });
        }
        Answer::Ok(json!({
            "totalCount": items.len(),
            "items": items,
            "links": links,
            "attributes": {"objectType": "Collection"}
        }))
    })
    .await
}

#[derive(Deserialize)]
struct AuditQuery {
    #[serde(rename = "startDate")]
    start_date: Option<String>,
    #[serde(rename = "endDate")]
    end_date: Option<String>,
    size: Option<String>,
}

/// How far back the activity log keeps records.
const AUDIT_DAYS_KEPT: i64 = 90;

/// `GET /v1/auditrecords?startDate=&endDate=&size=`: whole days (a time of day is ignored),
/// without `startDate` the last 30 days, 400 for a start more than 90 days back; seek-paged
/// like the customer list.
async fn audit_records(
    AxState(state): AxState<Shared>,
    headers: HeaderMap,
    query: Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let query = query.ok().map(|Query(q)| q);
    let token = headers
        .get("ms-continuationtoken")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let st = state.clone();
    api(&state, &headers, Endpoint::AuditRecords, None, move |_| {
        let today = st.config.clock.now().date_naive();
        let day = |text: Option<&String>, default: chrono::NaiveDate| match text {
            None => Ok(default),
            Some(t) => t
                .get(..10)
                .and_then(|d| chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d").ok())
                .ok_or_else(|| format!("The date '{t}' is not valid; expected yyyy-MM-dd.")),
        };
        let (q_start, q_end, q_size) = match &query {
            Some(q) => (q.start_date.as_ref(), q.end_date.as_ref(), q.size.clone()),
            None => (None, None, None),
        };
        let start = match day(q_start, today - chrono::Duration::days(30)) {
            Ok(d) => d,
            Err(e) => return Answer::Error(StatusCode::BAD_REQUEST, 400, e),
        };
        let end = match day(q_end, today) {
            Ok(d) => d,
            Err(e) => return Answer::Error(StatusCode::BAD_REQUEST, 400, e),
        };
        if start < today - chrono::Duration::days(AUDIT_DAYS_KEPT) {
            return Answer::Error(
                StatusCode::BAD_REQUEST,
                400,
                format!("startDate {start} is more than {AUDIT_DAYS_KEPT} days in the past; activity records are kept for {AUDIT_DAYS_KEPT} days."),
            );
        }
        if end < start {
            return Answer::Error(
                StatusCode::BAD_REQUEST,
                400,
                "endDate is before startDate.".into(),
            );
        }
        let seed = st.config.seed ^ 0xA0D1;
        let (size, offset) = match seek_window(q_size.as_deref(), token.as_deref(), seed) {
            Ok(w) => w,
            Err(e) => return e,
        };
        let audit = lock(&st.audit);
        let matching: Vec<&Value> = audit
            .iter()
            .filter(|r| super::audit::day_of(r).is_some_and(|d| d >= start && d <= end))
            .collect();
        let page_end = (offset + size).min(matching.len());
        let items: Vec<Value> = matching
            .get(offset..page_end)
            .unwrap_or_default()
            .iter()
            .map(|r| (*r).clone())
            .collect();
        let mut links = json!({"self": link(&format!("/auditrecords?size={size}"))});
        if page_end < matching.len() {
            links["next"] = json!({
                "uri": format!("/auditrecords?startDate={start}&endDate={end}&size={size}&seekOperation=Next"),
                "method": "GET",
                "headers": [{"key": "MS-ContinuationToken", "value": continuation_token(seed, page_end)}]
            });
        }
        Answer::Ok(json!({
            "totalCount": items.len(),
            "items": items,
            "links": links,
            "attributes": {"objectType": "Collection"}
        }))
    })
    .await
}

/// Resolves a customer path segment as Partner Center does: 400 for a malformed id, 404 for
/// an unknown one, 403 with 20002 when the relationship is gone.
fn customer_answer(
    state: &State,
    raw_id: &str,
    parts: Parts,
) -> Result<super::CustomerData, (StatusCode, u32, String)> {
    let Ok(id) = Uuid::parse_str(raw_id) else {
        return Err((
            StatusCode::BAD_REQUEST,
            900118,
            format!("Invalid customer id: {raw_id}"),
        ));
    };
    let world = lock(&state.world);
    if world.relationship_removed.contains(&id) {
        return Err((
            StatusCode::FORBIDDEN,
            20002,
            "There is no relationship between caller and account.".into(),
        ));
    }
    world.get_parts(&id, parts).ok_or((
        StatusCode::NOT_FOUND,
        1000,
        format!("Customer {id} was not found."),
    ))
}

#[derive(Deserialize)]
struct SubscriptionQuery {
    mpn_id: Option<String>,
}

async fn subscriptions(
    AxState(state): AxState<Shared>,
    Path(raw_id): Path<String>,
    headers: HeaderMap,
    query: Result<Query<SubscriptionQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let mpn = query.ok().and_then(|Query(q)| q.mpn_id);
    let customer = Uuid::parse_str(&raw_id).ok();
    let st = state.clone();
    api(
        &state,
        &headers,
        Endpoint::Subscriptions,
        customer,
        move |_| {
            if let Some(m) = &mpn {
                if !is_mpn_id(m) {
                    return Answer::Error(
                        StatusCode::BAD_REQUEST,
                        400,
                        format!("Invalid mpn_id '{m}': a Partner ID is an integer."),
                    );
                }
            }
            match customer_answer(&st, &raw_id, Parts::SUBSCRIPTIONS) {
                Err((s, c, d)) => Answer::Error(s, c, d),
                Ok(c) => {
                    let items: Vec<Value> = c
                        .subscriptions
                        .into_iter()
                        .filter(|s| {
                            mpn.as_deref().is_none_or(|m| {
                                s.get("partnerId").and_then(Value::as_str) == Some(m)
                            })
                        })
                        .map(Value::Object)
                        .collect();
                    Answer::Ok(json!({
                        "totalCount": items.len(),
                        "items": items,
                        "attributes": {"objectType": "Collection"}
                    }))
                }
            }
        },
    )
    .await
}

async fn managed_services(
    AxState(state): AxState<Shared>,
    Path(raw_id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let customer = Uuid::parse_str(&raw_id).ok();
    let st = state.clone();
    api(
        &state,
        &headers,
        Endpoint::ManagedServices,
        customer,
        move |caller| {
            if let Some(refused) = app_user_only(caller) {
                return refused;
            }
            match customer_answer(&st, &raw_id, Parts::MANAGED_SERVICES) {
                Err((s, c, d)) => Answer::Error(s, c, d),
                Ok(c) => {
                    let items: Vec<Value> =
                        c.managed_services.into_iter().map(Value::Object).collect();
                    Answer::Ok(json!({
                        "totalCount": items.len(),
                        "items": items,
                        "links": {"self": link(&format!("/customers/{}/managedservices", c.id))},
                        "attributes": {"objectType": "Collection"}
                    }))
                }
            }
        },
    )
    .await
}

/// Partner Center's answer to an App-only token on an App+User-only endpoint.
fn app_user_only(caller: &Caller) -> Option<Answer> {
    caller.app_only.then(|| {
        Answer::Error(
            StatusCode::FORBIDDEN,
            900403,
            "This operation requires App+User credentials; App-only tokens are not supported."
                .into(),
        )
    })
}

/// `GET /v1/customers/{id}/subscribedskus`: the licences of the customer's tenant and their use
/// (App+User tokens only).
async fn subscribed_skus(
    AxState(state): AxState<Shared>,
    Path(raw_id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let customer = Uuid::parse_str(&raw_id).ok();
    let st = state.clone();
    let verbatim = lock(&state.knobs).subscribed_skus_body.clone();
    api(
        &state,
        &headers,
        Endpoint::SubscribedSkus,
        customer,
        move |caller| {
            if let Some(refused) = app_user_only(caller) {
                return refused;
            }
            match customer_answer(&st, &raw_id, Parts::SUBSCRIPTIONS) {
                Err((s, c, d)) => Answer::Error(s, c, d),
                Ok(_) if verbatim.is_some() => {
                    Answer::Verbatim(verbatim.unwrap_or_default().into_bytes())
                }
                Ok(c) => {
                    let items = super::data::subscribed_skus(&c);
                    Answer::Ok(json!({
                        "totalCount": items.len(),
                        "items": items,
                        "links": {"self": link(&format!("/customers/{}/subscribedskus", c.id))},
                        "attributes": {"objectType": "Collection"}
                    }))
                }
            }
        },
    )
    .await
}

// ---- control API ------------------------------------------------------------------------------

async fn stats(AxState(state): AxState<Shared>) -> Response {
    record(&state, Endpoint::Control, StatusCode::OK);
    let s = lock(&state.stats).clone();
    json_response(StatusCode::OK, &json!(s))
}

async fn reset_stats(AxState(state): AxState<Shared>) -> Response {
    *lock(&state.stats) = super::Stats::default();
    *lock(&state.request_ids) = [Default::default(), Default::default()];
    StatusCode::NO_CONTENT.into_response()
}

#[derive(Deserialize)]
struct MutateRequest {
    fraction: f64,
    #[serde(default)]
    seed: u64,
}

fn control_error(state: &State, status: StatusCode, message: String) -> Response {
    record(state, Endpoint::Control, status);
    json_response(status, &json!({"error": message}))
}

async fn mutate(
    AxState(state): AxState<Shared>,
    body: Result<Json<MutateRequest>, JsonRejection>,
) -> Response {
    let req = match body {
        Ok(Json(r)) if (0.0..=1.0).contains(&r.fraction) => r,
        Ok(_) => {
            return control_error(
                &state,
                StatusCode::BAD_REQUEST,
                "fraction must be from 0 to 1".into(),
            );
        }
        Err(e) => return control_error(&state, StatusCode::BAD_REQUEST, e.body_text()),
    };
    let done = lock(&state.world).mutate(req.fraction, req.seed);
    record(&state, Endpoint::Control, StatusCode::OK);
    json_response(StatusCode::OK, &json!(done))
}

async fn change(
    AxState(state): AxState<Shared>,
    body: Result<Json<super::Change>, JsonRejection>,
) -> Response {
    let change = match body {
        Ok(Json(c)) => c,
        Err(e) => return control_error(&state, StatusCode::BAD_REQUEST, e.body_text()),
    };
    let result = lock(&state.world).apply(change);
    match result {
        Ok(done) => {
            record(&state, Endpoint::Control, StatusCode::OK);
            json_response(StatusCode::OK, &json!(done))
        }
        Err(e) => control_error(&state, StatusCode::NOT_FOUND, e.to_string()),
    }
}

async fn get_knobs(AxState(state): AxState<Shared>) -> Response {
    record(&state, Endpoint::Control, StatusCode::OK);
    let k = lock(&state.knobs).clone();
    json_response(StatusCode::OK, &json!(k))
}

async fn put_knobs(
    AxState(state): AxState<Shared>,
    body: Result<Json<Knobs>, JsonRejection>,
) -> Response {
    match body {
        Ok(Json(k)) => {
            set_knobs(&state, k);
            record(&state, Endpoint::Control, StatusCode::OK);
            let k = lock(&state.knobs).clone();
            json_response(StatusCode::OK, &json!(k))
        }
        Err(e) => control_error(&state, StatusCode::BAD_REQUEST, e.body_text()),
    }
}

async fn not_found(AxState(state): AxState<Shared>) -> Response {
    record(&state, Endpoint::Other, StatusCode::NOT_FOUND);
    pc_error(
        StatusCode::NOT_FOUND,
        404,
        "The requested resource was not found.",
    )
}
