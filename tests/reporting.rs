//! The reporting schema (issue 10) as an analyst meets it: views over a real PostgreSQL
//! database filled by real passes against the simulator.
#![cfg(feature = "simulator")]
#![allow(clippy::type_complexity)]

mod common;

use chrono::{DateTime, Utc};
use common::sim::{count, pass, setup};
use pcsync::simulator::{Change, FaultKind, FaultRule, Knobs, SimConfig};
use pcsync::sync::RunStatus;
use uuid::Uuid;

async fn in_view(pool: &sqlx::PgPool, view: &str, customer: Uuid) -> i64 {
    sqlx::query_scalar(&format!(
        "SELECT count(*) FROM pcsync.{view} WHERE customer_id = $1"
    ))
    .bind(customer)
    .fetch_one(pool)
    .await
    .expect(view)
}

/// `customer_health` says who is failing, since when, who lost access and who left the list;
/// the current views leave out customers that left or lost access.
#[tokio::test]
async fn customer_health_and_the_current_views() {
    let s = setup(SimConfig {
        customers: 6,
        ..SimConfig::default()
    })
    .await;
    let first = pass(&s, &[]).await;
    assert_eq!(first.status, RunStatus::Succeeded);
    let ids = s.sim.customer_ids();
    let (lost, failing, left, healthy) = (ids[1], ids[2], ids[3], ids[4]);
    for id in [lost, failing, left, healthy] {
        assert!(in_view(&s.db.pool, "current_subscriptions", id).await > 0);
        assert!(in_view(&s.db.pool, "license_totals", id).await > 0);
    }

    s.sim
        .apply(Change::RemoveRelationship { customer_id: lost })
        .expect("403");
    s.sim.set_knobs(Knobs {
        faults: vec![FaultRule::always(FaultKind::Status500).for_customer(failing)],
        ..Knobs::default()
    });
    let csv = std::fs::read_to_string(&s.csv).expect("csv");
    let without_left: String = csv
        .lines()
        .filter(|l| !l.starts_with(&left.to_string()))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&s.csv, without_left).expect("csv");
    let second = pass(&s, &[]).await;
    assert_eq!(second.status, RunStatus::Partial);
    let first_finished: DateTime<Utc> =
        sqlx::query_scalar("SELECT finished_at FROM pcsync.sync_runs WHERE run_id = $1")
            .bind(first.run_id)
            .fetch_one(&s.db.pool)
            .await
            .expect("run");
    let second_finished: DateTime<Utc> =
        sqlx::query_scalar("SELECT finished_at FROM pcsync.sync_runs WHERE run_id = $1")
            .bind(second.run_id)
            .fetch_one(&s.db.pool)
            .await
            .expect("run");

    let health = |id: Uuid| {
        let pool = s.db.pool.clone();
        async move {
            let row: (
                bool,
                String,
                Option<DateTime<Utc>>,
                Option<DateTime<Utc>>,
                Option<String>,
                bool,
            ) = sqlx::query_as(
                "SELECT listed, status, last_confirmed_at, failing_since, last_error_code, access_lost
                 FROM pcsync.customer_health WHERE customer_id = $1",
            )
            .bind(id)
            .fetch_one(&pool)
            .await
            .expect("health");
            row
        }
    };
    let (listed, status, confirmed, since, code, access_lost) = health(lost).await;
    assert!(listed);
    assert_eq!(status, "failed");
    assert_eq!(
        confirmed,
        Some(first_finished),
        "last confirmed by the first pass"
    );
    assert!(since.is_some());
    assert_eq!(code.as_deref(), Some("20002"));
    assert!(access_lost);

    let (_, status, confirmed, since, code, access_lost) = health(failing).await;
    assert_eq!(status, "failed");
    assert_eq!(confirmed, Some(first_finished));
    assert!(since.is_some());
    assert_eq!(code.as_deref(), Some("500"));
    assert!(!access_lost);

    let (listed, _, confirmed, _, _, _) = health(left).await;
    assert!(!listed);
    assert_eq!(
        confirmed,
        Some(first_finished),
        "not confirmed after it left"
    );

    let (listed, status, confirmed, since, code, access_lost) = health(healthy).await;
    assert!(listed);
    assert_eq!(status, "succeeded");
    assert_eq!(confirmed, Some(second_finished));
    assert_eq!((since, code, access_lost), (None, None, false));

    // Lost access and left the list: out of the current views. Failing: still there, with
    // the data of its last confirmation.
    for id in [lost, left] {
        assert_eq!(in_view(&s.db.pool, "current_subscriptions", id).await, 0);
        assert_eq!(in_view(&s.db.pool, "license_totals", id).await, 0);
    }
    for id in [failing, healthy] {
        assert!(in_view(&s.db.pool, "current_subscriptions", id).await > 0);
    }
    let as_of: Option<DateTime<Utc>> = sqlx::query_scalar(
        "SELECT DISTINCT data_as_of FROM pcsync.current_subscriptions WHERE customer_id = $1",
    )
    .bind(failing)
    .fetch_one(&s.db.pool)
    .await
    .expect("as of");
    assert_eq!(as_of, Some(first_finished));

    // Access comes back: the customer is healthy and in the views again.
    s.sim
        .apply(Change::RestoreRelationship { customer_id: lost })
        .expect("restore");
    s.sim.set_knobs(Knobs::default());
    pass(&s, &[]).await;
    let (_, status, _, since, _, access_lost) = health(lost).await;
    assert_eq!(
        (status.as_str(), since, access_lost),
        ("succeeded", None, false)
    );
    assert!(in_view(&s.db.pool, "current_subscriptions", lost).await > 0);
    assert_eq!(
        count(
            &s.db.pool,
            "SELECT count(*) FROM pcsync.customers WHERE access_lost_at IS NOT NULL"
        )
        .await,
        0
    );
}

/// `pcsync_reader` (made by a migration) reads every table and view of `pcsync`, including
/// ones added by later migrations, and neither writes nor sees `pcsync_private`.
#[tokio::test]
async fn the_reader_role_reads_every_view_and_nothing_private() {
    let s = setup(SimConfig {
        customers: 3,
        ..SimConfig::default()
    })
    .await;
    pass(&s, &[]).await;
    let mut conn = s.db.pool.acquire().await.expect("conn");
    let relations: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = 'pcsync' AND c.relkind IN ('r', 'v') ORDER BY 1",
    )
    .fetch_all(&mut *conn)
    .await
    .expect("relations");
    for view in [
        "current_subscriptions",
        "license_totals",
        "recent_changes",
        "customer_health",
    ] {
        assert!(relations.iter().any(|r| r == view), "{view} exists");
    }
    sqlx::query("SET ROLE pcsync_reader")
        .execute(&mut *conn)
        .await
        .expect("the role exists");
    for r in &relations {
        sqlx::query(&format!("SELECT * FROM pcsync.{r} LIMIT 1"))
            .fetch_all(&mut *conn)
            .await
            .unwrap_or_else(|e| panic!("pcsync_reader cannot read {r}: {e}"));
    }
    for forbidden in [
        "SELECT * FROM pcsync_private.refresh_tokens",
        "UPDATE pcsync.customers SET company_name = 'x'",
        "DELETE FROM pcsync.change_events",
        "CREATE TABLE pcsync.mine (x int)",
    ] {
        let e = sqlx::query(forbidden)
            .execute(&mut *conn)
            .await
            .expect_err(forbidden);
        assert!(
            e.to_string().contains("permission denied"),
            "{forbidden}: {e}"
        );
    }
    sqlx::query("RESET ROLE")
        .execute(&mut *conn)
        .await
        .expect("reset");
    let ext_schema: String = sqlx::query_scalar(
        "SELECT n.nspname::text FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
         WHERE e.extname = 'btree_gist'",
    )
    .fetch_one(&mut *conn)
    .await
    .expect("btree_gist");
    assert_eq!(
        ext_schema, "pcsync_ext",
        "extensions live apart from the data"
    );
}

/// `pcsync run` works as a writer role without DDL rights once the schema is current (as the
/// README's three-role setup grants it), and never needs CREATEDB for an existing database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_works_as_a_writer_role_without_ddl_rights() {
    let s = setup(SimConfig {
        customers: 4,
        ..SimConfig::default()
    })
    .await;
    let writer = format!("pcsync_writer_{}", Uuid::new_v4().simple());
    for grant in [
        format!("CREATE ROLE {writer} LOGIN NOCREATEDB NOCREATEROLE"),
        format!("GRANT USAGE ON SCHEMA pcsync, pcsync_private TO {writer}"),
        format!("GRANT SELECT, INSERT, UPDATE ON ALL TABLES IN SCHEMA pcsync TO {writer}"),
        format!("GRANT USAGE ON ALL SEQUENCES IN SCHEMA pcsync TO {writer}"),
        format!("GRANT SELECT, INSERT, UPDATE ON pcsync_private.refresh_tokens TO {writer}"),
    ] {
        sqlx::query(&grant)
            .execute(&s.db.pool)
            .await
            .unwrap_or_else(|e| panic!("{grant}: {e}"));
    }
    let may_create: bool =
        sqlx::query_scalar("SELECT has_schema_privilege($1, 'pcsync', 'CREATE')")
            .bind(&writer)
            .fetch_one(&s.db.pool)
            .await
            .expect("privilege");
    assert!(!may_create, "the writer has no DDL rights");
    let mut url = reqwest::Url::parse(&s.db.url).expect("url");
    url.set_username(&writer).expect("user");
    let out = common::sim::pcsync_command(&s, &[("PCSYNC__DATABASE__URL", url.as_str())])
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
        count(
            &s.db.pool,
            "SELECT count(*) FROM pcsync.sync_runs WHERE status = 'succeeded'"
        )
        .await,
        1
    );
    for cleanup in [
        format!("DROP OWNED BY {writer}"),
        format!("DROP ROLE {writer}"),
    ] {
        let _ = sqlx::query(&cleanup).execute(&s.db.pool).await;
    }
}
