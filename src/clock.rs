//! The one clock every "now" of a pass comes from: the run's times, `detected_at`, history
//! validity, due dates and `days_left`. Production reads the system clock; tests, the benchmark
//! and the demo hand the pass (and the simulator) a clock they set and move, so a day of hourly
//! passes runs in seconds and a quarter of history can be written as it would have been.
//!
//! What must stay on real time does not use it: the rate budget, retry backoff and token
//! expiry run on `Instant` and the system clock.
//!
//! Views that need "today" read it through `pcsync.clock_now()` (migration 11), which is the
//! setting `pcsync.now` when a session sets it and `now()` otherwise; [`Clock::sql_setting`]
//! gives the value to set.

use std::fmt;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Duration, Utc};

/// The system clock, or a clock someone sets.
///
/// A set clock stands still between moves, but never hands out the same instant twice (each
/// reading is a microsecond after the one before, at least): two writes of a pass are never at
/// the same instant, as on a real clock, so history versions always have a length.
#[derive(Clone, Default)]
pub struct Clock {
    set: Option<Arc<Mutex<Readings>>>,
}

#[derive(Debug, Clone, Copy)]
struct Readings {
    at: DateTime<Utc>,
    last: Option<DateTime<Utc>>,
}

impl fmt::Debug for Clock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.set {
            None => f.write_str("Clock::system"),
            Some(_) => write!(f, "Clock::at({})", self.now()),
        }
    }
}

impl Clock {
    /// The system clock.
    pub fn system() -> Clock {
        Clock { set: None }
    }

    /// A clock standing at `at` until it is moved; clones share it.
    pub fn at(at: DateTime<Utc>) -> Clock {
        Clock {
            set: Some(Arc::new(Mutex::new(Readings { at, last: None }))),
        }
    }

    pub fn is_system(&self) -> bool {
        self.set.is_none()
    }

    pub fn now(&self) -> DateTime<Utc> {
        match &self.set {
            None => Utc::now(),
            Some(t) => {
                let mut r = t.lock().unwrap_or_else(|p| p.into_inner());
                let now = match r.last {
                    Some(last) if last >= r.at => last + Duration::microseconds(1),
                    _ => r.at,
                };
                r.last = Some(now);
                now
            }
        }
    }

    /// Moves a set clock to `at` (never backwards). The system clock cannot be moved.
    pub fn set(&self, at: DateTime<Utc>) {
        if let Some(t) = &self.set {
            let mut r = t.lock().unwrap_or_else(|p| p.into_inner());
            if at > r.at && r.last.is_none_or(|last| at > last) {
                r.at = at;
            }
        }
    }

    /// Moves a set clock on by `by`.
    pub fn advance(&self, by: Duration) {
        self.set(self.now() + by);
    }

    /// The value for the session setting `pcsync.now` that views read through
    /// `pcsync.clock_now()`: empty (the database's own `now()`) on the system clock.
    pub fn sql_setting(&self) -> String {
        if self.is_system() {
            String::new()
        } else {
            self.now().to_rfc3339()
        }
    }
}

/// Runs `set_config('pcsync.now', …, true)` in a transaction, so that the views it then reads
/// count days from `clock`.
pub async fn set_for_transaction(
    tx: &mut sqlx::PgConnection,
    clock: &Clock,
) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT set_config('pcsync.now', $1, true)")
        .bind(clock.sql_setting())
        .execute(tx)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_set_clock_is_shared_and_moves_forward_only() {
        let t0 = DateTime::parse_from_rfc3339("2026-12-01T00:00:00Z")
            .expect("date")
            .to_utc();
        let clock = Clock::at(t0);
        let other = clock.clone();
        assert_eq!(clock.now(), t0);
        assert_eq!(
            clock.now(),
            t0 + Duration::microseconds(1),
            "never the same instant twice"
        );
        other.set(t0 + Duration::hours(1));
        assert_eq!(clock.now(), t0 + Duration::hours(1));
        clock.set(t0);
        assert!(clock.now() > t0 + Duration::hours(1), "never backwards");
        assert!(!clock.is_system());
        assert!(clock.sql_setting().starts_with("2026-12-01T01:00:00.000"));
        let system = Clock::system();
        system.set(t0 - Duration::days(400));
        assert!(
            (system.now() - Utc::now()).num_seconds().abs() < 60,
            "the system clock cannot be set"
        );
        assert_eq!(system.sql_setting(), "");
    }
}
