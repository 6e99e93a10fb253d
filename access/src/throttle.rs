//! Failed logins counted per client address. Once an address has failed
//! `max_failures` times within a window, its logins are refused without
//! their secrets being checked until the window ends, whether the secret is
//! right or not (an answer that depended on it would let guessing go on).
//! Guessing a password then costs a window per few guesses, and the argon2
//! slots stay free for everyone else.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::{AccessError, Result};

/// Addresses tracked at most; past it, addresses not yet seen are not
/// counted (and so not refused) until old windows end.
const TRACKED_CAP: usize = 100_000;

#[derive(Debug)]
pub struct LoginThrottle {
    max_failures: u32,
    window: Duration,
    entries: Mutex<HashMap<IpAddr, Entry>>,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    failures: u32,
    since: Instant,
}

/// What is counted for an address: an IPv6 host usually holds a whole
/// /64, so a client could otherwise take a fresh address per guess.
fn counted_as(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(a) => match a.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = a.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

impl LoginThrottle {
    /// `max_failures` 0 counts nothing.
    pub fn new(max_failures: u32, window: Duration) -> LoginThrottle {
        LoginThrottle {
            max_failures,
            window,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// Refuses an address that has used up its failures for this window.
    /// Logins whose address is unknown (in-process callers) are not
    /// counted.
    pub fn check(&self, ip: Option<IpAddr>) -> Result<()> {
        self.check_at(ip, Instant::now())
    }

    /// Counts a failed login from `ip`.
    pub fn failed(&self, ip: Option<IpAddr>) {
        self.failed_at(ip, Instant::now())
    }

    fn check_at(&self, ip: Option<IpAddr>, now: Instant) -> Result<()> {
        let Some(ip) = ip.filter(|_| self.max_failures > 0) else {
            return Ok(());
        };
        let entries = self.entries.lock();
        let Some(e) = entries.get(&counted_as(ip)) else {
            return Ok(());
        };
        let age = now.saturating_duration_since(e.since);
        if e.failures < self.max_failures || age >= self.window {
            return Ok(());
        }
        Err(AccessError::Throttled {
            retry_after_secs: (self.window - age).as_secs().max(1),
        })
    }

    fn failed_at(&self, ip: Option<IpAddr>, now: Instant) {
        let Some(ip) = ip.filter(|_| self.max_failures > 0) else {
            return;
        };
        let key = counted_as(ip);
        let mut entries = self.entries.lock();
        if entries.len() >= TRACKED_CAP && !entries.contains_key(&key) {
            let window = self.window;
            entries.retain(|_, e| now.saturating_duration_since(e.since) < window);
            if entries.len() >= TRACKED_CAP {
                tracing::warn!(
                    tracked = entries.len(),
                    "failed logins come from too many addresses to count them all"
                );
                return;
            }
        }
        let e = entries.entry(key).or_insert(Entry {
            failures: 0,
            since: now,
        });
        if now.saturating_duration_since(e.since) >= self.window {
            *e = Entry {
                failures: 0,
                since: now,
            };
        }
        e.failures = e.failures.saturating_add(1);
        if e.failures == self.max_failures {
            tracing::warn!(
                address = %key,
                failures = e.failures,
                window_secs = self.window.as_secs(),
                "too many failed logins; refusing this address until the window ends"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap_or_else(|e| panic!("{s}: {e}")))
    }

    #[test]
    fn an_address_is_refused_after_its_failures_until_the_window_ends() {
        let t = LoginThrottle::new(3, Duration::from_secs(60));
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(t.check_at(ip("10.0.0.1"), t0).is_ok());
            t.failed_at(ip("10.0.0.1"), t0);
        }
        match t.check_at(ip("10.0.0.1"), t0 + Duration::from_secs(20)) {
            Err(AccessError::Throttled { retry_after_secs }) => assert_eq!(retry_after_secs, 40),
            other => panic!("{other:?}"),
        }
        // Another address is not held back by it.
        assert!(t.check_at(ip("10.0.0.2"), t0).is_ok());
        // Nor is a caller whose address is unknown.
        assert!(t.check_at(None, t0).is_ok());
        // The window ends; the count starts again.
        let later = t0 + Duration::from_secs(60);
        assert!(t.check_at(ip("10.0.0.1"), later).is_ok());
        t.failed_at(ip("10.0.0.1"), later);
        assert!(t.check_at(ip("10.0.0.1"), later).is_ok());
    }

    #[test]
    fn ipv6_is_counted_by_its_64_prefix_and_mapped_v4_as_v4() {
        let t = LoginThrottle::new(2, Duration::from_secs(60));
        let now = Instant::now();
        t.failed_at(ip("2001:db8:1:2::1"), now);
        t.failed_at(ip("2001:db8:1:2::ffff"), now);
        assert!(t.check_at(ip("2001:db8:1:2:abcd::9"), now).is_err());
        assert!(t.check_at(ip("2001:db8:1:3::1"), now).is_ok());
        t.failed_at(ip("::ffff:192.0.2.7"), now);
        t.failed_at(ip("192.0.2.7"), now);
        assert!(t.check_at(ip("192.0.2.7"), now).is_err());
    }

    #[test]
    fn zero_counts_nothing() {
        let t = LoginThrottle::new(0, Duration::from_secs(60));
        let now = Instant::now();
        for _ in 0..100 {
            t.failed_at(ip("10.0.0.1"), now);
        }
        assert!(t.check_at(ip("10.0.0.1"), now).is_ok());
        assert!(t.entries.lock().is_empty());
    }
}
