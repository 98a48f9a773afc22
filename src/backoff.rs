//! Restart backoff: `min` doubling to `max`, with ±10 % jitter (as ecs-init),
//! reset once the agent has run for the configured stable time.
//!
//! A `min` of zero means "the first restart at once", not "no backoff": the
//! second delay is `ZERO_MIN_FLOOR` (100 ms), doubling from there to `max`
//! (at least the floor). Without it an agent that crashes at start would be
//! restarted as fast as the machine can fork, hundreds of times a second.

use std::time::Duration;

use crate::config::BackoffConfig;

/// With a zero `min`: the delay after the second failure in a row.
pub const ZERO_MIN_FLOOR: Duration = Duration::from_millis(100);

#[derive(Debug, Clone)]
pub struct Backoff {
    cfg: BackoffConfig,
    /// Failed starts since the last reset.
    failures: u32,
}

impl Backoff {
    pub fn new(cfg: BackoffConfig) -> Backoff {
        Backoff { cfg, failures: 0 }
    }

    /// Delay before the next start after a failure, and count the failure.
    pub fn next_delay(&mut self) -> Duration {
        let base = self.base(self.failures);
        self.failures = self.failures.saturating_add(1);
        jitter(base, self.cap())
    }

    /// The longest delay: `max`, and never below the floor with a zero `min`.
    fn cap(&self) -> Duration {
        if self.cfg.min.is_zero() {
            self.cfg.max.max(ZERO_MIN_FLOOR)
        } else {
            self.cfg.max
        }
    }

    /// The un-jittered delay for the `n`th consecutive failure (from 0).
    pub fn base(&self, n: u32) -> Duration {
        let (first, n, cap) = if self.cfg.min.is_zero() {
            if n == 0 {
                return Duration::ZERO;
            }
            (ZERO_MIN_FLOOR, n - 1, self.cap())
        } else {
            (self.cfg.min, n, self.cap())
        };
        let factor = 1u32.checked_shl(n.min(31)).unwrap_or(u32::MAX);
        first.checked_mul(factor).unwrap_or(cap).min(cap)
    }

    pub fn reset(&mut self) {
        self.failures = 0;
    }

    /// Restore the count (after `reexec`).
    pub fn set_failures(&mut self, n: u32) {
        self.failures = n;
    }

    pub fn failures(&self) -> u32 {
        self.failures
    }

    pub fn stable_after(&self) -> Duration {
        self.cfg.stable
    }

    /// The delay the next failure would get (un-jittered), for status.
    pub fn current(&self) -> Duration {
        if self.failures == 0 {
            Duration::ZERO
        } else {
            self.base(self.failures - 1)
        }
    }
}

/// ±10 % of `d`, never above `cap`.
fn jitter(d: Duration, cap: Duration) -> Duration {
    if d.is_zero() {
        return d;
    }
    let mut b = [0u8; 2];
    let _ = getrandom::getrandom(&mut b);
    // r in [-1, 1]
    let r = (u16::from_le_bytes(b) as f64 / u16::MAX as f64) * 2.0 - 1.0;
    d.mul_f64(1.0 + 0.1 * r).min(cap)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> BackoffConfig {
        BackoffConfig {
            min: Duration::from_millis(500),
            max: Duration::from_secs(15),
            stable: Duration::from_secs(60),
        }
    }

    #[test]
    fn doubles_to_cap_with_jitter_and_resets() {
        let mut b = Backoff::new(cfg());
        let bases: Vec<_> = (0..8).map(|n| b.base(n).as_millis()).collect();
        assert_eq!(bases, [500, 1000, 2000, 4000, 8000, 15000, 15000, 15000]);
        for n in 0..8 {
            let d = b.next_delay();
            let base = b.base(n);
            assert!(d >= base.mul_f64(0.9) && d <= base.mul_f64(1.1).min(cfg().max));
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(550));
    }

    #[test]
    fn zero_min_restarts_at_once_then_backs_off_from_the_floor() {
        let b = Backoff::new(BackoffConfig {
            min: Duration::ZERO,
            ..cfg()
        });
        let bases: Vec<_> = (0..9).map(|n| b.base(n).as_millis()).collect();
        assert_eq!(
            bases,
            [0, 100, 200, 400, 800, 1600, 3200, 6400, 12800],
            "first at once, then 100 ms doubling"
        );
        assert_eq!(b.base(10), Duration::from_secs(15), "capped at max");
        let mut b = b;
        assert_eq!(b.next_delay(), Duration::ZERO);
        let d = b.next_delay();
        assert!(d >= Duration::from_millis(90) && d <= Duration::from_millis(110));
        // A zero max cannot switch it off either.
        let mut b = Backoff::new(BackoffConfig {
            min: Duration::ZERO,
            max: Duration::ZERO,
            stable: Duration::from_secs(60),
        });
        let bases: Vec<_> = (0..4).map(|n| b.base(n).as_millis()).collect();
        assert_eq!(bases, [0, 100, 100, 100]);
        b.next_delay();
        assert!(b.next_delay() >= Duration::from_millis(90));
    }
}
