//! Several partner tenants in one database (issue 20): passes of two tenants run side by side,
//! each sees only its own rows, a customer of both is two rows, and in one `[[tenants]]`
//! process one tenant's failure stops no other.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use common::TestDb;
use common::sim::count;
use pcsync::config::{Settings, Sources};
use pcsync::simulator::{Knobs, SEED_CUSTOMER_ID, SimConfig, SimTenant, Simulator};
use pcsync::sync::{self, PassChoice, RunStatus, Trigger};
use tokio_util::sync::CancellationToken;

/// Two partner tenants on one simulated Partner Center: `a` (seed 1) and `b` (seed 2), which
/// share the seed customer; each request takes `latency_ms`.
struct Two {
    db: TestDb,
    sims: Vec<Simulator>,
    dir: tempfile::TempDir,
}

async fn two_tenants(customers: u32, latency_ms: u64) -> Two {
    let db = TestDb::migrated().await;
    let config = |n: u32| SimConfig {
        tenant: SimTenant::numbered(n),
        seed: u64::from(n) + 1,
        customers,
        knobs: Knobs {
            latency_ms,
            ..Knobs::default()
        },
        ..SimConfig::default()
    };
    let sims = Simulator::start_tenants(vec![config(0), config(1)], 0)
        .await
        .expect("simulator");
    let dir = tempfile::tempdir().expect("dir");
    for (sim, name) in sims.iter().zip(["a", "b"]) {
        std::fs::write(dir.path().join(format!("{name}.csv")), sim.customers_csv()).expect("csv");
    }
    Two { db, sims, dir }
}

impl Two {
    fn csv(&self, name: &str) -> String {
        self.dir
            .path()
            .join(format!("{name}.csv"))
            .to_string_lossy()
            .to_string()
    }

    /// The environment of one process per tenant: `auth.tenant_name` and its credentials.
    fn env(&self, name: &str) -> HashMap<String, String> {
        let sim = &self.sims[usize::from(name == "b")];
        let mut env: HashMap<String, String> = sim.env_vars().into_iter().collect();
        for (k, v) in [
            ("PCSYNC__DATABASE__URL", self.db.url.clone()),
            ("PCSYNC__AUTH__TENANT_NAME", name.to_string()),
            ("PCSYNC__CUSTOMERS__FILE", self.csv(name)),
            (
                "PCSYNC__PARTNER_CENTER__REQUESTS_PER_MINUTE",
                "100000".into(),
            ),
            ("PCSYNC__PARTNER_CENTER__MAX_CONCURRENCY", "4".into()),
            ("PCSYNC__PARTNER_CENTER__MAX_ATTEMPTS", "2".into()),
        ] {
            env.insert(k.into(), v);
        }
        env
    }

    fn settings(&self, name: &str) -> Settings {
        Settings::load(&Sources {
            file: None,
            env: self.env(name),
        })
        .expect("valid settings")
    }

    fn command(&self, env: HashMap<String, String>) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_pcsync"));
        cmd.args(["run", "--once"])
            .env_remove("DATABASE_URL")
            .env_remove("PCSYNC_CONFIG")
            .envs(env)
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        cmd
    }
}

/// One full pass in this process, never stopped.
async fn full_pass(settings: &Settings, pool: &sqlx::PgPool) -> sync::PassReport {
    sync::run_pass(
        settings,
        pool,
        Trigger::Test,
        PassChoice::Full,
        CancellationToken::new(),
    )
    .await
    .expect("the pass runs")
}

async fn of_tenant(pool: &sqlx::PgPool, sql: &str, tenant: &str) -> i64 {
    sqlx::query_scalar(sql)
        .bind(tenant)
        .fetch_one(pool)
        .await
        .expect(sql)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_tenants_sync_side_by_side_and_keep_a_shared_customer_apart() {
    let t = two_tenants(20, 400).await;
    let seed: uuid::Uuid = SEED_CUSTOMER_ID.parse().expect("the seed customer's id");
    let (a, b) = (t.settings("a"), t.settings("b"));
    let pool = &t.db.pool;
    let (ra, rb) = tokio::join!(full_pass(&a, pool), full_pass(&b, pool),);
    assert_eq!(ra.status, RunStatus::Succeeded, "{ra:?}");
    assert_eq!(rb.status, RunStatus::Succeeded, "{rb:?}");

    // Side by side: both runs were open at once, each for at least 2 s.
    let runs: Vec<(String, DateTime<Utc>, DateTime<Utc>, String)> = sqlx::query_as(
        "SELECT tenant, started_at, finished_at, status FROM pcsync.sync_runs ORDER BY tenant",
    )
    .fetch_all(pool)
    .await
    .expect("runs");
    assert_eq!(runs.len(), 2, "{runs:?}");
    let (ta, tb) = (&runs[0], &runs[1]);
    assert_eq!((ta.0.as_str(), tb.0.as_str()), ("a", "b"));
    assert!(ta.1 < tb.2 && tb.1 < ta.2, "the runs overlap: {runs:?}");
    for r in &runs {
        assert!((r.2 - r.1).num_milliseconds() >= 2000, "{runs:?}");
        assert_eq!(r.3, "succeeded", "neither closed the other's run: {runs:?}");
    }

    // Each tenant its own customers; the shared one twice, never marked as having left.
    for (name, sim) in ["a", "b"].iter().zip(&t.sims) {
        let listed = of_tenant(
            pool,
            "SELECT count(*) FROM pcsync.customers WHERE tenant = $1 AND left_list_at IS NULL",
            name,
        )
        .await;
        assert_eq!(listed, 20, "tenant {name}");
        let subs: usize = sim
            .customer_ids()
            .iter()
            .filter_map(|id| sim.customer(*id))
            .map(|c| {
                c.subscriptions
                    .iter()
                    .filter(|x| x["partnerId"] == pcsync::simulator::SEED_MPN_ID)
                    .count()
            })
            .sum();
        let stored = of_tenant(
            pool,
            "SELECT count(*) FROM pcsync.subscriptions WHERE tenant = $1",
            name,
        )
        .await;
        assert_eq!(stored, subs as i64, "tenant {name}");
        let added = of_tenant(
            pool,
            "SELECT count(*) FROM pcsync.change_events WHERE tenant = $1 AND kind = 'added'
               AND run_id = (SELECT run_id FROM pcsync.sync_runs WHERE tenant = $1)",
            name,
        )
        .await;
        assert!(added > 0, "tenant {name}'s events are its own run's");
    }
    let shared: Vec<String> = sqlx::query_scalar(
        "SELECT tenant FROM pcsync.customers WHERE customer_id = $1 ORDER BY tenant",
    )
    .bind(seed)
    .fetch_all(pool)
    .await
    .expect("shared");
    assert_eq!(shared, ["a", "b"], "a customer of two tenants is two rows");
    let in_views: i64 = sqlx::query_scalar(
        "SELECT count(DISTINCT tenant) FROM pcsync.current_subscriptions WHERE customer_id = $1",
    )
    .bind(seed)
    .fetch_one(pool)
    .await
    .expect("view");
    assert_eq!(
        in_views, 2,
        "the views show the shared customer under each tenant"
    );

    // Licence usage is the customer's own tenant's: both partner tenants read the same, and
    // across tenants it counts once.
    let usage: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT tenant, count(*), count(*) FILTER (WHERE usage_counted)
         FROM pcsync_bi.license_usage WHERE customer_id = $1::text GROUP BY tenant ORDER BY tenant",
    )
    .bind(seed.to_string())
    .fetch_all(pool)
    .await
    .expect("usage");
    assert_eq!(usage.len(), 2, "{usage:?}");
    assert!(usage[0].1 > 0 && usage[0].1 == usage[1].1, "{usage:?}");
    assert_eq!(
        usage[0].2 + usage[1].2,
        usage[0].1,
        "each SKU counted once: {usage:?}"
    );
    let bi_without_tenant: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = 'pcsync_bi' AND c.relkind = 'v'
           AND NOT EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attname = 'tenant')",
    )
    .fetch_all(pool)
    .await
    .expect("views");
    assert!(bi_without_tenant.is_empty(), "{bi_without_tenant:?}");

    // A change in tenant a's copy of the shared customer is a's alone.
    let sub = t.sims[0]
        .customer(seed)
        .expect("seed customer")
        .subscriptions[0]["id"]
        .as_str()
        .expect("id")
        .to_string();
    t.sims[0]
        .apply(pcsync::simulator::Change::SetSubscriptionField {
            customer_id: seed,
            subscription_id: sub.clone(),
            field: "quantity".into(),
            value: serde_json::json!(77),
        })
        .expect("applies");
    let again = full_pass(&a, pool).await;
    assert_eq!(again.status, RunStatus::Succeeded);
    let quantities: Vec<(String, Option<i64>)> = sqlx::query_as(
        "SELECT tenant, quantity::bigint FROM pcsync.subscriptions
         WHERE customer_id = $1 AND subscription_id = $2 ORDER BY tenant",
    )
    .bind(seed)
    .bind(&sub)
    .fetch_all(pool)
    .await
    .expect("quantities");
    assert_eq!(quantities[0], ("a".to_string(), Some(77)));
    assert_ne!(quantities[1].1, Some(77), "b's copy is b's: {quantities:?}");
    let events: Vec<String> = sqlx::query_scalar(
        "SELECT tenant FROM pcsync.change_events WHERE run_id = $1 AND field = 'quantity'",
    )
    .bind(again.run_id)
    .fetch_all(pool)
    .await
    .expect("events");
    assert_eq!(events, ["a"]);
    // b's customers are still listed, its run still succeeded (a's sweeps are a's).
    assert_eq!(
        of_tenant(
            pool,
            "SELECT count(*) FROM pcsync.customers WHERE tenant = $1 AND left_list_at IS NOT NULL",
            "b"
        )
        .await,
        0
    );
    assert_eq!(
        count(
            pool,
            "SELECT count(*) FROM pcsync.sync_runs WHERE status <> 'succeeded'"
        )
        .await,
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_pass_of_one_tenant_exits_3_while_another_tenant_runs() {
    let t = two_tenants(20, 300).await;
    let first = t.command(t.env("a")).spawn().expect("first a");
    // The first pass of a holds a's lock once its run row is there.
    for _ in 0..200 {
        if count(
            &t.db.pool,
            "SELECT count(*) FROM pcsync.sync_runs WHERE tenant = 'a' AND status = 'running'",
        )
        .await
            == 1
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let (second, other) = tokio::join!(
        t.command(t.env("a")).output(),
        t.command(t.env("b")).output()
    );
    let (second, other) = (second.expect("second a"), other.expect("b"));
    let first = first.wait_with_output().await.expect("first a ends");
    let said = |o: &std::process::Output| String::from_utf8_lossy(&o.stderr).to_string();
    assert_eq!(first.status.code(), Some(0), "{}", said(&first));
    assert_eq!(second.status.code(), Some(3), "{}", said(&second));
    assert!(
        said(&second).contains("partner tenant \"a\""),
        "{}",
        said(&second)
    );
    assert_eq!(other.status.code(), Some(0), "{}", said(&other));
    let runs: Vec<(String, String)> =
        sqlx::query_as("SELECT tenant, status FROM pcsync.sync_runs ORDER BY tenant")
            .fetch_all(&t.db.pool)
            .await
            .expect("runs");
    assert_eq!(
        runs,
        [
            ("a".to_string(), "succeeded".to_string()),
            ("b".to_string(), "succeeded".to_string())
        ],
        "the refused pass recorded nothing"
    );
}

/// The `[[tenants]]` configuration of one process serving `a` and `b`; b's secret comes from
/// its variable.
fn tenants_file(t: &Two) -> std::path::PathBuf {
    let path = t.dir.path().join("pcsync.toml");
    let text = format!(
        "[partner_center]\nrequests_per_minute = 100000\nmax_attempts = 2\n\n\
         [[tenants]]\nname = \"a\"\ncustomers.file = {a:?}\n\n\
         [[tenants]]\nname = \"b\"\ncustomers.file = {b:?}\npartner_center.max_concurrency = 4\n",
        a = t.csv("a"),
        b = t.csv("b"),
    );
    std::fs::write(&path, text).expect("config");
    path
}

fn tenants_env(t: &Two) -> HashMap<String, String> {
    let mut env: HashMap<String, String> = HashMap::new();
    env.insert("PCSYNC__DATABASE__URL".into(), t.db.url.clone());
    env.insert(
        "PCSYNC__PARTNER_CENTER__BASE_URL".into(),
        t.sims[0].base_url(),
    );
    env.insert("PCSYNC__AUTH__AUTHORITY".into(), t.sims[0].authority());
    env.extend(t.sims[0].tenant_env_vars("a"));
    env.extend(t.sims[1].tenant_env_vars("b"));
    env
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_tenants_wrong_secret_fails_that_tenant_only() {
    let t = two_tenants(10, 0).await;
    let file = tenants_file(&t);
    let mut env = tenants_env(&t);
    env.insert(
        "PCSYNC_TENANT_B__AUTH__CLIENT_SECRET".into(),
        "not-the-secret-of-b".into(),
    );
    let out = t
        .command(env)
        .arg("--config")
        .arg(&file)
        .output()
        .await
        .expect("runs");
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "one tenant failed: {said}");
    assert!(!said.contains("not-the-secret-of-b"), "{said}");
    let runs: Vec<(String, String, Option<String>)> =
        sqlx::query_as("SELECT tenant, status, error FROM pcsync.sync_runs ORDER BY tenant")
            .fetch_all(&t.db.pool)
            .await
            .expect("runs");
    assert_eq!(runs.len(), 2, "{runs:?}");
    assert_eq!((runs[0].0.as_str(), runs[0].1.as_str()), ("a", "succeeded"));
    assert_eq!((runs[1].0.as_str(), runs[1].1.as_str()), ("b", "failed"));
    assert!(
        runs[1].2.as_deref().is_some_and(|e| e.contains("secret")),
        "{runs:?}"
    );
    assert_eq!(
        of_tenant(
            &t.db.pool,
            "SELECT count(*) FROM pcsync.customers WHERE tenant = $1 AND last_status = 'succeeded'",
            "a"
        )
        .await,
        10
    );

    // With b's secret right, the same process syncs both.
    let out = t
        .command(tenants_env(&t))
        .arg("--config")
        .arg(&file)
        .output()
        .await
        .expect("runs");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        of_tenant(
            &t.db.pool,
            "SELECT count(*) FROM pcsync.customers WHERE tenant = $1 AND last_status = 'succeeded'",
            "b"
        )
        .await,
        10
    );
}

fn load(file_text: &str, env: &[(&str, &str)]) -> Result<Settings, String> {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("pcsync.toml");
    std::fs::write(&path, file_text).expect("file");
    let mut vars: HashMap<String, String> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    vars.insert(
        "PCSYNC__DATABASE__URL".into(),
        "postgres://postgres@127.0.0.1/x".into(),
    );
    Settings::load(&Sources {
        file: Some(path),
        env: vars,
    })
    .map_err(|e| e.to_string())
}

#[test]
fn tenants_entries_say_what_to_fix() {
    let ok = load(
        "[auth]\ntenant_id = \"contoso.onmicrosoft.com\"\n\n\
         [[tenants]]\nname = \"emea\"\nauth.client_id = \"9c1d2e3f-4a5b-4c6d-8e7f-1a2b3c4d5e6f\"\n\
         sync.schedule = \"0 3 * * *\"\npartner_center.requests_per_minute = 250\n\n\
         [[tenants]]\nname = \"us\"\n",
        &[("PCSYNC_TENANT_US__AUTH__CLIENT_SECRET", "s3cret")],
    )
    .expect("valid");
    let names: Vec<&str> = ok
        .tenants
        .iter()
        .map(|t| t.auth.tenant_name.as_str())
        .collect();
    assert_eq!(names, ["emea", "us"]);
    let emea = &ok.tenants[0];
    assert_eq!(emea.partner_center.requests_per_minute, 250);
    assert_eq!(emea.sync.schedule.to_string(), "0 3 * * *");
    assert_eq!(
        emea.auth.tenant_id.as_deref(),
        Some("contoso.onmicrosoft.com")
    );
    assert!(emea.auth.client_secret.is_none());
    assert!(
        ok.tenants[1].auth.client_secret.is_some(),
        "from its variable"
    );
    assert_eq!(ok.tenants[1].partner_center.requests_per_minute, 500);
    assert!(!format!("{ok:?}").contains("s3cret"));

    let inline = load(
        "[[tenants]]\nname = \"emea\"\nauth.client_secret = \"s3cret\"\n",
        &[],
    )
    .expect_err("a secret in the file");
    assert!(
        inline.contains("PCSYNC_TENANT_EMEA__AUTH__CLIENT_SECRET")
            && inline.contains("client_secret_file")
            && !inline.contains("s3cret"),
        "{inline}"
    );
    let global = load(
        "[[tenants]]\nname = \"emea\"\ndatabase.url = \"postgres://x/y\"\n",
        &[],
    )
    .expect_err("not a tenant's");
    assert!(global.contains("database"), "{global}");
    let twice = load(
        "[[tenants]]\nname = \"emea\"\n\n[[tenants]]\nname = \"emea\"\n",
        &[],
    )
    .expect_err("twice");
    assert!(
        twice.contains("another [[tenants]] entry has this name"),
        "{twice}"
    );
    let bad = load("[[tenants]]\nname = \"EMEA west\"\n", &[]).expect_err("bad name");
    assert!(
        bad.contains("auth.tenant_name") && bad.contains("EMEA west"),
        "{bad}"
    );
    let unknown = load(
        "[[tenants]]\nname = \"emea\"\n",
        &[("PCSYNC_TENANT_EMEA__DATABASE__URL", "postgres://x/y")],
    )
    .expect_err("not a tenant's variable");
    assert!(
        unknown.contains("PCSYNC_TENANT_EMEA__DATABASE__URL is not a per-tenant setting"),
        "{unknown}"
    );
    let schedule = load(
        "[[tenants]]\nname = \"emea\"\nsync.schedule = \"often\"\n",
        &[],
    )
    .expect_err("bad schedule");
    assert!(
        schedule.contains("\"emea\"") && schedule.contains("sync.schedule"),
        "{schedule}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_report_alerts_and_metrics_per_tenant_and_across_all() {
    let t = two_tenants(8, 0).await;
    // One of b's own customers fails (its subscriptions answer 500).
    let failing = t.sims[1].customer_ids()[1];
    t.sims[1].set_knobs(Knobs {
        faults: vec![
            pcsync::simulator::FaultRule::parse(&format!("500@{failing}")).expect("fault"),
        ],
        ..Knobs::default()
    });
    let pool = &t.db.pool;
    let (a, b) = (t.settings("a"), t.settings("b"));
    let ra = full_pass(&a, pool).await;
    let rb = full_pass(&b, pool).await;
    assert_eq!(ra.status, RunStatus::Succeeded);
    assert_eq!(rb.status, RunStatus::Partial);

    // `pcsync status`: each tenant alone, and the worst of both naming the tenant.
    let status = |args: &[&str]| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_pcsync"));
        cmd.arg("status")
            .args(args)
            .env_remove("DATABASE_URL")
            .env_remove("PCSYNC_CONFIG")
            .envs(t.env("a"))
            .env("RUST_LOG", "error");
        let out = cmd.output().expect("status");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .next()
                .unwrap_or("")
                .to_string(),
        )
    };
    let (code, line) = status(&["--tenant", "a"]);
    assert_eq!(code, Some(0), "{line}");
    assert!(line.starts_with("PCSYNC OK - 8 customers synced"), "{line}");
    let (code, line) = status(&["--tenant", "b"]);
    assert_eq!(code, Some(1), "{line}");
    assert!(line.contains("1 of 8 customers failing"), "{line}");
    let (code, line) = status(&[]);
    assert_eq!(code, Some(1), "{line}");
    assert!(
        line.contains("tenant b: ") && line.contains("failing=1;1;;0;16"),
        "{line}"
    );
    let (code, line) = status(&["--tenant", "c"]);
    assert_eq!(code, Some(3), "{line}");
    assert!(line.contains("no partner tenant named \"c\""), "{line}");

    // The report: a section per tenant; one tenant's report is its own.
    let clock = pcsync::clock::Clock::system();
    let all = pcsync::report::read(pool, &clock, None)
        .await
        .expect("report");
    let rows: Vec<(&str, i64, i64)> = all
        .tenants
        .iter()
        .map(|r| (r.tenant.as_str(), r.customers, r.failing))
        .collect();
    assert_eq!(rows, [("a", 8, 0), ("b", 8, 1)]);
    assert_eq!(all.failing_customers, 1);
    let html = pcsync::report::render(&all);
    assert!(html.contains("<table id=\"tenants\">"), "a tenant section");
    let only_a = pcsync::report::read(pool, &clock, Some("a"))
        .await
        .expect("a's report");
    assert_eq!(only_a.failing_customers, 0);
    assert!(only_a.runs.iter().all(|r| r.tenant == "a"));
    assert!(pcsync::report::render(&only_a).contains("partner tenant a"));

    // The alert of b's pass is b's: it names the tenant.
    let alert = pcsync::notify::build(pool, &b.notify, &clock, &rb)
        .await
        .expect("builds")
        .expect("b's first load is news");
    assert_eq!(alert.tenant, "b");
    assert!(alert.text.starts_with("pcsync [b]: "), "{}", alert.text);
    assert!(
        alert.changes.iter().all(|c| c.customer_id != failing),
        "b's changes only"
    );

    // The metrics: one registry, every series labelled with its tenant.
    let metrics = pcsync::metrics::Metrics::new(&["a".to_string(), "b".to_string()]);
    metrics.observe(pool, &ra, clock.now()).await;
    metrics.observe(pool, &rb, clock.now()).await;
    let text = metrics.render(clock.now()).expect("renders");
    assert!(
        text.contains(r#"pcsync_passes_total{kind="full",status="succeeded",tenant="a"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"pcsync_passes_total{kind="full",status="partial",tenant="b"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"pcsync_customers_listed{tenant="a"} 8"#)
            && text.contains(r#"pcsync_customers_listed{tenant="b"} 8"#),
        "{text}"
    );
}

/// What `pcsync simulate --tenants 2` prints is the setup to paste: its exports and its
/// `[[tenants]]` file sync both tenants from one process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_simulators_tenants_setup_syncs_both_from_one_process() {
    use tokio::io::AsyncBufReadExt;
    let db = TestDb::migrated().await;
    let dir = tempfile::tempdir().expect("dir");
    let mut sim = tokio::process::Command::new(env!("CARGO_BIN_EXE_pcsync"))
        .args([
            "simulate",
            "--tenants",
            "2",
            "--customers",
            "5",
            "--port",
            "0",
            "--csv",
        ])
        .arg(dir.path().join("customers.csv"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("simulate");
    let mut lines = tokio::io::BufReader::new(sim.stdout.take().expect("stdout")).lines();
    let mut env: HashMap<String, String> = HashMap::new();
    let mut command = None;
    while let Ok(Some(line)) = lines.next_line().await {
        let line = line.trim().to_string();
        if let Some((k, v)) = line.strip_prefix("export ").and_then(|e| e.split_once('=')) {
            env.insert(k.to_string(), v.to_string());
        } else if line.starts_with("pcsync --config ") {
            command = Some(line);
            break;
        }
    }
    let command = command.expect("the command to run");
    let config = command
        .strip_prefix("pcsync --config ")
        .and_then(|c| c.strip_suffix(" run --once"))
        .expect("pcsync --config FILE run --once");
    assert!(
        env.contains_key("PCSYNC_TENANT_T2__AUTH__CLIENT_SECRET"),
        "{env:?}"
    );
    env.insert("DATABASE_URL".into(), db.url.clone());
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_pcsync"))
        .args(["--config", config, "run", "--once"])
        .env_remove("PCSYNC_CONFIG")
        .envs(&env)
        .env("RUST_LOG", "warn")
        .output()
        .await
        .expect("runs");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let runs: Vec<(String, String)> =
        sqlx::query_as("SELECT tenant, status FROM pcsync.sync_runs ORDER BY tenant")
            .fetch_all(&db.pool)
            .await
            .expect("runs");
    assert_eq!(
        runs,
        [
            ("t1".to_string(), "succeeded".to_string()),
            ("t2".to_string(), "succeeded".to_string())
        ]
    );
    let shared: i64 =
        sqlx::query_scalar("SELECT count(*) FROM pcsync.customers WHERE customer_id = $1::uuid")
            .bind(SEED_CUSTOMER_ID)
            .fetch_one(&db.pool)
            .await
            .expect("shared");
    assert_eq!(
        shared, 2,
        "the tenants share the seed customer, as two rows"
    );
    let _ = sim.kill().await;
}

/// One partner tenant has one name: a pass under a second name with the credentials of a
/// tenant already recorded stops before touching anything, naming both names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partner_tenant_under_a_second_name_is_refused() {
    let t = two_tenants(3, 0).await;
    let pool = &t.db.pool;
    let a = t.settings("a");
    let first = full_pass(&a, pool).await;
    assert_eq!(first.status, RunStatus::Succeeded);
    let mut env = t.env("a");
    env.insert("PCSYNC__AUTH__TENANT_NAME".into(), "a-again".into());
    let again = Settings::load(&Sources { file: None, env }).expect("settings");
    let refused = full_pass(&again, pool).await;
    assert_eq!(refused.status, RunStatus::Failed);
    let error = refused.error.unwrap_or_default();
    assert!(
        error.contains("under the name \"a\"") && error.contains("\"a-again\""),
        "{error}"
    );
    assert_eq!(
        of_tenant(
            pool,
            "SELECT count(*) FROM pcsync.customers WHERE tenant = $1",
            "a-again"
        )
        .await,
        0,
        "nothing stored under the second name"
    );
}

/// The long-lived worker serving `[[tenants]]` runs each tenant on its own schedule; a tenant
/// whose every pass fails (a wrong secret) stops none of the other's passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_runs_each_tenant_on_its_schedule_and_a_failing_one_stops_no_other() {
    let t = two_tenants(3, 0).await;
    let path = t.dir.path().join("worker.toml");
    std::fs::write(
        &path,
        format!(
            "[partner_center]\nrequests_per_minute = 100000\nmax_attempts = 1\n\n\
             [[tenants]]\nname = \"a\"\ncustomers.file = {a:?}\nsync.schedule = \"*/2 * * * * *\"\n\n\
             [[tenants]]\nname = \"b\"\ncustomers.file = {b:?}\nsync.schedule = \"*/3 * * * * *\"\n",
            a = t.csv("a"),
            b = t.csv("b"),
        ),
    )
    .expect("config");
    let mut env = tenants_env(&t);
    env.insert(
        "PCSYNC_TENANT_B__AUTH__CLIENT_SECRET".into(),
        "not-the-secret-of-b".into(),
    );
    let mut worker = tokio::process::Command::new(env!("CARGO_BIN_EXE_pcsync"))
        .arg("--config")
        .arg(&path)
        .arg("run")
        .env_remove("DATABASE_URL")
        .env_remove("PCSYNC_CONFIG")
        .envs(&env)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("worker");
    let runs = |tenant: &'static str, status: &'static str| {
        let pool = t.db.pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM pcsync.sync_runs WHERE tenant = $1 AND status = $2",
            )
            .bind(tenant)
            .bind(status)
            .fetch_one(&pool)
            .await
            .expect("runs")
        }
    };
    for _ in 0..150 {
        if runs("a", "succeeded").await >= 2 && runs("b", "failed").await >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = worker.kill().await;
    assert!(runs("a", "succeeded").await >= 2, "a went on passing");
    assert!(
        runs("b", "failed").await >= 2,
        "b tried at each of its firings"
    );
    assert_eq!(runs("a", "failed").await, 0);
}

/// `run --once` over `[[tenants]]` pushes one Pushgateway group per tenant (a real
/// Pushgateway), each with its own tenant's series only, so the groups never overwrite each
/// other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_tenant_is_its_own_pushgateway_group() {
    let gateway = ["/usr/bin", "/usr/local/bin"]
        .iter()
        .map(|d| format!("{d}/prometheus-pushgateway"))
        .find(|p| std::path::Path::new(p).exists());
    let Some(gateway) = gateway else {
        assert!(
            !(std::env::var("CI").is_ok_and(|v| v == "true")
                || std::env::var("PCSYNC_REQUIRE_PROMETHEUS").is_ok_and(|v| v == "1")),
            "the test needs prometheus-pushgateway (apt install prometheus-pushgateway)"
        );
        eprintln!("skipped: prometheus-pushgateway is missing");
        return;
    };
    let t = two_tenants(3, 0).await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port");
    let _gw = tokio::process::Command::new(gateway)
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("the Pushgateway starts");
    let url = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    for _ in 0..100 {
        if http.get(format!("{url}/-/ready")).send().await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut env = tenants_env(&t);
    env.insert("PCSYNC__METRICS__PUSHGATEWAY_URL".into(), url.clone());
    let out = t
        .command(env)
        .arg("--config")
        .arg(tenants_file(&t))
        .output()
        .await
        .expect("runs");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let groups: serde_json::Value = http
        .get(format!("{url}/api/v1/metrics"))
        .send()
        .await
        .expect("the groups")
        .json()
        .await
        .expect("json");
    let mut seen = Vec::new();
    for group in groups["data"].as_array().expect("groups") {
        let tenant = group["labels"]["tenant"]
            .as_str()
            .expect("a tenant group")
            .to_string();
        let passes = &group["pcsync_passes_total"]["metrics"];
        let series = passes.as_array().expect("the group's passes");
        assert!(!series.is_empty(), "{group}");
        for s in series {
            assert_eq!(s["labels"]["tenant"], tenant.as_str(), "{group}");
        }
        seen.push(tenant);
    }
    seen.sort();
    assert_eq!(seen, ["a", "b"]);
}
