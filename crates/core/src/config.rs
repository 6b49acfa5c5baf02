//! Configuration from the environment, compatible with the Python system's deployment.

use std::str::FromStr;
use std::time::Duration;

use aws_config::SdkConfig;
use aws_config::timeout::TimeoutConfig;
use serde::Deserialize;
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::domain::text::http_url;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0} is not set")]
    Missing(&'static str),
    #[error("{name} is malformed: {reason}")]
    Malformed { name: &'static str, reason: String },
    #[error("set DATABASE_URL or DB_CONNECTION_SECRET_ARN")]
    NoDatabase,
    #[error("secret {secret_id}: {reason}")]
    Secret { secret_id: String, reason: String },
    #[error("cannot connect to the database: {0}")]
    Connect(sqlx::Error),
}

/// A setting that must be present and non-empty.
pub fn required(name: &'static str) -> Result<String, ConfigError> {
    match std::env::var(name) {
        Ok(value) if !value.trim().is_empty() => Ok(value),
        Ok(_) | Err(std::env::VarError::NotPresent) => Err(ConfigError::Missing(name)),
        Err(std::env::VarError::NotUnicode(_)) => Err(ConfigError::Malformed {
            name,
            reason: "not UTF-8".into(),
        }),
    }
}

/// A setting with a default; set but unparseable is an error, not the default.
pub fn optional<T>(name: &'static str, default: T) -> Result<T, ConfigError>
where
    T: FromStr,
    T::Err: std::fmt::Display,
{
    match std::env::var(name) {
        Ok(value) if !value.trim().is_empty() => {
            value
                .trim()
                .parse()
                .map_err(|e: T::Err| ConfigError::Malformed {
                    name,
                    reason: format!("{value:?}: {e}"),
                })
        }
        _ => Ok(default),
    }
}

/// `TO_DOWNLOAD_SQS_QUEUE_URL`, checked to be an http(s) URL.
pub fn queue_url() -> Result<String, ConfigError> {
    let value = required("TO_DOWNLOAD_SQS_QUEUE_URL")?;
    match http_url(&value) {
        Ok(_) => Ok(value),
        Err(e) => Err(ConfigError::Malformed {
            name: "TO_DOWNLOAD_SQS_QUEUE_URL",
            reason: e.to_string(),
        }),
    }
}

/// `MAX_ACQUISITION_AGE_DAYS` (default 30): older acquisitions are reprocessing, not news.
pub fn max_acquisition_age() -> Result<chrono::Duration, ConfigError> {
    let days: u16 = optional("MAX_ACQUISITION_AGE_DAYS", 30)?;
    Ok(chrono::Duration::days(days.into()))
}

/// Where the database connection comes from.
#[derive(Clone)]
pub enum DatabaseSource {
    /// `DATABASE_URL`.
    Url(String),
    /// `DB_CONNECTION_SECRET_ARN`: an RDS-format secret in Secrets Manager.
    Secret(String),
}

impl std::fmt::Debug for DatabaseSource {
    // The URL may carry a password: never print it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Url(_) => f.write_str("DatabaseSource::Url(<redacted>)"),
            Self::Secret(arn) => write!(f, "DatabaseSource::Secret({arn})"),
        }
    }
}

impl DatabaseSource {
    pub fn from_env() -> Result<Self, ConfigError> {
        if let Ok(url) = required("DATABASE_URL") {
            return Ok(Self::Url(url));
        }
        if let Ok(arn) = required("DB_CONNECTION_SECRET_ARN") {
            return Ok(Self::Secret(arn));
        }
        Err(ConfigError::NoDatabase)
    }

    pub async fn connect_options(&self, aws: &SdkConfig) -> Result<PgConnectOptions, ConfigError> {
        match self {
            Self::Url(url) => url
                .parse()
                .map_err(|e: sqlx::Error| ConfigError::Malformed {
                    name: "DATABASE_URL",
                    // sqlx's message does not echo the URL.
                    reason: e.to_string(),
                }),
            Self::Secret(arn) => {
                let text = secret_string(aws, arn).await?;
                let secret: RdsSecret =
                    serde_json::from_str(&text).map_err(|e| ConfigError::Secret {
                        secret_id: arn.clone(),
                        reason: format!("not an RDS connection secret: {e}"),
                    })?;
                Ok(secret.connect_options())
            }
        }
    }
}

/// The JSON layout RDS and CDK give database secrets.
#[derive(Deserialize)]
struct RdsSecret {
    username: String,
    password: String,
    host: String,
    dbname: String,
    #[serde(default, deserialize_with = "port_number_or_string")]
    port: Option<u16>,
}

impl RdsSecret {
    fn connect_options(&self) -> PgConnectOptions {
        PgConnectOptions::new()
            .host(&self.host)
            .port(self.port.unwrap_or(5432))
            .username(&self.username)
            .password(&self.password)
            .database(&self.dbname)
    }
}

fn port_number_or_string<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u16>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Port {
        Number(u16),
        Text(String),
    }
    match Option::<Port>::deserialize(d)? {
        None => Ok(None),
        Some(Port::Number(n)) => Ok(Some(n)),
        Some(Port::Text(s)) => s.parse().map(Some).map_err(serde::de::Error::custom),
    }
}

/// The `SecretString` of a Secrets Manager secret.
pub async fn secret_string(aws: &SdkConfig, secret_id: &str) -> Result<String, ConfigError> {
    let client = aws_sdk_secretsmanager::Client::new(aws);
    let output = client
        .get_secret_value()
        .secret_id(secret_id)
        .send()
        .await
        .map_err(|e| ConfigError::Secret {
            secret_id: secret_id.to_owned(),
            reason: aws_sdk_secretsmanager::error::DisplayErrorContext(e).to_string(),
        })?;
    output.secret_string.ok_or_else(|| ConfigError::Secret {
        secret_id: secret_id.to_owned(),
        reason: "has no SecretString".into(),
    })
}

/// String fields of a secret holding a JSON object, in the order of `keys`.
/// Walked by hand: serde's messages could quote a value.
pub async fn secret_fields<const N: usize>(
    aws: &SdkConfig,
    secret_id: &str,
    keys: [&str; N],
) -> Result<[String; N], ConfigError> {
    let text = secret_string(aws, secret_id).await?;
    let malformed = |reason: String| ConfigError::Secret {
        secret_id: secret_id.to_owned(),
        reason,
    };
    let secret: serde_json::Value =
        serde_json::from_str(&text).map_err(|_| malformed("is not a JSON object".into()))?;
    let mut fields = Vec::with_capacity(N);
    for key in keys {
        match secret.get(key).and_then(serde_json::Value::as_str) {
            Some(value) => fields.push(value.to_owned()),
            None => return Err(malformed(format!("{key} is missing or not a string"))),
        }
    }
    Ok(fields.try_into().expect("one field per key"))
}

/// The shared AWS configuration: region and credentials from the standard chain,
/// `AWS_ENDPOINT_URL` for a local server, and timeouts so a dead endpoint fails
/// fast: 3 s to connect, `AWS_ATTEMPT_TIMEOUT_SECONDS` (default 10) per attempt
/// (SQS answers in milliseconds; a loaded local moto can take longer).
pub async fn aws_config() -> Result<SdkConfig, ConfigError> {
    aws_config_with(DEFAULT_ATTEMPT_TIMEOUT_SECONDS).await
}

/// `AWS_ATTEMPT_TIMEOUT_SECONDS`'s default for [`aws_config`].
pub const DEFAULT_ATTEMPT_TIMEOUT_SECONDS: u64 = 10;

/// [`aws_config`] with another default attempt timeout: the push endpoint must
/// answer within its 25 s, and the SDK makes up to three attempts, so a queue
/// that hangs must fail its attempts sooner there.
pub async fn aws_config_with(default_attempt_seconds: u64) -> Result<SdkConfig, ConfigError> {
    let seconds: u64 = optional("AWS_ATTEMPT_TIMEOUT_SECONDS", default_attempt_seconds)?;
    if seconds == 0 {
        return Err(ConfigError::Malformed {
            name: "AWS_ATTEMPT_TIMEOUT_SECONDS",
            reason: "0: an attempt needs some time".into(),
        });
    }
    let attempt_timeout = Duration::from_secs(seconds);
    Ok(aws_config::defaults(aws_config::BehaviorVersion::latest())
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(3))
                .operation_attempt_timeout(attempt_timeout)
                .build(),
        )
        .load()
        .await)
}

/// Pool settings. Lambda runs many environments at once, each with its own pool,
/// so pools stay small (`DB_POOL_MAX_CONNECTIONS`); put RDS Proxy in front at scale.
///
/// Every connection also carries Postgres timeouts, so a request waiting on a
/// row lock (or a runaway statement) fails in time for the caller to retry,
/// before the Lambda deadline or API Gateway's 29 s cut it off blindly.
#[derive(Debug, Clone, Copy)]
pub struct PoolSettings {
    pub max_connections: u32,
    pub acquire_timeout: Duration,
    /// `lock_timeout`: longest wait for a lock (`DB_LOCK_TIMEOUT_MS`).
    pub lock_timeout: Duration,
    /// `statement_timeout`: longest statement (`DB_STATEMENT_TIMEOUT_MS`).
    pub statement_timeout: Duration,
    /// `idle_in_transaction_session_timeout`: a connection left idle inside a
    /// transaction is closed and its locks released (`DB_IDLE_IN_TRANSACTION_TIMEOUT_MS`).
    pub idle_in_transaction_timeout: Duration,
}

impl PoolSettings {
    pub fn from_env(default_max_connections: u32) -> Result<Self, ConfigError> {
        Ok(Self {
            max_connections: optional("DB_POOL_MAX_CONNECTIONS", default_max_connections)?.max(1),
            acquire_timeout: Duration::from_secs(optional("DB_ACQUIRE_TIMEOUT_SECONDS", 5)?),
            lock_timeout: timeout_ms("DB_LOCK_TIMEOUT_MS", optional("DB_LOCK_TIMEOUT_MS", 5_000)?)?,
            statement_timeout: timeout_ms(
                "DB_STATEMENT_TIMEOUT_MS",
                optional("DB_STATEMENT_TIMEOUT_MS", 20_000)?,
            )?,
            idle_in_transaction_timeout: timeout_ms(
                "DB_IDLE_IN_TRANSACTION_TIMEOUT_MS",
                optional("DB_IDLE_IN_TRANSACTION_TIMEOUT_MS", 30_000)?,
            )?,
        })
    }

    /// A pool that connects on first use, so start-up does not wait on (or fail
    /// because of) the database; a database fault then surfaces per request.
    pub fn connect_lazy(&self, options: PgConnectOptions) -> PgPool {
        self.pool_options()
            .connect_lazy_with(self.session_options(options))
    }

    pub async fn connect(&self, options: PgConnectOptions) -> Result<PgPool, ConfigError> {
        self.pool_options()
            .connect_with(self.session_options(options))
            .await
            .map_err(ConfigError::Connect)
    }

    fn pool_options(&self) -> PgPoolOptions {
        PgPoolOptions::new()
            .max_connections(self.max_connections)
            .acquire_timeout(self.acquire_timeout)
    }

    /// The timeouts go in the startup packet (`options=-c ...`) rather than a
    /// `SET` after connecting: one round trip fewer, and no session state that
    /// RDS Proxy would pin the connection for.
    fn session_options(&self, options: PgConnectOptions) -> PgConnectOptions {
        let ms = |timeout: Duration| format!("{}ms", timeout.as_millis());
        options.options([
            ("lock_timeout", ms(self.lock_timeout)),
            ("statement_timeout", ms(self.statement_timeout)),
            (
                "idle_in_transaction_session_timeout",
                ms(self.idle_in_transaction_timeout),
            ),
        ])
    }
}

/// A Postgres timeout in milliseconds: 0 (which Postgres reads as "never") and
/// values past its `int` range are refused.
fn timeout_ms(name: &'static str, ms: u64) -> Result<Duration, ConfigError> {
    if ms == 0 || ms > i32::MAX as u64 {
        return Err(ConfigError::Malformed {
            name,
            reason: format!(
                "{ms}: give milliseconds from 1 to {} (0 would disable the timeout)",
                i32::MAX
            ),
        });
    }
    Ok(Duration::from_millis(ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rds_secret_port_may_be_a_number_a_string_or_absent() {
        for (text, port) in [
            (
                r#"{"username":"u","password":"p","host":"h","dbname":"d","port":6543}"#,
                Some(6543),
            ),
            (
                r#"{"username":"u","password":"p","host":"h","dbname":"d","port":"6543"}"#,
                Some(6543),
            ),
            (
                r#"{"username":"u","password":"p","host":"h","dbname":"d","engine":"postgres"}"#,
                None,
            ),
        ] {
            let secret: RdsSecret = serde_json::from_str(text).unwrap();
            assert_eq!(secret.port, port);
            assert_eq!(secret.connect_options().get_port(), port.unwrap_or(5432));
        }
        assert!(
            serde_json::from_str::<RdsSecret>(r#"{"username":"u","host":"h","dbname":"d"}"#)
                .is_err()
        );
    }

    #[test]
    fn postgres_timeouts_must_be_positive_milliseconds() {
        assert_eq!(
            timeout_ms("DB_LOCK_TIMEOUT_MS", 300).unwrap(),
            Duration::from_millis(300)
        );
        for bad in [0, u64::from(u32::MAX)] {
            let message = timeout_ms("DB_LOCK_TIMEOUT_MS", bad)
                .unwrap_err()
                .to_string();
            assert!(
                message.starts_with(&format!("DB_LOCK_TIMEOUT_MS is malformed: {bad}:")),
                "{message}"
            );
        }
    }

    #[test]
    fn database_url_is_never_printed() {
        let source = DatabaseSource::Url("postgres://u:hunter2@h/d".into());
        assert!(!format!("{source:?}").contains("hunter2"));
    }
}
