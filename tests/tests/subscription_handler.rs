//! The push endpoint through its router, against real Postgres and moto SQS:
//! every status code, exactly-once recording, and the Lambda entry point with
//! API Gateway events.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use chrono::{DateTime, Utc};
use hls_core::{FoundBy, GranuleStore, Handoff, SqsQueue, TileSet};
use integration_tests::{Downloader, TestDatabase, TestQueue, fixtures, random_suffix};
use link_subscription_handler::{
    CredentialSource, Credentials, CredentialsError, MAX_BODY_BYTES, Password, Subscription,
    lambda_service, router, secret_id,
};
use serde_json::{Value, json};
use sqlx::PgPool;
use tower::ServiceExt;

const DRAIN_IDLE: Duration = Duration::from_millis(500);
const USERNAME: &str = "esa-notifications";
const PASSWORD: &str = "correct horse battery staple";
const FIXTURE_ID: &str = "f867a59a-9336-46d0-93ae-e55bf29403f8";

fn credentials() -> Credentials {
    Credentials::new(USERNAME, &Password::new(PASSWORD)).unwrap()
}

/// Owed messages are held this long by the sender that claimed them.
const LEASE: Duration = Duration::from_secs(2);

fn subscription(pool: PgPool, queue: SqsQueue) -> Arc<Subscription<SqsQueue>> {
    Arc::new(Subscription {
        credentials: credentials(),
        handoff: Handoff::new(GranuleStore::new(pool), queue, LEASE),
        tiles: TileSet::built_in(),
        max_acquisition_age: chrono::Duration::days(30),
    })
}

/// A database, a queue and the router over them.
struct App {
    db: TestDatabase,
    queue: TestQueue,
    router: Router,
}

impl App {
    async fn new() -> Self {
        let db = TestDatabase::migrated().await;
        let queue = TestQueue::new().await;
        let router = router(subscription(db.pool.clone(), queue.sqs_queue()));
        Self { db, queue, router }
    }

    async fn post(&self, body: impl Into<Body>) -> (StatusCode, HeaderMap, Bytes) {
        send(
            &self.router,
            events_request(body, Some(&basic(USERNAME, PASSWORD))),
        )
        .await
    }

    async fn post_json(&self, json: &Value) -> (StatusCode, HeaderMap, Bytes) {
        self.post(json.to_string()).await
    }

    /// Posts every body at once, with the right credentials; each must get `204`.
    async fn post_all_at_once(&self, bodies: Vec<String>) {
        let statuses = futures::future::join_all(bodies.into_iter().map(|body| {
            let request = events_request(body, Some(&basic(USERNAME, PASSWORD)));
            let router = self.router.clone();
            async move { send(&router, request).await.0 }
        }))
        .await;
        assert!(
            statuses.iter().all(|s| *s == StatusCode::NO_CONTENT),
            "{statuses:?}"
        );
    }

    async fn rows(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM granule")
            .fetch_one(&self.db.pool)
            .await
            .unwrap()
    }

    /// Nothing recorded, nothing queued.
    async fn assert_nothing_written(&self) {
        assert_eq!(self.rows().await, 0, "rows");
        let drained = self.queue.drain(DRAIN_IDLE).await;
        assert!(drained.by_id.is_empty(), "messages: {:?}", drained.by_id);
    }
}

fn basic(username: &str, password: &str) -> String {
    format!("Basic {}", BASE64.encode(format!("{username}:{password}")))
}

fn events_request(body: impl Into<Body>, authorization: Option<&str>) -> Request<Body> {
    let mut request = Request::post("/events").header(header::CONTENT_TYPE, "application/json");
    if let Some(value) = authorization {
        request = request.header(header::AUTHORIZATION, value);
    }
    request.body(body.into()).unwrap()
}

async fn send(router: &Router, request: Request<Body>) -> (StatusCode, HeaderMap, Bytes) {
    let response = router.clone().oneshot(request).await.unwrap();
    let (parts, body) = response.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
    (parts.status, parts.headers, body)
}

fn error_of(body: &Bytes) -> String {
    let json: Value = serde_json::from_slice(body).expect("error body is JSON");
    json["error"].as_str().expect("error field").to_owned()
}

/// The real notification with its acquisition moved to an hour ago.
fn real_notification_now() -> Value {
    let mut notification = fixtures::push_created();
    let acquired = fixtures::timestamp(Utc::now() - chrono::Duration::hours(1));
    notification["value"]["ContentDate"]["Start"] = acquired.clone().into();
    notification["value"]["ContentDate"]["End"] = acquired.into();
    notification["value"]["PublicationDate"] = fixtures::timestamp(Utc::now()).into();
    notification
}

/// A new product on `tile`, acquired at `acquired`.
fn notification_for(tile: &str, acquired: DateTime<Utc>) -> (String, Value) {
    let suffix = random_suffix();
    let id = format!("{}-0000-4000-8000-{}", &suffix[..8], &suffix[4..16]);
    let name = fixtures::product_name("S2B", tile, acquired, 7);
    let notification = fixtures::push_created_for(&id, &name, Utc::now(), acquired);
    (id, notification)
}

/// The granule a `created` notification carries.
fn created_granule(notification: &Value) -> hls_core::Granule {
    match hls_core::domain::notification::ProductNotification::from_json(notification).unwrap() {
        hls_core::domain::notification::ProductNotification::Created(granule) => granule,
        other => panic!("not a created notification: {other:?}"),
    }
}

fn recent() -> DateTime<Utc> {
    Utc::now() - chrono::Duration::hours(2)
}

#[tokio::test]
async fn the_real_notification_is_recorded_and_queued_once_with_the_exact_message() {
    let app = App::new().await;
    let notification = real_notification_now();
    let (status, _, body) = app.post_json(&notification).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body:?}");
    assert!(body.is_empty());

    let drained = app.queue.drain(DRAIN_IDLE).await;
    assert_eq!(drained.by_id.len(), 1);
    assert_eq!(
        drained.by_id[FIXTURE_ID],
        json!({
            "id": FIXTURE_ID,
            "filename": "S2A_MSIL1C_20240912T112541_N0511_R137_T28PHQ_20240912T133420.SAFE",
            "download_url": "https://catalogue.dataspace.copernicus.eu/odata/v1/Products(f867a59a-9336-46d0-93ae-e55bf29403f8)/$value",
            "checksum": "700a3f2014ab3670408b94e4310924dd",
        })
    );
    let row: (String, String, i64, String, String) = sqlx::query_as(
        "SELECT filename, tileid, size, download_url, checksum FROM granule WHERE id = $1",
    )
    .bind(FIXTURE_ID)
    .fetch_one(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(row.1, "28PHQ");
    assert_eq!(row.2, 132384463);
    assert_eq!(row.4, "700a3f2014ab3670408b94e4310924dd");

    // Redelivered 20 times: still 204, nothing new.
    for _ in 0..20 {
        let (status, _, _) = app.post_json(&notification).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
    }
    assert_eq!(app.rows().await, 1);
    let drained = app.queue.drain(DRAIN_IDLE).await;
    assert!(drained.by_id.is_empty(), "{:?}", drained.by_id);
}

#[tokio::test]
async fn a_product_the_polling_already_recorded_is_not_queued_again() {
    let app = App::new().await;
    let (id, notification) = notification_for("28PHQ", recent());
    let granule = created_granule(&notification);
    Handoff::new(
        GranuleStore::new(app.db.pool.clone()),
        app.queue.sqs_queue(),
        LEASE,
    )
    .record_and_queue(&[granule], FoundBy::Poll)
    .await
    .unwrap();
    assert_eq!(app.queue.drain(DRAIN_IDLE).await.by_id.len(), 1);

    let (status, _, _) = app.post_json(&notification).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(app.rows().await, 1);
    let drained = app.queue.drain(DRAIN_IDLE).await;
    assert!(drained.by_id.is_empty(), "{id}: {:?}", drained.by_id);
}

#[tokio::test]
async fn fifty_concurrent_deliveries_give_one_row_and_one_message() {
    let app = App::new().await;
    let (id, notification) = notification_for("31UFU", recent());
    let body = notification.to_string();
    app.post_all_at_once(vec![body; 50]).await;
    assert_eq!(app.rows().await, 1);
    let drained = app.queue.drain(DRAIN_IDLE).await;
    assert_eq!(drained.by_id.keys().collect::<Vec<_>>(), [&id]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_downloader_that_looks_each_row_up_at_once_finds_every_pushed_row() {
    let app = App::new().await;
    let downloader = Downloader::start(&app.queue, &app.db.pool);
    let notifications: Vec<(String, Value)> = (0..50)
        .map(|_| notification_for("31UFU", recent()))
        .collect();
    app.post_all_at_once(notifications.iter().map(|(_, n)| n.to_string()).collect())
        .await;
    let lookups = downloader.finish().await;
    assert!(
        lookups.not_found.is_empty(),
        "{} message(s) arrived before their row: {:?}",
        lookups.not_found.len(),
        lookups.not_found
    );
    let ids: std::collections::BTreeSet<String> =
        notifications.into_iter().map(|(id, _)| id).collect();
    assert_eq!(lookups.found, ids);
}

#[tokio::test]
async fn bad_credentials_get_401_and_nothing_happens() {
    let app = App::new().await;
    let body = real_notification_now().to_string();
    let garbled = [
        Some(basic("someone-else", PASSWORD)),
        Some(basic(USERNAME, "wrong password")),
        None,
        Some("Basic %%%garbled%%%".to_owned()),
        Some(format!("Basic {}", BASE64.encode("no colon at all"))),
        Some(format!(
            "Bearer {}",
            BASE64.encode(format!("{USERNAME}:{PASSWORD}"))
        )),
    ];
    for authorization in garbled {
        let (status, headers, _) = send(
            &app.router,
            events_request(body.clone(), authorization.as_deref()),
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{authorization:?}");
        let challenge = headers[header::WWW_AUTHENTICATE].to_str().unwrap();
        assert!(challenge.starts_with("Basic realm="), "{challenge}");
    }
    // Authentication comes before the body: an oversized body without credentials is 401.
    let (status, _, _) = send(
        &app.router,
        events_request(vec![b' '; MAX_BODY_BYTES + 1], None),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    app.assert_nothing_written().await;
}

#[tokio::test]
async fn malformed_bodies_get_400_naming_the_problem() {
    let app = App::new().await;
    let whole = real_notification_now().to_string();
    let (status, headers, body) = app.post(whole[..whole.len() / 2].to_owned()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(headers[header::CONTENT_TYPE], "application/json");
    assert!(error_of(&body).starts_with("body is not JSON"), "{body:?}");

    let (status, _, body) = app.post_json(&json!([real_notification_now()])).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        error_of(&body),
        "notification: expected an object, found an array"
    );

    let mut without_value = real_notification_now();
    without_value.as_object_mut().unwrap().remove("value");
    let (status, _, body) = app.post_json(&without_value).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error_of(&body), "value: missing");

    let mut two_extracted = real_notification_now();
    let location = two_extracted["value"]["Locations"][0].clone();
    two_extracted["value"]["Locations"]
        .as_array_mut()
        .unwrap()
        .push(location);
    let (status, _, body) = app.post_json(&two_extracted).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        error_of(&body),
        "value.Locations: 2 Extracted entries, expected 1"
    );

    let mut none_extracted = real_notification_now();
    none_extracted["value"]["Locations"] = json!([]);
    let (status, _, body) = app.post_json(&none_extracted).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        error_of(&body),
        "value.Locations: 0 Extracted entries, expected 1"
    );

    let mut no_start = real_notification_now();
    no_start["value"]["ContentDate"]
        .as_object_mut()
        .unwrap()
        .remove("Start");
    let (status, _, body) = app.post_json(&no_start).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error_of(&body), "value.ContentDate.Start: missing");

    let (status, _, _) = app.post(Vec::<u8>::new()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    app.assert_nothing_written().await;
}

#[tokio::test]
async fn a_body_over_one_mebibyte_gets_413() {
    let app = App::new().await;
    // Valid JSON padded with whitespace: only the size is wrong.
    let mut body = real_notification_now().to_string().into_bytes();
    body.resize(MAX_BODY_BYTES + 1, b' ');
    let (status, _, response) = app.post(body).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(error_of(&response).contains("1048576"), "{response:?}");

    // Exactly the limit is fine.
    let mut body = real_notification_now().to_string().into_bytes();
    body.resize(MAX_BODY_BYTES, b' ');
    let (status, _, _) = app.post(body).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(app.rows().await, 1);
}

#[tokio::test]
async fn too_old_wrong_tile_modified_and_deleted_get_204_and_nothing_is_written() {
    let app = App::new().await;
    let (_, too_old) = notification_for("28PHQ", Utc::now() - chrono::Duration::days(31));
    let (_, wrong_tile) = notification_for("99ZZZ", recent());
    let mut modified = fixtures::push_modified();
    modified["value"]["ContentDate"]["Start"] = fixtures::timestamp(recent()).into();
    for notification in [too_old, wrong_tile, modified, fixtures::push_deleted()] {
        let (status, _, body) = app.post_json(&notification).await;
        assert_eq!(status, StatusCode::NO_CONTENT, "{body:?}");
    }
    app.assert_nothing_written().await;
}

#[tokio::test]
async fn queue_unavailable_gets_503_and_the_redelivery_sends_exactly_one_message() {
    let app = App::new().await;
    let missing = SqsQueue::new(
        app.queue.client.clone(),
        format!(
            "{}/123456789012/missing-{}",
            integration_tests::sqs_endpoint(),
            random_suffix()
        ),
        1,
    );
    let broken = router(subscription(app.db.pool.clone(), missing));
    let (id, notification) = notification_for("28PHQ", recent());
    let request = || events_request(notification.to_string(), Some(&basic(USERNAME, PASSWORD)));
    for _ in 0..3 {
        let (status, _, body) = send(&broken, request()).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(!error_of(&body).is_empty());
    }
    // Recorded once, before any send; its message owed.
    assert_eq!(app.rows().await, 1);
    let owed = GranuleStore::new(app.db.pool.clone())
        .owed_count()
        .await
        .unwrap();
    assert_eq!(owed, 1);

    // CDSE redelivers once the queue is back: one message, and the next redelivery sends none.
    let (status, _, _) = send(&app.router, request()).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _, _) = send(&app.router, request()).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(app.rows().await, 1);
    let drained = app.queue.drain(DRAIN_IDLE).await;
    assert_eq!(drained.by_id.keys().collect::<Vec<_>>(), [&id]);
    assert_eq!(drained.deliveries, 1);
    let owed = GranuleStore::new(app.db.pool.clone())
        .owed_count()
        .await
        .unwrap();
    assert_eq!(owed, 0);
}

#[tokio::test]
async fn a_redelivery_while_a_dead_sender_holds_the_message_gets_503_then_sends_it_once() {
    let app = App::new().await;
    let (id, notification) = notification_for("28PHQ", recent());
    let granule = created_granule(&notification);
    // A request that recorded the product and died before sending (its Lambda was killed).
    GranuleStore::new(app.db.pool.clone())
        .record_new(&[&granule], FoundBy::Push, LEASE * 3)
        .await
        .unwrap();
    let request = || events_request(notification.to_string(), Some(&basic(USERNAME, PASSWORD)));
    let (status, _, body) = send(&app.router, request()).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body:?}");
    assert!(error_of(&body).contains("another request"), "{body:?}");
    assert!(
        app.queue
            .drain(Duration::from_millis(200))
            .await
            .by_id
            .is_empty()
    );

    // Its lease runs out; the next redelivery sends the message.
    tokio::time::sleep(LEASE * 3).await;
    let (status, _, _) = send(&app.router, request()).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let drained = app.queue.drain(DRAIN_IDLE).await;
    assert_eq!(drained.by_id.keys().collect::<Vec<_>>(), [&id]);
    assert_eq!(drained.deliveries, 1);
}

#[tokio::test]
async fn database_unavailable_gets_503_and_nothing_is_queued() {
    let queue = TestQueue::new().await;
    // A lazy pool to a port nobody listens on, as in Lambda when the database is down.
    let options = sqlx::postgres::PgConnectOptions::new()
        .host("127.0.0.1")
        .port(1)
        .username("nobody")
        .database("nothing");
    let pool = sqlx::postgres::PgPoolOptions::new()
        .acquire_timeout(Duration::from_secs(2))
        .connect_lazy_with(options);
    let router = router(subscription(pool, queue.sqs_queue()));
    let (_, notification) = notification_for("28PHQ", recent());
    let (status, _, _) = send(
        &router,
        events_request(notification.to_string(), Some(&basic(USERNAME, PASSWORD))),
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(queue.drain(DRAIN_IDLE).await.by_id.is_empty());
}

#[tokio::test]
async fn other_paths_get_404_and_other_methods_405() {
    let app = App::new().await;
    let authorization = basic(USERNAME, PASSWORD);
    for (method, path, expected) in [
        (Method::POST, "/", StatusCode::NOT_FOUND),
        (Method::POST, "/events/extra", StatusCode::NOT_FOUND),
        (Method::GET, "/health", StatusCode::NOT_FOUND),
        (Method::GET, "/events", StatusCode::METHOD_NOT_ALLOWED),
        (Method::PUT, "/events", StatusCode::METHOD_NOT_ALLOWED),
        (Method::DELETE, "/events", StatusCode::METHOD_NOT_ALLOWED),
    ] {
        let request = Request::builder()
            .method(method.clone())
            .uri(path)
            .header(header::AUTHORIZATION, &authorization)
            .body(Body::from(real_notification_now().to_string()))
            .unwrap();
        let (status, _, _) = send(&app.router, request).await;
        assert_eq!(status, expected, "{method} {path}");
    }
    app.assert_nothing_written().await;
}

#[tokio::test]
async fn the_local_server_answers_over_http() {
    let app = App::new().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let server = tokio::spawn(link_subscription_handler::serve(
        listener,
        app.router.clone(),
    ));
    let client = reqwest::Client::new();
    let url = format!("http://{address}/events");

    let response = client
        .post(&url)
        .basic_auth(USERNAME, Some(PASSWORD))
        .json(&real_notification_now())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    let response = client.post(&url).body("{}").send().await.unwrap();
    assert_eq!(response.status(), 401);
    assert!(response.headers().contains_key("www-authenticate"));
    let response = client
        .post(&url)
        .basic_auth(USERNAME, Some(PASSWORD))
        .body(vec![b' '; 2 * MAX_BODY_BYTES])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    server.abort();

    assert_eq!(app.rows().await, 1);
    assert_eq!(app.queue.drain(DRAIN_IDLE).await.by_id.len(), 1);
}

/// The request CDSE sends, as API Gateway (HTTP API, payload format 2.0) hands it to Lambda.
fn api_gateway_v2_event(stage: &str, raw_path: &str, body: &str, base64: bool) -> String {
    json!({
        "version": "2.0",
        "routeKey": "POST /events",
        "rawPath": raw_path,
        "rawQueryString": "",
        "headers": {
            "accept": "*/*",
            "authorization": basic(USERNAME, PASSWORD),
            "content-length": body.len().to_string(),
            "content-type": "application/json",
            "host": "abc123.execute-api.us-west-2.amazonaws.com",
            "user-agent": "python-requests/2.32.3",
            "x-forwarded-for": "188.185.0.1",
            "x-forwarded-port": "443",
            "x-forwarded-proto": "https"
        },
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "abc123",
            "domainName": "abc123.execute-api.us-west-2.amazonaws.com",
            "domainPrefix": "abc123",
            "http": {
                "method": "POST",
                "path": raw_path,
                "protocol": "HTTP/1.1",
                "sourceIp": "188.185.0.1",
                "userAgent": "python-requests/2.32.3"
            },
            "requestId": "JKJaXmPLvHcESHA=",
            "routeKey": "POST /events",
            "stage": stage,
            "time": "12/Sep/2024:14:52:52 +0000",
            "timeEpoch": 1726152772000u64
        },
        "body": if base64 { BASE64.encode(body) } else { body.to_owned() },
        "isBase64Encoded": base64
    })
    .to_string()
}

async fn send_lambda(router: &Router, event: &str) -> StatusCode {
    let request = lambda_http::request::from_str(event).expect("an API Gateway event");
    let response = lambda_service(router.clone())
        .oneshot(request)
        .await
        .unwrap();
    response.status()
}

#[tokio::test]
async fn the_lambda_entry_point_takes_api_gateway_v2_events() {
    let app = App::new().await;
    let (id, notification) = notification_for("28PHQ", recent());
    let body = notification.to_string();

    // Base64-encoded body, default stage.
    let event = api_gateway_v2_event("$default", "/events", &body, true);
    assert_eq!(
        send_lambda(&app.router, &event).await,
        StatusCode::NO_CONTENT
    );
    let recorded: Vec<String> = sqlx::query_scalar("SELECT id FROM granule")
        .fetch_all(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(recorded, [id.as_str()]);

    // Plain body, named stage in the path: the same product is a duplicate.
    let event = api_gateway_v2_event("prod", "/prod/events", &body, false);
    assert_eq!(
        send_lambda(&app.router, &event).await,
        StatusCode::NO_CONTENT
    );

    let (other_id, other) = notification_for("31UFU", recent());
    let event = api_gateway_v2_event("prod", "/prod/events", &other.to_string(), true);
    assert_eq!(
        send_lambda(&app.router, &event).await,
        StatusCode::NO_CONTENT
    );

    let mut ids: Vec<_> = app
        .queue
        .drain(DRAIN_IDLE)
        .await
        .by_id
        .into_keys()
        .collect();
    ids.sort();
    let mut expected = vec![id, other_id];
    expected.sort();
    assert_eq!(ids, expected);

    // Wrong credentials, bad body and a wrong path through the same entry point.
    let unauthorised = api_gateway_v2_event("$default", "/events", &body, true).replace(
        &BASE64.encode(format!("{USERNAME}:{PASSWORD}")),
        &BASE64.encode("x:y"),
    );
    assert_eq!(
        send_lambda(&app.router, &unauthorised).await,
        StatusCode::UNAUTHORIZED
    );
    let bad = api_gateway_v2_event("$default", "/events", "[1,2,3]", true);
    assert_eq!(
        send_lambda(&app.router, &bad).await,
        StatusCode::BAD_REQUEST
    );
    let elsewhere = api_gateway_v2_event("$default", "/other", &body, false);
    assert_eq!(
        send_lambda(&app.router, &elsewhere).await,
        StatusCode::NOT_FOUND
    );
    let mut oversize = body.into_bytes();
    oversize.resize(MAX_BODY_BYTES + 1, b' ');
    let oversize = api_gateway_v2_event(
        "$default",
        "/events",
        std::str::from_utf8(&oversize).unwrap(),
        true,
    );
    assert_eq!(
        send_lambda(&app.router, &oversize).await,
        StatusCode::PAYLOAD_TOO_LARGE
    );
    assert_eq!(app.rows().await, 2);
}

/// The same request through an API Gateway REST API (payload format 1.0), stage `prod`.
fn api_gateway_v1_event(body: &str) -> String {
    json!({
        "resource": "/events",
        "path": "/events",
        "httpMethod": "POST",
        "headers": {
            "Authorization": basic(USERNAME, PASSWORD),
            "Content-Type": "application/json",
            "Host": "abc123.execute-api.us-west-2.amazonaws.com"
        },
        "multiValueHeaders": {
            "Authorization": [basic(USERNAME, PASSWORD)],
            "Content-Type": ["application/json"],
            "Host": ["abc123.execute-api.us-west-2.amazonaws.com"]
        },
        "queryStringParameters": null,
        "multiValueQueryStringParameters": null,
        "pathParameters": null,
        "stageVariables": null,
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "abc123",
            "httpMethod": "POST",
            "identity": {"sourceIp": "188.185.0.1"},
            "path": "/prod/events",
            "protocol": "HTTP/1.1",
            "requestId": "c6af9ac6-7b61-11e6-9a41-93e8deadbeef",
            "resourceId": "123456",
            "resourcePath": "/events",
            "stage": "prod"
        },
        "body": BASE64.encode(body),
        "isBase64Encoded": true
    })
    .to_string()
}

#[tokio::test]
async fn the_lambda_entry_point_takes_api_gateway_rest_events() {
    let app = App::new().await;
    let (id, notification) = notification_for("28PHQ", recent());
    let event = api_gateway_v1_event(&notification.to_string());
    assert_eq!(
        send_lambda(&app.router, &event).await,
        StatusCode::NO_CONTENT
    );
    let drained = app.queue.drain(DRAIN_IDLE).await;
    assert_eq!(drained.by_id.keys().collect::<Vec<_>>(), [&id]);
}

#[tokio::test]
async fn credentials_are_read_from_the_stage_secret() {
    let aws = integration_tests::aws_config().await;
    let secrets = aws_sdk_secretsmanager::Client::new(&aws);
    let stage = format!("test-{}", random_suffix());
    secrets
        .create_secret()
        .name(secret_id(&stage))
        .secret_string(
            json!({"notification_username": USERNAME, "notification_password": PASSWORD})
                .to_string(),
        )
        .send()
        .await
        .expect("create the secret in moto");
    let source =
        CredentialSource::from_lookup(|name| (name == "STAGE").then(|| stage.clone())).unwrap();
    let credentials = Credentials::load(&source, &aws).await.unwrap();
    let mut headers = HeaderMap::new();
    headers.insert(
        header::AUTHORIZATION,
        basic(USERNAME, PASSWORD).parse().unwrap(),
    );
    assert!(credentials.authorise(&headers));
    headers.insert(
        header::AUTHORIZATION,
        basic(USERNAME, "nope").parse().unwrap(),
    );
    assert!(!credentials.authorise(&headers));

    // A secret without the password: an error that names the key, not the values.
    let broken_stage = format!("test-{}", random_suffix());
    secrets
        .create_secret()
        .name(secret_id(&broken_stage))
        .secret_string(json!({"notification_username": "leaky-user"}).to_string())
        .send()
        .await
        .unwrap();
    let source = CredentialSource::Secret {
        secret_id: secret_id(&broken_stage),
    };
    let error = Credentials::load(&source, &aws)
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("notification_password"), "{error}");
    assert!(!error.contains("leaky-user"), "{error}");

    // No such secret: start-up fails, naming it.
    let source = CredentialSource::Secret {
        secret_id: secret_id("no-such-stage"),
    };
    let error = Credentials::load(&source, &aws).await.unwrap_err();
    assert!(error.to_string().contains("no-such-stage"), "{error}");
}

#[test]
fn without_credentials_the_function_refuses_to_start() {
    let error = CredentialSource::from_lookup(|_| None).unwrap_err();
    assert!(matches!(error, CredentialsError::NotConfigured));
    let message = error.to_string();
    for needle in [
        "NOTIFICATION_USERNAME",
        "NOTIFICATION_PASSWORD",
        "hls-s2-downloader-serverless/<STAGE>/esa-subscription-credentials",
    ] {
        assert!(message.contains(needle), "{message}");
    }
}

mod hostile_bodies {
    use super::*;
    use proptest::prelude::*;

    use std::sync::LazyLock;

    /// One runtime and router for all cases: the pool's tasks live on the runtime.
    static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    });
    static ROUTER: LazyLock<Router> =
        LazyLock::new(|| RUNTIME.block_on(async { router_without_backends() }));

    /// A router whose database and queue are unreachable: a body that got that
    /// far gets 503; none may get 500 or panic.
    fn router_without_backends() -> Router {
        let options = sqlx::postgres::PgConnectOptions::new()
            .host("127.0.0.1")
            .port(1);
        let pool = sqlx::postgres::PgPoolOptions::new()
            .acquire_timeout(Duration::from_millis(200))
            .connect_lazy_with(options);
        let sqs = aws_sdk_sqs::Client::from_conf(
            aws_sdk_sqs::Config::builder()
                .behavior_version(aws_sdk_sqs::config::BehaviorVersion::latest())
                .region(aws_sdk_sqs::config::Region::new("us-east-1"))
                .endpoint_url("http://127.0.0.1:1")
                .build(),
        );
        router(subscription(
            pool,
            SqsQueue::new(sqs, "http://127.0.0.1:1/123456789012/none", 1),
        ))
    }

    fn assert_answered(body: Vec<u8>) {
        let (status, _, _) = RUNTIME.block_on(send(
            &ROUTER,
            events_request(body, Some(&basic(USERNAME, PASSWORD))),
        ));
        assert!(
            [
                StatusCode::NO_CONTENT,
                StatusCode::BAD_REQUEST,
                StatusCode::SERVICE_UNAVAILABLE
            ]
            .contains(&status),
            "{status}"
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: 200,
            // Integration tests have no lib.rs beside them to persist failures next to.
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        #[test]
        fn arbitrary_bytes_get_an_answer(body in prop::collection::vec(any::<u8>(), 0..2048)) {
            assert_answered(body);
        }

        /// The real notification with one value replaced by arbitrary text,
        /// number or structure.
        #[test]
        fn the_real_notification_with_a_field_replaced_gets_an_answer(
            path in prop::sample::select(vec![
                "/SubscriptionEvent", "/ProductId", "/value", "/value/Name",
                "/value/ContentDate/Start", "/value/Locations", "/value/Locations/0/FormatType",
                "/value/Locations/0/ContentLength", "/value/Locations/0/Checksum",
            ]),
            replacement in prop_oneof![
                Just(Value::Null),
                any::<i64>().prop_map(Value::from),
                any::<f64>().prop_map(Value::from),
                ".{0,300}".prop_map(Value::from),
                Just(json!([])),
                Just(json!({})),
            ],
        ) {
            // Old dates: a body that parses is "too old" before any backend is touched.
            let mut notification = fixtures::push_created();
            if let Some(slot) = notification.pointer_mut(path) {
                *slot = replacement;
            }
            assert_answered(notification.to_string().into_bytes());
        }
    }
}
