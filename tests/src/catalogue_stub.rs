//! A stand-in for the CDSE OData Products API: a real HTTP server on a random
//! port that serves pages of products built from the real fixture.
//!
//! It honours what the link fetcher sends: the `$filter` publication window
//! (`ge`/`lt`), acquisition start and platform, `$orderby=PublicationDate asc`
//! (ties broken on the id, as CDSE does), `$top` (at most 1000), `$skip` (with
//! CDSE's cap and its real 422 answer) and `$count`. It counts requests, keeps
//! their query strings, and can be told to answer 429 (with `Retry-After`), 503,
//! slowly, or with a garbled body; a per-page delay imitates the catalogue's time.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, NaiveDate, Utc};
use serde_json::{Value, json};

use crate::fixtures;

/// A scripted answer, used for one request in the order injected.
#[derive(Debug, Clone)]
pub enum Fault {
    /// Answer normally.
    Pass,
    /// HTTP 429 with `Retry-After` when given.
    TooManyRequests { retry_after: Option<String> },
    /// HTTP 503 with an HTML body.
    Unavailable,
    /// HTTP 200 with a body cut short.
    Garbled,
    /// Wait this long, then answer normally.
    Slow(Duration),
    /// Any status and body.
    Status(u16, String),
}

#[derive(Debug, Clone)]
struct StubProduct {
    id: String,
    published: DateTime<Utc>,
    acquired: DateTime<Utc>,
    serial: String,
    json: String,
}

#[derive(Default)]
struct Stub {
    /// Sorted by (publication time, id).
    products: RwLock<Vec<StubProduct>>,
    faults: Mutex<VecDeque<Fault>>,
    requests: AtomicUsize,
    queries: Mutex<Vec<Vec<(String, String)>>>,
    page_delay: Mutex<Duration>,
    skip_cap: AtomicUsize,
}

pub struct CatalogueStub {
    url: String,
    stub: Arc<Stub>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for CatalogueStub {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl CatalogueStub {
    pub async fn start() -> Self {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    /// On a chosen address (the `catalogue-stub` command).
    pub async fn start_on(address: SocketAddr) -> Self {
        let stub = Arc::new(Stub::default());
        stub.skip_cap.store(10_000, Ordering::SeqCst);
        let app = axum::Router::new()
            .route("/odata/v1/Products", axum::routing::get(products))
            .with_state(stub.clone());
        let listener = tokio::net::TcpListener::bind(address)
            .await
            .expect("bind the catalogue stub");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("catalogue stub");
        });
        Self { url, stub, server }
    }

    /// The catalogue's root, for `SEARCH_URL`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Adds products in the shape of a real page entry (see [`fixtures::odata_product`]).
    pub fn add_products(&self, products: impl IntoIterator<Item = Value>) {
        let mut all = self.stub.products.write().unwrap();
        for product in products {
            let time = |v: &Value| -> DateTime<Utc> {
                v.as_str()
                    .and_then(|t| t.parse().ok())
                    .unwrap_or(DateTime::<Utc>::MIN_UTC)
            };
            let serial = product["Attributes"]
                .as_array()
                .and_then(|a| {
                    a.iter()
                        .find(|a| a["Name"] == "platformSerialIdentifier")
                        .and_then(|a| a["Value"].as_str())
                })
                .unwrap_or("")
                .to_owned();
            all.push(StubProduct {
                id: product["Id"].as_str().unwrap_or("").to_owned(),
                published: time(&product["PublicationDate"]),
                acquired: time(&product["ContentDate"]["Start"]),
                serial,
                json: product.to_string(),
            });
        }
        all.sort_by(|a, b| (a.published, &a.id).cmp(&(b.published, &b.id)));
    }

    /// Answers the next requests with these, in order; then normally again.
    pub fn inject(&self, faults: impl IntoIterator<Item = Fault>) {
        self.stub.faults.lock().unwrap().extend(faults);
    }

    pub fn requests(&self) -> usize {
        self.stub.requests.load(Ordering::SeqCst)
    }

    pub fn reset_requests(&self) {
        self.stub.requests.store(0, Ordering::SeqCst);
        self.stub.queries.lock().unwrap().clear();
    }

    /// The decoded query parameters of every request so far.
    pub fn queries(&self) -> Vec<Vec<(String, String)>> {
        self.stub.queries.lock().unwrap().clone()
    }

    /// How long each page takes to answer.
    pub fn set_page_delay(&self, delay: Duration) {
        *self.stub.page_delay.lock().unwrap() = delay;
    }

    pub fn set_skip_cap(&self, cap: usize) {
        self.stub.skip_cap.store(cap, Ordering::SeqCst);
    }
}

fn odata_error(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(json!({"detail": {"message": message}}))).into_response()
}

async fn products(
    State(stub): State<Arc<Stub>>,
    Query(params): Query<Vec<(String, String)>>,
) -> Response {
    stub.requests.fetch_add(1, Ordering::SeqCst);
    stub.queries.lock().unwrap().push(params.clone());
    let fault = stub.faults.lock().unwrap().pop_front();
    match fault {
        None | Some(Fault::Pass) => {}
        Some(Fault::Slow(delay)) => tokio::time::sleep(delay).await,
        Some(Fault::TooManyRequests { retry_after }) => {
            let mut headers = HeaderMap::new();
            if let Some(value) = retry_after {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_str(&value).unwrap());
            }
            let body = json!({"error": "WAF", "message": "Rate limit exceeded", "status": 429});
            return (StatusCode::TOO_MANY_REQUESTS, headers, axum::Json(body)).into_response();
        }
        Some(Fault::Unavailable) => {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                "<html><body>503 Service Temporarily Unavailable</body></html>",
            )
                .into_response();
        }
        Some(Fault::Garbled) => {
            return (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/json")],
                r#"{"@odata.context":"$metadata#Products","value":[{"Id":"0a1b"#,
            )
                .into_response();
        }
        Some(Fault::Status(status, body)) => {
            return (
                StatusCode::from_u16(status).unwrap(),
                [(header::CONTENT_TYPE, "application/json")],
                body,
            )
                .into_response();
        }
    }
    let delay = *stub.page_delay.lock().unwrap();
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }

    let param = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let Some(filter) = param("$filter") else {
        return odata_error(StatusCode::BAD_REQUEST, "$filter is required by this stub");
    };
    let filter = match Filter::parse(filter) {
        Ok(filter) => filter,
        Err(message) => return odata_error(StatusCode::BAD_REQUEST, &message),
    };
    if param("$orderby") != Some("PublicationDate asc") {
        return odata_error(
            StatusCode::BAD_REQUEST,
            "this stub only orders by PublicationDate asc",
        );
    }
    let top: usize = match param("$top").unwrap_or("20").parse() {
        Ok(top) if top <= 1000 => top,
        _ => {
            return odata_error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "$top must be at most 1000",
            );
        }
    };
    let skip: usize = match param("$skip").unwrap_or("0").parse() {
        Ok(skip) => skip,
        Err(_) => return odata_error(StatusCode::UNPROCESSABLE_ENTITY, "$skip is not a number"),
    };
    let cap = stub.skip_cap.load(Ordering::SeqCst);
    if skip > cap {
        let mut body = fixtures::odata_skip_error();
        body["detail"][0]["input"] = skip.to_string().into();
        body["detail"][0]["msg"] = format!("Input should be less than or equal to {cap}").into();
        body["detail"][0]["ctx"]["le"] = cap.into();
        return (StatusCode::UNPROCESSABLE_ENTITY, axum::Json(body)).into_response();
    }

    let all = stub.products.read().unwrap();
    let matching: Vec<&StubProduct> = all.iter().filter(|p| filter.matches(p)).collect();
    let mut body =
        String::from(r#"{"@odata.context":"$metadata#Products(Attributes())","value":["#);
    for (index, product) in matching.iter().skip(skip).take(top).enumerate() {
        if index > 0 {
            body.push(',');
        }
        body.push_str(&product.json);
    }
    body.push(']');
    if param("$count") == Some("true") {
        body.push_str(&format!(r#","@odata.count":{}"#, matching.len()));
    }
    // Like CDSE: a nextLink while more remain, dropped once it would pass the cap.
    if skip + top < matching.len() && skip + top <= cap {
        let mut next = url::form_urlencoded::Serializer::new(String::new());
        for (key, value) in &params {
            if key == "$skip" {
                next.append_pair(key, &(skip + top).to_string());
            } else {
                next.append_pair(key, value);
            }
        }
        body.push_str(&format!(
            r#","@odata.nextLink":"http://stub/odata/v1/Products?{}""#,
            next.finish()
        ));
    }
    body.push('}');
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// Exactly the terms the link fetcher's query builder writes.
#[derive(Debug)]
struct Filter {
    published_from: DateTime<Utc>,
    published_before: DateTime<Utc>,
    acquired_since: Option<DateTime<Utc>>,
    serial: Option<String>,
}

impl Filter {
    fn parse(filter: &str) -> Result<Self, String> {
        for required in [
            "Collection/Name eq 'SENTINEL-2'",
            "att/Name eq 'productType' and att/OData.CSC.StringAttribute/Value eq 'S2MSI1C'",
        ] {
            if !filter.contains(required) {
                return Err(format!("the stub expects {required:?} in $filter"));
            }
        }
        let time = |prefix: &str| -> Result<Option<DateTime<Utc>>, String> {
            let Some(start) = filter.find(prefix) else {
                return Ok(None);
            };
            let rest = &filter[start + prefix.len()..];
            let literal = rest.split([' ', ')']).next().unwrap_or("");
            DateTime::parse_from_rfc3339(literal)
                .map(|t| Some(t.with_timezone(&Utc)))
                .map_err(|e| format!("bad date literal {literal:?} after {prefix:?}: {e}"))
        };
        let serial_prefix =
            "att/Name eq 'platformSerialIdentifier' and att/OData.CSC.StringAttribute/Value eq '";
        let serial = filter.find(serial_prefix).map(|start| {
            filter[start + serial_prefix.len()..]
                .split('\'')
                .next()
                .unwrap_or("")
                .to_owned()
        });
        Ok(Self {
            published_from: time("PublicationDate ge ")?
                .ok_or("the stub expects PublicationDate ge")?,
            published_before: time("PublicationDate lt ")?
                .ok_or("the stub expects PublicationDate lt")?,
            acquired_since: time("ContentDate/Start ge ")?,
            serial,
        })
    }

    fn matches(&self, product: &StubProduct) -> bool {
        product.published >= self.published_from
            && product.published < self.published_before
            && self
                .acquired_since
                .is_none_or(|since| product.acquired >= since)
            && self.serial.as_ref().is_none_or(|s| *s == product.serial)
    }
}

/// `count` products published on `date`, spread over the day in publication
/// order with some groups sharing one instant (so paging must tie-break), on
/// `tiles` in turn and platforms A, B, C in turn, acquired a day earlier.
/// Ids are `<prefix>-<n>`.
pub fn synthetic_day(
    prefix: &str,
    date: NaiveDate,
    count: usize,
    tiles: &[impl AsRef<str>],
) -> Vec<Value> {
    let start = date.and_hms_opt(0, 0, 0).unwrap().and_utc();
    let step = 86_400_000_000i64 / (count as i64 + 1);
    // The fixture is read once; each product is a re-stamped copy, exactly as
    // `fixtures::odata_product` makes them.
    let template = fixtures::odata_product("template", "S2A_T00AAA_", start, start);
    (0..count)
        .map(|n| {
            // Every group of three shares its first member's instant.
            let slot = (n - n % 3) as i64;
            let published = start + chrono::Duration::microseconds(step * slot + 1);
            let acquired = published - chrono::Duration::days(1);
            let platform = ["S2A", "S2B", "S2C"][n % 3];
            let tile = tiles[n % tiles.len()].as_ref();
            let name = fixtures::product_name(platform, tile, acquired, n as u32);
            restamp(
                &template,
                &format!("{prefix}-{n:06}"),
                &name,
                published,
                acquired,
            )
        })
        .collect()
}

fn restamp(
    template: &Value,
    id: &str,
    name: &str,
    published: DateTime<Utc>,
    acquired: DateTime<Utc>,
) -> Value {
    let mut product = template.clone();
    product["Id"] = id.into();
    product["Name"] = name.into();
    product["PublicationDate"] = fixtures::timestamp(published).into();
    product["ContentDate"]["Start"] = fixtures::timestamp(acquired).into();
    product["ContentDate"]["End"] = fixtures::timestamp(acquired).into();
    let tile = hls_core::domain::granule::tile_id_from_name(name).unwrap_or("");
    for attribute in product["Attributes"].as_array_mut().into_iter().flatten() {
        match attribute["Name"].as_str() {
            Some("tileId") => attribute["Value"] = tile.into(),
            Some("platformSerialIdentifier") => {
                attribute["Value"] = name.get(2..3).unwrap_or("A").into()
            }
            _ => {}
        }
    }
    product
}
