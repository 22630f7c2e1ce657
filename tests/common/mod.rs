//! Test harness: one fresh PostgreSQL database per test, on a real server found (or started)
//! by `pcsync::pgserver`, dropped again when the test ends.
#![allow(dead_code)] // each test binary uses a different part of the harness

use std::sync::OnceLock;

use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection, PgConnection, PgPool};

use pcsync::pgserver::PgServer;

#[cfg(feature = "simulator")]
pub mod sim;

fn server() -> &'static PgServer {
    static SERVER: OnceLock<PgServer> = OnceLock::new();
    SERVER.get_or_init(|| match PgServer::find_or_start() {
        Ok(s) => s,
        Err(e) => panic!("integration tests need PostgreSQL: {e}"),
    })
}

/// A database of its own for one test.
pub struct TestDb {
    pub pool: PgPool,
    pub url: String,
    name: String,
}

impl TestDb {
    /// A fresh database with every migration applied.
    pub async fn migrated() -> TestDb {
        let db = TestDb::empty().await;
        pcsync::db::migrate(&db.pool)
            .await
            .expect("migrations apply");
        db
    }

    /// A fresh, empty database.
    pub async fn empty() -> TestDb {
        let server = server();
        let name = format!("pcsync_test_{}", uuid::Uuid::new_v4().simple());
        let mut admin = PgConnection::connect(&server.admin_url())
            .await
            .expect("connect to the PostgreSQL server");
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .expect("create the test database");
        let url = server.database_url(&name);
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .connect(&url)
            .await
            .expect("connect to the test database");
        TestDb { pool, url, name }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        // Drop is not async; a short-lived runtime on its own thread does the cleanup. The
        // pool belongs to the test's runtime, so it is not touched here: FORCE ends its sessions.
        let admin_url = server().admin_url();
        let name = self.name.clone();
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                if let Ok(mut admin) = PgConnection::connect(&admin_url).await {
                    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .execute(&mut admin)
                        .await;
                }
            });
        })
        .join();
    }
}

/// Where the published Partner Center bodies are (`PCSYNC_PC_REAL`, else `../shared/pc-real`
/// beside the project), read at test time and never copied into the repository. `None` when
/// they are not there; under `CI=true` that fails the test instead.
pub fn pc_real_dir() -> Option<std::path::PathBuf> {
    let dir = std::env::var_os("PCSYNC_PC_REAL")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/pc-real")
        });
    if dir.is_dir() {
        return Some(dir);
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "the published Partner Center bodies are expected at {} (or PCSYNC_PC_REAL)",
        dir.display()
    );
    eprintln!(
        "{} is not here: the published Partner Center bodies are not checked",
        dir.display()
    );
    None
}
