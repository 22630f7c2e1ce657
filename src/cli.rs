//! The command line: `pcsync [--config PATH] <run|migrate|check|...>` and its exit codes.

use std::path::PathBuf;
use tracing::Instrument;

use clap::{Parser, Subcommand};

use crate::config::{Settings, Sources};
use crate::partner_center::{RefreshTokenStore, TokenProvider};
use crate::shutdown::{Shutdown, Signal};
use crate::sync::{self, PassChoice, PassReport, RunStatus, SyncError, Trigger};
use crate::{db, telemetry};

#[derive(Debug, Parser)]
#[command(
    name = "pcsync",
    version,
    about = "Keeps a PostgreSQL copy of what Microsoft Partner Center says each customer owns"
)]
pub struct Cli {
    /// Configuration file (TOML) over the built-in defaults; also PCSYNC_CONFIG.
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Sync on `sync.schedule` until stopped; with --once, one pass and exit.
    Run {
        /// Run one pass now and exit (for an outside cron or a Kubernetes CronJob).
        #[arg(long)]
        once: bool,
        /// With --once: a full pass (every customer), whatever sync.full_schedule says.
        #[arg(long, requires = "once", conflicts_with = "incremental")]
        full: bool,
        /// With --once: an incremental pass (from the activity log) when a watermark allows.
        #[arg(long, requires = "once")]
        incremental: bool,
    },
    /// Apply the database migrations and exit.
    Migrate,
    /// Check the configuration, the database and (when credentials are set) a token.
    Check,
    /// Is the sync healthy? Last passes, failing customers, changes of the last 24 hours,
    /// subscriptions ending within 30 days without auto-renew. A monitoring plugin: exit 0 OK,
    /// 1 WARNING, 2 CRITICAL, 3 UNKNOWN, first line `PCSYNC <STATE> - ... | perfdata`.
    Status {
        /// JSON for scripts instead of tables.
        #[arg(long)]
        json: bool,
        /// Judge one partner tenant (its `auth.tenant_name`); default: every tenant with a
        /// pass, the worst state of theirs.
        #[arg(long, value_name = "NAME")]
        tenant: Option<String>,
    },
    /// Write a self-contained HTML report (opens offline): licenses over time, changes per day,
    /// largest customers, renewal calendar, pass health.
    Report {
        /// Where to write it.
        #[arg(long, default_value = "report.html")]
        out: PathBuf,
        /// One partner tenant's report (its `auth.tenant_name`); default: every tenant, with
        /// a section per tenant.
        #[arg(long, value_name = "NAME")]
        tenant: Option<String>,
    },
    /// Try pcsync with no account: a simulated Partner Center, two passes, a report.
    #[cfg(feature = "simulator")]
    Demo {
        /// Simulated customers.
        #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..=100_000))]
        customers: u32,
    },
    /// Serve a simulated Partner Center on loopback until stopped (Ctrl-C).
    #[cfg(feature = "simulator")]
    Simulate(SimulateArgs),
}

#[cfg(feature = "simulator")]
#[derive(Debug, clap::Args)]
pub struct SimulateArgs {
    /// Port on 127.0.0.1 (0 = any free port).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Number of customers (the seed pages' customer among them), up to 100000.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub customers: u32,
    /// Seed of the generated data: the same seed gives the same customers.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Average subscriptions per customer.
    #[arg(long, default_value_t = 10)]
    pub subscriptions: u32,
    /// Average managed services per customer.
    #[arg(long, default_value_t = 5)]
    pub managed_services: u32,
    /// Latency added to every API response, in milliseconds.
    #[arg(long, default_value_t = 0)]
    pub latency_ms: u64,
    /// Random extra latency, 0 to this many milliseconds.
    #[arg(long, default_value_t = 0)]
    pub jitter_ms: u64,
    /// Rate budget in requests per minute (429 with Retry-After beyond it); unlimited if absent.
    #[arg(long)]
    pub rpm: Option<u32>,
    /// Requests admitted back to back before the rate applies (default rpm/60).
    #[arg(long)]
    pub burst: Option<u32>,
    /// A fault: `KIND[:PROBABILITY][@CUSTOMER_ID]`, KIND one of 500, 503, hang, truncated,
    /// malformed, bom, mfa_required. Repeatable.
    #[arg(long = "fault", value_parser = parse_fault)]
    pub faults: Vec<crate::simulator::FaultRule>,
    /// Lifetime of access tokens, in seconds.
    #[arg(long, default_value_t = 3600)]
    pub token_lifetime_secs: u64,
    /// Write `links.next.uri` of the customer list with the /v1 prefix.
    #[arg(long)]
    pub next_link_v1: bool,
    /// Where to write the customer list CSV (default: pcsync-sim-customers.csv in the
    /// system's temporary directory, not the working directory).
    #[arg(long)]
    pub csv: Option<PathBuf>,
    /// Partner tenants served on the one address (each its own customers, tokens, activity
    /// log and budget; seeds `seed`, `seed + 1`, ..., which share the seed customer). With more
    /// than one, a `[[tenants]]` configuration file is written beside the customer lists.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=16))]
    pub tenants: u32,
}

#[cfg(feature = "simulator")]
fn parse_fault(text: &str) -> Result<crate::simulator::FaultRule, String> {
    crate::simulator::FaultRule::parse(text)
}

pub use crate::exit::Exit;

/// Parses the arguments and runs the command. Usage errors exit 1 (the run could not proceed),
/// so that exit code 2 keeps its one meaning: some customers failed.
pub fn main() -> Exit {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                Exit::Fatal
            } else {
                Exit::Ok
            };
        }
    };
    // The sync mostly waits on the network and the database: one thread does it with less CPU
    // (no wake-ups across threads) and less memory than a pool of workers; measured in
    // `cargo bench --bench sync`. The standalone simulator serves load and gets every core.
    let mut builder = match &cli.command {
        #[cfg(feature = "simulator")]
        Command::Simulate(_) => tokio::runtime::Builder::new_multi_thread(),
        _ => tokio::runtime::Builder::new_current_thread(),
    };
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("pcsync: cannot start the async runtime: {e}");
            return Exit::Fatal;
        }
    };
    runtime.block_on(dispatch(cli))
}

async fn dispatch(cli: Cli) -> Exit {
    let sources = Sources::from_process(cli.config.clone());
    match cli.command {
        Command::Check => check(&sources).await,
        #[cfg(feature = "simulator")]
        Command::Simulate(args) => simulate(args).await,
        #[cfg(feature = "simulator")]
        Command::Demo { customers } => crate::demo::run(customers).await,
        Command::Migrate => {
            let Some(settings) = load(&sources) else {
                return Exit::Fatal;
            };
            migrate(&settings).await
        }
        Command::Report { out, tenant } => {
            let Some(settings) = load(&sources) else {
                return Exit::Fatal;
            };
            report(&settings, &out, tenant.as_deref()).await
        }
        Command::Status { json, tenant } => {
            let Some(settings) = load(&sources) else {
                // A monitoring system reads 3 as "cannot tell".
                println!("PCSYNC UNKNOWN - the configuration is invalid (see the error above)");
                return Exit::Plugin(crate::status::State::Unknown);
            };
            status(&settings, json, tenant.as_deref()).await
        }
        Command::Run {
            once,
            full,
            incremental,
        } => {
            let Some(settings) = load(&sources) else {
                return Exit::Fatal;
            };
            let choice = match (full, incremental) {
                (true, _) => PassChoice::Full,
                (_, true) => PassChoice::Incremental,
                _ => PassChoice::Auto,
            };
            run(&settings, once, choice).await
        }
    }
}

fn load(sources: &Sources) -> Option<Settings> {
    match Settings::load(sources) {
        Ok(s) => {
            telemetry::init(s.log.format);
            Some(s)
        }
        Err(e) => {
            eprintln!("pcsync: configuration error: {e}");
            None
        }
    }
}

async fn migrate(settings: &Settings) -> Exit {
    let pool = match db::connect(&settings.database).await {
        Ok(p) => p,
        Err(e) => {
            tracing::error!(error = %e, "cannot connect");
            return Exit::Fatal;
        }
    };
    match db::migrate(&pool).await {
        Ok(0) => {
            tracing::info!(url = %settings.database.redacted_url(), "schema is up to date; nothing to apply");
            Exit::Ok
        }
        Ok(n) => {
            tracing::info!(url = %settings.database.redacted_url(), applied = n, "migrations applied");
            Exit::Ok
        }
        Err(e) => {
            tracing::error!(error = %e, "migration failed");
            Exit::Fatal
        }
    }
}

/// The exit code for a process stopped by `signal` (130 for SIGINT, 143 for SIGTERM).
fn signal_exit(signal: Option<Signal>) -> Exit {
    match signal {
        Some(Signal::Terminate) => Exit::Terminated,
        _ => Exit::Interrupted,
    }
}

/// The exit code of a finished pass.
pub fn pass_exit(report: &PassReport, signal: Option<Signal>) -> Exit {
    match report.status {
        RunStatus::Succeeded => Exit::Ok,
        RunStatus::Partial => Exit::Partial,
        RunStatus::Failed => Exit::Fatal,
        RunStatus::Interrupted => signal_exit(signal),
    }
}

/// One pass that ends within `sync.shutdown_grace_secs` of a signal: `None` when it had to be
/// left unfinished (its run is then closed as abandoned by the next pass).
async fn bounded_pass(
    settings: &Settings,
    pool: &sqlx::PgPool,
    trigger: Trigger,
    choice: PassChoice,
    shutdown: &Shutdown,
    metrics: &crate::metrics::Metrics,
) -> Option<Result<PassReport, SyncError>> {
    let grace = settings.sync.shutdown_grace;
    let deadline = async {
        shutdown.cancel.cancelled().await;
        tokio::time::sleep(grace).await;
    };
    let result = tokio::select! {
        result = sync::run_pass(settings, pool, trigger, choice, shutdown.cancel.clone()) => result,
        _ = deadline => {
            tracing::error!(
                grace_secs = grace.as_secs(),
                "the pass did not stop within sync.shutdown_grace_secs; exiting without closing its run (the next pass closes it as abandoned)"
            );
            return None;
        }
    };
    if let Ok(report) = &result {
        after_pass(settings, pool, report, metrics, shutdown).await;
    }
    Some(result)
}

/// What follows a pass, run by the command (the pass knows nothing of it): the metrics record
/// it, and the notifier sends its webhook unless pcsync is shutting down (a pass that is
/// shutting down leaves at once; its changes are in the tables).
pub async fn after_pass(
    settings: &Settings,
    pool: &sqlx::PgPool,
    report: &PassReport,
    metrics: &crate::metrics::Metrics,
    shutdown: &Shutdown,
) {
    metrics.observe(pool, report, settings.clock.now()).await;
    if shutdown.cancel.is_cancelled() {
        return;
    }
    crate::notify::after_pass(
        pool,
        &settings.notify,
        &settings.clock,
        settings.partner_center.request_timeout,
        crate::partner_center::retry::Backoff::default(),
        report,
    )
    .instrument(tracing::info_span!("notify", run_id = %report.run_id))
    .await;
}

/// `run --once`: the pass's metrics to the textfile and the Pushgateway, when configured. A
/// failure is logged (the URL without its credentials) and leaves the pass's exit code alone.
async fn deliver_metrics(settings: &Settings, metrics: &crate::metrics::Metrics) {
    let now = settings.clock.now();
    if let Some(path) = &settings.metrics.textfile {
        match metrics.write_textfile(path, now) {
            Ok(()) => tracing::info!(path = %path.display(), "metrics written"),
            Err(e) => tracing::error!(error = %e, "the metrics textfile was not written"),
        }
    }
    if let Some(url) = &settings.metrics.pushgateway_url {
        let shown = crate::metrics::redacted(secrecy::ExposeSecret::expose_secret(url));
        match metrics
            .push(url, settings.partner_center.request_timeout, now)
            .await
        {
            Ok(()) => {
                tracing::info!(pushgateway = %shown, tenants = ?metrics.tenants(), "metrics pushed")
            }
            Err(e) => tracing::error!(error = %e, "the metrics were not pushed"),
        }
    }
}

async fn run(settings: &Settings, once: bool, choice: PassChoice) -> Exit {
    let tenants = settings.tenant_settings();
    let several = !settings.tenants.is_empty();
    // Said first, and no pass is recorded: nothing could have run. With several tenants, a
    // tenant whose settings cannot run is left out (and said so) and the others go on.
    let mut runnable = Vec::new();
    for t in tenants {
        match ready_to_run(&t) {
            Ok(()) => runnable.push(t),
            Err(e) if several => tracing::error!(
                tenant = %t.auth.tenant_name, error = %e,
                "this tenant cannot run a pass: fix its [[tenants]] entry; the other tenants go on"
            ),
            Err(e) => {
                tracing::error!(error = %e, "pcsync cannot run a pass: fix the configuration");
                return Exit::Fatal;
            }
        }
    }
    let left_out = settings.tenant_settings().len() - runnable.len();
    if runnable.is_empty() {
        tracing::error!("no tenant can run a pass: fix the configuration");
        return Exit::Fatal;
    }
    let pool = match db::connect(&settings.database).await {
        Ok(p) => p,
        Err(e) => {
            tracing::error!(error = %e, "cannot connect");
            return Exit::Fatal;
        }
    };
    if let Err(e) = db::prepare_schema(&pool, settings.database.migrate_on_start).await {
        tracing::error!(error = %e, "the database schema is not ready");
        return Exit::Fatal;
    }
    let shutdown = Shutdown::listen();
    let names: Vec<String> = runnable
        .iter()
        .map(|t| t.auth.tenant_name.clone())
        .collect();
    let metrics = crate::metrics::Metrics::new(&names);
    if once {
        // Every tenant's pass at once, each on its own budget; one failing stops no other.
        let mut passes = tokio::task::JoinSet::new();
        for t in runnable {
            let (pool, shutdown, metrics) = (pool.clone(), shutdown.clone(), metrics.clone());
            passes.spawn(async move {
                let span = tracing::info_span!("tenant", tenant = %t.auth.tenant_name);
                once_for(&t, &pool, choice, &shutdown, &metrics)
                    .instrument(span)
                    .await
            });
        }
        let mut exits = Vec::new();
        while let Some(joined) = passes.join_next().await {
            exits.push(joined.unwrap_or(Exit::Fatal));
        }
        deliver_metrics(settings, &metrics).await;
        if left_out > 0 {
            exits.push(Exit::Fatal);
        }
        return worst(&exits);
    }
    if let Some(addr) = settings.metrics.listen {
        let listener = match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, %addr, "cannot listen on metrics.listen");
                return Exit::Fatal;
            }
        };
        if let Err(e) = metrics.refresh(&pool).await {
            tracing::warn!(error = %e, "the metrics could not read the database yet");
        }
        let endpoints = crate::serve::Endpoints {
            metrics: metrics.clone(),
            pool: pool.clone(),
            max_age: settings.status.max_age.unwrap_or_else(|| {
                runnable
                    .iter()
                    .map(|t| crate::status::default_max_age(&t.sync.schedule, chrono::Utc::now()))
                    .max()
                    .unwrap_or_default()
            }),
            clock: settings.clock.clone(),
        };
        let stop = shutdown.cancel.clone();
        tracing::info!(%addr, "serving /metrics, /healthz and /livez");
        tokio::spawn(async move {
            if let Err(e) = crate::serve::serve(listener, endpoints, stop).await {
                tracing::error!(error = %e, "the metrics server stopped");
            }
        });
    }
    // A loop per tenant, each on its own schedule; they end together at a signal.
    let mut loops = tokio::task::JoinSet::new();
    for t in runnable {
        let (pool, shutdown, metrics) = (pool.clone(), shutdown.clone(), metrics.clone());
        loops.spawn(async move {
            let span = tracing::info_span!("tenant", tenant = %t.auth.tenant_name);
            worker_loop(&t, &pool, &shutdown, &metrics)
                .instrument(span)
                .await
        });
    }
    let mut exits = Vec::new();
    while let Some(joined) = loops.join_next().await {
        let exit = joined.unwrap_or(Exit::Fatal);
        if exit != Exit::Ok {
            // A signal, or a pass that would not stop: the others stop too.
            shutdown.cancel.cancel();
        }
        exits.push(exit);
    }
    if shutdown.cancel.is_cancelled() {
        return signal_exit(shutdown.received());
    }
    worst(&exits)
}

/// The exit of several tenants' passes: the most severe (a failure, then a lock held by
/// another pass, then a partial pass), a signal before any.
fn worst(exits: &[Exit]) -> Exit {
    for wanted in [
        Exit::Terminated,
        Exit::Interrupted,
        Exit::Fatal,
        Exit::AlreadyRunning,
        Exit::Partial,
    ] {
        if exits.contains(&wanted) {
            return wanted;
        }
    }
    Exit::Ok
}

/// `run --once` for one tenant: its pass, its exit.
async fn once_for(
    settings: &Settings,
    pool: &sqlx::PgPool,
    choice: PassChoice,
    shutdown: &Shutdown,
    metrics: &crate::metrics::Metrics,
) -> Exit {
    match bounded_pass(settings, pool, Trigger::Once, choice, shutdown, metrics).await {
        None => signal_exit(shutdown.received()),
        Some(Ok(report)) => pass_exit(&report, shutdown.received()),
        Some(Err(e @ SyncError::AlreadyRunning(_))) => {
            tracing::error!("{e}");
            Exit::AlreadyRunning
        }
        Some(Err(e)) => {
            tracing::error!(error = %e, "the pass could not run");
            Exit::Fatal
        }
    }
}

/// The worker for one tenant: a pass at each firing of its schedule until a signal.
async fn worker_loop(
    settings: &Settings,
    pool: &sqlx::PgPool,
    shutdown: &Shutdown,
    metrics: &crate::metrics::Metrics,
) -> Exit {
    loop {
        let now = chrono::Utc::now();
        let Some(next) = settings.sync.schedule.next_after(now) else {
            tracing::info!(schedule = %settings.sync.schedule, "the schedule fires no more; this tenant's worker ends");
            return Exit::Ok;
        };
        tracing::info!(next = %next.to_rfc3339(), schedule = %settings.sync.schedule,
            timezone = %settings.sync.timezone, "waiting for the next pass");
        let wait = (next - now).to_std().unwrap_or_default();
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.cancel.cancelled() => return signal_exit(shutdown.received()),
        }
        // Passes run one after another in this loop, so the worker never overlaps itself; a
        // pass longer than the interval skips the firings it covered.
        match bounded_pass(
            settings,
            pool,
            Trigger::Schedule,
            PassChoice::Auto,
            shutdown,
            metrics,
        )
        .await
        {
            None => return signal_exit(shutdown.received()),
            Some(Ok(_)) => {}
            Some(Err(e @ SyncError::AlreadyRunning(_))) => {
                tracing::warn!("{e}; skipping this firing")
            }
            Some(Err(e)) => {
                tracing::error!(error = %e, "the pass could not run; trying again at the next firing")
            }
        }
        if shutdown.cancel.is_cancelled() {
            return signal_exit(shutdown.received());
        }
    }
}

/// `pcsync report --out PATH`: read-only; 0 when written.
async fn report(settings: &Settings, out: &std::path::Path, tenant: Option<&str>) -> Exit {
    let pool = match db::connect_existing(&settings.database).await {
        Ok(p) => p,
        Err(e) => {
            eprintln!("pcsync report: {e}");
            return Exit::Fatal;
        }
    };
    if !db::schema_current(&pool).await {
        eprintln!("pcsync report: the database has no current pcsync schema: run a pass first");
        return Exit::Fatal;
    }
    if let Some(name) = tenant {
        if let Some(why) = crate::sync::tenant::unknown(&pool, name).await {
            eprintln!("pcsync report: {why}");
            return Exit::Fatal;
        }
    }
    match crate::report::read(&pool, &settings.clock, tenant).await {
        Ok(data) => match std::fs::write(out, crate::report::render(&data)) {
            Ok(()) => {
                println!("report written to {}", out.display());
                Exit::Ok
            }
            Err(e) => {
                eprintln!("pcsync report: cannot write {}: {e}", out.display());
                Exit::Fatal
            }
        },
        Err(e) => {
            eprintln!("pcsync report: {e}");
            Exit::Fatal
        }
    }
}

/// `pcsync status`, as a monitoring plugin: the process exits with the state's code (0 OK,
/// 1 WARNING, 2 CRITICAL, 3 UNKNOWN) whatever went wrong reading it.
async fn status(settings: &Settings, json: bool, tenant: Option<&str>) -> Exit {
    use crate::status::{State, unknown_line};
    let unknown = |why: String| {
        if json {
            let body = serde_json::json!({
                "state": "UNKNOWN", "exit_code": 3, "healthy": false,
                "summary": unknown_line(&why), "reason": why,
            });
            write_stdout(&format!("{body:#}\n"));
        } else {
            write_stdout(&format!("{}\n", unknown_line(&why)));
        }
        Exit::Plugin(State::Unknown)
    };
    let pool = match db::connect_existing(&settings.database).await {
        Ok(p) => p,
        Err(e) => return unknown(format!("cannot read the database: {e}")),
    };
    if !db::schema_current(&pool).await {
        return unknown(format!(
            "the database has no current pcsync schema at {}: run `pcsync migrate` or a pass first",
            settings.database.redacted_url()
        ));
    }
    if let Some(name) = tenant {
        if let Some(why) = crate::sync::tenant::unknown(&pool, name).await {
            return unknown(why);
        }
    }
    // The schedule of the tenant asked about, or the slowest of them all.
    let max_age = settings.status.max_age.unwrap_or_else(|| {
        settings
            .tenant_settings()
            .iter()
            .filter(|t| tenant.is_none_or(|n| t.auth.tenant_name == n))
            .map(|t| crate::status::default_max_age(&t.sync.schedule, chrono::Utc::now()))
            .max()
            .unwrap_or_else(|| {
                crate::status::default_max_age(&settings.sync.schedule, chrono::Utc::now())
            })
    });
    let status = match crate::status::read(&pool, max_age, &settings.clock, tenant).await {
        Ok(s) => s,
        Err(e) => return unknown(format!("cannot read the status: {e}")),
    };
    if json {
        match serde_json::to_string_pretty(&status) {
            Ok(text) => write_stdout(&format!("{text}\n")),
            Err(e) => return unknown(format!("cannot write the status: {e}")),
        }
    } else {
        write_stdout(&crate::status::render(&status));
    }
    Exit::Plugin(status.state)
}

/// The configuration's spelling of the auth mode and customer source.
fn spelled(settings: &Settings) -> (&'static str, &'static str) {
    (
        match settings.auth.mode {
            crate::config::AuthMode::AppUser => "app_user",
            crate::config::AuthMode::AppOnly => "app_only",
        },
        match settings.customers.source {
            crate::config::CustomerSource::File => "file",
            crate::config::CustomerSource::Api => "api",
        },
    )
}

/// What must hold before a pass can start, checked without touching the database: the
/// credentials are complete and, for `customers.source = "file"`, the file can be read.
fn ready_to_run(settings: &Settings) -> Result<(), String> {
    settings.auth.credentials().map_err(|e| e.to_string())?;
    if settings.customers.source == crate::config::CustomerSource::File {
        crate::sync::customers::read_customer_file(
            &settings.customers.file,
            settings.customers.default_mpn_id.as_deref(),
        )
        .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// One line per step, `ok` or `failed` with the reason; exit 0 only when a pass could run.
/// Changes nothing: no database is created, no migration applied, no token stored.
async fn check(sources: &Sources) -> Exit {
    let settings = match Settings::load(sources) {
        Ok(s) => {
            let (mode, source) = spelled(&s);
            let tenants = if s.tenants.is_empty() {
                format!(", tenant \"{}\"", s.auth.tenant_name)
            } else {
                let names: Vec<&str> = s
                    .tenants
                    .iter()
                    .map(|t| t.auth.tenant_name.as_str())
                    .collect();
                format!(", [[tenants]] {}", names.join(", "))
            };
            println!(
                "configuration  ok      auth.mode = \"{mode}\", customers.source = \"{source}\", sync.schedule = \"{}\" ({}), sync.full_schedule = \"{}\"{tenants}",
                s.sync.schedule, s.sync.timezone, s.sync.full_schedule
            );
            s
        }
        Err(e) => {
            println!("configuration  failed  {e}");
            return Exit::Fatal;
        }
    };
    let mut exit = Exit::Ok;
    let mut pool = None;
    match db::connect_existing(&settings.database).await {
        Ok(p) => {
            let version: Result<String, _> = sqlx::query_scalar("SHOW server_version")
                .fetch_one(&p)
                .await;
            match version {
                Ok(v) => {
                    let schema = if db::schema_current(&p).await {
                        "schema current"
                    } else {
                        "schema not current: `pcsync migrate` (or a run) will apply the migrations"
                    };
                    println!(
                        "database       ok      PostgreSQL {v} at {}, {schema}",
                        settings.database.redacted_url()
                    );
                }
                Err(e) => {
                    println!("database       failed  {e}");
                    exit = Exit::Fatal;
                }
            }
            pool = Some(p);
        }
        Err(e) => {
            println!("database       failed  {e}");
            exit = Exit::Fatal;
        }
    }
    let several = !settings.tenants.is_empty();
    for t in settings.tenant_settings() {
        if check_tenant(&t, pool.as_ref(), several).await != Exit::Ok {
            exit = Exit::Fatal;
        }
    }
    exit
}

/// `check`'s customer list and token steps for one tenant (named on each line when there are
/// several).
async fn check_tenant(settings: &Settings, pool: Option<&sqlx::PgPool>, several: bool) -> Exit {
    let tag = if several {
        format!("[{}] ", settings.auth.tenant_name)
    } else {
        String::new()
    };
    let mut exit = Exit::Ok;
    match settings.customers.source {
        crate::config::CustomerSource::File => match crate::sync::customers::read_customer_file(
            &settings.customers.file,
            settings.customers.default_mpn_id.as_deref(),
        ) {
            Ok(list) => println!(
                "customers      ok      {tag}{} customers in {}{}",
                list.customers.len(),
                settings.customers.file.display(),
                if list.problems.is_empty() {
                    String::new()
                } else {
                    format!(
                        " ({} lines skipped or merged; a pass records each in sync_errors)",
                        list.problems.len()
                    )
                }
            ),
            Err(e) => {
                println!("customers      failed  {tag}{e}");
                exit = Exit::Fatal;
            }
        },
        crate::config::CustomerSource::Api => {
            println!(
                "customers      ok      {tag}read from the Partner Center customer list at each pass"
            )
        }
    }
    let creds = match settings.auth.credentials() {
        Ok(c) => c,
        Err(e) => {
            println!("token          failed  {tag}{e}");
            return Exit::Fatal;
        }
    };
    // The stored rotated token is read when the schema exists; it is not written back.
    let store = match pool {
        Some(p) if db::schema_current(p).await => Some(RefreshTokenStore::read_only(p.clone())),
        _ => None,
    };
    let http = crate::partner_center::http_client(settings.partner_center.request_timeout, 1);
    let result = match http {
        Ok(http) => match TokenProvider::new(http, creds, store).await {
            Ok(provider) => provider.token().await.map(|_| provider.mode()),
            Err(e) => Err(e),
        },
        Err(e) => {
            println!("token          failed  {tag}cannot build an HTTP client: {e}");
            return Exit::Fatal;
        }
    };
    match result {
        Ok(mode) => println!(
            "token          ok      {tag}{} token from {}",
            match mode {
                crate::config::AuthMode::AppUser => "App+User",
                crate::config::AuthMode::AppOnly => "App-only",
            },
            settings.auth.authority
        ),
        Err(e) => {
            println!("token          failed  {tag}{e}");
            exit = Exit::Fatal;
        }
    }
    exit
}

#[cfg(feature = "simulator")]
async fn simulate(args: SimulateArgs) -> Exit {
    use crate::simulator::{Knobs, SimConfig, Simulator};
    telemetry::init(crate::config::LogFormat::Text);
    let config = SimConfig {
        seed: args.seed,
        customers: args.customers,
        subscriptions_per_customer: args.subscriptions,
        managed_services_per_customer: args.managed_services,
        access_token_lifetime: std::time::Duration::from_secs(args.token_lifetime_secs.max(1)),
        next_link_with_v1: args.next_link_v1,
        knobs: Knobs {
            latency_ms: args.latency_ms,
            jitter_ms: args.jitter_ms,
            requests_per_minute: args.rpm,
            burst: args.burst,
            faults: args.faults.clone(),
            hang_secs: None,
            customer_list_body: None,
            subscribed_skus_body: None,
        },
        ..SimConfig::default()
    };
    if args.tenants > 1 {
        return simulate_tenants(args, config).await;
    }
    let sim = match Simulator::start_on(config, args.port).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!(
                "pcsync simulate: cannot listen on 127.0.0.1:{}: {e}",
                args.port
            );
            return Exit::Fatal;
        }
    };
    let csv_path = args
        .csv
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join("pcsync-sim-customers.csv"));
    if let Err(e) = std::fs::write(&csv_path, sim.customers_csv()) {
        eprintln!("pcsync simulate: cannot write {}: {e}", csv_path.display());
        return Exit::Fatal;
    }
    let csv = std::fs::canonicalize(&csv_path).unwrap_or(csv_path);
    println!(
        "Partner Center simulator on {} ({} customers, seed {}). Ctrl-C stops it.",
        sim.base_url(),
        args.customers,
        args.seed
    );
    println!("\nPoint pcsync at it (the credentials are the simulator's own):");
    for (k, v) in sim.env_vars() {
        println!("  export {k}={v}");
    }
    println!("  export PCSYNC__CUSTOMERS__FILE={}", csv.display());
    // pcsync's default budget is Partner Center's 500 a minute: a pass over the simulator
    // would crawl for no reason. Match the simulator's budget instead.
    let rpm = args.rpm.unwrap_or(100_000);
    println!(
        "  # the simulator's request budget{}; Partner Center's is 500 a minute",
        if args.rpm.is_some() {
            ""
        } else {
            " is unlimited"
        }
    );
    println!("  export PCSYNC__PARTNER_CENTER__REQUESTS_PER_MINUTE={rpm}");
    println!(
        "\nControl: GET {0}/_sim/stats | POST {0}/_sim/mutate {{\"fraction\":0.01,\"seed\":1}} | POST {0}/_sim/change | GET/PUT {0}/_sim/knobs",
        sim.base_url()
    );
    match crate::shutdown::signal().await {
        crate::shutdown::Signal::Interrupt => Exit::Interrupted,
        crate::shutdown::Signal::Terminate => Exit::Terminated,
    }
}

/// `simulate --tenants N`: N partner tenants on one address, and the `[[tenants]]`
/// configuration that syncs them all from one `pcsync run`.
#[cfg(feature = "simulator")]
async fn simulate_tenants(args: SimulateArgs, config: crate::simulator::SimConfig) -> Exit {
    use crate::simulator::{SimConfig, SimTenant, Simulator};
    let configs: Vec<SimConfig> = (0..args.tenants)
        .map(|n| SimConfig {
            tenant: SimTenant::numbered(n),
            seed: args.seed + u64::from(n),
            ..config.clone()
        })
        .collect();
    let sims = match Simulator::start_tenants(configs, args.port).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!(
                "pcsync simulate: cannot listen on 127.0.0.1:{}: {e}",
                args.port
            );
            return Exit::Fatal;
        }
    };
    let dir = args
        .csv
        .as_ref()
        .and_then(|p| p.parent().map(std::path::Path::to_path_buf))
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(std::env::temp_dir);
    let dir = std::fs::canonicalize(&dir).unwrap_or(dir);
    let rpm = args.rpm.unwrap_or(100_000);
    let mut file = String::from(
        "# The simulator's partner tenants, all synced by one `pcsync run`; their secrets come from\n# the PCSYNC_TENANT_<NAME>__ variables printed beside this file.\n",
    );
    let mut exports = Vec::new();
    for (n, sim) in sims.iter().enumerate() {
        let name = format!("t{}", n + 1);
        let csv = dir.join(format!("pcsync-sim-customers-{name}.csv"));
        if let Err(e) = std::fs::write(&csv, sim.customers_csv()) {
            eprintln!("pcsync simulate: cannot write {}: {e}", csv.display());
            return Exit::Fatal;
        }
        file.push_str(&format!(
            "\n[[tenants]]\nname = {name:?}\ncustomers.file = {:?}\npartner_center.requests_per_minute = {rpm}\n",
            csv.display().to_string()
        ));
        exports.extend(sim.tenant_env_vars(&name));
    }
    let config_path = dir.join("pcsync-sim-tenants.toml");
    if let Err(e) = std::fs::write(&config_path, file) {
        eprintln!(
            "pcsync simulate: cannot write {}: {e}",
            config_path.display()
        );
        return Exit::Fatal;
    }
    let Some(first) = sims.first() else {
        return Exit::Fatal;
    };
    println!(
        "Partner Center simulator on {} for {} partner tenants ({} customers each, seeds {} to {}; they share the seed customer). Ctrl-C stops it.",
        first.base_url(),
        args.tenants,
        args.customers,
        args.seed,
        args.seed + u64::from(args.tenants) - 1
    );
    println!("\nSync them all from one process (the credentials are the simulator's own):");
    println!(
        "  export PCSYNC__PARTNER_CENTER__BASE_URL={}",
        first.base_url()
    );
    println!("  export PCSYNC__AUTH__AUTHORITY={}", first.authority());
    for (k, v) in exports {
        println!("  export {k}={v}");
    }
    println!("  pcsync --config {} run --once", config_path.display());
    println!(
        "\nControl (the first tenant's): GET {0}/_sim/stats | POST {0}/_sim/mutate | GET/PUT {0}/_sim/knobs",
        first.base_url()
    );
    match crate::shutdown::signal().await {
        crate::shutdown::Signal::Interrupt => Exit::Interrupted,
        crate::shutdown::Signal::Terminate => Exit::Terminated,
    }
}

/// Writes a command's output; a reader that went away (`pcsync status | head`) is not an
/// error worth a panic: the exit code still says the status.
fn write_stdout(text: &str) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}
