//! One sync pass, end to end: take the advisory lock, close runs that were killed, open a
//! `sync_runs` row, read the customer list, fetch every customer's subscriptions and managed
//! services with bounded concurrency, hand each fetched customer to one writer that stores
//! them in batches (each customer whole or not at all) on the lock's own connection, close the
//! run with its counters.
//!
//! - [`customers`]: the customer list (CSV file, or merged from Partner Center's list).
//! - [`diff`]: change detection (pure), within the scope the fetch asked for.
//! - [`activity`]: the activity log: which customers a partner user or app changed, and who.
//! - [`lock`]: the advisory lock, held by the connection every write goes through.
//! - [`plan`]: which customers a pass fetches, and why (named, due, new, retried).
//! - [`resource`]: one description per resource (its table, key and fields), and its records.
//! - [`store`]: the per-customer write and the run's bookkeeping rows.

pub mod activity;
pub mod customers;
pub mod diff;
pub mod lock;
pub mod plan;
pub mod resource;
pub mod store;
pub mod tenant;

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use uuid::Uuid;

use crate::config::{AuthMode, CustomerSource, Settings};
use crate::partner_center::models::Customer;
use crate::partner_center::{
    ApiError, Complete, CustomerAnswer, PartnerCenterClient, RefreshTokenStore,
};
pub use activity::{PassChoice, PassKind};
use customers::ListedCustomer;
use diff::Scope;
use lock::{LockLost, PassLock};

/// The most customers the writer stores in one statement.
const WRITE_BATCH: usize = 64;

/// How long to wait before fetching a customer again when one answer would remove most of
/// its subscriptions: long enough for a backend's bad moment to pass, short for the pass.
const SECOND_LOOK_PAUSE: Duration = Duration::from_secs(2);

/// How often an idle writer checks that its connection, and so the lock, is still there.
const LOCK_CHECK_EVERY: Duration = Duration::from_secs(5);

pub use lock::ADVISORY_LOCK_KEY;

/// What started a pass (`sync_runs.trigger`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    Schedule,
    Once,
    Demo,
    Benchmark,
    Test,
}

impl Trigger {
    fn as_str(self) -> &'static str {
        match self {
            Trigger::Schedule => "schedule",
            Trigger::Once => "once",
            Trigger::Demo => "demo",
            Trigger::Benchmark => "benchmark",
            Trigger::Test => "test",
        }
    }
}

/// How a pass ended (`sync_runs.status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunStatus {
    Succeeded,
    Partial,
    Failed,
    Interrupted,
}

/// The `error` of a run that a later pass found still `running`.
const ABANDONED: &str = "the pass ended without closing its run (the process was killed, the machine lost, or the database connection cut); closed when the next pass started";

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Succeeded => "succeeded",
            RunStatus::Partial => "partial",
            RunStatus::Failed => "failed",
            RunStatus::Interrupted => "interrupted",
        }
    }
}

/// What a pass did.
#[derive(Debug, Clone)]
pub struct PassReport {
    /// The partner tenant the pass synced (`auth.tenant_name`).
    pub tenant: String,
    pub run_id: Uuid,
    pub status: RunStatus,
    pub customers_total: u64,
    pub customers_succeeded: u64,
    pub customers_failed: u64,
    pub api_requests: u64,
    pub throttled: u64,
    pub retries: u64,
    pub changes: u64,
    /// Customers fetched twice because one answer would have removed most of their
    /// subscriptions.
    pub second_looks: u64,
    /// Rows of `subscriptions` and `managed_services` inserted or updated.
    pub rows_written: u64,
    pub kind: PassKind,
    /// Relevant activity log records read.
    pub activity_records: u64,
    /// The watermark this pass leaves when it succeeds (or is partial).
    pub activity_read_through: Option<DateTime<Utc>>,
    /// Change events the activity log explained (`changed_by` filled).
    pub attributed: u64,
    /// Why customers were fetched (incremental passes; full passes only for customers an
    /// incomplete list left out).
    pub fetched: plan::FetchCounts,
    /// Whether the customer list from Partner Center was read whole (`None`: from a file, or
    /// not read).
    pub customer_list_complete: Option<bool>,
    pub error: Option<String>,
    pub elapsed: Duration,
    /// Partner Center's answers by endpoint kind and status class (`2xx`, `4xx`, `5xx`,
    /// `error`), for the metrics.
    pub responses: Vec<(&'static str, &'static str, u64)>,
    /// The request budget's rate when the pass ended, in requests per minute.
    pub budget_per_minute: Option<f64>,
}

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(
        "another pcsync pass of partner tenant {0:?} holds its lock on this database (PostgreSQL advisory lock ({ADVISORY_LOCK_KEY}, hashtext({0:?}))); this one did not start"
    )]
    AlreadyRunning(String),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

/// Runs one pass. When `cancel` fires (SIGTERM, SIGINT): no new customer starts, requests in
/// flight and their waits end at once (those customers stay untouched), the writer stores what
/// it already holds, and the run ends `interrupted`.
pub async fn run_pass(
    settings: &Settings,
    pool: &PgPool,
    trigger: Trigger,
    choice: PassChoice,
    cancel: CancellationToken,
) -> Result<PassReport, SyncError> {
    let tenant = settings.auth.tenant_name.as_str();
    let Some(mut lock) = PassLock::acquire(pool, tenant).await? else {
        return Err(SyncError::AlreadyRunning(tenant.to_string()));
    };
    // The tenant's row first: every row of the pass references it.
    tenant::ensure(lock.conn(), tenant).await?;
    let started = Instant::now();
    let clock = settings.clock.clone();
    let started_at = clock.now();
    let run_id = Uuid::new_v4();
    // Under the tenant's lock no other pass of the tenant runs: a row of the tenant still
    // `running` belongs to a pass that died. Another tenant's running pass is its own.
    let abandoned = sqlx::query(
        "UPDATE pcsync.sync_runs SET status = 'abandoned', finished_at = greatest($2, started_at),
            error = $1
         WHERE tenant = $3 AND status = 'running'",
    )
    .bind(ABANDONED)
    .bind(started_at)
    .bind(tenant)
    .execute(lock.conn())
    .await?
    .rows_affected();
    if abandoned > 0 {
        tracing::warn!(
            runs = abandoned,
            "closed runs left 'running' by a pass that ended without closing them, as 'abandoned'"
        );
    }
    sqlx::query(
        "INSERT INTO pcsync.sync_runs (tenant, run_id, trigger, started_at) VALUES ($4, $1, $2, $3)",
    )
    .bind(run_id)
    .bind(trigger.as_str())
    .bind(started_at)
    .bind(tenant)
        .execute(lock.conn())
        .await?;
    let span = tracing::info_span!("sync", %run_id);
    let mut report = PassReport {
        tenant: tenant.to_string(),
        run_id,
        status: RunStatus::Succeeded,
        customers_total: 0,
        customers_succeeded: 0,
        customers_failed: 0,
        api_requests: 0,
        throttled: 0,
        retries: 0,
        changes: 0,
        second_looks: 0,
        rows_written: 0,
        kind: PassKind::Full,
        activity_records: 0,
        activity_read_through: None,
        attributed: 0,
        fetched: plan::FetchCounts::default(),
        customer_list_complete: None,
        error: None,
        elapsed: Duration::ZERO,
        responses: Vec::new(),
        budget_per_minute: None,
    };
    let plan = Plan { choice, started_at };
    let (outcome, lock, confirmed) = pass(settings, pool, lock, run_id, plan, cancel, &mut report)
        .instrument(span.clone())
        .await;
    if let Err(e) = &outcome {
        report.status = RunStatus::Failed;
        report.error = Some(e.to_string());
    }
    report.elapsed = started.elapsed();
    // The run's own row is closed through the pool: it must be closed even when the lock's
    // session was lost, and it is this pass's row alone.
    let mut tx = pool.begin().await?;
    let finished_at = clock.now();
    if let Some(e) = &report.error.as_ref().filter(|_| outcome.is_err()) {
        store::record_error(
            &mut tx,
            store::ErrorRow::plain(run_id, None, "run", e, finished_at),
        )
        .await?;
    }
    sqlx::query(
        "UPDATE pcsync.sync_runs SET finished_at = greatest($15, started_at), status = $2,
            customers_total = $3,
            customers_succeeded = $4, customers_failed = $5, api_requests = $6,
            throttled_responses = $7, retries = $8, changes_detected = $9, error = $10,
            second_looks = $11, kind = $12, activity_records = $13,
            activity_read_through = CASE WHEN $2 IN ('succeeded', 'partial') THEN $14 END,
            customers_named = $16, customers_due = $17, customers_new = $18,
            customers_retried = $19,
            confirmed_customers = CASE WHEN $12 = 'full' AND $2 IN ('succeeded', 'partial')
                AND $21 IS DISTINCT FROM false THEN NULL ELSE $20 END,
            customer_list_complete = $21
         WHERE run_id = $1",
    )
    .bind(run_id)
    .bind(report.status.as_str())
    .bind(clamp(report.customers_total))
    .bind(clamp(report.customers_succeeded))
    .bind(clamp(report.customers_failed))
    .bind(clamp(report.api_requests))
    .bind(clamp(report.throttled))
    .bind(clamp(report.retries))
    .bind(clamp(report.changes))
    .bind(report.error.as_deref())
    .bind(clamp(report.second_looks))
    .bind(report.kind.as_str())
    .bind(clamp(report.activity_records))
    .bind(report.activity_read_through)
    .bind(finished_at)
    .bind(clamp(report.fetched.named))
    .bind(clamp(report.fetched.due))
    .bind(clamp(report.fetched.new))
    .bind(clamp(report.fetched.retried))
    .bind(&confirmed)
    .bind(report.customer_list_complete)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    if let Some(lock) = lock {
        lock.release().await;
    }
    let _enter = span.enter();
    let f = report.fetched;
    let why = match report.kind {
        PassKind::Incremental => format!(
            " ({} named by the activity log, {} due on a date, {} new, {} retried)",
            f.named, f.due, f.new, f.retried
        ),
        PassKind::Full if f != plan::FetchCounts::default() => format!(
            " (every listed customer, and from the stored list {} named, {} due, {} new, {} retried)",
            f.named, f.due, f.new, f.retried
        ),
        PassKind::Full => String::new(),
    };
    let incomplete = if report.customer_list_complete == Some(false) {
        ", customer list incomplete (nobody marked as having left)"
    } else {
        ""
    };
    let summary = format!(
        "{} sync pass {}: {} of {} customers synced{why}, {} failed{incomplete}, {} changes, {} second looks, {} activity records, {} requests, {} throttled, {} retries, {:.1} s",
        report.kind.as_str(),
        report.status.as_str(),
        report.customers_succeeded,
        report.customers_total,
        report.customers_failed,
        report.changes,
        report.second_looks,
        report.activity_records,
        report.api_requests,
        report.throttled,
        report.retries,
        report.elapsed.as_secs_f64()
    );
    match report.status {
        RunStatus::Succeeded => tracing::info!(
            status = report.status.as_str(),
            kind = report.kind.as_str(),
            "{summary}"
        ),
        _ => tracing::warn!(
            status = report.status.as_str(),
            error = report.error.as_deref(),
            "{summary}"
        ),
    }
    drop(_enter);
    Ok(report)
}

fn clamp(n: u64) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// Why the pass as a whole could not go on.
#[derive(Debug, thiserror::Error)]
enum PassError {
    #[error("{0}")]
    Config(#[from] crate::config::ConfigError),
    #[error("{0}")]
    Auth(#[from] crate::partner_center::AuthError),
    #[error("{0}")]
    CustomerFile(#[from] customers::CustomerFileError),
    #[error("the customer list could not be read from Partner Center: {0}")]
    CustomerList(ApiError),
    #[error("{0}")]
    Database(#[from] sqlx::Error),
    #[error("{0}")]
    LockLost(#[from] LockLost),
    /// Credentials, MFA, audience: no customer can succeed.
    #[error("{0}")]
    NoCustomerCanSucceed(String),
    #[error("the database writer stopped unexpectedly: {0}")]
    Writer(String),
    #[error("{0}")]
    Tenant(#[from] tenant::TenantMismatch),
}

/// Everything a customer task needs.
struct TaskContext {
    /// Customers whose fetch ended (stored, failed or cancelled), for the progress lines.
    done: AtomicU64,
    failed: AtomicU64,
    client: PartnerCenterClient,
    fetch_managed_services: bool,
    /// `sync.license_usage` resolved for the credentials: fetch subscribed SKUs.
    fetch_license_usage: bool,
    cancel: CancellationToken,
    second_looks: AtomicU64,
    clock: crate::clock::Clock,
    /// The partner tenant this pass syncs (`auth.tenant_name`): every row it reads or writes is
    /// this tenant's.
    tenant: String,
}

/// A customer that could not be synced, as recorded in `customers` and `sync_errors`.
#[derive(Debug)]
struct CustomerFailure {
    customer: Uuid,
    attempt_started: DateTime<Utc>,
    operation: &'static str,
    http_status: Option<u16>,
    code: Option<String>,
    request_id: Option<String>,
    message: String,
}

/// What the writer is handed: a complete fetch to store, or a failure to record.
enum ToWriter {
    Snapshot(store::CustomerSnapshot),
    Failure(CustomerFailure),
    /// A second look stopped by the signal: nothing to write.
    Cancelled,
}

enum CustomerResult {
    Fetched(store::CustomerSnapshot),
    Failed(CustomerFailure),
    /// Credentials, MFA, audience: no customer can succeed.
    Fatal(CustomerFailure),
    /// Stopped by the signal before anything was known: nothing is written.
    Cancelled,
}

/// The pass after the run row exists. Hands the lock back when it still holds it.
/// What the pass was asked to be, and when it started.
#[derive(Debug, Clone, Copy)]
struct Plan {
    choice: PassChoice,
    started_at: DateTime<Utc>,
}

/// What [`prepare`] hands the fetching: the customers, the client, and since when activity
/// records may explain this pass's changes (when the log was read).
struct Prepared {
    customers: Vec<plan::Planned>,
    client: PartnerCenterClient,
    attribute_since: Option<DateTime<Utc>>,
}

async fn pass(
    settings: &Settings,
    pool: &PgPool,
    mut lock: PassLock,
    run_id: Uuid,
    plan: Plan,
    cancel: CancellationToken,
    report: &mut PassReport,
) -> (Result<(), PassError>, Option<PassLock>, Vec<Uuid>) {
    let prepared = match prepare(settings, pool, &mut lock, run_id, plan, &cancel, report).await {
        Ok(Some(ready)) => ready,
        Ok(None) => {
            report.status = RunStatus::Interrupted;
            report.error = Some("stopped by a signal before any customer was synced".into());
            return (Ok(()), Some(lock), Vec::new());
        }
        Err(e) => return (Err(e), Some(lock), Vec::new()),
    };
    let Prepared {
        customers,
        client,
        attribute_since,
    } = prepared;
    let client_mode = client.tokens().mode();
    let fetch_managed_services = client_mode == AuthMode::AppUser;
    let ctx = Arc::new(TaskContext {
        done: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        client,
        fetch_managed_services,
        fetch_license_usage: settings.sync.license_usage.enabled(client_mode),
        cancel: cancel.clone(),
        second_looks: AtomicU64::new(0),
        clock: settings.clock.clone(),
        tenant: settings.auth.tenant_name.clone(),
    });
    // Fetched customers go to one writer, which stores them in batches; the bounded channel
    // holds fetching back when the database is the slower side, so memory stays bounded by
    // the concurrency, not by the length of the customer list.
    let (to_writer, from_fetchers) = mpsc::channel::<ToWriter>(WRITE_BATCH);
    let writer = tokio::spawn(
        write_all(lock, run_id, ctx.clone(), from_fetchers).instrument(tracing::Span::current()),
    );
    let on_terminal = settings.log.format == crate::config::LogFormat::Text
        && std::io::IsTerminal::is_terminal(&std::io::stderr());
    let progress = settings.log.progress.map(|every| {
        let total = customers.len() as u64;
        if on_terminal {
            tokio::spawn(progress_bar(ctx.clone(), total))
        } else {
            tokio::spawn(
                report_progress(ctx.clone(), total, every).instrument(tracing::Span::current()),
            )
        }
    });
    // Customers in flight: each sends its two requests at once, so this many keeps every
    // request permit busy.
    let width = settings.partner_center.max_concurrency.max(1);
    let mut queue = customers.into_iter();
    let mut tasks: JoinSet<CustomerResult> = JoinSet::new();
    let mut fatal: Option<String> = None;
    let mut writer_gone = false;
    let mut fetch_failed = 0;
    loop {
        while tasks.len() < width && fatal.is_none() && !writer_gone && !cancel.is_cancelled() {
            let Some(customer) = queue.next() else { break };
            let ctx = ctx.clone();
            let span = tracing::info_span!("customer", customer_id = %customer.customer.id);
            tasks.spawn(sync_customer(ctx, customer).instrument(span));
        }
        let Some(joined) = tasks.join_next().await else {
            break;
        };
        ctx.done.fetch_add(1, Ordering::Relaxed);
        if matches!(
            joined,
            Ok(CustomerResult::Failed(_) | CustomerResult::Fatal(_)) | Err(_)
        ) {
            ctx.failed.fetch_add(1, Ordering::Relaxed);
        }
        let message = match joined {
            Ok(CustomerResult::Fetched(snapshot)) => ToWriter::Snapshot(snapshot),
            Ok(CustomerResult::Failed(failure)) => {
                fetch_failed += 1;
                ToWriter::Failure(failure)
            }
            Ok(CustomerResult::Fatal(failure)) => {
                fetch_failed += 1;
                if fatal.is_none() {
                    tracing::error!(error = %failure.message, "stopping the pass: no customer can succeed");
                    fatal = Some(failure.message.clone());
                    // The others would fail the same way: stop them now.
                    ctx.cancel.cancel();
                }
                ToWriter::Failure(failure)
            }
            Ok(CustomerResult::Cancelled) => continue,
            Err(e) => {
                fetch_failed += 1;
                tracing::error!(error = %e, "a customer task panicked");
                continue;
            }
        };
        if !writer_gone && to_writer.send(message).await.is_err() {
            // The writer stopped (its lock was lost): fetch nothing more.
            writer_gone = true;
            tasks.abort_all();
        }
    }
    drop(to_writer);
    if let Some(p) = progress {
        p.abort();
    }
    let (written, lock, writer_error) = match writer.await {
        Ok(WriterEnd {
            written,
            lock: Ok(lock),
        }) => (written, Some(lock), None),
        Ok(WriterEnd {
            written,
            lock: Err(lost),
        }) => (written, None, Some(PassError::from(lost))),
        Err(e) => (
            Written::default(),
            None,
            Some(PassError::Writer(e.to_string())),
        ),
    };
    report.customers_succeeded = written.succeeded;
    report.customers_failed = fetch_failed + written.failed;
    report.changes = written.changes;
    report.rows_written = written.rows_written;
    report.second_looks = ctx.second_looks.load(Ordering::Relaxed);
    let counters = ctx.client.counters();
    report.api_requests = counters.requests;
    report.throttled = counters.throttled;
    report.retries = counters.retries;
    report.responses = ctx.client.responses();
    report.budget_per_minute = Some(ctx.client.budget_rate().await);
    let confirmed = written.confirmed;
    if let Some(e) = writer_error {
        return (Err(e), lock, confirmed);
    }
    let mut lock = lock;
    if let (Some(since), Some(l)) = (attribute_since, lock.as_mut()) {
        match activity::attribute(l.conn(), run_id, since).await {
            Ok(n) => report.attributed = n,
            Err(e) => {
                if let Err(lost) = l.check().await {
                    return (Err(lost.into()), None, confirmed);
                }
                tracing::warn!(error = %e, "the pass's changes could not be matched to the activity log");
            }
        }
    }
    if let Some(message) = fatal {
        return (
            Err(PassError::NoCustomerCanSucceed(message)),
            lock,
            confirmed,
        );
    }
    report.status = if cancel.is_cancelled() {
        report.error = Some("stopped by a signal before every customer was synced".into());
        RunStatus::Interrupted
    } else if report.customers_failed > 0 || report.customer_list_complete == Some(false) {
        RunStatus::Partial
    } else {
        RunStatus::Succeeded
    };
    (Ok(()), lock, confirmed)
}

/// For a person at a terminal: a live bar instead of progress lines (log lines still print
/// above it).
async fn progress_bar(ctx: Arc<TaskContext>, total: u64) {
    let bar = indicatif::ProgressBar::with_draw_target(
        Some(total),
        indicatif::ProgressDrawTarget::stderr_with_hz(4),
    );
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{bar:20} {pos}/{len} customers, {msg}, ~{eta} left",
    ) {
        bar.set_style(style);
    }
    let mut ticker = tokio::time::interval(Duration::from_millis(250));
    loop {
        ticker.tick().await;
        let counters = ctx.client.counters();
        bar.set_position(ctx.done.load(Ordering::Relaxed));
        bar.set_message(format!(
            "{} failed, {} requests, {} 429s",
            ctx.failed.load(Ordering::Relaxed),
            counters.requests,
            counters.throttled
        ));
        if ctx.done.load(Ordering::Relaxed) >= total {
            bar.finish_and_clear();
            return;
        }
    }
}

/// One INFO line every `every` while the pass runs: customers done of total, failed,
/// requests, 429s, the request rate of the last interval against the budget, and the time
/// left at the pace so far.
async fn report_progress(ctx: Arc<TaskContext>, total: u64, every: Duration) {
    let started = Instant::now();
    let mut last_requests = 0;
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    loop {
        ticker.tick().await;
        let done = ctx.done.load(Ordering::Relaxed);
        let failed = ctx.failed.load(Ordering::Relaxed);
        let counters = ctx.client.counters();
        let rate = (counters.requests - last_requests) as f64 * 60.0 / every.as_secs_f64();
        last_requests = counters.requests;
        let budget = ctx.client.budget_rate().await;
        let elapsed = started.elapsed().as_secs_f64();
        let eta_secs = (done > 0)
            .then(|| (total.saturating_sub(done)) as f64 * elapsed / done as f64)
            .map(|s| s.round() as u64);
        let eta = eta_secs.map_or("unknown".to_string(), |s| {
            format!("{}m{:02}s", s / 60, s % 60)
        });
        tracing::info!(
            done,
            total,
            failed,
            requests = counters.requests,
            throttled = counters.throttled,
            rate_per_min = rate.round() as u64,
            budget_per_min = budget.round() as u64,
            eta_secs,
            "progress: {done} of {total} customers, {failed} failed, {} requests, {} throttled, {:.0}/min of {:.0}/min, about {eta} left",
            counters.requests,
            counters.throttled,
            rate,
            budget,
        );
    }
}

/// Credentials, a token, the customer list: what must work before any customer starts.
/// `None` when the signal came first.
#[allow(clippy::too_many_arguments)]
async fn prepare(
    settings: &Settings,
    pool: &PgPool,
    lock: &mut PassLock,
    run_id: Uuid,
    plan: Plan,
    cancel: &CancellationToken,
    report: &mut PassReport,
) -> Result<Option<Prepared>, PassError> {
    let creds = settings.auth.credentials()?;
    let client = PartnerCenterClient::new(
        &settings.partner_center,
        creds,
        Some(RefreshTokenStore::new(pool.clone()).for_tenant(&settings.auth.tenant_name)),
        run_id,
    )
    .await?
    .cancelled_by(cancel.child_token());
    // A token first: bad credentials stop the pass here, not once per customer.
    match client.authenticate().await {
        Ok(()) => {}
        Err(ApiError::Cancelled) => return Ok(None),
        Err(ApiError::Auth(e)) => return Err(e.into()),
        Err(e) => return Err(PassError::NoCustomerCanSucceed(e.to_string())),
    }
    // The partner tenant: recorded by its first pass, never mixed with another.
    let tenant_id = settings.auth.tenant_id.clone().unwrap_or_default();
    let token = client.tokens().token().await?;
    let guid = tenant::resolved_guid(&tenant_id, &token);
    drop(token);
    tenant::check_or_record(lock.conn(), &settings.auth.tenant_name, &tenant_id, guid).await??;

    let now = plan.started_at;
    // What the list names, what it left out (only an incomplete list leaves anyone out), and
    // the proof that lets the departure sweep run.
    let (listed, departures, source): (Vec<ListedCustomer>, Option<Complete<Uuid>>, &str) =
        match settings.customers.source {
            CustomerSource::File => {
                let list = customers::read_customer_file(
                    &settings.customers.file,
                    settings.customers.default_mpn_id.as_deref(),
                )?;
                for p in &list.problems {
                    let message = format!(
                        "{} line {}: {}",
                        settings.customers.file.display(),
                        p.line,
                        p.message
                    );
                    tracing::warn!(line = p.line, "customer file: {}", p.message);
                    store::record_error(
                        lock.conn(),
                        store::ErrorRow::plain(run_id, None, "read_customer_file", &message, now),
                    )
                    .await?;
                }
                // The file is the list: whoever it names (on a skipped line too) is listed.
                let still_listed = Complete::whole(
                    list.customers
                        .iter()
                        .map(|c| c.id)
                        .chain(list.skipped_ids.iter().copied())
                        .collect(),
                );
                (list.customers, Some(still_listed), "file")
            }
            CustomerSource::Api => {
                let answer = match client
                    .customers(settings.customers.page_size)
                    .collect_all()
                    .await
                {
                    Ok(answer) => answer,
                    Err(ApiError::Cancelled) => return Ok(None),
                    Err(e) => return Err(PassError::CustomerList(e)),
                };
                let default_mpn = settings.customers.default_mpn_id.clone();
                let listed = |c: Customer| ListedCustomer {
                    id: c.id,
                    mpn_id: default_mpn.clone(),
                    name: c.company_name,
                    domain: c.domain,
                    relationship: c.relationship,
                };
                let (list, still_listed, repeats) = match answer {
                    CustomerAnswer::Complete(all) => {
                        let (all, repeats) = all
                            .map(listed)
                            .merge_repeats(|c| c.id, customers::merge_into);
                        report.customer_list_complete = Some(true);
                        let ids = all.clone().map(|c| c.id);
                        (all.into_items(), Some(ids), repeats)
                    }
                    CustomerAnswer::Incomplete {
                        customers: some,
                        problems,
                    } => {
                        report.customer_list_complete = Some(false);
                        record_list_problems(lock.conn(), run_id, &problems, now).await?;
                        let (some, repeats) =
                            customers::merge_duplicates(some.into_iter().map(listed).collect());
                        (some, None, repeats)
                    }
                };
                if repeats > 0 {
                    tracing::warn!(
                        repeats,
                        "the Partner Center customer list named some customers more than once; each is synced once"
                    );
                }
                (list, still_listed, "api")
            }
        };
    let tenant = settings.auth.tenant_name.as_str();
    store::upsert_customers(lock.conn(), tenant, source, &listed, now).await?;
    let left_out = match &departures {
        Some(still_listed) => {
            let left = store::mark_departures(lock.conn(), tenant, still_listed, now).await?;
            if left > 0 {
                tracing::info!(
                    customers = left,
                    "customers no longer in the customer list are marked as having left (their data is kept)"
                );
            }
            Vec::new()
        }
        None => plan::stored_left_out(lock.conn(), tenant, &listed).await?,
    };
    let Some((planned, attribute_since)) = choose_customers(
        settings, &client, lock, run_id, plan, listed, left_out, report,
    )
    .await?
    else {
        return Ok(None);
    };
    report.customers_total = planned.len() as u64;
    if planned.is_empty() && report.kind == PassKind::Full {
        tracing::warn!("the customer list is empty: nothing to sync");
    }
    if client.tokens().mode() == AuthMode::AppOnly {
        tracing::warn!(
            "auth.mode = \"app_only\": managed services are skipped this run (that endpoint needs App+User credentials); stored ones are left as they are"
        );
    }
    Ok(Some(Prepared {
        customers: planned,
        client,
        attribute_since,
    }))
}

/// Records why the customer list is incomplete: one `sync_errors` row per problem, with the
/// customer where an unreadable item's id reads.
async fn record_list_problems(
    conn: &mut sqlx::PgConnection,
    run_id: Uuid,
    problems: &[crate::partner_center::ListProblem],
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    tracing::warn!(
        problems = problems.len(),
        "the customer list is incomplete: every customer it names is synced, nobody is marked as having left, and the pass ends partial"
    );
    for p in problems {
        tracing::warn!(customer_id = ?p.customer_id, "customer list: {}", p.message);
        store::record_error(
            conn,
            store::ErrorRow::plain(run_id, p.customer_id, "read_customer_list", &p.message, now),
        )
        .await?;
    }
    Ok(())
}

/// Decides the kind of pass, reads the activity log when a watermark allows, and picks the
/// customers (see [`plan`]). Also returns since when the log's records may explain this pass's
/// changes. `None` when the signal came first.
#[allow(clippy::too_many_arguments)]
async fn choose_customers(
    settings: &Settings,
    client: &PartnerCenterClient,
    lock: &mut PassLock,
    run_id: Uuid,
    plan: Plan,
    listed: Vec<ListedCustomer>,
    left_out: Vec<ListedCustomer>,
    report: &mut PassReport,
) -> Result<Option<(Vec<plan::Planned>, Option<DateTime<Utc>>)>, PassError> {
    let tenant = settings.auth.tenant_name.as_str();
    let ledger = activity::Ledger::read(lock.conn(), tenant).await?;
    let now = plan.started_at;
    let (mut kind, why) = activity::decide(plan.choice, &ledger, &settings.sync.full_schedule, now);
    tracing::info!(kind = kind.as_str(), reason = why, "pass kind");
    // A full pass sees every customer as it is now: the next incremental pass may start here.
    report.activity_read_through = Some(now);
    let from = ledger
        .watermark
        .filter(|w| now - *w <= activity::WATERMARK_MAX_AGE)
        .map(|w| w - activity::OVERLAP);
    let mut signals = plan::Signals::default();
    let mut attribute_since = None;
    if let Some(from) = from {
        match client.activity(from.date_naive(), now.date_naive()).await {
            Ok(items) => {
                let mut records = Vec::new();
                let mut seen = HashSet::new();
                for item in items.into_items() {
                    match activity::ActivityRecord::from_json(item) {
                        Ok(r)
                            if activity::is_relevant(&r.resource_type)
                                && r.operation_at >= from
                                && seen.insert(r.record_id.clone()) =>
                        {
                            records.push(r)
                        }
                        Ok(_) => {}
                        Err(e) => tracing::warn!(error = %e, "activity log: a record was left out"),
                    }
                }
                let old_news = activity::acted_on(lock.conn(), tenant, &records).await?;
                activity::store(lock.conn(), run_id, &records, now).await?;
                signals.named = records
                    .iter()
                    .filter(|r| !old_news.contains(&r.record_id))
                    .filter_map(|r| r.customer_id)
                    .collect();
                report.activity_records = records.len() as u64;
                attribute_since = Some(from);
            }
            Err(ApiError::Cancelled) => return Ok(None),
            Err(e) => {
                let message = format!("the activity log could not be read: {e}");
                if kind == PassKind::Incremental {
                    tracing::warn!(error = %e, "the activity log could not be read; running a full pass instead");
                    kind = PassKind::Full;
                } else {
                    tracing::warn!(error = %e, "the activity log could not be read; this pass's changes are not attributed");
                }
                let ctx = e.context();
                store::record_error(
                    lock.conn(),
                    store::ErrorRow {
                        http_status: ctx.and_then(|c| c.http_status),
                        error_code: ctx.and_then(|c| c.code.as_deref()),
                        request_id: ctx.map(|c| c.request_id.as_str()).filter(|r| !r.is_empty()),
                        ..store::ErrorRow::plain(run_id, None, "read_activity_log", &message, now)
                    },
                )
                .await?;
            }
        }
    }
    report.kind = kind;
    if kind == PassKind::Incremental || !left_out.is_empty() {
        signals.due =
            plan::due_customers(lock.conn(), tenant, now, settings.sync.due_recheck).await?;
        (signals.never, signals.failing) = plan::pending(lock.conn(), tenant).await?;
    }
    let listed_count = listed.len();
    let (planned, counts) = plan::select(kind, listed, left_out, &signals);
    report.fetched = counts;
    if kind == PassKind::Incremental {
        tracing::info!(
            listed = listed_count,
            fetched = planned.len(),
            named = counts.named,
            due = counts.due,
            new = counts.new,
            retried = counts.retried,
            "incremental pass: only the customers that may have changed"
        );
    }
    Ok(Some((planned, attribute_since)))
}

/// What the writer did.
#[derive(Debug, Default)]
struct Written {
    /// The customers stored (an incremental pass confirms them in `sync_runs`).
    confirmed: Vec<Uuid>,
    succeeded: u64,
    failed: u64,
    changes: u64,
    rows_written: u64,
}

/// How the writer ended: its counts, and the lock back, or why it was lost.
struct WriterEnd {
    written: Written,
    lock: Result<PassLock, LockLost>,
}

/// Stores fetched customers and records failed ones as they come, as many at once as are
/// waiting (up to [`WRITE_BATCH`]), all on the lock's connection. A batch that fails is stored
/// again one customer at a time, so one bad customer fails alone; a lost connection ends the
/// writer at once. A customer whose answer would remove most of its subscriptions is fetched
/// again after [`SECOND_LOOK_PAUSE`] (in a task of its own, so the others go on) and stored
/// only if both answers agree.
struct Writer {
    lock: PassLock,
    run_id: Uuid,
    ctx: Arc<TaskContext>,
    written: Written,
    /// Second looks under way; their answers come back through `rechecks`.
    pending: usize,
    rechecks: mpsc::UnboundedSender<ToWriter>,
}

async fn write_all(
    lock: PassLock,
    run_id: Uuid,
    ctx: Arc<TaskContext>,
    mut rx: mpsc::Receiver<ToWriter>,
) -> WriterEnd {
    let (rechecks, mut recheck_rx) = mpsc::unbounded_channel();
    let mut w = Writer {
        lock,
        run_id,
        ctx,
        written: Written::default(),
        pending: 0,
        rechecks,
    };
    let mut fetchers_done = false;
    let mut batch = Vec::with_capacity(WRITE_BATCH);
    loop {
        if fetchers_done && w.pending == 0 {
            break;
        }
        let mut from_recheck = false;
        tokio::select! {
            n = rx.recv_many(&mut batch, WRITE_BATCH), if !fetchers_done => {
                if n == 0 {
                    fetchers_done = true;
                    continue;
                }
            }
            Some(message) = recheck_rx.recv() => {
                w.pending -= 1;
                from_recheck = true;
                batch.push(message);
            }
            _ = tokio::time::sleep(LOCK_CHECK_EVERY) => {
                // Idle: make sure the lock is still ours before the next write comes.
                if let Err(lost) = w.lock.check().await {
                    return w.end(Err(lost));
                }
                continue;
            }
        }
        if let Err(lost) = w.write(&mut batch, from_recheck).await {
            return w.end(Err(lost));
        }
    }
    w.end(Ok(()))
}

impl Writer {
    fn end(self, lock: Result<(), LockLost>) -> WriterEnd {
        WriterEnd {
            written: self.written,
            lock: lock.map(|()| self.lock),
        }
    }

    /// Records the failures and stores the snapshots of `batch`, emptying it.
    async fn write(
        &mut self,
        batch: &mut Vec<ToWriter>,
        from_recheck: bool,
    ) -> Result<(), LockLost> {
        let mut snapshots = Vec::with_capacity(batch.len());
        for message in batch.drain(..) {
            match message {
                ToWriter::Snapshot(s) => snapshots.push(s),
                ToWriter::Failure(f) => {
                    if from_recheck {
                        self.written.failed += 1;
                    }
                    self.record_failure(&f).await?;
                }
                ToWriter::Cancelled => {}
            }
        }
        if snapshots.is_empty() {
            return Ok(());
        }
        let now = self.ctx.clock.now();
        match store::store_batch(
            self.lock.conn(),
            &self.ctx.tenant,
            self.run_id,
            now,
            &snapshots,
        )
        .await
        {
            Ok(outcomes) => self.handle(outcomes, &snapshots).await,
            Err(e) => {
                self.lock.check().await?;
                if snapshots.len() > 1 {
                    tracing::warn!(error = %e, customers = snapshots.len(), "a batch failed to store; storing its customers one by one");
                }
                for one in &snapshots {
                    let stored = match snapshots.len() {
                        1 => Err(e.to_string()),
                        _ => store::store_batch(
                            self.lock.conn(),
                            &self.ctx.tenant,
                            self.run_id,
                            now,
                            std::slice::from_ref(one),
                        )
                        .await
                        .map_err(|e| e.to_string()),
                    };
                    match stored {
                        Ok(outcomes) => self.handle(outcomes, std::slice::from_ref(one)).await?,
                        Err(e) => {
                            self.lock.check().await?;
                            let failure = plain_failure(
                                one.customer,
                                one.attempt_started,
                                "store",
                                format!(
                                    "storing the customer's data failed (nothing was written): {e}"
                                ),
                            );
                            tracing::warn!(customer_id = %one.customer, error = %failure.message, "customer not stored");
                            self.record_failure(&failure).await?;
                            self.written.failed += 1;
                        }
                    }
                }
                Ok(())
            }
        }
    }

    async fn handle(
        &mut self,
        outcomes: Vec<store::Outcome>,
        snapshots: &[store::CustomerSnapshot],
    ) -> Result<(), LockLost> {
        for outcome in outcomes {
            match outcome {
                store::Outcome::Stored(o) => record_outcome(&o, &mut self.written),
                store::Outcome::SecondLookNeeded { customer, removals } => {
                    if let Some(first) = snapshots.iter().find(|s| s.customer == customer) {
                        self.second_look(first.clone(), removals);
                    }
                }
                store::Outcome::NotConfirmed { customer, message } => {
                    tracing::warn!(customer_id = %customer, error = %message, "mass removal not confirmed");
                    let at = snapshots
                        .iter()
                        .find(|s| s.customer == customer)
                        .map_or_else(|| self.ctx.clock.now(), |s| s.attempt_started);
                    self.record_failure(&plain_failure(customer, at, "second_look", message))
                        .await?;
                    self.written.failed += 1;
                }
            }
        }
        Ok(())
    }

    /// Fetches the customer's subscriptions again after a pause; the answer comes back as a
    /// snapshot carrying the first answer's removals.
    fn second_look(&mut self, first: store::CustomerSnapshot, removals: BTreeSet<String>) {
        self.pending += 1;
        self.ctx.second_looks.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            customer_id = %first.customer,
            removals = removals.len(),
            "one answer would remove most of the customer's subscriptions; asking again before believing it"
        );
        let (ctx, tx) = (self.ctx.clone(), self.rechecks.clone());
        tokio::spawn(async move {
            let look = async {
                tokio::time::sleep(SECOND_LOOK_PAUSE).await;
                let mpn = match &first.scope {
                    Scope::Partner(p) => Some(p.as_str()),
                    Scope::AllPartners => None,
                };
                match ctx
                    .client
                    .subscriptions(first.customer, mpn, resource::Subscription::from_raw)
                    .await
                {
                    Ok(subscriptions) => ToWriter::Snapshot(store::CustomerSnapshot {
                        subscriptions,
                        first_look: Some(removals),
                        ..first.clone()
                    }),
                    Err(ApiError::Cancelled) => ToWriter::Cancelled,
                    Err(e) => match failure_of(
                        first.customer,
                        first.attempt_started,
                        "get_subscriptions",
                        &e,
                    ) {
                        CustomerResult::Failed(f) | CustomerResult::Fatal(f) => {
                            ToWriter::Failure(f)
                        }
                        _ => ToWriter::Cancelled,
                    },
                }
            };
            let message = tokio::select! {
                _ = ctx.cancel.cancelled() => ToWriter::Cancelled,
                m = look => m,
            };
            let _ = tx.send(message);
        });
    }

    async fn record_failure(&mut self, f: &CustomerFailure) -> Result<(), LockLost> {
        if let Err(e) = record_failure(&mut self.lock, self.run_id, f, self.ctx.clock.now()).await {
            self.lock.check().await?;
            tracing::error!(error = %e, "could not record the customer's failure");
        }
        Ok(())
    }
}

async fn record_failure(
    lock: &mut PassLock,
    run_id: Uuid,
    f: &CustomerFailure,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    store::record_customer_failure(
        lock.conn(),
        f.attempt_started,
        store::ErrorRow {
            run_id,
            customer: Some(f.customer),
            operation: f.operation,
            http_status: f.http_status,
            error_code: f.code.as_deref(),
            request_id: f.request_id.as_deref(),
            message: &f.message,
            at: now,
        },
    )
    .await
}

/// Counts a stored customer and logs its changes: every change at INFO, except additions,
/// which are summed up per customer at INFO (a first load adds every object) and listed one by
/// one at DEBUG.
fn record_outcome(o: &store::StoreOutcome, written: &mut Written) {
    written.succeeded += 1;
    written.confirmed.push(o.customer);
    written.changes += o.events.len() as u64;
    written.rows_written += o.rows_written;
    let mut added = (0u64, 0u64);
    for e in &o.events {
        macro_rules! change {
            ($level:ident) => {
                tracing::$level!(
                    customer_id = %o.customer,
                    entity = e.entity,
                    entity_id = %e.entity_id,
                    kind = e.kind,
                    field = e.field,
                    old = e.old.as_deref(),
                    new = e.new.as_deref(),
                    "change"
                )
            };
        }
        if e.kind == "added" {
            match e.entity {
                "subscription" => added.0 += 1,
                _ => added.1 += 1,
            }
            change!(debug);
        } else {
            change!(info);
        }
    }
    if added != (0, 0) {
        tracing::info!(
            customer_id = %o.customer,
            subscriptions_added = added.0,
            managed_services_added = added.1,
            "added {} subscriptions and {} managed services",
            added.0,
            added.1
        );
    }
}

/// Fetches one customer; on success the complete snapshot goes to the writer.
async fn sync_customer(ctx: Arc<TaskContext>, planned: plan::Planned) -> CustomerResult {
    let attempt_started = ctx.clock.now();
    let fetch_services = ctx.fetch_managed_services && planned.needs_managed_services();
    let fetch_skus = ctx.fetch_license_usage && planned.needs_managed_services();
    let customer = planned.customer;
    let scope = Scope::of(customer.mpn_id.as_deref());
    let subs = ctx.client.subscriptions(
        customer.id,
        customer.mpn_id.as_deref(),
        resource::Subscription::from_raw,
    );
    let services = async {
        if fetch_services {
            ctx.client
                .managed_services(customer.id, resource::ManagedService::from_raw)
                .await
                .map(Some)
        } else {
            Ok(None)
        }
    };
    let skus = async {
        if fetch_skus {
            ctx.client
                .subscribed_skus(customer.id, resource::SubscribedSku::from_raw)
                .await
                .map(Some)
        } else {
            Ok(None)
        }
    };
    // The customer is fetched whole or fails whole: one failed resource fails it, and nothing
    // stored for it changes.
    let (subs, services, skus) = tokio::join!(subs, services, skus);
    let failed = |operation, e: &ApiError| failure_of(customer.id, attempt_started, operation, e);
    let (subscriptions, services, skus) = match (subs, services, skus) {
        (Err(ApiError::Cancelled), _, _)
        | (_, Err(ApiError::Cancelled), _)
        | (_, _, Err(ApiError::Cancelled)) => {
            return CustomerResult::Cancelled;
        }
        (Ok(subscriptions), Ok(services), Ok(skus)) => (subscriptions, services, skus),
        (Err(e), _, _) => return failed("get_subscriptions", &e),
        (_, Err(e), _) => return failed("get_managed_services", &e),
        (_, _, Err(e)) => return failed("get_subscribed_skus", &e),
    };
    CustomerResult::Fetched(store::CustomerSnapshot {
        customer: customer.id,
        attempt_started,
        scope,
        subscriptions,
        services,
        skus,
        first_look: None,
    })
}

fn plain_failure(
    customer: Uuid,
    attempt_started: DateTime<Utc>,
    operation: &'static str,
    message: String,
) -> CustomerFailure {
    CustomerFailure {
        customer,
        attempt_started,
        operation,
        http_status: None,
        code: None,
        request_id: None,
        message,
    }
}

/// A failed fetch, logged, as the writer will record it.
fn failure_of(
    customer: Uuid,
    attempt_started: DateTime<Utc>,
    operation: &'static str,
    error: &ApiError,
) -> CustomerResult {
    let message = error.to_string();
    tracing::warn!(operation, error = %message, "customer not synced; its stored data is kept");
    let ctx = error.context();
    let failure = CustomerFailure {
        customer,
        attempt_started,
        operation,
        http_status: ctx.and_then(|c| c.http_status),
        code: ctx.and_then(|c| c.code.clone()),
        request_id: ctx.map(|c| c.request_id.clone()).filter(|r| !r.is_empty()),
        message,
    };
    if error.is_fatal() {
        CustomerResult::Fatal(failure)
    } else {
        CustomerResult::Failed(failure)
    }
}
