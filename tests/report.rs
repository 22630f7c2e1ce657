//! `pcsync report` (issue 12): a self-contained HTML file that holds the views' numbers and
//! renders in headless Chromium without console errors.
#![cfg(feature = "simulator")]

mod common;

use common::sim::{pass, setup};
use pcsync::simulator::SimConfig;

#[tokio::test]
async fn the_report_holds_the_views_numbers_and_renders_offline() {
    let s = setup(SimConfig {
        customers: 12,
        ..SimConfig::default()
    })
    .await;
    pass(&s, &[]).await;
    let data = pcsync::report::read(&s.db.pool, &s.sim.clock(), None)
        .await
        .expect("report data");
    let html = pcsync::report::render(&data);

    // The numbers of the views.
    let (licenses, subscriptions): (i64, i64) = sqlx::query_as(
        "SELECT sum(licenses)::bigint, sum(subscriptions)::bigint FROM pcsync.license_totals",
    )
    .fetch_one(&s.db.pool)
    .await
    .expect("totals");
    assert!(html.contains(&format!("<b id=\"total-licenses\">{licenses}</b>")));
    assert!(html.contains(&format!("<b>{subscriptions}</b>subscriptions")));
    let (largest, its_licenses): (String, i64) = sqlx::query_as(
        "SELECT company_name, sum(licenses)::bigint FROM pcsync.license_totals
         GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 1",
    )
    .fetch_one(&s.db.pool)
    .await
    .expect("largest");
    assert!(
        html.contains(&format!("{largest}: {its_licenses} licenses")),
        "largest customer"
    );
    assert!(html.contains(">succeeded<"), "pass health");
    // The simulator's terms end in the coming weeks (its dates count from today), so the
    // renewal calendar and the renewal decisions have bars; the first load is not drawn as a
    // day of changes.
    assert_eq!(
        html.matches("<svg").count(),
        5,
        "licenses, customers, renewals, decisions and unassigned-seats charts; no changes chart"
    );
    let added = common::sim::count(&s.db.pool, "SELECT count(*) FROM pcsync.change_events").await;
    assert!(html.contains(&format!(
        "Not drawn: {added} objects added by customers' first loads"
    )));
    let mut tx = s.db.pool.begin().await.expect("tx");
    pcsync::clock::set_for_transaction(&mut tx, &s.sim.clock())
        .await
        .expect("clock");
    let decisions: i64 =
        sqlx::query_scalar("SELECT least(count(*), 50) FROM pcsync.renewal_decisions")
            .fetch_one(&mut *tx)
            .await
            .expect("decisions");
    let windows: i64 =
        sqlx::query_scalar("SELECT least(count(*), 50) FROM pcsync.cancellation_windows")
            .fetch_one(&mut *tx)
            .await
            .expect("windows");
    let unassigned: i64 =
        sqlx::query_scalar("SELECT least(count(*), 50) FROM pcsync.unassigned_seats")
            .fetch_one(&mut *tx)
            .await
            .expect("unassigned");
    drop(tx);
    assert!(
        decisions > 0 && windows > 0 && unassigned > 0,
        "the simulator has all three"
    );
    let rows_of = |id: &str| {
        let at = html.find(&format!("<table id=\"{id}\">")).expect(id);
        let end = at + html[at..].find("</table>").expect("end");
        html[at..end].matches("<tr").count() as i64 - 1
    };
    assert_eq!(rows_of("decisions"), decisions, "one row per decision");
    assert_eq!(rows_of("windows"), windows, "one row per open window");
    assert_eq!(
        rows_of("unassigned"),
        unassigned,
        "one row per customer and SKU"
    );

    // Self-contained: nothing fetched from elsewhere (the SVG namespace is a name, not a fetch).
    let without_namespace = html.replace("xmlns=\"http://www.w3.org/2000/svg\"", "");
    for external in ["http://", "https://", "src=", "<link", "<script", "@import"] {
        assert!(
            !without_namespace.contains(external),
            "{external} in the report"
        );
    }
    for secret in [
        "sim-client-secret",
        "sim-refresh-token",
        "sim-rt-",
        "sim-at-",
    ] {
        assert!(!html.contains(secret), "{secret} in the report");
    }

    // Rendered by a browser, offline, without console errors.
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("report.html");
    std::fs::write(&file, &html).expect("write");
    let chromium = ["chromium", "chromium-browser"].into_iter().find(|c| {
        std::process::Command::new(c)
            .arg("--version")
            .output()
            .is_ok()
    });
    let Some(chromium) = chromium else {
        assert!(
            std::env::var_os("PCSYNC_REQUIRE_CHROMIUM").is_none(),
            "headless Chromium is required here: apt-get install chromium"
        );
        eprintln!("headless Chromium not installed: the report's rendering was not checked");
        return;
    };
    let shot = dir.path().join("report.png");
    let out = tokio::process::Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--enable-logging=stderr",
            "--v=0",
            "--window-size=900,1800",
        ])
        .arg(format!("--screenshot={}", shot.display()))
        .arg(format!("file://{}", file.display()))
        .output()
        .await
        .expect("chromium runs");
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!(
        std::fs::metadata(&shot).is_ok_and(|m| m.len() > 10_000),
        "a screenshot was drawn"
    );
    let console_errors: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("CONSOLE") || l.contains("Uncaught"))
        .collect();
    assert!(console_errors.is_empty(), "{console_errors:?}");
}
