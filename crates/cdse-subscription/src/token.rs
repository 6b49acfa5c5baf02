//! The CDSE identity service's tokens, and the file that keeps them between
//! commands.
//!
//! CDSE counts every new token as a session (at most 100), so a token is
//! reused while valid, refreshed with its refresh token when not, and kept in
//! a file cache between commands; the password is asked for only when both
//! have run out.

use std::ffi::OsString;
use std::path::PathBuf;

use chrono::{DateTime, Utc};
use hls_core::Password;
use reqwest::header;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use url::Url;

use crate::REQUEST_TIMEOUT;
use crate::error::{Service, SubscriptionsError, check_status, unreachable};

/// The identity service's token endpoint (`CDSE_IDENTITY_URL`'s default).
pub const DEFAULT_IDENTITY_URL: &str =
    "https://identity.dataspace.copernicus.eu/auth/realms/CDSE/protocol/openid-connect/token";
/// CDSE's public client: no client secret.
pub const CLIENT_ID: &str = "cdse-public";
/// A token this close to its expiry is not used: the call must not outlive it.
const EXPIRY_MARGIN_SECONDS: i64 = 30;

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

    /// Where the cache lives: `CDSE_TOKEN_CACHE` (a file, or `off`), else
    /// `$XDG_CACHE_HOME` or `~/.cache`, under `hls-s2-downloader/cdse-tokens.json`.
    /// `None`: no cache. Empty values count as unset.
    pub fn locate(
        setting: Option<OsString>,
        xdg_cache_home: Option<OsString>,
        home: Option<OsString>,
    ) -> Option<Self> {
        let given = |value: Option<OsString>| value.filter(|v| !v.is_empty());
        if let Some(path) = given(setting) {
            return (path != "off").then(|| Self::new(path));
        }
        let base = given(xdg_cache_home)
            .map(PathBuf::from)
            .or_else(|| given(home).map(|home| PathBuf::from(home).join(".cache")))?;
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
    fn the_cache_is_the_setting_else_under_the_cache_home() {
        let os = |text: &str| Some(OsString::from(text));
        let path = |cache: Option<TokenCache>| cache.map(|c| c.path().to_owned());
        assert_eq!(
            path(TokenCache::locate(os("/t/c.json"), os("/x"), os("/h"))),
            Some(PathBuf::from("/t/c.json"))
        );
        assert!(TokenCache::locate(os("off"), os("/x"), os("/h")).is_none());
        assert_eq!(
            path(TokenCache::locate(os(""), os("/x"), os("/h"))),
            Some(PathBuf::from("/x/hls-s2-downloader/cdse-tokens.json"))
        );
        assert_eq!(
            path(TokenCache::locate(None, None, os("/h"))),
            Some(PathBuf::from(
                "/h/.cache/hls-s2-downloader/cdse-tokens.json"
            ))
        );
        assert!(TokenCache::locate(None, os(""), None).is_none());
    }
}
