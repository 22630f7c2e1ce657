//! Configuration: `config/default.toml` (compiled in), then an optional file, then environment
//! variables `PCSYNC__SECTION__KEY` (and `DATABASE_URL`), read once into typed, validated
//! settings. Every error names the key and the form it expects; no error ever repeats a secret.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::Url;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::schedule::CronSchedule;

/// The committed defaults, so the binary runs with no file beside it.
pub const DEFAULT_TOML: &str = include_str!("../config/default.toml");

/// Environment variable naming the optional configuration file (`--config` wins over it).
pub const CONFIG_FILE_ENV: &str = "PCSYNC_CONFIG";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file or environment could not be read into keys at all (syntax, unknown key).
    #[error("configuration could not be read: {0}")]
    Load(String),
    /// A key holds a value of the wrong form.
    #[error("{key}: {message}")]
    Invalid { key: &'static str, message: String },
    /// A key of one `[[tenants]]` entry (or of its `PCSYNC_TENANT_<NAME>__…` variables).
    #[error("[[tenants]] entry {tenant}: {source}")]
    Tenant {
        tenant: String,
        source: Box<ConfigError>,
    },
}

fn invalid(key: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        message: message.into(),
    }
}

/// Everything pcsync needs to run, validated.
#[derive(Debug, Clone)]
pub struct Settings {
    pub database: DatabaseSettings,
    pub partner_center: PartnerCenterSettings,
    pub auth: AuthSettings,
    pub customers: CustomerSettings,
    pub sync: SyncSettings,
    pub log: LogSettings,
    pub status: StatusSettings,
    pub notify: NotifySettings,
    pub metrics: MetricsSettings,
    /// The `[[tenants]]` entries, each validated into settings of its own (the top-level
    /// settings, then the entry, then its `PCSYNC_TENANT_<NAME>__…` variables). Empty: the
    /// top-level settings are the one tenant.
    pub tenants: Vec<Settings>,
    /// Where every "now" of a pass comes from: the system clock, unless a test, the benchmark
    /// or the demo sets one (not a configuration key).
    pub clock: crate::clock::Clock,
}

/// Where and what to send after each pass.
#[derive(Clone)]
pub struct NotifySettings {
    /// Incoming-webhook URL (Slack, Teams, any HTTP endpoint); a secret, since its path is the
    /// credential. `None`: no notifications.
    pub webhook_url: Option<SecretString>,
    /// Subscriptions ending within this many days with auto-renew off are announced.
    pub renewal_days: u32,
    /// Renewal decisions (terms longer than a month) are announced when they enter this many
    /// days; 0: none (the ending alert then covers them).
    pub decision_days: u32,
    /// Change kinds to send (added, removed, changed, untracked, tracked); empty: all.
    pub kinds: Vec<String>,
    /// For `changed` events, the fields to send (status, quantity, raw, ...); empty: all.
    pub fields: Vec<String>,
}

impl fmt::Debug for NotifySettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NotifySettings")
            .field("webhook_url", &self.webhook_url.as_ref().map(|_| "***"))
            .field("renewal_days", &self.renewal_days)
            .field("decision_days", &self.decision_days)
            .field("kinds", &self.kinds)
            .field("fields", &self.fields)
            .finish()
    }
}

/// Where pcsync's Prometheus metrics go.
#[derive(Clone, Default)]
pub struct MetricsSettings {
    /// `pcsync run` (the worker) serves `/metrics`, `/healthz` and `/livez` here; `None`: off.
    pub listen: Option<std::net::SocketAddr>,
    /// `pcsync run --once` pushes its metrics here at the end of the pass (a Pushgateway); a
    /// secret, since it may hold credentials (`https://user:password@host`).
    pub pushgateway_url: Option<SecretString>,
    /// `pcsync run --once` writes its metrics to this file, atomically (node_exporter's
    /// textfile collector reads it).
    pub textfile: Option<std::path::PathBuf>,
}

impl fmt::Debug for MetricsSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MetricsSettings")
            .field("listen", &self.listen)
            .field(
                "pushgateway_url",
                &self.pushgateway_url.as_ref().map(|_| "***"),
            )
            .field("textfile", &self.textfile)
            .finish()
    }
}

#[derive(Debug, Clone)]
pub struct StatusSettings {
    /// `pcsync status` is CRITICAL when no pass succeeded within this long; `None`: twice
    /// the interval of `sync.schedule`.
    pub max_age: Option<Duration>,
}

#[derive(Clone)]
pub struct DatabaseSettings {
    /// May hold a password, hence secret; use [`DatabaseSettings::redacted_url`] to show it.
    pub url: SecretString,
    pub max_connections: u32,
    /// Apply pending migrations when `pcsync run` starts (needs the owner's rights); when
    /// false, a schema that is not current stops the run with what to do.
    pub migrate_on_start: bool,
}

impl DatabaseSettings {
    /// The URL with any password replaced, fit for logs and error messages.
    pub fn redacted_url(&self) -> String {
        redact_url(self.url.expose_secret())
    }
}

impl fmt::Debug for DatabaseSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatabaseSettings")
            .field("url", &self.redacted_url())
            .field("max_connections", &self.max_connections)
            .field("migrate_on_start", &self.migrate_on_start)
            .finish()
    }
}

/// `scheme://user:***@host/...`: the password never leaves this function.
pub fn redact_url(url: &str) -> String {
    match Url::parse(url) {
        Ok(mut parsed) => {
            if parsed.password().is_some() {
                // Cannot fail for URLs that already carry a password.
                let _ = parsed.set_password(Some("***"));
            }
            parsed.to_string()
        }
        Err(_) => "<unparseable URL>".to_string(),
    }
}

#[derive(Debug, Clone)]
pub struct PartnerCenterSettings {
    pub base_url: Url,
    pub request_timeout: Duration,
    pub max_concurrency: usize,
    pub requests_per_minute: u32,
    pub max_attempts: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    /// Secure application model: refresh token, App+User access tokens.
    AppUser,
    /// Client credentials: App-only access tokens (no managed services).
    AppOnly,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenVersion {
    V1,
    V2,
}

#[derive(Debug, Clone)]
pub struct AuthSettings {
    /// The name this partner tenant's rows carry (`tenant` in every table), `default` unless
    /// set: several tenants share one database under names of their own.
    pub tenant_name: String,
    pub mode: AuthMode,
    pub authority: Url,
    pub token_version: TokenVersion,
    pub tenant_id: Option<String>,
    pub client_id: Option<String>,
    pub client_secret: Option<SecretString>,
    pub refresh_token: Option<SecretString>,
}

/// What a token request needs, all present: see [`AuthSettings::credentials`].
#[derive(Debug, Clone)]
pub struct Credentials {
    pub mode: AuthMode,
    pub authority: Url,
    pub token_version: TokenVersion,
    pub tenant_id: String,
    pub client_id: String,
    pub client_secret: SecretString,
    /// Present in [`AuthMode::AppUser`] only.
    pub refresh_token: Option<SecretString>,
}

impl AuthSettings {
    /// True when any credential is configured; `pcsync check` then tries to get a token.
    pub fn any_set(&self) -> bool {
        self.tenant_id.is_some()
            || self.client_id.is_some()
            || self.client_secret.is_some()
            || self.refresh_token.is_some()
    }

    /// The credentials for the configured mode, or an error naming the first missing key.
    pub fn credentials(&self) -> Result<Credentials, ConfigError> {
        let tenant_id = self.tenant_id.clone().ok_or_else(|| {
            invalid(
                "auth.tenant_id",
                "not set; give the partner tenant id (a GUID or contoso.onmicrosoft.com)",
            )
        })?;
        let client_id = self.client_id.clone().ok_or_else(|| {
            invalid(
                "auth.client_id",
                "not set; give the application (client) id of the Entra app registration",
            )
        })?;
        let client_secret = self.client_secret.clone().ok_or_else(|| {
            invalid(
                "auth.client_secret",
                "not set; give the app's client secret (or auth.client_secret_file)",
            )
        })?;
        let refresh_token = match self.mode {
            AuthMode::AppOnly => None,
            AuthMode::AppUser => Some(self.refresh_token.clone().ok_or_else(|| {
                invalid(
                    "auth.refresh_token",
                    "not set; auth.mode = \"app_user\" needs a refresh token from the secure application model consent (or set auth.mode = \"app_only\")",
                )
            })?),
        };
        Ok(Credentials {
            mode: self.mode,
            authority: self.authority.clone(),
            token_version: self.token_version,
            tenant_id,
            client_id,
            client_secret,
            refresh_token,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CustomerSource {
    File,
    Api,
}

#[derive(Debug, Clone)]
pub struct CustomerSettings {
    pub source: CustomerSource,
    pub file: PathBuf,
    pub default_mpn_id: Option<String>,
    pub page_size: u32,
}

#[derive(Debug, Clone)]
pub struct SyncSettings {
    /// When passes start, read in `timezone`.
    pub schedule: CronSchedule,
    /// Which firings of `schedule` run a full pass (the others are incremental), read in
    /// `timezone`: a firing after this schedule fired since the last full pass is full.
    pub full_schedule: CronSchedule,
    /// The IANA time zone the schedules are read in (default UTC).
    pub timezone: chrono_tz::Tz,
    /// After SIGTERM/SIGINT, how long the pass may take to stop before pcsync exits anyway.
    pub shutdown_grace: Duration,
    /// How often an incremental pass fetches a customer again whose subscription came due and
    /// whose date Partner Center has not moved yet (within the 3 days after the due moment).
    pub due_recheck: Duration,
    /// Whether passes fetch subscribed SKUs (licence usage).
    pub license_usage: LicenseUsage,
}

/// `sync.license_usage`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LicenseUsage {
    /// On with App+User credentials, off with App-only (the endpoint needs App+User).
    Auto,
    On,
    Off,
}

impl LicenseUsage {
    pub fn enabled(self, mode: AuthMode) -> bool {
        match self {
            LicenseUsage::Auto => mode == AuthMode::AppUser,
            LicenseUsage::On => true,
            LicenseUsage::Off => false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone)]
pub struct LogSettings {
    pub format: LogFormat,
    /// How often a pass logs its progress; `None` never.
    pub progress: Option<Duration>,
}

// ---- raw layer: every value arrives as text, so each error can name its key -------------------

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSettings {
    #[serde(default)]
    database: RawDatabase,
    #[serde(default)]
    partner_center: RawPartnerCenter,
    #[serde(default)]
    auth: RawAuth,
    #[serde(default)]
    customers: RawCustomers,
    #[serde(default)]
    sync: RawSync,
    #[serde(default)]
    log: RawLog,
    #[serde(default)]
    status: RawStatus,
    #[serde(default)]
    notify: RawNotify,
    #[serde(default)]
    metrics: RawMetrics,
    #[serde(default)]
    tenants: Vec<RawTenant>,
}

/// One `[[tenants]]` entry: what may differ between partner tenants. Secrets come only from
/// `*_file` keys or `PCSYNC_TENANT_<NAME>__…` variables, never from the file itself.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTenant {
    name: Option<String>,
    #[serde(default)]
    auth: RawAuth,
    #[serde(default)]
    customers: RawCustomers,
    #[serde(default)]
    partner_center: RawTenantPartnerCenter,
    #[serde(default)]
    sync: RawTenantSync,
    #[serde(default)]
    notify: RawTenantNotify,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTenantPartnerCenter {
    requests_per_minute: Option<String>,
    max_concurrency: Option<String>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTenantSync {
    schedule: Option<String>,
    full_schedule: Option<String>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTenantNotify {
    webhook_url_file: Option<String>,
}

#[derive(Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMetrics {
    listen: Option<String>,
    pushgateway_url: Option<String>,
    pushgateway_url_file: Option<String>,
    textfile: Option<String>,
}

// Hand-written: the Pushgateway URL may hold credentials.
impl fmt::Debug for RawMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawMetrics")
            .field("listen", &self.listen)
            .field(
                "pushgateway_url",
                &self.pushgateway_url.as_ref().map(|_| "***"),
            )
            .field("pushgateway_url_file", &self.pushgateway_url_file)
            .field("textfile", &self.textfile)
            .finish()
    }
}

#[derive(Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNotify {
    webhook_url: Option<String>,
    webhook_url_file: Option<String>,
    renewal_days: Option<String>,
    decision_days: Option<String>,
    kinds: Option<String>,
    fields: Option<String>,
}

// Hand-written: the webhook URL is a secret.
impl fmt::Debug for RawNotify {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawNotify")
            .field("renewal_days", &self.renewal_days)
            .field("decision_days", &self.decision_days)
            .field("kinds", &self.kinds)
            .field("fields", &self.fields)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStatus {
    max_age_secs: Option<String>,
}

#[derive(Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDatabase {
    url: Option<String>,
    max_connections: Option<String>,
    migrate_on_start: Option<String>,
}

// Hand-written: the URL may carry a password.
impl fmt::Debug for RawDatabase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawDatabase")
            .field("url", &self.url.as_deref().map(redact_url))
            .field("max_connections", &self.max_connections)
            .field("migrate_on_start", &self.migrate_on_start)
            .finish()
    }
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPartnerCenter {
    base_url: Option<String>,
    request_timeout_secs: Option<String>,
    max_concurrency: Option<String>,
    requests_per_minute: Option<String>,
    max_attempts: Option<String>,
}

#[derive(Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAuth {
    tenant_name: Option<String>,
    mode: Option<String>,
    authority: Option<String>,
    token_version: Option<String>,
    tenant_id: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
    client_secret_file: Option<String>,
    refresh_token: Option<String>,
    refresh_token_file: Option<String>,
}

// Hand-written so that a debug print of the raw layer cannot show a secret either.
impl fmt::Debug for RawAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawAuth")
            .field("tenant_name", &self.tenant_name)
            .field("mode", &self.mode)
            .field("tenant_id", &self.tenant_id)
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCustomers {
    source: Option<String>,
    file: Option<String>,
    default_mpn_id: Option<String>,
    page_size: Option<String>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSync {
    schedule: Option<String>,
    full_schedule: Option<String>,
    timezone: Option<String>,
    shutdown_grace_secs: Option<String>,
    due_recheck_secs: Option<String>,
    license_usage: Option<String>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLog {
    format: Option<String>,
    progress_secs: Option<String>,
}

/// Where settings come from besides the compiled-in defaults.
#[derive(Default, Clone)]
pub struct Sources {
    /// `--config PATH`; when `None`, `PCSYNC_CONFIG` from `env` is used if set.
    pub file: Option<PathBuf>,
    /// The environment to read `PCSYNC__*`, `PCSYNC_CONFIG` and `DATABASE_URL` from.
    pub env: HashMap<String, String>,
}

// Hand-written: the environment holds secrets; only the variables' names are shown.
impl fmt::Debug for Sources {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<&String> = self.env.keys().collect();
        names.sort();
        f.debug_struct("Sources")
            .field("file", &self.file)
            .field("env_names", &names)
            .finish()
    }
}

impl Sources {
    /// The process environment and an optional `--config` path.
    pub fn from_process(file: Option<PathBuf>) -> Self {
        Sources {
            file,
            env: std::env::vars().collect(),
        }
    }
}

impl Settings {
    /// Reads and validates every layer. The first invalid key ends the load with its name.
    pub fn load(sources: &Sources) -> Result<Settings, ConfigError> {
        let file = sources.file.clone().or_else(|| {
            sources
                .env
                .get(CONFIG_FILE_ENV)
                .filter(|p| !p.trim().is_empty())
                .map(PathBuf::from)
        });
        let mut builder = config::Config::builder().add_source(config::File::from_str(
            DEFAULT_TOML,
            config::FileFormat::Toml,
        ));
        if let Some(path) = &file {
            if !path.is_file() {
                return Err(ConfigError::Load(format!(
                    "configuration file {} does not exist or is not a file",
                    path.display()
                )));
            }
            builder = builder.add_source(
                config::File::from(path.as_path())
                    .format(config::FileFormat::Toml)
                    .required(true),
            );
        }
        let pcsync_env: HashMap<String, String> = sources
            .env
            .iter()
            .filter(|(k, _)| k.starts_with("PCSYNC__"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        builder = builder.add_source(
            config::Environment::with_prefix("PCSYNC")
                .prefix_separator("__")
                .separator("__")
                .source(Some(pcsync_env.clone())),
        );
        let raw: RawSettings = builder
            .build()
            .and_then(|c| c.try_deserialize())
            .map_err(|e| ConfigError::Load(e.to_string()))?;
        let database_url_env = if pcsync_env.contains_key("PCSYNC__DATABASE__URL") {
            None
        } else {
            sources
                .env
                .get("DATABASE_URL")
                .filter(|v| !v.trim().is_empty())
        };
        let mut raw = raw;
        let entries = std::mem::take(&mut raw.tenants);
        let mut settings = validate(raw.clone(), database_url_env.cloned())?;
        let mut names = std::collections::HashSet::new();
        for (i, entry) in entries.into_iter().enumerate() {
            let label = entry
                .name
                .as_deref()
                .map_or_else(|| format!("{}", i + 1), |n| format!("{n:?}"));
            let in_entry = |e: ConfigError| ConfigError::Tenant {
                tenant: label.clone(),
                source: Box::new(e),
            };
            let name = required(
                "name",
                entry.name.clone(),
                "the tenant's name, such as \"emea\"",
            )
            .map_err(in_entry)?;
            let merged = tenant_raw(&raw, entry, &name, &sources.env).map_err(in_entry)?;
            let one = validate(merged, database_url_env.cloned()).map_err(in_entry)?;
            if !names.insert(one.auth.tenant_name.clone()) {
                return Err(in_entry(invalid(
                    "name",
                    "another [[tenants]] entry has this name; each tenant needs a name of its own",
                )));
            }
            settings.tenants.push(one);
        }
        Ok(settings)
    }

    /// The tenants to sync: the `[[tenants]]` entries, or these settings as the one tenant.
    pub fn tenant_settings(&self) -> Vec<Settings> {
        if self.tenants.is_empty() {
            vec![self.clone()]
        } else {
            self.tenants.clone()
        }
    }
}

/// The variable prefix of one tenant's settings: `PCSYNC_TENANT_EMEA__` for `emea` (`-` becomes
/// `_`).
pub fn tenant_env_prefix(name: &str) -> String {
    format!(
        "PCSYNC_TENANT_{}__",
        name.to_ascii_uppercase().replace('-', "_")
    )
}

/// One tenant's raw settings: the top-level ones, then its `[[tenants]]` entry, then its
/// `PCSYNC_TENANT_<NAME>__SECTION__KEY` variables.
fn tenant_raw(
    base: &RawSettings,
    entry: RawTenant,
    name: &str,
    env: &HashMap<String, String>,
) -> Result<RawSettings, ConfigError> {
    for (key, set) in [
        ("auth.client_secret", entry.auth.client_secret.is_some()),
        ("auth.refresh_token", entry.auth.refresh_token.is_some()),
    ] {
        if set {
            return Err(invalid(
                key,
                format!(
                    "a secret does not belong in the configuration file; put it in a file named by {key}_file, or in the variable {}{}",
                    tenant_env_prefix(name),
                    key.to_ascii_uppercase().replace('.', "__")
                ),
            ));
        }
    }
    let mut raw = base.clone();
    raw.auth.tenant_name = Some(name.to_string());
    let over = |into: &mut Option<String>, from: Option<String>| {
        if from.is_some() {
            *into = from;
        }
    };
    let a = entry.auth;
    over(&mut raw.auth.mode, a.mode);
    over(&mut raw.auth.authority, a.authority);
    over(&mut raw.auth.token_version, a.token_version);
    over(&mut raw.auth.tenant_id, a.tenant_id);
    over(&mut raw.auth.client_id, a.client_id);
    // A secret file of the entry replaces the top-level secret, inline or in a file.
    if a.client_secret_file.is_some() {
        raw.auth.client_secret = None;
        raw.auth.client_secret_file = a.client_secret_file;
    }
    if a.refresh_token_file.is_some() {
        raw.auth.refresh_token = None;
        raw.auth.refresh_token_file = a.refresh_token_file;
    }
    let c = entry.customers;
    over(&mut raw.customers.source, c.source);
    over(&mut raw.customers.file, c.file);
    over(&mut raw.customers.default_mpn_id, c.default_mpn_id);
    over(&mut raw.customers.page_size, c.page_size);
    over(
        &mut raw.partner_center.requests_per_minute,
        entry.partner_center.requests_per_minute,
    );
    over(
        &mut raw.partner_center.max_concurrency,
        entry.partner_center.max_concurrency,
    );
    over(&mut raw.sync.schedule, entry.sync.schedule);
    over(&mut raw.sync.full_schedule, entry.sync.full_schedule);
    if entry.notify.webhook_url_file.is_some() {
        raw.notify.webhook_url = None;
        raw.notify.webhook_url_file = entry.notify.webhook_url_file;
    }
    let prefix = tenant_env_prefix(name);
    let mut vars: Vec<(&String, &String)> =
        env.iter().filter(|(k, _)| k.starts_with(&prefix)).collect();
    vars.sort();
    for (var, value) in vars {
        let key = var[prefix.len()..].to_ascii_lowercase();
        let v = Some(value.clone());
        let slot: &mut Option<String> = match key.as_str() {
            "auth__mode" => &mut raw.auth.mode,
            "auth__authority" => &mut raw.auth.authority,
            "auth__token_version" => &mut raw.auth.token_version,
            "auth__tenant_id" => &mut raw.auth.tenant_id,
            "auth__client_id" => &mut raw.auth.client_id,
            "auth__client_secret" => {
                raw.auth.client_secret_file = None;
                &mut raw.auth.client_secret
            }
            "auth__client_secret_file" => {
                raw.auth.client_secret = None;
                &mut raw.auth.client_secret_file
            }
            "auth__refresh_token" => {
                raw.auth.refresh_token_file = None;
                &mut raw.auth.refresh_token
            }
            "auth__refresh_token_file" => {
                raw.auth.refresh_token = None;
                &mut raw.auth.refresh_token_file
            }
            "customers__source" => &mut raw.customers.source,
            "customers__file" => &mut raw.customers.file,
            "customers__default_mpn_id" => &mut raw.customers.default_mpn_id,
            "customers__page_size" => &mut raw.customers.page_size,
            "partner_center__requests_per_minute" => &mut raw.partner_center.requests_per_minute,
            "partner_center__max_concurrency" => &mut raw.partner_center.max_concurrency,
            "sync__schedule" => &mut raw.sync.schedule,
            "sync__full_schedule" => &mut raw.sync.full_schedule,
            "notify__webhook_url" => {
                raw.notify.webhook_url_file = None;
                &mut raw.notify.webhook_url
            }
            "notify__webhook_url_file" => {
                raw.notify.webhook_url = None;
                &mut raw.notify.webhook_url_file
            }
            _ => {
                return Err(ConfigError::Load(format!(
                    "{var} is not a per-tenant setting; a tenant may set auth.*, customers.*, partner_center.requests_per_minute and max_concurrency, sync.schedule and full_schedule, notify.webhook_url(_file)"
                )));
            }
        };
        *slot = v;
    }
    Ok(raw)
}

fn non_empty(value: Option<String>) -> Option<String> {
    value
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

fn required(key: &'static str, value: Option<String>, form: &str) -> Result<String, ConfigError> {
    non_empty(value).ok_or_else(|| invalid(key, format!("not set; expected {form}")))
}

fn number<T>(
    key: &'static str,
    value: Option<String>,
    min: T,
    max: T,
    default: T,
) -> Result<T, ConfigError>
where
    T: std::str::FromStr + PartialOrd + fmt::Display + Copy,
{
    let Some(text) = non_empty(value) else {
        return Ok(default);
    };
    match text.parse::<T>() {
        Ok(n) if n >= min && n <= max => Ok(n),
        _ => Err(invalid(
            key,
            format!("expected a whole number from {min} to {max}, got {text:?}"),
        )),
    }
}

fn choice<T: Copy>(
    key: &'static str,
    value: Option<String>,
    options: &[(&str, T)],
    default: T,
) -> Result<T, ConfigError> {
    let Some(text) = non_empty(value) else {
        return Ok(default);
    };
    let lowered = text.to_ascii_lowercase();
    options
        .iter()
        .find(|(name, _)| *name == lowered)
        .map(|(_, v)| *v)
        .ok_or_else(|| {
            let names: Vec<String> = options.iter().map(|(n, _)| format!("\"{n}\"")).collect();
            invalid(
                key,
                format!("expected one of {}, got {text:?}", names.join(", ")),
            )
        })
}

/// An `https` URL, or `http` to a loopback host (the simulator, a local proxy): a bearer
/// token or a client secret never travels in clear over a network.
fn http_url(key: &'static str, value: Option<String>) -> Result<Url, ConfigError> {
    let text = required(key, value, "an http(s) URL")?;
    let url = Url::parse(&text).map_err(|e| {
        invalid(
            key,
            format!("expected an http(s) URL such as https://host, got {text:?} ({e})"),
        )
    })?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(invalid(
            key,
            format!("expected an http(s) URL such as https://host, got {text:?}"),
        ));
    }
    if url.scheme() == "http" && !is_loopback(&url) {
        return Err(invalid(
            key,
            format!(
                "expected https: {text:?} would send credentials in clear; plain http is accepted for loopback hosts only (127.0.0.0/8, ::1, localhost)"
            ),
        ));
    }
    Ok(url)
}

fn is_loopback(url: &Url) -> bool {
    let host = url.host_str().unwrap_or_default();
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// A secret given inline or in a file (Docker and Kubernetes secrets), never both.
fn secret(
    key: &'static str,
    file_key: &'static str,
    inline: Option<String>,
    file: Option<String>,
) -> Result<Option<SecretString>, ConfigError> {
    // Not trimmed inline beyond emptiness: a secret is used as given.
    let inline = inline.filter(|v| !v.trim().is_empty());
    match (inline, non_empty(file)) {
        (Some(_), Some(_)) => Err(invalid(
            key,
            format!("both {key} and {file_key} are set; keep one"),
        )),
        (Some(v), None) => Ok(Some(SecretString::from(v))),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(Path::new(&path))
                .map_err(|e| invalid(file_key, format!("cannot read the file {path:?}: {e}")))?;
            // Files written by `echo` or editors end in a newline that is not part of the secret.
            let trimmed = text.trim_end_matches(['\r', '\n']);
            if trimmed.trim().is_empty() {
                return Err(invalid(file_key, format!("the file {path:?} is empty")));
            }
            Ok(Some(SecretString::from(trimmed.to_string())))
        }
        (None, None) => Ok(None),
    }
}

/// True for a tenant name as `pcsync.partner_tenants` accepts it: `^[a-z][a-z0-9_-]{0,62}$`.
pub fn is_tenant_name(text: &str) -> bool {
    let mut bytes = text.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_lowercase())
        && text.len() <= 63
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// True for an MPN id (PartnerID): digits only, as the `?mpn_id=` filter and the schema expect.
pub fn is_mpn_id(text: &str) -> bool {
    !text.is_empty() && text.len() <= 18 && text.bytes().all(|b| b.is_ascii_digit())
}

fn validate(raw: RawSettings, database_url_env: Option<String>) -> Result<Settings, ConfigError> {
    let db_url = database_url_env.or(non_empty(raw.database.url));
    let db_url = required(
        "database.url",
        db_url,
        "a PostgreSQL URL postgres://user[:password]@host[:port]/database",
    )?;
    let parsed = Url::parse(&db_url).ok();
    let is_pg = parsed
        .as_ref()
        .is_some_and(|u| matches!(u.scheme(), "postgres" | "postgresql"));
    if !is_pg || db_url.parse::<sqlx::postgres::PgConnectOptions>().is_err() {
        // The value may hold a password: show only its redacted form.
        return Err(invalid(
            "database.url",
            format!(
                "expected a PostgreSQL URL postgres://user[:password]@host[:port]/database, got {}",
                redact_url(&db_url)
            ),
        ));
    }
    let database = DatabaseSettings {
        url: SecretString::from(db_url),
        max_connections: number(
            "database.max_connections",
            raw.database.max_connections,
            1,
            1000,
            10,
        )?,
        migrate_on_start: choice(
            "database.migrate_on_start",
            raw.database.migrate_on_start,
            &[("true", true), ("false", false)],
            true,
        )?,
    };

    let pc = raw.partner_center;
    let partner_center = PartnerCenterSettings {
        base_url: http_url("partner_center.base_url", pc.base_url)?,
        request_timeout: Duration::from_secs(number(
            "partner_center.request_timeout_secs",
            pc.request_timeout_secs,
            1,
            600,
            60,
        )?),
        max_concurrency: number(
            "partner_center.max_concurrency",
            pc.max_concurrency,
            1,
            256,
            8,
        )?,
        requests_per_minute: number(
            "partner_center.requests_per_minute",
            pc.requests_per_minute,
            1,
            1_000_000,
            500,
        )?,
        max_attempts: number("partner_center.max_attempts", pc.max_attempts, 1, 20, 5)?,
    };

    let a = raw.auth;
    let tenant_name =
        non_empty(a.tenant_name).unwrap_or_else(|| crate::sync::tenant::DEFAULT_TENANT.to_string());
    if !is_tenant_name(&tenant_name) {
        return Err(invalid(
            "auth.tenant_name",
            format!(
                "expected a short name of lower-case letters, digits, '-' and '_', starting with a letter (such as \"emea\" or \"brand-b\"), got {tenant_name:?}"
            ),
        ));
    }
    let tenant_id = non_empty(a.tenant_id);
    if let Some(t) = &tenant_id {
        let ok = t
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-');
        if !ok || t.len() > 255 {
            return Err(invalid(
                "auth.tenant_id",
                format!(
                    "expected a tenant GUID or a domain such as contoso.onmicrosoft.com, got {t:?}"
                ),
            ));
        }
    }
    let client_id = non_empty(a.client_id);
    if let Some(c) = &client_id {
        if uuid::Uuid::try_parse(c).is_err() {
            return Err(invalid(
                "auth.client_id",
                format!("expected the application (client) id, a GUID, got {c:?}"),
            ));
        }
    }
    let auth = AuthSettings {
        tenant_name,
        mode: choice(
            "auth.mode",
            a.mode,
            &[
                ("app_user", AuthMode::AppUser),
                ("app_only", AuthMode::AppOnly),
            ],
            AuthMode::AppUser,
        )?,
        authority: http_url("auth.authority", a.authority)?,
        token_version: choice(
            "auth.token_version",
            a.token_version,
            &[("v1", TokenVersion::V1), ("v2", TokenVersion::V2)],
            TokenVersion::V1,
        )?,
        tenant_id,
        client_id,
        client_secret: secret(
            "auth.client_secret",
            "auth.client_secret_file",
            a.client_secret,
            a.client_secret_file,
        )?,
        refresh_token: secret(
            "auth.refresh_token",
            "auth.refresh_token_file",
            a.refresh_token,
            a.refresh_token_file,
        )?,
    };

    let c = raw.customers;
    let default_mpn_id = non_empty(c.default_mpn_id);
    if let Some(m) = &default_mpn_id {
        if !is_mpn_id(m) {
            return Err(invalid(
                "customers.default_mpn_id",
                format!(
                    "expected a Partner ID (MPN id) of digits only, such as 4847383, got {m:?}"
                ),
            ));
        }
    }
    let customers = CustomerSettings {
        source: choice(
            "customers.source",
            c.source,
            &[("file", CustomerSource::File), ("api", CustomerSource::Api)],
            CustomerSource::File,
        )?,
        file: PathBuf::from(required(
            "customers.file",
            c.file,
            "the path of a CSV file",
        )?),
        default_mpn_id,
        page_size: number("customers.page_size", c.page_size, 1, 500, 500)?,
    };

    let tz_text = non_empty(raw.sync.timezone).unwrap_or_else(|| "UTC".to_string());
    let timezone: chrono_tz::Tz = tz_text.parse().map_err(|_| {
        invalid(
            "sync.timezone",
            format!(
                "expected an IANA time zone name such as \"UTC\", \"Europe/Berlin\" or \"America/New_York\", got {tz_text:?}"
            ),
        )
    })?;
    let schedule_text = required(
        "sync.schedule",
        raw.sync.schedule,
        "a cron expression such as \"0 2 * * *\"",
    )?;
    let schedule = CronSchedule::parse(&schedule_text, timezone).map_err(|e| {
        invalid(
            "sync.schedule",
            format!(
                "expected a cron expression (5 fields: minute hour day-of-month month day-of-week, or 6/7 with seconds first), got {schedule_text:?}: {e}"
            ),
        )
    })?;
    let full_text = required(
        "sync.full_schedule",
        raw.sync.full_schedule,
        "a cron expression such as \"0 2 * * 0\"",
    )?;
    let full_schedule = CronSchedule::parse(&full_text, timezone).map_err(|e| {
        invalid(
            "sync.full_schedule",
            format!("expected a cron expression like sync.schedule's, got {full_text:?}: {e}"),
        )
    })?;
    let shutdown_grace = Duration::from_secs(number(
        "sync.shutdown_grace_secs",
        raw.sync.shutdown_grace_secs,
        1,
        3600,
        8,
    )?);

    let due_recheck = Duration::from_secs(number(
        "sync.due_recheck_secs",
        raw.sync.due_recheck_secs,
        60,
        86_400,
        21_600,
    )?);
    let license_usage = choice(
        "sync.license_usage",
        raw.sync.license_usage.map(|v| v.to_ascii_lowercase()),
        &[
            ("auto", LicenseUsage::Auto),
            ("true", LicenseUsage::On),
            ("false", LicenseUsage::Off),
        ],
        LicenseUsage::Auto,
    )?;
    if license_usage == LicenseUsage::On && auth.mode == AuthMode::AppOnly {
        return Err(invalid(
            "sync.license_usage",
            "true needs App+User credentials (Partner Center answers subscribedskus only to them), but auth.mode is \"app_only\": set sync.license_usage to auto or false, or auth.mode to \"app_user\"",
        ));
    }

    let log = LogSettings {
        format: choice(
            "log.format",
            raw.log.format,
            &[("text", LogFormat::Text), ("json", LogFormat::Json)],
            LogFormat::Text,
        )?,
        progress: match number("log.progress_secs", raw.log.progress_secs, 0, 86_400, 30)? {
            0 => None,
            secs => Some(Duration::from_secs(secs)),
        },
    };

    let status = StatusSettings {
        max_age: match number(
            "status.max_age_secs",
            raw.status.max_age_secs,
            0,
            31_536_000,
            0,
        )? {
            0 => None,
            secs => Some(Duration::from_secs(secs)),
        },
    };

    let n = raw.notify;
    let webhook_url = secret(
        "notify.webhook_url",
        "notify.webhook_url_file",
        n.webhook_url,
        n.webhook_url_file,
    )?;
    if let Some(url) = &webhook_url {
        // Checked like the other URLs, but the value is never shown: its path is the secret.
        let ok = Url::parse(url.expose_secret().trim()).is_ok_and(|u| {
            u.host_str().is_some()
                && (u.scheme() == "https" || (u.scheme() == "http" && is_loopback(&u)))
        });
        if !ok {
            return Err(invalid(
                "notify.webhook_url",
                "expected an https URL (http only for loopback hosts); the value is not shown, it is a secret",
            ));
        }
    }
    let list = |text: Option<String>| -> Vec<String> {
        non_empty(text)
            .map(|t| {
                t.split(',')
                    .map(|x| x.trim().to_ascii_lowercase())
                    .filter(|x| !x.is_empty())
                    .collect()
            })
            .unwrap_or_default()
    };
    let kinds = list(n.kinds);
    const KINDS: [&str; 5] = ["added", "removed", "changed", "untracked", "tracked"];
    if let Some(bad) = kinds.iter().find(|k| !KINDS.contains(&k.as_str())) {
        return Err(invalid(
            "notify.kinds",
            format!(
                "expected a comma-separated list of {}, got {bad:?}",
                KINDS.join(", ")
            ),
        ));
    }
    let notify = NotifySettings {
        webhook_url,
        renewal_days: number("notify.renewal_days", n.renewal_days, 0, 3650, 30)?,
        decision_days: number("notify.decision_days", n.decision_days, 0, 90, 30)?,
        kinds,
        fields: list(n.fields),
    };

    let m = raw.metrics;
    let listen = match non_empty(m.listen) {
        None => None,
        Some(text) => Some(text.trim().parse::<std::net::SocketAddr>().map_err(|_| {
            invalid(
                "metrics.listen",
                format!("expected an address and port such as 0.0.0.0:9464 or 127.0.0.1:9464, got {text:?}"),
            )
        })?),
    };
    let pushgateway_url = secret(
        "metrics.pushgateway_url",
        "metrics.pushgateway_url_file",
        m.pushgateway_url,
        m.pushgateway_url_file,
    )?;
    if let Some(url) = &pushgateway_url {
        let ok = Url::parse(url.expose_secret().trim())
            .is_ok_and(|u| u.host_str().is_some() && matches!(u.scheme(), "http" | "https"));
        if !ok {
            return Err(invalid(
                "metrics.pushgateway_url",
                "expected an http or https URL of a Pushgateway, such as http://pushgateway:9091; the value is not shown, it may hold credentials",
            ));
        }
    }
    let metrics = MetricsSettings {
        listen,
        pushgateway_url,
        textfile: non_empty(m.textfile).map(|t| std::path::PathBuf::from(t.trim())),
    };

    Ok(Settings {
        metrics,
        notify,
        status,
        database,
        partner_center,
        auth,
        customers,
        sync: SyncSettings {
            schedule,
            full_schedule,
            timezone,
            shutdown_grace,
            due_recheck,
            license_usage,
        },
        log,
        tenants: Vec::new(),
        clock: crate::clock::Clock::system(),
    })
}
