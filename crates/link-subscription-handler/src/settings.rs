//! Every setting of `link-subscription-handler`, read once at start-up from
//! one snapshot of the environment: the only place the endpoint looks at its
//! environment. The pieces (and their checks) are core's, shared with the
//! polling fetcher.

use std::time::Duration;

use hls_core::TileSet;
use hls_core::config::{
    self, ConfigError, DEFAULT_ATTEMPT_TIMEOUT_SECONDS, DatabaseSettings, Vars,
};

use crate::{ATTEMPT_TIMEOUT_SECONDS, CredentialSource, CredentialsError};

/// Lambda runs many environments at once, each with its own pool.
const POOL_CONNECTIONS: u32 = 2;

/// The process environment, once.
pub fn environment() -> Vars {
    std::env::vars_os().collect()
}

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error(transparent)]
    Credentials(#[from] CredentialsError),
    #[error(transparent)]
    Config(#[from] ConfigError),
}

/// What the endpoint needs, in Lambda or served locally (`serve`).
#[derive(Debug, Clone)]
pub struct Settings {
    /// `NOTIFICATION_USERNAME` and `NOTIFICATION_PASSWORD`, or `STAGE`'s secret.
    pub credentials: CredentialSource,
    /// `AWS_ATTEMPT_TIMEOUT_SECONDS` (default [`ATTEMPT_TIMEOUT_SECONDS`]).
    pub aws_attempt_timeout: Duration,
    /// `TO_DOWNLOAD_SQS_QUEUE_URL`.
    pub queue_url: String,
    /// `MAX_ACQUISITION_AGE_DAYS`.
    pub max_acquisition_age: chrono::Duration,
    /// The built-in list, or `ALLOWED_TILES_FILE`.
    pub tiles: TileSet,
    /// `DATABASE_URL` or `DB_CONNECTION_SECRET_ARN`, and the pool (`DB_POOL_*`, default 2).
    pub database: DatabaseSettings,
    /// `OUTBOX_LEASE_SECONDS`.
    pub lease: Duration,
}

impl Settings {
    pub fn read(vars: &Vars) -> Result<Self, SettingsError> {
        // Credentials first: without them the function must not start, whatever else is set.
        let credentials = CredentialSource::read(vars)?;
        Ok(Self {
            credentials,
            aws_attempt_timeout: config::aws_attempt_timeout(vars, ATTEMPT_TIMEOUT_SECONDS)?,
            queue_url: config::queue_url(vars)?,
            max_acquisition_age: config::max_acquisition_age(vars)?,
            tiles: config::tiles(vars)?,
            database: DatabaseSettings::read(vars, POOL_CONNECTIONS)?,
            lease: config::outbox_lease(vars)?,
        })
    }
}

/// `migrate`: the database alone, over one connection.
#[derive(Debug, Clone)]
pub struct MigrateSettings {
    /// `AWS_ATTEMPT_TIMEOUT_SECONDS` (default 10), for the database secret.
    pub aws_attempt_timeout: Duration,
    pub database: DatabaseSettings,
}

impl MigrateSettings {
    pub fn read(vars: &Vars) -> Result<Self, ConfigError> {
        Ok(Self {
            aws_attempt_timeout: config::aws_attempt_timeout(
                vars,
                DEFAULT_ATTEMPT_TIMEOUT_SECONDS,
            )?,
            database: DatabaseSettings::read(vars, 1)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vars {
        pairs.iter().copied().collect()
    }

    #[test]
    fn credentials_are_asked_for_before_anything_else() {
        let error = Settings::read(&vars(&[])).unwrap_err();
        assert!(matches!(
            error,
            SettingsError::Credentials(CredentialsError::NotConfigured)
        ));
        let error = Settings::read(&vars(&[("STAGE", "dev")])).unwrap_err();
        assert_eq!(error.to_string(), "TO_DOWNLOAD_SQS_QUEUE_URL is not set");
    }

    #[test]
    fn the_endpoint_fails_its_aws_attempts_sooner_than_migrate() {
        let all = vars(&[
            ("NOTIFICATION_USERNAME", "u"),
            ("NOTIFICATION_PASSWORD", "p"),
            ("TO_DOWNLOAD_SQS_QUEUE_URL", "http://127.0.0.1:1/q"),
            ("DATABASE_URL", "postgres://u@h/d"),
        ]);
        let settings = Settings::read(&all).unwrap();
        assert_eq!(
            settings.aws_attempt_timeout,
            Duration::from_secs(ATTEMPT_TIMEOUT_SECONDS)
        );
        assert_eq!(settings.database.pool.max_connections, POOL_CONNECTIONS);
        let migrate = MigrateSettings::read(&all).unwrap();
        assert_eq!(migrate.aws_attempt_timeout, Duration::from_secs(10));
        assert_eq!(migrate.database.pool.max_connections, 1);
    }
}
