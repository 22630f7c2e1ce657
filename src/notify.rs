//! Alerts after a pass: one POST to `notify.webhook_url` with the pass's change events grouped
//! by customer and the subscriptions ending soon without auto-renew, plus a plain-text `text`
//! that Slack and Teams incoming webhooks display. Nothing is sent when there is nothing to
//! say. Retried with backoff; a notification that still fails is logged and recorded in
//! `sync_errors`, and never fails the pass.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use secrecy::ExposeSecret;
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use crate::clock::Clock;
use crate::config::NotifySettings;
use crate::partner_center::retry::{Backoff, random_unit};
use crate::sync::PassReport;

/// Attempts per notification.
const ATTEMPTS: u32 = 4;

#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct EventLine {
    #[serde(skip)]
    pub customer_id: Uuid,
    #[serde(skip)]
    pub company_name: Option<String>,
    pub entity: String,
    pub entity_id: String,
    pub object_name: Option<String>,
    pub kind: String,
    pub field: Option<String>,
    pub old_value: Option<String>,
    pub new_value: Option<String>,
    pub changed_by: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct CustomerChanges {
    pub customer_id: Uuid,
    pub company_name: Option<String>,
    pub events: Vec<EventLine>,
}

#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct Ending {
    pub customer_id: Uuid,
    pub company_name: Option<String>,
    pub subscription_id: String,
    pub offer_name: Option<String>,
    pub ends_on: NaiveDate,
    pub days_left: i32,
    pub quantity: Option<i64>,
    /// The threshold this announcement is for: `notify.renewal_days`, or 7 days left. Each
    /// ending is announced once per threshold.
    pub threshold_days: i32,
}

/// A renewal decision entering `notify.decision_days` (see `renewal_decisions`).
#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct DecisionLine {
    pub customer_id: Uuid,
    pub company_name: Option<String>,
    pub subscription_id: String,
    pub offer_name: Option<String>,
    pub term_duration: Option<String>,
    pub ends_on: NaiveDate,
    pub days_left: i32,
    /// `renews`, `renews with changes` or `ends`.
    pub decision: String,
    pub licenses: Option<i64>,
    pub licenses_next_term: Option<i64>,
    /// The matched SKU's unassigned seats now (the seats to cut before the term renews).
    pub unassigned_seats: Option<i64>,
    #[serde(skip)]
    pub threshold_days: i32,
}

/// A refund window closing within 24 hours (see `cancellation_windows`).
#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct WindowLine {
    pub customer_id: Uuid,
    pub company_name: Option<String>,
    pub subscription_id: String,
    pub offer_name: Option<String>,
    pub refundable_quantity: Option<i64>,
    pub allowed_until: DateTime<Utc>,
    pub hours_left: f64,
}

/// How soon a closing refund window is announced.
const WINDOW_HOURS: f64 = 24.0;

/// What is POSTed (documented in the README).
#[derive(Debug, Serialize)]
pub struct Notification {
    /// A plain-text summary, shown by Slack and Teams incoming webhooks.
    pub text: String,
    /// The partner tenant whose pass this is (`auth.tenant_name`); the text names it too unless
    /// it is `default`.
    pub tenant: String,
    pub run_id: Uuid,
    pub pass_kind: &'static str,
    pub status: &'static str,
    pub finished_at: DateTime<Utc>,
    pub changes: Vec<CustomerChanges>,
    pub ending_without_renewal: Vec<Ending>,
    /// Terms longer than a month entering `notify.decision_days`, each once.
    pub renewal_decisions: Vec<DecisionLine>,
    /// Refund windows closing within 24 hours, each once.
    pub cancellation_windows: Vec<WindowLine>,
}

/// The notification of a pass, or `None` when there is nothing to say.
pub async fn build(
    pool: &PgPool,
    settings: &NotifySettings,
    clock: &Clock,
    report: &PassReport,
) -> Result<Option<Notification>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    crate::clock::set_for_transaction(&mut tx, clock).await?;
    let events: Vec<EventLine> = sqlx::query_as(
        "SELECT customer_id, company_name, entity, entity_id, object_name, kind, field,
                old_value, new_value, changed_by
         FROM pcsync.recent_changes
         WHERE run_id = $1
           AND (cardinality($2::text[]) = 0 OR kind = ANY ($2))
           AND (kind <> 'changed' OR cardinality($3::text[]) = 0 OR field = ANY ($3))
         ORDER BY company_name, customer_id, event_id",
    )
    .bind(report.run_id)
    .bind(&settings.kinds)
    .bind(&settings.fields)
    .fetch_all(&mut *tx)
    .await?;
    let ending: Vec<Ending> = if settings.renewal_days == 0 {
        Vec::new()
    } else {
        // The tightest threshold an ending has crossed, unless it was announced for it.
        sqlx::query_as(
            "SELECT u.customer_id, u.company_name, u.subscription_id, u.offer_name, u.ends_on,
                    u.days_left, u.quantity, t.threshold_days
             FROM pcsync.upcoming_renewals u
             CROSS JOIN LATERAL (
                 SELECT min(th) AS threshold_days FROM unnest($1::int[]) AS th WHERE u.days_left <= th
             ) t
             WHERE u.tenant = $3 AND NOT u.auto_renews AND t.threshold_days IS NOT NULL
               -- Renewal decisions speak for terms longer than a month.
               AND NOT ($2 AND coalesce(pcsync.term_months(u.term_duration), 0) > 1)
               AND NOT EXISTS (
                   SELECT 1 FROM pcsync.renewal_announcements a
                   WHERE a.kind = 'ending' AND a.tenant = u.tenant
                     AND a.customer_id = u.customer_id AND a.subscription_id = u.subscription_id
                     AND a.ends_on = u.ends_on AND a.threshold_days = t.threshold_days)
             ORDER BY u.ends_on, u.company_name",
        )
        .bind(thresholds(settings.renewal_days))
        .bind(settings.decision_days > 0)
        .bind(&report.tenant)
        .fetch_all(&mut *tx)
        .await?
    };
    let (renewal_decisions, cancellation_windows) = if settings.decision_days == 0 {
        (Vec::new(), Vec::new())
    } else {
        let decisions: Vec<DecisionLine> = sqlx::query_as(
            "SELECT d.customer_id, d.company_name, d.subscription_id, d.offer_name,
                    d.term_duration, d.ends_on, d.days_left, d.decision, d.licenses,
                    d.licenses_next_term, d.unassigned_seats, $1::int AS threshold_days
             FROM pcsync.renewal_decisions d
             WHERE d.tenant = $2 AND d.days_left <= $1
               AND NOT EXISTS (
                   SELECT 1 FROM pcsync.renewal_announcements a
                   WHERE a.kind = 'decision' AND a.tenant = d.tenant
                     AND a.customer_id = d.customer_id AND a.subscription_id = d.subscription_id
                     AND a.ends_on = d.ends_on AND a.threshold_days = $1)
             ORDER BY d.ends_on, d.company_name",
        )
        .bind(i32::try_from(settings.decision_days).unwrap_or(90))
        .bind(&report.tenant)
        .fetch_all(&mut *tx)
        .await?;
        let windows: Vec<WindowLine> = sqlx::query_as(
            "SELECT w.customer_id, w.company_name, w.subscription_id, w.offer_name,
                    w.refundable_quantity, w.allowed_until, w.hours_left::float8 AS hours_left
             FROM pcsync.cancellation_windows w
             WHERE w.tenant = $2 AND w.hours_left <= $1
               AND NOT EXISTS (
                   SELECT 1 FROM pcsync.cancellation_window_announcements a
                   WHERE a.tenant = w.tenant AND a.customer_id = w.customer_id AND a.subscription_id = w.subscription_id
                     AND a.allowed_until = w.allowed_until)
             ORDER BY w.allowed_until, w.company_name",
        )
        .bind(WINDOW_HOURS)
        .bind(&report.tenant)
        .fetch_all(&mut *tx)
        .await?;
        (decisions, windows)
    };
    tx.commit().await?;
    if events.is_empty()
        && ending.is_empty()
        && renewal_decisions.is_empty()
        && cancellation_windows.is_empty()
    {
        return Ok(None);
    }
    let mut by_customer: BTreeMap<(Option<String>, Uuid), Vec<EventLine>> = BTreeMap::new();
    for e in events {
        by_customer
            .entry((e.company_name.clone(), e.customer_id))
            .or_default()
            .push(e);
    }
    let changes: Vec<CustomerChanges> = by_customer
        .into_iter()
        .map(|((company_name, customer_id), events)| CustomerChanges {
            customer_id,
            company_name,
            events,
        })
        .collect();
    let mut text = summary(&changes, &ending, settings.renewal_days);
    if report.tenant != crate::sync::tenant::DEFAULT_TENANT {
        text = text.replacen("pcsync: ", &format!("pcsync [{}]: ", report.tenant), 1);
    }
    text.push_str(&decisions_summary(
        &renewal_decisions,
        &cancellation_windows,
    ));
    Ok(Some(Notification {
        text,
        tenant: report.tenant.clone(),
        run_id: report.run_id,
        pass_kind: report.kind.as_str(),
        status: report.status.as_str(),
        finished_at: clock.now(),
        changes,
        ending_without_renewal: ending,
        renewal_decisions,
        cancellation_windows,
    }))
}

/// The plain-text summary: counts first, then a few lines of detail.
fn summary(changes: &[CustomerChanges], ending: &[Ending], days: u32) -> String {
    let events: usize = changes.iter().map(|c| c.events.len()).sum();
    let mut text = format!(
        "pcsync: {events} change(s) at {} customer(s); {} subscription(s) newly within {} of ending without auto-renew.",
        changes.len(),
        ending.len(),
        if days > 7 {
            format!("{days} or 7 days")
        } else {
            format!("{days} days")
        }
    );
    for c in changes.iter().take(10) {
        let name = c
            .company_name
            .clone()
            .unwrap_or_else(|| c.customer_id.to_string());
        for e in c.events.iter().take(5) {
            let object = e.object_name.as_deref().unwrap_or(&e.entity_id);
            let what = match &e.field {
                Some(f) => format!(
                    "{f}: {} -> {}",
                    e.old_value.as_deref().unwrap_or("(none)"),
                    e.new_value.as_deref().unwrap_or("(none)")
                ),
                None => e.kind.clone(),
            };
            text.push_str(&format!("\n- {name} / {object}: {what}"));
        }
        if c.events.len() > 5 {
            text.push_str(&format!("\n- {name}: {} more", c.events.len() - 5));
        }
    }
    for e in ending.iter().take(10) {
        text.push_str(&format!(
            "\n- ends {} ({} days), no auto-renew: {} / {}, {} licenses",
            e.ends_on,
            e.days_left,
            e.company_name.as_deref().unwrap_or("?"),
            e.offer_name.as_deref().unwrap_or(&e.subscription_id),
            e.quantity.unwrap_or(0)
        ));
    }
    text
}

/// The decision and cancellation-window lines of the plain-text summary.
fn decisions_summary(decisions: &[DecisionLine], windows: &[WindowLine]) -> String {
    let mut text = String::new();
    if !decisions.is_empty() {
        text.push_str(&format!("\n{} renewal decision(s):", decisions.len()));
        for d in decisions.iter().take(10) {
            text.push_str(&format!(
                "\n- {} ({} days): {} / {} ({}), {}, {} -> {} licenses{}",
                d.ends_on,
                d.days_left,
                d.company_name.as_deref().unwrap_or("?"),
                d.offer_name.as_deref().unwrap_or(&d.subscription_id),
                d.term_duration.as_deref().unwrap_or("?"),
                d.decision,
                d.licenses.unwrap_or(0),
                d.licenses_next_term.unwrap_or(0),
                d.unassigned_seats
                    .filter(|n| *n > 0)
                    .map_or(String::new(), |n| format!(", {n} unassigned"))
            ));
        }
    }
    if !windows.is_empty() {
        text.push_str(&format!(
            "\n{} refund window(s) closing within 24 h:",
            windows.len()
        ));
        for w in windows.iter().take(10) {
            text.push_str(&format!(
                "\n- {} / {}: {} seat(s) refundable for {:.1} h more",
                w.company_name.as_deref().unwrap_or("?"),
                w.offer_name.as_deref().unwrap_or(&w.subscription_id),
                w.refundable_quantity.unwrap_or(0),
                w.hours_left
            ));
        }
    }
    text
}

/// The thresholds at which an ending is announced: when it enters `renewal_days`, and again
/// at 7 days left.
fn thresholds(renewal_days: u32) -> Vec<i32> {
    let days = i32::try_from(renewal_days).unwrap_or(i32::MAX);
    if days > 7 { vec![days, 7] } else { vec![days] }
}

/// Remembers what a delivered notification announced: endings for their threshold, decisions,
/// closing refund windows.
async fn announced(
    pool: &PgPool,
    notification: &Notification,
    clock: &Clock,
) -> Result<(), sqlx::Error> {
    let now = clock.now();
    let e = &notification.ending_without_renewal;
    let d = &notification.renewal_decisions;
    let mut tx = pool.begin().await?;
    for (kind, rows) in [
        (
            "ending",
            e.iter()
                .map(|x| {
                    (
                        x.customer_id,
                        x.subscription_id.clone(),
                        x.ends_on,
                        x.threshold_days,
                    )
                })
                .collect::<Vec<_>>(),
        ),
        (
            "decision",
            d.iter()
                .map(|x| {
                    (
                        x.customer_id,
                        x.subscription_id.clone(),
                        x.ends_on,
                        x.threshold_days,
                    )
                })
                .collect(),
        ),
    ] {
        if rows.is_empty() {
            continue;
        }
        sqlx::query(
            "INSERT INTO pcsync.renewal_announcements
                 (customer_id, subscription_id, ends_on, threshold_days, kind, announced_at, run_id,
                  tenant)
             SELECT u.*, $5, $6, $7, $8 FROM UNNEST($1::uuid[], $2::text[], $3::date[], $4::int[]) AS u
             ON CONFLICT DO NOTHING",
        )
        .bind(rows.iter().map(|r| r.0).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.1.clone()).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.2).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.3).collect::<Vec<_>>())
        .bind(kind)
        .bind(now)
        .bind(notification.run_id)
        .bind(&notification.tenant)
        .execute(&mut *tx)
        .await?;
    }
    let w = &notification.cancellation_windows;
    if !w.is_empty() {
        sqlx::query(
            "INSERT INTO pcsync.cancellation_window_announcements
                 (customer_id, subscription_id, allowed_until, announced_at, run_id, tenant)
             SELECT u.*, $4, $5, $6 FROM UNNEST($1::uuid[], $2::text[], $3::timestamptz[]) AS u
             ON CONFLICT DO NOTHING",
        )
        .bind(w.iter().map(|x| x.customer_id).collect::<Vec<_>>())
        .bind(
            w.iter()
                .map(|x| x.subscription_id.clone())
                .collect::<Vec<_>>(),
        )
        .bind(w.iter().map(|x| x.allowed_until).collect::<Vec<_>>())
        .bind(now)
        .bind(notification.run_id)
        .bind(&notification.tenant)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await
}

/// Sends the pass's notification, if there is one to send; never fails the caller.
pub async fn after_pass(
    pool: &PgPool,
    settings: &NotifySettings,
    clock: &Clock,
    timeout: Duration,
    backoff: Backoff,
    report: &PassReport,
) {
    let Some(url) = &settings.webhook_url else {
        return;
    };
    let notification = match build(pool, settings, clock, report).await {
        Ok(Some(n)) => n,
        Ok(None) => {
            tracing::debug!("nothing to notify");
            return;
        }
        Err(e) => {
            record(
                pool,
                report.run_id,
                &format!("building the notification failed: {e}"),
                clock.now(),
            )
            .await;
            return;
        }
    };
    let http = match crate::partner_center::http_client(timeout, 1) {
        Ok(h) => h,
        Err(e) => {
            record(
                pool,
                report.run_id,
                &format!("cannot build an HTTP client: {e}"),
                clock.now(),
            )
            .await;
            return;
        }
    };
    let mut last = String::new();
    for attempt in 1..=ATTEMPTS {
        let sent = http
            .post(url.expose_secret().trim())
            .json(&notification)
            .send()
            .await;
        match sent {
            Ok(r) if r.status().is_success() => {
                tracing::info!(
                    customers = notification.changes.len(),
                    ending = notification.ending_without_renewal.len(),
                    "notification sent"
                );
                if let Err(e) = announced(pool, &notification, clock).await {
                    // Not fatal: the endings are announced again after the next pass.
                    tracing::warn!(error = %e, "could not record which endings were announced");
                }
                return;
            }
            // Neither the URL nor the answer's body is shown: the URL is a secret.
            Ok(r) => last = format!("the webhook answered HTTP {}", r.status().as_u16()),
            Err(e) => {
                last = format!(
                    "the webhook could not be reached: {}",
                    crate::partner_center::transport_reason(&e)
                )
            }
        }
        if attempt < ATTEMPTS {
            tokio::time::sleep(backoff.delay(attempt, random_unit())).await;
        }
    }
    record(
        pool,
        report.run_id,
        &format!("the notification was not delivered after {ATTEMPTS} attempts: {last}"),
        clock.now(),
    )
    .await;
}

async fn record(pool: &PgPool, run_id: Uuid, message: &str, at: DateTime<Utc>) {
    tracing::warn!(
        error = message,
        "notification failed; the pass's data is stored"
    );
    let stored = match pool.acquire().await {
        Ok(mut conn) => {
            crate::sync::store::record_error(
                &mut conn,
                crate::sync::store::ErrorRow::plain(run_id, None, "notify", message, at),
            )
            .await
        }
        Err(e) => Err(e),
    };
    if let Err(e) = stored {
        tracing::error!(error = %e, "could not record the failed notification");
    }
}
