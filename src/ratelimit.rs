//! Token-bucket rate limiting, keyed by whatever the caller chooses (an IP
//! address, a user ID).

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use crate::config::{Rate, RateLimits};

/// How many keys a limiter tracks before it drops full (idle) buckets.
const SWEEP_AT: usize = 10_000;

pub struct Limiter {
    rate: Rate,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl Limiter {
    pub fn new(rate: Rate) -> Self {
        Self { rate, buckets: Mutex::new(HashMap::new()) }
    }

    /// Takes one token for `key`; when none is left, how long until one is.
    pub fn check(&self, key: &str) -> Result<(), Duration> {
        self.take(key, self.rate, true)
    }

    /// Like [`Limiter::check`], but takes nothing: for actions counted only
    /// when they fail (failed logins).
    pub fn peek(&self, key: &str) -> Result<(), Duration> {
        self.take(key, self.rate, false)
    }

    /// [`Limiter::check`] for a user's action, as the API's 429.
    pub fn check_user(&self, user: &ruma::UserId) -> crate::Result<()> {
        self.check(user.as_str()).map_err(crate::Error::limit_exceeded)
    }

    /// [`Limiter::check_user`] at a rate a server admin set for the user
    /// (`None`: no limit).
    pub fn check_user_at(&self, user: &ruma::UserId, rate: Option<Rate>) -> crate::Result<()> {
        match rate {
            Some(rate) => self.take(user.as_str(), rate, true).map_err(crate::Error::limit_exceeded),
            None => Ok(()),
        }
    }

    fn take(&self, key: &str, rate: Rate, consume: bool) -> Result<(), Duration> {
        let burst = f64::from(rate.burst_count);
        let now = Instant::now();
        let mut buckets = self.buckets.lock().expect("rate limiter lock");
        if buckets.len() >= SWEEP_AT {
            let rate = rate.per_second;
            buckets.retain(|_, (tokens, at)| *tokens + at.elapsed().as_secs_f64() * rate < burst);
        }
        let (tokens, at) = buckets.entry(key.to_owned()).or_insert((burst, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * rate.per_second).min(burst);
        *at = now;
        if *tokens >= 1.0 {
            if consume {
                *tokens -= 1.0;
            }
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - *tokens) / rate.per_second))
        }
    }
}

/// The limiters of the configured actions.
pub struct Limiters {
    pub login: Limiter,
    pub login_failures: Limiter,
    pub registration: Limiter,
    pub registration_checks: Limiter,
    pub message: Limiter,
    pub room_creation: Limiter,
    pub membership: Limiter,
    pub typing: Limiter,
    pub to_device: Limiter,
    pub receipts: Limiter,
}

impl Limiters {
    pub fn new(config: &RateLimits) -> Self {
        Self {
            login: Limiter::new(config.login),
            login_failures: Limiter::new(config.login_failures),
            registration: Limiter::new(config.registration),
            registration_checks: Limiter::new(config.registration_checks),
            message: Limiter::new(config.message),
            room_creation: Limiter::new(config.room_creation),
            membership: Limiter::new(config.membership),
            typing: Limiter::new(config.typing),
            to_device: Limiter::new(config.to_device),
            receipts: Limiter::new(config.receipts),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_burst_then_refuses_with_a_wait() {
        let limiter = Limiter::new(Rate { per_second: 0.5, burst_count: 2 });
        assert!(limiter.check("a").is_ok());
        assert!(limiter.check("a").is_ok());
        let wait = limiter.check("a").unwrap_err();
        assert!(wait > Duration::from_millis(1500) && wait <= Duration::from_secs(2), "{wait:?}");
        assert!(limiter.check("b").is_ok(), "keys are independent");
    }
}
