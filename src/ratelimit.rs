//! A request budget as the generic cell rate algorithm (GCRA): `limit` requests per `period`,
//! with bursts of at most `burst` back to back. Pure arithmetic on a caller-supplied clock, so it
//! is tested without sleeping. The simulator uses it to refuse (429 with Retry-After) and the
//! client to wait before sending, so a healthy run never meets a 429.

use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Gcra {
    /// Time between two requests at the sustained rate.
    interval: Duration,
    /// How far ahead of the sustained rate a burst may run.
    tolerance: Duration,
    /// Theoretical arrival time of the next request, as an offset on the caller's clock.
    tat: Duration,
}

impl Gcra {
    /// `limit` requests per `period`, up to `burst` (≥ 1) at once.
    pub fn new(limit: u32, period: Duration, burst: u32) -> Gcra {
        let interval = period / limit.max(1);
        Gcra {
            interval,
            tolerance: interval * burst.max(1).saturating_sub(1),
            tat: Duration::ZERO,
        }
    }

    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// Changes the sustained rate from now on; slots already handed out stay where they are.
    pub fn set_interval(&mut self, interval: Duration) {
        let burst = if self.interval.is_zero() {
            1
        } else {
            (self.tolerance.as_nanos() / self.interval.as_nanos()) as u32 + 1
        };
        self.interval = interval;
        self.tolerance = interval * burst.saturating_sub(1);
    }

    /// Admits a request now, or says how long until one would be admitted (nothing is taken).
    pub fn try_acquire(&mut self, now: Duration) -> Result<(), Duration> {
        let tat = self.tat.max(now);
        let earliest = tat.saturating_sub(self.tolerance);
        if earliest > now {
            return Err(earliest - now);
        }
        self.tat = tat + self.interval;
        Ok(())
    }

    /// Takes the next free slot, however far ahead, and says how long to wait for it. Callers
    /// that reserve together are spread evenly without any of them retrying.
    pub fn reserve(&mut self, now: Duration) -> Duration {
        let tat = self.tat.max(now);
        let wait = tat.saturating_sub(self.tolerance).saturating_sub(now);
        self.tat = tat + self.interval;
        wait
    }

    /// Pushes every future slot back so that nothing is admitted before `now + pause`, with no
    /// burst credit left: what a 429 asks of everybody, not only the request that got it.
    pub fn pause(&mut self, now: Duration, pause: Duration) {
        self.tat = self.tat.max(now + pause + self.tolerance);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn burst_then_sustained_rate() {
        // 60 per minute = one a second, bursts of 3.
        let mut g = Gcra::new(60, Duration::from_secs(60), 3);
        let t0 = Duration::from_secs(100);
        for _ in 0..3 {
            assert!(g.try_acquire(t0).is_ok());
        }
        let wait = g.try_acquire(t0).expect_err("burst spent");
        assert_eq!(wait, Duration::from_secs(1));
        assert!(g.try_acquire(t0 + Duration::from_secs(1)).is_ok());
        assert!(g.try_acquire(t0 + Duration::from_secs(1)).is_err());
    }

    #[test]
    fn never_exceeds_the_budget_over_any_window() {
        let mut g = Gcra::new(500, Duration::from_secs(60), 8);
        let mut admitted = Vec::new();
        let mut now = Duration::ZERO;
        while now < Duration::from_secs(180) {
            if g.try_acquire(now).is_ok() {
                admitted.push(now);
            }
            now += 7 * MS;
        }
        // Any 60 s window holds at most limit + burst.
        for (i, start) in admitted.iter().enumerate() {
            let n = admitted[i..]
                .iter()
                .take_while(|t| **t < *start + Duration::from_secs(60))
                .count();
            assert!(n <= 508, "window at {start:?} admitted {n}");
        }
        assert!(
            admitted.len() >= 1500,
            "the budget is used: {}",
            admitted.len()
        );
    }

    #[test]
    fn reservations_space_requests_at_the_interval() {
        let mut g = Gcra::new(120, Duration::from_secs(60), 1);
        let now = Duration::from_secs(10);
        let waits: Vec<Duration> = (0..4).map(|_| g.reserve(now)).collect();
        assert_eq!(waits, vec![Duration::ZERO, 500 * MS, 1000 * MS, 1500 * MS]);
    }

    #[test]
    fn a_client_reserving_never_trips_a_server_with_the_same_budget() {
        let mut client = Gcra::new(300, Duration::from_secs(60), 1);
        let mut server = Gcra::new(300, Duration::from_secs(60), 1);
        let mut now = Duration::ZERO;
        for _ in 0..1000 {
            now += client.reserve(now);
            assert!(server.try_acquire(now).is_ok(), "refused at {now:?}");
        }
    }

    #[test]
    fn pause_delays_everyone_and_then_recovers() {
        let mut g = Gcra::new(60, Duration::from_secs(60), 5);
        let now = Duration::from_secs(1);
        g.pause(now, Duration::from_secs(10));
        assert_eq!(g.reserve(now), Duration::from_secs(10));
        assert_eq!(g.reserve(now), Duration::from_secs(11));
        // Long after, requests flow again at once.
        assert_eq!(g.reserve(Duration::from_secs(100)), Duration::ZERO);
    }
}
