//! CDSE's Subscriptions API (`CDSE-API.md` §4) and the identity service whose
//! tokens its calls need.
//!
//! Request bodies, form fields, URLs and answers are read and built by pure
//! functions; [`TokenSession`] and [`SubscriptionsClient`] only add HTTP. CDSE
//! counts every new token as a session (at most 100), so a token is reused while
//! valid, refreshed with its refresh token when not, and kept in a file cache
//! between commands; the password is asked for only when both have run out.

use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::{Method, header};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use url::Url;

use crate::adapters::secret::Password;
use crate::domain::error_body::{error_message, short};

/// The identity service's token endpoint (`CDSE_IDENTITY_URL`'s default).
pub const DEFAULT_IDENTITY_URL: &str =
    "https://identity.dataspace.copernicus.eu/auth/realms/CDSE/protocol/openid-connect/token";
/// The Subscriptions collection (`CDSE_SUBSCRIPTIONS_URL`'s default).
pub const DEFAULT_SUBSCRIPTIONS_URL: &str =
    "https://catalogue.dataspace.copernicus.eu/odata/v1/Subscriptions";
/// CDSE's public client: no client secret.
pub const CLIENT_ID: &str = "cdse-public";
/// The products HLS subscribes to: Sentinel-2 Level-1C.
pub const S2_L1C_FILTER: &str = "Collection/Name eq 'SENTINEL-2' and \
     Attributes/OData.CSC.StringAttribute/any(att:att/Name eq 'productType' \
     and att/OData.CSC.StringAttribute/Value eq 'S2MSI1C')";
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// A token this close to its expiry is not used: the call must not outlive it.
const EXPIRY_MARGIN_SECONDS: i64 = 30;

/// Which CDSE service answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    Identity,
    Subscriptions,
}

impl std::fmt::Display for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Identity => "identity service",
            Self::Subscriptions => "Subscriptions API",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SubscriptionsError {
    /// CDSE answered with an error status; `message` is CDSE's own.
    #[error("{}", refused_line(*service, *status, message))]
    Refused {
        service: Service,
        status: u16,
        message: String,
    },
    #[error("cannot reach the CDSE {service} at {url}: {reason}")]
    Unreachable {
        service: Service,
        url: String,
        reason: String,
    },
    #[error("the CDSE {service} answered HTTP {status} with something unexpected: {reason}")]
    Unexpected {
        service: Service,
        status: u16,
        reason: String,
    },
    #[error("{0}")]
    Invalid(String),
    #[error("no CDSE password: {0}")]
    Password(String),
}

/// One line per CDSE error: what it means for the operator, then CDSE's words.
fn refused_line(service: Service, status: u16, message: &str) -> String {
    let meaning = match (service, status) {
        (Service::Identity, 400 | 401) => {
            "CDSE refused the login (check CDSE_USERNAME and CDSE_PASSWORD)"
        }
        (Service::Subscriptions, 401) => "CDSE did not accept the access token",
        (_, 403) => "CDSE does not allow this for the account",
        (Service::Subscriptions, 404) => "CDSE found no such subscription",
        (_, 409) => "CDSE refused: it conflicts with an existing subscription",
        (_, 422) => "CDSE rejected the request",
        (_, 429) => "CDSE is limiting the account's requests; try again later",
        (_, 500..) => "CDSE failed; try again later",
        _ => "CDSE refused the request",
    };
    format!("{meaning} (HTTP {status} from the {service}): {message}")
}

// ------------------------------------------------------------------ tokens

/// An access token and the refresh token that renews it.
#[derive(Clone, Serialize, Deserialize)]
pub struct Tokens {
    access_token: String,
    access_expires_at: DateTime<Utc>,
    #[serde(default)]
    refresh_token: Option<String>,
    /// `None`: the identity service gave no expiry; try it.
    #[serde(default)]
    refresh_expires_at: Option<DateTime<Utc>>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens")
            .field("access_expires_at", &self.access_expires_at)
            .field("refresh_expires_at", &self.refresh_expires_at)
            .finish_non_exhaustive()
    }
}

impl Tokens {
    /// The identity service's answer to a token request made at `requested_at`.
    pub fn from_response(body: &[u8], requested_at: DateTime<Utc>) -> Result<Self, String> {
        #[derive(Deserialize)]
        struct TokenResponse {
            access_token: String,
            expires_in: i64,
            refresh_token: Option<String>,
            refresh_expires_in: Option<i64>,
        }
        let response: TokenResponse =
            serde_json::from_slice(body).map_err(|e| format!("not a token response: {e}"))?;
        if response.access_token.is_empty() {
            return Err("the access token is empty".into());
        }
        let after = |seconds: i64| requested_at + chrono::Duration::seconds(seconds.max(0));
        Ok(Self {
            access_token: response.access_token,
            access_expires_at: after(response.expires_in),
            refresh_token: response.refresh_token.filter(|t| !t.is_empty()),
            // Keycloak says 0 for a refresh token without its own expiry.
            refresh_expires_at: response
                .refresh_expires_in
                .filter(|&seconds| seconds > 0)
                .map(after),
        })
    }

    pub fn access_token(&self) -> &str {
        &self.access_token
    }

    /// The access token, unless it expires within the margin.
    pub fn usable_access_token(&self, now: DateTime<Utc>) -> Option<&str> {
        (now + chrono::Duration::seconds(EXPIRY_MARGIN_SECONDS) < self.access_expires_at)
            .then_some(self.access_token.as_str())
    }

    /// The refresh token, unless it has expired.
    pub fn usable_refresh_token(&self, now: DateTime<Utc>) -> Option<&str> {
        let refresh_token = self.refresh_token.as_deref()?;
        match self.refresh_expires_at {
            Some(at) if now + chrono::Duration::seconds(EXPIRY_MARGIN_SECONDS) >= at => None,
            _ => Some(refresh_token),
        }
    }

    fn expired(&self, now: DateTime<Utc>) -> bool {
        self.usable_access_token(now).is_none() && self.usable_refresh_token(now).is_none()
    }
}

/// The form of a login with the account's password.
pub fn password_grant_form(username: &str, password: &Password) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .append_pair("grant_type", "password")
        .append_pair("username", username)
        .append_pair("password", password.expose())
        .append_pair("client_id", CLIENT_ID)
        .finish()
}

/// The form that renews an access token without the password.
pub fn refresh_grant_form(refresh_token: &str) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .append_pair("grant_type", "refresh_token")
        .append_pair("refresh_token", refresh_token)
        .append_pair("client_id", CLIENT_ID)
        .finish()
}

/// Tokens kept between commands, in one JSON file readable by its owner only,
/// keyed by identity service and user.
#[derive(Debug, Clone)]
pub struct TokenCache {
    path: PathBuf,
}

impl TokenCache {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// `CDSE_TOKEN_CACHE` (a file, or `off`), else `$XDG_CACHE_HOME` or
    /// `~/.cache`, under `hls-s2-downloader/cdse-tokens.json`.
    pub fn from_env() -> Option<Self> {
        let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
        if let Some(path) = var("CDSE_TOKEN_CACHE") {
            return (path != "off").then(|| Self::new(path));
        }
        let base = var("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| var("HOME").map(|home| PathBuf::from(home).join(".cache")))?;
        Some(Self::new(base.join("hls-s2-downloader/cdse-tokens.json")))
    }

    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    fn read(&self) -> Map<String, Value> {
        match std::fs::read(&self.path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                tracing::warn!(path = %self.path.display(), reason = %e, "ignoring a corrupt token cache");
                Map::new()
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Map::new(),
            Err(e) => {
                tracing::warn!(path = %self.path.display(), reason = %e, "cannot read the token cache");
                Map::new()
            }
        }
    }

    pub fn load(&self, key: &str) -> Option<Tokens> {
        serde_json::from_value(self.read().remove(key)?).ok()
    }

    /// Saves `tokens` under `key` and drops entries that can no longer be used.
    /// A cache that cannot be written costs a login next time, nothing more.
    pub fn store(&self, key: &str, tokens: &Tokens) {
        let now = Utc::now();
        let mut entries = self.read();
        entries.retain(|_, value| {
            serde_json::from_value::<Tokens>(value.clone()).is_ok_and(|t| !t.expired(now))
        });
        if let Ok(value) = serde_json::to_value(tokens) {
            entries.insert(key.to_owned(), value);
        }
        if let Err(e) = self.write(&Value::Object(entries)) {
            tracing::warn!(path = %self.path.display(), reason = %e, "cannot write the token cache");
        }
    }

    fn write(&self, entries: &Value) -> std::io::Result<()> {
        use std::io::Write;
        let dir = match self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            Some(dir) => {
                let mut builder = std::fs::DirBuilder::new();
                builder.recursive(true);
                #[cfg(unix)]
                std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
                builder.create(dir)?;
                dir
            }
            None => std::path::Path::new("."),
        };
        let name = self
            .path
            .file_name()
            .map_or_else(|| "tokens".into(), |n| n.to_string_lossy());
        // Written beside and renamed, so a reader never sees half a file. The
        // name is unguessable and created exclusively (`O_EXCL`): a file or
        // symlink planted in a shared cache directory is never written through.
        let temporary = dir.join(format!(".{name}.{:016x}.tmp", rand::random::<u64>()));
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&temporary)?;
        let written = (|| {
            file.write_all(serde_json::to_string_pretty(entries)?.as_bytes())?;
            file.sync_all()?;
            std::fs::rename(&temporary, &self.path)
        })();
        if written.is_err() {
            let _ = std::fs::remove_file(&temporary);
        }
        written
    }
}

/// Where the account's password comes from when a login is needed.
pub trait PasswordSource: Send + Sync {
    fn password(&self) -> Result<Password, SubscriptionsError>;
}

impl PasswordSource for Password {
    fn password(&self) -> Result<Password, SubscriptionsError> {
        Ok(self.clone())
    }
}

/// A bearer token, and whether it was issued before this call (and so may
/// have been revoked since).
#[derive(Debug)]
pub struct Bearer {
    pub token: String,
    pub reused: bool,
}

/// One account's tokens: reused, refreshed, or got anew with the password.
pub struct TokenSession {
    http: reqwest::Client,
    token_url: Url,
    username: String,
    password: Box<dyn PasswordSource>,
    cache: Option<TokenCache>,
    tokens: tokio::sync::Mutex<Option<Tokens>>,
}

impl TokenSession {
    pub fn new(
        http: reqwest::Client,
        token_url: Url,
        username: impl Into<String>,
        password: Box<dyn PasswordSource>,
        cache: Option<TokenCache>,
    ) -> Self {
        Self {
            http,
            token_url,
            username: username.into(),
            password,
            cache,
            tokens: tokio::sync::Mutex::new(None),
        }
    }

    fn cache_key(&self) -> String {
        format!("{} {}", self.token_url, self.username)
    }

    /// A valid access token, asking the identity service only when needed.
    pub async fn bearer(&self) -> Result<Bearer, SubscriptionsError> {
        let mut current = self.tokens.lock().await;
        if current.is_none() {
            *current = self.cache.as_ref().and_then(|c| c.load(&self.cache_key()));
        }
        let now = Utc::now();
        if let Some(tokens) = current.as_ref() {
            if let Some(token) = tokens.usable_access_token(now) {
                return Ok(Bearer {
                    token: token.to_owned(),
                    reused: true,
                });
            }
            if let Some(refresh_token) = tokens.usable_refresh_token(now) {
                match self.request_tokens(refresh_grant_form(refresh_token)).await {
                    Ok(tokens) => return Ok(self.keep(&mut current, tokens)),
                    // The session ended (expired, revoked, logged out): log in again.
                    Err(SubscriptionsError::Refused {
                        service: Service::Identity,
                        status: 400 | 401,
                        message,
                    }) => tracing::debug!(reason = %message, "refresh token refused; logging in"),
                    Err(other) => return Err(other),
                }
            }
        }
        let password = self.password.password()?;
        let tokens = self
            .request_tokens(password_grant_form(&self.username, &password))
            .await?;
        Ok(self.keep(&mut current, tokens))
    }

    /// After CDSE refused a reused token: the next [`bearer`](Self::bearer) does not offer it.
    pub async fn forget_access_token(&self) {
        if let Some(tokens) = self.tokens.lock().await.as_mut() {
            tokens.access_expires_at = DateTime::<Utc>::MIN_UTC;
        }
    }

    fn keep(&self, current: &mut Option<Tokens>, tokens: Tokens) -> Bearer {
        if let Some(cache) = &self.cache {
            cache.store(&self.cache_key(), &tokens);
        }
        let token = tokens.access_token.clone();
        *current = Some(tokens);
        Bearer {
            token,
            reused: false,
        }
    }

    async fn request_tokens(&self, form: String) -> Result<Tokens, SubscriptionsError> {
        let requested_at = Utc::now();
        let response = self
            .http
            .post(self.token_url.clone())
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(form)
            .timeout(REQUEST_TIMEOUT)
            .send()
            .await
            .map_err(|e| unreachable(Service::Identity, &self.token_url, &e))?;
        let status = response.status().as_u16();
        let body = response
            .bytes()
            .await
            .map_err(|e| unreachable(Service::Identity, &self.token_url, &e))?;
        check_status(Service::Identity, status, &body)?;
        Tokens::from_response(&body, requested_at).map_err(|reason| {
            SubscriptionsError::Unexpected {
                service: Service::Identity,
                status,
                reason,
            }
        })
    }
}

fn unreachable(service: Service, url: &Url, error: &reqwest::Error) -> SubscriptionsError {
    let mut reason = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        reason.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    SubscriptionsError::Unreachable {
        service,
        url: url.to_string(),
        reason,
    }
}

fn check_status(service: Service, status: u16, body: &[u8]) -> Result<(), SubscriptionsError> {
    if (200..300).contains(&status) {
        Ok(())
    } else {
        Err(SubscriptionsError::Refused {
            service,
            status,
            message: error_message(body),
        })
    }
}

// ----------------------------------------------------------- subscriptions

/// A subscription's `Status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubscriptionStatus {
    Running,
    Paused,
    Cancelled,
}

impl SubscriptionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Paused => "paused",
            Self::Cancelled => "cancelled",
        }
    }
}

/// A subscription id, checked before it goes into a URL path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionId(String);

impl std::str::FromStr for SubscriptionId {
    type Err = SubscriptionsError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let value = value.trim();
        if value.is_empty()
            || value.len() > 64
            || !value.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        {
            return Err(SubscriptionsError::Invalid(format!(
                "{:?} is not a subscription id (letters, digits and '-', as `subscription list` shows)",
                short(value, 80)
            )));
        }
        Ok(Self(value.to_owned()))
    }
}

impl SubscriptionId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for SubscriptionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// One subscription as CDSE describes it. The fields a table needs are typed;
/// the rest are kept as they came, except anything named like a password.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubscriptionInfo {
    #[serde(rename = "Id")]
    pub id: String,
    #[serde(rename = "Status", default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(
        rename = "SubscriptionType",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub subscription_type: Option<String>,
    #[serde(
        rename = "SubscriptionEvent",
        default,
        deserialize_with = "one_or_many"
    )]
    pub events: Vec<String>,
    #[serde(
        rename = "NotificationEndpoint",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub endpoint: Option<String>,
    #[serde(
        rename = "FilterParam",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub filter: Option<String>,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

impl SubscriptionInfo {
    pub fn is_running(&self) -> bool {
        self.status
            .as_deref()
            .is_some_and(|s| s.eq_ignore_ascii_case("running"))
    }

    fn parse(value: Value) -> Result<Self, String> {
        let mut info: Self = serde_json::from_value(value).map_err(|e| e.to_string())?;
        info.other
            .retain(|key, _| !key.to_ascii_lowercase().contains("password"));
        Ok(info)
    }
}

fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match Option::<OneOrMany>::deserialize(d)? {
        None => Vec::new(),
        Some(OneOrMany::One(event)) => vec![event],
        Some(OneOrMany::Many(events)) => events,
    })
}

/// The answer to `GET …/Subscriptions/Info`: a list, or an OData `value` list.
pub fn parse_subscription_list(body: &[u8]) -> Result<Vec<SubscriptionInfo>, String> {
    let json: Value = serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
    let items = match json {
        Value::Array(items) => items,
        Value::Object(mut object) => match object.remove("value") {
            Some(Value::Array(items)) => items,
            _ => return Err("neither a list nor an object with a \"value\" list".into()),
        },
        _ => return Err("neither a list nor an object with a \"value\" list".into()),
    };
    items
        .into_iter()
        .enumerate()
        .map(|(index, item)| SubscriptionInfo::parse(item).map_err(|e| format!("[{index}]: {e}")))
        .collect()
}

/// The one push subscription HLS needs: `created` events of Sentinel-2 L1C
/// products, posted to `endpoint` with Basic credentials.
#[derive(Debug, Clone)]
pub struct PushSubscriptionRequest {
    pub endpoint: Url,
    pub username: String,
    pub password: Password,
}

impl PushSubscriptionRequest {
    pub fn body(&self) -> Value {
        self.body_with_password(self.password.expose())
    }

    /// The body with the password masked, for printing.
    pub fn masked_body(&self) -> Value {
        self.body_with_password("********")
    }

    fn body_with_password(&self, password: &str) -> Value {
        json!({
            "SubscriptionType": "push",
            "SubscriptionEvent": ["created"],
            "FilterParam": S2_L1C_FILTER,
            "Status": SubscriptionStatus::Running.as_str(),
            "StageOrder": true,
            "Priority": 1,
            "NotificationEndpoint": self.endpoint.as_str(),
            "NotificationEpUsername": self.username,
            "NotificationEpPassword": password,
        })
    }
}

/// `…/Subscriptions(<id>)`.
pub fn subscription_url(collection: &Url, id: &SubscriptionId) -> Url {
    with_path_suffix(collection, &format!("({id})"))
}

/// `…/Subscriptions/Info`.
pub fn list_url(collection: &Url) -> Url {
    with_path_suffix(collection, "/Info")
}

fn with_path_suffix(collection: &Url, suffix: &str) -> Url {
    let mut url = collection.clone();
    url.set_path(&format!(
        "{}{suffix}",
        collection.path().trim_end_matches('/')
    ));
    url
}

/// A base URL from a setting, checked to be http(s).
pub fn parse_base_url(name: &str, value: &str) -> Result<Url, SubscriptionsError> {
    match Url::parse(value.trim()) {
        Ok(url) if matches!(url.scheme(), "http" | "https") => Ok(url),
        Ok(url) => Err(SubscriptionsError::Invalid(format!(
            "{name} {value:?}: scheme {:?} is not http(s)",
            url.scheme()
        ))),
        Err(e) => Err(SubscriptionsError::Invalid(format!(
            "{name} {value:?}: {e}"
        ))),
    }
}

/// The Subscriptions API for one account.
pub struct SubscriptionsClient {
    http: reqwest::Client,
    collection: Url,
    session: TokenSession,
}

impl SubscriptionsClient {
    pub fn new(http: reqwest::Client, collection: Url, session: TokenSession) -> Self {
        Self {
            http,
            collection,
            session,
        }
    }

    /// A client for CDSE calls: bounded connect time, our user agent.
    pub fn http_client() -> Result<reqwest::Client, SubscriptionsError> {
        reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!(
                "hls-s2-link-subscription-handler/",
                env!("CARGO_PKG_VERSION")
            ))
            .build()
            .map_err(|e| SubscriptionsError::Invalid(format!("HTTP client: {e}")))
    }

    pub async fn list(&self) -> Result<Vec<SubscriptionInfo>, SubscriptionsError> {
        let (status, body) = self
            .call(Method::GET, list_url(&self.collection), None)
            .await?;
        parse_subscription_list(&body).map_err(|reason| unexpected(status, reason))
    }

    pub async fn create(
        &self,
        request: &PushSubscriptionRequest,
    ) -> Result<SubscriptionInfo, SubscriptionsError> {
        let (status, body) = self
            .call(Method::POST, self.collection.clone(), Some(request.body()))
            .await?;
        serde_json::from_slice(&body)
            .map_err(|e| e.to_string())
            .and_then(SubscriptionInfo::parse)
            .map_err(|reason| unexpected(status, reason))
    }

    pub async fn set_status(
        &self,
        id: &SubscriptionId,
        status: SubscriptionStatus,
    ) -> Result<(), SubscriptionsError> {
        let body = json!({ "Status": status.as_str() });
        self.call(
            Method::PATCH,
            subscription_url(&self.collection, id),
            Some(body),
        )
        .await
        .map(drop)
    }

    /// Ends a subscription for good.
    pub async fn terminate(&self, id: &SubscriptionId) -> Result<(), SubscriptionsError> {
        self.call(Method::DELETE, subscription_url(&self.collection, id), None)
            .await
            .map(drop)
    }

    /// One call with a bearer token. A reused token that CDSE refuses (revoked,
    /// or the session ended early) is replaced once.
    async fn call(
        &self,
        method: Method,
        url: Url,
        body: Option<Value>,
    ) -> Result<(u16, Vec<u8>), SubscriptionsError> {
        let mut bearer = self.session.bearer().await?;
        loop {
            let mut request = self
                .http
                .request(method.clone(), url.clone())
                .bearer_auth(&bearer.token)
                .header(header::ACCEPT, "application/json")
                .timeout(REQUEST_TIMEOUT);
            if let Some(body) = &body {
                request = request.json(body);
            }
            let response = request
                .send()
                .await
                .map_err(|e| unreachable(Service::Subscriptions, &url, &e))?;
            let status = response.status().as_u16();
            let bytes = response
                .bytes()
                .await
                .map_err(|e| unreachable(Service::Subscriptions, &url, &e))?;
            if status == 401 && bearer.reused {
                tracing::debug!("CDSE refused a reused token; getting a new one");
                self.session.forget_access_token().await;
                bearer = self.session.bearer().await?;
                continue;
            }
            check_status(Service::Subscriptions, status, &bytes)?;
            return Ok((status, bytes.to_vec()));
        }
    }
}

fn unexpected(status: u16, reason: String) -> SubscriptionsError {
    SubscriptionsError::Unexpected {
        service: Service::Subscriptions,
        status,
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        text.parse().unwrap()
    }

    fn form(text: &str) -> Vec<(String, String)> {
        url::form_urlencoded::parse(text.as_bytes())
            .into_owned()
            .collect()
    }

    #[test]
    fn token_forms_are_the_grants_cdse_documents() {
        let pairs = |list: &[(&str, &str)]| -> Vec<(String, String)> {
            list.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert_eq!(
            form(&password_grant_form(
                "ops@example.org",
                &Password::new("p&ss=w rd")
            )),
            pairs(&[
                ("grant_type", "password"),
                ("username", "ops@example.org"),
                ("password", "p&ss=w rd"),
                ("client_id", "cdse-public"),
            ])
        );
        assert_eq!(
            form(&refresh_grant_form("r.t+1")),
            pairs(&[
                ("grant_type", "refresh_token"),
                ("refresh_token", "r.t+1"),
                ("client_id", "cdse-public"),
            ])
        );
    }

    #[test]
    fn tokens_are_used_until_shortly_before_they_expire() {
        let issued = at("2026-01-01T10:00:00Z");
        let tokens = Tokens::from_response(
            br#"{"access_token":"a","expires_in":600,"refresh_token":"r","refresh_expires_in":3600,"token_type":"Bearer"}"#,
            issued,
        )
        .unwrap();
        assert_eq!(
            tokens.usable_access_token(at("2026-01-01T10:09:00Z")),
            Some("a")
        );
        assert_eq!(tokens.usable_access_token(at("2026-01-01T10:09:45Z")), None);
        assert_eq!(
            tokens.usable_refresh_token(at("2026-01-01T10:59:00Z")),
            Some("r")
        );
        assert_eq!(
            tokens.usable_refresh_token(at("2026-01-01T10:59:45Z")),
            None
        );
        assert!(tokens.expired(at("2026-01-01T11:00:00Z")));
        assert!(!format!("{tokens:?}").contains("\"a\""));

        // No refresh expiry (Keycloak's 0): the refresh token is tried.
        let tokens = Tokens::from_response(
            br#"{"access_token":"a","expires_in":600,"refresh_token":"r","refresh_expires_in":0}"#,
            issued,
        )
        .unwrap();
        assert_eq!(
            tokens.usable_refresh_token(at("2027-01-01T00:00:00Z")),
            Some("r")
        );

        for bad in [
            &br#"{"expires_in":600}"#[..],
            br#"{"access_token":"","expires_in":600}"#,
            b"<html>",
        ] {
            assert!(Tokens::from_response(bad, issued).is_err());
        }
    }

    #[test]
    fn the_token_cache_keeps_usable_tokens_privately() {
        let dir = std::env::temp_dir().join(format!("token-cache-{}", rand::random::<u64>()));
        let cache = TokenCache::new(dir.join("nested/tokens.json"));
        assert!(cache.load("k").is_none());
        let now = Utc::now();
        let fresh = Tokens::from_response(
            br#"{"access_token":"a","expires_in":600,"refresh_token":"r","refresh_expires_in":3600}"#,
            now,
        )
        .unwrap();
        let spent =
            Tokens::from_response(br#"{"access_token":"old","expires_in":1}"#, now).unwrap();
        cache.store("spent", &spent);
        cache.store("k", &fresh);
        assert_eq!(cache.load("k").unwrap().access_token(), "a");
        assert!(
            cache.load("spent").is_none(),
            "unusable entries are dropped"
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(cache.path())
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::write(cache.path(), b"{not json").unwrap();
        assert!(cache.load("k").is_none());
        cache.store("k", &fresh);
        assert_eq!(cache.load("k").unwrap().access_token(), "a");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let nested = dir.join("nested");
            for created in [&dir, &nested] {
                let mode = std::fs::metadata(created).unwrap().permissions().mode();
                assert_eq!(mode & 0o777, 0o700, "{}", created.display());
            }
            // A symlink planted at the temporary name an older version used
            // (predictable from the pid) is neither followed nor replaced.
            let victim = dir.join("victim");
            std::fs::write(&victim, b"untouched").unwrap();
            let planted = cache
                .path()
                .with_extension(format!("tmp{}", std::process::id()));
            std::os::unix::fs::symlink(&victim, &planted).unwrap();
            cache.store("k2", &fresh);
            assert_eq!(cache.load("k2").unwrap().access_token(), "a");
            assert_eq!(std::fs::read(&victim).unwrap(), b"untouched");
            assert!(planted.symlink_metadata().unwrap().is_symlink());
            std::fs::remove_file(&planted).unwrap();
        }
        let mut left: Vec<_> = std::fs::read_dir(dir.join("nested"))
            .unwrap()
            .map(|entry| entry.unwrap().file_name())
            .collect();
        left.sort();
        assert_eq!(left, ["tokens.json"], "no temporary file is left behind");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn the_push_request_is_hls_subscription_and_masks_its_password() {
        let request = PushSubscriptionRequest {
            endpoint: Url::parse("https://api.example.org/events").unwrap(),
            username: "esa".into(),
            password: Password::new("hunter2"),
        };
        let body = request.body();
        assert_eq!(body["SubscriptionType"], "push");
        assert_eq!(body["SubscriptionEvent"], json!(["created"]));
        assert_eq!(body["Status"], "running");
        assert_eq!(
            body["NotificationEndpoint"],
            "https://api.example.org/events"
        );
        assert_eq!(body["NotificationEpUsername"], "esa");
        assert_eq!(body["NotificationEpPassword"], "hunter2");
        let filter = body["FilterParam"].as_str().unwrap();
        assert!(filter.contains("'SENTINEL-2'") && filter.contains("'S2MSI1C'"));
        let masked = request.masked_body();
        assert_eq!(masked["NotificationEpPassword"], "********");
        assert!(!masked.to_string().contains("hunter2"));
        assert!(!format!("{request:?}").contains("hunter2"));
    }

    #[test]
    fn urls_address_one_subscription_or_the_list() {
        let collection = Url::parse("https://c.example/odata/v1/Subscriptions").unwrap();
        let id: SubscriptionId = "991c4730-cf6f-432a-9f6c-47be0230ff45".parse().unwrap();
        assert_eq!(
            subscription_url(&collection, &id).as_str(),
            "https://c.example/odata/v1/Subscriptions(991c4730-cf6f-432a-9f6c-47be0230ff45)"
        );
        assert_eq!(
            list_url(&collection).as_str(),
            "https://c.example/odata/v1/Subscriptions/Info"
        );
        for bad in ["", "a/b", "x)?$filter", "../Products", &"a".repeat(65)] {
            assert!(bad.parse::<SubscriptionId>().is_err(), "{bad:?}");
        }
        assert!(parse_base_url("CDSE_SUBSCRIPTIONS_URL", "ftp://x").is_err());
        assert!(parse_base_url("CDSE_SUBSCRIPTIONS_URL", "not a url").is_err());
    }

    #[test]
    fn subscription_lists_are_read_in_either_shape_without_passwords() {
        let one = json!({
            "Id": "s1", "Status": "running", "SubscriptionType": "push",
            "SubscriptionEvent": ["created"], "NotificationEndpoint": "https://e/events",
            "NotificationEpUsername": "esa", "NotificationEpPassword": "hunter2",
            "FilterParam": "f", "SubmissionDate": "2024-01-01T00:00:00Z"
        });
        let two = json!({ "Id": "s2", "Status": "paused", "SubscriptionEvent": "created" });
        let plain = parse_subscription_list(json!([one, two]).to_string().as_bytes()).unwrap();
        let wrapped =
            parse_subscription_list(json!({ "value": [one, two] }).to_string().as_bytes()).unwrap();
        assert_eq!(plain, wrapped);
        assert!(plain[0].is_running() && !plain[1].is_running());
        assert_eq!(plain[1].events, ["created"]);
        assert_eq!(plain[0].other["SubmissionDate"], "2024-01-01T00:00:00Z");
        assert!(!serde_json::to_string(&plain).unwrap().contains("hunter2"));
        assert!(parse_subscription_list(b"{}").is_err());
        assert!(parse_subscription_list(br#"[{"Status":"running"}]"#).is_err());
    }

    #[test]
    fn each_error_is_one_line_with_cdses_words() {
        let error = SubscriptionsError::Refused {
            service: Service::Subscriptions,
            status: 404,
            message: "Subscription with id x not found.".into(),
        };
        assert_eq!(
            error.to_string(),
            "CDSE found no such subscription (HTTP 404 from the Subscriptions API): \
             Subscription with id x not found."
        );
        let login = SubscriptionsError::Refused {
            service: Service::Identity,
            status: 401,
            message: "Invalid user credentials".into(),
        };
        assert!(login.to_string().contains("CDSE_PASSWORD"), "{login}");
        assert!(refused_line(Service::Identity, 404, "m").starts_with("CDSE refused the request"));
        for status in [401, 403, 404, 409, 422, 429, 500, 503, 418] {
            let line = refused_line(Service::Subscriptions, status, "m").to_string();
            assert!(!line.contains('\n') && line.contains(&format!("HTTP {status}")));
        }
    }
}
