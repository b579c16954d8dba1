//! Slows down password guessing: after too many failed logins from one client address
//! within a window, each further attempt from it waits before it is answered.

use dashmap::DashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Mutex, OwnedMutexGuard};
use tokio::time::Instant;

/// Most addresses tracked at once; beyond, expired entries are swept and, if the table
/// is still full, untracked addresses are delayed too (fail closed under a flood).
pub const DEFAULT_CAPACITY: usize = 100_000;

/// Failure count of one address (or IPv6 /64) in its current window.
#[derive(Debug, Clone)]
struct Entry {
    failures: u32,
    window_start: Instant,
    /// Held by the attempt in progress once the address is throttled, so its attempts
    /// run one at a time.
    gate: Arc<Mutex<()>>,
}

/// Per-client-address failed-login throttle, shared by all sessions.
///
/// Use: hold `limiter.wait_turn(ip).await` while authenticating, then
/// `record_failure(ip)` if it failed. IPv6 addresses count per /64, since
/// one host usually owns a whole /64.
#[derive(Debug)]
pub struct FailedLoginLimiter {
    entries: DashMap<IpAddr, Entry>,
    max_failures: u32,
    window: Duration,
    delay: Duration,
    capacity: usize,
    /// When the table was last swept of expired entries; sweeps are O(n), so a full
    /// table is swept at most once per [`SWEEP_INTERVAL`].
    last_sweep: std::sync::Mutex<Instant>,
}

/// Least time between two sweeps of a full table.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

impl FailedLoginLimiter {
    /// A limiter that delays by `delay` once an address has `max_failures` failures
    /// within `window`. `max_failures == 0` disables it.
    pub fn new(max_failures: u32, window: Duration, delay: Duration) -> FailedLoginLimiter {
        FailedLoginLimiter::with_capacity(max_failures, window, delay, DEFAULT_CAPACITY)
    }

    /// Like [`FailedLoginLimiter::new`] with a bound on tracked addresses.
    pub fn with_capacity(
        max_failures: u32,
        window: Duration,
        delay: Duration,
        capacity: usize,
    ) -> FailedLoginLimiter {
        FailedLoginLimiter {
            entries: DashMap::new(),
            max_failures,
            window,
            delay,
            capacity: capacity.max(1),
            last_sweep: std::sync::Mutex::new(Instant::now()),
        }
    }

    /// How long to wait before answering a login attempt from `ip`.
    pub fn delay_for(&self, ip: IpAddr) -> Duration {
        if self.max_failures == 0 {
            return Duration::ZERO;
        }
        let now = Instant::now();
        let key = key_of(ip);
        if self.entries.len() >= self.capacity {
            self.sweep(now);
        }
        match self.entries.get(&key) {
            Some(e) if !self.expired(&e, now) && e.failures >= self.max_failures => self.delay,
            Some(_) => Duration::ZERO,
            None if self.entries.len() >= self.capacity => self.delay,
            None => Duration::ZERO,
        }
    }

    /// Waits until a login attempt from `ip` may go on: at once for an address in good
    /// standing; for a throttled one, until the earlier attempts from it are done (they
    /// run one at a time), then [`FailedLoginLimiter::delay_for`]. Keep the returned
    /// guard until the attempt's outcome is recorded, so that opening many connections
    /// in parallel does not multiply the guessing rate.
    pub async fn wait_turn(&self, ip: IpAddr) -> Option<OwnedMutexGuard<()>> {
        let delay = self.delay_for(ip);
        if delay.is_zero() {
            return None;
        }
        // Clone the gate out before waiting: no map lock is held across an await.
        let gate = self.entries.get(&key_of(ip)).map(|e| Arc::clone(&e.gate));
        let guard = match gate {
            Some(gate) => Some(gate.lock_owned().await),
            None => None,
        };
        tokio::time::sleep(delay).await;
        guard
    }

    /// Counts a failed login from `ip`.
    pub fn record_failure(&self, ip: IpAddr) {
        if self.max_failures == 0 {
            return;
        }
        let now = Instant::now();
        let key = key_of(ip);
        if !self.entries.contains_key(&key) && self.entries.len() >= self.capacity {
            self.sweep(now);
            if self.entries.len() >= self.capacity {
                return;
            }
        }
        let mut entry = self.entries.entry(key).or_insert_with(|| Entry {
            failures: 0,
            window_start: now,
            gate: Arc::new(Mutex::new(())),
        });
        if self.expired(&entry, now) {
            entry.failures = 0;
            entry.window_start = now;
        }
        entry.failures = entry.failures.saturating_add(1);
    }

    /// Forgets the failures of `ip` after a successful login.
    pub fn record_success(&self, ip: IpAddr) {
        self.entries.remove(&key_of(ip));
    }

    /// Number of tracked addresses (for a gauge).
    pub fn tracked(&self) -> usize {
        self.entries.len()
    }

    fn expired(&self, entry: &Entry, now: Instant) -> bool {
        now.duration_since(entry.window_start) >= self.window
    }

    fn sweep(&self, now: Instant) {
        {
            // A poisoned lock only means another sweep panicked; the time is still valid.
            let mut last = self.last_sweep.lock().unwrap_or_else(|e| e.into_inner());
            if now.duration_since(*last) < SWEEP_INTERVAL {
                return;
            }
            *last = now;
        }
        self.entries.retain(|_, e| !self.expired(e, now));
    }
}

/// IPv4 as is; IPv6 by its /64 prefix (IPv4-mapped IPv6 as IPv4).
fn key_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let bits = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(bits.into())
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test address")
    }

    fn limiter() -> FailedLoginLimiter {
        FailedLoginLimiter::new(3, Duration::from_secs(60), Duration::from_millis(500))
    }

    #[tokio::test(start_paused = true)]
    async fn delays_after_max_failures_within_window() {
        let l = limiter();
        let a = ip("10.0.0.1");
        for _ in 0..2 {
            l.record_failure(a);
        }
        assert_eq!(l.delay_for(a), Duration::ZERO);
        l.record_failure(a);
        assert_eq!(l.delay_for(a), Duration::from_millis(500));
        assert_eq!(l.delay_for(ip("10.0.0.2")), Duration::ZERO);
        tokio::time::advance(Duration::from_secs(61)).await;
        assert_eq!(l.delay_for(a), Duration::ZERO, "window over");
        l.record_failure(a);
        assert_eq!(l.delay_for(a), Duration::ZERO, "new window starts at one");
    }

    #[tokio::test(start_paused = true)]
    async fn throttled_attempts_take_turns() {
        let l = Arc::new(limiter());
        let a = ip("10.0.0.1");
        assert!(l.wait_turn(a).await.is_none(), "not throttled");
        for _ in 0..3 {
            l.record_failure(a);
        }
        let started = Instant::now();
        let first = l
            .wait_turn(a)
            .await
            .expect("throttled attempts hold the gate");
        assert_eq!(started.elapsed(), Duration::from_millis(500));
        let second = {
            let l = Arc::clone(&l);
            tokio::spawn(async move { l.wait_turn(a).await.map(|_| Instant::now()) })
        };
        tokio::time::sleep(Duration::from_secs(3)).await;
        let released = Instant::now();
        drop(first);
        let second_at = second.await.expect("task").expect("gate");
        assert_eq!(
            second_at.duration_since(released),
            Duration::from_millis(500),
            "the second attempt waits for the first, then for its own delay"
        );
        assert!(
            l.wait_turn(ip("10.0.0.2")).await.is_none(),
            "other addresses go on"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn success_resets() {
        let l = limiter();
        let a = ip("10.0.0.1");
        for _ in 0..3 {
            l.record_failure(a);
        }
        l.record_success(a);
        assert_eq!(l.delay_for(a), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn ipv6_counts_per_64_and_mapped_v4_as_v4() {
        let l = limiter();
        l.record_failure(ip("2001:db8::1"));
        l.record_failure(ip("2001:db8::2"));
        l.record_failure(ip("2001:db8::ffff:3"));
        assert_eq!(l.delay_for(ip("2001:db8::9")), Duration::from_millis(500));
        assert_eq!(l.delay_for(ip("2001:db8:0:1::9")), Duration::ZERO);
        for _ in 0..3 {
            l.record_failure(ip("::ffff:10.1.1.1"));
        }
        assert_eq!(l.delay_for(ip("10.1.1.1")), Duration::from_millis(500));
    }

    #[tokio::test(start_paused = true)]
    async fn bounded_and_fails_closed_when_full() {
        let l = FailedLoginLimiter::with_capacity(
            3,
            Duration::from_secs(60),
            Duration::from_millis(500),
            2,
        );
        l.record_failure(ip("10.0.0.1"));
        l.record_failure(ip("10.0.0.2"));
        l.record_failure(ip("10.0.0.3"));
        assert_eq!(l.tracked(), 2);
        assert_eq!(l.delay_for(ip("10.0.0.3")), Duration::from_millis(500));
        tokio::time::advance(Duration::from_secs(61)).await;
        assert_eq!(l.delay_for(ip("10.0.0.4")), Duration::ZERO, "expired swept");
        assert_eq!(l.tracked(), 0);
    }

    #[test]
    fn zero_disables() {
        let l = FailedLoginLimiter::new(0, Duration::from_secs(60), Duration::from_secs(1));
        let a = ip("10.0.0.1");
        l.record_failure(a);
        assert_eq!(l.delay_for(a), Duration::ZERO);
        assert_eq!(l.tracked(), 0);
    }
}
