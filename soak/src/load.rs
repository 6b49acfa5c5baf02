//! The push load: closed-loop clients posting notifications the way CDSE does,
//! each waiting for its answer before the next. A client that gets `503` (or no
//! answer) delivers the same notification again later, as CDSE retries; some
//! notifications already answered are delivered again as duplicates.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use chrono::{DateTime, Utc};
use hls_core::domain::notification::{NotifiedProduct, readdress_created};
use rand::RngExt;
use serde_json::Value;

use crate::history::{Answer, History, Kind, Notification, Reason, Request, now};

pub const USERNAME: &str = "esa-soak";
pub const PASSWORD: &str = "soak: correct horse battery staple";
/// API Gateway gives up on the function after 29 s; CDSE then sees a 504.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(29);
const MAX_BODY: usize = 1024 * 1024;

/// A product a `created` notification is about.
#[derive(Debug, Clone)]
pub struct Product {
    pub id: String,
    pub name: String,
    pub published: DateTime<Utc>,
    pub acquired: DateTime<Utc>,
}

/// The notification bodies, built from the real fixtures.
struct Templates {
    created: Value,
    modified: Value,
    deleted: Value,
    allowed_tiles: Vec<&'static str>,
}

impl Templates {
    fn load() -> Self {
        let allowed_tiles = include_str!("../../crates/core/data/allowed_tiles.txt")
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        Self {
            created: integration_tests::fixtures::push_created(),
            modified: integration_tests::fixtures::push_modified(),
            deleted: integration_tests::fixtures::push_deleted(),
            allowed_tiles,
        }
    }

    fn created(&self, product: &Product) -> Value {
        let mut notification = self.created.clone();
        let notified = NotifiedProduct {
            id: &product.id,
            name: &product.name,
            published: product.published,
            acquired: product.acquired,
        };
        readdress_created(&mut notification, &notified, product.published);
        notification
    }

    fn fresh_product(&self, tile: &str, acquired: DateTime<Utc>) -> Product {
        let mut rng = rand::rng();
        let platform = ["S2A", "S2B", "S2C"][rng.random_range(0..3)];
        Product {
            id: product_id(),
            name: integration_tests::fixtures::product_name(
                platform,
                tile,
                acquired,
                rng.random_range(0..1000),
            ),
            published: Utc::now() - chrono::Duration::seconds(rng.random_range(60..3600)),
            acquired,
        }
    }

    fn allowed_tile(&self) -> &'static str {
        self.allowed_tiles[rand::rng().random_range(0..self.allowed_tiles.len())]
    }
}

/// A fresh CDSE-like product id (a version-4 UUID).
pub fn product_id() -> String {
    let mut rng = rand::rng();
    let (a, b, c, d, e): (u32, u16, u16, u16, u64) = (
        rng.random(),
        rng.random(),
        rng.random(),
        rng.random(),
        rng.random(),
    );
    format!(
        "{a:08x}-{b:04x}-4{:03x}-{:04x}-{:012x}",
        c & 0x0fff,
        (d & 0x3fff) | 0x8000,
        e & 0xffff_ffff_ffff
    )
}

/// How a request authenticates.
#[derive(Debug, Clone, Copy)]
enum Auth {
    Right,
    WrongPassword,
    Missing,
    Bearer,
    Garbled,
}

impl Auth {
    fn header(self) -> Option<String> {
        let basic = |user_password: &str| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(user_password)
            )
        };
        match self {
            Auth::Right => Some(basic(&format!("{USERNAME}:{PASSWORD}"))),
            Auth::WrongPassword => Some(basic(&format!("{USERNAME}:{PASSWORD}x"))),
            Auth::Missing => None,
            Auth::Bearer => Some(format!("Bearer {}", product_id())),
            Auth::Garbled => Some("Basic !!not*base64!!".into()),
        }
    }
}

/// A request ready to go: what it is, how it authenticates and its body.
struct Prepared {
    notification: usize,
    reason: Reason,
    /// 1 for a first delivery or a duplicate; n for the n-th try after 503s.
    attempt: u32,
    auth: Auth,
    body: Vec<u8>,
}

/// The shared state of every client.
pub struct Load {
    history: Arc<History>,
    templates: Templates,
    /// The `created` notifications that may be delivered again, by notification index.
    products: Mutex<std::collections::HashMap<usize, Product>>,
    /// Products of the catalogue's days acquired recently enough for push.
    catalogue: Vec<Product>,
    /// Notifications of new products answered 204, for duplicates.
    answered: Mutex<Vec<usize>>,
    /// Notifications to deliver again, by when.
    retries: Mutex<BinaryHeap<Reverse<(Instant, usize, u32)>>>,
    /// Retries scheduled or in flight; zero once every notification is settled.
    unsettled: AtomicUsize,
    stop_new: AtomicBool,
    in_flight: AtomicUsize,
    pub peak_in_flight: AtomicUsize,
    url: String,
    client: reqwest::Client,
}

impl Load {
    pub fn new(history: Arc<History>, server_port: u16, catalogue: Vec<Product>) -> Self {
        let client = reqwest::Client::builder()
            .timeout(CLIENT_TIMEOUT)
            .connect_timeout(Duration::from_secs(5))
            .build()
            .expect("an HTTP client");
        Self {
            history,
            templates: Templates::load(),
            products: Default::default(),
            catalogue,
            answered: Default::default(),
            retries: Default::default(),
            unsettled: AtomicUsize::new(0),
            stop_new: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            peak_in_flight: AtomicUsize::new(0),
            url: format!("http://127.0.0.1:{server_port}/events"),
            client,
        }
    }

    /// From now on only redeliveries of notifications answered 503 are sent.
    pub fn stop_new(&self) {
        self.stop_new.store(true, Ordering::SeqCst);
    }

    /// Notifications still waiting for an answer that settles them.
    pub fn unsettled(&self) -> usize {
        self.unsettled.load(Ordering::SeqCst)
    }

    /// One client: until told to stop and nothing is left to deliver again.
    pub async fn client(self: Arc<Self>, client: usize, give_up: Arc<AtomicBool>) {
        loop {
            if give_up.load(Ordering::SeqCst) {
                return;
            }
            let prepared = match self.next_due_retry() {
                Some(prepared) => prepared,
                None if self.stop_new.load(Ordering::SeqCst) => {
                    if self.unsettled() == 0 {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
                None => self.generate(),
            };
            let attempt_of_retry = matches!(prepared.reason, Reason::Retry);
            let (t, started, answer, detail) = self.send(&prepared).await;
            let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
            let notification = prepared.notification;
            let retried = answer.is_retried();
            let kind = self.history.notifications.lock().unwrap()[notification].kind;
            if retried && kind.is_recorded() {
                // Redelivered later, as CDSE does; counted before this retry is settled.
                self.unsettled.fetch_add(1, Ordering::SeqCst);
                // CDSE's spacing is undocumented: 1, 2, 4, then 8 s, jittered.
                let backoff = Duration::from_millis(
                    (500u64 << prepared.attempt.min(4)) + rand::rng().random_range(0..500),
                );
                self.retries.lock().unwrap().push(Reverse((
                    Instant::now() + backoff,
                    notification,
                    prepared.attempt + 1,
                )));
            } else if answer == Answer::Status(204) && kind.is_recorded() {
                self.answered.lock().unwrap().push(notification);
            }
            if attempt_of_retry {
                self.unsettled.fetch_sub(1, Ordering::SeqCst);
            }
            self.history.requests.lock().unwrap().push(Request {
                t,
                latency_ms,
                client,
                notification,
                reason: prepared.reason,
                answer,
                detail,
            });
        }
    }

    fn next_due_retry(&self) -> Option<Prepared> {
        let (notification, attempt) = {
            let mut retries = self.retries.lock().unwrap();
            match retries.peek() {
                Some(Reverse((due, _, _))) if *due <= Instant::now() => {
                    let Reverse((_, notification, attempt)) = retries.pop()?;
                    (notification, attempt)
                }
                _ => return None,
            }
        };
        let mut prepared = self.again(notification, Reason::Retry);
        prepared.attempt = attempt;
        Some(prepared)
    }

    /// The same notification, delivered again.
    fn again(&self, notification: usize, reason: Reason) -> Prepared {
        let product = self.products.lock().unwrap()[&notification].clone();
        Prepared {
            notification,
            reason,
            attempt: 1,
            auth: Auth::Right,
            body: self.templates.created(&product).to_string().into_bytes(),
        }
    }

    /// A new notification of a random kind, or a duplicate of an answered one.
    fn generate(&self) -> Prepared {
        let roll = rand::rng().random_range(0..100);
        if roll < 14 {
            let answered = self.answered.lock().unwrap();
            if !answered.is_empty() {
                let notification = answered[rand::rng().random_range(0..answered.len())];
                drop(answered);
                return self.again(notification, Reason::Duplicate);
            }
        }
        let kind = match roll {
            0..56 => Kind::New,
            56..64 if !self.catalogue.is_empty() => Kind::Known,
            56..64 => Kind::New,
            64..69 => Kind::TooOld,
            69..74 => Kind::OtherTile,
            74..77 => Kind::Modified,
            77..79 => Kind::Deleted,
            79..87 => Kind::BadAuth,
            87..96 => Kind::BadJson,
            _ => Kind::TooLarge,
        };
        let t = &self.templates;
        let recent =
            || Utc::now() - chrono::Duration::minutes(rand::rng().random_range(30..4 * 24 * 60));
        let new_product = || t.fresh_product(t.allowed_tile(), recent());
        let mut auth = Auth::Right;
        let mut variant = "";
        let (product_id, body, keep): (String, Vec<u8>, Option<Product>) = match kind {
            Kind::New => {
                let product = new_product();
                (
                    product.id.clone(),
                    t.created(&product).to_string().into_bytes(),
                    Some(product),
                )
            }
            Kind::Known => {
                let product =
                    self.catalogue[rand::rng().random_range(0..self.catalogue.len())].clone();
                (
                    product.id.clone(),
                    t.created(&product).to_string().into_bytes(),
                    Some(product),
                )
            }
            Kind::TooOld => {
                let product =
                    t.fresh_product(t.allowed_tile(), Utc::now() - chrono::Duration::days(40));
                (
                    product.id.clone(),
                    t.created(&product).to_string().into_bytes(),
                    None,
                )
            }
            Kind::OtherTile => {
                let tile = ["99ZZZ", "54PXA", "01AAA"][rand::rng().random_range(0..3)];
                let product = t.fresh_product(tile, recent());
                (
                    product.id.clone(),
                    t.created(&product).to_string().into_bytes(),
                    None,
                )
            }
            Kind::Modified | Kind::Deleted => {
                let mut json = if kind == Kind::Modified {
                    t.modified.clone()
                } else {
                    t.deleted.clone()
                };
                let id = product_id();
                json["ProductId"] = id.clone().into();
                json["value"]["Id"] = id.clone().into();
                (id, json.to_string().into_bytes(), None)
            }
            Kind::BadAuth => {
                let product = new_product();
                let choices = [
                    (Auth::WrongPassword, "wrong password"),
                    (Auth::Missing, "no Authorization header"),
                    (Auth::Bearer, "Bearer scheme"),
                    (Auth::Garbled, "garbled base64"),
                ];
                (auth, variant) = choices[rand::rng().random_range(0..choices.len())];
                (
                    product.id.clone(),
                    t.created(&product).to_string().into_bytes(),
                    None,
                )
            }
            Kind::BadJson => {
                let product = new_product();
                let mut json = t.created(&product);
                let choice = rand::rng().random_range(0..4);
                let body = match choice {
                    0 => {
                        variant = "cut short";
                        let text = json.to_string();
                        text.as_bytes()[..text.len() / 2].to_vec()
                    }
                    1 => {
                        variant = "not JSON";
                        format!("<html><body>{}</body></html>", product.id).into_bytes()
                    }
                    2 => {
                        variant = "no ContentDate";
                        json["value"].as_object_mut().unwrap().remove("ContentDate");
                        json.to_string().into_bytes()
                    }
                    _ => {
                        variant = "no Extracted location";
                        json["value"]["Locations"] = Value::Array(vec![]);
                        json.to_string().into_bytes()
                    }
                };
                (product.id.clone(), body, None)
            }
            Kind::TooLarge => {
                let product = new_product();
                let mut json = t.created(&product);
                json["Padding"] = "x".repeat(MAX_BODY).into();
                (product.id.clone(), json.to_string().into_bytes(), None)
            }
        };
        let notification = {
            let mut notifications = self.history.notifications.lock().unwrap();
            notifications.push(Notification {
                product_id,
                kind,
                variant,
            });
            notifications.len() - 1
        };
        if let Some(product) = keep {
            self.products.lock().unwrap().insert(notification, product);
        }
        Prepared {
            notification,
            reason: Reason::First,
            attempt: 1,
            auth,
            body,
        }
    }

    async fn send(&self, prepared: &Prepared) -> (f64, Instant, Answer, Option<String>) {
        let mut request = self
            .client
            .post(&self.url)
            .header("content-type", "application/json")
            .body(prepared.body.clone());
        if let Some(value) = prepared.auth.header() {
            request = request.header("authorization", value);
        }
        let in_flight = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak_in_flight.fetch_max(in_flight, Ordering::SeqCst);
        let t = now();
        let started = Instant::now();
        let result = request.send().await;
        let outcome = match result {
            Ok(response) => {
                let status = response.status().as_u16();
                let basic = response
                    .headers()
                    .get("www-authenticate")
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|v| v.starts_with("Basic"));
                let body = response.bytes().await.unwrap_or_default();
                let detail = match status {
                    401 => Some(if basic {
                        "WWW-Authenticate: Basic".to_owned()
                    } else {
                        "no WWW-Authenticate".to_owned()
                    }),
                    400..=599 => Some(
                        serde_json::from_slice::<Value>(&body)
                            .ok()
                            .and_then(|v| v["error"].as_str().map(str::to_owned))
                            .unwrap_or_else(|| {
                                format!(
                                    "no JSON error: {}",
                                    String::from_utf8_lossy(&body[..body.len().min(80)])
                                )
                            }),
                    ),
                    _ => None,
                };
                (Answer::Status(status), detail)
            }
            Err(error) if error.is_timeout() => (Answer::Timeout, None),
            Err(error) => (
                Answer::Transport(format!("{error:#}")),
                Some(error_chain(&error)),
            ),
        };
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        (t, started, outcome.0, outcome.1)
    }
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
