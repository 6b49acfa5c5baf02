//! How a day is fetched: page size, timeouts, the settle window and the retry policy.

use std::time::Duration;

use rand::RngExt;

use crate::adapters::catalogue::odata::{MAX_SKIP, MAX_TOP};
use crate::config::{ConfigError, optional};

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
    pub fn from_env() -> Result<Self, ConfigError> {
        let defaults = Self::default();
        let page_size: u32 = optional("CATALOGUE_PAGE_SIZE", defaults.page_size)?;
        if !(1..=MAX_TOP).contains(&page_size) {
            return Err(ConfigError::Malformed {
                name: "CATALOGUE_PAGE_SIZE",
                reason: format!("{page_size} is not between 1 and {MAX_TOP}"),
            });
        }
        let request_timeout: u64 = optional("CATALOGUE_TIMEOUT_SECONDS", 120)?;
        if request_timeout == 0 {
            return Err(ConfigError::Malformed {
                name: "CATALOGUE_TIMEOUT_SECONDS",
                reason: "0: a request needs some time to be answered".into(),
            });
        }
        let settle_time: u64 = optional("CATALOGUE_SETTLE_SECONDS", 600)?;
        if settle_time > MAX_SETTLE_SECONDS {
            return Err(ConfigError::Malformed {
                name: "CATALOGUE_SETTLE_SECONDS",
                reason: format!(
                    "{settle_time} is more than a day ({MAX_SETTLE_SECONDS}): the cursor would never move"
                ),
            });
        }
        Ok(Self {
            page_size,
            request_timeout: Duration::from_secs(request_timeout),
            retry: RetryPolicy {
                max_attempts: optional("CATALOGUE_MAX_ATTEMPTS", defaults.retry.max_attempts)?
                    .max(1),
                base_delay: Duration::from_millis(optional("CATALOGUE_RETRY_BASE_MS", 1000)?),
                max_delay: defaults.retry.max_delay,
            },
            deadline_margin: Duration::from_secs(optional("DEADLINE_MARGIN_SECONDS", 60)?),
            max_skip: MAX_SKIP,
            settle_time: Duration::from_secs(settle_time),
        })
    }
}

/// The longest settle time accepted: a product is visible within a day.
pub const MAX_SETTLE_SECONDS: u64 = 86_400;

/// The one retry policy for catalogue faults that may pass (429, 5xx, connection
/// errors, timeouts): exponential backoff with jitter, or the catalogue's own
/// `Retry-After`, and only while the deadline leaves time for it.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 8,
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
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
}
