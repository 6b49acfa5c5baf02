//! Fields of a CDSE `Products` entity that catalogue pages and push
//! notifications share, read the same way for both.

use chrono::{DateTime, NaiveDateTime, Utc};
use serde_json::{Map, Value};

/// The MD5 entry of a `Checksum` array. A missing or malformed checksum is not
/// an error: the download service then works without one.
pub fn md5_checksum(entity: &Map<String, Value>) -> Option<&str> {
    entity
        .get("Checksum")?
        .as_array()?
        .iter()
        .filter_map(Value::as_object)
        .find(|entry| {
            entry
                .get("Algorithm")
                .and_then(Value::as_str)
                .is_some_and(|a| a.eq_ignore_ascii_case("MD5"))
        })?
        .get("Value")?
        .as_str()
        .filter(|v| !v.is_empty())
}

/// The `tileId` attribute, the fallback when the product name carries no tile id.
pub fn tile_id_attribute(product: &Map<String, Value>) -> Option<&str> {
    product
        .get("Attributes")?
        .as_array()?
        .iter()
        .filter_map(Value::as_object)
        .find(|a| a.get("Name").and_then(Value::as_str) == Some("tileId"))?
        .get("Value")?
        .as_str()
}

/// CDSE writes timestamps with 3 or 6 fraction digits and `Z` or `+00:00`;
/// a timestamp without a zone is UTC.
pub fn parse_timestamp(value: &str) -> Option<DateTime<Utc>> {
    let value = value.trim();
    if let Ok(at) = DateTime::parse_from_rfc3339(value) {
        return Some(at.with_timezone(&Utc));
    }
    ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"]
        .iter()
        .find_map(|format| NaiveDateTime::parse_from_str(value, format).ok())
        .map(|at| at.and_utc())
}
