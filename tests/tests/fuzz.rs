//! Property tests ("fuzzing") of the three parsers that read untrusted input:
//! push notifications (`ProductNotification::parse`), catalogue pages
//! (`catalogue::odata::parse_page`) and the endpoint's Basic-auth header
//! (`Credentials::authorise`, and the 401 the router answers).
//!
//! Each parser gets structured inputs (the real CDSE document with fields
//! removed, retyped, lengthened, nested, replaced by unicode or huge numbers)
//! and raw bytes (random, and the real document cut, flipped and spliced).
//! Nothing may panic; every error must be a clear message (one line, bounded,
//! naming the field); and where one field was removed or retyped the answer is
//! exactly what that field calls for: an error naming it, or, for a field with
//! a fallback or one the parser does not read, the same granule as before.
//!
//! `FUZZ_CASES` sets the cases of each property: 1,000 in `make test`,
//! 100,000 in `make fuzz`, which prints the counts and times.

use std::sync::LazyLock;
use std::time::Instant;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Request, StatusCode, header};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE};
use chrono::Utc;
use hls_core::adapters::catalogue::odata::parse_page;
use hls_core::adapters::catalogue::{CatalogueError, CataloguePage};
use hls_core::domain::notification::{NotificationError, Problem, ProductNotification};
use hls_core::{Granule, GranuleStore, Handoff, Password, SqsQueue, TileSet};
use integration_tests::fixtures;
use link_subscription_handler::{Credentials, Subscription, router};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{Value, json};
use tower::ServiceExt;

/// Cases per property.
fn cases() -> u32 {
    std::env::var("FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000)
}

/// Runs one property for [`cases`] generated inputs and reports how long it took.
fn fuzz<S: Strategy>(
    name: &str,
    strategy: S,
    test: impl Fn(S::Value) -> Result<(), TestCaseError>,
) {
    let cases = cases();
    let mut runner = TestRunner::new(Config {
        cases,
        // Integration tests have no lib.rs beside them to persist failures next to.
        failure_persistence: None,
        ..Config::default()
    });
    OUTCOMES.with(|o| o.borrow_mut().clear());
    let started = Instant::now();
    if let Err(error) = runner.run(&strategy, test) {
        panic!("{name}: {error}");
    }
    let outcomes = OUTCOMES.with(|o| {
        o.borrow()
            .iter()
            .map(|(outcome, n)| format!("{outcome} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    });
    eprintln!(
        "fuzz {name}: {cases} cases in {:.1} s ({outcomes})",
        started.elapsed().as_secs_f64()
    );
}

thread_local! {
    /// What the inputs of the property running on this thread came to.
    static OUTCOMES: std::cell::RefCell<std::collections::BTreeMap<&'static str, usize>> =
        Default::default();
}

/// Counts an outcome, so that the report shows the inputs reach past the first check.
fn tally(outcome: &'static str) {
    OUTCOMES.with(|o| *o.borrow_mut().entry(outcome).or_default() += 1);
}

fn tally_notification(parsed: &Result<ProductNotification, NotificationError>) {
    tally(match parsed {
        Ok(ProductNotification::Created(_)) => "created",
        Ok(ProductNotification::Ignored { .. }) => "ignored",
        Err(error) if matches!(error.problem, Problem::NotJson(_)) => "not JSON",
        Err(_) => "rejected",
    });
}

fn tally_page(parsed: &Result<CataloguePage, CatalogueError>) {
    tally(match parsed {
        Err(_) => "not a page",
        Ok(page) if page.products.iter().all(|p| p.granule.is_ok()) => "page, all products valid",
        Ok(_) => "page, some products rejected",
    });
}

/// One line, not empty, at most `max` characters: what an operator reads in a
/// log or a 400 body. Hostile values must be quoted short and escaped.
fn clear(message: &str, max: usize) -> Result<(), TestCaseError> {
    prop_assert!(!message.trim().is_empty(), "empty message");
    prop_assert!(
        !message.chars().any(char::is_control),
        "control character in {message:?}"
    );
    let len = message.chars().count();
    prop_assert!(len <= max, "{len} characters: {message:?}");
    Ok(())
}

// ---------------------------------------------------------------- mutations

/// What is done to the value at one JSON pointer.
#[derive(Debug, Clone)]
enum Op {
    Remove,
    /// Replaced by a value of another type (or null).
    Retype(Value),
    /// A string repeated, an array's items repeated.
    Lengthen(usize),
    /// Wrapped in this many arrays.
    Nest(usize),
    /// A string replaced by arbitrary unicode.
    Unicode(String),
    /// A number (or anything) replaced by a huge or odd number.
    Number(Value),
}

#[derive(Debug, Clone)]
struct Mutation {
    pointer: String,
    op: Op,
}

fn op() -> impl Strategy<Value = Op> {
    let scalar = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        ".{0,12}".prop_map(Value::from),
        Just(json!([])),
        Just(json!({})),
        Just(json!([1, "a"])),
        Just(json!({"a": 1})),
    ];
    let number = prop_oneof![
        Just(json!(u64::MAX)),
        Just(json!(i64::MIN)),
        Just(json!(1e308)),
        Just(json!(-1e308)),
        Just(json!(f64::MIN_POSITIVE)),
        Just(json!(-1)),
        Just(json!(0.5)),
        Just(json!(0)),
        any::<u64>().prop_map(Value::from),
    ];
    prop_oneof![
        3 => Just(Op::Remove),
        3 => scalar.prop_map(Op::Retype),
        1 => (2usize..2_000).prop_map(Op::Lengthen),
        1 => (1usize..200).prop_map(Op::Nest),
        1 => "(?s).{0,64}".prop_map(Op::Unicode),
        1 => number.prop_map(Op::Number),
    ]
}

/// Every pointer into `value` (not the root itself).
fn pointers(value: &Value) -> Vec<String> {
    fn walk(value: &Value, at: String, out: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                for (key, child) in map {
                    let next = format!("{at}/{}", key.replace('~', "~0").replace('/', "~1"));
                    out.push(next.clone());
                    walk(child, next, out);
                }
            }
            Value::Array(items) => {
                for (index, child) in items.iter().enumerate() {
                    let next = format!("{at}/{index}");
                    out.push(next.clone());
                    walk(child, next, out);
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(value, String::new(), &mut out);
    out
}

fn type_of(value: &Value) -> u8 {
    match value {
        Value::Null => 0,
        Value::Bool(_) => 1,
        Value::Number(_) => 2,
        Value::String(_) => 3,
        Value::Array(_) => 4,
        Value::Object(_) => 5,
    }
}

/// Applies a mutation; false when it changed nothing (a retype to the same type).
fn apply(document: &mut Value, mutation: &Mutation) -> bool {
    let (parent, last) = match mutation.pointer.rsplit_once('/') {
        Some(split) => split,
        None => return false,
    };
    if let Op::Remove = mutation.op {
        let Some(parent) = document.pointer_mut(parent) else {
            return false;
        };
        return match parent {
            Value::Object(map) => map
                .remove(&last.replace("~1", "/").replace("~0", "~"))
                .is_some(),
            Value::Array(items) => match last.parse::<usize>() {
                Ok(index) if index < items.len() => {
                    items.remove(index);
                    true
                }
                _ => false,
            },
            _ => false,
        };
    }
    let Some(slot) = document.pointer_mut(&mutation.pointer) else {
        return false;
    };
    match &mutation.op {
        Op::Remove => unreachable!(),
        Op::Retype(value) => {
            if type_of(value) == type_of(slot) {
                return false;
            }
            *slot = value.clone();
        }
        Op::Lengthen(times) => match slot {
            Value::String(s) if !s.is_empty() => *s = s.repeat(*times),
            Value::Array(items) if !items.is_empty() => {
                let copy = items.clone();
                for _ in 1..(*times).min(50) {
                    items.extend(copy.iter().cloned());
                }
            }
            _ => return false,
        },
        Op::Nest(depth) => {
            let mut value = slot.take();
            for _ in 0..*depth {
                value = Value::Array(vec![value]);
            }
            *slot = value;
        }
        Op::Unicode(text) => {
            if !slot.is_string() {
                return false;
            }
            *slot = Value::from(text.as_str());
        }
        Op::Number(number) => *slot = number.clone(),
    }
    true
}

/// One to three mutations at pointers into `document`; the pointers the
/// parser reads are drawn as often as all the others together.
fn mutations(document: &Value, read: &[&str]) -> impl Strategy<Value = Vec<Mutation>> {
    let all = pointers(document);
    let read: Vec<String> = read.iter().map(|p| p.to_string()).collect();
    let pointer = prop_oneof![prop::sample::select(read), prop::sample::select(all)];
    prop::collection::vec(
        (pointer, op()).prop_map(|(pointer, op)| Mutation { pointer, op }),
        1..=3,
    )
}

/// The bytes of a document, mangled: cut short (or not), bytes replaced (by
/// printable ASCII, which often leaves valid JSON with another value, or by any
/// byte), bytes spliced in (a BOM, invalid UTF-8, a duplicate key, a stray
/// brace); or any bytes; or any text.
fn raw_bytes(document: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    let len = document.len();
    let splices = prop_oneof![
        Just(b"\xef\xbb\xbf".to_vec()),
        Just(b"\xff\xfe\xc3\x28".to_vec()),
        Just(br#""value":1,"#.to_vec()),
        Just(b"}".to_vec()),
        Just(b"\\u0000".to_vec()),
        Just(b"[[[[[[[[".to_vec()),
        prop::collection::vec(any::<u8>(), 1..16),
    ];
    let byte = prop_oneof![3 => 0x20u8..0x7f, 1 => any::<u8>()];
    let mangled = (
        prop::option::of(0..len),
        prop::collection::vec((0..len.max(1), byte), 0..4),
        prop::collection::vec((0..=len, splices), 0..2),
    )
        .prop_map(move |(cut, replaced, splices)| {
            let mut bytes = document.clone();
            for (at, byte) in replaced {
                if at < bytes.len() {
                    bytes[at] = byte;
                }
            }
            for (at, splice) in splices {
                let at = at.min(bytes.len());
                bytes.splice(at..at, splice);
            }
            if let Some(cut) = cut {
                bytes.truncate(cut);
            }
            bytes
        });
    prop_oneof![
        4 => mangled,
        1 => prop::collection::vec(any::<u8>(), 0..4096),
        1 => "\\PC{0,256}".prop_map(String::into_bytes),
    ]
}

// ---------------------------------------------------------------- notifications

/// The real `created` notification, about a product acquired an hour ago.
static NOTIFICATION: LazyLock<Value> = LazyLock::new(|| {
    let acquired = Utc::now() - chrono::Duration::hours(1);
    let name = fixtures::product_name("S2B", "28PHQ", acquired, 7);
    fixtures::push_created_for(
        "0b9e3c1a-5f6d-4e2b-9a7c-1d2e3f4a5b6c",
        &name,
        Utc::now(),
        acquired,
    )
});

static NOTIFIED: LazyLock<Granule> =
    LazyLock::new(
        || match ProductNotification::parse(NOTIFICATION.to_string().as_bytes()) {
            Ok(ProductNotification::Created(granule)) => granule,
            other => panic!("the real notification does not parse: {other:?}"),
        },
    );

/// The pointers the notification parser reads.
const NOTIFICATION_READS: &[&str] = &[
    "/SubscriptionEvent",
    "/ProductId",
    "/ProductName",
    "/value",
    "/value/Id",
    "/value/Name",
    "/value/ContentLength",
    "/value/PublicationDate",
    "/value/ContentDate",
    "/value/ContentDate/Start",
    "/value/ContentDate/End",
    "/value/Locations",
    "/value/Locations/0",
    "/value/Locations/0/FormatType",
    "/value/Locations/0/DownloadLink",
    "/value/Locations/0/ContentLength",
    "/value/Locations/0/Checksum",
    "/value/Locations/0/Checksum/0",
    "/value/Locations/0/Checksum/0/Value",
    "/value/Locations/0/Checksum/0/Algorithm",
    "/value/Attributes",
];

/// What one removed or retyped field of the notification must lead to.
#[derive(Debug)]
enum Expect {
    /// The same granule (a field with a fallback, or one the parser does not read).
    Same,
    /// The same granule, its checksum perhaps gone (the MD5 entry was touched).
    SameButChecksum,
    /// An error whose message starts so.
    Error(String),
}

/// The message path of a JSON pointer: `/value/Locations/0/DownloadLink` is
/// `value.Locations[0].DownloadLink`.
fn message_path(pointer: &str) -> String {
    let mut path = String::new();
    for part in pointer.trim_start_matches('/').split('/') {
        if part.parse::<usize>().is_ok() {
            path.push_str(&format!("[{part}]"));
        } else {
            if !path.is_empty() {
                path.push('.');
            }
            path.push_str(part);
        }
    }
    path
}

fn notification_expectation(pointer: &str, replacement: Option<&Value>) -> Expect {
    let null = replacement.is_none_or(Value::is_null);
    let path = message_path(pointer);
    let missing = || Expect::Error(format!("{path}: missing"));
    let wrong = |expected: &str| Expect::Error(format!("{path}: expected {expected}, found"));
    let no_extracted = || Expect::Error("value.Locations: 0 Extracted entries, expected 1".into());
    match pointer {
        // Fallbacks: ProductId ↔ value.Id, ProductName ↔ value.Name, the
        // location's ContentLength ↔ the product's (the same number here).
        "/ProductId"
        | "/ProductName"
        | "/value/Id"
        | "/value/Name"
        | "/value/Locations/0/ContentLength"
            if null =>
        {
            Expect::Same
        }
        "/ProductId" | "/ProductName" | "/value/Id" | "/value/Name" => wrong("a string"),
        "/value/Locations/0/ContentLength" => wrong("an integer"),
        "/SubscriptionEvent"
        | "/value/ContentDate/Start"
        | "/value/ContentDate/End"
        | "/value/PublicationDate"
        | "/value/Locations/0/DownloadLink"
            if null =>
        {
            missing()
        }
        "/SubscriptionEvent"
        | "/value/ContentDate/Start"
        | "/value/ContentDate/End"
        | "/value/PublicationDate"
        | "/value/Locations/0/DownloadLink" => wrong("a string"),
        "/value" if replacement.is_none() => missing(),
        "/value" => wrong("an object"),
        "/value/ContentDate" if replacement.is_none() => missing(),
        "/value/ContentDate" => wrong("an object"),
        "/value/Locations" if null => missing(),
        "/value/Locations" => wrong("an array"),
        "/value/Locations/0" | "/value/Locations/0/FormatType" => no_extracted(),
        p if p.starts_with("/value/Locations/0/Checksum") => Expect::SameButChecksum,
        _ => Expect::Same,
    }
}

fn notification_error_is_clear(error: &NotificationError) -> Result<(), TestCaseError> {
    let message = error.to_string();
    clear(&message, 400)?;
    // The message starts with what is wrong, by path from the document's root.
    prop_assert!(
        [
            "body is not JSON: ",
            "notification: ",
            "SubscriptionEvent: ",
            "ProductId: ",
            "ProductName: ",
            "value: ",
            "value.",
        ]
        .iter()
        .any(|prefix| message.starts_with(prefix)),
        "{message:?} names no field"
    );
    if let Some(id) = &error.product_id {
        // 80 characters and the `…` of a cut.
        prop_assert!(id.chars().count() <= 81, "product id for the log: {id:?}");
    }
    Ok(())
}

fn same_granule(got: &Granule, checksum_may_go: bool) -> Result<(), TestCaseError> {
    let expected = &*NOTIFIED;
    let mut got = got.clone();
    if checksum_may_go && got.checksum.is_none() {
        got.checksum = expected.checksum.clone();
    }
    prop_assert_eq!(&got, expected);
    Ok(())
}

#[test]
fn notifications_structured() {
    fuzz(
        "push notification, structured (the real document mutated)",
        mutations(&NOTIFICATION, NOTIFICATION_READS),
        |mutations| {
            let mut document = NOTIFICATION.clone();
            let changed: Vec<bool> = mutations.iter().map(|m| apply(&mut document, m)).collect();
            let body = document.to_string();
            let parsed = ProductNotification::parse(body.as_bytes());
            tally_notification(&parsed);
            if let Err(error) = &parsed {
                notification_error_is_clear(error)?;
            }
            if let Ok(ProductNotification::Created(granule)) = &parsed {
                // Only a valid granule comes out: it fits the table the downloader reads.
                prop_assert!(!granule.id.is_empty() && granule.id.chars().count() <= 256);
                prop_assert!(granule.filename.chars().count() <= 256);
                prop_assert!(granule.download_url.chars().count() <= 256);
                prop_assert!(granule.size >= 0);
                prop_assert!(hls_core::domain::granule::is_tile_id(&granule.tile_id));
            }
            // One field removed or retyped: exactly what that field calls for.
            if let ([mutation], [true]) = (&mutations[..], &changed[..]) {
                let replacement = match &mutation.op {
                    Op::Remove => None,
                    Op::Retype(value) => Some(value),
                    _ => return Ok(()),
                };
                match notification_expectation(&mutation.pointer, replacement) {
                    Expect::Error(start) => match &parsed {
                        Err(error) => prop_assert!(
                            error.to_string().starts_with(&start),
                            "{mutation:?}: {error} (expected {start:?}…)"
                        ),
                        Ok(ok) => {
                            return Err(TestCaseError::fail(format!(
                                "{mutation:?}: {ok:?}, expected {start:?}"
                            )));
                        }
                    },
                    expect @ (Expect::Same | Expect::SameButChecksum) => match &parsed {
                        Ok(ProductNotification::Created(granule)) => {
                            same_granule(granule, matches!(expect, Expect::SameButChecksum))?
                        }
                        other => {
                            return Err(TestCaseError::fail(format!(
                                "{mutation:?}: {other:?}, expected the same granule"
                            )));
                        }
                    },
                }
            }
            Ok(())
        },
    );
}

#[test]
fn notifications_raw_bytes() {
    fuzz(
        "push notification, raw bytes",
        raw_bytes(NOTIFICATION.to_string().into_bytes()),
        |bytes| {
            let parsed = ProductNotification::parse(&bytes);
            tally_notification(&parsed);
            match parsed {
                Err(error) => notification_error_is_clear(&error)?,
                Ok(notification) => {
                    prop_assert!(!notification.product_id().is_empty());
                    prop_assert!(notification.product_id().chars().count() <= 256);
                }
            }
            Ok(())
        },
    );
}

// ---------------------------------------------------------------- catalogue pages

/// The real page, with the count the first request of a day asks for.
static PAGE: LazyLock<Value> = LazyLock::new(|| {
    let mut page = fixtures::odata_page();
    page["@odata.count"] = 2.into();
    page
});

static PAGE_GRANULES: LazyLock<Vec<Granule>> = LazyLock::new(|| {
    let page = parse_page(PAGE.to_string().as_bytes()).expect("the real page parses");
    page.products
        .into_iter()
        .map(|p| p.granule.expect("the real products are valid"))
        .collect()
});

const PAGE_READS: &[&str] = &[
    "/value",
    "/@odata.count",
    "/value/0",
    "/value/1",
    "/value/0/Id",
    "/value/0/Name",
    "/value/0/ContentLength",
    "/value/0/PublicationDate",
    "/value/0/ContentDate",
    "/value/0/ContentDate/Start",
    "/value/0/ContentDate/End",
    "/value/0/Checksum",
    "/value/0/Checksum/0/Value",
    "/value/0/Attributes",
    "/value/1/Id",
    "/value/1/Name",
    "/value/1/ContentLength",
    "/value/1/PublicationDate",
    "/value/1/ContentDate/Start",
];

/// What one removed or retyped field of a page product must be rejected with.
fn product_expectation(field: &str, replacement: Option<&Value>) -> Option<String> {
    let null = replacement.is_none_or(Value::is_null);
    let reason = match field {
        "" if replacement.is_some() => "is not a JSON object".to_owned(),
        "Id" | "Name" | "PublicationDate" if null => format!("{field} is missing"),
        "Id" | "Name" | "PublicationDate" => format!("{field} "),
        "ContentLength" if replacement.is_none() => "ContentLength is missing".into(),
        "ContentLength" => "ContentLength ".into(),
        "ContentDate" => "ContentDate is missing".into(),
        "ContentDate/Start" | "ContentDate/End" if null => format!("{field} is missing"),
        "ContentDate/Start" | "ContentDate/End" => format!("{field} "),
        _ => return None,
    };
    Some(reason)
}

#[test]
fn catalogue_pages_structured() {
    fuzz(
        "catalogue page, structured (the real page mutated)",
        mutations(&PAGE, PAGE_READS),
        |mutations| {
            let mut document = PAGE.clone();
            let changed: Vec<bool> = mutations.iter().map(|m| apply(&mut document, m)).collect();
            let parsed = parse_page(document.to_string().as_bytes());
            tally_page(&parsed);
            match &parsed {
                Err(error) => {
                    let message = error.to_string();
                    clear(&message, 2_000)?;
                    prop_assert!(message.starts_with("catalogue page is not the expected JSON: "));
                }
                Ok(page) => {
                    for product in &page.products {
                        prop_assert!(product.id.chars().count() <= 81, "{:?}", product.id);
                        if let Err(reason) = &product.granule {
                            clear(reason, 300)?;
                        }
                    }
                }
            }
            let ([mutation], [true]) = (&mutations[..], &changed[..]) else {
                return Ok(());
            };
            let replacement = match &mutation.op {
                Op::Remove => None,
                Op::Retype(value) => Some(value),
                _ => return Ok(()),
            };
            let pointer = mutation.pointer.as_str();
            if pointer == "/value"
                || (pointer == "/@odata.count"
                    && !replacement.is_none_or(|v| v.is_null() || v.is_i64()))
            {
                let error = parsed
                    .as_ref()
                    .err()
                    .map(ToString::to_string)
                    .unwrap_or_default();
                let expected = if pointer == "/value" {
                    "no \"value\" array"
                } else {
                    "@odata.count "
                };
                prop_assert!(
                    error.contains(expected),
                    "{mutation:?}: {parsed:?}, expected an error with {expected:?}"
                );
                return Ok(());
            }
            let page = parsed.map_err(|e| TestCaseError::fail(format!("{mutation:?}: {e}")))?;
            let Some(rest) = pointer.strip_prefix("/value/") else {
                // A page-level field the parser does not read: the same products.
                let granules: Vec<Granule> = page
                    .products
                    .iter()
                    .filter_map(|p| p.granule.clone().ok())
                    .collect();
                prop_assert_eq!(&granules, &*PAGE_GRANULES);
                return Ok(());
            };
            let (index, field) = rest.split_once('/').unwrap_or((rest, ""));
            let index: usize = index.parse().unwrap();
            if field.is_empty() && replacement.is_none() {
                // A product removed: the other one is still read as before.
                prop_assert_eq!(page.products.len(), 1);
                prop_assert_eq!(
                    page.products[0].granule.as_ref().ok(),
                    Some(&PAGE_GRANULES[1 - index])
                );
                return Ok(());
            }
            prop_assert_eq!(page.products.len(), 2);
            // The other product is untouched.
            prop_assert_eq!(
                page.products[1 - index].granule.as_ref().ok(),
                Some(&PAGE_GRANULES[1 - index])
            );
            let product = &page.products[index];
            match product_expectation(field, replacement) {
                Some(start) => {
                    let reason = product.granule.as_ref().err();
                    prop_assert!(
                        reason.is_some_and(|r| r.starts_with(&start)),
                        "{mutation:?}: {:?}, expected a rejection starting {start:?}",
                        product.granule
                    );
                    if field == "Id" {
                        prop_assert_eq!(&product.id, &format!("<product {index} without Id>"));
                    }
                }
                None => {
                    let mut granule = product
                        .granule
                        .clone()
                        .map_err(|e| TestCaseError::fail(format!("{mutation:?}: rejected: {e}")))?;
                    if field.starts_with("Checksum") && granule.checksum.is_none() {
                        granule.checksum = PAGE_GRANULES[index].checksum.clone();
                    }
                    prop_assert_eq!(&granule, &PAGE_GRANULES[index], "{:?}", mutation);
                }
            }
            Ok(())
        },
    );
}

#[test]
fn catalogue_pages_raw_bytes() {
    fuzz(
        "catalogue page, raw bytes",
        raw_bytes(PAGE.to_string().into_bytes()),
        |bytes| {
            let parsed = parse_page(&bytes);
            tally_page(&parsed);
            match parsed {
                Err(error) => {
                    let message = error.to_string();
                    clear(&message, 2_000)?;
                    prop_assert!(message.starts_with("catalogue page is not the expected JSON: "));
                }
                Ok(page) => {
                    for product in &page.products {
                        prop_assert!(product.id.chars().count() <= 81);
                        if let Err(reason) = &product.granule {
                            clear(reason, 300)?;
                        }
                    }
                }
            }
            Ok(())
        },
    );
}

// ---------------------------------------------------------------- Basic auth

const USERNAME: &str = "esa-notifications";
const PASSWORD: &str = "s3cr:et ✓ pässword?>";

fn credentials() -> Credentials {
    Credentials::new(USERNAME, &Password::new(PASSWORD)).unwrap()
}

/// The router over a database and a queue that are never reached: an
/// unauthorised request is answered before either, and an authorised one with
/// an empty body is a 400 before either.
fn offline_router() -> axum::Router {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .acquire_timeout(std::time::Duration::from_millis(50))
        .connect_lazy("postgres://nobody@127.0.0.1:1/none")
        .unwrap();
    let sqs = aws_sdk_sqs::Client::from_conf(
        aws_sdk_sqs::Config::builder()
            .behavior_version(aws_sdk_sqs::config::BehaviorVersion::latest())
            .region(aws_sdk_sqs::config::Region::new("us-east-1"))
            .endpoint_url("http://127.0.0.1:1")
            .build(),
    );
    router(std::sync::Arc::new(Subscription {
        credentials: credentials(),
        handoff: Handoff::new(
            GranuleStore::new(pool),
            SqsQueue::new(sqs, "http://127.0.0.1:1/123456789012/none", 1),
            std::time::Duration::from_secs(1),
        ),
        tiles: TileSet::built_in(),
        max_acquisition_age: chrono::Duration::days(30),
    }))
}

/// `authorise` and the router agree: 401 with `WWW-Authenticate: Basic` and a
/// JSON error when not authorised, the body's turn (400 for an empty one) when
/// authorised.
fn answer_agrees(
    runtime: &tokio::runtime::Runtime,
    router: &axum::Router,
    value: Option<&HeaderValue>,
    authorised: bool,
) -> Result<(), TestCaseError> {
    let mut request = Request::post("/events");
    if let Some(value) = value {
        request = request.header(header::AUTHORIZATION, value.clone());
    }
    let request = request.body(Body::empty()).unwrap();
    let (status, headers, body) = runtime.block_on(async {
        let response = router.clone().oneshot(request).await.unwrap();
        let (parts, body) = response.into_parts();
        let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
        (parts.status, parts.headers, body)
    });
    if authorised {
        prop_assert_eq!(status, StatusCode::BAD_REQUEST);
    } else {
        prop_assert_eq!(status, StatusCode::UNAUTHORIZED);
        let challenge = headers
            .get(header::WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        prop_assert!(challenge.starts_with("Basic realm="), "{challenge:?}");
        let error: Value = serde_json::from_slice(&body).unwrap();
        prop_assert_eq!(&error, &json!({"error": "unauthorised"}));
    }
    Ok(())
}

#[derive(Debug, Clone)]
enum Encoding {
    Standard,
    NoPadding,
    UrlSafe,
    /// A space or tab inside the base64.
    Spaced(usize),
}

/// Header values built the way clients build them, right and wrong: the
/// scheme in any case or another scheme, spaces around, the credentials
/// right, near-right (a prefix, a suffix, another case, the colon moved) or
/// anything, encoded in standard base64 or not.
fn basic_headers() -> impl Strategy<Value = (String, Vec<u8>)> {
    let scheme = prop_oneof![
        4 => prop::sample::select(vec!["Basic", "basic", "BASIC", "bAsIc"]),
        1 => prop::sample::select(vec!["Bearer", "Digest", "Basi", "Basicx", "", "Basic:"]),
    ];
    let right = format!("{USERNAME}:{PASSWORD}");
    let user_password = prop_oneof![
        4 => Just(right.clone().into_bytes()),
        1 => (0..right.len()).prop_map({
            let right = right.clone();
            move |n| right.as_bytes()[..n].to_vec()
        }),
        1 => any::<u8>().prop_map({
            let right = right.clone();
            move |b| { let mut v = right.clone().into_bytes(); v.push(b); v }
        }),
        1 => Just(format!("{}:{PASSWORD}", USERNAME.to_uppercase()).into_bytes()),
        1 => Just(format!("{USERNAME}{PASSWORD}").into_bytes()),
        1 => Just(format!("{USERNAME}:{PASSWORD}:").into_bytes()),
        1 => Just(format!(":{USERNAME}:{PASSWORD}").into_bytes()),
        2 => ("\\PC{0,40}", "\\PC{0,40}").prop_map(|(u, p)| format!("{u}:{p}").into_bytes()),
        1 => prop::collection::vec(any::<u8>(), 0..64),
    ];
    let encoding = prop_oneof![
        4 => Just(Encoding::Standard),
        1 => Just(Encoding::NoPadding),
        1 => Just(Encoding::UrlSafe),
        1 => (0usize..64).prop_map(Encoding::Spaced),
    ];
    (scheme, 0usize..4, user_password, encoding, 0usize..3).prop_map(
        |(scheme, spaces, user_password, encoding, trailing)| {
            let mut encoded = match &encoding {
                Encoding::Standard | Encoding::Spaced(_) => STANDARD.encode(&user_password),
                Encoding::NoPadding => STANDARD_NO_PAD.encode(&user_password),
                Encoding::UrlSafe => URL_SAFE.encode(&user_password),
            };
            if let Encoding::Spaced(at) = encoding
                && !encoded.is_empty()
            {
                let at = at % encoded.len();
                encoded.insert(at, if at % 2 == 0 { ' ' } else { '\t' });
            }
            let value = format!(
                "{scheme}{}{encoded}{}",
                " ".repeat(spaces),
                " ".repeat(trailing)
            );
            (value, user_password)
        },
    )
}

#[test]
fn basic_auth_structured() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // The lazy pool's upkeep task needs a runtime to be spawned on.
    let router = {
        let _runtime = runtime.enter();
        offline_router()
    };
    let credentials = credentials();
    let right = format!("{USERNAME}:{PASSWORD}").into_bytes();
    fuzz(
        "Basic auth header, structured",
        basic_headers(),
        |(value, user_password)| {
            let Ok(header_value) = HeaderValue::from_str(&value) else {
                tally("not a header value");
                return Ok(());
            };
            let mut headers = HeaderMap::new();
            headers.insert(header::AUTHORIZATION, header_value.clone());
            let authorised = credentials.authorise(&headers);
            tally(if authorised { "authorised" } else { "refused" });
            // RFC 7617: "Basic" in any case, then the standard base64 of
            // exactly user:password (surrounding spaces are tolerated).
            let (scheme, rest) = value.trim().split_once(' ').unwrap_or((value.trim(), ""));
            let expected = scheme.eq_ignore_ascii_case("basic")
                && STANDARD
                    .decode(rest.trim())
                    .is_ok_and(|decoded| decoded == right)
                && user_password == right;
            prop_assert_eq!(authorised, expected, "{:?}", value);
            answer_agrees(&runtime, &router, Some(&header_value), authorised)
        },
    );
}

#[test]
fn basic_auth_raw_bytes() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // The lazy pool's upkeep task needs a runtime to be spawned on.
    let router = {
        let _runtime = runtime.enter();
        offline_router()
    };
    let credentials = credentials();
    // A header value may hold visible ASCII, spaces, tabs and bytes from 0x80.
    let header_byte = prop_oneof![8 => 0x20u8..0x7f, 2 => 0x80u8..=0xff, 1 => Just(b'\t')];
    let value = prop_oneof![
        prop::collection::vec(header_byte.clone(), 0..256),
        prop::collection::vec(header_byte, 0..128)
            .prop_map(|b| [b"Basic ".as_slice(), &b].concat()),
        prop::collection::vec(any::<u8>(), 0..256),
        prop::collection::vec(any::<u8>(), 0..128)
            .prop_map(|b| [b"Basic ".as_slice(), &b].concat()),
        prop::collection::vec(any::<u8>(), 0..128).prop_map(|b| format!(
            "Basic {}",
            STANDARD.encode(b)
        )
        .into_bytes()),
    ];
    fuzz("Basic auth header, raw bytes", value, |bytes| {
        // Bytes a header cannot hold (CR, LF, NUL) never reach the handler.
        let header_value = HeaderValue::from_bytes(&bytes).ok();
        let mut headers = HeaderMap::new();
        if let Some(value) = &header_value {
            headers.insert(header::AUTHORIZATION, value.clone());
        }
        let authorised = credentials.authorise(&headers);
        tally(match &header_value {
            Some(_) => "refused",
            None => "no header (not a header value)",
        });
        prop_assert!(
            !authorised,
            "{:?} authorised",
            String::from_utf8_lossy(&bytes)
        );
        answer_agrees(&runtime, &router, header_value.as_ref(), authorised)
    });
}
