//! A CDSE Subscriptions push notification: one POST per product event
//! (docs/cdse-catalogue.md, "Push notifications").
//!
//! The body is hostile input. It is read into typed fields (the `value` entity
//! with the same [`Product`] reader as catalogue pages) and checked field by
//! field, so an error names the path of what is missing or wrong
//! (`value.ContentDate.Start: missing`) and unknown fields are ignored.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::domain::granule::{Granule, InvalidGranule, ProductFields, tile_id_from_name};
use crate::domain::product::{
    self, Field, FieldError, Integer, Location, Product, Text, download_url, object_form,
    parse_timestamp,
};
use crate::domain::text::short;

/// A notification, reduced to what the handler acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProductNotification {
    /// A new product, validated.
    Created(Granule),
    /// An event we do not process (`modified`, `deleted`, or one CDSE adds later).
    Ignored {
        event: SubscriptionEvent,
        product_id: String,
    },
}

/// `SubscriptionEvent` of a notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubscriptionEvent {
    Created,
    Modified,
    Deleted,
    Other(String),
}

impl SubscriptionEvent {
    fn parse(value: &str) -> Self {
        match value.to_ascii_lowercase().as_str() {
            "created" => Self::Created,
            "modified" => Self::Modified,
            "deleted" => Self::Deleted,
            _ => Self::Other(short(value, 40)),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Self::Created => "created",
            Self::Modified => "modified",
            Self::Deleted => "deleted",
            Self::Other(other) => other,
        }
    }
}

impl std::fmt::Display for SubscriptionEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a notification cannot be used; `product_id` when it could be read, for the log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{problem}")]
pub struct NotificationError {
    pub product_id: Option<String>,
    pub problem: Problem,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    #[error("body is not JSON: {0}")]
    NotJson(String),
    #[error("{path}: missing")]
    Missing { path: String },
    #[error("{path}: expected {expected}, found {found}")]
    WrongType {
        path: String,
        expected: &'static str,
        found: &'static str,
    },
    #[error("{path}: {value:?} is not a timestamp")]
    BadTimestamp { path: String, value: String },
    #[error("value.Locations: {count} Extracted entries, expected 1")]
    ExtractedCount { count: usize },
    #[error("value: {0}")]
    InvalidProduct(InvalidGranule),
    /// JSON that the reader refused as it stands, e.g. a key given twice.
    #[error(transparent)]
    Refused(FieldError),
}

/// The fields of a notification the handler reads.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(default, rename_all = "PascalCase")]
struct Body<'a> {
    #[serde(borrow)]
    subscription_event: Text<'a>,
    #[serde(borrow)]
    product_id: Text<'a>,
    #[serde(borrow)]
    product_name: Text<'a>,
    #[serde(borrow, rename = "value")]
    value: Field<Product<'a>>,
}

object_form!(Body);

impl ProductNotification {
    /// Parses a notification body. Only `created` notifications need a product;
    /// the others need their event and product id.
    pub fn parse(body: &[u8]) -> Result<Self, NotificationError> {
        let fail = |problem| NotificationError {
            product_id: None,
            problem,
        };
        let text = std::str::from_utf8(body).map_err(|_| fail(not_utf8(body)))?;
        let root = product::read(text, "notification").map_err(|e| {
            fail(if e.syntax {
                Problem::NotJson(e.message)
            } else {
                Problem::Refused(e)
            })
        })?;
        Self::from_body(&root)
    }

    /// The same as [`Self::parse`], from JSON already parsed.
    pub fn from_json(json: &Value) -> Result<Self, NotificationError> {
        let root = Field::deserialize(json).map_err(|e| NotificationError {
            product_id: None,
            problem: Problem::NotJson(e.to_string()),
        })?;
        Self::from_body(&root)
    }

    fn from_body(root: &Field<Body<'_>>) -> Result<Self, NotificationError> {
        let fail = |product_id: Option<&str>, problem| NotificationError {
            product_id: product_id.map(|id| short(id, 80)),
            problem,
        };
        let root = match root {
            Field::Expected(root) => root,
            other => return Err(fail(None, wrong_type("notification", "an object", other))),
        };
        // `ProductId` is in every notification SUB documents; the product's `Id` is the fallback.
        let product_id =
            match optional_str(&root.product_id, "ProductId").map_err(|p| fail(None, p))? {
                Some(id) => Some(id),
                None => match &root.value {
                    Field::Expected(product) => {
                        optional_str(&product.id, "value.Id").map_err(|p| fail(None, p))?
                    }
                    _ => None,
                },
            };
        let event = required_str(&root.subscription_event, "SubscriptionEvent")
            .map(SubscriptionEvent::parse)
            .map_err(|p| fail(product_id, p))?;
        let Some(product_id) = product_id else {
            return Err(fail(None, missing("ProductId")));
        };
        if event != SubscriptionEvent::Created {
            return Ok(Self::Ignored {
                event,
                product_id: short(product_id, 80),
            });
        }
        if let Field::Missing = root.value {
            return Err(fail(Some(product_id), missing("value")));
        }
        let product_name = optional_str(&root.product_name, "ProductName")
            .map_err(|p| fail(Some(product_id), p))?;
        parse_product(&root.value, product_id, product_name)
            .map(Self::Created)
            .map_err(|p| fail(Some(product_id), p))
    }

    pub fn product_id(&self) -> &str {
        match self {
            Self::Created(granule) => &granule.id,
            Self::Ignored { product_id, .. } => product_id,
        }
    }
}

/// The message of a body that is not UTF-8, as the JSON parser words it.
fn not_utf8(body: &[u8]) -> Problem {
    Problem::NotJson(match serde_json::from_slice::<Value>(body) {
        Err(e) => e.to_string(),
        Ok(_) => "invalid UTF-8".to_owned(),
    })
}

/// The product a synthetic notification is about.
#[derive(Debug, Clone, Copy)]
pub struct NotifiedProduct<'a> {
    pub id: &'a str,
    /// A Sentinel-2 product name; its tile and platform are written into the attributes.
    pub name: &'a str,
    pub published: DateTime<Utc>,
    pub acquired: DateTime<Utc>,
}

/// Turns a real `created` notification into one about another product: ids,
/// name, dates, paths and download links change; everything else keeps the
/// real shape. `subscription test` builds its notification this way, and so do
/// the tests.
pub fn readdress_created(
    notification: &mut Value,
    product: &NotifiedProduct<'_>,
    notified_at: DateTime<Utc>,
) {
    let timestamp =
        |at: DateTime<Utc>| Value::from(at.to_rfc3339_opts(SecondsFormat::Micros, true));
    let s3_path = format!(
        "/eodata/Sentinel-2/MSI/L1C/{}/{}",
        product.acquired.format("%Y/%m/%d"),
        product.name
    );
    let download_link = download_url(product.id);
    notification["ProductId"] = product.id.into();
    notification["ProductName"] = product.name.into();
    notification["NotificationDate"] = timestamp(notified_at);
    let entity = &mut notification["value"];
    entity["Id"] = product.id.into();
    entity["Name"] = product.name.into();
    for key in ["OriginDate", "PublicationDate", "ModificationDate"] {
        entity[key] = timestamp(product.published);
    }
    entity["ContentDate"] = json!({
        "Start": timestamp(product.acquired),
        "End": timestamp(product.acquired),
    });
    entity["S3Path"] = s3_path.clone().into();
    if let Some(locations) = entity["Locations"].as_array_mut() {
        for location in locations {
            location["DownloadLink"] = download_link.clone().into();
            location["S3Path"] = s3_path.clone().into();
        }
    }
    let tile = tile_id_from_name(product.name);
    let platform = product.name.get(2..3);
    if let Some(attributes) = entity["Attributes"].as_array_mut() {
        for attribute in attributes {
            let value = match attribute["Name"].as_str() {
                Some("beginningDateTime" | "endingDateTime") => timestamp(product.acquired),
                Some("tileId") => tile.map_or(Value::Null, Value::from),
                Some("platformSerialIdentifier") => platform.map_or(Value::Null, Value::from),
                _ => continue,
            };
            attribute["Value"] = value;
        }
    }
}

/// The `value` of a `created` notification: a Products entity with its
/// Attributes and Locations expanded.
fn parse_product(
    value: &Field<Product<'_>>,
    product_id: &str,
    product_name: Option<&str>,
) -> Result<Granule, Problem> {
    let product = match value {
        Field::Expected(product) => product,
        other => return Err(wrong_type("value", "an object", other)),
    };
    let id = optional_str(&product.id, "value.Id")?.unwrap_or(product_id);
    let name = match optional_str(&product.name, "value.Name")? {
        Some(name) => name,
        None => product_name.ok_or_else(|| missing("value.Name"))?,
    };
    let content_date = match &product.content_date {
        Field::Expected(content_date) => content_date,
        Field::Missing => return Err(missing("value.ContentDate")),
        other => return Err(wrong_type("value.ContentDate", "an object", other)),
    };
    let begin_position = timestamp(&content_date.start, "value.ContentDate.Start")?;
    let end_position = timestamp(&content_date.end, "value.ContentDate.End")?;
    let ingestion_date = timestamp(&product.publication_date, "value.PublicationDate")?;

    match &product.locations {
        Field::Expected(_) => {}
        absent if absent.is_absent() => return Err(missing("value.Locations")),
        other => return Err(wrong_type("value.Locations", "an array", other)),
    }
    let extracted: Vec<(usize, &Location)> = product
        .locations()
        .filter(|(_, location)| {
            location
                .format_type
                .as_str()
                .is_some_and(|format| format.eq_ignore_ascii_case("Extracted"))
        })
        .collect();
    let [(index, location)] = extracted[..] else {
        return Err(Problem::ExtractedCount {
            count: extracted.len(),
        });
    };
    let prefix = format!("value.Locations[{index}].");
    let download_url = required_str(&location.download_link, &format!("{prefix}DownloadLink"))?;
    // The location's length is the download's; the product's is the fallback.
    let size = match integer(&location.content_length, &format!("{prefix}ContentLength"))? {
        Some(size) => size,
        None => integer(&product.content_length, "value.ContentLength")?
            .ok_or_else(|| missing(&format!("{prefix}ContentLength")))?,
    };

    Granule::parse(ProductFields {
        id,
        name,
        tile_id_attribute: product.tile_id_attribute(),
        size,
        begin_position,
        end_position,
        ingestion_date,
        download_url,
        checksum: location.md5_checksum(),
    })
    .map_err(Problem::InvalidProduct)
}

fn timestamp(field: &Text<'_>, path: &str) -> Result<DateTime<Utc>, Problem> {
    let text = required_str(field, path)?;
    parse_timestamp(text).ok_or_else(|| Problem::BadTimestamp {
        path: path.to_owned(),
        value: short(text, 80),
    })
}

fn integer(field: &Integer, path: &str) -> Result<Option<i64>, Problem> {
    match field {
        Field::Expected(n) => Ok(Some(*n)),
        absent if absent.is_absent() => Ok(None),
        other => Err(wrong_type(path, "an integer", other)),
    }
}

fn required_str<'a>(field: &'a Text<'_>, path: &str) -> Result<&'a str, Problem> {
    optional_str(field, path)?.ok_or_else(|| missing(path))
}

/// A string field; absent, null and empty all count as missing.
fn optional_str<'a>(field: &'a Text<'_>, path: &str) -> Result<Option<&'a str>, Problem> {
    match field {
        Field::Expected(s) if s.is_empty() => Ok(None),
        Field::Expected(s) => Ok(Some(s)),
        absent if absent.is_absent() => Ok(None),
        other => Err(wrong_type(path, "a string", other)),
    }
}

fn missing(path: &str) -> Problem {
    Problem::Missing { path: path.into() }
}

/// A value of the wrong type; nothing at all is missing.
fn wrong_type<T>(path: &str, expected: &'static str, found: &Field<T>) -> Problem {
    let Field::Other(found) = found else {
        return missing(path);
    };
    let found = match found {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_f64() => "a fractional number",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    };
    Problem::WrongType {
        path: path.into(),
        expected,
        found,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn fixture(name: &str) -> Value {
        let path = format!(
            "{}/../../tests/fixtures/cdse-push-{name}.json",
            env!("CARGO_MANIFEST_DIR")
        );
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
    }

    fn parse(json: &Value) -> Result<ProductNotification, NotificationError> {
        ProductNotification::parse(json.to_string().as_bytes())
    }

    fn problem(json: &Value) -> String {
        parse(json).unwrap_err().to_string()
    }

    #[test]
    fn the_real_created_notification_gives_its_granule() {
        let ProductNotification::Created(granule) = parse(&fixture("created")).unwrap() else {
            panic!("not created");
        };
        let t = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
        assert_eq!(
            granule,
            Granule {
                id: "f867a59a-9336-46d0-93ae-e55bf29403f8".into(),
                filename: "S2A_MSIL1C_20240912T112541_N0511_R137_T28PHQ_20240912T133420.SAFE"
                    .into(),
                tile_id: "28PHQ".into(),
                size: 132384463,
                begin_position: t("2024-09-12T11:25:41.024Z"),
                end_position: t("2024-09-12T11:25:41.024Z"),
                ingestion_date: t("2024-09-12T14:52:06.118Z"),
                download_url: "https://catalogue.dataspace.copernicus.eu/odata/v1/Products(f867a59a-9336-46d0-93ae-e55bf29403f8)/$value".into(),
                checksum: Some("700a3f2014ab3670408b94e4310924dd".into()),
            }
        );
    }

    #[test]
    fn a_readdressed_notification_is_about_the_new_product_only() {
        let t = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
        let name = "S2C_MSIL1C_20261128T101010_N0511_R022_T33UUP_20261128T101010.SAFE";
        let product = NotifiedProduct {
            id: "0f0e0d0c-0000-4000-8000-000000000001",
            name,
            published: t("2026-11-28T11:00:00.123456Z"),
            acquired: t("2026-11-28T10:10:10Z"),
        };
        let mut notification = fixture("created");
        readdress_created(&mut notification, &product, t("2026-11-28T11:00:01Z"));
        let ProductNotification::Created(granule) = parse(&notification).unwrap() else {
            panic!("not created");
        };
        assert_eq!(granule.id, product.id);
        assert_eq!(granule.filename, name);
        assert_eq!(granule.tile_id, "33UUP");
        assert_eq!(granule.begin_position, product.acquired);
        assert_eq!(granule.ingestion_date, product.published);
        assert_eq!(
            granule.download_url,
            format!(
                "https://catalogue.dataspace.copernicus.eu/odata/v1/Products({})/$value",
                product.id
            )
        );
        let text = notification.to_string();
        // The old id and acquisition time are gone (lineage attributes keep theirs).
        for old in ["f867a59a", "2024-09-12T11:25:41"] {
            assert!(!text.contains(old), "{old} is still in the notification");
        }
        let attribute = |name: &str| {
            notification["value"]["Attributes"]
                .as_array()
                .unwrap()
                .iter()
                .find(|a| a["Name"] == name)
                .unwrap()["Value"]
                .clone()
        };
        assert_eq!(attribute("platformSerialIdentifier"), "C");
        assert_eq!(attribute("tileId"), "33UUP");
    }

    #[test]
    fn modified_and_deleted_are_ignored_with_their_product_id() {
        assert_eq!(
            parse(&fixture("modified")).unwrap(),
            ProductNotification::Ignored {
                event: SubscriptionEvent::Modified,
                product_id: "b6801a5d-0e66-43d7-afac-1280f0895bf1".into()
            }
        );
        let deleted = parse(&fixture("deleted")).unwrap();
        assert_eq!(deleted.product_id(), "232d796a-0552-4679-a1ed-b8cd3d002db2");
        assert!(matches!(
            deleted,
            ProductNotification::Ignored {
                event: SubscriptionEvent::Deleted,
                ..
            }
        ));
        let mut other = fixture("created");
        other["SubscriptionEvent"] = "archived".into();
        assert!(matches!(
            parse(&other).unwrap(),
            ProductNotification::Ignored { event: SubscriptionEvent::Other(e), .. } if e == "archived"
        ));
    }

    #[test]
    fn no_checksum_is_not_an_error() {
        let mut json = fixture("created");
        json["value"]["Locations"][0]
            .as_object_mut()
            .unwrap()
            .remove("Checksum");
        let ProductNotification::Created(granule) = parse(&json).unwrap() else {
            panic!()
        };
        assert_eq!(granule.checksum, None);
        json["value"]["Locations"][0]["Checksum"] =
            serde_json::json!([{"Algorithm": "BLAKE3", "Value": "ab"}]);
        let ProductNotification::Created(granule) = parse(&json).unwrap() else {
            panic!()
        };
        assert_eq!(granule.checksum, None);
    }

    #[test]
    fn tile_id_attribute_is_the_fallback_for_the_name() {
        let mut json = fixture("created");
        json["value"]["Name"] = "S2A_MSIL1C_without_tile.SAFE".into();
        let ProductNotification::Created(granule) = parse(&json).unwrap() else {
            panic!()
        };
        assert_eq!(granule.tile_id, "28PHQ");
    }

    #[test]
    fn timestamps_are_read_leniently() {
        let expected = "2024-09-12T11:25:41.024Z".parse::<DateTime<Utc>>().unwrap();
        for text in [
            "2024-09-12T11:25:41.024Z",
            "2024-09-12T11:25:41.024000Z",
            "2024-09-12T11:25:41.024+00:00",
            "2024-09-12T11:25:41.024000+00:00",
            "2024-09-12T11:25:41.024",
            "2024-09-12T11:25:41.024000",
            "2024-09-12 11:25:41.024",
        ] {
            assert_eq!(parse_timestamp(text), Some(expected), "{text}");
        }
        assert_eq!(
            parse_timestamp("2024-09-12T13:25:41.024+02:00"),
            Some(expected)
        );
        assert_eq!(parse_timestamp("2024-09-12"), None);
        assert_eq!(parse_timestamp("yesterday"), None);
    }

    #[test]
    fn errors_name_what_is_missing_or_wrong() {
        let created = fixture("created");
        let with = |edit: &dyn Fn(&mut Value)| {
            let mut json = created.clone();
            edit(&mut json);
            problem(&json)
        };
        assert_eq!(
            with(&|j| {
                j.as_object_mut().unwrap().remove("value");
            }),
            "value: missing"
        );
        assert_eq!(
            with(&|j| {
                j["value"]["ContentDate"]
                    .as_object_mut()
                    .unwrap()
                    .remove("Start");
            }),
            "value.ContentDate.Start: missing"
        );
        assert_eq!(
            with(&|j| j["value"]["ContentDate"]["End"] = "soon".into()),
            "value.ContentDate.End: \"soon\" is not a timestamp"
        );
        assert_eq!(
            with(&|j| j["value"]["PublicationDate"] = 5.into()),
            "value.PublicationDate: expected a string, found a number"
        );
        assert_eq!(
            with(&|j| {
                let location = j["value"]["Locations"][0].clone();
                j["value"]["Locations"]
                    .as_array_mut()
                    .unwrap()
                    .push(location);
            }),
            "value.Locations: 2 Extracted entries, expected 1"
        );
        assert_eq!(
            with(&|j| j["value"]["Locations"][0]["FormatType"] = "Compressed".into()),
            "value.Locations: 0 Extracted entries, expected 1"
        );
        assert_eq!(
            with(&|j| j["value"]["Locations"] = serde_json::json!({})),
            "value.Locations: expected an array, found an object"
        );
        assert_eq!(
            with(&|j| {
                j["value"]["Locations"][0]
                    .as_object_mut()
                    .unwrap()
                    .remove("DownloadLink");
            }),
            "value.Locations[0].DownloadLink: missing"
        );
        assert_eq!(
            with(&|j| j["value"]["Locations"][0]["ContentLength"] = "big".into()),
            "value.Locations[0].ContentLength: expected an integer, found a string"
        );
        assert_eq!(
            with(&|j| {
                j["value"]["Name"] = "no tile".into();
                j["value"]["Attributes"] = Value::Null;
            }),
            "value: no MGRS tile id in product name \"no tile\" and no tileId attribute"
        );
        assert_eq!(
            with(&|j| {
                j.as_object_mut().unwrap().remove("SubscriptionEvent");
            }),
            "SubscriptionEvent: missing"
        );
        assert_eq!(
            with(&|j| {
                j.as_object_mut().unwrap().remove("ProductId");
                j["value"].as_object_mut().unwrap().remove("Id");
            }),
            "ProductId: missing"
        );
        assert_eq!(
            problem(&serde_json::json!([1, 2])),
            "notification: expected an object, found an array"
        );
        let cut = created.to_string();
        let err = ProductNotification::parse(&cut.as_bytes()[..cut.len() / 2]).unwrap_err();
        assert!(matches!(err.problem, Problem::NotJson(_)), "{err}");
        // The product id is kept for the log even when the product is invalid.
        let mut json = created.clone();
        json["value"]["Locations"] = serde_json::json!([]);
        assert_eq!(
            parse(&json).unwrap_err().product_id.as_deref(),
            Some("f867a59a-9336-46d0-93ae-e55bf29403f8")
        );
    }

    #[test]
    fn what_serde_refuses_is_named_by_its_path() {
        let body = fixture("created").to_string();
        // `key` given a second time just after `after`.
        let twice = |key: &str, after: &str| {
            let i = body.find(after).unwrap() + after.len();
            format!("{}\"{key}\":\"x\",{}", &body[..i], &body[i..])
        };
        let error =
            ProductNotification::parse(twice("DownloadLink", "\"Locations\":[{").as_bytes())
                .unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("value.Locations[0]: duplicate field `DownloadLink`"),
            "{error}"
        );
        assert!(matches!(error.problem, Problem::Refused(_)));
        let error = ProductNotification::parse(twice("ProductId", "{").as_bytes()).unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("notification: duplicate field `ProductId`"),
            "{error}"
        );
        let error = ProductNotification::parse(b"{\"value\": \"\xff\"}").unwrap_err();
        assert!(matches!(error.problem, Problem::NotJson(_)), "{error}");
    }

    fn arbitrary_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            ".{0,20}".prop_map(Value::from),
            prop_oneof![
                Just("created"),
                Just("Extracted"),
                Just("MD5"),
                Just("2024-09-12T11:25:41.024Z"),
                Just("S2A_X_T28PHQ_Y"),
            ]
            .prop_map(Value::from),
        ];
        let keys = prop_oneof![
            Just("SubscriptionEvent".to_owned()),
            Just("ProductId".to_owned()),
            Just("value".to_owned()),
            Just("Id".to_owned()),
            Just("Name".to_owned()),
            Just("ContentDate".to_owned()),
            Just("Start".to_owned()),
            Just("End".to_owned()),
            Just("PublicationDate".to_owned()),
            Just("Locations".to_owned()),
            Just("FormatType".to_owned()),
            Just("DownloadLink".to_owned()),
            Just("ContentLength".to_owned()),
            Just("Checksum".to_owned()),
            Just("Attributes".to_owned()),
            ".{0,8}",
        ];
        leaf.prop_recursive(5, 64, 8, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
                prop::collection::btree_map(keys.clone(), inner, 0..8)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            let _ = ProductNotification::parse(&bytes);
        }

        #[test]
        fn arbitrary_json_never_panics(json in arbitrary_json()) {
            let _ = ProductNotification::from_json(&json);
        }

        /// The real notification with any one field replaced by arbitrary JSON.
        #[test]
        fn the_real_notification_with_a_field_replaced_never_panics(
            path in prop::sample::select(vec![
                "/SubscriptionEvent", "/ProductId", "/value", "/value/Id", "/value/Name",
                "/value/ContentDate", "/value/ContentDate/Start", "/value/PublicationDate",
                "/value/Locations", "/value/Locations/0", "/value/Locations/0/ContentLength",
                "/value/Locations/0/Checksum", "/value/Locations/0/DownloadLink",
                "/value/Attributes", "/value/Attributes/1/Value",
            ]),
            replacement in arbitrary_json(),
        ) {
            let mut json = fixture("created");
            if let Some(slot) = json.pointer_mut(path) {
                *slot = replacement;
            }
            let _ = ProductNotification::from_json(&json);
        }
    }
}
