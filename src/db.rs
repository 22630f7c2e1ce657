//! The database connection and the schema migrations (embedded in the binary).

use std::str::FromStr;
use std::time::Duration;

use secrecy::ExposeSecret;
use sqlx::migrate::{MigrateDatabase, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Postgres};

use crate::config::DatabaseSettings;

/// Every migration in `migrations/`, compiled in.
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// The schema that holds every pcsync object.
pub const SCHEMA: &str = "pcsync";

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error(
        "cannot connect to PostgreSQL at {url}: {reason}. Check database.url (or DATABASE_URL) and that the server is running"
    )]
    Connect { url: String, reason: String },
    #[error("cannot create the database at {url}: {reason}. Create it yourself or grant CREATEDB")]
    Create { url: String, reason: String },
    #[error(
        "migrating the database failed: {0}. Migrations are forward-only; a database changed by hand may need repair"
    )]
    Migrate(String),
    #[error(
        "the database schema is not current and database.migrate_on_start is false: run `pcsync migrate` as the schema's owner"
    )]
    SchemaNotCurrent,
    #[error("database error: {0}")]
    Query(#[from] sqlx::Error),
}

/// sqlx's connection errors name host and user but never the password; still, only the
/// redacted URL is put beside them.
fn connect_reason(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Database(d) => d.message().to_string(),
        sqlx::Error::Io(io) => io.to_string(),
        sqlx::Error::PoolTimedOut => "timed out".to_string(),
        sqlx::Error::Tls(t) => format!("TLS: {t}"),
        other => other.to_string(),
    }
}

fn options(settings: &DatabaseSettings) -> Result<PgConnectOptions, DbError> {
    PgConnectOptions::from_str(settings.url.expose_secret())
        // A commit does not wait for its WAL flush. After a crash the last fraction of a
        // second of writes may be gone, always whole (a customer's rows with their events),
        // and the next pass detects those changes again. The refresh token store asks for a
        // synchronous commit itself.
        .map(|o| {
            o.application_name("pcsync")
                .options([("synchronous_commit", "off")])
        })
        .map_err(|e| DbError::Connect {
            url: settings.redacted_url(),
            reason: connect_reason(&e),
        })
}

/// Connects, creating the database first when it does not exist yet (a fresh server should
/// need no manual step). An existing database is connected to directly: no `CREATEDB` right and
/// no access to the server's maintenance database is needed then.
pub async fn connect(settings: &DatabaseSettings) -> Result<PgPool, DbError> {
    let options = options(settings)?;
    match open_pool(settings.max_connections, options.clone()).await {
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("3D000") => {
            Postgres::create_database(settings.url.expose_secret())
                .await
                .map_err(|e| DbError::Create {
                    url: settings.redacted_url(),
                    reason: connect_reason(&e),
                })?;
            tracing::info!(url = %settings.redacted_url(), "created the database");
            open_pool(settings.max_connections, options).await
        }
        other => other,
    }
    .map_err(|e| DbError::Connect {
        url: settings.redacted_url(),
        reason: connect_reason(&e),
    })
}

/// Connects to an existing database; never creates one (`pcsync check`, `pcsync status`).
pub async fn connect_existing(settings: &DatabaseSettings) -> Result<PgPool, DbError> {
    open_pool(settings.max_connections, options(settings)?)
        .await
        .map_err(|e| DbError::Connect {
            url: settings.redacted_url(),
            reason: connect_reason(&e),
        })
}

async fn open_pool(max_connections: u32, options: PgConnectOptions) -> Result<PgPool, sqlx::Error> {
    PgPoolOptions::new()
        .max_connections(max_connections)
        // A broken connection shows on its next query anyway; a ping before every
        // acquire would double the round trips of a pass.
        .test_before_acquire(false)
        .acquire_timeout(Duration::from_secs(30))
        .connect_with(options)
        .await
}

/// Brings the schema up to date when `database.migrate_on_start` allows, touching nothing when
/// it is current (so a role without DDL rights can run pcsync); otherwise says what to do.
pub async fn prepare_schema(pool: &PgPool, migrate_on_start: bool) -> Result<(), DbError> {
    if schema_current(pool).await {
        return Ok(());
    }
    if !migrate_on_start {
        return Err(DbError::SchemaNotCurrent);
    }
    let applied = migrate(pool).await?;
    tracing::info!(applied, "migrations applied");
    Ok(())
}

/// Applies pending migrations; a no-op when the schema is current. sqlx's own bookkeeping
/// table is kept inside the `pcsync` schema too, so the public schema stays untouched.
/// Returns how many migrations were applied.
pub async fn migrate(pool: &PgPool) -> Result<usize, DbError> {
    let mut conn = pool.acquire().await?;
    sqlx::query("CREATE SCHEMA IF NOT EXISTS pcsync")
        .execute(&mut *conn)
        .await?;
    // Session-level on this one connection; it is reset before the connection is reused.
    sqlx::query("SET search_path TO pcsync, public")
        .execute(&mut *conn)
        .await?;
    let applied_before = applied_versions(&mut conn).await?;
    let result = MIGRATOR.run(&mut *conn).await;
    sqlx::query("RESET search_path").execute(&mut *conn).await?;
    result.map_err(|e| DbError::Migrate(e.to_string()))?;
    let applied_after = applied_versions(&mut conn).await?;
    Ok(applied_after.saturating_sub(applied_before))
}

async fn applied_versions(conn: &mut sqlx::PgConnection) -> Result<usize, DbError> {
    let exists: bool =
        sqlx::query_scalar("SELECT to_regclass('pcsync._sqlx_migrations') IS NOT NULL")
            .fetch_one(&mut *conn)
            .await?;
    if !exists {
        return Ok(0);
    }
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM pcsync._sqlx_migrations WHERE success")
        .fetch_one(&mut *conn)
        .await?;
    Ok(usize::try_from(n).unwrap_or(0))
}

/// True when every embedded migration has been applied (read-only; for `pcsync check`).
pub async fn schema_current(pool: &PgPool) -> bool {
    let Ok(mut conn) = pool.acquire().await else {
        return false;
    };
    applied_versions(&mut conn)
        .await
        .is_ok_and(|n| n >= MIGRATOR.iter().count())
}
