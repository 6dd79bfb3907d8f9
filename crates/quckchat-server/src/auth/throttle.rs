//! Throttling of the password and token routes (register, login, refresh), keyed by the
//! client's address and by the username tried.
//!
//! Each key has a token bucket: `burst` attempts at once, then `per_minute` more each
//! minute. An attempt beyond it is refused before any password is hashed, with the time
//! until the bucket allows another (`Retry-After`). Buckets of keys not seen for a while
//! are dropped, so an attacker cycling usernames cannot grow the maps without bound.

use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};

use governor::clock::{Clock, DefaultClock};
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};

use super::AuthError;

/// The key of an address: itself for IPv4, its /64 for IPv6 (a host gets a whole /64, so
/// keying by the full address would give an attacker 2^64 buckets).
fn network_of(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
        v4 => v4,
    }
}

/// How often (in checks) stale buckets are swept.
const SWEEP_EVERY: u64 = 4096;

/// A bucket rule: `burst` at once, `per_minute` after that; `per_minute == 0`: no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    /// Attempts a minute, sustained.
    pub per_minute: u32,
    /// Attempts allowed at once.
    pub burst: u32,
}

/// One keyed limiter (none when its rule is off).
struct Keyed<K: Hash + Eq + Clone> {
    limiter: Option<RateLimiter<K, DefaultKeyedStateStore<K>, DefaultClock>>,
    checks: AtomicU64,
}

impl<K: Hash + Eq + Clone> Keyed<K> {
    fn new(rule: Rule) -> Self {
        let limiter = NonZeroU32::new(rule.per_minute).map(|per_minute| {
            let burst = NonZeroU32::new(rule.burst).unwrap_or(per_minute);
            RateLimiter::keyed(Quota::per_minute(per_minute).allow_burst(burst))
        });
        Self { limiter, checks: AtomicU64::new(0) }
    }

    /// Takes one attempt for `key`, or says how many seconds until one is allowed.
    fn check(&self, key: &K) -> Result<(), u64> {
        let Some(limiter) = &self.limiter else { return Ok(()) };
        if self.checks.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
        limiter.check_key(key).map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
        })
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.limiter.as_ref().map_or(0, |l| l.len())
    }
}

/// The throttles of the auth routes.
pub struct AuthThrottle {
    by_address: Keyed<IpAddr>,
    by_username: Keyed<String>,
}

impl AuthThrottle {
    /// Throttles with these rules (per client address; per username).
    pub fn new(by_address: Rule, by_username: Rule) -> Self {
        Self { by_address: Keyed::new(by_address), by_username: Keyed::new(by_username) }
    }

    /// An attempt from `address`, for `username` when the route names one. Both buckets
    /// are charged; the answer waits for the longer of the two.
    ///
    /// An address refused charges nothing else (so a throttled address cannot fill the
    /// username map); IPv6 addresses are keyed by their /64, the block one host is given.
    /// Callers refuse over-long usernames before asking.
    pub fn attempt(&self, address: IpAddr, username: Option<&str>) -> Result<(), AuthError> {
        let refused = |secs: u64| AuthError::Throttled { retry_after_secs: secs.max(1) };
        self.by_address.check(&network_of(address)).map_err(refused)?;
        if let Some(name) = username {
            self.by_username.check(&name.trim().to_lowercase()).map_err(refused)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ADDR: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    #[test]
    fn a_burst_then_refusals_with_a_retry_after() {
        let t = AuthThrottle::new(Rule { per_minute: 6, burst: 3 }, Rule { per_minute: 0, burst: 0 });
        for _ in 0..3 {
            t.attempt(ADDR, None).unwrap();
        }
        match t.attempt(ADDR, None) {
            Err(AuthError::Throttled { retry_after_secs }) => assert!((1..=10).contains(&retry_after_secs)),
            other => panic!("expected a refusal, got {other:?}"),
        }
        // Another address has its own bucket.
        t.attempt(IpAddr::from([10, 0, 0, 1]), None).unwrap();
    }

    #[test]
    fn usernames_are_keyed_case_insensitively_across_addresses() {
        let t = AuthThrottle::new(Rule { per_minute: 0, burst: 0 }, Rule { per_minute: 2, burst: 2 });
        t.attempt(IpAddr::from([10, 0, 0, 1]), Some("Alice")).unwrap();
        t.attempt(IpAddr::from([10, 0, 0, 2]), Some("alice")).unwrap();
        assert!(matches!(t.attempt(IpAddr::from([10, 0, 0, 3]), Some(" ALICE ")), Err(AuthError::Throttled { .. })));
        t.attempt(IpAddr::from([10, 0, 0, 3]), Some("bob")).unwrap();
        assert_eq!(t.by_username.len(), 2);
    }

    #[test]
    fn ipv6_hosts_share_their_64_and_refused_addresses_charge_no_username() {
        let t = AuthThrottle::new(Rule { per_minute: 1, burst: 1 }, Rule { per_minute: 1, burst: 1 });
        t.attempt("2001:db8:1:2::1".parse().unwrap(), None).unwrap();
        assert!(t.attempt("2001:db8:1:2:ffff::9".parse().unwrap(), Some("alice")).is_err(), "same /64");
        // That refusal did not use up alice's bucket.
        t.attempt("2001:db8:1:3::1".parse().unwrap(), Some("alice")).unwrap();
    }

    #[test]
    fn a_zero_rate_is_no_limit() {
        let t = AuthThrottle::new(Rule { per_minute: 0, burst: 0 }, Rule { per_minute: 0, burst: 0 });
        for _ in 0..1000 {
            t.attempt(ADDR, Some("x")).unwrap();
        }
    }
}
