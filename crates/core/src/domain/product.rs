//! The CDSE `Products` entity, as catalogue pages and push notifications both
//! carry it, read straight from the JSON text into typed fields.
//!
//! Only the fields the fetchers use are read; the rest (footprints, most
//! attributes, assets) is skipped without being stored. Strings borrow from
//! the body where they have no escapes. Each field is a [`Field`]: missing,
//! the type we expect, or anything else kept as JSON, so that the readers, not
//! the deserializer, decide what is an error and how it reads, and a field in
//! a shape we do not use (a checksum that is not a list, say) is no error.
//! What serde itself rejects (a key given twice) is a [`FieldError`] naming
//! the field's path.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use chrono::{DateTime, NaiveDateTime, Utc};
use serde::de::value::{MapAccessDeserializer, SeqAccessDeserializer};
use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

/// Download links point at the production catalogue whatever `SEARCH_URL` is,
/// and have the form push notifications carry in their `Extracted` location,
/// so both fetchers record the same URL for a product.
const DOWNLOAD_URL_BASE: &str = "https://catalogue.dataspace.copernicus.eu/odata/v1/Products";

/// A product's download link, as the catalogue builds it.
pub fn download_url(id: &str) -> String {
    format!("{DOWNLOAD_URL_BASE}({id})/$value")
}

/// A `Products` entity (docs/cdse-catalogue.md, "Products entity").
#[derive(Debug, Default, PartialEq, serde::Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct Product<'a> {
    #[serde(borrow)]
    pub id: Text<'a>,
    #[serde(borrow)]
    pub name: Text<'a>,
    pub content_length: Integer,
    #[serde(borrow)]
    pub publication_date: Text<'a>,
    #[serde(borrow)]
    pub content_date: Field<ContentDate<'a>>,
    #[serde(borrow)]
    pub checksum: Checksums<'a>,
    /// Expanded on request (`$expand=Attributes`); push notifications have them.
    #[serde(borrow)]
    pub attributes: Field<Vec<Field<Attribute<'a>>>>,
    /// Expanded on request; push notifications have them.
    #[serde(borrow)]
    pub locations: Field<Vec<Field<Location<'a>>>>,
}

#[derive(Debug, Default, PartialEq, serde::Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct ContentDate<'a> {
    #[serde(borrow)]
    pub start: Text<'a>,
    #[serde(borrow)]
    pub end: Text<'a>,
}

/// One entry of `Checksum`: `{Value, Algorithm, ChecksumDate}`.
#[derive(Debug, Default, PartialEq, serde::Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct Checksum<'a> {
    #[serde(borrow)]
    pub value: Text<'a>,
    #[serde(borrow)]
    pub algorithm: Text<'a>,
}

pub type Checksums<'a> = Field<Vec<Field<Checksum<'a>>>>;

/// One entry of `Attributes`: `{Name, Value, ValueType}`; only string values
/// are read (`tileId` is one).
#[derive(Debug, Default, PartialEq, serde::Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct Attribute<'a> {
    #[serde(borrow)]
    pub name: Text<'a>,
    #[serde(borrow)]
    pub value: Text<'a>,
}

/// One entry of `Locations`: the `Extracted` one is the download.
#[derive(Debug, Default, PartialEq, serde::Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct Location<'a> {
    #[serde(borrow)]
    pub format_type: Text<'a>,
    #[serde(borrow)]
    pub download_link: Text<'a>,
    pub content_length: Integer,
    #[serde(borrow)]
    pub checksum: Checksums<'a>,
}

impl Product<'_> {
    /// The `tileId` attribute, the fallback when the product name carries no tile id.
    pub fn tile_id_attribute(&self) -> Option<&str> {
        self.attributes
            .expected()?
            .iter()
            .filter_map(Field::expected)
            .find(|a| a.name.as_str() == Some("tileId"))?
            .value
            .as_str()
    }

    /// See [`md5_checksum`].
    pub fn md5_checksum(&self) -> Option<&str> {
        md5_checksum(&self.checksum)
    }

    /// The entries of `Locations` that are objects, with their index.
    pub fn locations(&self) -> impl Iterator<Item = (usize, &Location<'_>)> {
        self.locations
            .expected()
            .into_iter()
            .flatten()
            .enumerate()
            .filter_map(|(index, location)| Some((index, location.expected()?)))
    }
}

impl Location<'_> {
    /// See [`md5_checksum`].
    pub fn md5_checksum(&self) -> Option<&str> {
        md5_checksum(&self.checksum)
    }
}

/// The first MD5 entry's value. A missing or malformed checksum is not an
/// error: the download service then works without one.
fn md5_checksum<'c>(checksums: &'c Checksums<'_>) -> Option<&'c str> {
    checksums
        .expected()?
        .iter()
        .filter_map(Field::expected)
        .find(|entry| {
            entry
                .algorithm
                .as_str()
                .is_some_and(|a| a.eq_ignore_ascii_case("MD5"))
        })?
        .value
        .as_str()
        .filter(|v| !v.is_empty())
}

/// CDSE writes timestamps with 3 or 6 fraction digits and `Z` or `+00:00`;
/// a timestamp without a zone is UTC (docs/cdse-catalogue.md, "Timestamps").
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

// ---------------------------------------------------------------- fields

/// One field of an entity as the body has it.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum Field<T> {
    /// The key is absent.
    #[default]
    Missing,
    /// The value has the type we read it as.
    Expected(T),
    /// Any other value, `null` included, kept for the error message (rare, so
    /// the small `Value` tree costs nothing in the common case).
    Other(Value),
}

/// A string field.
pub type Text<'a> = Field<Cow<'a, str>>;
/// An integer field; an integer that does not fit `i64` is [`Field::Other`].
pub type Integer = Field<i64>;

impl<T> Field<T> {
    pub fn expected(&self) -> Option<&T> {
        match self {
            Self::Expected(value) => Some(value),
            _ => None,
        }
    }

    /// Missing or `null`.
    pub fn is_absent(&self) -> bool {
        matches!(self, Self::Missing | Self::Other(Value::Null))
    }
}

impl Text<'_> {
    pub fn as_str(&self) -> Option<&str> {
        self.expected().map(|s| &**s)
    }
}

/// The JSON type a [`Field`] expects: each method turns a value of that type
/// into [`Field::Expected`]; the defaults keep any other value as
/// [`Field::Other`].
pub trait Form<'de>: Sized {
    fn string(value: Cow<'de, str>) -> Field<Self> {
        Field::Other(Value::String(value.into_owned()))
    }

    fn integer(value: i64) -> Field<Self> {
        Field::Other(value.into())
    }

    fn object<A: MapAccess<'de>>(map: A) -> Result<Field<Self>, A::Error> {
        Value::deserialize(MapAccessDeserializer::new(map)).map(Field::Other)
    }

    fn array<A: SeqAccess<'de>>(seq: A) -> Result<Field<Self>, A::Error> {
        Value::deserialize(SeqAccessDeserializer::new(seq)).map(Field::Other)
    }
}

impl<'de: 'a, 'a> Form<'de> for Cow<'a, str> {
    fn string(value: Cow<'de, str>) -> Field<Self> {
        Field::Expected(value)
    }
}

impl Form<'_> for i64 {
    fn integer(value: i64) -> Field<Self> {
        Field::Expected(value)
    }
}

impl<'de, T: Deserialize<'de>> Form<'de> for Vec<T> {
    fn array<A: SeqAccess<'de>>(seq: A) -> Result<Field<Self>, A::Error> {
        Vec::deserialize(SeqAccessDeserializer::new(seq)).map(Field::Expected)
    }
}

/// Entities read from a JSON object only (serde would also take a list of
/// their fields in order, which CDSE never sends).
macro_rules! object_form {
    ($($entity:ident),* $(,)?) => {$(
        impl<'de: 'a, 'a> $crate::domain::product::Form<'de> for $entity<'a> {
            fn object<A: serde::de::MapAccess<'de>>(
                map: A,
            ) -> Result<$crate::domain::product::Field<Self>, A::Error> {
                <Self as serde::Deserialize>::deserialize(
                    serde::de::value::MapAccessDeserializer::new(map),
                )
                .map($crate::domain::product::Field::Expected)
            }
        }
    )*};
}

object_form!(Product, ContentDate, Checksum, Attribute, Location);
pub(crate) use object_form;

impl<'de, T: Form<'de>> Deserialize<'de> for Field<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(FieldVisitor(PhantomData))
    }
}

struct FieldVisitor<T>(PhantomData<T>);

impl<'de, T: Form<'de>> Visitor<'de> for FieldVisitor<T> {
    type Value = Field<T>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
        Ok(Field::Other(v.into()))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        Ok(T::integer(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Ok(i64::try_from(v).map_or_else(|_| Field::Other(v.into()), T::integer))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
        Ok(Field::Other(v.into()))
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(T::string(Cow::Borrowed(v)))
    }

    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(T::string(Cow::Owned(v.to_owned())))
    }

    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(T::string(Cow::Owned(v)))
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Field::Other(Value::Null))
    }

    fn visit_none<E>(self) -> Result<Self::Value, E> {
        Ok(Field::Other(Value::Null))
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        Field::deserialize(deserializer)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        T::object(map)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        T::array(seq)
    }
}

/// What serde itself refused, and where: `Attributes[2]: duplicate field `Value``.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct FieldError {
    /// From the document's root (`value.Locations[0]`); `root` when the
    /// problem is the document itself.
    pub path: String,
    pub message: String,
    /// A JSON syntax error (or a cut body), as opposed to a value serde refused.
    pub syntax: bool,
}

/// Reads `T` from one JSON document, naming the path of what serde refuses;
/// `root` names the document.
pub fn read<'a, T: Deserialize<'a>>(json: &'a str, root: &str) -> Result<T, FieldError> {
    // Tracking the path costs an allocation per key, so it is done only to
    // explain a failure: the same input fails the same way again.
    serde_json::from_str(json).map_err(|_| refusal::<T>(json, root))
}

fn refusal<'a, T: Deserialize<'a>>(json: &'a str, root: &str) -> FieldError {
    let refused = |path: String, error: serde_json::Error| FieldError {
        path: if path == "." { root.to_owned() } else { path },
        syntax: !error.is_data(),
        message: error.to_string(),
    };
    let mut deserializer = serde_json::Deserializer::from_str(json);
    match serde_path_to_error::deserialize::<_, T>(&mut deserializer) {
        Err(e) => refused(e.path().to_string(), e.into_inner()),
        // Trailing characters after the document.
        Ok(_) => match deserializer.end() {
            Err(e) => refused(".".to_owned(), e),
            Ok(()) => FieldError {
                path: root.to_owned(),
                message: "refused, then read on a second attempt".to_owned(),
                syntax: true,
            },
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn product(json: &str) -> Product<'_> {
        match read::<Field<Product>>(json, "value").unwrap() {
            Field::Expected(product) => product,
            other => panic!("not a product: {other:?}"),
        }
    }

    #[test]
    fn fields_keep_missing_null_and_other_values_apart() {
        let p =
            product(r#"{"Id": "a", "Name": null, "ContentLength": 1.5, "Extra": [1, {"x": 2}]}"#);
        assert_eq!(p.id.as_str(), Some("a"));
        assert!(
            matches!(p.id, Field::Expected(Cow::Borrowed(_))),
            "borrowed"
        );
        assert_eq!(p.name, Field::Other(Value::Null));
        assert!(p.name.is_absent() && p.publication_date.is_absent());
        assert_eq!(p.publication_date, Field::Missing);
        assert_eq!(p.content_length, Field::Other(1.5.into()));
        let p = product(r#"{"Id": "a\"b", "ContentLength": 18446744073709551615}"#);
        assert_eq!(p.id.as_str(), Some("a\"b"));
        assert_eq!(p.content_length, Field::Other(u64::MAX.into()));
        let p = product(r#"{"ContentDate": ["2024-01-01T00:00:00Z", "x"], "Locations": {}}"#);
        assert_eq!(
            p.content_date,
            Field::Other(serde_json::json!(["2024-01-01T00:00:00Z", "x"]))
        );
        assert_eq!(p.locations, Field::Other(serde_json::json!({})));
    }

    #[test]
    fn checksum_and_tile_id_come_from_the_first_matching_entry() {
        let p = product(
            r#"{"Checksum": [3, {"Algorithm": "BLAKE3", "Value": "b"}, {"Algorithm": "md5", "Value": "m"},
                            {"Algorithm": "MD5", "Value": "later"}],
                "Attributes": [{"Name": "tileId", "Value": 5}, {"Name": "tileId", "Value": "T"}]}"#,
        );
        assert_eq!(p.md5_checksum(), Some("m"));
        // The first `tileId` decides, even when its value is not a string.
        assert_eq!(p.tile_id_attribute(), None);
        let p = product(r#"{"Checksum": [{"Algorithm": "MD5", "Value": ""}], "Attributes": {}}"#);
        assert_eq!(p.md5_checksum(), None);
        assert_eq!(p.tile_id_attribute(), None);
        let p =
            product(r#"{"Checksum": "MD5", "Attributes": [{"Name": "tileId", "Value": "33UUP"}]}"#);
        assert_eq!(p.md5_checksum(), None);
        assert_eq!(p.tile_id_attribute(), Some("33UUP"));
    }

    #[test]
    fn what_serde_refuses_is_named_by_its_path() {
        let error = read::<Field<Product>>(
            r#"{"Checksum": [{"Value": "a"}, {"Value": "b", "Value": "c"}]}"#,
            "value",
        )
        .unwrap_err();
        assert_eq!(error.path, "Checksum[1]");
        assert!(!error.syntax);
        assert!(
            error
                .to_string()
                .starts_with("Checksum[1]: duplicate field `Value`"),
            "{error}"
        );
        let error = read::<Field<Product>>(
            r#"{"Attributes": [{}, {}, {"Name": "tileId", "Name": "x"}]}"#,
            "value",
        )
        .unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("Attributes[2]: duplicate field `Name`"),
            "{error}"
        );
        let error = read::<Field<Product>>(r#"{"Id": "a", "Id": "b"}"#, "value").unwrap_err();
        assert_eq!(error.path, "value");
        let error = read::<Field<Product>>(r#"{"Id": "a""#, "value").unwrap_err();
        assert!(error.syntax, "{error}");
        let error = read::<Field<Product>>(r#"{} x"#, "value").unwrap_err();
        assert!(error.syntax, "{error}");
        assert!(error.message.starts_with("trailing characters"), "{error}");
    }

    #[test]
    fn download_urls_have_the_catalogues_form() {
        assert_eq!(
            download_url("f867"),
            "https://catalogue.dataspace.copernicus.eu/odata/v1/Products(f867)/$value"
        );
    }
}
