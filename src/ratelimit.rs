//! A request budget as the generic cell rate algorithm (GCRA): `limit` requests per `period`,
//! with bursts of at most `burst` back to back. Pure arithmetic on a caller-supplied clock, so it
//! is tested without sleeping. The simulator uses it to refuse (429 with Retry-After) and the
//! client to wait before sending, so a healthy run never meets a 429.

use std::time::{Duration, Instant};

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

/// The client's shared request budget, adapting to what Partner Center says. A 429 pauses every request for Retry-After, lowers the rate by a
/// fifth and remembers a ceiling just below the rate that was refused; successes bring the
/// rate back up to that ceiling, and the ceiling creeps back to the configured rate slowly, in
/// case the throttling was passing. 429s of one episode (requests already in flight) count once.
pub struct AdaptiveBudget {
    gcra: Gcra,
    epoch: Instant,
    configured: f64,
    current: f64,
    ceiling: f64,
    successes: u32,
    episode_until: Duration,
}

impl AdaptiveBudget {
    pub fn new(requests_per_minute: u32) -> AdaptiveBudget {
        // Up to a tenth of a second's worth of requests back to back, so a request that left
        // late (a busy moment) does not lose its slot for good; at Partner Center's 500 a
        // minute that is one request, i.e. strictly even spacing.
        let burst = (requests_per_minute / 600).max(1);
        AdaptiveBudget {
            gcra: Gcra::new(requests_per_minute, Duration::from_secs(60), burst),
            epoch: Instant::now(),
            configured: f64::from(requests_per_minute),
            current: f64::from(requests_per_minute),
            ceiling: f64::from(requests_per_minute),
            successes: 0,
            episode_until: Duration::ZERO,
        }
    }

    fn now(&self) -> Duration {
        self.epoch.elapsed()
    }

    /// The current sustained rate, per minute.
    pub fn rate(&self) -> f64 {
        self.current
    }

    fn set_rate(&mut self, per_minute: f64) {
        self.current = per_minute;
        self.gcra
            .set_interval(Duration::from_secs_f64(60.0 / per_minute.max(0.1)));
    }

    /// A 429 asked for `pause`.
    pub fn throttled(&mut self, pause: Duration) {
        let now = self.now();
        self.gcra.pause(now, pause);
        if now < self.episode_until {
            return;
        }
        let floor = self.configured * 0.1;
        self.ceiling = (self.current * 0.95).max(floor);
        self.set_rate((self.current * 0.8).max(floor));
        self.successes = 0;
        self.episode_until = now + pause + Duration::from_secs(1);
    }

    /// A request got its answer.
    pub fn succeeded(&mut self) {
        if self.current >= self.configured {
            return;
        }
        self.successes += 1;
        if self.successes % 20 == 0 && self.current < self.ceiling {
            let raised = (self.current * 1.05).min(self.ceiling);
            self.set_rate(raised);
        }
        if self.successes % 500 == 0 {
            self.ceiling = (self.ceiling * 1.02).min(self.configured);
        }
    }
}

impl AdaptiveBudget {
    /// Takes the next slot; how long to wait for it.
    pub fn reserve_now(&mut self) -> Duration {
        let now = self.now();
        self.gcra.reserve(now)
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

    #[test]
    fn the_budget_slows_after_a_429_and_recovers() {
        let mut b = AdaptiveBudget::new(600);
        b.throttled(Duration::from_secs(2));
        assert_eq!(b.current, 480.0);
        // The other requests of the same episode pause too but cut the rate only once.
        b.throttled(Duration::from_secs(2));
        assert_eq!(b.current, 480.0);
        let wait = b.reserve_now();
        assert!(wait >= Duration::from_millis(1900), "{wait:?}");
        // Back up to just below the refused rate first...
        for _ in 0..200 {
            b.succeeded();
        }
        assert_eq!(b.current, 570.0);
        // ...then, slowly, to the configured rate.
        for _ in 0..3000 {
            b.succeeded();
        }
        assert_eq!(b.current, 600.0);
    }
}
