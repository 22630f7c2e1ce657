//! One sync pass, end to end: take the advisory lock, open a `sync_runs` row, read the customer
//! list, fetch every customer's subscriptions and managed services with bounded concurrency,
//! hand each fetched customer to one writer that stores them in batches (each customer whole
//! or not at all), close the run with its counters.
//!
//! - [`customers`]: the CSV customer list.
//! - [`diff`]: change detection (pure).
//! - [`store`]: the per-customer write and the run's bookkeeping rows.

pub mod customers;
pub mod diff;
pub mod store;

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use sqlx::PgPool;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tracing::Instrument;
use uuid::Uuid;

use crate::config::{AuthMode, CustomerSource, Settings};
use crate::partner_center::{ApiError, PartnerCenterClient, RefreshTokenStore};
use customers::ListedCustomer;

/// The most customers the writer stores in one statement.
const WRITE_BATCH: usize = 64;

/// Key of the PostgreSQL advisory lock that keeps passes from overlapping across processes
/// and hosts ("pcsync" in ASCII).
pub const ADVISORY_LOCK_KEY: i64 = 0x7063_7379_6e63;

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
    pub run_id: Uuid,
    pub status: RunStatus,
    pub customers_total: u64,
    pub customers_succeeded: u64,
    pub customers_failed: u64,
    pub api_requests: u64,
    pub throttled: u64,
    pub retries: u64,
    pub changes: u64,
    /// Rows of `subscriptions` and `managed_services` inserted or updated.
    pub rows_written: u64,
    pub error: Option<String>,
    pub elapsed: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(
        "another pcsync pass holds the lock on this database (PostgreSQL advisory lock {ADVISORY_LOCK_KEY}); this one did not start"
    )]
    AlreadyRunning,
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

/// Everything a customer task needs.
struct Shared {
    pool: PgPool,
    client: PartnerCenterClient,
    run_id: Uuid,
    fetch_managed_services: bool,
}

enum CustomerResult {
    Fetched(store::Fetched),
    Failed,
    /// Credentials, MFA, audience: no customer can succeed.
    Fatal(String),
}

/// Runs one pass. `stop` turning true means: start no new customer, let those in flight
/// finish (commit or roll back), end the run as interrupted.
pub async fn run_pass(
    settings: &Settings,
    pool: &PgPool,
    trigger: Trigger,
    stop: watch::Receiver<bool>,
) -> Result<PassReport, SyncError> {
    // The lock lives on a connection of its own, taken out of the pool: when the pass ends
    // in any way (even a panic), the connection closes and the server releases the lock;
    // it can never go back to the pool still held.
    let mut lock_conn = pool.acquire().await?.detach();
    let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
        .bind(ADVISORY_LOCK_KEY)
        .fetch_one(&mut lock_conn)
        .await?;
    if !locked {
        return Err(SyncError::AlreadyRunning);
    }
    let result = locked_pass(settings, pool, trigger, stop).await;
    // Closing the session releases the lock; a failure to close cleanly releases it too.
    let _ = sqlx::Connection::close(lock_conn).await;
    result
}

async fn locked_pass(
    settings: &Settings,
    pool: &PgPool,
    trigger: Trigger,
    stop: watch::Receiver<bool>,
) -> Result<PassReport, SyncError> {
    let started = Instant::now();
    let run_id = Uuid::new_v4();
    sqlx::query("INSERT INTO pcsync.sync_runs (run_id, trigger) VALUES ($1, $2)")
        .bind(run_id)
        .bind(trigger.as_str())
        .execute(pool)
        .await?;
    let span = tracing::info_span!("sync", %run_id);
    let mut report = PassReport {
        run_id,
        status: RunStatus::Succeeded,
        customers_total: 0,
        customers_succeeded: 0,
        customers_failed: 0,
        api_requests: 0,
        throttled: 0,
        retries: 0,
        changes: 0,
        rows_written: 0,
        error: None,
        elapsed: Duration::ZERO,
    };
    let outcome = pass(settings, pool, run_id, stop, &mut report)
        .instrument(span.clone())
        .await;
    if let Err(e) = outcome {
        report.status = RunStatus::Failed;
        report.error = Some(e.to_string());
        let mut conn = pool.acquire().await?;
        store::record_error(
            &mut conn,
            run_id,
            None,
            "run",
            None,
            None,
            None,
            &e.to_string(),
        )
        .await?;
    }
    report.elapsed = started.elapsed();
    sqlx::query(
        "UPDATE pcsync.sync_runs SET finished_at = now(), status = $2, customers_total = $3,
            customers_succeeded = $4, customers_failed = $5, api_requests = $6,
            throttled_responses = $7, retries = $8, changes_detected = $9, error = $10
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
    .execute(pool)
    .await?;
    let _enter = span.enter();
    let summary = format!(
        "sync pass {}: {} of {} customers synced, {} failed, {} changes, {} requests, {} throttled, {} retries, {:.1} s",
        report.status.as_str(),
        report.customers_succeeded,
        report.customers_total,
        report.customers_failed,
        report.changes,
        report.api_requests,
        report.throttled,
        report.retries,
        report.elapsed.as_secs_f64()
    );
    match report.status {
        RunStatus::Succeeded => tracing::info!(status = report.status.as_str(), "{summary}"),
        _ => tracing::warn!(
            status = report.status.as_str(),
            error = report.error.as_deref(),
            "{summary}"
        ),
    }
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
    Fatal(String),
}

async fn pass(
    settings: &Settings,
    pool: &PgPool,
    run_id: Uuid,
    stop: watch::Receiver<bool>,
    report: &mut PassReport,
) -> Result<(), PassError> {
    let creds = settings.auth.credentials()?;
    let app_only = creds.mode == AuthMode::AppOnly;
    let client = PartnerCenterClient::new(
        &settings.partner_center,
        creds,
        Some(RefreshTokenStore::new(pool.clone())),
        run_id,
    )
    .await?;
    // A token first: bad credentials stop the pass here, not once per customer.
    client.tokens().token().await?;

    let (customers, source) = match settings.customers.source {
        CustomerSource::File => {
            let list = customers::read_customer_file(
                &settings.customers.file,
                settings.customers.default_mpn_id.as_deref(),
            )?;
            let mut conn = pool.acquire().await?;
            for p in &list.problems {
                let message = format!(
                    "{} line {}: {}",
                    settings.customers.file.display(),
                    p.line,
                    p.message
                );
                tracing::warn!(line = p.line, "customer file: {}", p.message);
                store::record_error(
                    &mut conn,
                    run_id,
                    None,
                    "read_customer_file",
                    None,
                    None,
                    None,
                    &message,
                )
                .await?;
            }
            (list.customers, "file")
        }
        CustomerSource::Api => {
            let listed = client
                .customers(settings.customers.page_size)
                .collect_all()
                .await
                .map_err(PassError::CustomerList)?;
            let default_mpn = settings.customers.default_mpn_id.clone();
            let list = listed
                .into_iter()
                .map(|c| ListedCustomer {
                    id: c.id,
                    mpn_id: default_mpn.clone(),
                    name: c.company_name,
                    domain: c.domain,
                    relationship: c.relationship,
                })
                .collect::<Vec<_>>();
            (list, "api")
        }
    };
    store::upsert_customers(pool, source, &customers).await?;
    report.customers_total = customers.len() as u64;
    if customers.is_empty() {
        tracing::warn!("the customer list is empty: nothing to sync");
    }
    if app_only {
        tracing::warn!(
            "auth.mode = \"app_only\": managed services are skipped this run (that endpoint needs App+User credentials); stored ones are left as they are"
        );
    }

    let shared = Arc::new(Shared {
        pool: pool.clone(),
        client,
        run_id,
        fetch_managed_services: !app_only,
    });
    // Fetched customers go to one writer, which stores them in batches; the bounded channel
    // holds fetching back when the database is the slower side, so memory stays bounded by
    // the concurrency, not by the length of the customer list.
    let (to_writer, from_fetchers) = mpsc::channel::<store::Fetched>(WRITE_BATCH);
    let writer = tokio::spawn(
        write_all(pool.clone(), run_id, from_fetchers).instrument(tracing::Span::current()),
    );
    // Customers in flight: each sends its two requests at once, so this many keeps every
    // request permit busy.
    let width = settings.partner_center.max_concurrency.max(1);
    let mut queue = customers.into_iter();
    let mut tasks: JoinSet<CustomerResult> = JoinSet::new();
    let mut fatal: Option<String> = None;
    let mut interrupted = false;
    let mut fetch_failed = 0;
    loop {
        while tasks.len() < width && fatal.is_none() {
            if *stop.borrow() {
                interrupted = true;
                break;
            }
            let Some(customer) = queue.next() else { break };
            let shared = shared.clone();
            let span = tracing::info_span!("customer", customer_id = %customer.id);
            tasks.spawn(sync_customer(shared, customer).instrument(span));
        }
        let Some(joined) = tasks.join_next().await else {
            break;
        };
        match joined {
            Ok(CustomerResult::Fetched(fetched)) => {
                if to_writer.send(fetched).await.is_err() {
                    // The writer only stops early by panicking: say why.
                    let why = match writer.await {
                        Err(e) => e.to_string(),
                        Ok(_) => "it ended".to_string(),
                    };
                    return Err(PassError::Fatal(format!(
                        "the database writer stopped: {why}"
                    )));
                }
            }
            Ok(CustomerResult::Failed) => fetch_failed += 1,
            Ok(CustomerResult::Fatal(message)) => {
                fetch_failed += 1;
                if fatal.is_none() {
                    tracing::error!(error = %message, "stopping the pass: no customer can succeed");
                    fatal = Some(message);
                }
            }
            Err(e) => {
                fetch_failed += 1;
                tracing::error!(error = %e, "a customer task panicked");
            }
        }
    }
    drop(to_writer);
    let written = writer
        .await
        .map_err(|e| PassError::Fatal(format!("the database writer failed: {e}")))?;
    report.customers_succeeded = written.succeeded;
    report.customers_failed = fetch_failed + written.failed;
    report.changes = written.changes;
    report.rows_written = written.rows_written;
    let counters = shared.client.counters();
    report.api_requests = counters.requests;
    report.throttled = counters.throttled;
    report.retries = counters.retries;
    if let Some(message) = fatal {
        return Err(PassError::Fatal(message));
    }
    report.status = if interrupted {
        report.error = Some("stopped by a signal before every customer was synced".into());
        RunStatus::Interrupted
    } else if report.customers_failed > 0 {
        RunStatus::Partial
    } else {
        RunStatus::Succeeded
    };
    Ok(())
}

/// What the writer did.
#[derive(Debug, Default)]
struct Written {
    succeeded: u64,
    failed: u64,
    changes: u64,
    rows_written: u64,
}

/// Stores fetched customers as they come, as many at once as are waiting (up to
/// [`WRITE_BATCH`]). A batch that fails is stored again one customer at a time, so one bad
/// customer fails alone.
async fn write_all(pool: PgPool, run_id: Uuid, mut rx: mpsc::Receiver<store::Fetched>) -> Written {
    let mut written = Written::default();
    let mut batch = Vec::with_capacity(WRITE_BATCH);
    while rx.recv_many(&mut batch, WRITE_BATCH).await > 0 {
        match store::store_batch(&pool, run_id, &batch).await {
            Ok(outcomes) => record_outcomes(&outcomes, &mut written),
            Err(e) if batch.len() > 1 => {
                tracing::warn!(error = %e, customers = batch.len(), "a batch failed to store; storing its customers one by one");
                for one in &batch {
                    store_one(&pool, run_id, one, &mut written).await;
                }
            }
            Err(e) => {
                record_store_failure(&pool, run_id, &batch[0], &e).await;
                written.failed += 1;
            }
        }
        batch.clear();
    }
    written
}

async fn store_one(pool: &PgPool, run_id: Uuid, one: &store::Fetched, written: &mut Written) {
    match store::store_batch(pool, run_id, std::slice::from_ref(one)).await {
        Ok(outcomes) => record_outcomes(&outcomes, written),
        Err(e) => {
            record_store_failure(pool, run_id, one, &e).await;
            written.failed += 1;
        }
    }
}

fn record_outcomes(outcomes: &[store::StoreOutcome], written: &mut Written) {
    for o in outcomes {
        written.succeeded += 1;
        written.changes += o.events.len() as u64;
        written.rows_written += o.rows_written;
        for e in &o.events {
            tracing::info!(
                customer_id = %o.customer,
                entity = e.entity,
                entity_id = %e.entity_id,
                kind = e.kind,
                field = e.field,
                old = e.old.as_deref(),
                new = e.new.as_deref(),
                "change"
            );
        }
    }
}

async fn record_store_failure(pool: &PgPool, run_id: Uuid, one: &store::Fetched, e: &sqlx::Error) {
    let message = format!("storing the customer's data failed (nothing was written): {e}");
    tracing::warn!(customer_id = %one.customer, error = %message, "customer not stored");
    if let Err(e2) = store::record_customer_failure(
        pool,
        run_id,
        one.customer,
        one.attempt_started,
        "store",
        None,
        None,
        None,
        &message,
    )
    .await
    {
        tracing::error!(error = %e2, "could not record the customer's failure");
    }
}

/// Fetches one customer; on success the result goes to the writer.
async fn sync_customer(shared: Arc<Shared>, customer: ListedCustomer) -> CustomerResult {
    let attempt_started = Utc::now();
    let subs = shared
        .client
        .subscriptions(customer.id, customer.mpn_id.as_deref());
    let services = async {
        if shared.fetch_managed_services {
            shared.client.managed_services(customer.id).await.map(Some)
        } else {
            Ok(None)
        }
    };
    let (subs, services) = tokio::join!(subs, services);
    match (subs, services) {
        (Ok(subscriptions), Ok(services)) => CustomerResult::Fetched(store::Fetched {
            customer: customer.id,
            attempt_started,
            subscriptions,
            services,
        }),
        (Err(e), _) => {
            fetch_failed(&shared, &customer, attempt_started, "get_subscriptions", &e).await
        }
        (_, Err(e)) => {
            fetch_failed(
                &shared,
                &customer,
                attempt_started,
                "get_managed_services",
                &e,
            )
            .await
        }
    }
}

async fn fetch_failed(
    shared: &Shared,
    customer: &ListedCustomer,
    attempt_started: chrono::DateTime<Utc>,
    operation: &str,
    error: &ApiError,
) -> CustomerResult {
    let message = error.to_string();
    tracing::warn!(operation, error = %message, "customer not synced; its stored data is kept");
    let ctx = error.context();
    if let Err(e) = store::record_customer_failure(
        &shared.pool,
        shared.run_id,
        customer.id,
        attempt_started,
        operation,
        ctx.and_then(|c| c.http_status),
        ctx.and_then(|c| c.code.as_deref()),
        ctx.map(|c| c.request_id.as_str()).filter(|r| !r.is_empty()),
        &message,
    )
    .await
    {
        tracing::error!(error = %e, "could not record the customer's failure");
    }
    if error.is_fatal() {
        CustomerResult::Fatal(message)
    } else {
        CustomerResult::Failed
    }
}
