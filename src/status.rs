//! `pcsync status`: is the sync healthy, and what needs attention. Read-only queries over the
//! run ledger and the reporting views, rendered as tables for a person or JSON for a script;
//! the exit code fits a Kubernetes probe or a Nagios check.

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
    pub company_name: Option<String>,
    pub offer_name: Option<String>,
    pub subscription_id: String,
    pub ends_on: NaiveDate,
    pub days_left: i32,
    pub quantity: Option<i64>,
}

/// Everything `pcsync status` shows.
#[derive(Debug, Serialize)]
pub struct Status {
    pub healthy: bool,
    /// Why healthy or not, in a sentence.
    pub reason: String,
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

/// The newest `limit` passes of the run ledger, newest first.
pub async fn last_runs(pool: &PgPool, limit: i64) -> Result<Vec<RunLine>, sqlx::Error> {
    sqlx::query_as(
        "SELECT run_id, started_at, kind, status,
                extract(epoch FROM finished_at - started_at)::float8 AS duration_secs,
                customers_succeeded, customers_failed, changes_detected
         FROM pcsync.sync_runs ORDER BY started_at DESC LIMIT $1",
    )
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// Reads the status. `max_age`: see [`Status::max_age_secs`].
pub async fn read(pool: &PgPool, max_age: Duration, clock: &Clock) -> Result<Status, sqlx::Error> {
    let last_runs = last_runs(pool, 10).await?;
    let now = clock.now();
    let mut tx = pool.begin().await?;
    crate::clock::set_for_transaction(&mut tx, clock).await?;
    let failing_customers = sqlx::query_as(
        "SELECT customer_id, company_name, failing_since, last_error_code, access_lost, last_error
         FROM pcsync.customer_health WHERE listed AND status = 'failed'
         ORDER BY failing_since, company_name",
    )
    .fetch_all(&mut *tx)
    .await?;
    let changes_last_24h = sqlx::query_as(
        "SELECT entity, kind, field, count(*) AS changes FROM pcsync.change_events
         WHERE detected_at > $1 - interval '24 hours' AND detected_at <= $1
         GROUP BY entity, kind, field ORDER BY entity, kind, field",
    )
    .bind(now)
    .fetch_all(&mut *tx)
    .await?;
    let ending_without_renewal = sqlx::query_as(
        "SELECT company_name, offer_name, subscription_id, ends_on, days_left, quantity
         FROM pcsync.upcoming_renewals WHERE NOT auto_renews AND days_left <= 30
         ORDER BY ends_on, company_name",
    )
    .fetch_all(&mut *tx)
    .await?;
    let (oldest_confirmed_at, never_confirmed): (Option<DateTime<Utc>>, i64) = sqlx::query_as(
        "SELECT min(last_confirmed_at), count(*) FILTER (WHERE last_confirmed_at IS NULL)
         FROM pcsync.customer_health WHERE listed AND NOT access_lost",
    )
    .fetch_one(&mut *tx)
    .await?;
    let activity_read_through: Option<DateTime<Utc>> = sqlx::query_scalar(
        "SELECT max(activity_read_through) FROM pcsync.sync_runs
         WHERE status IN ('succeeded', 'partial')",
    )
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    let last_good: Option<DateTime<Utc>> = sqlx::query_scalar(
        "SELECT max(finished_at) FROM pcsync.sync_runs WHERE status IN ('succeeded', 'partial')",
    )
    .fetch_one(pool)
    .await?;
    let (healthy, reason) = judge(&last_runs, last_good, max_age, now);
    Ok(Status {
        healthy,
        reason,
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

/// Healthy when the last finished pass did not fail and a pass succeeded (or was partial)
/// within `max_age`.
fn judge(
    runs: &[RunLine],
    last_good: Option<DateTime<Utc>>,
    max_age: Duration,
    now: DateTime<Utc>,
) -> (bool, String) {
    let hours = |d: chrono::Duration| format!("{:.1} h", d.num_seconds() as f64 / 3600.0);
    let finished = runs.iter().find(|r| r.status != "running");
    if let Some(r) = finished.filter(|r| matches!(r.status.as_str(), "failed" | "abandoned")) {
        return (
            false,
            format!(
                "the last pass ({}) {} {} ago; see sync_runs.error and sync_errors",
                r.run_id,
                r.status,
                hours(now - r.started_at)
            ),
        );
    }
    let max = chrono::Duration::from_std(max_age).unwrap_or(chrono::Duration::MAX);
    match last_good {
        None => (false, "no pass has succeeded yet".to_string()),
        Some(t) if now - t > max => (
            false,
            format!(
                "no pass succeeded for {} (more than {}); is the worker running?",
                hours(now - t),
                hours(max)
            ),
        ),
        Some(t) => (
            true,
            format!("the last good pass ended {} ago", hours(now - t)),
        ),
    }
}

/// The status as tables for a terminal.
pub fn render(s: &Status) -> String {
    let mut out = String::new();
    let mut line = |text: String| {
        out.push_str(&text);
        out.push('\n');
    };
    line(format!(
        "pcsync status: {} ({}; a pass must succeed at least every {:.1} h)",
        if s.healthy { "healthy" } else { "UNHEALTHY" },
        s.reason,
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
            "  {:<20} {:<12} {:<12} {:>9} {:>7} {:>7} {:>8}",
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
            "  {:<36} since {:<20} {}{}",
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
            "  {:<10} {:>3} days  {:<30} {:<36} {:>6} licenses",
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

    #[test]
    fn healthy_means_the_last_pass_did_not_fail_and_a_good_one_is_recent() {
        let now = Utc::now();
        let day = Duration::from_secs(24 * 3600);
        let ago = |h: i64| Some(now - chrono::Duration::hours(h));
        assert!(judge(&[run("succeeded", 1, now)], ago(1), day * 2, now).0);
        assert!(judge(&[run("partial", 1, now)], ago(1), day * 2, now).0);
        assert!(
            !judge(
                &[run("failed", 1, now), run("succeeded", 25, now)],
                ago(25),
                day * 2,
                now
            )
            .0
        );
        assert!(!judge(&[run("abandoned", 1, now)], ago(30), day * 2, now).0);
        assert!(
            !judge(&[run("succeeded", 60, now)], ago(60), day * 2, now).0,
            "stale"
        );
        assert!(!judge(&[], None, day * 2, now).0);
        // A pass under way does not count as the last one.
        assert!(
            judge(
                &[run("running", 0, now), run("succeeded", 5, now)],
                ago(5),
                day * 2,
                now
            )
            .0
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
