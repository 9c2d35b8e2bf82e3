//! How the operator's watches come back after the API server goes away.
//!
//! kube-runtime's default watcher backoff follows client-go's reflector: 0.8 s doubling to 30 s,
//! reset only after 120 s without an error. After a kube-apiserver restart every watch fails to
//! connect a few times and then, once connected, is told its resource version is too old (the
//! new apiserver's watch cache starts at the current revision) — more errors, so each of the
//! operator's seven watches waited out 30 s steps, and a scale-up took 43–128 s to be served after
//! a 10 s restart on the test control plane. client-go relists at once after "too old"; kube's
//! watcher counts it as an error.
//!
//! The operator's backoff doubles from 250 ms to at most 5 s and resets after 30 s of health:
//! an outage costs at most ~5 s more than it lasted, and a dead apiserver still sees at most one
//! attempt per watch every 5 s (seven watches: under 2 requests/s).

use std::time::Duration;

use kube::runtime::utils::{Backoff, ResetTimerBackoff};

/// The first retry's delay.
const FIRST: Duration = Duration::from_millis(250);
/// The longest delay between attempts.
const LONGEST: Duration = Duration::from_secs(5);
/// Healthy time after which the delay starts from [`FIRST`] again.
const RESET_AFTER: Duration = Duration::from_secs(30);

/// Doubling delays from [`FIRST`] to [`LONGEST`], each shortened by up to a quarter (jitter, so
/// the operator's watches do not retry in lockstep).
#[derive(Debug, Clone)]
pub struct Doubling {
    next: Duration,
    jitter: u64,
}

impl Doubling {
    fn new(seed: u64) -> Self {
        Doubling {
            next: FIRST,
            jitter: seed | 1,
        }
    }
}

impl Iterator for Doubling {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        // xorshift64: enough to spread the retries.
        self.jitter ^= self.jitter << 13;
        self.jitter ^= self.jitter >> 7;
        self.jitter ^= self.jitter << 17;
        let delay = self.next;
        self.next = (self.next * 2).min(LONGEST);
        let shortened = delay.as_micros() as u64 * (self.jitter % 250) / 1000;
        Some(delay.saturating_sub(Duration::from_micros(shortened)))
    }
}

impl Backoff for Doubling {
    fn reset(&mut self) {
        self.next = FIRST;
    }
}

/// The operator's watch backoff (see the module docs); `seed` spreads the jitter per watch.
#[must_use]
pub fn backoff(seed: u64) -> ResetTimerBackoff<Doubling> {
    ResetTimerBackoff::new(Doubling::new(seed), RESET_AFTER)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_to_five_seconds_and_start_over_on_reset() {
        let mut doubling = Doubling::new(7);
        let delays: Vec<Duration> = doubling.by_ref().take(8).collect();
        for (delay, full) in delays
            .iter()
            .zip([250, 500, 1000, 2000, 4000, 5000, 5000, 5000])
        {
            let full = Duration::from_millis(full);
            assert!(
                *delay <= full && *delay >= full * 3 / 4,
                "{delay:?} for {full:?}"
            );
        }
        doubling.reset();
        assert!(doubling.next().is_some_and(|delay| delay <= FIRST));
    }
}
