//! The granule: one Sentinel-2 L1C product to download, validated once at the edge.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::domain::text::short;

/// Column widths of the `granule` table the download service reads.
const MAX_TEXT_LEN: usize = 256;
const TILE_ID_LEN: usize = 5;

/// A product that passed validation: every field fits the `granule` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Granule {
    /// CDSE product id (a UUID).
    pub id: String,
    /// Product name, e.g. `S2A_MSIL1C_..._T28PHQ_....SAFE`.
    pub filename: String,
    /// MGRS tile id, five characters.
    pub tile_id: String,
    /// Size in bytes of the download.
    pub size: i64,
    /// Acquisition start (`ContentDate.Start`).
    pub begin_position: DateTime<Utc>,
    /// Acquisition end (`ContentDate.End`).
    pub end_position: DateTime<Utc>,
    /// Publication time in the catalogue (`PublicationDate`).
    pub ingestion_date: DateTime<Utc>,
    pub download_url: String,
    /// MD5 of the download, when CDSE gives one.
    pub checksum: Option<String>,
}

/// The fields of a product as read from a catalogue page or a notification,
/// before validation.
#[derive(Debug, Clone)]
pub struct ProductFields<'a> {
    pub id: &'a str,
    pub name: &'a str,
    /// The `tileId` attribute, used when the name carries no tile id.
    pub tile_id_attribute: Option<&'a str>,
    pub size: i64,
    pub begin_position: DateTime<Utc>,
    pub end_position: DateTime<Utc>,
    pub ingestion_date: DateTime<Utc>,
    pub download_url: &'a str,
    pub checksum: Option<&'a str>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidGranule {
    #[error("{field} is empty")]
    Empty { field: &'static str },
    #[error("{field} is {len} characters long, the granule table holds at most {max}")]
    TooLong {
        field: &'static str,
        len: usize,
        max: usize,
    },
    #[error("size {0} is negative")]
    NegativeSize(i64),
    #[error("no MGRS tile id in product name {0:?} and no tileId attribute")]
    NoTileId(String),
}

impl Granule {
    pub fn parse(fields: ProductFields<'_>) -> Result<Self, InvalidGranule> {
        let id = bounded_text("id", fields.id)?;
        let filename = bounded_text("filename", fields.name)?;
        let download_url = bounded_text("download_url", fields.download_url)?;
        let checksum = match fields.checksum {
            Some(value) if !value.is_empty() => Some(bounded_text("checksum", value)?),
            _ => None,
        };
        if fields.size < 0 {
            return Err(InvalidGranule::NegativeSize(fields.size));
        }
        let tile_id = tile_id_from_name(fields.name)
            .or_else(|| fields.tile_id_attribute.filter(|t| is_tile_id(t)))
            .ok_or_else(|| InvalidGranule::NoTileId(short(fields.name, 80)))?
            .to_owned();
        Ok(Self {
            id,
            filename,
            tile_id,
            size: fields.size,
            begin_position: fields.begin_position,
            end_position: fields.end_position,
            ingestion_date: fields.ingestion_date,
            download_url,
            checksum,
        })
    }

    /// The body of the `To Download` message, exactly as the download service reads it.
    pub fn download_message(&self) -> DownloadMessage<'_> {
        DownloadMessage {
            id: &self.id,
            filename: &self.filename,
            download_url: &self.download_url,
            checksum: self.checksum.as_deref(),
        }
    }
}

/// `{"id", "filename", "download_url", "checksum"?}`: `checksum` only when known.
#[derive(Debug, Serialize)]
pub struct DownloadMessage<'a> {
    pub id: &'a str,
    pub filename: &'a str,
    pub download_url: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checksum: Option<&'a str>,
}

fn bounded_text(field: &'static str, value: &str) -> Result<String, InvalidGranule> {
    if value.is_empty() {
        return Err(InvalidGranule::Empty { field });
    }
    let len = value.chars().count();
    if len > MAX_TEXT_LEN {
        return Err(InvalidGranule::TooLong {
            field,
            len,
            max: MAX_TEXT_LEN,
        });
    }
    Ok(value.to_owned())
}

/// The MGRS tile id embedded in a Sentinel-2 product name as `_TXXXXX_`
/// (see the Sentinel-2 naming convention).
pub fn tile_id_from_name(name: &str) -> Option<&str> {
    let bytes = name.as_bytes();
    // `_T` + 5 + `_` = 8 bytes.
    (0..bytes.len().saturating_sub(7)).find_map(|start| {
        let window = &bytes[start..start + 8];
        (window[0] == b'_'
            && window[1] == b'T'
            && window[7] == b'_'
            && is_tile_id_bytes(&window[2..7]))
        // The window is ASCII, so these are char boundaries.
        .then(|| &name[start + 2..start + 7])
    })
}

/// Five characters of `[0-9A-Z]`.
pub fn is_tile_id(value: &str) -> bool {
    value.len() == TILE_ID_LEN && is_tile_id_bytes(value.as_bytes())
}

fn is_tile_id_bytes(bytes: &[u8]) -> bool {
    bytes
        .iter()
        .all(|b| b.is_ascii_digit() || b.is_ascii_uppercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields<'a>(name: &'a str, tile_attr: Option<&'a str>) -> ProductFields<'a> {
        let t = "2024-09-12T11:25:41.024Z".parse().unwrap();
        ProductFields {
            id: "f867a59a-9336-46d0-93ae-e55bf29403f8",
            name,
            tile_id_attribute: tile_attr,
            size: 132384463,
            begin_position: t,
            end_position: t,
            ingestion_date: t,
            download_url: "https://example.test/Products(f867)/$value",
            checksum: Some("700a3f2014ab3670408b94e4310924dd"),
        }
    }

    #[test]
    fn tile_id_is_read_from_the_name() {
        assert_eq!(
            tile_id_from_name("S2A_MSIL1C_20240912T112541_N0511_R137_T28PHQ_20240912T133420.SAFE"),
            Some("28PHQ")
        );
        assert_eq!(
            tile_id_from_name("S2A_MSIL1C_20240912T112541_N0511_R137_T28phq_x"),
            None
        );
        assert_eq!(tile_id_from_name("_T28PHQ"), None);
        assert_eq!(tile_id_from_name("_T28PHQ_"), Some("28PHQ"));
        assert_eq!(tile_id_from_name(""), None);
        // Multi-byte characters around the pattern do not break slicing.
        assert_eq!(tile_id_from_name("é_T01ABC_é"), Some("01ABC"));
    }

    #[test]
    fn tile_id_attribute_is_the_fallback() {
        let g = Granule::parse(fields("S2A_MSIL1C_no_tile.SAFE", Some("31UFU"))).unwrap();
        assert_eq!(g.tile_id, "31UFU");
        let err = Granule::parse(fields("S2A_MSIL1C_no_tile.SAFE", Some("bad"))).unwrap_err();
        assert!(matches!(err, InvalidGranule::NoTileId(_)));
        // The name wins over the attribute.
        let g = Granule::parse(fields("S2A_X_T28PHQ_Y", Some("31UFU"))).unwrap();
        assert_eq!(g.tile_id, "28PHQ");
    }

    #[test]
    fn fields_too_long_for_the_table_are_rejected() {
        let long = format!("S2A_T28PHQ_{}", "x".repeat(300));
        let err = Granule::parse(fields(&long, None)).unwrap_err();
        assert!(
            matches!(
                err,
                InvalidGranule::TooLong {
                    field: "filename",
                    ..
                }
            ),
            "{err}"
        );
        let mut f = fields("S2A_X_T28PHQ_Y", None);
        f.id = "";
        assert_eq!(
            Granule::parse(f).unwrap_err(),
            InvalidGranule::Empty { field: "id" }
        );
        let mut f = fields("S2A_X_T28PHQ_Y", None);
        f.size = -1;
        assert_eq!(
            Granule::parse(f).unwrap_err(),
            InvalidGranule::NegativeSize(-1)
        );
    }

    #[test]
    fn message_carries_checksum_only_when_known() {
        let mut g = Granule::parse(fields("S2A_X_T28PHQ_Y", None)).unwrap();
        let with: serde_json::Value = serde_json::to_value(g.download_message()).unwrap();
        assert_eq!(with["checksum"], "700a3f2014ab3670408b94e4310924dd");
        g.checksum = None;
        let without = serde_json::to_value(g.download_message()).unwrap();
        let keys: Vec<_> = without.as_object().unwrap().keys().cloned().collect();
        assert_eq!(keys, ["download_url", "filename", "id"]);
    }
}
