//! The pass's advisory lock, and the one connection every write of the pass goes through.
//!
//! The lock is a session lock: it lives exactly as long as its connection. Writing on that
//! same connection makes "two writers never overlap" hold by construction: if the session is
//! lost (network, server restart, an administrator's `pg_terminate_backend`), the lock is
//! gone, another pass may start, and this pass's next write fails instead of landing beside
//! the other's. A [`PassLock`] is only made by [`PassLock::acquire`] succeeding.

use sqlx::{Connection, PgConnection, PgPool};

/// First key of the PostgreSQL advisory locks that keep a partner tenant's passes from
/// overlapping across processes and hosts ("pcsy" in ASCII); the second is `hashtext(tenant)`,
/// so two tenants' passes run side by side and two of one tenant's never do. (Two tenant names
/// whose hashes collide would only take turns.)
pub const ADVISORY_LOCK_KEY: i32 = 0x7063_7379;

/// The lock's connection was lost: the pass must not write another row.
#[derive(Debug, thiserror::Error)]
#[error(
    "the database session holding the pass's advisory lock was lost ({0}); the pass stopped writing so that two passes never write at once"
)]
pub struct LockLost(pub String);

/// A held advisory lock and its connection.
pub struct PassLock {
    conn: PgConnection,
}

impl PassLock {
    /// Takes the tenant's lock on a connection of its own, out of the pool, so it can never go
    /// back to the pool still held; `None` when another pass of the tenant holds it.
    pub async fn acquire(pool: &PgPool, tenant: &str) -> Result<Option<PassLock>, sqlx::Error> {
        let mut conn = pool.acquire().await?.detach();
        let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1, hashtext($2))")
            .bind(ADVISORY_LOCK_KEY)
            .bind(tenant)
            .fetch_one(&mut conn)
            .await?;
        Ok(locked.then_some(PassLock { conn }))
    }

    /// The connection to write on.
    pub fn conn(&mut self) -> &mut PgConnection {
        &mut self.conn
    }

    /// Whether the session, and so the lock, is still there.
    pub async fn check(&mut self) -> Result<(), LockLost> {
        self.conn.ping().await.map_err(|e| LockLost(e.to_string()))
    }

    /// Ends the session, which releases the lock (a failure to close cleanly releases it too).
    pub async fn release(self) {
        let _ = self.conn.close().await;
    }
}
