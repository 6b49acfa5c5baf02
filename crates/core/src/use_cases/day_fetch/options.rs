//! How a day is fetched: page size, timeouts, the settle window and the retry policy.

use std::time::Duration;

use rand::RngExt;

use crate::adapters::catalogue::odata::{MAX_SKIP, MAX_TOP};
use crate::config::{ConfigError, Vars};

/// How a day is fetched; every field has a production default.
#[derive(Debug, Clone)]
pub struct FetchOptions {
    /// `$top` (`CATALOGUE_PAGE_SIZE`, default and maximum 1000).
    pub page_size: u32,
    /// One request attempt (`CATALOGUE_TIMEOUT_SECONDS`, default 120: CDSE can take
    /// close to a minute to answer a `$count`).
    pub request_timeout: Duration,
    pub retry: RetryPolicy,
    /// Stop this long before the Lambda deadline (`DEADLINE_MARGIN_SECONDS`, default 60).
    pub deadline_margin: Duration,
    /// The catalogue's `$skip` cap.
    pub max_skip: u32,
    /// How long after its `PublicationDate` a product may still appear in the
    /// catalogue (`CATALOGUE_SETTLE_SECONDS`, default 600). The cursor never
    /// passes products published more recently than this, so one that becomes
    /// visible late, behind products already read, is found by the next run.
    pub settle_time: Duration,
}

impl Default for FetchOptions {
    fn default() -> Self {
        Self {
            page_size: MAX_TOP,
            request_timeout: Duration::from_secs(120),
            retry: RetryPolicy::default(),
            deadline_margin: Duration::from_secs(60),
            max_skip: MAX_SKIP,
            settle_time: Duration::from_secs(600),
        }
    }
}

impl FetchOptions {
    /// The catalogue settings: `CATALOGUE_PAGE_SIZE`, `CATALOGUE_TIMEOUT_SECONDS`,
    /// `CATALOGUE_SETTLE_SECONDS`, `CATALOGUE_MAX_ATTEMPTS`, `CATALOGUE_RETRY_BASE_MS`
    /// and `DEADLINE_MARGIN_SECONDS`. The retry policy starts from
    /// [`RetryPolicy::lambda`] in Lambda and [`RetryPolicy::command_line`] elsewhere.
    pub fn read(vars: &Vars, in_lambda: bool) -> Result<Self, ConfigError> {
        let defaults = Self::default();
        let page_size: u32 = vars.optional("CATALOGUE_PAGE_SIZE", defaults.page_size)?;
        if !(1..=MAX_TOP).contains(&page_size) {
            return Err(ConfigError::Malformed {
                name: "CATALOGUE_PAGE_SIZE",
                reason: format!("{page_size} is not between 1 and {MAX_TOP}"),
            });
        }
        let request_timeout: u64 = vars.optional("CATALOGUE_TIMEOUT_SECONDS", 120)?;
        if request_timeout == 0 {
            return Err(ConfigError::Malformed {
                name: "CATALOGUE_TIMEOUT_SECONDS",
                reason: "0: a request needs some time to be answered".into(),
            });
        }
        let settle_time: u64 = vars.optional("CATALOGUE_SETTLE_SECONDS", 600)?;
        if settle_time > MAX_SETTLE_SECONDS {
            return Err(ConfigError::Malformed {
                name: "CATALOGUE_SETTLE_SECONDS",
                reason: format!(
                    "{settle_time} is more than a day ({MAX_SETTLE_SECONDS}): the cursor would never move"
                ),
            });
        }
        let mut retry = if in_lambda {
            RetryPolicy::lambda()
        } else {
            RetryPolicy::command_line()
        };
        if vars
            .get("CATALOGUE_MAX_ATTEMPTS")
            .is_some_and(|v| !v.trim().is_empty())
        {
            retry = retry.with_attempts(vars.optional("CATALOGUE_MAX_ATTEMPTS", 1)?);
        }
        retry.base_delay = Duration::from_millis(vars.optional("CATALOGUE_RETRY_BASE_MS", 1000)?);
        Ok(Self {
            page_size,
            request_timeout: Duration::from_secs(request_timeout),
            retry,
            deadline_margin: Duration::from_secs(vars.optional("DEADLINE_MARGIN_SECONDS", 60)?),
            max_skip: MAX_SKIP,
            settle_time: Duration::from_secs(settle_time),
        })
    }
}

/// The command line's retry budget (see [`RetryPolicy::command_line`]).
pub const COMMAND_LINE_BUDGET: Duration = Duration::from_secs(30);

/// The longest settle time accepted: a product is visible within a day.
pub const MAX_SETTLE_SECONDS: u64 = 86_400;

/// The one retry policy for catalogue faults that may pass (429, 5xx, connection
/// errors, timeouts): exponential backoff with jitter, or the catalogue's own
/// `Retry-After`, and only while the deadline (and the budget) leaves time for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
    /// No retry is started that would begin more than this long after the
    /// page's first attempt; `None`: only the attempts and the deadline count.
    pub budget: Option<Duration>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self::lambda()
    }
}

impl RetryPolicy {
    /// In Lambda: 8 attempts up to a minute apart, so that a catalogue outage of
    /// a few minutes passes within one invocation (the deadline still rules).
    pub fn lambda() -> Self {
        Self {
            max_attempts: 8,
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(60),
            budget: None,
        }
    }

    /// On the command line a person waits: 4 attempts at most 8 s apart, and
    /// none started after 30 s, so a dead network is reported within about 30 s.
    pub fn command_line() -> Self {
        Self {
            max_attempts: 4,
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(8),
            budget: Some(COMMAND_LINE_BUDGET),
        }
    }

    /// Exactly `attempts` attempts (at least 1), as asked for by
    /// `CATALOGUE_MAX_ATTEMPTS` or `--max-attempts`: the time budget no longer cuts them.
    pub fn with_attempts(self, attempts: u32) -> Self {
        Self {
            max_attempts: attempts.max(1),
            budget: None,
            ..self
        }
    }

    /// Whether a retry after `delay` may start, `elapsed` after the first attempt.
    pub fn allows_retry(&self, elapsed: Duration, delay: Duration) -> bool {
        self.budget
            .is_none_or(|budget| elapsed.saturating_add(delay) <= budget)
    }
    /// The wait after failed attempt `attempt` (1-based): `Retry-After` when given
    /// (capped), else `base * 2^(attempt-1)` with "equal jitter" (half fixed, half random).
    pub fn delay(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        if let Some(asked) = retry_after {
            return asked.min(self.max_delay * 2);
        }
        let exponential = self
            .base_delay
            .saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1)))
            .min(self.max_delay);
        let half = exponential / 2;
        half + half.mul_f64(rand::rng().random::<f64>())
    }
}

#[cfg(test)]
mod tests {

    use super::*;

    #[test]
    fn backoff_grows_with_jitter_and_honours_retry_after() {
        let policy = RetryPolicy {
            max_attempts: 5,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
            budget: None,
        };
        for _ in 0..50 {
            let first = policy.delay(1, None);
            assert!((Duration::from_millis(50)..=Duration::from_millis(100)).contains(&first));
            let third = policy.delay(3, None);
            assert!((Duration::from_millis(200)..=Duration::from_millis(400)).contains(&third));
            assert!(policy.delay(20, None) <= Duration::from_secs(1));
        }
        assert_eq!(
            policy.delay(1, Some(Duration::from_millis(700))),
            Duration::from_millis(700)
        );
        assert_eq!(
            policy.delay(1, Some(Duration::from_secs(3600))),
            Duration::from_secs(2)
        );
    }

    fn vars(pairs: &[(&str, &str)]) -> Vars {
        pairs.iter().copied().collect()
    }

    #[test]
    fn the_command_line_gives_up_within_about_thirty_seconds_and_lambda_keeps_its_minutes() {
        let lambda = FetchOptions::read(&vars(&[]), true).unwrap().retry;
        assert_eq!(lambda, RetryPolicy::default());
        assert_eq!(
            (lambda.max_attempts, lambda.max_delay),
            (8, Duration::from_secs(60))
        );
        assert_eq!(lambda.budget, None);

        let cli = FetchOptions::read(&vars(&[]), false).unwrap().retry;
        assert_eq!(cli, RetryPolicy::command_line());
        assert_eq!(cli.max_attempts, 4);
        // The longest the waits between its attempts can add up to is within the budget.
        let longest_waits: Duration = (1..cli.max_attempts)
            .map(|attempt| (0..200).map(|_| cli.delay(attempt, None)).max().unwrap())
            .sum();
        assert!(
            longest_waits <= Duration::from_secs(15),
            "{longest_waits:?}"
        );
        assert!(cli.allows_retry(Duration::from_secs(20), Duration::from_secs(8)));
        assert!(!cli.allows_retry(Duration::from_secs(25), Duration::from_secs(8)));

        // Attempts asked for explicitly are made, whatever the time.
        for in_lambda in [false, true] {
            let asked = FetchOptions::read(&vars(&[("CATALOGUE_MAX_ATTEMPTS", "6")]), in_lambda)
                .unwrap()
                .retry;
            assert_eq!((asked.max_attempts, asked.budget), (6, None));
        }
        let zero = FetchOptions::read(&vars(&[("CATALOGUE_MAX_ATTEMPTS", "0")]), false).unwrap();
        assert_eq!(zero.retry.max_attempts, 1);
    }

    #[test]
    fn catalogue_settings_are_checked() {
        for (name, value, says) in [
            (
                "CATALOGUE_PAGE_SIZE",
                "0",
                "CATALOGUE_PAGE_SIZE is malformed: 0 is not between 1 and 1000",
            ),
            (
                "CATALOGUE_TIMEOUT_SECONDS",
                "0",
                "CATALOGUE_TIMEOUT_SECONDS is malformed: 0: a request",
            ),
            ("CATALOGUE_SETTLE_SECONDS", "86401", "is more than a day"),
            (
                "CATALOGUE_MAX_ATTEMPTS",
                "many",
                "CATALOGUE_MAX_ATTEMPTS is malformed",
            ),
        ] {
            let error = FetchOptions::read(&vars(&[(name, value)]), false).unwrap_err();
            assert!(error.to_string().contains(says), "{name}={value}: {error}");
        }
        let options = FetchOptions::read(
            &vars(&[
                ("CATALOGUE_PAGE_SIZE", "200"),
                ("CATALOGUE_RETRY_BASE_MS", "20"),
            ]),
            false,
        )
        .unwrap();
        assert_eq!(options.page_size, 200);
        assert_eq!(options.retry.base_delay, Duration::from_millis(20));
    }
}
