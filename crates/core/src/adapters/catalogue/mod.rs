//! The search catalogue the polling fetcher pages through, behind one small trait
//! so that another catalogue can be added without touching the day's logic.
//!
//! One implementation: [`odata::ODataCatalogue`], CDSE's OData Products API.

use std::future::Future;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, NaiveTime, Utc};

use crate::domain::granule::Granule;
use crate::domain::text::short;

pub mod odata;

pub use odata::ODataCatalogue;

/// The `granule_count.platform` value of a run over every platform.
pub const ALL_PLATFORMS: &str = "S2A+S2B+S2C";

/// A Sentinel-2 satellite.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Platform {
    S2A,
    S2B,
    S2C,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown platform {0:?}: expected S2A, S2B or S2C")]
pub struct UnknownPlatform(pub String);

impl Platform {
    pub const ALL: [Platform; 3] = [Platform::S2A, Platform::S2B, Platform::S2C];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::S2A => "S2A",
            Self::S2B => "S2B",
            Self::S2C => "S2C",
        }
    }

    /// The catalogue's `platformSerialIdentifier`: the letter without `S2`.
    pub fn serial_identifier(self) -> &'static str {
        &self.as_str()[2..]
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Platform {
    type Err = UnknownPlatform;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|p| p.as_str() == value)
            .ok_or_else(|| UnknownPlatform(short(value, 40)))
    }
}

/// The products of one UTC publication day, and optionally one platform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DayQuery {
    pub date: NaiveDate,
    pub platform: Option<Platform>,
    /// Products acquired more than this long before the day are reprocessing, not news.
    pub max_acquisition_age: chrono::Duration,
}

impl DayQuery {
    /// The first instant of the day (inclusive).
    pub fn window_start(&self) -> DateTime<Utc> {
        self.date.and_time(NaiveTime::MIN).and_utc()
    }

    /// The first instant of the next day (exclusive): a product published at
    /// 23:59:59.5 belongs to this day.
    pub fn window_end(&self) -> DateTime<Utc> {
        self.window_start() + chrono::Duration::days(1)
    }

    /// The earliest acquisition start that is kept.
    pub fn acquired_since(&self) -> DateTime<Utc> {
        self.window_start() - self.max_acquisition_age
    }

    /// The `granule_count.platform` value of this query.
    pub fn platform_label(&self) -> &'static str {
        self.platform.map_or(ALL_PLATFORMS, Platform::as_str)
    }
}

/// One page of a day in `PublicationDate` order: the products published at or
/// after `from`, less the first `skip` of them (those published exactly at
/// `from` that were already examined; the catalogue breaks ties on the id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageRequest {
    pub from: DateTime<Utc>,
    pub skip: u32,
    pub top: u32,
    /// Ask for the number of products from `from` to the end of the day.
    pub count: bool,
    /// How long this one attempt may take.
    pub timeout: Duration,
}

/// A page as the catalogue gave it, in order.
#[derive(Debug, Clone, Default)]
pub struct CataloguePage {
    pub products: Vec<PageProduct>,
    /// The number of products matching the query, when it was asked for.
    pub count: Option<i64>,
}

/// One product of a page: a valid granule, or the reason it was rejected.
#[derive(Debug, Clone)]
pub struct PageProduct {
    /// The product id, or a placeholder naming its position when it has none.
    pub id: String,
    /// Its publication time, when readable (the page's position depends on it).
    pub published: Option<DateTime<Utc>>,
    pub granule: Result<Granule, String>,
}

/// Why one attempt failed. The messages name the catalogue's host and the kind
/// of fault, never the query URL (the whole filter, percent-encoded): that is
/// kept in [`FailedRequest`] for whoever asks for details.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CatalogueError {
    /// No answer: the name did not resolve, the connection failed, the attempt
    /// timed out or the answer was cut short. May pass.
    #[error("catalogue {host} unreachable ({fault})")]
    Unreachable {
        host: String,
        fault: Fault,
        request: Box<FailedRequest>,
    },
    /// HTTP 408, 429 or 5xx: may pass.
    #[error("catalogue {host} answered HTTP {status}: {message}")]
    Unavailable {
        host: String,
        status: u16,
        message: String,
        /// What the catalogue asked for in `Retry-After`.
        retry_after: Option<Duration>,
        request: Box<FailedRequest>,
    },
    /// The catalogue refused the request (a 4xx other than 408 and 429): a retry cannot help.
    #[error("catalogue {host} answered HTTP {status}: {message}")]
    Refused {
        host: String,
        status: u16,
        message: String,
        request: Box<FailedRequest>,
    },
    /// The answer is not the expected JSON page.
    #[error("catalogue page is not the expected JSON: {0}")]
    Malformed(String),
    #[error("catalogue client: {0}")]
    Client(String),
}

/// The kind of fault of an attempt that got no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    Dns,
    ConnectionRefused,
    Connection,
    Timeout,
    CutShort,
    Other,
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Dns => "DNS lookup failed",
            Self::ConnectionRefused => "connection refused",
            Self::Connection => "connection failed",
            Self::Timeout => "timed out",
            Self::CutShort => "the answer was cut short",
            Self::Other => "request failed",
        })
    }
}

/// The request behind a failure, for a verbose report: its URL, and the
/// transport's own description of the fault when there is one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedRequest {
    pub url: String,
    pub cause: Option<String>,
}

impl CatalogueError {
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unreachable { .. } | Self::Unavailable { .. })
    }

    /// What the catalogue asked for in `Retry-After`.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Unavailable { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// The failed request, when one was made.
    pub fn request(&self) -> Option<&FailedRequest> {
        match self {
            Self::Unreachable { request, .. }
            | Self::Unavailable { request, .. }
            | Self::Refused { request, .. } => Some(request),
            Self::Malformed(_) | Self::Client(_) => None,
        }
    }

    /// What the person who started the run can do about it, if anything.
    pub fn advice(&self) -> Option<&'static str> {
        match self {
            Self::Unreachable { .. } => Some("check the network or SEARCH_URL"),
            Self::Unavailable { .. } => Some("the catalogue is busy or down: try again later"),
            Self::Refused { .. } | Self::Malformed(_) | Self::Client(_) => None,
        }
    }
}

/// The text of `error` and of each of its causes that says something new: a
/// cause whose text is already contained (as reqwest's and hyper's repeat
/// theirs) is dropped. Joined with `": "`.
pub fn distinct_causes(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !cause_text.is_empty() && !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// A catalogue that pages through one day's products in publication order.
pub trait Catalogue: Send + Sync {
    /// One attempt at one page; retrying is the caller's policy.
    fn page(
        &self,
        query: &DayQuery,
        request: &PageRequest,
    ) -> impl Future<Output = Result<CataloguePage, CatalogueError>> + Send;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platforms_parse_and_map_to_serial_identifiers() {
        assert_eq!("S2B".parse::<Platform>().unwrap(), Platform::S2B);
        assert_eq!(Platform::S2C.serial_identifier(), "C");
        assert_eq!(
            "S2D".parse::<Platform>().unwrap_err().to_string(),
            r#"unknown platform "S2D": expected S2A, S2B or S2C"#
        );
        assert!("s2a".parse::<Platform>().is_err());
    }

    #[test]
    fn day_window_is_half_open_and_acquisition_reaches_back() {
        let query = DayQuery {
            date: NaiveDate::from_ymd_opt(2024, 4, 1).unwrap(),
            platform: None,
            max_acquisition_age: chrono::Duration::days(30),
        };
        assert_eq!(
            query.window_start().to_rfc3339(),
            "2024-04-01T00:00:00+00:00"
        );
        assert_eq!(query.window_end().to_rfc3339(), "2024-04-02T00:00:00+00:00");
        assert_eq!(
            query.acquired_since().to_rfc3339(),
            "2024-03-02T00:00:00+00:00"
        );
        assert_eq!(query.platform_label(), ALL_PLATFORMS);
    }

    #[derive(Debug, thiserror::Error)]
    #[error("{text}")]
    struct Chain {
        text: &'static str,
        source: Option<Box<Chain>>,
    }

    #[test]
    fn a_cause_already_said_is_not_said_again() {
        let chain = Chain {
            text: "error sending request",
            source: Some(Box::new(Chain {
                text: "client error (Connect)",
                source: Some(Box::new(Chain {
                    text: "tcp connect error: Connection refused (os error 111)",
                    source: Some(Box::new(Chain {
                        text: "Connection refused (os error 111)",
                        source: None,
                    })),
                })),
            })),
        };
        assert_eq!(
            distinct_causes(&chain),
            "error sending request: client error (Connect): tcp connect error: Connection \
             refused (os error 111)"
        );
    }

    #[test]
    fn messages_name_the_host_not_the_url() {
        let request = Box::new(FailedRequest {
            url: "http://catalogue.example/odata/v1/Products?$filter=long".into(),
            cause: None,
        });
        let error = CatalogueError::Unreachable {
            host: "catalogue.example".into(),
            fault: Fault::Dns,
            request: request.clone(),
        };
        assert_eq!(
            error.to_string(),
            "catalogue catalogue.example unreachable (DNS lookup failed)"
        );
        assert!(error.is_transient() && error.advice().is_some());
        let refused = CatalogueError::Refused {
            host: "catalogue.example".into(),
            status: 400,
            message: "Invalid filter".into(),
            request,
        };
        assert!(!refused.is_transient());
        assert!(!refused.to_string().contains("$filter"));
        assert!(refused.request().unwrap().url.contains("$filter"));
    }
}
