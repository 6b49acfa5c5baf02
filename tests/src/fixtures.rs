//! Real CDSE payloads (copied from `../shared/fixtures`) and larger cases built from them.

use chrono::{DateTime, SecondsFormat, Utc};
use hls_core::domain::notification::{NotifiedProduct, readdress_created};
use serde_json::Value;

fn load(name: &str) -> Value {
    let path = format!("{}/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// A real OData Products page of S2MSI1C products (two products, with a nextLink).
pub fn odata_page() -> Value {
    load("cdse-odata-products-page.json")
}

/// The error CDSE answers (HTTP 422) for a `$skip` past its cap.
pub fn odata_skip_error() -> Value {
    load("cdse-odata-error-skip.json")
}

/// A real push notification of a new product.
pub fn push_created() -> Value {
    load("cdse-push-created.json")
}

pub fn push_modified() -> Value {
    load("cdse-push-modified.json")
}

pub fn push_deleted() -> Value {
    load("cdse-push-deleted.json")
}

/// CDSE's answer for a subscription id it does not know (HTTP 404).
pub fn subscriptions_error_404() -> Value {
    load("cdse-subscriptions-error-404.json")
}

pub fn timestamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// A Sentinel-2 L1C product name on `tile`, acquired at `acquired`.
pub fn product_name(platform: &str, tile: &str, acquired: DateTime<Utc>, serial: u32) -> String {
    format!(
        "{platform}_MSIL1C_{}_N0511_R{:03}_T{tile}_{}.SAFE",
        acquired.format("%Y%m%dT%H%M%S"),
        serial % 1000,
        acquired.format("%Y%m%dT%H%M%S"),
    )
}

/// The real catalogue product, re-dated and renamed: the shape of a real page
/// entry with the values a test needs.
pub fn odata_product(
    id: &str,
    name: &str,
    published: DateTime<Utc>,
    acquired: DateTime<Utc>,
) -> Value {
    let mut product = odata_page()["value"][0].clone();
    let tile = hls_core::domain::granule::tile_id_from_name(name)
        .unwrap_or("")
        .to_owned();
    product["Id"] = id.into();
    product["Name"] = name.into();
    product["PublicationDate"] = timestamp(published).into();
    product["ContentDate"]["Start"] = timestamp(acquired).into();
    product["ContentDate"]["End"] = timestamp(acquired).into();
    if let Some(attributes) = product["Attributes"].as_array_mut() {
        for attribute in attributes {
            match attribute["Name"].as_str() {
                Some("tileId") => attribute["Value"] = tile.clone().into(),
                Some("platformSerialIdentifier") => {
                    attribute["Value"] = name.get(2..3).unwrap_or("A").into()
                }
                _ => {}
            }
        }
    }
    product
}

/// The real push notification for a product, re-dated and renamed.
pub fn push_created_for(
    id: &str,
    name: &str,
    published: DateTime<Utc>,
    acquired: DateTime<Utc>,
) -> Value {
    let mut notification = push_created();
    let product = NotifiedProduct {
        id,
        name,
        published,
        acquired,
    };
    readdress_created(&mut notification, &product, published);
    notification
}
