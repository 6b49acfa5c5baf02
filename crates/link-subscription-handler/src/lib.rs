//! The push endpoint CDSE's Subscriptions API posts new products to.
//!
//! One axum router serves the Lambda (through `lambda_http`) and the local
//! server, so the code tested locally is the code deployed. `POST /events`:
//! Basic auth first, then the body (at most 1 MiB), then the decision:
//! only `created` products that are recent and on an allowed tile are recorded
//! and queued once, through the core hand-off (`hls_core::use_cases::handoff`): the row
//! commits before its message is sent, and a redelivery sends a message still owed.

pub mod settings;

use std::sync::Arc;

use aws_config::SdkConfig;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine;
use chrono::Utc;
pub use hls_core::Password;
use hls_core::config::{self, ConfigError, Vars};
use hls_core::domain::notification::{NotificationError, ProductNotification, SubscriptionEvent};
use hls_core::{
    DownloadQueue, FoundBy, GranuleStore, Handoff, RecordError, Redelivery, SqsQueue, TileSet,
};
use serde_json::json;
use settings::Settings;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Notifications are a few kilobytes; anything over this is not one.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
const REALM: &str = "Basic realm=\"hls-s2-downloader\", charset=\"UTF-8\"";
/// `AWS_ATTEMPT_TIMEOUT_SECONDS`'s default here: three SQS attempts (the SDK's
/// retries) must end well within the function's 25 s, or a hanging queue would
/// time the request out instead of answering 503.
pub const ATTEMPT_TIMEOUT_SECONDS: u64 = 3;
/// How long a redelivery waits for another request that holds the granule's
/// owed message to send it, before answering 503 so that CDSE tries again.
pub const REDELIVERY_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// The Basic credentials CDSE presents. Only digests are kept, so that the
/// comparison runs in constant time whatever the lengths presented.
#[derive(Clone)]
pub struct Credentials {
    username: [u8; 32],
    password: [u8; 32],
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Credentials(<redacted>)")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error(
        "no notification credentials: set NOTIFICATION_USERNAME and NOTIFICATION_PASSWORD, \
         or STAGE to read them from the Secrets Manager secret {}",
        secret_id("<STAGE>")
    )]
    NotConfigured,
    #[error("{set} is set but {unset} is not")]
    Partial {
        set: &'static str,
        unset: &'static str,
    },
    #[error("the notification {0} is empty")]
    Empty(&'static str),
    #[error(transparent)]
    Secret(#[from] ConfigError),
}

/// The Secrets Manager secret with the endpoint's credentials, as the Python system named it.
pub fn secret_id(stage: &str) -> String {
    format!("hls-s2-downloader-serverless/{stage}/esa-subscription-credentials")
}

/// Where the credentials come from: the environment wins over the secret.
#[derive(Debug, Clone)]
pub enum CredentialSource {
    Environment {
        username: String,
        password: Password,
    },
    Secret {
        secret_id: String,
    },
}

/// The endpoint's Basic credentials in the clear: the handler keeps only their
/// digests; `cdse-subscription create` gives them to CDSE and `cdse-subscription test` sends them.
#[derive(Debug, Clone)]
pub struct NotificationCredentials {
    pub username: String,
    pub password: Password,
}

impl CredentialSource {
    /// `NOTIFICATION_USERNAME` and `NOTIFICATION_PASSWORD`, else `STAGE`'s secret.
    pub fn read(vars: &Vars) -> Result<Self, CredentialsError> {
        Self::from_lookup(|name| vars.get(name).map(str::to_owned))
    }

    /// `lookup` reads one setting (the environment, or a map in tests).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, CredentialsError> {
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        match (get("NOTIFICATION_USERNAME"), get("NOTIFICATION_PASSWORD")) {
            (Some(username), Some(password)) => Ok(Self::Environment {
                username,
                password: Password::new(password),
            }),
            (Some(_), None) => Err(CredentialsError::Partial {
                set: "NOTIFICATION_USERNAME",
                unset: "NOTIFICATION_PASSWORD",
            }),
            (None, Some(_)) => Err(CredentialsError::Partial {
                set: "NOTIFICATION_PASSWORD",
                unset: "NOTIFICATION_USERNAME",
            }),
            (None, None) => match get("STAGE") {
                Some(stage) => Ok(Self::Secret {
                    secret_id: secret_id(stage.trim()),
                }),
                None => Err(CredentialsError::NotConfigured),
            },
        }
    }

    /// The credentials in the clear, from the environment or the secret.
    pub async fn load(&self, aws: &SdkConfig) -> Result<NotificationCredentials, CredentialsError> {
        let (username, password) = match self {
            Self::Environment { username, password } => (username.clone(), password.clone()),
            Self::Secret { secret_id } => {
                let [username, password] = config::secret_fields(
                    aws,
                    secret_id,
                    ["notification_username", "notification_password"],
                )
                .await?;
                (username, Password::new(password))
            }
        };
        check_not_empty(&username, &password)?;
        Ok(NotificationCredentials { username, password })
    }
}

fn check_not_empty(username: &str, password: &Password) -> Result<(), CredentialsError> {
    if username.is_empty() {
        return Err(CredentialsError::Empty("username"));
    }
    if password.is_empty() {
        return Err(CredentialsError::Empty("password"));
    }
    Ok(())
}

impl Credentials {
    pub fn new(username: &str, password: &Password) -> Result<Self, CredentialsError> {
        check_not_empty(username, password)?;
        Ok(Self {
            username: Sha256::digest(username.as_bytes()).into(),
            password: Sha256::digest(password.expose().as_bytes()).into(),
        })
    }

    /// Reads the credentials once, at start-up.
    pub async fn load(
        source: &CredentialSource,
        aws: &SdkConfig,
    ) -> Result<Self, CredentialsError> {
        let plain = source.load(aws).await?;
        Self::new(&plain.username, &plain.password)
    }

    /// Whether the `Authorization` header carries these credentials. Both
    /// digests are always compared, in constant time.
    pub fn authorise(&self, headers: &HeaderMap) -> bool {
        let Some((username, password)) = basic_credentials(headers) else {
            return false;
        };
        let username = Sha256::digest(&username).ct_eq(&self.username);
        let password = Sha256::digest(&password).ct_eq(&self.password);
        (username & password).into()
    }
}

/// `Authorization: Basic base64(user:password)`; anything else is `None`.
fn basic_credentials(headers: &HeaderMap) -> Option<(Vec<u8>, Vec<u8>)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("Basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let colon = decoded.iter().position(|&b| b == b':')?;
    Some((decoded[..colon].to_vec(), decoded[colon + 1..].to_vec()))
}

/// Everything a request needs, built once per execution environment.
pub struct Subscription<Q> {
    pub credentials: Credentials,
    /// Postgres and the `To Download` queue, tied by the outbox.
    pub handoff: Handoff<Q>,
    pub tiles: TileSet,
    /// Products acquired longer ago than this are reprocessing, not news.
    pub max_acquisition_age: chrono::Duration,
}

impl Subscription<SqsQueue> {
    /// The credentials (read from their secret now, if one is named), a lazy
    /// database pool and the SQS client. The database is not contacted here:
    /// an outage surfaces per request as 503.
    pub async fn new(settings: Settings) -> anyhow::Result<Self> {
        let aws = config::aws_sdk_config(settings.aws_attempt_timeout).await;
        let credentials = Credentials::load(&settings.credentials, &aws).await?;
        let pool = settings.database.connect_lazy(&aws).await?;
        let queue = SqsQueue::new(aws_sdk_sqs::Client::new(&aws), settings.queue_url, 1);
        Ok(Self {
            credentials,
            handoff: Handoff::new(GranuleStore::new(pool), queue, settings.lease),
            tiles: settings.tiles,
            max_acquisition_age: settings.max_acquisition_age,
        })
    }
}

/// What became of one notification.
#[derive(Debug)]
pub enum Outcome {
    Queued,
    /// Recorded earlier and its message was owed: sent now.
    OwedSent,
    AlreadyKnown,
    /// Recorded, and another request holds its owed message: CDSE should retry.
    Pending,
    Ignored(SubscriptionEvent),
    TooOld,
    TileNotAllowed,
    Invalid(NotificationError),
    Unavailable(RecordError),
}

impl<Q: DownloadQueue> Subscription<Q> {
    /// Decides what to do with an authenticated notification body, does it and logs it.
    pub async fn handle(&self, body: &[u8]) -> Outcome {
        let granule = match ProductNotification::parse(body) {
            Ok(ProductNotification::Created(granule)) => granule,
            Ok(ProductNotification::Ignored { event, product_id }) => {
                tracing::info!(%product_id, %event, reason = "only created events are processed", "ignored");
                return Outcome::Ignored(event);
            }
            Err(error) => {
                tracing::warn!(
                    product_id = error.product_id.as_deref().unwrap_or("unknown"),
                    reason = %error,
                    "rejected"
                );
                return Outcome::Invalid(error);
            }
        };
        let product_id = granule.id.as_str();
        let oldest = Utc::now() - self.max_acquisition_age;
        if granule.begin_position < oldest {
            tracing::info!(
                product_id,
                acquired = %granule.begin_position,
                reason = "too old",
                "ignored"
            );
            return Outcome::TooOld;
        }
        if !self.tiles.contains(&granule.tile_id) {
            tracing::info!(product_id, tile_id = %granule.tile_id, reason = "tile not allowed", "ignored");
            return Outcome::TileNotAllowed;
        }
        let recorded = self
            .handoff
            .record_and_queue(std::slice::from_ref(&granule), FoundBy::Push)
            .await;
        let redelivered = match recorded {
            Ok(new) if !new.is_empty() => {
                tracing::info!(product_id, tile_id = %granule.tile_id, reason = "new product", "queued");
                return Outcome::Queued;
            }
            Ok(_) => self.handoff.redeliver(product_id, REDELIVERY_WAIT).await,
            Err(error) => Err(error),
        };
        match redelivered {
            Ok(Redelivery::AlreadySent) => {
                tracing::info!(product_id, reason = "already recorded", "duplicate");
                Outcome::AlreadyKnown
            }
            Ok(Redelivery::SentNow) => {
                tracing::info!(
                    product_id,
                    reason = "recorded earlier, message was owed",
                    "queued"
                );
                Outcome::OwedSent
            }
            Ok(Redelivery::StillHeld) => {
                tracing::warn!(
                    product_id,
                    reason = "another request holds its owed message",
                    "pending, CDSE will retry"
                );
                Outcome::Pending
            }
            Err(error) => {
                tracing::error!(product_id, reason = %error, "not queued, CDSE will retry");
                Outcome::Unavailable(error)
            }
        }
    }
}

impl IntoResponse for Outcome {
    fn into_response(self) -> Response {
        match self {
            Self::Queued
            | Self::OwedSent
            | Self::AlreadyKnown
            | Self::Ignored(_)
            | Self::TooOld
            | Self::TileNotAllowed => StatusCode::NO_CONTENT.into_response(),
            Self::Invalid(error) => error_response(StatusCode::BAD_REQUEST, &error.to_string()),
            // The detail is in the log; CDSE only needs to know to retry.
            Self::Unavailable(_) => error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "database or queue unavailable, retry later",
            ),
            Self::Pending => error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "this product's message is being sent by another request, retry later",
            ),
        }
    }
}

fn error_response(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(json!({ "error": message }))).into_response()
}

/// `POST /events`; other methods 405, other paths 404.
pub fn router<Q: DownloadQueue + 'static>(subscription: Arc<Subscription<Q>>) -> Router {
    Router::new()
        .route("/events", post(receive::<Q>))
        .fallback(|| async { error_response(StatusCode::NOT_FOUND, "not found") })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(subscription)
}

async fn receive<Q: DownloadQueue + 'static>(
    State(subscription): State<Arc<Subscription<Q>>>,
    request: Request,
) -> Response {
    // Authentication before anything else of the request is read.
    if !subscription.credentials.authorise(request.headers()) {
        tracing::warn!(
            reason = "missing or wrong Basic credentials",
            "unauthorised"
        );
        let mut response = error_response(StatusCode::UNAUTHORIZED, "unauthorised");
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(REALM));
        return response;
    }
    let body = match Bytes::from_request(request, &()).await {
        Ok(body) => body,
        Err(rejection) => {
            let status = rejection.status();
            let message = if status == StatusCode::PAYLOAD_TOO_LARGE {
                format!("body exceeds {MAX_BODY_BYTES} bytes")
            } else {
                rejection.body_text()
            };
            tracing::warn!(product_id = "unknown", reason = %message, "rejected");
            return error_response(status, &message);
        }
    };
    subscription.handle(&body).await.into_response()
}

/// The Lambda's service: the same router, behind API Gateway. API Gateway puts
/// a named stage in front of the path (`/prod/events`); the router serves `/events`.
pub fn lambda_service(
    router: Router,
) -> tower::util::MapRequest<Router, fn(lambda_http::Request) -> lambda_http::Request> {
    tower::ServiceExt::map_request(router, strip_stage as fn(_) -> _)
}

fn strip_stage(mut request: lambda_http::Request) -> lambda_http::Request {
    use lambda_http::RequestExt;
    use lambda_http::request::RequestContext;
    let stage = match request.request_context_ref() {
        Some(RequestContext::ApiGatewayV2(context)) => context.stage.clone(),
        Some(RequestContext::ApiGatewayV1(context)) => context.stage.clone(),
        _ => None,
    };
    let Some(stage) = stage.filter(|s| !s.is_empty() && s != "$default") else {
        return request;
    };
    let uri = request.uri();
    let Some(rest) = uri
        .path()
        .strip_prefix('/')
        .and_then(|p| p.strip_prefix(stage.as_str()))
        .filter(|rest| rest.starts_with('/'))
    else {
        return request;
    };
    let path_and_query = match uri.query() {
        Some(query) => format!("{rest}?{query}"),
        None => rest.to_owned(),
    };
    let mut parts = uri.clone().into_parts();
    if let Ok(path_and_query) = path_and_query.parse() {
        parts.path_and_query = Some(path_and_query);
        if let Ok(uri) = axum::http::Uri::from_parts(parts) {
            *request.uri_mut() = uri;
        }
    }
    request
}

/// The local server, until Ctrl-C.
pub async fn serve(listener: tokio::net::TcpListener, router: Router) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        headers
    }

    fn basic(user_password: &str) -> HeaderMap {
        headers(&format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(user_password)
        ))
    }

    #[test]
    fn only_the_right_basic_credentials_are_authorised() {
        let credentials = Credentials::new("esa", &Password::new("s3cr:et")).unwrap();
        assert!(credentials.authorise(&basic("esa:s3cr:et")));
        assert!(credentials.authorise(&headers(&format!(
            "basic  {}",
            base64::engine::general_purpose::STANDARD.encode("esa:s3cr:et")
        ))));
        for wrong in [
            "esa:s3cr",
            "esa:",
            ":s3cr:et",
            "ESA:s3cr:et",
            "esa",
            "",
            "esa:s3cr:et ",
        ] {
            assert!(!credentials.authorise(&basic(wrong)), "{wrong:?}");
        }
        assert!(!credentials.authorise(&HeaderMap::new()));
        assert!(!credentials.authorise(&headers("Basic !!!not-base64")));
        assert!(!credentials.authorise(&headers("Bearer ZXNhOnMzY3I6ZXQ=")));
        assert!(!credentials.authorise(&headers("Basic")));
        let mut binary = HeaderMap::new();
        binary.insert(
            header::AUTHORIZATION,
            HeaderValue::from_bytes(b"Basic \xff\xfe").unwrap(),
        );
        assert!(!credentials.authorise(&binary));
    }

    #[test]
    fn secrets_never_print() {
        let password = Password::new("hunter2");
        let credentials = Credentials::new("esa", &password).unwrap();
        let source = CredentialSource::Environment {
            username: "esa".into(),
            password,
        };
        assert!(!format!("{credentials:?}{source:?}").contains("hunter2"));
    }

    #[test]
    fn credentials_come_from_the_environment_or_the_stage_secret() {
        let lookup = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert!(matches!(
            CredentialSource::from_lookup(lookup(&[
                ("NOTIFICATION_USERNAME", "u"),
                ("NOTIFICATION_PASSWORD", "p"),
                ("STAGE", "dev"),
            ])),
            Ok(CredentialSource::Environment { username, .. }) if username == "u"
        ));
        assert!(matches!(
            CredentialSource::from_lookup(lookup(&[("STAGE", "dev")])),
            Ok(CredentialSource::Secret { secret_id })
                if secret_id == "hls-s2-downloader-serverless/dev/esa-subscription-credentials"
        ));
        let error = CredentialSource::from_lookup(lookup(&[])).unwrap_err();
        assert!(matches!(error, CredentialsError::NotConfigured));
        assert!(
            error.to_string().contains("NOTIFICATION_USERNAME"),
            "{error}"
        );
        assert!(matches!(
            CredentialSource::from_lookup(lookup(&[
                ("NOTIFICATION_USERNAME", "u"),
                ("STAGE", "dev")
            ])),
            Err(CredentialsError::Partial {
                unset: "NOTIFICATION_PASSWORD",
                ..
            })
        ));
        assert!(matches!(
            CredentialSource::from_lookup(lookup(&[("NOTIFICATION_PASSWORD", " ")])),
            Err(CredentialsError::NotConfigured)
        ));
    }
}
