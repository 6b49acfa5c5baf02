//! Everything `cdse-subscription` takes from the environment, read once at
//! start-up; no other part of the crate reads it. What a command does not
//! need is not checked until a command needs it: `list` runs without the
//! endpoint's credentials, `create --dry-run` without a CDSE account.

use hls_core::Password;
use std::time::Duration;

use hls_core::config::{self, Vars};
use link_subscription_handler::{CredentialSource, CredentialsError};
use url::Url;

use crate::SubscriptionsError;
use crate::api::{DEFAULT_SUBSCRIPTIONS_URL, parse_base_url};
use crate::token::{DEFAULT_IDENTITY_URL, TokenCache};

/// The process environment, taken once by `main`: the only read of it.
pub fn environment() -> Vars {
    std::env::vars_os().collect()
}

/// The settings of one run.
#[derive(Debug)]
pub struct Settings {
    /// `AWS_ATTEMPT_TIMEOUT_SECONDS`: one SSM / Secrets Manager attempt.
    pub aws_attempt_timeout: Duration,
    /// `CDSE_IDENTITY_URL`: the token endpoint.
    pub identity_url: Url,
    /// `CDSE_SUBSCRIPTIONS_URL`: the Subscriptions collection.
    pub subscriptions_url: Url,
    /// The CDSE account, or where to find it.
    pub account: AccountSettings,
    /// `CDSE_TOKEN_CACHE`, `XDG_CACHE_HOME`, `HOME`; `None`: no cache.
    pub token_cache: Option<TokenCache>,
    /// `STAGE`: names the SSM parameter with the endpoint's base URL.
    pub stage: Option<String>,
    /// The endpoint's Basic credentials (`NOTIFICATION_USERNAME` and
    /// `NOTIFICATION_PASSWORD`, or the secret of `STAGE`), read as the handler
    /// reads them; the error, if any, is reported by the commands that need them.
    pub notification: Result<CredentialSource, CredentialsError>,
}

/// `CDSE_USERNAME`, `CDSE_PASSWORD` and `CDSE_CREDENTIALS_SECRET`, each
/// `None` when unset or empty.
#[derive(Debug, Default)]
pub struct AccountSettings {
    pub username: Option<String>,
    pub password: Option<Password>,
    pub credentials_secret: Option<String>,
}

impl Settings {
    pub fn read(vars: &Vars) -> Result<Self, SubscriptionsError> {
        let set = |name: &'static str| vars.required(name).ok();
        let path = |name: &str| vars.get_os(name).map(ToOwned::to_owned);
        Ok(Self {
            aws_attempt_timeout: config::aws_attempt_timeout(
                vars,
                config::DEFAULT_ATTEMPT_TIMEOUT_SECONDS,
            )
            .map_err(|e| SubscriptionsError::Invalid(e.to_string()))?,
            identity_url: url_setting(vars, "CDSE_IDENTITY_URL", DEFAULT_IDENTITY_URL)?,
            subscriptions_url: url_setting(
                vars,
                "CDSE_SUBSCRIPTIONS_URL",
                DEFAULT_SUBSCRIPTIONS_URL,
            )?,
            account: AccountSettings {
                username: set("CDSE_USERNAME"),
                password: set("CDSE_PASSWORD").map(Password::new),
                credentials_secret: set("CDSE_CREDENTIALS_SECRET"),
            },
            token_cache: TokenCache::locate(
                path("CDSE_TOKEN_CACHE"),
                path("XDG_CACHE_HOME"),
                path("HOME"),
            ),
            stage: set("STAGE").map(|stage| stage.trim().to_owned()),
            notification: CredentialSource::read(vars),
        })
    }
}

fn url_setting(vars: &Vars, name: &'static str, default: &str) -> Result<Url, SubscriptionsError> {
    let value: String = vars
        .optional(name, default.to_owned())
        .map_err(|e| SubscriptionsError::Invalid(e.to_string()))?;
    parse_base_url(name, &value)
}
