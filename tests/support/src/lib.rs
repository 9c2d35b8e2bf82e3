//! Waits for tests that run on a busy machine.
//!
//! A test that sleeps for a fixed time and then asserts passes on a quiet machine and fails on a
//! loaded one. Every wait in gpufleet's integration and end-to-end tests instead polls a
//! condition until it holds, and when it gives up it says what it waited for and what it saw
//! the last time it looked, so a failure in CI explains itself:
//!
//! ```text
//! timed out after 120s waiting for 100 burst replicas Ready; last seen: burst 37/100 Ready,
//! chat 8/8 …
//! ```
//!
//! The limit is a failure bound for liveness ("it never happened"), never a speed claim: speed
//! is measured by benchmarks and printed by tests, not asserted.

use std::future::Future;
use std::time::{Duration, Instant};

/// What one look at a condition found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    /// The condition holds.
    Done,
    /// Not yet; what was seen instead, in words a failure message can quote.
    NotYet(String),
    /// Something that must never happen while waiting did (a disruption budget broken, a GPU
    /// given twice): the wait fails at once with this description.
    Broken(String),
}

impl Seen {
    /// [`Seen::Done`] when `done`, otherwise [`Seen::NotYet`] with `seen()`'s description.
    pub fn done_if(done: bool, seen: impl FnOnce() -> String) -> Seen {
        if done {
            Seen::Done
        } else {
            Seen::NotYet(seen())
        }
    }
}

/// How often a condition is looked at.
pub const POLL_INTERVAL: Duration = Duration::from_millis(200);

/// Polls `check` every [`POLL_INTERVAL`] until it returns [`Seen::Done`]; after `limit`, fails
/// naming `what` and the last thing `check` saw (or the last error it returned).
///
/// # Errors
/// When the condition did not hold within `limit`.
pub async fn wait_until<F, Fut>(limit: Duration, what: &str, check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Seen>>,
{
    wait_every(limit, POLL_INTERVAL, what, check).await
}

/// [`wait_until`] with its own polling interval, for conditions that are cheap to look at and
/// whose timing a test reports.
///
/// # Errors
/// When the condition did not hold within `limit`.
pub async fn wait_every<F, Fut>(
    limit: Duration,
    interval: Duration,
    what: &str,
    mut check: F,
) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Seen>>,
{
    let started = Instant::now();
    let mut last = Last::default();
    loop {
        match check().await {
            Ok(Seen::Done) => return Ok(()),
            Ok(Seen::NotYet(seen)) => last.seen(seen),
            Ok(Seen::Broken(broken)) => {
                anyhow::bail!("while waiting for {what}: {broken}")
            }
            Err(error) => last.error(&error),
        }
        if started.elapsed() >= limit {
            anyhow::bail!("timed out after {limit:?} waiting for {what}; {last}");
        }
        tokio::time::sleep(interval).await;
    }
}

/// The blocking form of [`wait_until`], for tests without an async runtime.
///
/// # Errors
/// When the condition did not hold within `limit`.
pub fn wait_until_blocking<F>(limit: Duration, what: &str, mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> anyhow::Result<Seen>,
{
    let started = Instant::now();
    let mut last = Last::default();
    loop {
        match check() {
            Ok(Seen::Done) => return Ok(()),
            Ok(Seen::NotYet(seen)) => last.seen(seen),
            Ok(Seen::Broken(broken)) => {
                anyhow::bail!("while waiting for {what}: {broken}")
            }
            Err(error) => last.error(&error),
        }
        if started.elapsed() >= limit {
            anyhow::bail!("timed out after {limit:?} waiting for {what}; {last}");
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// The last observation and the last error, for the failure message.
#[derive(Default)]
struct Last {
    seen: Option<String>,
    error: Option<String>,
}

impl Last {
    fn seen(&mut self, seen: String) {
        self.seen = Some(seen);
        self.error = None;
    }

    fn error(&mut self, error: &anyhow::Error) {
        self.error = Some(format!("{error:#}"));
    }
}

impl std::fmt::Display for Last {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.seen, &self.error) {
            (Some(seen), Some(error)) => {
                write!(formatter, "last seen: {seen}; then an error: {error}")
            }
            (Some(seen), None) => write!(formatter, "last seen: {seen}"),
            (None, Some(error)) => {
                write!(formatter, "never looked successfully; last error: {error}")
            }
            (None, None) => write!(formatter, "never looked"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_timeout_names_what_it_waited_for_and_what_it_saw_last() {
        let mut looks = 0;
        let result = wait_every(
            Duration::from_millis(30),
            Duration::from_millis(5),
            "three apples",
            || {
                looks += 1;
                let seen = looks;
                async move { Ok(Seen::done_if(false, || format!("{seen} apples"))) }
            },
        )
        .await;
        let message = result.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(message.contains("waiting for three apples"), "{message}");
        assert!(
            message.contains(&format!("last seen: {looks} apples")),
            "{message}"
        );
    }

    #[tokio::test]
    async fn an_error_after_an_observation_keeps_both() {
        let mut looks = 0;
        let result = wait_every(
            Duration::from_millis(30),
            Duration::from_millis(5),
            "x",
            || {
                looks += 1;
                let first = looks == 1;
                async move {
                    if first {
                        Ok(Seen::NotYet("one".to_owned()))
                    } else {
                        anyhow::bail!("connection refused")
                    }
                }
            },
        )
        .await;
        let message = result.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(
            message.contains("last seen: one; then an error: connection refused"),
            "{message}"
        );
    }

    #[tokio::test]
    async fn a_broken_invariant_fails_at_once() {
        let result = wait_until(Duration::from_secs(60), "recovery", || async {
            Ok(Seen::Broken("2 Ready, budget 3".to_owned()))
        })
        .await;
        let message = result.err().map(|e| e.to_string()).unwrap_or_default();
        assert_eq!(message, "while waiting for recovery: 2 Ready, budget 3");
    }

    #[test]
    fn the_blocking_form_returns_once_done() -> anyhow::Result<()> {
        let mut looks = 0;
        wait_until_blocking(Duration::from_secs(5), "the second look", || {
            looks += 1;
            Ok(Seen::done_if(looks >= 2, || "first look".to_owned()))
        })?;
        assert_eq!(looks, 2);
        Ok(())
    }
}
