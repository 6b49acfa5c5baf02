//! The typed pieces of the binaries' settings, compatible with the Python
//! system's deployment: each is read from a [`Vars`] snapshot, which each
//! binary's `settings.rs` takes from the environment once, at start-up.

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use aws_config::SdkConfig;
use aws_config::stalled_stream_protection::StalledStreamProtectionConfig;
use aws_config::timeout::TimeoutConfig;
use serde::Deserialize;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgPool};

use crate::domain::text::http_url;
use crate::domain::tiles::{TileListError, TileSet};
use crate::use_cases::handoff::DEFAULT_LEASE;

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
    #[error("cannot read tile list {path}: {source}")]
    TileFile {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    TileList(#[from] TileListError),
}

/// A snapshot of the process environment, taken once by a binary's settings
/// (`vars_os`); every typed setting is read from it, so nothing
/// below the settings reads the environment itself.
#[derive(Clone, Default)]
pub struct Vars(HashMap<String, OsString>);

impl std::fmt::Debug for Vars {
    // Values may be passwords (`DATABASE_URL`, `NOTIFICATION_PASSWORD`): names only.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut names: Vec<&str> = self.0.keys().map(String::as_str).collect();
        names.sort_unstable();
        f.debug_tuple("Vars").field(&names).finish()
    }
}

impl<K: Into<OsString>, V: Into<OsString>> FromIterator<(K, V)> for Vars {
    /// Names that are not UTF-8 cannot be any setting and are dropped.
    fn from_iter<I: IntoIterator<Item = (K, V)>>(vars: I) -> Self {
        Self(
            vars.into_iter()
                .filter_map(|(name, value)| Some((name.into().into_string().ok()?, value.into())))
                .collect(),
        )
    }
}

impl Vars {
    /// Whether `name` is set at all, even empty or not UTF-8.
    pub fn contains(&self, name: &str) -> bool {
        self.0.contains_key(name)
    }

    /// The raw value of `name` when it is set (paths need not be UTF-8).
    pub fn get_os(&self, name: &str) -> Option<&std::ffi::OsStr> {
        self.0.get(name).map(OsString::as_os_str)
    }

    /// The value of `name` when it is set and UTF-8 (possibly empty).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).and_then(|value| value.to_str())
    }

    /// A setting that must be present and non-empty.
    pub fn required(&self, name: &'static str) -> Result<String, ConfigError> {
        match self.0.get(name).map(|value| value.to_str()) {
            Some(Some(value)) if !value.trim().is_empty() => Ok(value.to_owned()),
            None | Some(Some(_)) => Err(ConfigError::Missing(name)),
            Some(None) => Err(ConfigError::Malformed {
                name,
                reason: "not UTF-8".into(),
            }),
        }
    }

    /// A setting with a default; set but unparseable is an error, not the default.
    pub fn optional<T>(&self, name: &'static str, default: T) -> Result<T, ConfigError>
    where
        T: FromStr,
        T::Err: std::fmt::Display,
    {
        match self.get(name) {
            Some(value) if !value.trim().is_empty() => {
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
}

/// Whether the Lambda runtime started the process: it sets `AWS_LAMBDA_RUNTIME_API`.
pub fn in_lambda(vars: &Vars) -> bool {
    vars.contains("AWS_LAMBDA_RUNTIME_API")
}

/// `TO_DOWNLOAD_SQS_QUEUE_URL`, checked to be an http(s) URL.
pub fn queue_url(vars: &Vars) -> Result<String, ConfigError> {
    let value = vars.required("TO_DOWNLOAD_SQS_QUEUE_URL")?;
    match http_url(&value) {
        Ok(_) => Ok(value),
        Err(e) => Err(ConfigError::Malformed {
            name: "TO_DOWNLOAD_SQS_QUEUE_URL",
            reason: e.to_string(),
        }),
    }
}

/// `MAX_ACQUISITION_AGE_DAYS` (default 30): older acquisitions are reprocessing, not news.
pub fn max_acquisition_age(vars: &Vars) -> Result<chrono::Duration, ConfigError> {
    let days: u16 = vars.optional("MAX_ACQUISITION_AGE_DAYS", 30)?;
    Ok(chrono::Duration::days(days.into()))
}

/// The tiles HLS processes: the built-in list, or the file named by
/// `ALLOWED_TILES_FILE` when that is set. The file is read here, at start-up,
/// so that the domain's [`TileSet`] stays pure.
pub fn tiles(vars: &Vars) -> Result<TileSet, ConfigError> {
    let path = match vars.0.get("ALLOWED_TILES_FILE") {
        Some(path) if !path.is_empty() => Path::new(path),
        _ => return Ok(TileSet::built_in()),
    };
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::TileFile {
        path: path.display().to_string(),
        source,
    })?;
    Ok(TileSet::parse(&text)?)
}

/// `OUTBOX_LEASE_SECONDS` (default [`DEFAULT_LEASE`], at least 1): how long a
/// sender holds the owed messages it claimed.
pub fn outbox_lease(vars: &Vars) -> Result<Duration, ConfigError> {
    let seconds: u64 = vars.optional("OUTBOX_LEASE_SECONDS", DEFAULT_LEASE.as_secs())?;
    if seconds == 0 {
        return Err(ConfigError::Malformed {
            name: "OUTBOX_LEASE_SECONDS",
            reason: "0: a sender must hold what it claimed while it sends".into(),
        });
    }
    Ok(Duration::from_secs(seconds))
}

/// The database settings both binaries read: where the connection comes from
/// and the pool.
#[derive(Debug, Clone)]
pub struct DatabaseSettings {
    pub source: DatabaseSource,
    pub pool: PoolSettings,
}

impl DatabaseSettings {
    /// [`DatabaseSource::read`] and [`PoolSettings::read`].
    pub fn read(vars: &Vars, default_max_connections: u32) -> Result<Self, ConfigError> {
        Ok(Self {
            source: DatabaseSource::read(vars)?,
            pool: PoolSettings::read(vars, default_max_connections)?,
        })
    }

    /// A pool that connects on first use (see [`PoolSettings::connect_lazy`]);
    /// the secret, if any, is read now.
    pub async fn connect_lazy(&self, aws: &SdkConfig) -> Result<PgPool, ConfigError> {
        let options = self.source.connect_options(aws).await?;
        Ok(self.pool.connect_lazy(options))
    }

    /// A pool connected now.
    pub async fn connect(&self, aws: &SdkConfig) -> Result<PgPool, ConfigError> {
        let options = self.source.connect_options(aws).await?;
        self.pool.connect(options).await
    }
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
    /// `DATABASE_URL`, else `DB_CONNECTION_SECRET_ARN`.
    pub fn read(vars: &Vars) -> Result<Self, ConfigError> {
        if let Ok(url) = vars.required("DATABASE_URL") {
            return Ok(Self::Url(url));
        }
        if let Ok(arn) = vars.required("DB_CONNECTION_SECRET_ARN") {
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

/// `AWS_ATTEMPT_TIMEOUT_SECONDS`'s default for [`aws_attempt_timeout`].
pub const DEFAULT_ATTEMPT_TIMEOUT_SECONDS: u64 = 10;

/// `AWS_ATTEMPT_TIMEOUT_SECONDS` (at least 1), with the binary's default: the
/// push endpoint must answer within its 25 s, and the SDK makes up to three
/// attempts, so a queue that hangs must fail its attempts sooner there.
pub fn aws_attempt_timeout(vars: &Vars, default_seconds: u64) -> Result<Duration, ConfigError> {
    let seconds: u64 = vars.optional("AWS_ATTEMPT_TIMEOUT_SECONDS", default_seconds)?;
    if seconds == 0 {
        return Err(ConfigError::Malformed {
            name: "AWS_ATTEMPT_TIMEOUT_SECONDS",
            reason: "0: an attempt needs some time".into(),
        });
    }
    Ok(Duration::from_secs(seconds))
}

/// The shared AWS configuration: region and credentials from the SDK's standard
/// chain, `AWS_ENDPOINT_URL` for a local server, and timeouts so a dead endpoint
/// fails fast: 3 s to connect, `attempt_timeout` per attempt (SQS answers in
/// milliseconds; a loaded local moto can take longer).
///
/// Stalled-stream protection is off: it guards long streamed bodies, and ours
/// are a few KiB that the attempt timeout already bounds, while its throughput
/// check polls a timer through every call (9 % of the fetch's CPU against moto).
pub async fn aws_sdk_config(attempt_timeout: Duration) -> SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(3))
                .operation_attempt_timeout(attempt_timeout)
                .build(),
        )
        .stalled_stream_protection(StalledStreamProtectionConfig::disabled())
        .load()
        .await
}

/// A pooled connection idle this long is pinged before it is handed out.
const PING_AFTER_IDLE: Duration = Duration::from_secs(1);

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
    /// `DB_POOL_MAX_CONNECTIONS` (the binary's default), `DB_ACQUIRE_TIMEOUT_SECONDS`
    /// (5) and the three Postgres timeouts.
    pub fn read(vars: &Vars, default_max_connections: u32) -> Result<Self, ConfigError> {
        let ms = |name: &'static str, default: u64| timeout_ms(name, vars.optional(name, default)?);
        Ok(Self {
            max_connections: vars
                .optional("DB_POOL_MAX_CONNECTIONS", default_max_connections)?
                .max(1),
            acquire_timeout: Duration::from_secs(vars.optional("DB_ACQUIRE_TIMEOUT_SECONDS", 5)?),
            lock_timeout: ms("DB_LOCK_TIMEOUT_MS", 5_000)?,
            statement_timeout: ms("DB_STATEMENT_TIMEOUT_MS", 20_000)?,
            idle_in_transaction_timeout: ms("DB_IDLE_IN_TRANSACTION_TIMEOUT_MS", 30_000)?,
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
            // A connection is pinged only after it sat idle, as it does while a
            // Lambda environment is frozen between invocations (and RDS or a
            // proxy may have closed it); pinging on every acquire cost a round
            // trip per statement, 7 % of the fetch's CPU.
            .test_before_acquire(false)
            .before_acquire(|connection, meta| {
                Box::pin(async move {
                    if meta.idle_for >= PING_AFTER_IDLE {
                        connection.ping().await?;
                    }
                    Ok(true)
                })
            })
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

    fn vars(pairs: &[(&str, &str)]) -> Vars {
        pairs.iter().copied().collect()
    }

    #[test]
    fn blank_is_unset_and_set_but_unparseable_is_an_error() {
        let vars = vars(&[("A", " 7 "), ("BLANK", "  "), ("BAD", "x")]);
        assert_eq!(vars.optional("A", 1u32).unwrap(), 7);
        assert_eq!(vars.optional("BLANK", 1u32).unwrap(), 1);
        assert_eq!(vars.optional("UNSET", 1u32).unwrap(), 1);
        assert_eq!(
            vars.optional("BAD", 1u32).unwrap_err().to_string(),
            r#"BAD is malformed: "x": invalid digit found in string"#
        );
        assert_eq!(vars.required("A").unwrap(), " 7 ");
        assert_eq!(
            vars.required("BLANK").unwrap_err().to_string(),
            "BLANK is not set"
        );
        assert!(matches!(
            DatabaseSource::read(&vars),
            Err(ConfigError::NoDatabase)
        ));
    }

    #[cfg(unix)]
    #[test]
    fn a_value_that_is_not_utf8_is_malformed_when_required() {
        use std::os::unix::ffi::OsStringExt;
        let vars: Vars = [(OsString::from("X"), OsString::from_vec(vec![0xff]))]
            .into_iter()
            .collect();
        assert!(vars.contains("X"));
        assert_eq!(
            vars.required("X").unwrap_err().to_string(),
            "X is malformed: not UTF-8"
        );
    }

    #[test]
    fn settings_shared_by_both_binaries_keep_their_checks() {
        let bad = |pairs: &[(&str, &str)]| vars(pairs);
        assert_eq!(
            outbox_lease(&bad(&[("OUTBOX_LEASE_SECONDS", "0")]))
                .unwrap_err()
                .to_string(),
            "OUTBOX_LEASE_SECONDS is malformed: 0: a sender must hold what it claimed while it sends"
        );
        assert_eq!(outbox_lease(&bad(&[])).unwrap(), DEFAULT_LEASE);
        assert_eq!(
            aws_attempt_timeout(&bad(&[]), 3).unwrap(),
            Duration::from_secs(3)
        );
        assert!(aws_attempt_timeout(&bad(&[("AWS_ATTEMPT_TIMEOUT_SECONDS", "0")]), 3).is_err());
        assert!(
            queue_url(&bad(&[("TO_DOWNLOAD_SQS_QUEUE_URL", "ftp://q")]))
                .unwrap_err()
                .to_string()
                .contains("is not http(s)")
        );
        let pool = PoolSettings::read(&bad(&[("DB_POOL_MAX_CONNECTIONS", "0")]), 2).unwrap();
        assert_eq!(pool.max_connections, 1);
        assert_eq!(pool.lock_timeout, Duration::from_secs(5));
        assert!(PoolSettings::read(&bad(&[("DB_STATEMENT_TIMEOUT_MS", "0")]), 2).is_err());
        let source = DatabaseSource::read(&bad(&[
            ("DATABASE_URL", ""),
            ("DB_CONNECTION_SECRET_ARN", "arn:x"),
        ]))
        .unwrap();
        assert!(matches!(source, DatabaseSource::Secret(arn) if arn == "arn:x"));
        assert_eq!(max_acquisition_age(&bad(&[])).unwrap().num_days(), 30);
    }

    #[test]
    fn the_tile_list_is_built_in_unless_a_file_is_named() {
        assert_eq!(
            tiles(&vars(&[("ALLOWED_TILES_FILE", "")])).unwrap().len(),
            18_952
        );
        let missing = tiles(&vars(&[("ALLOWED_TILES_FILE", "/nonexistent/tiles.txt")]))
            .unwrap_err()
            .to_string();
        assert!(
            missing.starts_with("cannot read tile list /nonexistent/tiles.txt: "),
            "{missing}"
        );
        let path = std::env::temp_dir().join(format!("tiles-{}.txt", std::process::id()));
        std::fs::write(&path, "01ABC\nnope\n").unwrap();
        let bad = tiles(&vars(&[("ALLOWED_TILES_FILE", path.to_str().unwrap())]));
        std::fs::remove_file(&path).unwrap();
        assert!(bad.unwrap_err().to_string().contains("line 2"));
    }

    #[test]
    fn vars_never_print_their_values() {
        let vars = vars(&[("DATABASE_URL", "postgres://u:hunter2@h/d")]);
        assert!(!format!("{vars:?}").contains("hunter2"));
    }

    #[test]
    fn database_url_is_never_printed() {
        let source = DatabaseSource::Url("postgres://u:hunter2@h/d".into());
        assert!(!format!("{source:?}").contains("hunter2"));
    }
}
