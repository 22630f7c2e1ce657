//! The `pcsync` binary as a user runs it: `check`, `migrate`, usage errors and exit codes.
#![cfg(feature = "simulator")]

mod common;

use std::process::Output;

use common::TestDb;
use pcsync::simulator::{FaultKind, FaultRule, Knobs, SimConfig, Simulator};

async fn pcsync(args: &[&str], env: &[(String, String)]) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_pcsync"))
        .args(args)
        .env_remove("DATABASE_URL")
        .env("RUST_LOG", "warn")
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .output()
        .await
        .expect("pcsync runs")
}

/// A database, a simulator with `customers` customers, their CSV, and the environment that
/// points `pcsync run` at all three.
struct RunSetup {
    db: TestDb,
    sim: Simulator,
    _dir: tempfile::TempDir,
    env: Vec<(String, String)>,
}

async fn run_setup(customers: u32) -> RunSetup {
    let db = TestDb::migrated().await;
    let sim = Simulator::start(SimConfig {
        customers,
        ..SimConfig::default()
    })
    .await
    .expect("sim");
    let dir = tempfile::tempdir().expect("dir");
    let csv = dir.path().join("customers.csv");
    std::fs::write(&csv, sim.customers_csv()).expect("csv");
    let mut env = sim.env_vars();
    env.push(("PCSYNC__DATABASE__URL".into(), db.url.clone()));
    env.push((
        "PCSYNC__CUSTOMERS__FILE".into(),
        csv.to_string_lossy().to_string(),
    ));
    env.push((
        "PCSYNC__PARTNER_CENTER__REQUESTS_PER_MINUTE".into(),
        "100000".into(),
    ));
    RunSetup {
        db,
        sim,
        _dir: dir,
        env,
    }
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_reports_each_step_and_names_a_bad_key() {
    let db = TestDb::migrated().await;
    let sim = Simulator::start(SimConfig::default()).await.expect("sim");
    let dir = tempfile::tempdir().expect("dir");
    let csv = dir.path().join("customers.csv");
    std::fs::write(&csv, sim.customers_csv()).expect("csv");
    let mut env: Vec<(String, String)> = sim.env_vars();
    env.push(("PCSYNC__DATABASE__URL".into(), db.url.clone()));
    env.push((
        "PCSYNC__CUSTOMERS__FILE".into(),
        csv.to_string_lossy().to_string(),
    ));

    let ok = pcsync(&["check"], &env).await;
    let out = stdout(&ok);
    assert_eq!(ok.status.code(), Some(0), "{out}");
    assert!(
        out.contains(
            "configuration  ok      auth.mode = \"app_user\", customers.source = \"file\""
        ),
        "the configuration's spellings: {out}"
    );
    assert!(out.contains("database       ok"), "{out}");
    assert!(
        out.contains("customers      ok      200 customers"),
        "{out}"
    );
    assert!(out.contains("token          ok      App+User"), "{out}");

    // A pass could not run: no credentials, or no customer file.
    let no_secret: Vec<(String, String)> = env
        .iter()
        .filter(|(k, _)| k != "PCSYNC__AUTH__CLIENT_SECRET")
        .cloned()
        .collect();
    let failed = pcsync(&["check"], &no_secret).await;
    assert_eq!(failed.status.code(), Some(1), "{}", stdout(&failed));
    assert!(stdout(&failed).contains("token          failed  auth.client_secret: not set"));
    let mut no_file = env.clone();
    no_file.push((
        "PCSYNC__CUSTOMERS__FILE".into(),
        "/nonexistent/c.csv".into(),
    ));
    let failed = pcsync(&["check"], &no_file).await;
    assert_eq!(failed.status.code(), Some(1));
    assert!(
        stdout(&failed).contains("customers      failed"),
        "{}",
        stdout(&failed)
    );

    // check changes nothing: a database that does not exist is not created.
    let mut missing_db = env.clone();
    let mut url = reqwest::Url::parse(&db.url).expect("url");
    let name = format!("pcsync_check_{}", uuid::Uuid::new_v4().simple());
    url.set_path(&format!("/{name}"));
    missing_db.push(("PCSYNC__DATABASE__URL".into(), url.to_string()));
    let failed = pcsync(&["check"], &missing_db).await;
    assert_eq!(failed.status.code(), Some(1));
    let created: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(&name)
            .fetch_one(&db.pool)
            .await
            .expect("catalog");
    assert!(!created, "check created the database");

    let mut bad = env.clone();
    bad.push((
        "PCSYNC__PARTNER_CENTER__MAX_CONCURRENCY".into(),
        "lots".into(),
    ));
    let failed = pcsync(&["check"], &bad).await;
    let out = stdout(&failed);
    assert_eq!(failed.status.code(), Some(1));
    assert!(
        out.contains("configuration  failed  partner_center.max_concurrency: expected a whole number from 1 to 256, got \"lots\""),
        "{out}"
    );

    let mut wrong_secret = env.clone();
    wrong_secret.push((
        "PCSYNC__AUTH__CLIENT_SECRET".into(),
        "not-the-secret".into(),
    ));
    let failed = pcsync(&["check"], &wrong_secret).await;
    let out = stdout(&failed);
    assert_eq!(failed.status.code(), Some(1));
    assert!(
        out.contains("token          failed") && out.contains("invalid_client"),
        "{out}"
    );
    assert!(
        !out.contains("not-the-secret"),
        "the secret is not repeated: {out}"
    );
}

#[tokio::test]
async fn migrate_creates_the_schema_then_has_nothing_to_do() {
    let db = TestDb::empty().await;
    let env = vec![
        ("PCSYNC__DATABASE__URL".to_string(), db.url.clone()),
        ("RUST_LOG".to_string(), "info".to_string()),
    ];
    let first = pcsync(&["migrate"], &env).await;
    assert_eq!(first.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&first.stderr).contains("migrations applied"));
    let second = pcsync(&["migrate"], &env).await;
    assert_eq!(second.status.code(), Some(0));
    assert!(
        String::from_utf8_lossy(&second.stderr).contains("nothing to apply"),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );
}

#[tokio::test]
async fn usage_errors_exit_1_and_a_missing_customer_file_fails_the_run() {
    let usage = pcsync(&["frobnicate"], &[]).await;
    assert_eq!(
        usage.status.code(),
        Some(1),
        "2 means 'some customers failed'"
    );
    let help = pcsync(&["--help"], &[]).await;
    assert_eq!(help.status.code(), Some(0));
    assert!(stdout(&help).contains("run"));

    let db = TestDb::migrated().await;
    let sim = Simulator::start(SimConfig::default()).await.expect("sim");
    let mut env = sim.env_vars();
    env.push(("PCSYNC__DATABASE__URL".into(), db.url.clone()));
    env.push((
        "PCSYNC__CUSTOMERS__FILE".into(),
        "/nonexistent/customers.csv".into(),
    ));
    let run = pcsync(&["run", "--once"], &env).await;
    assert_eq!(run.status.code(), Some(1));
    let said = String::from_utf8_lossy(&run.stderr);
    assert!(
        said.contains("/nonexistent/customers.csv") && said.contains("customers.file"),
        "{said}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_are_one_object_per_line_with_the_run_id() {
    let setup = run_setup(3).await;
    let mut env = setup.env.clone();
    env.push(("PCSYNC__LOG__FORMAT".into(), "json".into()));
    env.push(("RUST_LOG".into(), "info".into()));
    let run = pcsync(&["run", "--once"], &env).await;
    assert_eq!(run.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&run.stderr);
    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    // A first load: one summary line per customer at INFO, not one line per object.
    assert!(lines.iter().all(|l| l["message"] != "change"));
    let added: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|l| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("added "))
        })
        .collect();
    assert_eq!(added.len(), 3, "one per customer");
    assert!(added.iter().all(|c| c["customer_id"].is_string()
        && c["subscriptions_added"].as_u64().is_some_and(|n| n > 0)));
    let summary = lines
        .iter()
        .find(|l| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("full sync pass succeeded"))
        })
        .expect("a summary line");
    assert!(summary["span"]["run_id"].is_string(), "{summary}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_log_stream_does_not_stop_the_sync() {
    let setup = run_setup(20).await;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_pcsync"))
        .args(["run", "--once"])
        .env_remove("DATABASE_URL")
        .envs(setup.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    // Nobody reads the log: as with `pcsync run --once 2>&1 | head -1`.
    drop(child.stderr.take());
    let status = child.wait().await.expect("ends");
    assert_eq!(status.code(), Some(0));
    let (status, succeeded): (String, i32) =
        sqlx::query_as("SELECT status, customers_succeeded FROM pcsync.sync_runs")
            .fetch_one(&setup.db.pool)
            .await
            .expect("run");
    assert_eq!((status.as_str(), succeeded), ("succeeded", 20));
}

/// Logs written to a pipe or file carry no terminal colour codes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_to_a_pipe_have_no_colour_codes() {
    let setup = run_setup(2).await;
    let mut env = setup.env.clone();
    env.push(("RUST_LOG".into(), "info".into()));
    let run = pcsync(&["run", "--once"], &env).await;
    assert_eq!(run.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(stderr.contains("sync pass succeeded"), "{stderr}");
    assert!(!stderr.contains('\u{1b}'), "ANSI escape in: {stderr}");
}

/// A slow pass says how it is doing: progress lines at log.progress_secs, with the counts as
/// JSON fields.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_pass_logs_its_progress() {
    let setup = run_setup(8).await;
    setup.sim.set_knobs(pcsync::simulator::Knobs {
        latency_ms: 200,
        ..pcsync::simulator::Knobs::default()
    });
    let mut env = setup.env.clone();
    env.push(("PCSYNC__LOG__FORMAT".into(), "json".into()));
    env.push(("PCSYNC__LOG__PROGRESS_SECS".into(), "1".into()));
    env.push(("PCSYNC__PARTNER_CENTER__MAX_CONCURRENCY".into(), "1".into()));
    env.push(("RUST_LOG".into(), "info".into()));
    let run = pcsync(&["run", "--once"], &env).await;
    assert_eq!(run.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&run.stderr);
    let progress: Vec<serde_json::Value> = stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|l| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("progress:"))
        })
        .collect();
    assert!(progress.len() >= 2, "{stderr}");
    let last = progress.last().expect("a line");
    assert_eq!(last["total"], 8);
    assert!(
        last["done"].as_u64().is_some_and(|d| d > 0 && d <= 8),
        "{last}"
    );
    assert!(last["requests"].as_u64().is_some_and(|r| r > 0), "{last}");
    assert!(
        last["budget_per_min"].as_u64().is_some_and(|b| b > 0),
        "{last}"
    );
    assert_eq!(last["failed"], 0);
    assert!(last["eta_secs"].is_u64(), "{last}");
}

/// `pcsync status` as a monitoring plugin: 0 OK after a good pass, 1 WARNING while a customer
/// fails, 2 CRITICAL when the last pass failed or the last good one is too old, 3 UNKNOWN when
/// it cannot tell (no database, no schema, no pass yet); the first line is the plugin summary
/// with performance data; JSON for scripts carries the same state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_exit_codes_follow_the_monitoring_plugin_convention() {
    let setup = run_setup(3).await;
    let env = setup.env.clone();
    let never = pcsync(&["status"], &env).await;
    assert_eq!(
        never.status.code(),
        Some(3),
        "no pass yet: UNKNOWN: {}",
        stdout(&never)
    );
    assert!(stdout(&never).starts_with("PCSYNC UNKNOWN - no pass recorded yet"));
    let mut nowhere = env.clone();
    nowhere.push((
        "PCSYNC__DATABASE__URL".into(),
        "postgres://postgres@127.0.0.1:1/none".into(),
    ));
    let unreachable = pcsync(&["status"], &nowhere).await;
    assert_eq!(
        unreachable.status.code(),
        Some(3),
        "{}",
        stdout(&unreachable)
    );
    assert!(stdout(&unreachable).starts_with("PCSYNC UNKNOWN - cannot read the database"));
    let bare = TestDb::empty().await;
    let mut unmigrated = env.clone();
    unmigrated.push(("PCSYNC__DATABASE__URL".into(), bare.url.clone()));
    let no_schema = pcsync(&["status", "--json"], &unmigrated).await;
    assert_eq!(no_schema.status.code(), Some(3));
    let parsed: serde_json::Value = serde_json::from_slice(&no_schema.stdout).expect("JSON");
    assert_eq!(parsed["state"], "UNKNOWN");

    // One customer of three keeps failing (seen: `healthy`, exit 0): WARNING.
    let failing = setup.sim.customer_ids()[1];
    setup.sim.set_knobs(Knobs {
        faults: vec![FaultRule::always(FaultKind::Malformed).for_customer(failing)],
        ..Knobs::default()
    });
    assert_eq!(
        pcsync(&["run", "--once"], &env).await.status.code(),
        Some(2)
    );
    let warning = pcsync(&["status"], &env).await;
    assert_eq!(warning.status.code(), Some(1), "{}", stdout(&warning));
    let first = stdout(&warning)
        .lines()
        .next()
        .unwrap_or_default()
        .to_string();
    assert!(
        first.starts_with("PCSYNC WARNING - ")
            && first.contains("1 of 3 customers failing")
            && first.contains(" | failing=1;1;;0;3 "),
        "{first}"
    );
    let json = pcsync(&["status", "--json"], &env).await;
    assert_eq!(json.status.code(), Some(1));
    let parsed: serde_json::Value = serde_json::from_slice(&json.stdout).expect("JSON");
    assert_eq!(
        (&parsed["state"], &parsed["exit_code"], &parsed["healthy"]),
        (
            &serde_json::json!("WARNING"),
            &serde_json::json!(1),
            &serde_json::json!(true)
        )
    );
    assert_eq!(parsed["summary"].as_str(), Some(first.as_str()));
    setup.sim.set_knobs(Knobs::default());

    assert_eq!(
        pcsync(&["run", "--once"], &env).await.status.code(),
        Some(0)
    );
    let healthy = pcsync(&["status"], &env).await;
    assert_eq!(healthy.status.code(), Some(0), "{}", stdout(&healthy));
    let text = stdout(&healthy);
    assert!(text.starts_with("PCSYNC OK - 3 customers synced"), "{text}");
    assert!(
        text.contains("Last passes") && text.contains("succeeded"),
        "{text}"
    );
    // A reader that leaves early (`pcsync status | head -1`) gets no panic, only the status.
    let mut early = tokio::process::Command::new(env!("CARGO_BIN_EXE_pcsync"))
        .arg("status")
        .env_remove("DATABASE_URL")
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("pcsync runs");
    drop(early.stdout.take());
    let early = early.wait_with_output().await.expect("exits");
    assert_eq!(
        early.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&early.stderr)
    );
    let json = pcsync(&["status", "--json"], &env).await;
    let parsed: serde_json::Value = serde_json::from_slice(&json.stdout).expect("JSON");
    assert_eq!(parsed["healthy"], true);
    assert!(
        parsed["oldest_confirmed_at"].is_string() && parsed["activity_read_through"].is_string(),
        "freshness: {parsed}"
    );
    assert_eq!(parsed["last_runs"][0]["status"], "succeeded");
    assert_eq!(
        parsed["max_age_secs"],
        2 * 3600,
        "twice the hourly schedule"
    );
    assert!(
        parsed["changes_last_24h"]
            .as_array()
            .is_some_and(|c| !c.is_empty())
    );

    // Stale: the last good pass ended three days ago.
    sqlx::query(
        "UPDATE pcsync.sync_runs SET started_at = started_at - interval '3 days',
            finished_at = finished_at - interval '3 days'",
    )
    .execute(&setup.db.pool)
    .await
    .expect("age");
    let stale = pcsync(&["status"], &env).await;
    assert_eq!(stale.status.code(), Some(2), "{}", stdout(&stale));
    assert!(
        stdout(&stale).contains("no pass succeeded for"),
        "{}",
        stdout(&stale)
    );
    let mut lenient = env.clone();
    lenient.push((
        "PCSYNC__STATUS__MAX_AGE_SECS".into(),
        (5 * 24 * 3600).to_string(),
    ));
    assert_eq!(pcsync(&["status"], &lenient).await.status.code(), Some(0));

    // The last pass failed: bad credentials.
    let mut bad = env.clone();
    bad.push(("PCSYNC__AUTH__CLIENT_SECRET".into(), "wrong".into()));
    assert_eq!(
        pcsync(&["run", "--once"], &bad).await.status.code(),
        Some(1)
    );
    let failed = pcsync(&["status"], &lenient).await;
    assert_eq!(failed.status.code(), Some(2), "{}", stdout(&failed));
    assert!(stdout(&failed).contains("failed"), "{}", stdout(&failed));
}

/// A configuration error during `run` is said first, at ERROR, and records no pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configuration_error_during_run_is_said_first_and_records_no_pass() {
    let setup = run_setup(2).await;
    let env: Vec<(String, String)> = setup
        .env
        .iter()
        .filter(|(k, _)| k != "PCSYNC__AUTH__REFRESH_TOKEN")
        .cloned()
        .collect();
    let run = pcsync(&["run", "--once"], &env).await;
    assert_eq!(run.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&run.stderr);
    let first = stderr.lines().next().unwrap_or_default();
    assert!(
        first.contains("ERROR") && first.contains("auth.refresh_token"),
        "{stderr}"
    );
    let runs: i64 = sqlx::query_scalar("SELECT count(*) FROM pcsync.sync_runs")
        .fetch_one(&setup.db.pool)
        .await
        .expect("runs");
    assert_eq!(runs, 0, "no pass started, none recorded");
}
