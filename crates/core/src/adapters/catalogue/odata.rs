//! CDSE's OData Products API (docs/cdse-catalogue.md): query building and page
//! parsing are pure functions; [`ODataCatalogue`] only adds one HTTP request.

use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::StatusCode;
use reqwest::header::RETRY_AFTER;
use serde_json::Value;
use serde_json::value::RawValue;
use url::Url;

use super::{
    Catalogue, CatalogueError, CataloguePage, DayQuery, FailedRequest, Fault, PageProduct,
    PageRequest, distinct_causes,
};
use crate::domain::error_body::error_message;
use crate::domain::granule::{Granule, ProductFields};
use crate::domain::product::{
    self, Field, Integer, Product, Text, download_url, object_form, parse_timestamp,
};
use crate::domain::text::{UrlError, http_url, short, short_json, snippet};

/// `SEARCH_URL`'s default: the production catalogue.
pub const DEFAULT_SEARCH_URL: &str = "https://catalogue.dataspace.copernicus.eu";
/// CDSE refuses `$skip` above this (HTTP 422, since 2024-11-12; docs/cdse-catalogue.md, "Paging").
pub const MAX_SKIP: u32 = 10_000;
/// CDSE refuses `$top` above this (docs/cdse-catalogue.md, "Paging").
pub const MAX_TOP: u32 = 1_000;

/// The OData catalogue over HTTP: one client (connection pool) for every page.
#[derive(Debug, Clone)]
pub struct ODataCatalogue {
    client: reqwest::Client,
    products_url: Url,
}

impl ODataCatalogue {
    /// `search_url` is the catalogue's root (`SEARCH_URL`), e.g. [`DEFAULT_SEARCH_URL`].
    pub fn new(search_url: &str) -> Result<Self, CatalogueError> {
        let root = http_url(search_url).map_err(|e| {
            CatalogueError::Client(match e {
                UrlError::Scheme(_) => format!("SEARCH_URL {search_url:?} is not http(s)"),
                UrlError::Invalid(e) => format!("SEARCH_URL {search_url:?}: {e}"),
            })
        })?;
        let products_url = Url::parse(&format!(
            "{}/odata/v1/Products",
            root.as_str().trim_end_matches('/')
        ))
        .map_err(|e| CatalogueError::Client(e.to_string()))?;
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("hls-s2-link-fetcher/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| CatalogueError::Client(e.to_string()))?;
        Ok(Self {
            client,
            products_url,
        })
    }

    pub fn products_url(&self) -> &Url {
        &self.products_url
    }
}

impl Catalogue for ODataCatalogue {
    async fn page(
        &self,
        query: &DayQuery,
        request: &PageRequest,
    ) -> Result<CataloguePage, CatalogueError> {
        let url = page_url(&self.products_url, query, request);
        let host = host(&self.products_url);
        let failed = |cause: Option<String>| {
            Box::new(FailedRequest {
                url: url.to_string(),
                cause,
            })
        };
        let response = self
            .client
            .get(url.clone())
            .timeout(request.timeout)
            .send()
            .await
            .map_err(|e| request_error(&host, e, &failed))?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, Utc::now()));
        let body = response
            .bytes()
            .await
            .map_err(|e| request_error(&host, e, &failed))?;
        if status == StatusCode::TOO_MANY_REQUESTS
            || status == StatusCode::REQUEST_TIMEOUT
            || status.is_server_error()
        {
            return Err(CatalogueError::Unavailable {
                host,
                status: status.as_u16(),
                message: error_message(&body),
                retry_after,
                request: failed(None),
            });
        }
        if !status.is_success() {
            return Err(CatalogueError::Refused {
                host,
                status: status.as_u16(),
                message: error_message(&body),
                request: failed(None),
            });
        }
        parse_page(&body)
    }
}

/// The catalogue's host as errors name it: with its port when not the scheme's default.
fn host(url: &Url) -> String {
    let host = url.host_str().unwrap_or("?");
    match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_owned(),
    }
}

/// A request that got no answer: connection refused or reset, a name that does
/// not resolve, a timeout, a body cut short. All may pass. The message keeps
/// the kind of fault; the URL and reqwest's chain (each cause once) go in
/// [`FailedRequest`].
fn request_error(
    host: &str,
    e: reqwest::Error,
    failed: &impl Fn(Option<String>) -> Box<FailedRequest>,
) -> CatalogueError {
    if e.is_builder() {
        return CatalogueError::Client(e.without_url().to_string());
    }
    let fault = fault(&e);
    let e = e.without_url();
    CatalogueError::Unreachable {
        host: host.to_owned(),
        fault,
        request: failed(Some(distinct_causes(&e))),
    }
}

fn fault(e: &reqwest::Error) -> Fault {
    if e.is_timeout() {
        return Fault::Timeout;
    }
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            match io.kind() {
                std::io::ErrorKind::ConnectionRefused => return Fault::ConnectionRefused,
                std::io::ErrorKind::TimedOut => return Fault::Timeout,
                _ => {}
            }
        }
        // hyper-util's connector says so, over the resolver's own error.
        if cause.to_string().starts_with("dns error") {
            return Fault::Dns;
        }
        source = cause.source();
    }
    if e.is_connect() {
        Fault::Connection
    } else if e.is_body() || e.is_decode() {
        Fault::CutShort
    } else {
        Fault::Other
    }
}

/// An OData date literal at full (microsecond) precision: keyset paging resumes
/// at the exact publication time of the last product examined.
pub fn odata_timestamp(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

/// The `$filter` of a page: S2MSI1C products of the platform, published from
/// `from` up to (excluding) the next day's midnight, acquired recently enough.
pub fn products_filter(query: &DayQuery, from: DateTime<Utc>) -> String {
    let mut terms = vec![
        "Collection/Name eq 'SENTINEL-2'".to_owned(),
        string_attribute("productType", "S2MSI1C"),
    ];
    if let Some(platform) = query.platform {
        terms.push(string_attribute(
            "platformSerialIdentifier",
            platform.serial_identifier(),
        ));
    }
    terms.push(format!("PublicationDate ge {}", odata_timestamp(from)));
    terms.push(format!(
        "PublicationDate lt {}",
        odata_timestamp(query.window_end())
    ));
    terms.push(format!(
        "ContentDate/Start ge {}",
        odata_timestamp(query.acquired_since())
    ));
    terms.join(" and ")
}

fn string_attribute(name: &str, value: &str) -> String {
    format!(
        "Attributes/OData.CSC.StringAttribute/any(att:att/Name eq '{name}' and \
         att/OData.CSC.StringAttribute/Value eq '{value}')"
    )
}

/// The full URL of a page, percent-encoded the way CDSE's own nextLinks are.
pub fn page_url(products_url: &Url, query: &DayQuery, request: &PageRequest) -> Url {
    let mut url = products_url.clone();
    {
        let mut pairs = url.query_pairs_mut();
        pairs.append_pair("$filter", &products_filter(query, request.from));
        // The server breaks ties on Id, so the order is total and `$skip` within
        // one publication instant is stable.
        pairs.append_pair("$orderby", "PublicationDate asc");
        pairs.append_pair("$top", &request.top.to_string());
        pairs.append_pair("$skip", &request.skip.to_string());
        if request.count {
            pairs.append_pair("$count", "true");
        }
        // For the `tileId` attribute, the fallback when a name carries no tile id.
        pairs.append_pair("$expand", "Attributes");
    }
    url
}

/// The fields of a page we read; each product is kept as its JSON text and
/// read on its own, so that one bad product is rejected alone.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
struct Page<'a> {
    #[serde(borrow)]
    value: Field<Vec<&'a RawValue>>,
    #[serde(rename = "@odata.count")]
    count: Integer,
}

object_form!(Page);

/// Reads a page. Products that cannot become granules are rejected one by one
/// (id and reason); only a body that is not a page at all fails.
pub fn parse_page(body: &[u8]) -> Result<CataloguePage, CatalogueError> {
    let malformed = |e: &dyn std::fmt::Display| {
        CatalogueError::Malformed(format!("{e}; the body starts {:?}", snippet(body)))
    };
    let text = match std::str::from_utf8(body) {
        Ok(text) => text,
        // The JSON parser's own words for where the bytes go wrong.
        Err(e) => {
            return Err(match serde_json::from_slice::<Value>(body) {
                Err(json) => malformed(&json),
                Ok(_) => malformed(&e),
            });
        }
    };
    let page = serde_json::from_str::<Field<Page>>(text).map_err(|e| malformed(&e))?;
    let Field::Expected(Page {
        value: Field::Expected(products),
        count,
    }) = page
    else {
        return Err(CatalogueError::Malformed(format!(
            "no \"value\" array: {}",
            error_message(body)
        )));
    };
    let count = match count {
        Field::Expected(count) => Some(count),
        Field::Missing | Field::Other(Value::Null) => None,
        Field::Other(value) => {
            return Err(CatalogueError::Malformed(format!(
                "@odata.count {} is not an integer",
                short_json(&value)
            )));
        }
    };
    Ok(CataloguePage {
        products: products
            .iter()
            .enumerate()
            .map(|(index, product)| parse_product(index, product.get()))
            .collect(),
        count,
    })
}

/// One entry of a page's `value`, from its JSON text.
pub fn parse_product(index: usize, json: &str) -> PageProduct {
    let without_id = || format!("<product {index} without Id>");
    let rejected = |reason: String| PageProduct {
        id: without_id(),
        published: None,
        granule: Err(reason),
    };
    let product = match product::read::<Field<Product>>(json, "product") {
        Ok(Field::Expected(product)) => product,
        Ok(_) => return rejected("is not a JSON object".to_owned()),
        Err(refused) => return rejected(short(&refused.to_string(), 200)),
    };
    let id = product
        .id
        .as_str()
        .filter(|id| !id.is_empty())
        .map_or_else(without_id, |id| short(id, 80));
    let published = product.publication_date.as_str().and_then(parse_timestamp);
    PageProduct {
        id,
        published,
        granule: granule(&product),
    }
}

fn granule(product: &Product<'_>) -> Result<Granule, String> {
    let id = text(&product.id, "Id")?;
    let name = text(&product.name, "Name")?;
    let size = match &product.content_length {
        Field::Expected(size) => *size,
        Field::Missing => return Err("ContentLength is missing".into()),
        Field::Other(other) => {
            return Err(format!(
                "ContentLength {} is not an integer",
                short_json(other)
            ));
        }
    };
    let ingestion_date = timestamp(&product.publication_date, "PublicationDate")?;
    let content_date = product
        .content_date
        .expected()
        .ok_or("ContentDate is missing")?;
    let begin_position = timestamp(&content_date.start, "ContentDate/Start")?;
    let end_position = timestamp(&content_date.end, "ContentDate/End")?;
    // A page's product carries `Locations` only when expanded; without it the
    // download link is built the way the catalogue builds its own.
    let extracted = product
        .locations()
        .map(|(_, location)| location)
        .find(|l| l.format_type.as_str() == Some("Extracted"));
    let built;
    let download_url = match extracted.and_then(|l| l.download_link.as_str()) {
        Some(link) => link,
        None => {
            built = download_url(id);
            &built
        }
    };
    let checksum = product
        .md5_checksum()
        .or_else(|| extracted.and_then(|l| l.md5_checksum()));
    Granule::parse(ProductFields {
        id,
        name,
        tile_id_attribute: product.tile_id_attribute(),
        size,
        begin_position,
        end_position,
        ingestion_date,
        download_url,
        checksum,
    })
    .map_err(|e| e.to_string())
}

/// A string field; `null` counts as missing.
fn text<'a>(field: &'a Text<'_>, key: &str) -> Result<&'a str, String> {
    match field {
        Field::Expected(s) => Ok(s),
        Field::Missing | Field::Other(Value::Null) => Err(format!("{key} is missing")),
        Field::Other(other) => Err(format!("{key} {} is not a string", short_json(other))),
    }
}

fn timestamp(field: &Text<'_>, key: &str) -> Result<DateTime<Utc>, String> {
    let value = text(field, key)?;
    parse_timestamp(value).ok_or_else(|| format!("{key} {:?} is not a timestamp", short(value, 40)))
}

/// `Retry-After` as seconds or as an HTTP date (RFC 9110 §10.2.3).
pub fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = DateTime::parse_from_rfc2822(value)
        .ok()?
        .with_timezone(&Utc);
    Some((at - now).to_std().unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use chrono::NaiveDate;

    use super::*;
    use crate::adapters::catalogue::Platform;

    fn fixture(name: &str) -> Vec<u8> {
        let path = format!("{}/../../tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    fn day(platform: Option<Platform>) -> DayQuery {
        DayQuery {
            date: NaiveDate::from_ymd_opt(2024, 4, 1).unwrap(),
            platform,
            max_acquisition_age: chrono::Duration::days(30),
        }
    }

    fn request(from: DateTime<Utc>, skip: u32, count: bool) -> PageRequest {
        PageRequest {
            from,
            skip,
            top: 1000,
            count,
            timeout: Duration::from_secs(1),
        }
    }

    #[test]
    fn filter_covers_the_whole_day_of_one_platform() {
        let query = day(Some(Platform::S2A));
        assert_eq!(
            products_filter(&query, query.window_start()),
            "Collection/Name eq 'SENTINEL-2' and \
             Attributes/OData.CSC.StringAttribute/any(att:att/Name eq 'productType' and att/OData.CSC.StringAttribute/Value eq 'S2MSI1C') and \
             Attributes/OData.CSC.StringAttribute/any(att:att/Name eq 'platformSerialIdentifier' and att/OData.CSC.StringAttribute/Value eq 'A') and \
             PublicationDate ge 2024-04-01T00:00:00.000000Z and PublicationDate lt 2024-04-02T00:00:00.000000Z and \
             ContentDate/Start ge 2024-03-02T00:00:00.000000Z"
        );
    }

    #[test]
    fn filter_resumes_at_full_precision_and_omits_the_platform_for_all() {
        let query = day(None);
        let from = "2024-04-01T23:59:59.500001Z".parse().unwrap();
        let filter = products_filter(&query, from);
        assert!(!filter.contains("platformSerialIdentifier"), "{filter}");
        assert!(
            filter.contains(
                "PublicationDate ge 2024-04-01T23:59:59.500001Z and PublicationDate lt 2024-04-02T00:00:00.000000Z"
            ),
            "{filter}"
        );
    }

    #[test]
    fn page_url_is_percent_encoded_like_cdse_next_links() {
        let query = day(Some(Platform::S2B));
        let base =
            Url::parse("https://catalogue.dataspace.copernicus.eu/odata/v1/Products").unwrap();
        let url = page_url(&base, &query, &request(query.window_start(), 17, true));
        let text = url.as_str();
        assert!(
            text.starts_with(
                "https://catalogue.dataspace.copernicus.eu/odata/v1/Products?%24filter=Collection%2FName+eq+%27SENTINEL-2%27+and+"
            ),
            "{text}"
        );
        assert!(
            text.ends_with(
                "&%24orderby=PublicationDate+asc&%24top=1000&%24skip=17&%24count=true&%24expand=Attributes"
            ),
            "{text}"
        );
        assert!(
            text.contains("PublicationDate+ge+2024-04-01T00%3A00%3A00.000000Z"),
            "{text}"
        );
        // Decoding gives back exactly the filter.
        let pairs: Vec<(String, String)> = url.query_pairs().into_owned().collect();
        assert_eq!(pairs[0].1, products_filter(&query, query.window_start()));
        let without_count = page_url(&base, &query, &request(query.window_start(), 0, false));
        assert!(!without_count.as_str().contains("count"));
    }

    #[test]
    fn real_page_parses_into_granules() {
        let page = parse_page(&fixture("cdse-odata-products-page.json")).unwrap();
        assert_eq!(page.count, None);
        assert_eq!(page.products.len(), 2);
        let first = &page.products[0];
        assert_eq!(first.id, "05edf2bb-d103-49f1-a677-9e474138d84f");
        assert_eq!(
            first.published,
            Some("2023-08-23T09:26:23.105134Z".parse().unwrap())
        );
        let granule = first.granule.as_ref().unwrap();
        assert_eq!(granule.tile_id, "54PXA");
        assert_eq!(granule.size, 224105657);
        assert_eq!(
            granule.filename,
            "S2A_MSIL1C_20200808T010311_N0500_R045_T54PXA_20230413T212505.SAFE"
        );
        assert_eq!(
            granule.download_url,
            "https://catalogue.dataspace.copernicus.eu/odata/v1/Products(05edf2bb-d103-49f1-a677-9e474138d84f)/$value"
        );
        assert_eq!(
            granule.checksum.as_deref(),
            Some("923ac4992d90b57d41e7ace4d9d90757")
        );
        assert_eq!(
            granule.begin_position,
            "2020-08-08T01:03:11.024Z".parse::<DateTime<Utc>>().unwrap()
        );
        assert_eq!(page.products[1].granule.as_ref().unwrap().tile_id, "55PBR");
    }

    #[test]
    fn count_and_extracted_location_are_used_when_present() {
        let mut page: Value =
            serde_json::from_slice(&fixture("cdse-odata-products-page.json")).unwrap();
        page["@odata.count"] = 47.into();
        page["value"][0]["Checksum"] = Value::Null;
        page["value"][0]["Locations"] = serde_json::json!([
            {"FormatType": "Compressed", "DownloadLink": "https://zipped"},
            {"FormatType": "Extracted", "DownloadLink": "https://download.example/x/$value",
             "Checksum": [{"Algorithm": "MD5", "Value": "abc"}]}
        ]);
        let page = parse_page(page.to_string().as_bytes()).unwrap();
        assert_eq!(page.count, Some(47));
        let granule = page.products[0].granule.as_ref().unwrap();
        assert_eq!(granule.download_url, "https://download.example/x/$value");
        assert_eq!(granule.checksum.as_deref(), Some("abc"));
    }

    #[test]
    fn timestamps_are_read_leniently() {
        let mut page: Value =
            serde_json::from_slice(&fixture("cdse-odata-products-page.json")).unwrap();
        let expected: DateTime<Utc> = "2024-04-01T10:00:00.123Z".parse().unwrap();
        for text in [
            "2024-04-01T10:00:00.123Z",
            "2024-04-01T10:00:00.123000Z",
            "2024-04-01T10:00:00.123+00:00",
            "2024-04-01T10:00:00.123",
        ] {
            page["value"][0]["PublicationDate"] = text.into();
            let parsed = parse_page(page.to_string().as_bytes()).unwrap();
            assert_eq!(parsed.products[0].published, Some(expected), "{text}");
            assert_eq!(
                parsed.products[0].granule.as_ref().unwrap().ingestion_date,
                expected,
                "{text}"
            );
        }
    }

    #[test]
    fn bad_products_are_rejected_one_by_one_with_reasons() {
        let mut page: Value =
            serde_json::from_slice(&fixture("cdse-odata-products-page.json")).unwrap();
        let good = page["value"][0].clone();
        let mut cases = Vec::new();
        let mut no_name = good.clone();
        no_name.as_object_mut().unwrap().remove("Name");
        cases.push((no_name, "Name is missing"));
        let mut bad_date = good.clone();
        bad_date["ContentDate"]["Start"] = "yesterday".into();
        cases.push((
            bad_date,
            "ContentDate/Start \"yesterday\" is not a timestamp",
        ));
        let mut long_name = good.clone();
        long_name["Name"] = format!("S2A_MSIL1C_T54PXA_{}", "x".repeat(300)).into();
        cases.push((long_name, "filename is 318 characters long"));
        let mut bad_size = good.clone();
        bad_size["ContentLength"] = "big".into();
        cases.push((bad_size, "ContentLength \"big\" is not an integer"));
        let mut no_tile = good.clone();
        no_tile["Name"] = "S2A_MSIL1C_no_tile.SAFE".into();
        no_tile["Attributes"] = serde_json::json!([]);
        cases.push((no_tile, "no MGRS tile id"));
        let mut no_id = good.clone();
        no_id.as_object_mut().unwrap().remove("Id");
        cases.push((no_id, "Id is missing"));
        cases.push((Value::String("oops".into()), "is not a JSON object"));

        let expected: Vec<&str> = cases.iter().map(|(_, reason)| *reason).collect();
        let mut values: Vec<Value> = cases.into_iter().map(|(product, _)| product).collect();
        values.push(good);
        page["value"] = values.into();
        let parsed = parse_page(page.to_string().as_bytes()).unwrap();
        assert_eq!(parsed.products.len(), expected.len() + 1);
        for (product, reason) in parsed.products.iter().zip(&expected) {
            let error = product.granule.as_ref().unwrap_err();
            assert!(error.contains(reason), "{error:?} should say {reason:?}");
        }
        assert_eq!(
            parsed.products[0].id,
            "05edf2bb-d103-49f1-a677-9e474138d84f"
        );
        assert_eq!(parsed.products[5].id, "<product 5 without Id>");
        assert!(parsed.products.last().unwrap().granule.is_ok());
    }

    #[test]
    fn a_product_serde_refuses_is_rejected_alone_with_the_fields_path() {
        let page = String::from_utf8(fixture("cdse-odata-products-page.json")).unwrap();
        // The second product's first attribute gets its `Name` twice.
        let second = page.match_indices("\"Attributes\"").nth(1).unwrap().0;
        let name = second + page[second..].find("\"Name\"").unwrap();
        let page = format!("{}\"Name\": \"x\", {}", &page[..name], &page[name..]);
        let parsed = parse_page(page.as_bytes()).unwrap();
        assert!(parsed.products[0].granule.is_ok());
        let reason = parsed.products[1].granule.as_ref().unwrap_err();
        assert!(
            reason.starts_with("Attributes[0]: duplicate field `Name`"),
            "{reason}"
        );
        assert_eq!(parsed.products[1].id, "<product 1 without Id>");
    }

    #[test]
    fn a_body_that_is_not_a_page_fails_with_its_message() {
        let error = parse_page(b"<html>Bad Gateway</html>").unwrap_err();
        assert!(matches!(error, CatalogueError::Malformed(_)));
        assert!(
            error.to_string().contains("<html>Bad Gateway</html>"),
            "{error}"
        );
        let error = parse_page(&fixture("cdse-odata-error-skip.json")).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("query.$skip: Input should be less than or equal to 10000"),
            "{error}"
        );
        let error = parse_page(br#"{"value": 3}"#).unwrap_err();
        assert!(error.to_string().contains("no \"value\" array"), "{error}");
        let error = parse_page(br#"{"value": [], "@odata.count": "x"}"#).unwrap_err();
        assert!(error.to_string().contains("@odata.count"), "{error}");
    }

    #[test]
    fn retry_after_is_seconds_or_an_http_date() {
        let now: DateTime<Utc> = "2024-04-01T10:00:00Z".parse().unwrap();
        assert_eq!(parse_retry_after("3", now), Some(Duration::from_secs(3)));
        assert_eq!(
            parse_retry_after("Mon, 01 Apr 2024 10:00:05 GMT", now),
            Some(Duration::from_secs(5))
        );
        assert_eq!(
            parse_retry_after("Mon, 01 Apr 2024 09:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }
}
