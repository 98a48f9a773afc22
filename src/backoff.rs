//! Restart backoff: `min` doubling to `max`, with ±10 % jitter (as ecs-init),
//! reset once the agent has run for the configured stable time.

use std::time::Duration;

use crate::config::BackoffConfig;

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
        jitter(base, self.cfg.max)
    }

    /// The un-jittered delay for the `n`th consecutive failure.
    pub fn base(&self, n: u32) -> Duration {
        let factor = 1u32.checked_shl(n.min(31)).unwrap_or(u32::MAX);
        self.cfg
            .min
            .checked_mul(factor)
            .unwrap_or(self.cfg.max)
            .min(self.cfg.max)
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
    fn zero_min_means_no_wait() {
        let mut b = Backoff::new(BackoffConfig {
            min: Duration::ZERO,
            ..cfg()
        });
        for _ in 0..5 {
            assert_eq!(b.next_delay(), Duration::ZERO);
        }
    }
}
