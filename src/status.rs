//! `pcsync status`: is the sync healthy, and what needs attention. Read-only queries over the
//! run ledger and the reporting views, rendered as tables for a person or JSON for a script.
//! It follows the monitoring-plugin convention (Nagios, Icinga, Checkmk, Zabbix agents): exit
//! 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN, and a first line `PCSYNC <STATE> - <summary> |
//! <performance data>`.

use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use crate::clock::Clock;
use crate::schedule::CronSchedule;

/// One pass of the run ledger.
#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct RunLine {
    pub tenant: String,
    pub run_id: Uuid,
    pub started_at: DateTime<Utc>,
    pub kind: String,
    pub status: String,
    pub duration_secs: Option<f64>,
    pub customers_succeeded: i32,
    pub customers_failed: i32,
    pub changes_detected: i32,
}

#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct FailingCustomer {
    pub tenant: String,
    pub customer_id: Uuid,
    pub company_name: Option<String>,
    pub failing_since: Option<DateTime<Utc>>,
    pub last_error_code: Option<String>,
    pub access_lost: bool,
    pub last_error: Option<String>,
}

#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct ChangeCount {
    pub entity: String,
    pub kind: String,
    pub field: Option<String>,
    pub changes: i64,
}

#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct Ending {
    pub tenant: String,
    pub company_name: Option<String>,
    pub offer_name: Option<String>,
    pub subscription_id: String,
    pub ends_on: NaiveDate,
    pub days_left: i32,
    pub quantity: Option<i64>,
}

/// A monitoring plugin's state, and its exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum State {
    Ok = 0,
    Warning = 1,
    Critical = 2,
    Unknown = 3,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Ok => "OK",
            State::Warning => "WARNING",
            State::Critical => "CRITICAL",
            State::Unknown => "UNKNOWN",
        }
    }

    /// The exit code a monitoring system reads.
    pub fn code(self) -> u8 {
        self as u8
    }
}

/// The plugin-style first line for a state that could not be read at all (no database, no
/// schema): `PCSYNC UNKNOWN - <why>`.
pub fn unknown_line(why: &str) -> String {
    format!("PCSYNC UNKNOWN - {}", why.replace('|', "/"))
}

/// Everything `pcsync status` shows.
#[derive(Debug, Serialize)]
pub struct Status {
    /// The partner tenants judged (`--tenant`, or every tenant with a pass).
    pub tenants: Vec<String>,
    /// OK, WARNING, CRITICAL or UNKNOWN; the exit code is its number.
    pub state: State,
    pub exit_code: u8,
    /// The plugin-style first line, performance data included.
    pub summary: String,
    /// OK or WARNING: the copy is usable (what a readiness probe asks).
    pub healthy: bool,
    /// Why this state, in a sentence (every reason, worst first).
    pub reason: String,
    /// Listed customers.
    pub customers_listed: i64,
    /// Listed customers whose access was lost within the last 7 days.
    pub access_lost_7d: i64,
    /// Whether the last finished pass could not read the activity log.
    pub activity_log_unread: bool,
    /// Seconds since the last good (succeeded or partial) pass ended.
    pub last_good_age_secs: Option<i64>,
    /// A pass must have succeeded within this long for the sync to be healthy.
    pub max_age_secs: u64,
    pub last_runs: Vec<RunLine>,
    pub failing_customers: Vec<FailingCustomer>,
    pub changes_last_24h: Vec<ChangeCount>,
    pub ending_without_renewal: Vec<Ending>,
    /// The oldest `last_confirmed_at` of a listed customer with access: the whole copy is at
    /// least as fresh as this (null while a listed customer was never confirmed).
    pub oldest_confirmed_at: Option<DateTime<Utc>>,
    /// Listed customers with access that no pass has confirmed yet.
    pub never_confirmed: i64,
    /// Up to when the activity log has been read (the watermark): partner-made changes before
    /// it are in the copy.
    pub activity_read_through: Option<DateTime<Utc>>,
}

/// Twice the time between the schedule's next two firings: how old the last good pass may be.
pub fn default_max_age(schedule: &CronSchedule, now: DateTime<Utc>) -> Duration {
    let interval = schedule
        .next_after(now)
        .and_then(|a| schedule.next_after(a).map(|b| b - a))
        .and_then(|d| d.to_std().ok())
        .unwrap_or(Duration::from_secs(24 * 3600));
    interval * 2
}

/// The newest `limit` passes of the run ledger (of one tenant, or all), newest first.
pub async fn last_runs(
    pool: &PgPool,
    limit: i64,
    tenant: Option<&str>,
) -> Result<Vec<RunLine>, sqlx::Error> {
    sqlx::query_as(
        "SELECT tenant, run_id, started_at, kind, status,
                extract(epoch FROM finished_at - started_at)::float8 AS duration_secs,
                customers_succeeded, customers_failed, changes_detected
         FROM pcsync.sync_runs WHERE $2::text IS NULL OR tenant = $2
         ORDER BY started_at DESC LIMIT $1",
    )
    .bind(limit)
    .bind(tenant)
    .fetch_all(pool)
    .await
}

/// Reads the status of one partner tenant, or of every tenant with a pass (the worst state of
/// theirs, each finding naming its tenant when there are several). `max_age`: see
/// [`Status::max_age_secs`].
pub async fn read(
    pool: &PgPool,
    max_age: Duration,
    clock: &Clock,
    tenant: Option<&str>,
) -> Result<Status, sqlx::Error> {
    if let Some(t) = tenant {
        return read_tenant(pool, max_age, clock, t).await;
    }
    let tenants: Vec<String> =
        sqlx::query_scalar("SELECT DISTINCT tenant FROM pcsync.sync_runs ORDER BY tenant")
            .fetch_all(pool)
            .await?;
    match tenants.as_slice() {
        [] => read_tenant(pool, max_age, clock, crate::sync::tenant::DEFAULT_TENANT).await,
        [one] => read_tenant(pool, max_age, clock, one).await,
        several => {
            let mut each = Vec::with_capacity(several.len());
            for t in several {
                each.push(read_tenant(pool, max_age, clock, t).await?);
            }
            Ok(merge(each, clock.now()))
        }
    }
}

/// Several tenants' statuses as one: the worst state, the findings of every tenant that is
/// not OK (worst first, each naming its tenant), counts added up, ages the oldest.
fn merge(mut each: Vec<Status>, now: DateTime<Utc>) -> Status {
    each.sort_by_key(|s| std::cmp::Reverse(s.state));
    let state = each.first().map_or(State::Unknown, |s| s.state);
    let named = |s: &Status| format!("tenant {}: {}", s.tenants.join(","), s.reason);
    let reason = if state == State::Ok {
        each.iter().map(named).collect::<Vec<_>>().join("; ")
    } else {
        each.iter()
            .filter(|s| s.state != State::Ok)
            .map(named)
            .collect::<Vec<_>>()
            .join("; ")
    };
    let sum = |f: fn(&Status) -> i64| each.iter().map(f).sum::<i64>();
    let failing = each.iter().map(|s| s.failing_customers.len() as i64).sum();
    let listed = sum(|s| s.customers_listed);
    let access_lost_7d = sum(|s| s.access_lost_7d);
    let last_good_age_secs = if each.iter().any(|s| s.last_good_age_secs.is_none()) {
        None
    } else {
        each.iter().filter_map(|s| s.last_good_age_secs).max()
    };
    let oldest_confirmed_at = each.iter().filter_map(|s| s.oldest_confirmed_at).min();
    let max_age_secs = each.iter().map(|s| s.max_age_secs).max().unwrap_or(0);
    let summary = summary_text(
        state,
        &reason,
        Perf {
            failing,
            listed,
            access_lost_7d,
            last_good_age_secs,
            max_age_secs,
            oldest_confirmation_age_secs: oldest_confirmed_at.map(|t| (now - t).num_seconds()),
        },
    );
    let mut last_runs: Vec<RunLine> = Vec::new();
    let mut failing_customers = Vec::new();
    let mut changes: std::collections::BTreeMap<(String, String, Option<String>), i64> =
        std::collections::BTreeMap::new();
    let mut ending_without_renewal = Vec::new();
    let mut tenants = Vec::new();
    let activity_log_unread = each.iter().any(|s| s.activity_log_unread);
    let never_confirmed = sum(|s| s.never_confirmed);
    let activity_read_through = if each.iter().any(|s| s.activity_read_through.is_none()) {
        None
    } else {
        each.iter().filter_map(|s| s.activity_read_through).min()
    };
    for s in each {
        tenants.extend(s.tenants);
        last_runs.extend(s.last_runs);
        failing_customers.extend(s.failing_customers);
        ending_without_renewal.extend(s.ending_without_renewal);
        for c in s.changes_last_24h {
            *changes.entry((c.entity, c.kind, c.field)).or_default() += c.changes;
        }
    }
    tenants.sort();
    last_runs.sort_by_key(|r| std::cmp::Reverse(r.started_at));
    last_runs.truncate(10);
    ending_without_renewal.sort_by_key(|a| a.ends_on);
    Status {
        tenants,
        state,
        exit_code: state.code(),
        summary,
        healthy: state <= State::Warning,
        reason,
        customers_listed: listed,
        access_lost_7d,
        activity_log_unread,
        last_good_age_secs,
        max_age_secs,
        last_runs,
        failing_customers,
        changes_last_24h: changes
            .into_iter()
            .map(|((entity, kind, field), changes)| ChangeCount {
                entity,
                kind,
                field,
                changes,
            })
            .collect(),
        ending_without_renewal,
        oldest_confirmed_at,
        never_confirmed,
        activity_read_through,
    }
}

/// One tenant's status.
async fn read_tenant(
    pool: &PgPool,
    max_age: Duration,
    clock: &Clock,
    tenant: &str,
) -> Result<Status, sqlx::Error> {
    let last_runs = last_runs(pool, 10, Some(tenant)).await?;
    let now = clock.now();
    let mut tx = pool.begin().await?;
    crate::clock::set_for_transaction(&mut tx, clock).await?;
    let failing_customers = sqlx::query_as(
        "SELECT tenant, customer_id, company_name, failing_since, last_error_code, access_lost,
                last_error
         FROM pcsync.customer_health WHERE tenant = $1 AND listed AND status = 'failed'
         ORDER BY failing_since, company_name",
    )
    .bind(tenant)
    .fetch_all(&mut *tx)
    .await?;
    let changes_last_24h = sqlx::query_as(
        "SELECT entity, kind, field, count(*) AS changes FROM pcsync.change_events
         WHERE tenant = $2 AND detected_at > $1 - interval '24 hours' AND detected_at <= $1
         GROUP BY entity, kind, field ORDER BY entity, kind, field",
    )
    .bind(now)
    .bind(tenant)
    .fetch_all(&mut *tx)
    .await?;
    let ending_without_renewal = sqlx::query_as(
        "SELECT tenant, company_name, offer_name, subscription_id, ends_on, days_left, quantity
         FROM pcsync.upcoming_renewals WHERE tenant = $1 AND NOT auto_renews AND days_left <= 30
         ORDER BY ends_on, company_name",
    )
    .bind(tenant)
    .fetch_all(&mut *tx)
    .await?;
    let (oldest_confirmed_at, never_confirmed): (Option<DateTime<Utc>>, i64) = sqlx::query_as(
        "SELECT min(last_confirmed_at), count(*) FILTER (WHERE last_confirmed_at IS NULL)
         FROM pcsync.customer_health WHERE tenant = $1 AND listed AND NOT access_lost",
    )
    .bind(tenant)
    .fetch_one(&mut *tx)
    .await?;
    let activity_read_through: Option<DateTime<Utc>> = sqlx::query_scalar(
        "SELECT max(activity_read_through) FROM pcsync.sync_runs
         WHERE tenant = $1 AND status IN ('succeeded', 'partial')",
    )
    .bind(tenant)
    .fetch_one(&mut *tx)
    .await?;
    let (customers_listed, access_lost_7d): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE access_lost_at > $1 - interval '7 days')
         FROM pcsync.customer_health WHERE tenant = $2 AND listed",
    )
    .bind(now)
    .bind(tenant)
    .fetch_one(&mut *tx)
    .await?;
    let last_finished = last_runs.iter().find(|r| r.status != "running");
    let activity_log_unread: bool = match last_finished {
        Some(r) => {
            sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM pcsync.sync_errors
                            WHERE run_id = $1 AND operation = 'read_activity_log')",
            )
            .bind(r.run_id)
            .fetch_one(&mut *tx)
            .await?
        }
        None => false,
    };
    tx.commit().await?;
    let last_good: Option<DateTime<Utc>> = sqlx::query_scalar(
        "SELECT max(finished_at) FROM pcsync.sync_runs
         WHERE tenant = $1 AND status IN ('succeeded', 'partial')",
    )
    .bind(tenant)
    .fetch_one(pool)
    .await?;
    let facts = Facts {
        runs: &last_runs,
        last_good,
        max_age,
        now,
        failing: failing_customers.len() as i64,
        listed: customers_listed,
        access_lost_7d,
        activity_log_unread,
    };
    let (state, reason) = judge(&facts);
    let summary = summary_line(state, &reason, &facts, oldest_confirmed_at);
    let last_good_age_secs = last_good.map(|t| (now - t).num_seconds());
    Ok(Status {
        tenants: vec![tenant.to_string()],
        state,
        exit_code: state.code(),
        summary,
        healthy: state <= State::Warning,
        reason,
        customers_listed,
        access_lost_7d,
        activity_log_unread,
        last_good_age_secs,
        max_age_secs: max_age.as_secs(),
        last_runs,
        failing_customers,
        changes_last_24h,
        ending_without_renewal,
        oldest_confirmed_at,
        never_confirmed,
        activity_read_through,
    })
}

/// What the state is judged from.
struct Facts<'a> {
    runs: &'a [RunLine],
    last_good: Option<DateTime<Utc>>,
    max_age: Duration,
    now: DateTime<Utc>,
    failing: i64,
    listed: i64,
    access_lost_7d: i64,
    activity_log_unread: bool,
}

/// CRITICAL when the last finished pass failed or was abandoned, no good pass ended within
/// `max_age`, or a pass has run longer than that; WARNING when the last finished pass was
/// partial or interrupted, customers are failing, one lost access within 7 days, or the
/// activity log could not be read; UNKNOWN when no pass was recorded yet; OK otherwise. The
/// reason names every finding, worst first.
fn judge(f: &Facts<'_>) -> (State, String) {
    let hours = |d: chrono::Duration| format!("{:.1} h", d.num_seconds() as f64 / 3600.0);
    if f.runs.is_empty() {
        return (
            State::Unknown,
            "no pass recorded yet: run `pcsync run --once` or start the worker".into(),
        );
    }
    let mut findings: Vec<(State, String)> = Vec::new();
    let max = chrono::Duration::from_std(f.max_age).unwrap_or(chrono::Duration::MAX);
    let finished = f.runs.iter().find(|r| r.status != "running");
    if let Some(r) = finished {
        match r.status.as_str() {
            "failed" | "abandoned" => findings.push((
                State::Critical,
                format!(
                    "the last pass ({}) {} {} ago; see sync_runs.error and sync_errors",
                    r.run_id,
                    r.status,
                    hours(f.now - r.started_at)
                ),
            )),
            "partial" | "interrupted" => findings.push((
                State::Warning,
                format!(
                    "the last pass was {} {} ago",
                    r.status,
                    hours(f.now - r.started_at)
                ),
            )),
            _ => {}
        }
    }
    if let Some(r) = f
        .runs
        .iter()
        .find(|r| r.status == "running" && f.now - r.started_at > max)
    {
        findings.push((
            State::Critical,
            format!(
                "a pass ({}) has been running for {} (more than {})",
                r.run_id,
                hours(f.now - r.started_at),
                hours(max)
            ),
        ));
    }
    match f.last_good {
        None => findings.push((State::Critical, "no pass has succeeded yet".into())),
        Some(t) if f.now - t > max => findings.push((
            State::Critical,
            format!(
                "no pass succeeded for {} (more than {}); is the worker running?",
                hours(f.now - t),
                hours(max)
            ),
        )),
        Some(_) => {}
    }
    if f.failing > 0 {
        findings.push((
            State::Warning,
            format!("{} of {} customers failing", f.failing, f.listed),
        ));
    }
    if f.access_lost_7d > 0 {
        findings.push((
            State::Warning,
            format!(
                "{} customer(s) lost access within the last 7 days (403 20002: the relationship or GDAP roles)",
                f.access_lost_7d
            ),
        ));
    }
    if f.activity_log_unread {
        findings.push((
            State::Warning,
            "the last pass could not read the activity log".into(),
        ));
    }
    findings.sort_by_key(|f| std::cmp::Reverse(f.0));
    match findings.first() {
        None => (
            State::Ok,
            match f.last_good {
                Some(t) => format!(
                    "{} customers synced; the last good pass ended {} ago",
                    f.listed,
                    hours(f.now - t)
                ),
                None => "no pass recorded".into(),
            },
        ),
        Some((worst, _)) => (
            *worst,
            findings
                .iter()
                .map(|(_, r)| r.as_str())
                .collect::<Vec<_>>()
                .join("; "),
        ),
    }
}

/// `PCSYNC <STATE> - <reason> | <performance data>` (Nagios plugin guidelines: 'label'=value,
/// seconds with the unit `s`, warning and critical thresholds where pcsync has them).
fn summary_line(
    state: State,
    reason: &str,
    f: &Facts<'_>,
    oldest_confirmed_at: Option<DateTime<Utc>>,
) -> String {
    summary_text(
        state,
        reason,
        Perf {
            failing: f.failing,
            listed: f.listed,
            access_lost_7d: f.access_lost_7d,
            last_good_age_secs: f.last_good.map(|t| (f.now - t).num_seconds()),
            max_age_secs: f.max_age.as_secs(),
            oldest_confirmation_age_secs: oldest_confirmed_at.map(|t| (f.now - t).num_seconds()),
        },
    )
}

/// The numbers of the performance data.
struct Perf {
    failing: i64,
    listed: i64,
    access_lost_7d: i64,
    last_good_age_secs: Option<i64>,
    max_age_secs: u64,
    oldest_confirmation_age_secs: Option<i64>,
}

fn summary_text(state: State, reason: &str, p: Perf) -> String {
    let mut perf = vec![
        format!("failing={};1;;0;{}", p.failing, p.listed),
        format!("customers={};;;0", p.listed),
        format!("access_lost_7d={};1;;0", p.access_lost_7d),
    ];
    if let Some(age) = p.last_good_age_secs {
        perf.push(format!(
            "last_good_pass_age={}s;;{};0",
            age.max(0),
            p.max_age_secs
        ));
    }
    if let Some(age) = p.oldest_confirmation_age_secs {
        perf.push(format!("oldest_confirmation_age={}s;;;0", age.max(0)));
    }
    format!(
        "PCSYNC {} - {} | {}",
        state.as_str(),
        reason.replace('|', "/"),
        perf.join(" ")
    )
}

/// The status as tables for a terminal.
pub fn render(s: &Status) -> String {
    let mut out = String::new();
    let mut line = |text: String| {
        out.push_str(&text);
        out.push('\n');
    };
    line(s.summary.clone());
    // With several tenants each row says whose it is.
    let several = s.tenants.len() > 1;
    let who = |t: &str| {
        if several {
            format!("[{t}] ")
        } else {
            String::new()
        }
    };
    if several {
        line(format!("Partner tenants: {}", s.tenants.join(", ")));
    }
    line(format!(
        "A pass must succeed at least every {:.1} h (status.max_age_secs).",
        s.max_age_secs as f64 / 3600.0
    ));
    let at = |t: Option<DateTime<Utc>>| {
        t.map_or("never".to_string(), |t| {
            t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
        })
    };
    line(format!(
        "Freshness: every listed customer confirmed since {}{}; activity log read through {}",
        at(s.oldest_confirmed_at),
        if s.never_confirmed > 0 {
            format!(" ({} never confirmed yet)", s.never_confirmed)
        } else {
            String::new()
        },
        at(s.activity_read_through)
    ));
    line(String::new());
    line("Last passes".into());
    line(format!(
        "  {:<20} {:<12} {:<12} {:>9} {:>7} {:>7} {:>8}",
        "started (UTC)", "kind", "status", "duration", "ok", "failed", "changes"
    ));
    for r in &s.last_runs {
        line(format!(
            "  {}{:<20} {:<12} {:<12} {:>9} {:>7} {:>7} {:>8}",
            who(&r.tenant),
            r.started_at.format("%Y-%m-%d %H:%M:%S"),
            r.kind,
            r.status,
            r.duration_secs
                .map_or("-".to_string(), |d| format!("{d:.1} s")),
            r.customers_succeeded,
            r.customers_failed,
            r.changes_detected
        ));
    }
    line(String::new());
    line(format!(
        "Customers failing now ({})",
        s.failing_customers.len()
    ));
    for c in &s.failing_customers {
        line(format!(
            "  {}{:<36} since {:<20} {}{}",
            who(&c.tenant),
            c.company_name
                .clone()
                .unwrap_or_else(|| c.customer_id.to_string()),
            c.failing_since
                .map_or("-".to_string(), |t| t.format("%Y-%m-%d %H:%M").to_string()),
            if c.access_lost {
                "ACCESS LOST (20002): "
            } else {
                ""
            },
            c.last_error
                .as_deref()
                .unwrap_or("")
                .chars()
                .take(120)
                .collect::<String>()
        ));
    }
    line(String::new());
    line("Changes in the last 24 h".into());
    for c in &s.changes_last_24h {
        line(format!(
            "  {:<16} {:<10} {:<28} {:>7}",
            c.entity,
            c.kind,
            c.field.as_deref().unwrap_or(""),
            c.changes
        ));
    }
    line(String::new());
    line(format!(
        "Ending within 30 days without auto-renew ({})",
        s.ending_without_renewal.len()
    ));
    for e in &s.ending_without_renewal {
        line(format!(
            "  {}{:<10} {:>3} days  {:<30} {:<36} {:>6} licenses",
            who(&e.tenant),
            e.ends_on,
            e.days_left,
            e.company_name.as_deref().unwrap_or(""),
            e.offer_name.as_deref().unwrap_or(&e.subscription_id),
            e.quantity.unwrap_or(0)
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(status: &str, hours_ago: i64, now: DateTime<Utc>) -> RunLine {
        RunLine {
            tenant: "default".into(),
            run_id: Uuid::nil(),
            started_at: now - chrono::Duration::hours(hours_ago),
            kind: "full".into(),
            status: status.into(),
            duration_secs: Some(1.0),
            customers_succeeded: 1,
            customers_failed: 0,
            changes_detected: 0,
        }
    }

    fn facts<'a>(runs: &'a [RunLine], last_good_h: Option<i64>, now: DateTime<Utc>) -> Facts<'a> {
        Facts {
            runs,
            last_good: last_good_h.map(|h| now - chrono::Duration::hours(h)),
            max_age: Duration::from_secs(48 * 3600),
            now,
            failing: 0,
            listed: 30,
            access_lost_7d: 0,
            activity_log_unread: false,
        }
    }

    #[test]
    fn states_follow_the_monitoring_plugin_convention() {
        let now = Utc::now();
        let state = |f: &Facts<'_>| judge(f).0;
        let ok = [run("succeeded", 1, now)];
        assert_eq!(state(&facts(&ok, Some(1), now)), State::Ok);
        let partial = [run("partial", 1, now)];
        assert_eq!(state(&facts(&partial, Some(1), now)), State::Warning);
        let interrupted = [run("interrupted", 1, now), run("succeeded", 3, now)];
        assert_eq!(state(&facts(&interrupted, Some(3), now)), State::Warning);
        let failing = Facts {
            failing: 1,
            ..facts(&ok, Some(1), now)
        };
        let (s, why) = judge(&failing);
        assert_eq!(
            (s, why.as_str()),
            (State::Warning, "1 of 30 customers failing")
        );
        let lost = Facts {
            access_lost_7d: 1,
            ..facts(&ok, Some(1), now)
        };
        assert_eq!(state(&lost), State::Warning);
        let unread = Facts {
            activity_log_unread: true,
            ..facts(&ok, Some(1), now)
        };
        assert_eq!(state(&unread), State::Warning);
        let failed = [run("failed", 1, now), run("succeeded", 25, now)];
        assert_eq!(state(&facts(&failed, Some(25), now)), State::Critical);
        let abandoned = [run("abandoned", 1, now)];
        assert_eq!(state(&facts(&abandoned, Some(30), now)), State::Critical);
        let stale = [run("succeeded", 60, now)];
        assert_eq!(state(&facts(&stale, Some(60), now)), State::Critical);
        let stuck = [run("running", 50, now), run("succeeded", 51, now)];
        assert_eq!(state(&facts(&stuck, Some(47), now)), State::Critical);
        let under_way = [run("running", 0, now), run("succeeded", 5, now)];
        assert_eq!(state(&facts(&under_way, Some(5), now)), State::Ok);
        assert_eq!(state(&facts(&[], None, now)), State::Unknown);
        let never_good = [run("failed", 1, now)];
        assert_eq!(state(&facts(&never_good, None, now)), State::Critical);
        // The worst state wins and every finding is named.
        let both = Facts {
            failing: 2,
            ..facts(&failed, Some(25), now)
        };
        let (s, why) = judge(&both);
        assert_eq!(s, State::Critical);
        assert!(
            why.contains("failed") && why.contains("2 of 30 customers failing"),
            "{why}"
        );
        let line = summary_line(State::Warning, "1 of 30 customers failing", &failing, None);
        assert!(
            line.starts_with("PCSYNC WARNING - 1 of 30 customers failing | failing=1;1;;0;30 "),
            "{line}"
        );
        assert!(
            line.contains("last_good_pass_age=3600s;;172800;0"),
            "{line}"
        );
    }

    #[test]
    fn the_default_age_is_twice_the_schedules_interval() {
        let daily = CronSchedule::parse("0 2 * * *", chrono_tz::Tz::UTC).expect("daily");
        assert_eq!(
            default_max_age(&daily, Utc::now()),
            Duration::from_secs(48 * 3600)
        );
        let hourly = CronSchedule::parse("15 * * * *", chrono_tz::Tz::UTC).expect("hourly");
        assert_eq!(
            default_max_age(&hourly, Utc::now()),
            Duration::from_secs(2 * 3600)
        );
    }
}
