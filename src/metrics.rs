//! Prometheus metrics: what a pass did and how fresh the copy is, named as the Prometheus
//! naming guidelines say (every name `pcsync_`, base units, `_total` counters, `_seconds`),
//! every series labelled `tenant`. Written in the text format 0.0.4 by the `prometheus` crate
//! (tikv's, the one that writes that format: the Pushgateway and node_exporter's textfile
//! collector read it), which the worker serves on `/metrics`, and which `run --once` pushes to a
//! Pushgateway or writes to a textfile.
//!
//! The sync knows nothing of this module: the command that runs a pass records its
//! [`PassReport`] here afterwards ([`Metrics::observe`]), with a few numbers read from the
//! database.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry,
    TextEncoder,
};
use secrecy::{ExposeSecret, SecretString};
use sqlx::PgPool;

use crate::sync::PassReport;

/// Every metric of the process's partner tenants, in one registry (`tenant` tells them apart).
pub struct Metrics {
    registry: Registry,
    passes: IntCounterVec,
    pass_duration: HistogramVec,
    customers_synced: IntCounterVec,
    customers_failed: IntCounterVec,
    customers_access_lost: IntGaugeVec,
    customers_listed: IntGaugeVec,
    requests: IntCounterVec,
    throttled: IntCounterVec,
    retries: IntCounterVec,
    budget: GaugeVec,
    changes: IntCounterVec,
    rows_written: IntCounterVec,
    last_success: GaugeVec,
    last_pass_end: GaugeVec,
    oldest_confirmation_age: GaugeVec,
    activity_read_through: GaugeVec,
    /// The oldest confirmation per tenant, to give its age at each scrape.
    oldest_confirmed_at: std::sync::Mutex<std::collections::HashMap<String, DateTime<Utc>>>,
    tenants: Vec<String>,
}

/// Why metrics could not be delivered (never fails a pass).
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("cannot write the metrics: {0}")]
    Encode(String),
    #[error("cannot write the textfile {path}: {error}")]
    Textfile { path: String, error: std::io::Error },
    #[error("the Pushgateway at {url} refused the push: {detail}")]
    Push { url: String, detail: String },
}

/// Registers `metric` (built from constant names and labels, so it cannot fail).
fn registered<M: prometheus::core::Collector + Clone + 'static>(
    registry: &Registry,
    metric: Result<M, prometheus::Error>,
) -> M {
    let m = metric.unwrap_or_else(|e| unreachable!("a metric of constant names: {e}"));
    registry
        .register(Box::new(m.clone()))
        .unwrap_or_else(|e| unreachable!("a metric registered twice: {e}"));
    m
}

fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    registered(registry, IntCounterVec::new(Opts::new(name, help), labels))
}

fn gauge(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> GaugeVec {
    registered(registry, GaugeVec::new(Opts::new(name, help), labels))
}

fn int_gauge(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    registered(registry, IntGaugeVec::new(Opts::new(name, help), labels))
}

fn seconds(t: DateTime<Utc>) -> f64 {
    t.timestamp_micros() as f64 / 1e6
}

impl Metrics {
    /// The metrics of `tenants` (the `tenant` label), all at zero.
    pub fn new(tenants: &[String]) -> Arc<Metrics> {
        let r = Registry::new();
        let t = &["tenant"][..];
        let pass_duration = registered(
            &r,
            HistogramVec::new(
                HistogramOpts::new(
                    "pcsync_pass_duration_seconds",
                    "How long sync passes took, by kind (full, incremental).",
                )
                .buckets(vec![
                    1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0,
                ]),
                &["tenant", "kind"],
            ),
        );
        Arc::new(Metrics {
            passes: counter(
                &r,
                "pcsync_passes_total",
                "Sync passes, by kind (full, incremental) and how they ended (succeeded, partial, failed, interrupted).",
                &["tenant", "kind", "status"],
            ),
            pass_duration,
            customers_synced: counter(
                &r,
                "pcsync_customers_synced_total",
                "Customers fetched whole and stored by a pass.",
                t,
            ),
            customers_failed: counter(
                &r,
                "pcsync_customers_failed_total",
                "Customers a pass could not fetch or store (their data is kept as it was).",
                t,
            ),
            customers_access_lost: int_gauge(
                &r,
                "pcsync_customers_access_lost",
                "Listed customers whose access is lost now (403 20002: relationship or GDAP roles).",
                t,
            ),
            customers_listed: int_gauge(
                &r,
                "pcsync_customers_listed",
                "Customers on the customer list now.",
                t,
            ),
            requests: counter(
                &r,
                "pcsync_requests_total",
                "Partner Center answers, by endpoint kind and status class (2xx, 4xx, 5xx; error: no answer).",
                &["tenant", "endpoint", "status_class"],
            ),
            throttled: counter(
                &r,
                "pcsync_throttled_responses_total",
                "Partner Center answers 429 Too Many Requests.",
                t,
            ),
            retries: counter(
                &r,
                "pcsync_retries_total",
                "Requests sent again after a 429, a 5xx or no answer.",
                t,
            ),
            budget: gauge(
                &r,
                "pcsync_request_budget_requests_per_second",
                "The request budget's rate when the last pass ended (it slows after 429s).",
                t,
            ),
            changes: counter(
                &r,
                "pcsync_change_events_total",
                "Change events recorded, by entity (subscription, managed_service, subscribed_sku) and kind (added, removed, changed, untracked, tracked).",
                &["tenant", "entity", "kind"],
            ),
            rows_written: counter(
                &r,
                "pcsync_rows_written_total",
                "Rows of subscriptions, managed services and subscribed SKUs inserted or updated.",
                t,
            ),
            last_success: gauge(
                &r,
                "pcsync_last_success_timestamp_seconds",
                "When the last good pass (succeeded or partial) ended, in Unix seconds.",
                t,
            ),
            last_pass_end: gauge(
                &r,
                "pcsync_last_pass_timestamp_seconds",
                "When the last pass ended, however it ended, in Unix seconds.",
                t,
            ),
            oldest_confirmation_age: gauge(
                &r,
                "pcsync_oldest_confirmation_age_seconds",
                "Age of the oldest confirmation of a listed customer with access: every customer's data is at least this fresh.",
                t,
            ),
            activity_read_through: gauge(
                &r,
                "pcsync_activity_read_through_timestamp_seconds",
                "Up to when the activity log has been read, in Unix seconds.",
                t,
            ),
            registry: r,
            oldest_confirmed_at: std::sync::Mutex::new(std::collections::HashMap::new()),
            tenants: tenants.to_vec(),
        })
    }

    /// The tenants these metrics are of.
    pub fn tenants(&self) -> &[String] {
        &self.tenants
    }

    /// Records a pass, and reads from the database what the metrics say of the copy as a
    /// whole (the pass's change events by kind, the freshness); a database error leaves those
    /// as they were.
    pub async fn observe(&self, pool: &PgPool, report: &PassReport, now: DateTime<Utc>) {
        let t = report.tenant.as_str();
        let kind = report.kind.as_str();
        self.passes
            .with_label_values(&[t, kind, report.status.as_str()])
            .inc();
        self.pass_duration
            .with_label_values(&[t, kind])
            .observe(report.elapsed.as_secs_f64());
        self.customers_synced
            .with_label_values(&[t])
            .inc_by(report.customers_succeeded);
        self.customers_failed
            .with_label_values(&[t])
            .inc_by(report.customers_failed);
        for (endpoint, class, n) in &report.responses {
            self.requests
                .with_label_values(&[t, endpoint, class])
                .inc_by(*n);
        }
        self.throttled
            .with_label_values(&[t])
            .inc_by(report.throttled);
        self.retries.with_label_values(&[t]).inc_by(report.retries);
        if let Some(rate) = report.budget_per_minute {
            self.budget.with_label_values(&[t]).set(rate / 60.0);
        }
        self.rows_written
            .with_label_values(&[t])
            .inc_by(report.rows_written);
        self.last_pass_end.with_label_values(&[t]).set(seconds(now));
        if let Err(e) = self.read_copy(pool, report).await {
            tracing::warn!(error = %e, "the metrics could not read the database; the freshness metrics keep their last values");
        }
    }

    async fn read_copy(&self, pool: &PgPool, report: &PassReport) -> Result<(), sqlx::Error> {
        let t = report.tenant.as_str();
        let events: Vec<(String, String, i64)> = sqlx::query_as(
            "SELECT entity, kind, count(*) FROM pcsync.change_events WHERE run_id = $1
             GROUP BY entity, kind",
        )
        .bind(report.run_id)
        .fetch_all(pool)
        .await?;
        for (entity, kind, n) in events {
            self.changes
                .with_label_values(&[t, &entity, &kind])
                .inc_by(u64::try_from(n).unwrap_or(0));
        }
        self.refresh_tenant(pool, t).await
    }

    /// Reads the freshness of every tenant's copy.
    pub async fn refresh(&self, pool: &PgPool) -> Result<(), sqlx::Error> {
        for t in &self.tenants {
            self.refresh_tenant(pool, t).await?;
        }
        Ok(())
    }

    /// Reads the freshness of the tenant's copy (last good pass, oldest confirmation, activity
    /// log, customers listed and without access).
    async fn refresh_tenant(&self, pool: &PgPool, t: &str) -> Result<(), sqlx::Error> {
        let (last_good, read_through): (Option<DateTime<Utc>>, Option<DateTime<Utc>>) =
            sqlx::query_as(
                "SELECT max(finished_at), max(activity_read_through) FROM pcsync.sync_runs
                 WHERE tenant = $1 AND status IN ('succeeded', 'partial')",
            )
            .bind(t)
            .fetch_one(pool)
            .await?;
        let (oldest, listed, lost): (Option<DateTime<Utc>>, i64, i64) = sqlx::query_as(
            "SELECT min(last_confirmed_at) FILTER (WHERE NOT access_lost),
                    count(*), count(*) FILTER (WHERE access_lost)
             FROM pcsync.customer_health WHERE tenant = $1 AND listed",
        )
        .bind(t)
        .fetch_one(pool)
        .await?;
        if let Some(at) = last_good {
            self.last_success.with_label_values(&[t]).set(seconds(at));
        }
        if let Some(at) = read_through {
            self.activity_read_through
                .with_label_values(&[t])
                .set(seconds(at));
        }
        self.customers_listed.with_label_values(&[t]).set(listed);
        self.customers_access_lost.with_label_values(&[t]).set(lost);
        if let Ok(mut o) = self.oldest_confirmed_at.lock() {
            match oldest {
                Some(at) => o.insert(t.to_string(), at),
                None => o.remove(t),
            };
        }
        Ok(())
    }

    /// The metrics of every tenant in the text format 0.0.4, ages as of `now`.
    pub fn render(&self, now: DateTime<Utc>) -> Result<String, MetricsError> {
        self.render_of(now, None)
    }

    /// The metrics in the text format 0.0.4, of one tenant or all, ages as of `now`.
    fn render_of(&self, now: DateTime<Utc>, tenant: Option<&str>) -> Result<String, MetricsError> {
        let oldest = self
            .oldest_confirmed_at
            .lock()
            .map(|o| o.clone())
            .unwrap_or_default();
        for (t, at) in oldest {
            self.oldest_confirmation_age
                .with_label_values(&[t.as_str()])
                .set(((now - at).num_microseconds().unwrap_or(0) as f64 / 1e6).max(0.0));
        }
        let mut families = self.registry.gather();
        if let Some(tenant) = tenant {
            for f in &mut families {
                f.mut_metric().retain(|m| {
                    m.get_label()
                        .iter()
                        .any(|l| l.name() == "tenant" && l.value() == tenant)
                });
            }
            families.retain(|f| !f.get_metric().is_empty());
        }
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&families, &mut out)
            .map_err(|e| MetricsError::Encode(e.to_string()))?;
        String::from_utf8(out).map_err(|e| MetricsError::Encode(e.to_string()))
    }

    /// Writes the metrics to `path` atomically: a temporary file beside it, renamed over it,
    /// so node_exporter never reads half a file.
    pub fn write_textfile(&self, path: &Path, now: DateTime<Utc>) -> Result<(), MetricsError> {
        let text = self.render(now)?;
        let err = |error| MetricsError::Textfile {
            path: path.display().to_string(),
            error,
        };
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_else(|| "pcsync.prom".into());
        let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
        std::fs::write(&tmp, text).map_err(err)?;
        std::fs::rename(&tmp, path).map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            err(e)
        })
    }

    /// Pushes each tenant's metrics to the Pushgateway at `url` under the grouping key
    /// job="pcsync", tenant (PUT: the group holds that tenant's metrics only, so processes of
    /// other tenants keep theirs). Credentials in the URL are sent as basic authentication and
    /// never shown.
    pub async fn push(
        &self,
        url: &SecretString,
        timeout: Duration,
        now: DateTime<Utc>,
    ) -> Result<(), MetricsError> {
        for t in &self.tenants {
            self.push_tenant(url, t, timeout, now).await?;
        }
        Ok(())
    }

    async fn push_tenant(
        &self,
        url: &SecretString,
        tenant: &str,
        timeout: Duration,
        now: DateTime<Utc>,
    ) -> Result<(), MetricsError> {
        let shown = redacted(url.expose_secret());
        let fail = |detail: String| MetricsError::Push {
            url: shown.clone(),
            detail,
        };
        let mut base = reqwest::Url::parse(url.expose_secret().trim())
            .map_err(|_| fail("not a URL".into()))?;
        let user = base.username().to_string();
        let password = base.password().map(str::to_string);
        let _ = base.set_username("");
        let _ = base.set_password(None);
        let target = format!(
            "{}/metrics/job/pcsync/tenant/{}",
            base.as_str().trim_end_matches('/'),
            percent(tenant)
        );
        let body = self.render_of(now, Some(tenant))?;
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| fail(e.without_url().to_string()))?;
        let mut request = http
            .put(&target)
            .header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
            .body(body);
        if !user.is_empty() || password.is_some() {
            request = request.basic_auth(
                percent_decoded(&user),
                password.map(|p| percent_decoded(&p)),
            );
        }
        let response = request
            .send()
            .await
            .map_err(|e| fail(e.without_url().to_string()))?;
        if response.status().is_success() {
            Ok(())
        } else {
            let status = response.status();
            let text = response.text().await.unwrap_or_default();
            Err(fail(format!(
                "HTTP {}: {}",
                status.as_u16(),
                text.chars().take(200).collect::<String>()
            )))
        }
    }
}

/// A URL with its credentials and path taken out: what may be shown of a Pushgateway URL.
pub fn redacted(url: &str) -> String {
    match reqwest::Url::parse(url.trim()) {
        Ok(u) => format!(
            "{}://{}{}",
            u.scheme(),
            u.host_str().unwrap_or("?"),
            u.port().map(|p| format!(":{p}")).unwrap_or_default()
        ),
        Err(_) => "(not a URL)".into(),
    }
}

fn percent(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn percent_decoded(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 3 <= bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            if let Some(b) = hex {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_guidelines_and_the_url_never_shows_its_credentials() {
        let m = Metrics::new(&["default".to_string()]);
        let text = m.render(Utc::now()).expect("renders");
        for line in text.lines().filter(|l| l.starts_with("# TYPE ")) {
            let mut parts = line.split_whitespace().skip(2);
            let (name, kind) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            assert!(name.starts_with("pcsync_"), "{line}");
            if kind == "counter" {
                assert!(name.ends_with("_total"), "{line}");
            }
        }
        assert_eq!(
            redacted("https://user:s3cret@push.example.com:9091/some/path"),
            "https://push.example.com:9091"
        );
        assert_eq!(percent_decoded("p%40ss"), "p@ss");
        assert_eq!(percent("a b/c"), "a%20b%2Fc");
    }
}
