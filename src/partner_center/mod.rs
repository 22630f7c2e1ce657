//! The Partner Center client: every request pcsync makes goes through [`PartnerCenterClient`].
//!
//! - [`auth`]: access tokens (App+User, App-only; v1, v2), single-flight refresh, rotation kept.
//! - [`models`]: typed, lenient views of customers, subscriptions, managed services, pages.
//! - [`error`]: errors a caller acts on (not found, access revoked, throttled, ...).
//! - [`retry`]: backoff and Retry-After arithmetic.
//!
//! - [`paging`]: one pager for every collection, and [`Complete`], the proof it was read whole.
//!
//! Each request: a permit of `max_concurrency`, a slot of the shared rate budget, the headers
//! Partner Center asks for, then what [`error::verdict`] says of the answer: retries for
//! timeouts, connection errors and 5xx (backoff with full jitter), 429 (at least Retry-After,
//! and the budget slows for everyone), one token refresh on 401; 3xx (no redirect is
//! followed), 400/403/404 are the customer's error. Every wait and every request ends at once
//! when the client's cancellation token fires (SIGTERM).

pub mod auth;
pub mod error;
pub mod fields;
pub mod models;
pub mod paging;
pub mod retry;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use reqwest::{StatusCode, Url};
use secrecy::ExposeSecret;
use serde_json::value::RawValue;
use tokio::sync::{Mutex, Semaphore};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub use auth::{AuthError, RefreshTokenStore, TokenProvider};
pub use error::{ApiError, Context, Verdict};
pub use models::{Customer, ParseError};
pub use paging::{Complete, CustomerAnswer, CustomerPager, ListProblem};

use crate::config::{Credentials, PartnerCenterSettings, is_mpn_id};
use crate::ratelimit::AdaptiveBudget;

/// Sent as `MS-PartnerCenter-Application`.
pub const APPLICATION: &str = concat!("pcsync/", env!("CARGO_PKG_VERSION"));

/// The HTTP client for Partner Center and Entra ID: the timeouts asked for, no redirects (a
/// 3xx is an answer to report, and a bearer token or client secret must never follow one),
/// and the system's trust store besides the built-in roots (a corporate TLS proxy works).
pub(crate) fn http_client(
    timeout: Duration,
    idle_per_host: usize,
) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(30)))
        .pool_max_idle_per_host(idle_per_host)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(APPLICATION)
        .build()
}

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
    budget: Mutex<AdaptiveBudget>,
    permits: Semaphore,
    correlation_id: Uuid,
    max_attempts: u32,
    backoff: retry::Backoff,
    requests: AtomicU64,
    throttled: AtomicU64,
    retries: AtomicU64,
    /// Answers by endpoint kind and status class (`2xx`, `4xx`, `5xx`, `error` for no answer).
    responses: std::sync::Mutex<std::collections::BTreeMap<(&'static str, &'static str), u64>>,
    cancel: CancellationToken,
}

/// The kind of endpoint a URL asks (a metric label: never a customer id).
pub fn endpoint_kind(url: &Url) -> &'static str {
    let path = url.path().trim_end_matches('/');
    let last = path.rsplit('/').next().unwrap_or_default();
    match last {
        "customers" => "customers",
        "subscriptions" => "subscriptions",
        "managedservices" => "managedservices",
        "subscribedskus" => "subscribedskus",
        "auditrecords" => "auditrecords",
        _ => "other",
    }
}

fn status_class(status: u16) -> &'static str {
    match status {
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

impl PartnerCenterClient {
    /// A client whose requests carry `correlation_id` (the run id) as `MS-CorrelationId`.
    pub async fn new(
        settings: &PartnerCenterSettings,
        creds: Credentials,
        store: Option<RefreshTokenStore>,
        correlation_id: Uuid,
    ) -> Result<PartnerCenterClient, AuthError> {
        let http = http_client(settings.request_timeout, settings.max_concurrency)
            .map_err(|e| AuthError::Endpoint(format!("cannot build the HTTP client: {e}")))?;
        let tokens = TokenProvider::new(http.clone(), creds, store)
            .await?
            .retrying(settings.max_attempts, retry::Backoff::default());
        Ok(PartnerCenterClient {
            http,
            base: settings.base_url.clone(),
            tokens: Arc::new(tokens),
            budget: Mutex::new(AdaptiveBudget::new(settings.requests_per_minute)),
            permits: Semaphore::new(settings.max_concurrency),
            correlation_id,
            max_attempts: settings.max_attempts.max(1),
            backoff: retry::Backoff::default(),
            requests: AtomicU64::new(0),
            throttled: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            responses: std::sync::Mutex::new(std::collections::BTreeMap::new()),
            cancel: CancellationToken::new(),
        })
    }

    /// Shorter backoff (for the token endpoint too), for tests that exercise retries.
    pub fn with_backoff(mut self, backoff: retry::Backoff) -> PartnerCenterClient {
        self.backoff = backoff;
        if let Some(tokens) = Arc::get_mut(&mut self.tokens) {
            tokens.set_backoff(backoff);
        }
        self
    }

    /// When `cancel` fires, every request, retry pause and Retry-After wait of this client
    /// ends at once with [`ApiError::Cancelled`].
    pub fn cancelled_by(mut self, cancel: CancellationToken) -> PartnerCenterClient {
        self.cancel = cancel;
        self
    }

    /// A token now (bad credentials show here, before any customer), unless cancelled.
    pub async fn authenticate(&self) -> Result<(), ApiError> {
        tokio::select! {
            biased;
            _ = self.cancel.cancelled() => Err(ApiError::Cancelled),
            t = self.tokens.token() => t.map(|_| ()).map_err(ApiError::from),
        }
    }

    pub fn correlation_id(&self) -> Uuid {
        self.correlation_id
    }

    pub fn tokens(&self) -> &TokenProvider {
        &self.tokens
    }

    /// The request budget's current rate, per minute (lower than configured after 429s).
    pub async fn budget_rate(&self) -> f64 {
        self.budget.lock().await.rate()
    }

    /// Answers so far by endpoint kind and status class, e.g. (`subscriptions`, `2xx`).
    pub fn responses(&self) -> Vec<(&'static str, &'static str, u64)> {
        match self.responses.lock() {
            Ok(m) => m.iter().map(|((e, c), n)| (*e, *c, *n)).collect(),
            Err(_) => Vec::new(),
        }
    }

    fn count_response(&self, url: &Url, class: &'static str) {
        if let Ok(mut m) = self.responses.lock() {
            *m.entry((endpoint_kind(url), class)).or_insert(0) += 1;
        }
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

    /// A customer's subscriptions from partner `mpn_id`, or from every partner when `None`,
    /// proven complete, each read by `parse` (the sync's description of the resource).
    pub async fn subscriptions<T>(
        &self,
        customer: Uuid,
        mpn_id: Option<&str>,
        parse: impl Fn(Box<RawValue>) -> Result<T, ParseError>,
    ) -> Result<Complete<T>, ApiError> {
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
        self.collection(url, op, parse).await
    }

    /// A customer's managed services (App+User tokens only), proven complete, each read by
    /// `parse`.
    pub async fn managed_services<T>(
        &self,
        customer: Uuid,
        parse: impl Fn(Box<RawValue>) -> Result<T, ParseError>,
    ) -> Result<Complete<T>, ApiError> {
        let url = self.url(&format!("/v1/customers/{customer}/managedservices"))?;
        let op = format!("GET /v1/customers/{customer}/managedservices");
        self.collection(url, op, parse).await
    }

    /// A customer's subscribed SKUs (licences and their use, App+User tokens only), proven
    /// complete, each read by `parse`.
    pub async fn subscribed_skus<T>(
        &self,
        customer: Uuid,
        parse: impl Fn(Box<RawValue>) -> Result<T, ParseError>,
    ) -> Result<Complete<T>, ApiError> {
        let url = self.url(&format!("/v1/customers/{customer}/subscribedskus"))?;
        let op = format!("GET /v1/customers/{customer}/subscribedskus");
        self.collection(url, op, parse).await
    }

    /// Every page of a collection, proven complete, each item read by `parse`; an item that
    /// does not read fails the whole answer (a decode error naming the request).
    async fn collection<T>(
        &self,
        url: Url,
        op: String,
        parse: impl Fn(Box<RawValue>) -> Result<T, ParseError>,
    ) -> Result<Complete<T>, ApiError> {
        paging::Pager::new(self, url, op.clone())
            .collect()
            .await?
            .try_map(|raw| parse(raw).map_err(|e| self.decode_error(&op, e)))
    }

    /// The activity log's records for whole days (UTC) from `start` to `end`, proven complete.
    pub async fn activity(
        &self,
        start: chrono::NaiveDate,
        end: chrono::NaiveDate,
    ) -> Result<Complete<serde_json::Map<String, serde_json::Value>>, ApiError> {
        let url = self.url(&format!(
            "/v1/auditrecords?startDate={start}&endDate={end}&size=500"
        ))?;
        let op = "GET /v1/auditrecords".to_string();
        paging::Pager::new(self, url, op.clone())
            .collect()
            .await?
            .try_map(|raw| models::object_of(&raw).map_err(|e| self.decode_error(&op, e)))
    }

    /// The customer list, page by page.
    pub fn customers(&self, page_size: u32) -> CustomerPager<'_> {
        let first = self
            .url(&format!("/v1/customers?size={}", page_size.clamp(1, 500)))
            .unwrap_or_else(|_| self.base.clone());
        CustomerPager {
            pager: paging::Pager::new(self, first, "GET /v1/customers".to_string()),
        }
    }

    fn context(&self, op: &str, description: String) -> Box<Context> {
        Box::new(Context {
            operation: op.to_string(),
            description: Some(description),
            correlation_id: self.correlation_id.to_string(),
            ..Context::default()
        })
    }

    fn decode_error(&self, op: &str, e: models::ParseError) -> ApiError {
        ApiError::Decode(self.context(op, e.0))
    }

    fn incomplete(&self, op: &str, why: String) -> ApiError {
        ApiError::Incomplete(self.context(op, why))
    }

    async fn get_page(
        &self,
        url: &Url,
        headers: &[(String, String)],
        op: &str,
    ) -> Result<models::Page, ApiError> {
        let (body, ctx) = self.get(url, headers, op).await?;
        models::parse_page(&body).map_err(|e| {
            let incomplete = matches!(e, models::PageError::Incomplete(_));
            let ctx = Box::new(Context {
                description: Some(e.to_string()),
                ..ctx
            });
            if incomplete {
                ApiError::Incomplete(ctx)
            } else {
                ApiError::Decode(ctx)
            }
        })
    }

    /// One logical GET with its retries; the body of the first 2xx. Ends at once with
    /// [`ApiError::Cancelled`] when the client is cancelled.
    async fn get(
        &self,
        url: &Url,
        extra_headers: &[(String, String)],
        op: &str,
    ) -> Result<(Vec<u8>, Context), ApiError> {
        tokio::select! {
            biased;
            _ = self.cancel.cancelled() => Err(ApiError::Cancelled),
            r = self.get_with_retries(url, extra_headers, op) => r,
        }
    }

    async fn get_with_retries(
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
                .map_err(|_| ApiError::Cancelled)?;
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
                    let retry_after = retry::retry_after_of(response.headers());
                    match response.bytes().await {
                        Ok(body) => Ok((status, retry_after, body.to_vec())),
                        Err(e) => Err(e),
                    }
                }
                Err(e) => Err(e),
            };
            drop(permit);
            self.count_response(
                url,
                match &outcome {
                    Ok((status, _, _)) => status_class(status.as_u16()),
                    Err(_) => "error",
                },
            );
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
            let (code, description) = if status.is_success() {
                (None, None)
            } else {
                error::parse_error_body(&body)
            };
            ctx.code = code.clone();
            ctx.description = description;
            let code = code.unwrap_or_default();
            match error::verdict(status.as_u16(), &code) {
                Verdict::Answer => {
                    self.budget.lock().await.succeeded();
                    return Ok((body, ctx));
                }
                Verdict::Fatal if code == "900421" => {
                    return Err(AuthError::MfaRequired(ctx.to_string()).into());
                }
                Verdict::Fatal => return Err(AuthError::WrongAudience(ctx.to_string()).into()),
                Verdict::Reauthenticate => {
                    if refreshed_after_401 {
                        return Err(AuthError::Unauthorized(ctx.to_string()).into());
                    }
                    // The token may have expired on the way: one fresh token, one more try.
                    refreshed_after_401 = true;
                    self.tokens.invalidate(&token).await;
                    attempt -= 1;
                }
                Verdict::Retry if status == StatusCode::TOO_MANY_REQUESTS => {
                    self.throttled.fetch_add(1, Ordering::Relaxed);
                    let pause = retry_after
                        .unwrap_or_else(|| self.backoff.delay(attempt, retry::random_unit()));
                    // Everybody waits, not only this request: the budget is the tenant's.
                    self.budget.lock().await.throttled(pause);
                    if attempt >= self.max_attempts {
                        return Err(ApiError::Throttled(Box::new(ctx)));
                    }
                    tracing::warn!(op, attempt, request_id = %request_id,
                        correlation_id = %self.correlation_id, retry_after_ms = pause.as_millis() as u64,
                        "throttled by Partner Center (429); slowing down");
                    self.retries.fetch_add(1, Ordering::Relaxed);
                }
                Verdict::Retry => {
                    if attempt >= self.max_attempts {
                        return Err(ApiError::Server(Box::new(ctx)));
                    }
                    let pause = retry_after
                        .unwrap_or_else(|| self.backoff.delay(attempt, retry::random_unit()));
                    tracing::warn!(op, attempt, status = status.as_u16(), request_id = %request_id,
                        correlation_id = %self.correlation_id, retry_in_ms = pause.as_millis() as u64,
                        "server error; retrying");
                    self.retries.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(pause).await;
                }
                Verdict::CustomerError => {
                    let ctx = Box::new(ctx);
                    return Err(match status.as_u16() {
                        300..=399 => ApiError::Redirected(ctx),
                        404 => ApiError::NotFound(ctx),
                        403 if code == "20002" => ApiError::AccessRevoked(ctx),
                        403 => ApiError::Forbidden(ctx),
                        400 if code == "900118" => ApiError::InvalidCustomerId(ctx),
                        500..=599 => ApiError::Server(ctx),
                        _ => ApiError::BadRequest(ctx),
                    });
                }
            }
        }
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
}
