//! Access tokens from Microsoft Entra ID: App+User (refresh token) or App-only (client
//! credentials), at the v1 or v2 endpoint. One cached token, refreshed ahead of expiry by a
//! single request however many callers wait for it; rotated refresh tokens persisted in
//! `pcsync_private` and preferred at the next start.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use sha2::{Digest, Sha256};
use sqlx::PgPool;

use super::retry::{self, Backoff};
use crate::config::{AuthMode, Credentials, TokenVersion};

/// Partner Center's resource (v1) and scope root (v2).
pub const RESOURCE: &str = "https://api.partnercenter.microsoft.com";

/// Why no token could be had. Messages say what to do; none carries a secret.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error(
        "the refresh token has expired (AADSTS700082): Entra ID refresh tokens expire after 90 days without use. Obtain a new one through the secure application model consent and set auth.refresh_token. {0}"
    )]
    RefreshTokenExpired(String),
    #[error(
        "the refresh token was refused (invalid_grant): it may have been revoked, already rotated away, or issued for another app or tenant. Obtain a new one and set auth.refresh_token. {0}"
    )]
    InvalidGrant(String),
    #[error(
        "the client credentials were refused (invalid_client): check auth.client_id and auth.client_secret (the secret's value, not its id; secrets expire). {0}"
    )]
    InvalidClient(String),
    #[error(
        "the app or tenant is unknown to Entra ID: check auth.tenant_id and auth.client_id. {0}"
    )]
    UnknownAppOrTenant(String),
    #[error(
        "Partner Center refused the token for lack of multi-factor authentication (code 900421): since 2026 App+User calls need an MFA claim. Sign in with MFA when obtaining the refresh token (secure application model consent) and set the new auth.refresh_token. {0}"
    )]
    MfaRequired(String),
    #[error(
        "Partner Center refused the token's audience (code 900420): the token was issued for another resource. pcsync asks for https://api.partnercenter.microsoft.com; check that auth.authority is Entra ID and the refresh token was consented for Partner Center. {0}"
    )]
    WrongAudience(String),
    #[error(
        "Partner Center refused a freshly issued token (HTTP 401): check that the app is registered in Partner Center and has the needed permissions. {0}"
    )]
    Unauthorized(String),
    #[error("the token endpoint failed: {0}")]
    Endpoint(String),
    #[error("cannot reach the token endpoint at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("storing the rotated refresh token failed: {0}")]
    Store(String),
}

#[derive(Clone)]
struct AccessToken {
    value: SecretString,
    /// When to stop using it: its expiry less a margin, so a request never carries a token
    /// that expires on the way.
    refresh_at: Instant,
}

struct State {
    access: Option<AccessToken>,
    refresh: Option<SecretString>,
    /// Fingerprint of the configured refresh token the current chain started from.
    seed_fingerprint: String,
}

/// The persistence of rotated refresh tokens (`pcsync_private.refresh_tokens`).
#[derive(Clone)]
pub struct RefreshTokenStore {
    pool: PgPool,
    read_only: bool,
    /// The pcsync tenant name the saved token's row carries (`tenant`).
    tenant_name: String,
}

impl RefreshTokenStore {
    pub fn new(pool: PgPool) -> RefreshTokenStore {
        RefreshTokenStore {
            pool,
            read_only: false,
            tenant_name: crate::sync::tenant::DEFAULT_TENANT.to_string(),
        }
    }

    /// The store of the pcsync tenant `name` (its saved tokens carry the name).
    pub fn for_tenant(mut self, name: &str) -> RefreshTokenStore {
        self.tenant_name = name.to_string();
        self
    }

    /// Reads the stored token but keeps a rotated one in memory only (`pcsync check`, which
    /// changes nothing).
    pub fn read_only(pool: PgPool) -> RefreshTokenStore {
        RefreshTokenStore {
            pool,
            read_only: true,
            tenant_name: crate::sync::tenant::DEFAULT_TENANT.to_string(),
        }
    }

    async fn load(
        &self,
        tenant: &str,
        client: &str,
    ) -> Result<Option<(SecretString, String)>, sqlx::Error> {
        let row: Option<(String, String)> = sqlx::query_as(
            "SELECT refresh_token, seed_fingerprint FROM pcsync_private.refresh_tokens
             WHERE tenant_id = $1 AND client_id = $2",
        )
        .bind(tenant)
        .bind(client)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|(t, f)| (SecretString::from(t), f)))
    }

    async fn save(
        &self,
        tenant: &str,
        client: &str,
        token: &SecretString,
        seed_fingerprint: &str,
    ) -> Result<(), sqlx::Error> {
        if self.read_only {
            return Ok(());
        }
        // A rotated token must survive a crash: the one it replaced may be gone by then.
        let mut tx = self.pool.begin().await?;
        sqlx::query("SET LOCAL synchronous_commit TO on")
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO pcsync_private.refresh_tokens (tenant_id, client_id, refresh_token, seed_fingerprint, obtained_at, tenant)
             VALUES ($1, $2, $3, $4, now(), $5)
             ON CONFLICT (tenant_id, client_id) DO UPDATE
             SET refresh_token = EXCLUDED.refresh_token, seed_fingerprint = EXCLUDED.seed_fingerprint,
                 obtained_at = EXCLUDED.obtained_at, tenant = EXCLUDED.tenant",
        )
        .bind(tenant)
        .bind(client)
        .bind(token.expose_secret())
        .bind(seed_fingerprint)
        .bind(&self.tenant_name)
        .execute(&mut *tx)
        .await?;
        tx.commit().await
    }
}

/// SHA-256 of a secret, hex: tells two tokens apart without keeping either.
pub fn fingerprint(secret: &SecretString) -> String {
    Sha256::digest(secret.expose_secret().as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Hands out access tokens; see the module documentation.
pub struct TokenProvider {
    http: reqwest::Client,
    creds: Credentials,
    store: Option<RefreshTokenStore>,
    state: tokio::sync::Mutex<State>,
    requests: AtomicU64,
    /// Attempts per token request for timeouts, connection errors, 5xx and 429.
    max_attempts: u32,
    backoff: Backoff,
}

impl TokenProvider {
    /// Chooses the refresh token to start from: the newest stored one, unless the configured
    /// one is newer (it differs from the one the stored chain started from).
    pub async fn new(
        http: reqwest::Client,
        creds: Credentials,
        store: Option<RefreshTokenStore>,
    ) -> Result<TokenProvider, AuthError> {
        let configured = creds.refresh_token.clone();
        let seed_fingerprint = configured.as_ref().map(fingerprint).unwrap_or_default();
        let mut refresh = configured;
        if let (Some(store), AuthMode::AppUser) = (&store, creds.mode) {
            match store.load(&creds.tenant_id, &creds.client_id).await {
                Ok(Some((stored, seed))) if seed == seed_fingerprint => {
                    tracing::info!("using the newest rotated refresh token from the database");
                    refresh = Some(stored);
                }
                Ok(Some(_)) => tracing::info!(
                    "auth.refresh_token changed since the stored chain began: using the configured one"
                ),
                Ok(None) => {}
                Err(e) => return Err(AuthError::Store(e.to_string())),
            }
        }
        Ok(TokenProvider {
            http,
            creds,
            store,
            state: tokio::sync::Mutex::new(State {
                access: None,
                refresh,
                seed_fingerprint,
            }),
            requests: AtomicU64::new(0),
            max_attempts: 1,
            backoff: Backoff::default(),
        })
    }

    /// Retries transient failures of the token endpoint (timeouts, connection errors, 5xx,
    /// 429 after its Retry-After) up to `max_attempts` attempts in all, like any request.
    pub fn retrying(mut self, max_attempts: u32, backoff: Backoff) -> TokenProvider {
        self.max_attempts = max_attempts.max(1);
        self.backoff = backoff;
        self
    }

    pub(crate) fn set_backoff(&mut self, backoff: Backoff) {
        self.backoff = backoff;
    }

    pub fn mode(&self) -> AuthMode {
        self.creds.mode
    }

    /// Requests sent to the token endpoint so far.
    pub fn token_requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// A valid access token. Concurrent callers share one refresh: the first takes the lock
    /// and fetches, the others wait and find the new token.
    pub async fn token(&self) -> Result<SecretString, AuthError> {
        let mut state = self.state.lock().await;
        if let Some(t) = &state.access {
            if Instant::now() < t.refresh_at {
                return Ok(t.value.clone());
            }
        }
        let fresh = self.fetch(&mut state).await?;
        state.access = Some(fresh.clone());
        Ok(fresh.value)
    }

    /// Drops `used` after Partner Center answered 401 to it, so the next call fetches anew
    /// (unless another caller already did).
    pub async fn invalidate(&self, used: &SecretString) {
        let mut state = self.state.lock().await;
        if state
            .access
            .as_ref()
            .is_some_and(|t| t.value.expose_secret() == used.expose_secret())
        {
            state.access = None;
        }
    }

    fn endpoint(&self) -> String {
        let authority = self.creds.authority.as_str().trim_end_matches('/');
        let path = match self.creds.token_version {
            TokenVersion::V1 => "oauth2/token",
            TokenVersion::V2 => "oauth2/v2.0/token",
        };
        format!("{authority}/{}/{path}", self.creds.tenant_id)
    }

    async fn fetch(&self, state: &mut State) -> Result<AccessToken, AuthError> {
        let url = self.endpoint();
        let secret = self.creds.client_secret.expose_secret();
        let mut form: Vec<(&str, &str)> = vec![
            ("client_id", self.creds.client_id.as_str()),
            ("client_secret", secret),
        ];
        let refresh_value;
        match self.creds.mode {
            AuthMode::AppUser => {
                refresh_value = state
                    .refresh
                    .as_ref()
                    .map(|r| r.expose_secret().to_string())
                    .unwrap_or_default();
                form.push(("grant_type", "refresh_token"));
                form.push(("refresh_token", refresh_value.as_str()));
            }
            AuthMode::AppOnly => form.push(("grant_type", "client_credentials")),
        }
        let v2_scope = match self.creds.mode {
            AuthMode::AppUser => format!("{RESOURCE}/user_impersonation offline_access"),
            AuthMode::AppOnly => format!("{RESOURCE}/.default"),
        };
        match self.creds.token_version {
            TokenVersion::V1 => form.push(("resource", RESOURCE)),
            TokenVersion::V2 => form.push(("scope", v2_scope.as_str())),
        }
        let started = Instant::now();
        let mut attempt = 0;
        let json = loop {
            attempt += 1;
            self.requests.fetch_add(1, Ordering::Relaxed);
            let (pause, failure) = match self.exchange(&url, &form).await {
                Exchange::Token(json) => break json,
                Exchange::Refused(e) => return Err(e),
                Exchange::Transient {
                    retry_after,
                    failure,
                } => (
                    retry_after
                        .unwrap_or_else(|| self.backoff.delay(attempt, retry::random_unit())),
                    failure,
                ),
            };
            if attempt >= self.max_attempts {
                return Err(failure);
            }
            tracing::warn!(attempt, error = %failure, retry_in_ms = pause.as_millis() as u64,
                "the token endpoint failed; retrying");
            tokio::time::sleep(pause).await;
        };
        let access = json
            .get("access_token")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| AuthError::Endpoint("the answer holds no access_token".into()))?;
        // v1 sends "3599", v2 sends 3599.
        let expires_in = match json.get("expires_in") {
            Some(Value::Number(n)) => n.as_u64(),
            Some(Value::String(s)) => s.trim().parse().ok(),
            _ => None,
        }
        .unwrap_or(3600);
        let lifetime = Duration::from_secs(expires_in);
        // Refresh ahead: a tenth of the lifetime, at most five minutes.
        let margin = (lifetime / 10).min(Duration::from_secs(300));
        if let Some(rotated) = json.get("refresh_token").and_then(Value::as_str) {
            if !rotated.is_empty() {
                let rotated = SecretString::from(rotated.to_string());
                if let Some(store) = self.store.clone() {
                    // In a task of its own: a caller cancelled now (SIGTERM) must not lose the
                    // only valid refresh token between receiving and storing it.
                    let (tenant, client) =
                        (self.creds.tenant_id.clone(), self.creds.client_id.clone());
                    let (token, seed) = (rotated.clone(), state.seed_fingerprint.clone());
                    let saved =
                        tokio::spawn(
                            async move { store.save(&tenant, &client, &token, &seed).await },
                        );
                    match saved.await {
                        Ok(Ok(())) => {}
                        // The chain goes on in memory; the next start may need a new consent
                        // if this keeps failing for 90 days.
                        Ok(Err(e)) => {
                            tracing::error!(error = %e, "could not store the rotated refresh token")
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "could not store the rotated refresh token")
                        }
                    }
                }
                state.refresh = Some(rotated);
            }
        }
        tracing::debug!(
            expires_in,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "obtained an access token"
        );
        Ok(AccessToken {
            value: SecretString::from(access.to_string()),
            refresh_at: started + lifetime.saturating_sub(margin),
        })
    }
}

/// What one exchange at the token endpoint gave.
enum Exchange {
    Token(Value),
    /// Entra ID said no (bad secret, expired grant, unknown app): retrying cannot help.
    Refused(AuthError),
    /// A timeout, a failed connection, a 5xx, a 429: worth another attempt.
    Transient {
        retry_after: Option<Duration>,
        failure: AuthError,
    },
}

impl TokenProvider {
    async fn exchange(&self, url: &str, form: &[(&str, &str)]) -> Exchange {
        let unreachable = |e: reqwest::Error| Exchange::Transient {
            retry_after: None,
            failure: AuthError::Unreachable {
                url: url.to_string(),
                reason: super::transport_reason(&e),
            },
        };
        let response = match self
            .http
            .post(url)
            .header("Accept", "application/json")
            .form(form)
            .send()
            .await
        {
            Ok(r) => r,
            Err(e) => return unreachable(e),
        };
        let status = response.status();
        let retry_after = retry::retry_after_of(response.headers());
        let body = match response.bytes().await {
            Ok(b) => b,
            Err(e) => return unreachable(e),
        };
        let json: Value =
            serde_json::from_slice(super::models::strip_bom(&body)).unwrap_or(Value::Null);
        if status.is_success() {
            return Exchange::Token(json);
        }
        let failure = classify_token_error(status.as_u16(), &json);
        match super::error::verdict(status.as_u16(), "") {
            super::Verdict::Retry => Exchange::Transient {
                retry_after,
                failure,
            },
            _ => Exchange::Refused(failure),
        }
    }
}

/// Entra ID's error answer, turned into what the user should do.
fn classify_token_error(status: u16, json: &Value) -> AuthError {
    let error = json
        .get("error")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let description = json
        .get("error_description")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let codes: Vec<u64> = json
        .get("error_codes")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_u64).collect())
        .unwrap_or_default();
    // Entra's descriptions name codes, trace and correlation ids, never the secrets sent.
    let detail = format!(
        "(HTTP {status}{}{})",
        if error.is_empty() {
            String::new()
        } else {
            format!(", {error}")
        },
        if description.is_empty() {
            String::new()
        } else {
            format!(": {}", description.lines().next().unwrap_or_default())
        }
    );
    let has = |code: u64| codes.contains(&code) || description.contains(&format!("AADSTS{code}"));
    if has(700082) {
        AuthError::RefreshTokenExpired(detail)
    } else if error == "invalid_client" {
        AuthError::InvalidClient(detail)
    } else if error == "unauthorized_client" || has(700016) || has(90002) {
        AuthError::UnknownAppOrTenant(detail)
    } else if error == "invalid_grant" {
        AuthError::InvalidGrant(detail)
    } else {
        AuthError::Endpoint(detail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn entra_errors_become_actionable() {
        let e = classify_token_error(
            400,
            &json!({"error": "invalid_grant", "error_description": "AADSTS700082: The refresh token has expired due to inactivity.", "error_codes": [700082]}),
        );
        assert!(matches!(e, AuthError::RefreshTokenExpired(_)));
        assert!(e.to_string().contains("set auth.refresh_token"));
        let e = classify_token_error(
            400,
            &json!({"error": "invalid_grant", "error_codes": [70000]}),
        );
        assert!(matches!(e, AuthError::InvalidGrant(_)));
        let e = classify_token_error(401, &json!({"error": "invalid_client"}));
        assert!(e.to_string().contains("auth.client_secret"));
        let e = classify_token_error(
            400,
            &json!({"error": "invalid_request", "error_codes": [90002]}),
        );
        assert!(matches!(e, AuthError::UnknownAppOrTenant(_)));
        let e = classify_token_error(500, &Value::Null);
        assert!(matches!(e, AuthError::Endpoint(_)));
    }

    #[test]
    fn fingerprints_tell_tokens_apart_without_showing_them() {
        let a = fingerprint(&SecretString::from("token-a".to_string()));
        let b = fingerprint(&SecretString::from("token-b".to_string()));
        assert_ne!(a, b);
        assert_eq!(a.len(), 64);
        assert!(!a.contains("token"));
    }
}
