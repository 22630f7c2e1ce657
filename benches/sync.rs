//! `cargo bench --bench sync`: the real sync path against the in-process simulator and a real
//! PostgreSQL database, measured against the physical bounds (latency × requests / concurrency,
//! requests / rate budget, zero writes when nothing changed).
//!
//! Customers: 10,000 unless `--customers N` (after `--`) or `PCSYNC_BENCH_CUSTOMERS` says
//! otherwise. Prints a table and writes `target/bench/sync.json`.
//!
//! Scenarios A–E run each pass as `pcsync run --once`, a child process of its own against the
//! in-process simulator: its CPU time and peak RSS (from wait4) are pcsync's alone. F ("a day")
//! runs its 24 passes in-process on the clock it moves (a child could not share it); its CPU
//! time is the process's minus the simulator thread's, its peak RSS the whole process's. W
//! measures the store alone, in-process. Q asks `pcsync_bi.license_counts_daily` for a year of
//! daily counts over a year of history written in SQL.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context as _, Result, bail};
use pcsync::config::{Settings, Sources};
use pcsync::partner_center::PartnerCenterClient;
use pcsync::partner_center::fields::FieldValue;
use pcsync::pgserver::PgServer;
use pcsync::simulator::{
    Change, Endpoint, Knobs, SEED_CUSTOMER_ID, SEED_MPN_ID, SimConfig, Simulator,
};
use pcsync::sync::customers::ListedCustomer;
use pcsync::sync::diff::Scope;
use pcsync::sync::resource::SUBSCRIPTION_FIELDS;
use pcsync::sync::{self, PassChoice, Trigger, store};
use serde_json::json;
use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection, PgConnection, PgPool};
use uuid::Uuid;

const LATENCY_MS: u64 = 50;
/// What `pcsync run --once` may hold at its peak for 10,000 customers (scenarios A–E).
const PEAK_RSS_MIB: f64 = 64.0;
const CONCURRENCY: usize = 64;
/// Scenario B's R is scaled so that the rate bound is this many seconds: long enough that
/// the rate, not this 2-core machine's CPU, is what binds (at 10,000 customers and 3 requests
/// each, 750 requests/s).
const RATE_BOUND_SECS: f64 = 40.0;

/// `--only A,C,W` (or `PCSYNC_BENCH_ONLY`): the scenarios to run; C and D need A's load.
fn wanted(scenario: &str) -> bool {
    let args: Vec<String> = std::env::args().collect();
    let list = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1).cloned())
        .or_else(|| std::env::var("PCSYNC_BENCH_ONLY").ok());
    match list {
        None => true,
        Some(l) => l
            .split(',')
            .any(|x| x.trim().eq_ignore_ascii_case(scenario)),
    }
}

fn customers_wanted() -> u32 {
    let args: Vec<String> = std::env::args().collect();
    let from_flag = args
        .iter()
        .position(|a| a == "--customers")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok());
    from_flag
        .or_else(|| {
            std::env::var("PCSYNC_BENCH_CUSTOMERS")
                .ok()
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(10_000)
}

// ---- process measurements (Linux /proc) -----------------------------------------------------

fn ticks_per_second() -> f64 {
    // CLK_TCK is 100 on every Linux this runs on; getconf would say so.
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// utime + stime of a /proc stat file, in seconds.
fn cpu_seconds(stat_path: &str) -> f64 {
    let Ok(text) = std::fs::read_to_string(stat_path) else {
        return 0.0;
    };
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let after = text.rsplit_once(')').map(|(_, a)| a).unwrap_or_default();
    let fields: Vec<&str> = after.split_whitespace().collect();
    let utime: f64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    let stime: f64 = fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    (utime + stime) / ticks_per_second()
}

fn peak_rss_mib() -> f64 {
    let text = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    text.lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

fn reset_peak_rss() {
    // Linux: writing 5 to clear_refs resets VmHWM to the current RSS.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

struct SimThread {
    sim: Arc<Simulator>,
    /// With several partner tenants on the server: every tenant's view, `sim` first.
    tenants: Vec<Arc<Simulator>>,
    tid: String,
    _stop: std::sync::mpsc::Sender<()>,
}

impl SimThread {
    fn cpu(&self) -> f64 {
        cpu_seconds(&format!("/proc/self/task/{}/stat", self.tid))
    }
}

fn start_simulator(config: SimConfig) -> Result<SimThread> {
    start_simulators(vec![config])
}

/// One simulator thread serving a partner tenant per config (one server, as Partner Center).
fn start_simulators(configs: Vec<SimConfig>) -> Result<SimThread> {
    let (tx, rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    std::thread::Builder::new()
        .name("simulator".into())
        .spawn(move || {
            let tid = std::fs::read_link("/proc/thread-self")
                .ok()
                .and_then(|p| p.file_name().map(|f| f.to_string_lossy().to_string()))
                .unwrap_or_default();
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = tx.send(Err(e.to_string()));
                    return;
                }
            };
            rt.block_on(async move {
                let started = if configs.len() == 1 {
                    match configs.into_iter().next() {
                        Some(one) => Simulator::start(one).await.map(|s| vec![s]),
                        None => Ok(Vec::new()),
                    }
                } else {
                    Simulator::start_tenants(configs, 0).await
                };
                match started {
                    Ok(sims) => {
                        let sims: Vec<Arc<Simulator>> = sims.into_iter().map(Arc::new).collect();
                        let _ = tx.send(Ok((sims, tid)));
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e.to_string()));
                        return;
                    }
                }
                // Serve until the benchmark ends.
                let _ = tokio::task::spawn_blocking(move || stop_rx.recv()).await;
            });
        })?;
    let (tenants, tid) = rx.recv()?.map_err(|e| anyhow::anyhow!("simulator: {e}"))?;
    let sim = tenants
        .first()
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("simulator: no tenant"))?;
    Ok(SimThread {
        sim,
        tenants,
        tid,
        _stop: stop_tx,
    })
}

// ---- databases ----------------------------------------------------------------------------------

struct BenchDb {
    pool: PgPool,
    url: String,
    name: String,
    admin: String,
}

async fn fresh_db(server: &PgServer) -> Result<BenchDb> {
    let name = format!("pcsync_bench_{}", Uuid::new_v4().simple());
    let admin = server.admin_url();
    let mut conn = PgConnection::connect(&admin).await?;
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await?;
    conn.close().await?;
    let url = server.database_url(&name);
    let pool = PgPoolOptions::new()
        .max_connections(16)
        .connect(&url)
        .await?;
    pcsync::db::migrate(&pool).await?;
    Ok(BenchDb {
        pool,
        url,
        name,
        admin,
    })
}

impl BenchDb {
    async fn drop_db(self) -> Result<()> {
        self.pool.close().await;
        let mut conn = PgConnection::connect(&self.admin).await?;
        sqlx::query(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        ))
        .execute(&mut conn)
        .await?;
        Ok(())
    }
}

/// Newest writing transaction id in a table: rows written later have a larger xmin.
async fn xmin_mark(pool: &PgPool, table: &str) -> Result<i64> {
    Ok(sqlx::query_scalar(&format!(
        "SELECT coalesce(max(xmin::text::bigint), 0) FROM pcsync.{table}"
    ))
    .fetch_one(pool)
    .await?)
}

async fn written_since(pool: &PgPool, table: &str, mark: i64) -> Result<i64> {
    Ok(sqlx::query_scalar(&format!(
        "SELECT count(*) FROM pcsync.{table} WHERE xmin::text::bigint > $1"
    ))
    .bind(mark)
    .fetch_one(pool)
    .await?)
}

/// Every table a pass may write, the run ledger last (one row per pass, always).
const TABLES: [&str; 7] = [
    "customers",
    "subscriptions",
    "managed_services",
    "subscription_history",
    "change_events",
    "sync_errors",
    "sync_runs",
];

// ---- scenarios ----------------------------------------------------------------------------------

#[derive(Default, Clone, serde::Serialize)]
struct Row {
    /// The kind of pass the scenario runs; full when not said.
    #[serde(skip)]
    choice: Option<PassChoice>,
    scenario: String,
    setting: String,
    bound: String,
    target: String,
    wall_s: f64,
    bound_s: Option<f64>,
    ratio: Option<f64>,
    requests: u64,
    throttled: u64,
    retries: u64,
    failed_customers: u64,
    cpu_s: f64,
    simulator_cpu_s: f64,
    peak_rss_mib: f64,
    rows_written: HashMap<String, i64>,
    events: u64,
    met: bool,
    note: String,
    /// F: the requests of the day's one full pass.
    #[serde(skip_serializing_if = "Option::is_none")]
    full_pass_requests: Option<u64>,
    /// F: the largest lag per kind of change, in hours, from the moment Partner Center shows
    /// it to the pass that stores it.
    #[serde(skip_serializing_if = "Option::is_none")]
    lag_hours: Option<BTreeMap<String, f64>>,
    /// F: changes per kind that no pass of the day stored.
    #[serde(skip_serializing_if = "Option::is_none")]
    missed_at_end: Option<BTreeMap<String, u64>>,
    /// F: changes shown within their lag bound before the day's last pass and not stored yet
    /// (the next passes store them; not missed).
    #[serde(skip_serializing_if = "Option::is_none")]
    in_flight_at_end: Option<BTreeMap<String, u64>>,
}

/// The settings of a pass against `sim`, its customer file and `db`.
fn settings_for(
    sim: &Simulator,
    csv: &std::path::Path,
    db: &BenchDb,
    rpm: u32,
    concurrency: usize,
) -> Result<Settings> {
    Ok(Settings::load(&Sources {
        file: None,
        env: env_for(sim, csv, db, rpm, concurrency),
    })?)
}

fn env_for(
    sim: &Simulator,
    csv: &std::path::Path,
    db: &BenchDb,
    rpm: u32,
    concurrency: usize,
) -> HashMap<String, String> {
    let mut env: HashMap<String, String> = sim.env_vars().into_iter().collect();
    env.insert("PCSYNC__DATABASE__URL".into(), db.url.clone());
    env.insert(
        "PCSYNC__CUSTOMERS__FILE".into(),
        csv.to_string_lossy().to_string(),
    );
    env.insert(
        "PCSYNC__PARTNER_CENTER__REQUESTS_PER_MINUTE".into(),
        rpm.to_string(),
    );
    env.insert(
        "PCSYNC__PARTNER_CENTER__MAX_CONCURRENCY".into(),
        concurrency.to_string(),
    );
    env.insert("PCSYNC__DATABASE__MAX_CONNECTIONS".into(), "16".into());
    env
}

struct Bench {
    server: PgServer,
    sim: SimThread,
    csv: PathBuf,
    customers: u32,
}

impl Bench {
    /// The environment of a `pcsync run --once` against the simulator and `db`.
    fn settings(
        &self,
        db: &BenchDb,
        rpm: u32,
        concurrency: usize,
    ) -> Result<HashMap<String, String>> {
        Ok(env_for(&self.sim.sim, &self.csv, db, rpm, concurrency))
    }

    /// One pass, measured: wall, pcsync CPU, peak RSS, rows written. The pass is
    /// `pcsync run --once` in a process of its own, so its CPU time and peak RSS are pcsync's
    /// alone, not the in-process simulator's.
    async fn measured_pass(
        &self,
        db: &BenchDb,
        env: &HashMap<String, String>,
        row: &mut Row,
    ) -> Result<PassNumbers> {
        let mut marks = Vec::new();
        for t in TABLES {
            marks.push(xmin_mark(&db.pool, t).await?);
        }
        self.sim.sim.reset_stats();
        let sim0 = self.sim.cpu();
        let started = Instant::now();
        let mut args = vec!["run", "--once"];
        match row.choice.unwrap_or(PassChoice::Full) {
            PassChoice::Full => args.push("--full"),
            PassChoice::Incremental => args.push("--incremental"),
            PassChoice::Auto => {}
        }
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_pcsync"))
            .args(&args)
            .env_clear()
            .envs(env)
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("RUST_LOG", "warn")
            .env("PCSYNC__LOG__PROGRESS_SECS", "0")
            .stdout(std::process::Stdio::null())
            .spawn()
            .context("start pcsync run --once")?;
        let pid = child.id();
        let (code, usage) = tokio::task::spawn_blocking(move || wait_with_usage(pid)).await??;
        row.wall_s = started.elapsed().as_secs_f64();
        if !matches!(code, 0 | 2) {
            bail!("pcsync run --once exited with {code}");
        }
        row.cpu_s = usage.cpu_s;
        row.simulator_cpu_s = self.sim.cpu() - sim0;
        row.peak_rss_mib = usage.peak_rss_mib;
        let report = PassNumbers::of_last_run(&db.pool).await?;
        row.requests = report.api_requests;
        row.throttled = report.throttled;
        row.retries = report.retries;
        row.failed_customers = report.customers_failed;
        row.events = report.changes;
        for (t, mark) in TABLES.iter().zip(marks) {
            row.rows_written
                .insert(t.to_string(), written_since(&db.pool, t, mark).await?);
        }
        if let (Some(bound), wall) = (row.bound_s, row.wall_s) {
            row.ratio = Some(wall / bound);
        }
        Ok(report)
    }
}

/// What a pass recorded in its `sync_runs` row.
struct PassNumbers {
    api_requests: u64,
    throttled: u64,
    retries: u64,
    customers_failed: u64,
    changes: u64,
    /// Change events of subscriptions (the others: managed services, licence counts).
    subscription_events: u64,
    attributed: u64,
}

impl PassNumbers {
    async fn of_last_run(pool: &PgPool) -> Result<PassNumbers> {
        let (run_id, api_requests, throttled, retries, customers_failed, changes): (
            Uuid,
            i32,
            i32,
            i32,
            i32,
            i32,
        ) = sqlx::query_as(
            "SELECT run_id, api_requests, throttled_responses, retries, customers_failed,
                    changes_detected
             FROM pcsync.sync_runs ORDER BY started_at DESC LIMIT 1",
        )
        .fetch_one(pool)
        .await?;
        let attributed: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pcsync.change_events WHERE run_id = $1 AND changed_by IS NOT NULL",
        )
        .bind(run_id)
        .fetch_one(pool)
        .await?;
        let subscription_events: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pcsync.change_events WHERE run_id = $1 AND entity = 'subscription'",
        )
        .bind(run_id)
        .fetch_one(pool)
        .await?;
        let n = |x: i32| u64::try_from(x).unwrap_or(0);
        Ok(PassNumbers {
            api_requests: n(api_requests),
            throttled: n(throttled),
            retries: n(retries),
            customers_failed: n(customers_failed),
            changes: n(changes),
            attributed: u64::try_from(attributed).unwrap_or(0),
            subscription_events: u64::try_from(subscription_events).unwrap_or(0),
        })
    }
}

/// A child's exit code and what it used.
struct Usage {
    cpu_s: f64,
    peak_rss_mib: f64,
}

/// Waits for the child `pid`: its CPU time from wait4(2), its peak RSS from the kernel's
/// high-water mark (`VmHWM` in /proc/PID/status), read every 10 ms while it runs. wait4's
/// `ru_maxrss` cannot be used: it keeps the high-water mark of the process before its exec, a
/// copy of this benchmark with its in-process simulator.
fn wait_with_usage(pid: u32) -> Result<(i32, Usage)> {
    let status_path = format!("/proc/{pid}/status");
    let pid = libc::pid_t::try_from(pid)?;
    let mut hwm_kib = 0u64;
    loop {
        if let Some(kib) = std::fs::read_to_string(&status_path).ok().and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        }) {
            hwm_kib = hwm_kib.max(kib);
        }
        let mut status: libc::c_int = 0;
        // SAFETY: an all-zero rusage is a valid value of the plain C struct; wait4 fills it.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: `pid` is a child of this process that nobody else waits for; the pointers
        // are to live locals.
        let waited = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
        if waited == 0 {
            std::thread::sleep(std::time::Duration::from_millis(10));
            continue;
        }
        if waited != pid {
            bail!("wait4: {}", std::io::Error::last_os_error());
        }
        let code = if libc::WIFEXITED(status) {
            libc::WEXITSTATUS(status)
        } else {
            128 + libc::WTERMSIG(status)
        };
        let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        return Ok((
            code,
            Usage {
                cpu_s: secs(usage.ru_utime) + secs(usage.ru_stime),
                peak_rss_mib: hwm_kib as f64 / 1024.0,
            },
        ));
    }
}

async fn run() -> Result<Vec<Row>> {
    let customers = customers_wanted();
    let server = tokio::task::spawn_blocking(PgServer::find_or_start).await??;
    let sim = start_simulator(SimConfig {
        customers,
        subscriptions_per_customer: 10,
        managed_services_per_customer: 5,
        ..SimConfig::default()
    })?;
    let dir = std::env::temp_dir().join(format!("pcsync-bench-{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir)?;
    let csv = dir.join("customers.csv");
    std::fs::write(&csv, sim.sim.customers_csv())?;
    let bench = Bench {
        server,
        sim,
        csv,
        customers,
    };
    // Subscriptions, managed services and subscribed SKUs: three requests per customer.
    let requests = 3.0 * f64::from(customers);
    let mut rows = Vec::new();

    // D runs last of the passes: its mutation makes the in-process simulator keep the changed
    // customers, memory that would otherwise count in the later passes' peak RSS.
    let mut loaded = None;
    if wanted("A") || wanted("C") || wanted("D") || wanted("E") {
        let (db, first) = latency_and_no_change(&bench, requests).await?;
        rows.extend(first);
        loaded = Some(db);
    }
    if wanted("B") {
        rows.push(rate_bound(&bench, requests, 1.0).await?);
    }
    if wanted("B'") {
        rows.push(rate_bound(&bench, requests, 1.2).await?);
    }
    bench.sim.sim.set_knobs(Knobs::default());
    if let Some(db) = loaded {
        // E before D: D's changes would be in the activity log E reads.
        if wanted("E") {
            rows.push(incremental(&bench, &db).await?);
        }
        if wanted("D") {
            rows.push(one_percent_changed(&bench, &db).await?);
        }
        db.drop_db().await?;
    }
    if wanted("W") {
        eprintln!("write path: first load from memory, against COPY ...");
        rows.extend(write_path(&bench).await?);
    }
    if wanted("F") {
        rows.push(a_day(&bench.server, customers).await?);
    }
    if wanted("Q") {
        eprintln!("Q: a year of daily license counts ...");
        rows.push(daily_counts(&bench.server, customers).await?);
    }
    if wanted("T") {
        rows.push(several_tenants(&bench.server, customers).await?);
    }
    let _ = std::fs::remove_dir_all(&dir);
    // pcsync's own memory (a process of its own) for 10,000 customers.
    for r in rows.iter_mut().filter(|r| {
        ["A", "B", "C", "D", "E"]
            .iter()
            .any(|p| r.scenario.starts_with(p))
    }) {
        r.met = r.met && r.peak_rss_mib < PEAK_RSS_MIB;
        r.target = format!("{}; pcsync's peak RSS < {PEAK_RSS_MIB} MiB", r.target);
    }
    Ok(rows)
}

/// A, then C on the database A loaded, which is handed back for D.
async fn latency_and_no_change(bench: &Bench, requests: f64) -> Result<(BenchDb, Vec<Row>)> {
    let customers = bench.customers;
    let mut rows = Vec::new();
    // A: latency-bound, first load into an empty database.
    eprintln!("A: latency-bound pass over {customers} customers ...");
    bench.sim.sim.set_knobs(Knobs {
        latency_ms: LATENCY_MS,
        ..Knobs::default()
    });
    let db_a = fresh_db(&bench.server).await?;
    let mut a = Row {
        scenario: "A latency-bound".into(),
        setting: format!(
            "simulator latency {LATENCY_MS} ms, no rate limit, max_concurrency {CONCURRENCY}"
        ),
        bound: "requests × 50 ms / 64".into(),
        target: "wall ≤ 1.25 × bound".into(),
        bound_s: Some(requests * LATENCY_MS as f64 / 1000.0 / CONCURRENCY as f64),
        ..Row::default()
    };
    let settings = bench.settings(&db_a, 1_000_000, CONCURRENCY)?;
    bench.measured_pass(&db_a, &settings, &mut a).await?;
    a.met = a.ratio.is_some_and(|r| r <= 1.25) && a.failed_customers == 0;
    rows.push(a);

    // C: the same again, nothing changed: nothing may be written.
    eprintln!("C: second pass over unchanged data ...");
    bench.sim.sim.set_knobs(Knobs::default());
    let mut c = Row {
        scenario: "C no change".into(),
        setting: "second pass over unchanged data (no latency)".into(),
        bound: "zero rows written".into(),
        target: "0 rows in every table but the run's own sync_runs row, 0 events".into(),
        ..Row::default()
    };
    let settings = bench.settings(&db_a, 1_000_000, CONCURRENCY)?;
    bench.measured_pass(&db_a, &settings, &mut c).await?;
    // Nothing but the pass's own row in the run ledger.
    c.met = c
        .rows_written
        .iter()
        .all(|(t, n)| *n == i64::from(t == "sync_runs"))
        && c.events == 0;
    rows.push(c);

    // C': the metrics cost nothing measurable: the no-change pass with metrics off and on
    // (written to a textfile at the end, as for node_exporter), alternated three times.
    if wanted("C'") || wanted("C") {
        eprintln!("C': no-change passes with metrics off and on, alternated three times ...");
        let textfile =
            std::env::temp_dir().join(format!("pcsync-bench-{}.prom", Uuid::new_v4().simple()));
        let (mut off, mut on) = (Vec::new(), Vec::new());
        let mut peak_rss: f64 = 0.0;
        for _ in 0..3 {
            for with_metrics in [false, true] {
                let mut env = bench.settings(&db_a, 1_000_000, CONCURRENCY)?;
                if with_metrics {
                    env.insert(
                        "PCSYNC__METRICS__TEXTFILE".into(),
                        textfile.to_string_lossy().to_string(),
                    );
                }
                let mut r = Row::default();
                bench.measured_pass(&db_a, &env, &mut r).await?;
                peak_rss = peak_rss.max(r.peak_rss_mib);
                if with_metrics {
                    on.push(r.cpu_s)
                } else {
                    off.push(r.cpu_s)
                }
            }
        }
        let written = std::fs::read_to_string(&textfile).unwrap_or_default();
        let _ = std::fs::remove_file(&textfile);
        let median = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let (m_off, m_on) = (median(&mut off), median(&mut on));
        let ratio = m_on / m_off;
        rows.push(Row {
            scenario: "C' metrics cost".into(),
            setting: "the no-change pass, metrics off and on (textfile), alternated 3 times".into(),
            bound: "median pcsync CPU without metrics".into(),
            target: "median CPU with metrics ≤ 1.05 × without".into(),
            cpu_s: m_on,
            peak_rss_mib: peak_rss,
            bound_s: Some(m_off),
            ratio: Some(ratio),
            met: ratio <= 1.05 && written.contains("pcsync_passes_total{"),
            note: format!(
                "CPU s without: {off:.2?}, with: {on:.2?}; medians {m_off:.2} and {m_on:.2} s ({ratio:.3} ×)"
            ),
            ..Row::default()
        });
    }

    Ok((db_a, rows))
}

/// E: 1 % of customers changed by partner operations (one subscription's quantity each), then
/// one incremental pass. It must ask only for the log and the changed customers, record one
/// event per change with who made it, and leave nothing for a full pass to find.
async fn incremental(bench: &Bench, db: &BenchDb) -> Result<Row> {
    eprintln!("E: 1 % of customers changed by partner operations, incremental pass ...");
    let ids = bench.sim.sim.customer_ids();
    let mut changed = 0u64;
    for id in ids.iter().step_by(100) {
        let Some(c) = bench.sim.sim.customer(*id) else {
            continue;
        };
        let Some(sub) = c
            .subscriptions
            .iter()
            .find(|s| s["partnerId"] == SEED_MPN_ID)
        else {
            continue;
        };
        let quantity = sub["quantity"].as_i64().unwrap_or(1);
        bench.sim.sim.apply(Change::SetSubscriptionField {
            customer_id: *id,
            subscription_id: sub["id"].as_str().unwrap_or_default().to_string(),
            field: "quantity".into(),
            value: json!(quantity + 1),
        })?;
        changed += 1;
    }
    let full_requests = 3 * u64::from(bench.customers);
    let mut row = Row {
        choice: Some(PassChoice::Incremental),
        scenario: "E incremental (1 % of customers changed by partner operations)".into(),
        setting: format!(
            "{changed} customers changed, one subscription each, through the partner's app; one incremental pass"
        ),
        bound: "log pages + 3 × changed customers".into(),
        target: "requests ≤ log pages + 3 × changed + 1 %, ≤ 2.5 % of a full pass; the events a full pass would record".into(),
        ..Row::default()
    };
    let settings = bench.settings(db, 1_000_000, CONCURRENCY)?;
    let report = bench.measured_pass(db, &settings, &mut row).await?;
    let log_pages = bench.sim.sim.stats().total(Endpoint::AuditRecords);
    let bound = log_pages + 3 * changed;
    let allowed = bound + bound.div_ceil(100);
    // What a full pass finds after it: nothing, if the incremental pass missed nothing.
    let mut check = Row::default();
    let full = bench.measured_pass(db, &settings, &mut check).await?;
    row.bound_s = None;
    row.met = report.api_requests <= allowed
        && (report.api_requests as f64) <= 0.025 * full_requests as f64
        && report.subscription_events == changed
        && report.attributed == changed
        && full.changes == 0
        && report.customers_failed == 0;
    row.note = format!(
        "{} requests ({log_pages} log pages + {} customer requests) against {allowed} allowed and {full_requests} for a full pass ({:.2} %); {} subscription events for {changed} changes (and {} of the licence counts that follow them), {} attributed to who made them; a full pass afterwards found {} more",
        report.api_requests,
        report.api_requests.saturating_sub(log_pages),
        100.0 * report.api_requests as f64 / full_requests as f64,
        report.subscription_events,
        report.changes - report.subscription_events,
        report.attributed,
        full.changes
    );
    Ok(row)
}

/// D: 1 % of subscriptions changed: exactly those written.
async fn one_percent_changed(bench: &Bench, db_a: &BenchDb) -> Result<Row> {
    eprintln!("D: 1 % of subscriptions changed ...");
    let mutations = bench.sim.sim.mutate(
        std::env::var("PCSYNC_BENCH_D_FRACTION")
            .ok()
            .and_then(|f| f.parse().ok())
            .unwrap_or(0.01),
        2026,
    );
    // Only our partner's subscriptions are fetched (?mpn_id=), so only those can be seen.
    let visible: Vec<_> = mutations
        .iter()
        .filter(|m| {
            bench
                .sim
                .sim
                .customer(m.customer_id)
                .and_then(|c| {
                    c.subscriptions
                        .iter()
                        .find(|s| s["id"] == m.entity_id.as_str())
                        .map(|s| s["partnerId"] == SEED_MPN_ID)
                })
                .unwrap_or(false)
        })
        .collect();
    let mut d = Row {
        scenario: "D 1 % mutation".into(),
        setting: format!(
            "{} subscription fields changed, {} of them on the synced partner's subscriptions",
            mutations.len(),
            visible.len()
        ),
        bound: "the changed rows".into(),
        target: format!("{} subscription rows and events", visible.len()),
        ..Row::default()
    };
    let settings = bench.settings(db_a, 1_000_000, CONCURRENCY)?;
    let numbers = bench.measured_pass(db_a, &settings, &mut d).await?;
    let subs_written = d.rows_written.get("subscriptions").copied().unwrap_or(-1);
    d.met = subs_written == visible.len() as i64
        && numbers.subscription_events == visible.len() as u64
        && d.rows_written.get("managed_services") == Some(&0)
        && d.rows_written.get("subscription_history").copied() == Some(2 * visible.len() as i64);
    d.note = "history: one version closed and one opened per change".into();
    Ok(d)
}

/// B (`factor` 1) and B' (`factor` 1.2): the simulator grants R per minute, pcsync is
/// configured with `factor` × R, R scaled by [`RATE_BOUND_SECS`]. First load each time.
async fn rate_bound(bench: &Bench, requests: f64, factor: f64) -> Result<Row> {
    let r = ((requests * 60.0 / RATE_BOUND_SECS) as u32).clamp(60, 1_000_000);
    let ours = (f64::from(r) * factor) as u32;
    let over = ours > r;
    eprintln!(
        "{}: pcsync at {ours}/min against {r}/min ...",
        if over { "B'" } else { "B" }
    );
    bench.sim.sim.set_knobs(Knobs {
        requests_per_minute: Some(r),
        ..Knobs::default()
    });
    let db = fresh_db(&bench.server).await?;
    let mut row = Row {
        scenario: if over {
            "B' over-budget"
        } else {
            "B rate-bound"
        }
        .into(),
        setting: format!("simulator budget {r}/min, pcsync configured with {ours}/min"),
        bound: "requests / R".into(),
        target: if over {
            "throttled < 2 % of requests, no customer failed"
        } else {
            "wall ≤ 1.05 × bound, zero 429s"
        }
        .into(),
        bound_s: Some(requests / (f64::from(r) / 60.0)),
        ..Row::default()
    };
    let settings = bench.settings(&db, ours, CONCURRENCY)?;
    bench.measured_pass(&db, &settings, &mut row).await?;
    row.met = row.failed_customers == 0
        && if over {
            (row.throttled as f64) < 0.02 * row.requests as f64
        } else {
            row.ratio.is_some_and(|x| x <= 1.05) && row.throttled == 0
        };
    db.drop_db().await?;
    Ok(row)
}

/// First load of every customer's fetched data, already in memory, through the real store
/// (batches of 64 customers, one atomic statement each, as the sync's writer does), against a
/// plain COPY of the same subscription rows into a table of the same shape.
async fn write_path(bench: &Bench) -> Result<Vec<Row>> {
    let ids = bench.sim.sim.customer_ids();
    let db = fresh_db(&bench.server).await?;
    // Fetched beforehand through the real client (only its pager can vouch that a list is
    // complete), all partners' subscriptions; the timing below covers the store alone.
    let settings = settings_for(&bench.sim.sim, &bench.csv, &db, 1_000_000, CONCURRENCY)?;
    let client = Arc::new(
        PartnerCenterClient::new(
            &settings.partner_center,
            settings.auth.credentials()?,
            None,
            Uuid::new_v4(),
        )
        .await?,
    );
    let mut data: Vec<store::CustomerSnapshot> = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(64) {
        let mut fetches = tokio::task::JoinSet::new();
        for id in chunk {
            let (client, id) = (client.clone(), *id);
            fetches.spawn(async move {
                let subs = client
                    .subscriptions(id, None, pcsync::sync::resource::Subscription::from_raw)
                    .await?;
                let services = client
                    .managed_services(id, pcsync::sync::resource::ManagedService::from_raw)
                    .await?;
                Ok::<_, pcsync::partner_center::ApiError>(store::CustomerSnapshot {
                    customer: id,
                    attempt_started: chrono::Utc::now(),
                    scope: Scope::AllPartners,
                    subscriptions: subs,
                    services: Some(services),
                    skus: None,
                    first_look: None,
                })
            });
        }
        while let Some(fetched) = fetches.join_next().await {
            data.push(fetched??);
        }
    }
    let total_subs: usize = data.iter().map(|d| d.subscriptions.len()).sum();
    let listed: Vec<ListedCustomer> = ids
        .iter()
        .map(|id| ListedCustomer {
            id: *id,
            mpn_id: None,
            name: None,
            domain: None,
            relationship: None,
        })
        .collect();
    let mut conn = db.pool.acquire().await?;
    store::upsert_customers(&mut conn, "default", "file", &listed, chrono::Utc::now()).await?;
    let run_id = Uuid::new_v4();
    sqlx::query("INSERT INTO pcsync.sync_runs (run_id, trigger) VALUES ($1, 'benchmark')")
        .bind(run_id)
        .execute(&mut *conn)
        .await?;
    // As the sync's writer does: batches of up to 64 customers, one statement each.
    let started = Instant::now();
    for chunk in data.chunks(64) {
        store::store_batch(&mut conn, "default", run_id, chrono::Utc::now(), chunk).await?;
    }
    drop(conn);
    let ours = started.elapsed().as_secs_f64();

    // COPY baseline: the same subscription rows, encoded beforehand, into a same-shaped table.
    sqlx::query("CREATE TABLE pcsync.bench_copy (LIKE pcsync.subscriptions INCLUDING ALL)")
        .execute(&db.pool)
        .await?;
    let mut csv = csv::Writer::from_writer(Vec::new());
    // COPY's text for a value: a text[] is an array literal, everything else as events show it.
    let copy_text = |v: &Option<FieldValue>| match v {
        None => String::new(),
        Some(FieldValue::TextList(l)) => format!(
            "{{{}}}",
            l.iter()
                .map(|x| format!("\"{}\"", x.replace('\\', "\\\\").replace('"', "\\\"")))
                .collect::<Vec<_>>()
                .join(",")
        ),
        Some(other) => other.to_text(),
    };
    for f in &data {
        for s in f.subscriptions.iter() {
            let mut record = vec![f.customer.to_string(), s.id.clone()];
            record.extend(s.values().iter().map(copy_text));
            record.push(s.raw.get().to_string());
            csv.write_record(&record)?;
        }
    }
    let bytes = csv.into_inner().map_err(|e| anyhow::anyhow!("csv: {e}"))?;
    let mut conn = db.pool.acquire().await?;
    let started = Instant::now();
    let mut copy = conn
        .copy_in_raw(
            &format!(
                "COPY pcsync.bench_copy (customer_id, subscription_id, {}, raw) FROM STDIN (FORMAT csv)",
                SUBSCRIPTION_FIELDS
                    .iter()
                    .map(|f| f.column)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )
        .await?;
    copy.send(bytes.as_slice()).await?;
    let copied = copy.finish().await?;
    let copy_s = started.elapsed().as_secs_f64();
    drop(conn);
    if copied as usize != total_subs {
        bail!("COPY wrote {copied} rows, expected {total_subs}");
    }
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM pcsync.subscriptions")
        .fetch_one(&db.pool)
        .await?;
    if stored as usize != total_subs {
        bail!("the store wrote {stored} subscriptions, expected {total_subs}");
    }
    db.drop_db().await?;
    let ours_rate = total_subs as f64 / ours;
    let copy_rate = total_subs as f64 / copy_s;
    Ok(vec![Row {
        scenario: "W write path".into(),
        setting: format!(
            "{total_subs} subscriptions (+ managed services, history, events) of {} customers, first load, 64 customers a statement",
            data.len()
        ),
        bound: "COPY of the same rows".into(),
        target: "≥ 100,000 subscription rows/s, ≤ 3 × COPY".into(),
        wall_s: ours,
        bound_s: Some(copy_s),
        ratio: Some(ours / copy_s),
        met: ours_rate >= 100_000.0 && ours / copy_s <= 3.0,
        note: format!("{ours_rate:.0} rows/s against COPY's {copy_rate:.0} rows/s"),
        ..Row::default()
    }])
}

fn print(rows: &[Row], customers: u32) {
    println!("\npcsync sync benchmark, {customers} customers\n");
    println!(
        "| scenario | wall s | bound s | ratio | requests | 429s | retries | pcsync CPU s | simulator CPU s | peak RSS MiB | rows written (customers/subs/services/history/events/errors/runs) | events | target | met |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        let w = |t: &str| {
            r.rows_written
                .get(t)
                .map(|n| n.to_string())
                .unwrap_or_else(|| "-".into())
        };
        println!(
            "| {} | {:.2} | {} | {} | {} | {} | {} | {:.2} | {:.2} | {:.1} | {} | {} | {} | {} |",
            r.scenario,
            r.wall_s,
            r.bound_s
                .map(|b| format!("{b:.2}"))
                .unwrap_or_else(|| "-".into()),
            r.ratio
                .map(|x| format!("{x:.3}"))
                .unwrap_or_else(|| "-".into()),
            r.requests,
            r.throttled,
            r.retries,
            r.cpu_s,
            r.simulator_cpu_s,
            r.peak_rss_mib,
            TABLES.map(w).join("/"),
            r.events,
            r.target,
            if r.met { "yes" } else { "NO" }
        );
    }
    for r in rows {
        if !r.note.is_empty() || !r.setting.is_empty() {
            println!("\n{}: {}. {}", r.scenario, r.setting, r.note);
        }
    }
}

fn main() -> Result<()> {
    if std::env::args().any(|a| a == "--list") {
        // `cargo bench -- --list` and test runners probing benches: nothing to list.
        return Ok(());
    }
    // The runtime `pcsync run` uses.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let customers = customers_wanted();
    let rows = runtime.block_on(run()).context("the benchmark failed")?;
    print(&rows, customers);
    let dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/target")))
        .join("bench");
    std::fs::create_dir_all(&dir)?;
    let out = dir.join("sync.json");
    std::fs::write(
        &out,
        serde_json::to_string_pretty(&json!({
            "customers": customers,
            "machine": {"cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)},
            "scenarios": rows,
        }))?,
    )?;
    println!("\nwritten to {}", out.display());
    Ok(())
}

// ---- F: a day ----------------------------------------------------------------------------------

/// A change Partner Center shows from `at`, and where pcsync stores it.
struct Expected {
    kind: &'static str,
    subscription: String,
    /// The `change_events.field` that records it.
    field: &'static str,
    at: chrono::DateTime<chrono::Utc>,
}

/// F: 10,000 customers synced at midnight, then a day of hourly passes (the 02:00 one full) on
/// the one clock, moved an hour at a time, while partner users change 1 % of the customers
/// (activity records, spread over the hours), Microsoft rolls monthly terms over, renews and
/// expires annual ones and moves billing cycles on (no records, at an hour of the day after the
/// date), and suspends 0.05 % of the subscriptions (no record, no date).
async fn a_day(server: &PgServer, customers: u32) -> Result<Row> {
    use chrono::{Duration, NaiveTime, Utc};
    use pcsync::clock::Clock;
    use pcsync::simulator::{Actor, dates};

    // The simulator's first day is the day before: terms that ended on it are processed
    // during the day measured.
    let day0 = Utc::now().date_naive();
    let midnight = |d: chrono::NaiveDate| d.and_time(NaiveTime::MIN).and_utc();
    let start = midnight(day0 + Duration::days(1));
    let end = start + Duration::days(1);
    let clock = Clock::at(midnight(day0));
    let sim = start_simulator(SimConfig {
        customers,
        subscriptions_per_customer: 10,
        managed_services_per_customer: 5,
        clock: clock.clone(),
        ..SimConfig::default()
    })?;
    let dir = std::env::temp_dir().join(format!("pcsync-bench-f-{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir)?;
    let csv = dir.join("customers.csv");
    std::fs::write(&csv, sim.sim.customers_csv())?;
    let db = fresh_db(server).await?;
    let mut settings = settings_for(&sim.sim, &csv, &db, 1_000_000, CONCURRENCY)?;
    settings.clock = clock.clone();
    let pass = || {
        sync::run_pass(
            &settings,
            &db.pool,
            Trigger::Benchmark,
            PassChoice::Auto,
            tokio_util::sync::CancellationToken::new(),
        )
    };
    eprintln!("F: {customers} customers synced at midnight ...");
    clock.set(start);
    pass().await?;

    // What Microsoft will change today, on the synced partner's subscriptions (?mpn_id=).
    let ids = sim.sim.customer_ids();
    let mut expected = Vec::new();
    let mut visible = Vec::new();
    for id in &ids {
        // The seed customer's objects are the seed pages' examples, verbatim: Microsoft's
        // dates are not played on them.
        let Some(c) = sim
            .sim
            .customer(*id)
            .filter(|c| c.id.to_string() != SEED_CUSTOMER_ID)
        else {
            continue;
        };
        for sub in c.subscriptions {
            let text = |k: &str| sub.get(k).and_then(|v| v.as_str()).unwrap_or_default();
            if text("partnerId") != SEED_MPN_ID {
                continue;
            }
            let sid = text("id").to_string();
            let term = text("termDuration").to_string();
            let active = text("status") == "active";
            let quantity = sub.get("quantity").and_then(|v| v.as_i64()).unwrap_or(1);
            let mut later = sub.clone();
            for change in dates::apply(&mut later, end) {
                let (kind, field) = match change.field {
                    "commitmentEndDate" if term == "P1M" => {
                        ("monthly roll-over", "commitment_end_date")
                    }
                    "commitmentEndDate" => ("annual renewal", "commitment_end_date"),
                    "status" => ("expiry", "status"),
                    "refundableQuantity" => ("refund window closed", "refundable_quantity_details"),
                    _ => ("new billing cycle", "billing_cycle_end_date"),
                };
                expected.push(Expected {
                    kind,
                    subscription: sid.clone(),
                    field,
                    at: change.at,
                });
            }
            if active {
                visible.push((*id, sid, quantity));
            }
        }
    }
    // Partner-made changes (1 % of customers) and Microsoft-side suspensions (0.05 % of
    // subscriptions), each at an hour of the day.
    let mut rng = pcsync::simulator::data::Rng::new(2026);
    let mut partner: Vec<Vec<(Uuid, String, i64)>> = vec![Vec::new(); 24];
    let mut suspensions: Vec<Vec<(Uuid, String)>> = vec![Vec::new(); 24];
    let mut changed_customers = std::collections::HashSet::new();
    let partner_target = (customers as usize).div_ceil(100);
    let suspension_target = (visible.len() as f64 * 0.0005).ceil() as usize;
    while changed_customers.len() < partner_target {
        let (c, sid, q) = &visible[rng.below(visible.len() as u64) as usize];
        if changed_customers.insert(*c) {
            partner[rng.below(24) as usize].push((*c, sid.clone(), q + 1));
        }
    }
    for _ in 0..suspension_target {
        let (c, sid, _) = &visible[rng.below(visible.len() as u64) as usize];
        if expected.iter().any(|e| e.subscription == *sid) {
            continue; // keep the kinds apart: a suspended term is not renewed
        }
        suspensions[rng.below(24) as usize].push((*c, sid.clone()));
    }

    eprintln!(
        "F: 24 hourly passes: {} partner changes, {} date-driven changes, {} suspensions ...",
        partner_target,
        expected.len(),
        suspensions.iter().map(Vec::len).sum::<usize>()
    );
    let started = Instant::now();
    reset_peak_rss();
    let sim0 = sim.cpu();
    let cpu0 = cpu_seconds("/proc/self/stat") - sim0;
    let mut requests = 0;
    let mut full_pass_requests = None;
    let mut runs = Vec::new();
    let mut failed = 0;
    for hour in 0..24i64 {
        // Between the passes: the changes of the hour before each one.
        let between = start + Duration::hours(hour) + Duration::minutes(30);
        clock.set(between);
        for (c, sid, q) in &partner[hour as usize] {
            sim.sim.apply(Change::SetSubscriptionField {
                customer_id: *c,
                subscription_id: sid.clone(),
                field: "quantity".into(),
                value: json!(q),
            })?;
            expected.push(Expected {
                kind: "partner-made",
                subscription: sid.clone(),
                field: "quantity",
                at: between,
            });
        }
        for (c, sid) in &suspensions[hour as usize] {
            sim.sim.apply_as(
                Change::SetSubscriptionField {
                    customer_id: *c,
                    subscription_id: sid.clone(),
                    field: "status".into(),
                    value: json!("suspended"),
                },
                &Actor::System,
            )?;
            expected.push(Expected {
                kind: "Microsoft-side suspension",
                subscription: sid.clone(),
                field: "status",
                at: between,
            });
        }
        clock.set(start + Duration::hours(hour + 1));
        let report = pass().await?;
        requests += report.api_requests;
        failed += report.customers_failed;
        if report.kind == sync::PassKind::Full {
            full_pass_requests = Some(report.api_requests);
        }
        runs.push(report.run_id);
    }
    let wall = started.elapsed().as_secs_f64();
    let sim1 = sim.cpu();
    let cpu = cpu_seconds("/proc/self/stat") - sim1 - cpu0;

    // Where each change was stored: the first event of its field at or after it showed.
    let events: Vec<(String, String, chrono::DateTime<Utc>)> = sqlx::query_as(
        "SELECT entity_id, field, detected_at FROM pcsync.change_events
         WHERE run_id = ANY ($1) AND entity = 'subscription' AND kind = 'changed'
         ORDER BY detected_at",
    )
    .bind(&runs)
    .fetch_all(&db.pool)
    .await?;
    let mut by_key: HashMap<(String, String), Vec<chrono::DateTime<Utc>>> = HashMap::new();
    for (sid, field, at) in events {
        by_key.entry((sid, field)).or_default().push(at);
    }
    let full_at = start + Duration::hours(2);
    let mut lag_hours: BTreeMap<String, f64> = BTreeMap::new();
    let mut missed: BTreeMap<String, u64> = BTreeMap::new();
    let mut in_flight: BTreeMap<String, u64> = BTreeMap::new();
    let mut missed_unexpectedly = 0;
    let last_pass = end;
    for e in &expected {
        let stored = by_key
            .get(&(e.subscription.clone(), e.field.to_string()))
            .and_then(|ats| ats.iter().find(|t| **t >= e.at));
        match stored {
            Some(t) => {
                let lag = (*t - e.at).num_seconds() as f64 / 3600.0;
                let worst = lag_hours.entry(e.kind.to_string()).or_insert(0.0);
                *worst = worst.max(lag);
            }
            None => {
                // Still within its lag bound when the day ended: the next passes store it.
                let bound = match e.kind {
                    "partner-made" => Duration::hours(1),
                    "Microsoft-side suspension" => Duration::days(1),
                    _ => Duration::hours(6),
                };
                if e.kind == "Microsoft-side suspension" && e.at > full_at {
                    *missed.entry(e.kind.to_string()).or_insert(0) += 1;
                } else if last_pass - e.at < bound {
                    *in_flight.entry(e.kind.to_string()).or_insert(0) += 1;
                } else {
                    if std::env::var_os("PCSYNC_BENCH_DEBUG").is_some() {
                        eprintln!(
                            "missed {} {} {} at {}",
                            e.kind, e.subscription, e.field, e.at
                        );
                    }
                    *missed.entry(e.kind.to_string()).or_insert(0) += 1;
                    missed_unexpectedly += 1;
                }
            }
        }
    }
    // What `pcsync status` costs after the day (freshness from the run ledger, no
    // per-customer rows).
    let status_started = Instant::now();
    let status =
        pcsync::status::read(&db.pool, std::time::Duration::from_secs(7200), &clock, None).await?;
    let status_ms = status_started.elapsed().as_secs_f64() * 1000.0;
    let full = full_pass_requests.unwrap_or(0);
    let ratio = requests as f64 / full.max(1) as f64;
    let lag = |k: &str| lag_hours.get(k).copied().unwrap_or(0.0);
    let date_lag = [
        "monthly roll-over",
        "annual renewal",
        "expiry",
        "new billing cycle",
        "refund window closed",
    ]
    .iter()
    .map(|k| lag(k))
    .fold(0.0, f64::max);
    let met = full > 0
        && ratio <= 1.3
        && lag("partner-made") <= 1.0
        && date_lag <= 6.0
        && missed_unexpectedly == 0
        && failed == 0;
    let list = |m: &BTreeMap<String, u64>| {
        if m.is_empty() {
            "nothing".to_string()
        } else {
            m.iter()
                .map(|(k, n)| format!("{n} {k}"))
                .collect::<Vec<_>>()
                .join(", ")
        }
    };
    let note = format!(
        "the day cost {requests} requests, {ratio:.3} × the full pass's {full}; largest lag {:.2} h for partner-made changes, {date_lag:.2} h for date-driven ones (by kind: {}); missed at the end: {}; still within their lag bound at midnight (shown in the last hours, stored by the next passes): {}",
        lag("partner-made"),
        lag_hours
            .iter()
            .map(|(k, h)| format!("{k} {h:.2} h"))
            .collect::<Vec<_>>()
            .join(", "),
        list(&missed),
        list(&in_flight),
    ) + &format!(
        "; pcsync status afterwards: {status_ms:.0} ms, oldest confirmation {}",
        status
            .oldest_confirmed_at
            .map_or("none".to_string(), |t| t.to_rfc3339())
    );
    let row = Row {
        scenario: "F a day".into(),
        setting: format!(
            "{customers} customers synced at 00:00, 24 hourly passes on the pass's clock (02:00 full); {} partner changes, {} date-driven changes, {} Microsoft-side suspensions",
            partner_target,
            expected
                .iter()
                .filter(|e| e.kind != "partner-made" && e.kind != "Microsoft-side suspension")
                .count(),
            suspensions.iter().map(Vec::len).sum::<usize>()
        ),
        bound: "one full pass's requests".into(),
        target: "day ≤ 1.3 × full pass; partner lag ≤ 1 h; date lag ≤ 6 h; nothing missed but suspensions after the full pass".into(),
        wall_s: wall,
        ratio: Some(ratio),
        requests,
        failed_customers: failed,
        cpu_s: cpu,
        simulator_cpu_s: sim1 - sim0,
        peak_rss_mib: peak_rss_mib(),
        met,
        note,
        full_pass_requests,
        lag_hours: Some(lag_hours),
        missed_at_end: Some(missed),
        in_flight_at_end: Some(in_flight),
        ..Row::default()
    };
    db.drop_db().await?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(row)
}

/// Q: a year of daily counts for `customers` customers from `pcsync_bi.license_counts_daily`,
/// as a BI chart asks them (licenses per day; per day and offer), over a year of history: 8.5
/// subscriptions a customer on 12 offers, 5 % suspended, each week 1 % of them with a new
/// quantity (a new version). The history is written in SQL (what passes would have written
/// over the year, at once); the query is run 5 times, the median counts.
async fn daily_counts(server: &PgServer, customers: u32) -> Result<Row> {
    let db = fresh_db(server).await?;
    let subscriptions = u64::from(customers) * 17 / 2;
    let started = Instant::now();
    // One session: the temporary table lives in it.
    let mut conn = db.pool.acquire().await?;
    for statement in [
        "INSERT INTO pcsync.sync_runs (run_id, started_at, finished_at, status, trigger, kind)
         VALUES ('00000000-0000-0000-0000-000000000001', now() - interval '365 days',
                 now() - interval '365 days' + interval '1 hour', 'succeeded', 'benchmark', 'full')",
        "INSERT INTO pcsync.customers (customer_id, source, company_name)
         SELECT md5('c' || i)::uuid, 'file', 'Customer ' || i FROM generate_series(1, $1::bigint) i",
        "CREATE TEMP TABLE q_subs AS
         SELECT md5('c' || (i % $1::bigint + 1))::uuid AS customer_id, 's' || i AS subscription_id,
                'OFFER' || (i % 12) AS offer_id, 'Offer ' || (i % 12) AS offer_name,
                CASE WHEN i % 20 = 0 THEN 'suspended' ELSE 'active' END AS status,
                1 + i % 300 AS quantity
         FROM generate_series(1, $2::bigint) i",
        "INSERT INTO pcsync.subscriptions
             (customer_id, subscription_id, offer_id, offer_name, status, quantity, raw, first_seen_at, changed_at)
         SELECT customer_id, subscription_id, offer_id, offer_name, status, quantity, '{}',
                now() - interval '365 days', now() - interval '365 days'
         FROM q_subs",
        "INSERT INTO pcsync.subscription_history
             (customer_id, subscription_id, valid_from, valid_to, run_id, offer_id, offer_name, status, quantity)
         SELECT s.customer_id, s.subscription_id, v.valid_from, v.valid_to,
                '00000000-0000-0000-0000-000000000001', s.offer_id, s.offer_name, s.status, s.quantity + v.n
         FROM (
             SELECT subscription_id, at AS valid_from, lead(at) OVER w AS valid_to, row_number() OVER w AS n
             FROM (
                 SELECT subscription_id, now() - interval '365 days' AS at FROM q_subs
                 UNION ALL
                 SELECT s.subscription_id, now() - interval '365 days' + w * interval '7 days' + interval '3 hours'
                 FROM q_subs s CROSS JOIN generate_series(1, 52) w
                 WHERE abs(hashtext(s.subscription_id || w)) % 100 = 0
             ) b
             WINDOW w AS (PARTITION BY subscription_id ORDER BY at)
         ) v JOIN q_subs s USING (subscription_id)",
        "ANALYZE",
    ] {
        let mut q = sqlx::query(statement);
        if statement.contains("$1") {
            q = q.bind(i64::from(customers));
        }
        if statement.contains("$2") {
            q = q.bind(subscriptions as i64);
        }
        q.execute(&mut *conn).await?;
    }
    drop(conn);
    let versions: i64 = sqlx::query_scalar("SELECT count(*) FROM pcsync.subscription_history")
        .fetch_one(&db.pool)
        .await?;
    eprintln!(
        "Q: {versions} history versions written in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let queries = [
        (
            "per day",
            "SELECT day, sum(licenses) FROM pcsync_bi.license_counts_daily
             WHERE day > current_date - 365 GROUP BY day",
        ),
        (
            "per day and offer",
            "SELECT day, offer_name, sum(licenses) FROM pcsync_bi.license_counts_daily
             WHERE day > current_date - 365 GROUP BY day, offer_name",
        ),
    ];
    let mut medians = Vec::new();
    let mut answered = Vec::new();
    for (what, sql) in queries {
        let mut times = Vec::new();
        let mut rows = 0;
        for _ in 0..5 {
            let t = Instant::now();
            rows = sqlx::query(sql).fetch_all(&db.pool).await?.len();
            times.push(t.elapsed().as_secs_f64());
        }
        times.sort_by(f64::total_cmp);
        medians.push((what, times[2]));
        answered.push(rows);
    }
    let day_rows: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pcsync_bi.license_counts_daily WHERE day > current_date - 365",
    )
    .fetch_one(&db.pool)
    .await?;
    db.drop_db().await?;
    // The target is the year's daily counts (per day); per day and offer is shown beside it.
    let per_day = medians[0].1;
    if answered[0] < 365 {
        bail!("Q: {} days answered, expected 365", answered[0]);
    }
    Ok(Row {
        scenario: "Q a year of daily counts".into(),
        setting: format!(
            "{customers} customers, {subscriptions} subscriptions, {versions} history versions over 365 days; {day_rows} rows of license_counts_daily in the year"
        ),
        bound: "2 s".into(),
        target: "a year of daily counts (licenses per day) for 10,000 customers < 2 s".into(),
        wall_s: per_day,
        bound_s: Some(2.0),
        ratio: Some(per_day / 2.0),
        met: per_day < 2.0,
        note: medians
            .iter()
            .map(|(what, t)| format!("{what}: median {t:.2} s of 5"))
            .collect::<Vec<_>>()
            .join("; "),
        ..Row::default()
    })
}

// ---- T: several partner tenants ------------------------------------------------------------------

/// Partner tenants of scenario T.
const T_TENANTS: u32 = 4;

/// Per tenant: customers, subscriptions, managed services and subscribed SKUs, and a digest
/// of their rows, as stored.
async fn tenant_rows(pool: &PgPool) -> Result<Vec<(String, i64, i64, i64, i64, String)>> {
    Ok(sqlx::query_as(
        "SELECT p.name,
            (SELECT count(*) FROM pcsync.customers c WHERE c.tenant = p.name),
            (SELECT count(*) FROM pcsync.subscriptions s WHERE s.tenant = p.name),
            (SELECT count(*) FROM pcsync.managed_services m WHERE m.tenant = p.name),
            (SELECT count(*) FROM pcsync.subscribed_skus k WHERE k.tenant = p.name),
            (SELECT md5(string_agg(s.customer_id::text || s.subscription_id || s.raw::text, ','
                                   ORDER BY s.customer_id, s.subscription_id))
             FROM pcsync.subscriptions s WHERE s.tenant = p.name)
         FROM pcsync.partner_tenants p
         WHERE EXISTS (SELECT 1 FROM pcsync.sync_runs r WHERE r.tenant = p.name)
         ORDER BY p.name",
    )
    .fetch_all(pool)
    .await?)
}

/// T: `T_TENANTS` partner tenants of `customers / T_TENANTS` customers each, from one
/// `[[tenants]]` configuration in one `pcsync run --once`, each tenant with its own budget R
/// (scaled as in B, so one tenant's rate bound is [`RATE_BOUND_SECS`]); then the same tenants
/// as separate single-tenant passes into another database, for the rows to compare.
async fn several_tenants(server: &PgServer, customers: u32) -> Result<Row> {
    let each = (customers / T_TENANTS).max(1);
    let requests = 3.0 * f64::from(each);
    let r = ((requests * 60.0 / RATE_BOUND_SECS) as u32).clamp(60, 1_000_000);
    eprintln!("T: {T_TENANTS} tenants x {each} customers, each at {r}/min ...");
    let configs = (0..T_TENANTS)
        .map(|n| SimConfig {
            tenant: pcsync::simulator::SimTenant::numbered(n),
            seed: u64::from(n) + 1,
            customers: each,
            subscriptions_per_customer: 10,
            managed_services_per_customer: 5,
            knobs: Knobs {
                requests_per_minute: Some(r),
                ..Knobs::default()
            },
            ..SimConfig::default()
        })
        .collect();
    let sims = start_simulators(configs)?;
    let dir = std::env::temp_dir().join(format!("pcsync-bench-t-{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir)?;
    let names: Vec<String> = (1..=T_TENANTS).map(|n| format!("t{n}")).collect();
    let mut file = String::from("[partner_center]\nmax_attempts = 5\n");
    let mut env: HashMap<String, String> = HashMap::new();
    for (name, sim) in names.iter().zip(&sims.tenants) {
        let csv = dir.join(format!("{name}.csv"));
        std::fs::write(&csv, sim.customers_csv())?;
        file.push_str(&format!(
            "\n[[tenants]]\nname = {name:?}\ncustomers.file = {:?}\npartner_center.requests_per_minute = {r}\npartner_center.max_concurrency = {CONCURRENCY}\n",
            csv.to_string_lossy()
        ));
        env.extend(sim.tenant_env_vars(name));
    }
    let config = dir.join("pcsync.toml");
    std::fs::write(&config, file)?;
    let db = fresh_db(server).await?;
    env.insert("PCSYNC__DATABASE__URL".into(), db.url.clone());
    env.insert("PCSYNC__DATABASE__MAX_CONNECTIONS".into(), "16".into());
    env.insert(
        "PCSYNC__PARTNER_CENTER__BASE_URL".into(),
        sims.sim.base_url(),
    );
    env.insert("PCSYNC__AUTH__AUTHORITY".into(), sims.sim.authority());
    let config_arg = config.to_string_lossy().to_string();
    let mut row = Row {
        scenario: format!("T {T_TENANTS} tenants side by side"),
        setting: format!(
            "{T_TENANTS} tenants x {each} customers in one [[tenants]] process, each with its own budget {r}/min"
        ),
        bound: "one tenant's requests / R".into(),
        target: "wall ≤ 1.1 × one tenant's rate bound, zero 429s, the rows of separate passes"
            .into(),
        bound_s: Some(requests / (f64::from(r) / 60.0)),
        ..Row::default()
    };
    let sim0 = sims.cpu();
    let started = Instant::now();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_pcsync"))
        .args(["--config", &config_arg, "run", "--once", "--full"])
        .env_clear()
        .envs(&env)
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("RUST_LOG", "warn")
        .env("PCSYNC__LOG__PROGRESS_SECS", "0")
        .stdout(std::process::Stdio::null())
        .spawn()
        .context("start pcsync run --once with [[tenants]]")?;
    let pid = child.id();
    let (code, usage) = tokio::task::spawn_blocking(move || wait_with_usage(pid)).await??;
    row.wall_s = started.elapsed().as_secs_f64();
    if code != 0 {
        bail!("pcsync run --once with [[tenants]] exited with {code}");
    }
    row.cpu_s = usage.cpu_s;
    row.simulator_cpu_s = sims.cpu() - sim0;
    row.peak_rss_mib = usage.peak_rss_mib;
    let (requests_made, throttled, retries, failed, changes): (i64, i64, i64, i64, i64) =
        sqlx::query_as(
            "SELECT sum(api_requests), sum(throttled_responses), sum(retries),
                    sum(customers_failed), sum(changes_detected)
             FROM pcsync.sync_runs",
        )
        .fetch_one(&db.pool)
        .await?;
    row.requests = u64::try_from(requests_made).unwrap_or(0);
    row.throttled = u64::try_from(throttled).unwrap_or(0);
    row.retries = u64::try_from(retries).unwrap_or(0);
    row.failed_customers = u64::try_from(failed).unwrap_or(0);
    row.events = u64::try_from(changes).unwrap_or(0);
    let (overlap,): (f64,) = sqlx::query_as(
        "SELECT extract(epoch FROM min(finished_at) - max(started_at))::float8 FROM pcsync.sync_runs",
    )
    .fetch_one(&db.pool)
    .await?;
    row.ratio = row.bound_s.map(|b| row.wall_s / b);
    let together = tenant_rows(&db.pool).await?;
    for t in TABLES {
        row.rows_written.insert(
            t.to_string(),
            sqlx::query_scalar(&format!("SELECT count(*) FROM pcsync.{t}"))
                .fetch_one(&db.pool)
                .await?,
        );
    }
    db.drop_db().await?;

    // The same tenants one pass each, unthrottled (only their rows are compared).
    for sim in &sims.tenants {
        sim.set_knobs(Knobs::default());
    }
    let apart_db = fresh_db(server).await?;
    for (name, sim) in names.iter().zip(&sims.tenants) {
        let mut one: HashMap<String, String> = sim.env_vars().into_iter().collect();
        one.insert("PCSYNC__DATABASE__URL".into(), apart_db.url.clone());
        one.insert("PCSYNC__AUTH__TENANT_NAME".into(), name.clone());
        one.insert(
            "PCSYNC__CUSTOMERS__FILE".into(),
            dir.join(format!("{name}.csv"))
                .to_string_lossy()
                .to_string(),
        );
        one.insert(
            "PCSYNC__PARTNER_CENTER__REQUESTS_PER_MINUTE".into(),
            "1000000".into(),
        );
        one.insert(
            "PCSYNC__PARTNER_CENTER__MAX_CONCURRENCY".into(),
            CONCURRENCY.to_string(),
        );
        let status = std::process::Command::new(env!("CARGO_BIN_EXE_pcsync"))
            .args(["run", "--once", "--full"])
            .env_clear()
            .envs(&one)
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("RUST_LOG", "warn")
            .env("PCSYNC__LOG__PROGRESS_SECS", "0")
            .stdout(std::process::Stdio::null())
            .status()?;
        if !status.success() {
            bail!("the single-tenant pass of {name} failed: {status}");
        }
    }
    let apart = tenant_rows(&apart_db.pool).await?;
    apart_db.drop_db().await?;
    let _ = std::fs::remove_dir_all(&dir);
    let same = together == apart && together.len() == T_TENANTS as usize;
    row.met = row.ratio.is_some_and(|x| x <= 1.1)
        && row.throttled == 0
        && row.failed_customers == 0
        && same;
    row.note = format!(
        "the {T_TENANTS} runs overlapped for {overlap:.1} s; rows per tenant (customers, subscriptions, services, SKUs, digest) {} those of {T_TENANTS} separate single-tenant passes; {} subscriptions in all",
        if same { "equal" } else { "DIFFER from" },
        together.iter().map(|t| t.2).sum::<i64>()
    );
    Ok(row)
}
