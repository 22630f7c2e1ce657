//! The Superset dashboard in a real Superset: `deploy/superset/run` installs the pinned
//! Superset in a virtual environment, imports the dashboard into a fresh Superset pointed at a
//! database holding the demo's quarter of history, and serves it; `deploy/superset/check.py`
//! asks the chart-data API for every chart (rows, no error, the quarter chart equal to
//! `pcsync_bi.license_counts_quarter_end`) and renders the dashboard in headless Chromium (every
//! chart drawn, no error box, no console error beyond the welcome page's).
//!
//! Needs python3 with venv, network to PyPI (first run), chromium and chromedriver. Without
//! them the test says so and passes, unless `CI=true` or `PCSYNC_REQUIRE_SUPERSET=1`: then it
//! fails. The virtual environment is kept under the target directory between runs; Superset's
//! metadata is made fresh each time.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use chrono::Utc;
use common::TestDb;
use pcsync::demo::World;

fn required() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
        || std::env::var("PCSYNC_REQUIRE_SUPERSET").is_ok_and(|v| v == "1")
}

fn missing() -> Option<String> {
    let python = Command::new("python3")
        .args(["-c", "import venv, ensurepip"])
        .output();
    if !python.is_ok_and(|o| o.status.success()) {
        return Some("python3 with venv and ensurepip (apt install python3 python3-venv)".into());
    }
    for (tool, package) in [
        ("chromium", "chromium"),
        ("chromedriver", "chromium-driver"),
    ] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            return Some(format!("{tool} (apt install {package})"));
        }
    }
    None
}

/// Kills the served Superset when the test ends, however it ends.
struct Served(std::process::Child);

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

#[tokio::test]
async fn the_dashboard_imports_answers_and_renders_in_a_real_superset() {
    if let Some(what) = missing() {
        assert!(!required(), "the Superset test needs {what}");
        eprintln!("skipped: the Superset test needs {what}");
        return;
    }
    let db = TestDb::migrated().await;
    let dir = std::env::temp_dir().join(format!("pcsync-ss-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("dir");
    let world = World::start(&db.url, 40, Utc::now(), &dir)
        .await
        .expect("world");
    world.first_load(&db.pool).await.expect("first load");
    world.quarter(&db.pool).await.expect("quarter");

    // A fresh Superset: the virtual environment is kept, the metadata is not.
    let home = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("superset-home");
    std::fs::create_dir_all(&home).expect("home");
    for file in ["superset.db", "admin_password", "secret_key"] {
        let _ = std::fs::remove_file(home.join(file));
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let port = free_port();
    let log = dir.join("superset.log");
    let out = std::fs::File::create(&log).expect("log");
    let err = out.try_clone().expect("log");
    let started = Instant::now();
    let child = Command::new(root.join("deploy/superset/run"))
        .arg(&db.url)
        .env("PCSYNC_SUPERSET_HOME", &home)
        .env("PCSYNC_SUPERSET_PORT", port.to_string())
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .expect("deploy/superset/run starts");
    let mut served = Served(child);
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    loop {
        if let Ok(Some(status)) = served.0.try_wait() {
            panic!(
                "deploy/superset/run ended ({status}) before serving:\n{}",
                log_tail(&log)
            );
        }
        let up = http
            .get(format!("{base}/health"))
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        if up {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(900),
            "Superset did not come up in 15 minutes:\n{}",
            log_tail(&log)
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    eprintln!(
        "Superset installed, imported and serving after {:.0} s",
        started.elapsed().as_secs_f64()
    );
    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        log_text.contains("sign in as admin with the password"),
        "run says where to open it and how to sign in:\n{log_text}"
    );
    assert!(
        log_text.contains("connects to the database as postgresql://pcsync_superset@"),
        "as the read-only login, its password not shown:\n{log_text}"
    );

    let screenshot = dir.join("dashboard.png");
    let check = Command::new(home.join("venv/bin/python"))
        .arg(root.join("deploy/superset/check.py"))
        .args(["--url", &base])
        .arg("--password-file")
        .arg(home.join("admin_password"))
        .args(["--database-url", &db.url])
        .arg("--screenshot")
        .arg(&screenshot)
        .output()
        .expect("check.py runs");
    let said = String::from_utf8_lossy(&check.stdout).to_string()
        + &String::from_utf8_lossy(&check.stderr);
    eprintln!("{said}");
    assert!(
        check.status.success(),
        "the dashboard checks failed:\n{said}"
    );
    assert!(said.contains("the quarter chart equals license_counts_quarter_end"));
    assert!(screenshot.exists(), "the dashboard was drawn");
    drop(served);
    let _ = std::fs::remove_dir_all(&dir);
}
