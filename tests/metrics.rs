//! The metrics in the operator's tools: a real Prometheus (Debian's `prometheus`) scrapes a
//! running `pcsync run` worker and a real Pushgateway (`prometheus-pushgateway`) that a
//! `run --once` pass pushed to; PromQL through Prometheus's HTTP API returns the passes'
//! requests and changes; the textfile passes `promtool check metrics`; credentials in the
//! Pushgateway URL and the webhook URL appear nowhere. Without those tools the tests say so and
//! pass, unless `CI=true` or `PCSYNC_REQUIRE_PROMETHEUS=1`: then they fail.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::sim::{self, Setup};
use pcsync::simulator::SimConfig;
use tokio::process::{Child, Command};

fn required() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
        || std::env::var("PCSYNC_REQUIRE_PROMETHEUS").is_ok_and(|v| v == "1")
}

fn tool(name: &str) -> Option<String> {
    ["/usr/bin", "/usr/local/bin", "/bin"]
        .iter()
        .map(|d| format!("{d}/{name}"))
        .find(|p| std::path::Path::new(p).exists())
}

/// The three tools, or why not.
fn tools() -> Option<(String, String, String)> {
    let found = (
        tool("prometheus"),
        tool("prometheus-pushgateway"),
        tool("promtool"),
    );
    match found {
        (Some(p), Some(g), Some(t)) => Some((p, g, t)),
        _ => {
            assert!(
                !required(),
                "the metrics tests need prometheus, prometheus-pushgateway and promtool (apt install prometheus prometheus-pushgateway)"
            );
            eprintln!("skipped: prometheus, prometheus-pushgateway or promtool is missing");
            None
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

async fn get(url: &str) -> Option<(u16, String)> {
    let r = reqwest::Client::new()
        .get(url)
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .ok()?;
    let status = r.status().as_u16();
    Some((status, r.text().await.ok()?))
}

async fn wait_until<F, Fut>(what: &str, secs: u64, mut ready: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    while !ready().await {
        assert!(
            started.elapsed() < Duration::from_secs(secs),
            "{what} within {secs} s"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

fn spawn(program: &str, args: &[String]) -> Child {
    Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("{program} starts: {e}"))
}

/// A PromQL query's single value through Prometheus's HTTP API.
async fn promql(prometheus: &str, query: &str) -> Option<f64> {
    let url = format!(
        "{prometheus}/api/v1/query?query={}",
        query
            .bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'_' | b'.' => (b as char).to_string(),
                _ => format!("%{b:02X}"),
            })
            .collect::<String>()
    );
    let (_, body) = get(&url).await?;
    let v: serde_json::Value = serde_json::from_str(&body).ok()?;
    v["data"]["result"][0]["value"][1]
        .as_str()
        .and_then(|s| s.parse().ok())
}

async fn run_row(s: &Setup, trigger: &str) -> (i64, i64) {
    let (requests, changes): (i32, i32) = sqlx::query_as(
        "SELECT api_requests, changes_detected FROM pcsync.sync_runs WHERE trigger = $1
         ORDER BY started_at DESC LIMIT 1",
    )
    .bind(trigger)
    .fetch_one(&s.db.pool)
    .await
    .expect("a run row");
    (i64::from(requests), i64::from(changes))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_the_worker_and_the_pushgateway_and_no_secret_shows() {
    let Some((prometheus, pushgateway, promtool)) = tools() else {
        return;
    };
    let dir = tempfile::tempdir().expect("dir");
    let (hook, _got) = sim::webhook().await;
    let webhook_url = format!("{hook}/secret-webhook-path");

    // A Pushgateway, pushed to with credentials in its URL.
    let gw_port = free_port();
    let _gw = spawn(
        &pushgateway,
        &[
            format!("--web.listen-address=127.0.0.1:{gw_port}"),
            format!("--persistence.file={}", dir.path().join("gw").display()),
        ],
    );
    let gw = format!("http://127.0.0.1:{gw_port}");
    wait_until("the Pushgateway answers", 30, || async {
        get(&format!("{gw}/-/ready")).await.is_some()
    })
    .await;

    // run --once: pushes and writes the textfile.
    let once = sim::setup(SimConfig {
        customers: 6,
        ..SimConfig::default()
    })
    .await;
    let textfile = dir.path().join("pcsync.prom");
    let push_url = format!("http://pushuser:pushs3cret@127.0.0.1:{gw_port}");
    let out = sim::pcsync_command(
        &once,
        &[
            ("PCSYNC__METRICS__PUSHGATEWAY_URL", push_url.as_str()),
            (
                "PCSYNC__METRICS__TEXTFILE",
                textfile.to_string_lossy().as_ref(),
            ),
            ("PCSYNC__NOTIFY__WEBHOOK_URL", webhook_url.as_str()),
        ],
    )
    .env("RUST_LOG", "info")
    .output()
    .await
    .expect("run --once");
    let logs = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(0), "{logs}");
    assert!(logs.contains("metrics pushed"), "{logs}");
    let text = std::fs::read_to_string(&textfile).expect("the textfile");
    let check = std::process::Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(std::fs::File::open(&textfile).expect("open"))
        .output()
        .expect("promtool");
    assert!(
        check.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    let (_, pushed) = get(&format!("{gw}/metrics"))
        .await
        .expect("the pushed group");
    assert!(
        pushed.contains(r#"job="pcsync""#) && pushed.contains(r#"tenant="default""#),
        "grouped by job and tenant"
    );

    // A worker serving /metrics, with a pass a few seconds after it starts.
    let worker = sim::setup(SimConfig {
        customers: 5,
        ..SimConfig::default()
    })
    .await;
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let second = (chrono::Utc::now() + chrono::Duration::seconds(4))
        .format("%S")
        .to_string();
    let schedule = format!("{second} * * * * *");
    let mut worker_cmd = Command::new(env!("CARGO_BIN_EXE_pcsync"));
    worker_cmd
        .arg("run")
        .env_remove("DATABASE_URL")
        .envs(sim::env(
            &worker,
            &[
                ("PCSYNC__METRICS__LISTEN", listen.as_str()),
                ("PCSYNC__SYNC__SCHEDULE", schedule.as_str()),
                ("PCSYNC__METRICS__PUSHGATEWAY_URL", push_url.as_str()),
                ("PCSYNC__NOTIFY__WEBHOOK_URL", webhook_url.as_str()),
            ],
        ))
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut running = worker_cmd.spawn().expect("pcsync run");
    let base = format!("http://{listen}");
    wait_until("the worker serves /livez", 30, || async {
        get(&format!("{base}/livez"))
            .await
            .is_some_and(|(s, _)| s == 200)
    })
    .await;
    wait_until("the worker's first pass is in /metrics", 90, || async {
        get(&format!("{base}/metrics"))
            .await
            .is_some_and(|(_, t)| t.contains("pcsync_passes_total{"))
    })
    .await;
    let (status, health) = get(&format!("{base}/healthz")).await.expect("healthz");
    assert_eq!(status, 200, "{health}");
    assert!(health.starts_with("PCSYNC OK"), "{health}");
    let (_, served) = get(&format!("{base}/metrics")).await.expect("metrics");

    // Prometheus scrapes both.
    let prom_port = free_port();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: pcsync-worker\n    static_configs:\n      - targets: ['{listen}']\n  - job_name: pushgateway\n    honor_labels: true\n    static_configs:\n      - targets: ['127.0.0.1:{gw_port}']\n"
        ),
    )
    .expect("config");
    let _prom = spawn(
        &prometheus,
        &[
            format!("--config.file={}", config.display()),
            format!("--storage.tsdb.path={}", dir.path().join("tsdb").display()),
            format!("--web.listen-address=127.0.0.1:{prom_port}"),
        ],
    );
    let prom = format!("http://127.0.0.1:{prom_port}");
    let (worker_requests, worker_changes) = run_row(&worker, "schedule").await;
    let (once_requests, once_changes) = run_row(&once, "once").await;
    assert!(worker_changes > 0 && once_changes > 0);
    wait_until(
        "Prometheus has the worker's and the pushed metrics",
        60,
        || async {
            promql(&prom, r#"sum(pcsync_requests_total{job="pcsync-worker"})"#)
                .await
                .is_some()
                && promql(&prom, r#"sum(pcsync_requests_total{job="pcsync"})"#)
                    .await
                    .is_some()
        },
    )
    .await;
    assert_eq!(
        promql(&prom, r#"sum(pcsync_requests_total{job="pcsync-worker"})"#).await,
        Some(worker_requests as f64),
        "the worker's requests through PromQL"
    );
    assert_eq!(
        promql(
            &prom,
            r#"sum(pcsync_change_events_total{job="pcsync-worker"})"#
        )
        .await,
        Some(worker_changes as f64),
        "the worker's changes through PromQL"
    );
    assert_eq!(
        promql(
            &prom,
            r#"sum(pcsync_requests_total{job="pcsync",tenant="default"})"#
        )
        .await,
        Some(once_requests as f64),
        "the pushed pass's requests through PromQL"
    );
    assert_eq!(
        promql(&prom, r#"sum(pcsync_change_events_total{job="pcsync"})"#).await,
        Some(once_changes as f64),
        "the pushed pass's changes through PromQL"
    );

    let _ = running.start_kill();
    let worker_logs = running
        .wait_with_output()
        .await
        .map(|o| String::from_utf8_lossy(&o.stderr).to_string())
        .unwrap_or_default();
    for (place, body) in [
        ("/metrics", served.as_str()),
        ("the textfile", text.as_str()),
        ("the pushed group", pushed.as_str()),
        ("the run --once logs", logs.as_str()),
        ("the worker's logs", worker_logs.as_str()),
    ] {
        for secret in ["pushs3cret", "pushuser", "secret-webhook-path"] {
            assert!(!body.contains(secret), "{secret} shows in {place}");
        }
    }
}
