//! A stand-in for CDSE's identity service and Subscriptions API: a real HTTP
//! server on a random port that keeps subscriptions and sessions in memory.
//!
//! It issues tokens for one account (`grant_type=password`) and renews them
//! (`grant_type=refresh_token`) as Keycloak does, refuses unknown or expired
//! bearer tokens, and serves `POST /odata/v1/Subscriptions`, `GET …/Info`,
//! `PATCH …(id)` and `DELETE …(id)` with CDSE's 404 body for unknown ids. Every
//! request is recorded; scripted answers can be queued for the Subscriptions API.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::fixtures;

pub const USERNAME: &str = "hls-operator@example.org";
pub const PASSWORD: &str = "cdse p@ss&word=1";
const COLLECTION: &str = "/odata/v1/Subscriptions";
const TOKEN_PATH: &str = "/auth/realms/CDSE/protocol/openid-connect/token";

/// One request as the stub received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub headers: HeaderMap,
    pub body: String,
}

impl Recorded {
    /// The form fields of a token request.
    pub fn form(&self) -> Vec<(String, String)> {
        url::form_urlencoded::parse(self.body.as_bytes())
            .into_owned()
            .collect()
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{:?}: {e}", self.body))
    }

    pub fn authorization(&self) -> Option<&str> {
        self.headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
    }
}

struct Session {
    expires: Instant,
}

struct Stub {
    requests: Mutex<Vec<Recorded>>,
    subscriptions: Mutex<Vec<Value>>,
    access_tokens: Mutex<HashMap<String, Session>>,
    refresh_tokens: Mutex<HashMap<String, Session>>,
    issued: Mutex<u32>,
    lifetimes: Mutex<(u64, u64)>,
    scripted: Mutex<VecDeque<(u16, String)>>,
}

pub struct CdseStub {
    base: String,
    stub: Arc<Stub>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for CdseStub {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl CdseStub {
    pub async fn start() -> Self {
        let stub = Arc::new(Stub {
            requests: Mutex::default(),
            subscriptions: Mutex::default(),
            access_tokens: Mutex::default(),
            refresh_tokens: Mutex::default(),
            issued: Mutex::new(0),
            lifetimes: Mutex::new((600, 3600)),
            scripted: Mutex::default(),
        });
        let router = axum::Router::new()
            .fallback(answer)
            .with_state(stub.clone());
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .expect("bind the CDSE stub");
        let base = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            axum::serve(listener, router).await.ok();
        });
        Self { base, stub, server }
    }

    /// `CDSE_IDENTITY_URL`.
    pub fn identity_url(&self) -> String {
        format!("{}{TOKEN_PATH}", self.base)
    }

    /// `CDSE_SUBSCRIPTIONS_URL`.
    pub fn subscriptions_url(&self) -> String {
        format!("{}{COLLECTION}", self.base)
    }

    /// Seconds the access and refresh tokens issued from now on are valid.
    pub fn set_token_lifetimes(&self, access: u64, refresh: u64) {
        *self.stub.lifetimes.lock().unwrap() = (access, refresh);
    }

    /// Ends every session, as a logout or a server restart would.
    pub fn revoke_all_tokens(&self) {
        self.stub.access_tokens.lock().unwrap().clear();
        self.stub.refresh_tokens.lock().unwrap().clear();
    }

    /// The next Subscriptions API request gets this answer instead.
    pub fn answer_next(&self, status: u16, body: impl Into<String>) {
        self.stub
            .scripted
            .lock()
            .unwrap()
            .push_back((status, body.into()));
    }

    /// A subscription as CDSE would hold it.
    pub fn add_subscription(&self, id: &str, status: &str) {
        self.stub.subscriptions.lock().unwrap().push(json!({
            "Id": id,
            "Status": status,
            "SubscriptionType": "push",
            "SubscriptionEvent": ["created"],
            "FilterParam": "Collection/Name eq 'SENTINEL-2'",
            "NotificationEndpoint": "https://old.example.org/events",
            "NotificationEpUsername": "esa",
            "StageOrder": true,
            "Priority": 1,
            "SubmissionDate": "2024-09-01T00:00:00.000Z",
        }));
    }

    pub fn subscriptions(&self) -> Vec<Value> {
        self.stub.subscriptions.lock().unwrap().clone()
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.stub.requests.lock().unwrap().clone()
    }

    pub fn token_requests(&self) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.path == TOKEN_PATH)
            .collect()
    }

    pub fn api_requests(&self) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.path != TOKEN_PATH)
            .collect()
    }
}

fn error(status: StatusCode, body: Value) -> Response {
    (status, axum::Json(body)).into_response()
}

async fn answer(State(stub): State<Arc<Stub>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body: Bytes = axum::body::to_bytes(body, 1 << 20)
        .await
        .unwrap_or_default();
    let recorded = Recorded {
        method: parts.method.to_string(),
        path: parts.uri.path().to_owned(),
        headers: parts.headers.clone(),
        body: String::from_utf8_lossy(&body).into_owned(),
    };
    stub.requests.lock().unwrap().push(recorded.clone());
    if recorded.path == TOKEN_PATH && parts.method == Method::POST {
        return token(&stub, &recorded);
    }
    let Some(rest) = recorded.path.strip_prefix(COLLECTION) else {
        return error(StatusCode::NOT_FOUND, json!({"detail": "Not Found"}));
    };
    let authorised = recorded
        .authorization()
        .and_then(|v| v.strip_prefix("Bearer "))
        .and_then(|token| {
            stub.access_tokens
                .lock()
                .unwrap()
                .get(token)
                .map(|s| s.expires > Instant::now())
        })
        .unwrap_or(false);
    if !authorised {
        return error(
            StatusCode::UNAUTHORIZED,
            json!({"detail": {"message": "Invalid or expired token", "request_id": "stub"}}),
        );
    }
    if let Some((status, body)) = stub.scripted.lock().unwrap().pop_front() {
        return (
            StatusCode::from_u16(status).unwrap(),
            [(header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response();
    }
    let mut subscriptions = stub.subscriptions.lock().unwrap();
    match (&parts.method, rest) {
        (&Method::GET, "/Info") => axum::Json(Value::from(subscriptions.clone())).into_response(),
        (&Method::POST, "") => {
            let mut created = recorded.json();
            let object = created.as_object_mut().unwrap();
            // CDSE keeps the endpoint's password in a vault and never echoes it.
            object.remove("NotificationEpPassword");
            object.insert("Id".into(), crate::random_suffix().into());
            object.insert("SubmissionDate".into(), "2026-11-28T12:00:00.000Z".into());
            subscriptions.push(created.clone());
            (StatusCode::CREATED, axum::Json(created)).into_response()
        }
        (method, rest) => {
            let Some(id) = rest
                .strip_prefix('(')
                .and_then(|r| r.strip_suffix(')'))
                .map(str::to_owned)
            else {
                return error(StatusCode::NOT_FOUND, json!({"detail": "Not Found"}));
            };
            let Some(index) = subscriptions.iter().position(|s| s["Id"] == id.as_str()) else {
                let mut body = fixtures::subscriptions_error_404();
                body["detail"]["message"] = format!("Subscription with id {id} not found.").into();
                return error(StatusCode::NOT_FOUND, body);
            };
            match *method {
                Method::DELETE => {
                    subscriptions.remove(index);
                    StatusCode::NO_CONTENT.into_response()
                }
                Method::PATCH => {
                    let changes = recorded.json();
                    for (key, value) in changes.as_object().unwrap() {
                        subscriptions[index][key] = value.clone();
                    }
                    axum::Json(subscriptions[index].clone()).into_response()
                }
                Method::GET => axum::Json(subscriptions[index].clone()).into_response(),
                _ => StatusCode::METHOD_NOT_ALLOWED.into_response(),
            }
        }
    }
}

/// Keycloak's token endpoint for one account.
fn token(stub: &Stub, recorded: &Recorded) -> Response {
    let form: HashMap<String, String> = recorded.form().into_iter().collect();
    let field = |key: &str| form.get(key).map(String::as_str);
    if field("client_id") != Some("cdse-public") {
        return error(
            StatusCode::UNAUTHORIZED,
            json!({"error": "invalid_client", "error_description": "Invalid client or Invalid client credentials"}),
        );
    }
    let accepted = match field("grant_type") {
        Some("password") => {
            field("username") == Some(USERNAME) && field("password") == Some(PASSWORD)
        }
        Some("refresh_token") => field("refresh_token")
            .and_then(|t| {
                stub.refresh_tokens
                    .lock()
                    .unwrap()
                    .get(t)
                    .map(|s| s.expires > Instant::now())
            })
            .unwrap_or(false),
        _ => false,
    };
    if !accepted {
        return match field("grant_type") {
            Some("password") => error(
                StatusCode::UNAUTHORIZED,
                json!({"error": "invalid_grant", "error_description": "Invalid user credentials"}),
            ),
            _ => error(
                StatusCode::BAD_REQUEST,
                json!({"error": "invalid_grant", "error_description": "Token is not active"}),
            ),
        };
    }
    let (access_lifetime, refresh_lifetime) = *stub.lifetimes.lock().unwrap();
    let n = {
        let mut issued = stub.issued.lock().unwrap();
        *issued += 1;
        *issued
    };
    let access = format!("access-{n}");
    let refresh = format!("refresh-{n}");
    let until = |seconds: u64| Session {
        expires: Instant::now() + Duration::from_secs(seconds),
    };
    stub.access_tokens
        .lock()
        .unwrap()
        .insert(access.clone(), until(access_lifetime));
    stub.refresh_tokens
        .lock()
        .unwrap()
        .insert(refresh.clone(), until(refresh_lifetime));
    axum::Json(json!({
        "access_token": access,
        "expires_in": access_lifetime,
        "refresh_expires_in": refresh_lifetime,
        "refresh_token": refresh,
        "token_type": "Bearer",
        "not-before-policy": 0,
        "scope": "AUDIENCE_PUBLIC openid email profile ondemand_processing user-context",
    }))
    .into_response()
}
