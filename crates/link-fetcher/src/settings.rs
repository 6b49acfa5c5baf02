//! Every setting of `link-fetcher`, read once at start-up from one snapshot of
//! the environment: the only place the fetcher looks at its environment. The
//! pieces (and their checks) are core's, shared with the push endpoint.

use std::time::Duration;

use hls_core::TileSet;
use hls_core::adapters::catalogue::odata::DEFAULT_SEARCH_URL;
use hls_core::adapters::metrics::Metrics;
use hls_core::config::{
    self, ConfigError, DEFAULT_ATTEMPT_TIMEOUT_SECONDS, DatabaseSettings, Vars,
};
use hls_core::use_cases::day_fetch::FetchOptions;

/// Lambda runs many environments at once, each with its own pool.
pub const POOL_CONNECTIONS: u32 = 2;

/// The process environment, once.
pub fn environment() -> Vars {
    std::env::vars_os().collect()
}

/// What a search of the catalogue needs: enough for `fetch --dry-run`.
#[derive(Debug, Clone)]
pub struct SearchSettings {
    /// `SEARCH_URL` (default [`DEFAULT_SEARCH_URL`]).
    pub search_url: String,
    /// The built-in list, or `ALLOWED_TILES_FILE`.
    pub tiles: TileSet,
    /// The catalogue settings, with the retry policy of Lambda or of the command line.
    pub options: FetchOptions,
    /// `MAX_ACQUISITION_AGE_DAYS`.
    pub max_acquisition_age: chrono::Duration,
}

impl SearchSettings {
    pub fn read(vars: &Vars) -> Result<Self, ConfigError> {
        Ok(Self {
            search_url: vars.optional("SEARCH_URL", DEFAULT_SEARCH_URL.to_owned())?,
            tiles: config::tiles(vars)?,
            options: FetchOptions::read(vars, config::in_lambda(vars))?,
            max_acquisition_age: config::max_acquisition_age(vars)?,
        })
    }
}

/// The database alone: enough for `migrate`.
#[derive(Debug, Clone)]
pub struct StoreSettings {
    /// `AWS_ATTEMPT_TIMEOUT_SECONDS` (default 10), for the database secret.
    pub aws_attempt_timeout: Duration,
    /// `DATABASE_URL` or `DB_CONNECTION_SECRET_ARN`, and the pool (`DB_POOL_*`, default 2).
    pub database: DatabaseSettings,
}

impl StoreSettings {
    pub fn read(vars: &Vars) -> Result<Self, ConfigError> {
        Ok(Self {
            aws_attempt_timeout: config::aws_attempt_timeout(
                vars,
                DEFAULT_ATTEMPT_TIMEOUT_SECONDS,
            )?,
            database: DatabaseSettings::read(vars, POOL_CONNECTIONS)?,
        })
    }
}

/// Everything the Lambda, `fetch` and `audit` need.
#[derive(Debug, Clone)]
pub struct Settings {
    pub search: SearchSettings,
    /// `TO_DOWNLOAD_SQS_QUEUE_URL`.
    pub queue_url: String,
    /// `SQS_SEND_CONCURRENCY` (default 8): batches sent at once.
    pub send_concurrency: usize,
    /// `OUTBOX_LEASE_SECONDS` (default 120).
    pub lease: Duration,
    pub store: StoreSettings,
    /// `METRICS_NAMESPACE` and `METRICS_EMF`.
    pub metrics: Metrics,
}

impl Settings {
    pub fn read(vars: &Vars) -> Result<Self, ConfigError> {
        let search = SearchSettings::read(vars)?;
        let aws_attempt_timeout =
            config::aws_attempt_timeout(vars, DEFAULT_ATTEMPT_TIMEOUT_SECONDS)?;
        let queue_url = config::queue_url(vars)?;
        let send_concurrency = vars.optional("SQS_SEND_CONCURRENCY", 8)?;
        Ok(Self {
            search,
            queue_url,
            send_concurrency,
            store: StoreSettings {
                aws_attempt_timeout,
                database: DatabaseSettings::read(vars, POOL_CONNECTIONS)?,
            },
            lease: config::outbox_lease(vars)?,
            metrics: Metrics::read(vars, config::in_lambda(vars))?,
        })
    }
}

#[cfg(test)]
mod tests {
    use hls_core::use_cases::day_fetch::RetryPolicy;

    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vars {
        pairs.iter().copied().collect()
    }

    #[test]
    fn the_command_line_retries_for_seconds_and_the_lambda_for_minutes() {
        let cli = SearchSettings::read(&vars(&[])).unwrap();
        assert_eq!(cli.options.retry, RetryPolicy::command_line());
        assert_eq!(cli.search_url, DEFAULT_SEARCH_URL);
        let lambda =
            SearchSettings::read(&vars(&[("AWS_LAMBDA_RUNTIME_API", "127.0.0.1:9001")])).unwrap();
        assert_eq!(lambda.options.retry, RetryPolicy::lambda());
        assert_eq!(lambda.options.retry.max_attempts, 8);
        assert_eq!(lambda.options.retry.max_delay, Duration::from_secs(60));
    }

    #[test]
    fn a_full_run_needs_the_queue_before_the_database() {
        let error = Settings::read(&vars(&[])).unwrap_err();
        assert_eq!(error.to_string(), "TO_DOWNLOAD_SQS_QUEUE_URL is not set");
        let error = Settings::read(&vars(&[(
            "TO_DOWNLOAD_SQS_QUEUE_URL",
            "http://127.0.0.1:1/q",
        )]))
        .unwrap_err();
        assert_eq!(
            error.to_string(),
            "set DATABASE_URL or DB_CONNECTION_SECRET_ARN"
        );
        let settings = Settings::read(&vars(&[
            ("TO_DOWNLOAD_SQS_QUEUE_URL", "http://127.0.0.1:1/q"),
            ("DATABASE_URL", "postgres://u@h/d"),
            ("SQS_SEND_CONCURRENCY", "3"),
        ]))
        .unwrap();
        assert_eq!(settings.send_concurrency, 3);
        assert_eq!(
            settings.store.database.pool.max_connections,
            POOL_CONNECTIONS
        );
        assert_eq!(settings.store.aws_attempt_timeout, Duration::from_secs(10));
    }
}
