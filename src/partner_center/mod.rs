//! The Partner Center client: every request pcsync makes goes through [`PartnerCenterClient`].
//!
//! - [`auth`]: access tokens (App+User, App-only; v1, v2), single-flight refresh, rotation kept.
//! - [`models`]: typed, lenient views of customers, subscriptions, managed services, pages.
//! - [`error`]: errors a caller acts on (not found, access revoked, throttled, ...).
//! - [`retry`]: backoff and Retry-After arithmetic.
//!
//! Each request: a permit of `max_concurrency`, a slot of the shared rate budget, the headers
//! Partner Center asks for, then retries for timeouts, connection errors and 5xx (backoff with
//! full jitter), 429 (at least Retry-After, and the budget slows for everyone), one token
//! refresh on 401. 400/403/404 are not retried.

pub mod auth;
pub mod error;
pub mod models;
pub mod retry;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use reqwest::{StatusCode, Url};
use secrecy::ExposeSecret;
use tokio::sync::{Mutex, Semaphore};
use uuid::Uuid;

pub use auth::{AuthError, RefreshTokenStore, TokenProvider};
pub use error::{ApiError, Context};
pub use models::{Customer, ManagedService, Subscription};

use crate::config::{Credentials, PartnerCenterSettings, is_mpn_id};
use crate::ratelimit::Gcra;

/// Sent as `MS-PartnerCenter-Application`.
pub const APPLICATION: &str = concat!("pcsync/", env!("CARGO_PKG_VERSION"));

/// A collection is not expected to have more pages than this; more means a paging loop.
const MAX_PAGES: u32 = 10_000;

/// What the transport said, without anything from the request (URLs carry no secrets here,
/// but reqwest's messages are kept short and free of bodies anyway).
pub(crate) fn transport_reason(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".to_string()
    } else if e.is_connect() {
        "connection failed".to_string()
    } else {
        let mut text = e.to_string();
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            text.push_str(": ");
            text.push_str(&s.to_string());
            source = s.source();
        }
        text
    }
}

/// Counters of one client (one run), for the run ledger.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    pub requests: u64,
    pub throttled: u64,
    pub retries: u64,
}

/// The shared rate budget. A 429 pauses every request for Retry-After, lowers the rate by a
/// fifth and remembers a ceiling just below the rate that was refused; successes bring the
/// rate back up to that ceiling, and the ceiling creeps back to the configured rate slowly, in
/// case the throttling was passing. 429s of one episode (requests already in flight) count once.
struct Budget {
    gcra: Gcra,
    epoch: Instant,
    configured: f64,
    current: f64,
    ceiling: f64,
    successes: u32,
    episode_until: Duration,
}

impl Budget {
    fn new(requests_per_minute: u32) -> Budget {
        // Up to a tenth of a second's worth of requests back to back, so a request that left
        // late (a busy moment) does not lose its slot for good; at Partner Center's 500 a
        // minute that is one request, i.e. strictly even spacing.
        let burst = (requests_per_minute / 600).max(1);
        Budget {
            gcra: Gcra::new(requests_per_minute, Duration::from_secs(60), burst),
            epoch: Instant::now(),
            configured: f64::from(requests_per_minute),
            current: f64::from(requests_per_minute),
            ceiling: f64::from(requests_per_minute),
            successes: 0,
            episode_until: Duration::ZERO,
        }
    }

    fn now(&self) -> Duration {
        self.epoch.elapsed()
    }

    fn set_rate(&mut self, per_minute: f64) {
        self.current = per_minute;
        self.gcra
            .set_interval(Duration::from_secs_f64(60.0 / per_minute.max(0.1)));
    }

    fn throttled(&mut self, pause: Duration) {
        let now = self.now();
        self.gcra.pause(now, pause);
        if now < self.episode_until {
            return;
        }
        let floor = self.configured * 0.1;
        self.ceiling = (self.current * 0.95).max(floor);
        self.set_rate((self.current * 0.8).max(floor));
        self.successes = 0;
        self.episode_until = now + pause + Duration::from_secs(1);
    }

    fn succeeded(&mut self) {
        if self.current >= self.configured {
            return;
        }
        self.successes += 1;
        if self.successes % 20 == 0 && self.current < self.ceiling {
            let raised = (self.current * 1.05).min(self.ceiling);
            self.set_rate(raised);
        }
        if self.successes % 500 == 0 {
            self.ceiling = (self.ceiling * 1.02).min(self.configured);
        }
    }
}

/// Resolves `links.next.uri` against the API root. The uri is relative and may or may not
/// already start with `/v1/` (a known client bug built `/v1//v1/...`). An absolute uri must
/// point at the same host: the bearer token is never sent elsewhere.
pub fn resolve_next(base: &Url, uri: &str) -> Result<Url, String> {
    let uri = uri.trim();
    if uri.starts_with("http://") || uri.starts_with("https://") {
        let url = Url::parse(uri).map_err(|e| format!("next link {uri:?}: {e}"))?;
        if url.scheme() != base.scheme()
            || url.host_str() != base.host_str()
            || url.port_or_known_default() != base.port_or_known_default()
        {
            return Err(format!(
                "next link {uri:?} points at another host than partner_center.base_url"
            ));
        }
        return Ok(url);
    }
    let path = uri.trim_start_matches('/');
    let path = path.strip_prefix("v1/").unwrap_or(path);
    let root = base.as_str().trim_end_matches('/');
    Url::parse(&format!("{root}/v1/{path}")).map_err(|e| format!("next link {uri:?}: {e}"))
}

/// The Partner Center API for one run.
pub struct PartnerCenterClient {
    http: reqwest::Client,
    base: Url,
    tokens: Arc<TokenProvider>,
    budget: Mutex<Budget>,
    permits: Semaphore,
    correlation_id: Uuid,
    max_attempts: u32,
    backoff: retry::Backoff,
    requests: AtomicU64,
    throttled: AtomicU64,
    retries: AtomicU64,
}

impl PartnerCenterClient {
    /// A client whose requests carry `correlation_id` (the run id) as `MS-CorrelationId`.
    pub async fn new(
        settings: &PartnerCenterSettings,
        creds: Credentials,
        store: Option<RefreshTokenStore>,
        correlation_id: Uuid,
    ) -> Result<PartnerCenterClient, AuthError> {
        let http = reqwest::Client::builder()
            .timeout(settings.request_timeout)
            .connect_timeout(settings.request_timeout.min(Duration::from_secs(30)))
            .pool_max_idle_per_host(settings.max_concurrency)
            .user_agent(APPLICATION)
            .build()
            .map_err(|e| AuthError::Endpoint(format!("cannot build the HTTP client: {e}")))?;
        let tokens = Arc::new(TokenProvider::new(http.clone(), creds, store).await?);
        Ok(PartnerCenterClient {
            http,
            base: settings.base_url.clone(),
            tokens,
            budget: Mutex::new(Budget::new(settings.requests_per_minute)),
            permits: Semaphore::new(settings.max_concurrency),
            correlation_id,
            max_attempts: settings.max_attempts.max(1),
            backoff: retry::Backoff::default(),
            requests: AtomicU64::new(0),
            throttled: AtomicU64::new(0),
            retries: AtomicU64::new(0),
        })
    }

    /// Shorter backoff, for tests that exercise retries.
    pub fn with_backoff(mut self, backoff: retry::Backoff) -> PartnerCenterClient {
        self.backoff = backoff;
        self
    }

    pub fn correlation_id(&self) -> Uuid {
        self.correlation_id
    }

    pub fn tokens(&self) -> &TokenProvider {
        &self.tokens
    }

    pub fn counters(&self) -> Counters {
        Counters {
            requests: self.requests.load(Ordering::Relaxed),
            throttled: self.throttled.load(Ordering::Relaxed),
            retries: self.retries.load(Ordering::Relaxed),
        }
    }

    fn url(&self, path: &str) -> Result<Url, ApiError> {
        let root = self.base.as_str().trim_end_matches('/');
        Url::parse(&format!("{root}{path}"))
            .map_err(|e| ApiError::InvalidInput(format!("cannot build a URL for {path}: {e}")))
    }

    /// A customer's subscriptions from partner `mpn_id`, or from every partner when `None`.
    pub async fn subscriptions(
        &self,
        customer: Uuid,
        mpn_id: Option<&str>,
    ) -> Result<Vec<Subscription>, ApiError> {
        let mut url = self.url(&format!("/v1/customers/{customer}/subscriptions"))?;
        if let Some(mpn) = mpn_id {
            if !is_mpn_id(mpn) {
                return Err(ApiError::InvalidInput(format!(
                    "MPN id {mpn:?} is not a Partner ID (digits only)"
                )));
            }
            url.query_pairs_mut().append_pair("mpn_id", mpn);
        }
        let op = format!("GET /v1/customers/{customer}/subscriptions");
        let items = self.collection(url, &op).await?;
        items
            .into_iter()
            .map(|m| Subscription::from_json(m).map_err(|e| self.decode_error(&op, e)))
            .collect()
    }

    /// A customer's managed services (App+User tokens only).
    pub async fn managed_services(&self, customer: Uuid) -> Result<Vec<ManagedService>, ApiError> {
        let url = self.url(&format!("/v1/customers/{customer}/managedservices"))?;
        let op = format!("GET /v1/customers/{customer}/managedservices");
        let items = self.collection(url, &op).await?;
        items
            .into_iter()
            .map(|m| ManagedService::from_json(m).map_err(|e| self.decode_error(&op, e)))
            .collect()
    }

    /// The customer list, page by page.
    pub fn customers(&self, page_size: u32) -> CustomerPager<'_> {
        let first = self.url(&format!("/v1/customers?size={}", page_size.clamp(1, 500)));
        CustomerPager {
            client: self,
            next: Some(first.map(|u| (u, Vec::new()))),
            pages: 0,
            seen: Vec::new(),
        }
    }

    fn decode_error(&self, op: &str, e: models::ParseError) -> ApiError {
        ApiError::Decode(Box::new(Context {
            operation: op.to_string(),
            description: Some(e.0),
            correlation_id: self.correlation_id.to_string(),
            ..Context::default()
        }))
    }

    /// Every item of a collection, following `links.next` should it appear.
    async fn collection(
        &self,
        first: Url,
        op: &str,
    ) -> Result<Vec<serde_json::Map<String, serde_json::Value>>, ApiError> {
        let mut items = Vec::new();
        let mut next = Some((first, Vec::new()));
        let mut pages = 0;
        while let Some((url, headers)) = next.take() {
            pages += 1;
            if pages > MAX_PAGES {
                return Err(self.decode_error(op, models::ParseError("too many pages".into())));
            }
            let page = self.get_page(&url, &headers, op).await?;
            items.extend(page.items);
            if let Some(link) = page.next {
                let url = resolve_next(&self.base, &link.uri)
                    .map_err(|e| self.decode_error(op, models::ParseError(e)))?;
                next = Some((url, link.headers));
            }
        }
        Ok(items)
    }

    async fn get_page(
        &self,
        url: &Url,
        headers: &[(String, String)],
        op: &str,
    ) -> Result<models::Page, ApiError> {
        let (body, ctx) = self.get(url, headers, op).await?;
        models::parse_page(&body).map_err(|e| {
            ApiError::Decode(Box::new(Context {
                description: Some(e.0),
                ..ctx
            }))
        })
    }

    /// One logical GET with its retries; the body of the first 2xx.
    async fn get(
        &self,
        url: &Url,
        extra_headers: &[(String, String)],
        op: &str,
    ) -> Result<(Vec<u8>, Context), ApiError> {
        // The same request id on every retry, so Microsoft sees one logical request.
        let request_id = Uuid::new_v4();
        let mut ctx = Context {
            operation: op.to_string(),
            request_id: request_id.to_string(),
            correlation_id: self.correlation_id.to_string(),
            ..Context::default()
        };
        let mut attempt: u32 = 0;
        let mut refreshed_after_401 = false;
        loop {
            attempt += 1;
            let token = self.tokens.token().await?;
            let permit = self
                .permits
                .acquire()
                .await
                .map_err(|_| ApiError::InvalidInput("the client is shutting down".into()))?;
            let wait = self.budget.lock().await.reserve_now();
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
            let mut request = self
                .http
                .get(url.clone())
                .bearer_auth(token.expose_secret())
                .header("Accept", "application/json")
                .header("MS-RequestId", request_id.to_string())
                .header("MS-CorrelationId", self.correlation_id.to_string())
                .header("MS-PartnerCenter-Application", APPLICATION)
                .header("X-Locale", "en-US");
            for (k, v) in extra_headers {
                request = request.header(k.as_str(), v.as_str());
            }
            self.requests.fetch_add(1, Ordering::Relaxed);
            let started = Instant::now();
            let outcome = match request.send().await {
                Ok(response) => {
                    let status = response.status();
                    let retry_after = response
                        .headers()
                        .get(reqwest::header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| retry::parse_retry_after(v, chrono::Utc::now()));
                    match response.bytes().await {
                        Ok(body) => Ok((status, retry_after, body.to_vec())),
                        Err(e) => Err(e),
                    }
                }
                Err(e) => Err(e),
            };
            drop(permit);
            let (status, retry_after, body) = match outcome {
                Ok(ok) => ok,
                Err(e) => {
                    let reason = transport_reason(&e);
                    ctx.http_status = None;
                    ctx.description = Some(reason.clone());
                    if attempt < self.max_attempts {
                        let pause = self.backoff.delay(attempt, retry::random_unit());
                        tracing::warn!(op, attempt, reason, request_id = %request_id,
                            correlation_id = %self.correlation_id, retry_in_ms = pause.as_millis() as u64,
                            "request failed; retrying");
                        self.retries.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(pause).await;
                        continue;
                    }
                    return Err(if e.is_timeout() {
                        ApiError::Timeout(Box::new(ctx))
                    } else {
                        ApiError::Connection(Box::new(ctx))
                    });
                }
            };
            ctx.http_status = Some(status.as_u16());
            tracing::debug!(op, status = status.as_u16(), attempt, request_id = %request_id,
                elapsed_ms = started.elapsed().as_millis() as u64, "response");
            if status.is_success() {
                self.budget.lock().await.succeeded();
                ctx.code = None;
                ctx.description = None;
                return Ok((body, ctx));
            }
            let (code, description) = error::parse_error_body(&body);
            ctx.code = code.clone();
            ctx.description = description;
            let code = code.unwrap_or_default();
            match status {
                StatusCode::UNAUTHORIZED => {
                    if code == "900421" {
                        return Err(AuthError::MfaRequired(ctx.to_string()).into());
                    }
                    if code == "900420" {
                        return Err(AuthError::WrongAudience(ctx.to_string()).into());
                    }
                    if refreshed_after_401 {
                        return Err(AuthError::Unauthorized(ctx.to_string()).into());
                    }
                    // The token may have expired on the way: one fresh token, one more try.
                    refreshed_after_401 = true;
                    self.tokens.invalidate(&token).await;
                    attempt -= 1;
                    continue;
                }
                StatusCode::TOO_MANY_REQUESTS => {
                    self.throttled.fetch_add(1, Ordering::Relaxed);
                    let pause = retry_after
                        .unwrap_or_else(|| self.backoff.delay(attempt, retry::random_unit()));
                    // Everybody waits, not only this request: the budget is the tenant's.
                    self.budget.lock().await.throttled(pause);
                    if attempt < self.max_attempts {
                        tracing::warn!(op, attempt, request_id = %request_id,
                            correlation_id = %self.correlation_id, retry_after_ms = pause.as_millis() as u64,
                            "throttled by Partner Center (429); slowing down");
                        self.retries.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    return Err(ApiError::Throttled(Box::new(ctx)));
                }
                StatusCode::INTERNAL_SERVER_ERROR
                | StatusCode::BAD_GATEWAY
                | StatusCode::SERVICE_UNAVAILABLE
                | StatusCode::GATEWAY_TIMEOUT => {
                    if attempt < self.max_attempts {
                        let pause = retry_after
                            .unwrap_or_else(|| self.backoff.delay(attempt, retry::random_unit()));
                        tracing::warn!(op, attempt, status = status.as_u16(), request_id = %request_id,
                            correlation_id = %self.correlation_id, retry_in_ms = pause.as_millis() as u64,
                            "server error; retrying");
                        self.retries.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(pause).await;
                        continue;
                    }
                    return Err(ApiError::Server(Box::new(ctx)));
                }
                StatusCode::NOT_FOUND => return Err(ApiError::NotFound(Box::new(ctx))),
                StatusCode::FORBIDDEN if code == "20002" => {
                    return Err(ApiError::AccessRevoked(Box::new(ctx)));
                }
                StatusCode::FORBIDDEN => return Err(ApiError::Forbidden(Box::new(ctx))),
                StatusCode::BAD_REQUEST if code == "900118" => {
                    return Err(ApiError::InvalidCustomerId(Box::new(ctx)));
                }
                s if s.is_server_error() => return Err(ApiError::Server(Box::new(ctx))),
                _ => return Err(ApiError::BadRequest(Box::new(ctx))),
            }
        }
    }
}

impl Budget {
    fn reserve_now(&mut self) -> Duration {
        let now = self.now();
        self.gcra.reserve(now)
    }
}

/// A request to make: the URL and the headers a next link asks for.
type Request = (Url, Vec<(String, String)>);

/// The customer list, one page at a time (a stream without a streams library).
pub struct CustomerPager<'a> {
    client: &'a PartnerCenterClient,
    next: Option<Result<Request, ApiError>>,
    pages: u32,
    /// Links already followed, to stop a server that points back at a page.
    seen: Vec<(String, Vec<(String, String)>)>,
}

impl CustomerPager<'_> {
    /// The next page's customers, `None` after the last page. Items that are not customers
    /// (no GUID id) are logged and left out.
    pub async fn next_page(&mut self) -> Result<Option<Vec<Customer>>, ApiError> {
        let Some(next) = self.next.take() else {
            return Ok(None);
        };
        let (url, headers) = next?;
        let op = "GET /v1/customers";
        self.pages += 1;
        let key = (url.to_string(), headers.clone());
        if self.pages > MAX_PAGES || self.seen.contains(&key) {
            return Err(self.client.decode_error(
                op,
                models::ParseError("the customer list does not end (a page repeats)".into()),
            ));
        }
        self.seen.push(key);
        let page = self.client.get_page(&url, &headers, op).await?;
        if let Some(link) = page.next {
            self.next = Some(
                resolve_next(&self.client.base, &link.uri)
                    .map(|u| (u, link.headers))
                    .map_err(|e| self.client.decode_error(op, models::ParseError(e))),
            );
        }
        let mut customers = Vec::with_capacity(page.items.len());
        for item in &page.items {
            match Customer::from_json(item) {
                Ok(c) => customers.push(c),
                Err(e) => tracing::warn!(error = %e, "customer list: an item was left out"),
            }
        }
        Ok(Some(customers))
    }

    /// Every customer of every page.
    pub async fn collect_all(mut self) -> Result<Vec<Customer>, ApiError> {
        let mut all = Vec::new();
        while let Some(page) = self.next_page().await? {
            all.extend(page);
        }
        Ok(all)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_links_resolve_with_or_without_the_v1_prefix() {
        let base = Url::parse("https://api.partnercenter.microsoft.com").expect("url");
        for uri in [
            "/customers?size=100&seekOperation=Next",
            "/v1/customers?size=100&seekOperation=Next",
            "customers?size=100&seekOperation=Next",
            "v1/customers?size=100&seekOperation=Next",
        ] {
            assert_eq!(
                resolve_next(&base, uri).expect("resolves").as_str(),
                "https://api.partnercenter.microsoft.com/v1/customers?size=100&seekOperation=Next",
                "{uri}"
            );
        }
        let local = Url::parse("http://127.0.0.1:8080/").expect("url");
        assert_eq!(
            resolve_next(&local, "/customers?size=5")
                .expect("resolves")
                .as_str(),
            "http://127.0.0.1:8080/v1/customers?size=5"
        );
    }

    #[test]
    fn absolute_next_links_must_stay_on_the_api_host() {
        let base = Url::parse("https://api.partnercenter.microsoft.com").expect("url");
        assert!(
            resolve_next(
                &base,
                "https://api.partnercenter.microsoft.com/v1/customers?x=1"
            )
            .is_ok()
        );
        assert!(resolve_next(&base, "https://evil.example/v1/customers").is_err());
    }

    #[test]
    fn the_budget_slows_after_a_429_and_recovers() {
        let mut b = Budget::new(600);
        b.throttled(Duration::from_secs(2));
        assert_eq!(b.current, 480.0);
        // The other requests of the same episode pause too but cut the rate only once.
        b.throttled(Duration::from_secs(2));
        assert_eq!(b.current, 480.0);
        let wait = b.reserve_now();
        assert!(wait >= Duration::from_millis(1900), "{wait:?}");
        // Back up to just below the refused rate first...
        for _ in 0..200 {
            b.succeeded();
        }
        assert_eq!(b.current, 570.0);
        // ...then, slowly, to the configured rate.
        for _ in 0..3000 {
            b.succeeded();
        }
        assert_eq!(b.current, 600.0);
    }
}
