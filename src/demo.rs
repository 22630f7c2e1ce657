//! `pcsync demo`: pcsync end to end with no Microsoft account and no configuration. Starts the
//! simulated Partner Center in-process, finds a database (as the test harness does), and on one
//! clock shared with the simulator writes a quarter of history as the passes would have written
//! it: a first load 13 weeks ago, then daily incremental passes and a weekly full pass while
//! partner users change things and Microsoft rolls terms over. Then it changes a few things
//! today, syncs once more, and reports what was detected.

use std::collections::HashMap;

use chrono::{DateTime, Duration, Utc};
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

use crate::config::{Settings, Sources};
use crate::exit::Exit;
use crate::pgserver::PgServer;
use crate::simulator::{Change, SimConfig, Simulator};
use crate::sync::{self, PassReport, Trigger};
use crate::{db, telemetry};

const DEMO_DATABASE: &str = "pcsync_demo";

/// How far back the demo's history begins: 13 weeks, a quarter.
pub const HISTORY_DAYS: i64 = 91;

/// company, object, object id, licenses, kind, field, old value, new value
type SampleRow = (
    String,
    Option<String>,
    String,
    Option<i64>,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
);

pub async fn run(customers: u32) -> Exit {
    // The demo prints its own report; the per-change log lines stay available with RUST_LOG=info.
    telemetry::init_with_default(crate::config::LogFormat::Text, "warn");
    match demo(customers).await {
        Ok(exit) => exit,
        Err(e) => {
            eprintln!("pcsync demo: {e}");
            Exit::Fatal
        }
    }
}

async fn demo(customers: u32) -> anyhow::Result<Exit> {
    let server = tokio::task::spawn_blocking(PgServer::find_or_start).await??;
    let mut admin = PgConnection::connect(&server.admin_url()).await?;
    sqlx::query(&format!(
        "DROP DATABASE IF EXISTS {DEMO_DATABASE} WITH (FORCE)"
    ))
    .execute(&mut admin)
    .await?;
    sqlx::query(&format!("CREATE DATABASE {DEMO_DATABASE}"))
        .execute(&mut admin)
        .await?;
    admin.close().await?;
    let database_url = server.database_url(DEMO_DATABASE);

    let now = Utc::now();
    let dir = tempfile_dir()?;
    let world = World::start(&database_url, customers, now, &dir).await?;
    let (sim, settings, clock) = (&world.sim, &world.settings, &world.clock);
    let start = now - Duration::days(HISTORY_DAYS);
    let shown_url = settings.database.redacted_url();

    println!("pcsync demo");
    println!(
        "  Partner Center: simulated at {} ({customers} customers)",
        sim.base_url()
    );
    println!(
        "  PostgreSQL:     {shown_url}{}",
        if server.is_throwaway() {
            " (a throwaway cluster, removed when the demo ends)"
        } else {
            ""
        }
    );

    let pool = db::connect(&settings.database).await?;
    db::migrate(&pool).await?;
    let stop = tokio_util::sync::CancellationToken::new();

    let first = world.first_load(&pool).await?;
    let subs: i64 = sqlx::query_scalar("SELECT count(*) FROM pcsync.subscriptions")
        .fetch_one(&pool)
        .await?;
    let services: i64 = sqlx::query_scalar("SELECT count(*) FROM pcsync.managed_services")
        .fetch_one(&pool)
        .await?;
    println!();
    print_pass(
        &format!(
            "pass 1 (first load, {} 13 weeks ago)",
            start.format("%Y-%m-%d")
        ),
        &first,
    );
    println!("  stored: {subs} subscriptions, {services} managed services");
    let history = world.quarter(&pool).await?;
    println!(
        "  13 weeks of history on the demo's clock: {} full and {} incremental passes, {} changes recorded (partner users made {} changes in the simulated Partner Center, some on other partners' subscriptions; Microsoft rolled terms over, renewed and ended others)",
        history.full, history.incremental, history.changes, history.partner_changes
    );
    clock.set(now - Duration::hours(1));

    // What a week in Partner Center might bring.
    let mut simulated = sim.mutate(0.02, 7);
    let ids = sim.customer_ids();
    let pick = |i: usize| ids[i % ids.len()];
    if let Some(c) = sim.customer(pick(1)) {
        // One of our partner's: pcsync fetches those (?mpn_id=), so the removal shows.
        if let Some(id) = c
            .subscriptions
            .iter()
            .find(|s| s["partnerId"] == crate::simulator::SEED_MPN_ID)
            .and_then(|s| s["id"].as_str())
        {
            simulated.extend(sim.apply(Change::RemoveSubscription {
                customer_id: c.id,
                subscription_id: id.to_string(),
            })?);
        }
    }
    simulated.extend(sim.apply(Change::AddSubscription {
        customer_id: pick(2),
        subscription: None,
    })?);
    if let Some(c) = sim.customer(pick(3)) {
        if let Some(id) = c.managed_services.first().and_then(|s| s["id"].as_str()) {
            simulated.extend(sim.apply(Change::RemoveManagedService {
                customer_id: c.id,
                service_id: id.to_string(),
            })?);
        }
    }
    // Changes to another partner's subscriptions are not fetched for these customers.
    let other_partners = simulated
        .iter()
        .filter(|m| m.entity == "subscription")
        .filter(|m| {
            sim.customer(m.customer_id).is_some_and(|c| {
                c.subscriptions.iter().any(|s| {
                    s["id"] == m.entity_id.as_str()
                        && s["partnerId"] != crate::simulator::SEED_MPN_ID
                })
            })
        })
        .count();
    println!();
    println!(
        "  simulated in Partner Center: {} changes (status flips, quantity edits, renewals, term and auto-renew changes, one subscription removed, one added, one managed service removed)",
        simulated.len()
    );
    if other_partners > 0 {
        println!(
            "  of them {other_partners} on other partners' subscriptions, which pcsync does not fetch for these customers (their mpn_id is {}): expect {} recorded",
            crate::simulator::SEED_MPN_ID,
            simulated.len() - other_partners
        );
    }

    clock.set(now);
    let second = sync::run_pass(
        settings,
        &pool,
        Trigger::Demo,
        sync::PassChoice::Incremental,
        stop,
    )
    .await?;
    println!();
    print_pass(
        &format!(
            "pass 2 ({}: {} activity records read; {} changes attributed to who made them)",
            second.kind.as_str(),
            second.activity_records,
            second.attributed
        ),
        &second,
    );
    let by_kind: Vec<(String, String, Option<String>, i64)> = sqlx::query_as(
        "SELECT entity, kind, field, count(*) FROM pcsync.change_events WHERE run_id = $1
         GROUP BY entity, kind, field ORDER BY entity, kind, field",
    )
    .bind(second.run_id)
    .fetch_all(&pool)
    .await?;
    println!("  changes detected, by kind:");
    for (entity, kind, field, n) in &by_kind {
        println!(
            "    {entity:<16} {kind:<8} {:<22} {n:>5}",
            field.as_deref().unwrap_or("")
        );
    }
    let samples: Vec<SampleRow> =
        sqlx::query_as(
            "SELECT coalesce(r.company_name, r.customer_id::text), r.object_name, r.entity_id, s.quantity,
                    r.kind, r.field, r.old_value, r.new_value
             FROM pcsync.recent_changes r
             LEFT JOIN pcsync.subscriptions s
               ON r.entity = 'subscription' AND s.customer_id = r.customer_id AND s.subscription_id = r.entity_id
             WHERE r.run_id = $1 ORDER BY r.event_id LIMIT 8",
        )
        .bind(second.run_id)
        .fetch_all(&pool)
        .await?;
    println!("  a few of them:");
    for (company, object, id, licenses, kind, field, old, new) in &samples {
        let what = match (field, licenses) {
            (Some(f), _) => format!(
                "{f}: {} -> {}",
                old.as_deref().unwrap_or("(none)"),
                new.as_deref().unwrap_or("(none)")
            ),
            (None, Some(n)) => format!("({id}, {n} licenses)"),
            (None, None) => format!("({id})"),
        };
        println!(
            "    {company} / {}: {kind} {what}",
            object.as_deref().unwrap_or("?")
        );
    }
    let report_path = std::env::temp_dir().join("pcsync-demo-report.html");
    match crate::report::read(&pool, &settings.clock, None).await {
        Ok(data) => match std::fs::write(&report_path, crate::report::render(&data)) {
            Ok(()) => {
                println!();
                println!(
                    "  a report to open in a browser (offline, one file): {}",
                    report_path.display()
                );
            }
            Err(e) => eprintln!("  (the report could not be written: {e})"),
        },
        Err(e) => eprintln!("  (the report could not be read: {e})"),
    }
    println!();
    if server.is_throwaway() {
        println!(
            "The data lived in a throwaway cluster and is gone with it. With a PostgreSQL server on 127.0.0.1:5432 (or DATABASE_URL), the demo keeps its database to look at."
        );
    } else {
        println!(
            "Look at the data (the database {DEMO_DATABASE} is kept; the next demo replaces it):"
        );
        println!(
            "  psql '{shown_url}' -c \"SELECT company_name, object_name, kind, field, old_value, new_value FROM pcsync.recent_changes ORDER BY event_id DESC LIMIT 20\""
        );
        println!(
            "  psql '{shown_url}' -c \"SELECT company_name, offer_name, status, licenses FROM pcsync.license_totals ORDER BY licenses DESC LIMIT 20\""
        );
        println!("  psql '{shown_url}' -c \"SELECT * FROM pcsync.sync_runs ORDER BY started_at\"");
    }
    pool.close().await;
    drop(world);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(
        if first.customers_failed + history.failed + second.customers_failed == 0 {
            Exit::Ok
        } else {
            Exit::Partial
        },
    )
}

/// What the quarter of history held.
#[derive(Debug, Default)]
pub struct History {
    pub full: u32,
    pub incremental: u32,
    pub changes: u64,
    pub partner_changes: usize,
    pub failed: u64,
}

/// The demo's simulated Partner Center, on a clock shared with the passes and set 13 weeks
/// before `now`, and the settings that sync it into a database. The tests use it to write the
/// same quarter of history.
pub struct World {
    pub sim: Simulator,
    pub settings: Settings,
    pub clock: crate::clock::Clock,
    pub start: DateTime<Utc>,
    pub now: DateTime<Utc>,
}

impl World {
    /// Starts the simulator with `customers` on a clock at `now` less 13 weeks, and writes its
    /// customer list into `dir`.
    pub async fn start(
        database_url: &str,
        customers: u32,
        now: DateTime<Utc>,
        dir: &std::path::Path,
    ) -> anyhow::Result<World> {
        let start = now - Duration::days(HISTORY_DAYS);
        let clock = crate::clock::Clock::at(start);
        let sim = Simulator::start(SimConfig {
            customers,
            clock: clock.clone(),
            ..SimConfig::default()
        })
        .await?;
        let csv = dir.join("customers.csv");
        std::fs::write(&csv, sim.customers_csv())?;
        let mut env: HashMap<String, String> = sim.env_vars().into_iter().collect();
        env.insert("PCSYNC__DATABASE__URL".into(), database_url.to_string());
        env.insert(
            "PCSYNC__CUSTOMERS__FILE".into(),
            csv.to_string_lossy().to_string(),
        );
        env.insert(
            "PCSYNC__PARTNER_CENTER__REQUESTS_PER_MINUTE".into(),
            "100000".into(),
        );
        env.insert(
            "PCSYNC__PARTNER_CENTER__MAX_CONCURRENCY".into(),
            "16".into(),
        );
        let mut settings = Settings::load(&Sources { file: None, env })?;
        settings.clock = clock.clone();
        Ok(World {
            sim,
            settings,
            clock,
            start,
            now,
        })
    }

    /// The first load, 13 weeks ago.
    pub async fn first_load(&self, pool: &sqlx::PgPool) -> anyhow::Result<PassReport> {
        self.clock.set(self.start);
        Ok(sync::run_pass(
            &self.settings,
            pool,
            Trigger::Demo,
            sync::PassChoice::Full,
            tokio_util::sync::CancellationToken::new(),
        )
        .await?)
    }

    /// The 13 weeks after the first load, up to two hours before `now`: each day, partner users
    /// change a few subscriptions in the afternoon (one added every third day, one removed every
    /// tenth) and a pass runs the next morning, a full one every seventh day and an incremental
    /// one otherwise. Microsoft's own changes (roll-overs, renewals, expiries) happen on the
    /// simulator's clock as it moves. Ends with ANALYZE, as autovacuum would have run by then.
    pub async fn quarter(&self, pool: &sqlx::PgPool) -> anyhow::Result<History> {
        let (sim, clock) = (&self.sim, &self.clock);
        let mut h = History::default();
        let ids = sim.customer_ids();
        for day in 1..HISTORY_DAYS {
            let pass_at = self.start + Duration::days(day);
            if pass_at >= self.now - Duration::hours(2) {
                break;
            }
            clock.set(pass_at - Duration::hours(12));
            h.partner_changes += sim.mutate(0.003, day as u64).len();
            let pick = ids[(day as usize * 7) % ids.len()];
            if day % 3 == 0 {
                h.partner_changes += sim
                    .apply(Change::AddSubscription {
                        customer_id: pick,
                        subscription: None,
                    })?
                    .len();
            }
            if day % 10 == 0 {
                if let Some(id) = sim.customer(pick).and_then(|c| {
                    c.subscriptions
                        .iter()
                        .filter(|s| s["partnerId"] == crate::simulator::SEED_MPN_ID)
                        .find_map(|s| s["id"].as_str().map(str::to_string))
                }) {
                    h.partner_changes += sim
                        .apply(Change::RemoveSubscription {
                            customer_id: pick,
                            subscription_id: id,
                        })?
                        .len();
                }
            }
            clock.set(pass_at);
            let choice = if day % 7 == 0 {
                sync::PassChoice::Full
            } else {
                sync::PassChoice::Incremental
            };
            let r = sync::run_pass(
                &self.settings,
                pool,
                Trigger::Demo,
                choice,
                tokio_util::sync::CancellationToken::new(),
            )
            .await?;
            match r.kind {
                sync::PassKind::Full => h.full += 1,
                sync::PassKind::Incremental => h.incremental += 1,
            }
            h.changes += r.changes;
            h.failed += r.customers_failed;
        }
        sqlx::query("ANALYZE").execute(pool).await?;
        Ok(h)
    }
}

fn print_pass(title: &str, r: &PassReport) {
    let f = r.fetched;
    let why = if r.kind == sync::PassKind::Incremental {
        format!(
            " ({} named by the activity log, {} whose dates came due, {} new, {} retried)",
            f.named, f.due, f.new, f.retried
        )
    } else {
        String::new()
    };
    println!(
        "  {title}: {} of {} customers synced{why}, {} failed; {} changes recorded; {} requests ({} throttled, {} retried) in {:.1} s",
        r.customers_succeeded,
        r.customers_total,
        r.customers_failed,
        r.changes,
        r.api_requests,
        r.throttled,
        r.retries,
        r.elapsed.as_secs_f64()
    );
}

fn tempfile_dir() -> std::io::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("pcsync-demo-{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
