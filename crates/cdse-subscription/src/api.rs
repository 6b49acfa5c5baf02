//! The CDSE Subscriptions API (`docs/cdse-catalogue.md`, "Subscriptions"): its model (subscriptions,
//! their ids and statuses, the push request HLS makes) and the client that
//! calls it with the account's bearer token.

use hls_core::Password;
use hls_core::domain::text::http_url;
use hls_core::domain::text::short;
use reqwest::{Method, header};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use url::Url;

use crate::REQUEST_TIMEOUT;
use crate::error::{Service, SubscriptionsError, check_status, unreachable};
use crate::token::TokenSession;

/// The Subscriptions collection (`CDSE_SUBSCRIPTIONS_URL`'s default).
pub const DEFAULT_SUBSCRIPTIONS_URL: &str =
    "https://catalogue.dataspace.copernicus.eu/odata/v1/Subscriptions";
/// The products HLS subscribes to: Sentinel-2 Level-1C.
pub const S2_L1C_FILTER: &str = "Collection/Name eq 'SENTINEL-2' and \
     Attributes/OData.CSC.StringAttribute/any(att:att/Name eq 'productType' \
     and att/OData.CSC.StringAttribute/Value eq 'S2MSI1C')";

/// A subscription's `Status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubscriptionStatus {
    Running,
    Paused,
    Cancelled,
}

impl SubscriptionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Paused => "paused",
            Self::Cancelled => "cancelled",
        }
    }
}

/// A subscription id, checked before it goes into a URL path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionId(String);

impl std::str::FromStr for SubscriptionId {
    type Err = SubscriptionsError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let value = value.trim();
        if value.is_empty()
            || value.len() > 64
            || !value.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        {
            return Err(SubscriptionsError::Invalid(format!(
                "{:?} is not a subscription id (letters, digits and '-', as `cdse-subscription list` shows)",
                short(value, 80)
            )));
        }
        Ok(Self(value.to_owned()))
    }
}

impl SubscriptionId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for SubscriptionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// One subscription as CDSE describes it. The fields a table needs are typed;
/// the rest are kept as they came, except anything named like a password.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubscriptionInfo {
    #[serde(rename = "Id")]
    pub id: String,
    #[serde(rename = "Status", default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(
        rename = "SubscriptionType",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub subscription_type: Option<String>,
    #[serde(
        rename = "SubscriptionEvent",
        default,
        deserialize_with = "one_or_many"
    )]
    pub events: Vec<String>,
    #[serde(
        rename = "NotificationEndpoint",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub endpoint: Option<String>,
    #[serde(
        rename = "FilterParam",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub filter: Option<String>,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

impl SubscriptionInfo {
    pub fn is_running(&self) -> bool {
        self.status
            .as_deref()
            .is_some_and(|s| s.eq_ignore_ascii_case("running"))
    }

    fn parse(value: Value) -> Result<Self, String> {
        let mut info: Self = serde_json::from_value(value).map_err(|e| e.to_string())?;
        info.other
            .retain(|key, _| !key.to_ascii_lowercase().contains("password"));
        Ok(info)
    }
}

fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match Option::<OneOrMany>::deserialize(d)? {
        None => Vec::new(),
        Some(OneOrMany::One(event)) => vec![event],
        Some(OneOrMany::Many(events)) => events,
    })
}

/// The answer to `GET …/Subscriptions/Info`: a list, or an OData `value` list.
pub fn parse_subscription_list(body: &[u8]) -> Result<Vec<SubscriptionInfo>, String> {
    let json: Value = serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
    let items = match json {
        Value::Array(items) => items,
        Value::Object(mut object) => match object.remove("value") {
            Some(Value::Array(items)) => items,
            _ => return Err("neither a list nor an object with a \"value\" list".into()),
        },
        _ => return Err("neither a list nor an object with a \"value\" list".into()),
    };
    items
        .into_iter()
        .enumerate()
        .map(|(index, item)| SubscriptionInfo::parse(item).map_err(|e| format!("[{index}]: {e}")))
        .collect()
}

/// The one push subscription HLS needs: `created` events of Sentinel-2 L1C
/// products, posted to `endpoint` with Basic credentials.
#[derive(Debug, Clone)]
pub struct PushSubscriptionRequest {
    pub endpoint: Url,
    pub username: String,
    pub password: Password,
}

impl PushSubscriptionRequest {
    pub fn body(&self) -> Value {
        self.body_with_password(self.password.expose())
    }

    /// The body with the password masked, for printing.
    pub fn masked_body(&self) -> Value {
        self.body_with_password("********")
    }

    fn body_with_password(&self, password: &str) -> Value {
        json!({
            "SubscriptionType": "push",
            "SubscriptionEvent": ["created"],
            "FilterParam": S2_L1C_FILTER,
            "Status": SubscriptionStatus::Running.as_str(),
            "StageOrder": true,
            "Priority": 1,
            "NotificationEndpoint": self.endpoint.as_str(),
            "NotificationEpUsername": self.username,
            "NotificationEpPassword": password,
        })
    }
}

/// `…/Subscriptions(<id>)`.
pub fn subscription_url(collection: &Url, id: &SubscriptionId) -> Url {
    with_path_suffix(collection, &format!("({id})"))
}

/// `…/Subscriptions/Info`.
pub fn list_url(collection: &Url) -> Url {
    with_path_suffix(collection, "/Info")
}

fn with_path_suffix(collection: &Url, suffix: &str) -> Url {
    let mut url = collection.clone();
    url.set_path(&format!(
        "{}{suffix}",
        collection.path().trim_end_matches('/')
    ));
    url
}

/// A base URL from a setting, checked to be http(s).
pub fn parse_base_url(name: &str, value: &str) -> Result<Url, SubscriptionsError> {
    http_url(value.trim())
        .map_err(|e| SubscriptionsError::Invalid(format!("{name} {value:?}: {e}")))
}

/// The Subscriptions API for one account.
pub struct SubscriptionsClient {
    http: reqwest::Client,
    collection: Url,
    session: TokenSession,
}

impl SubscriptionsClient {
    pub fn new(http: reqwest::Client, collection: Url, session: TokenSession) -> Self {
        Self {
            http,
            collection,
            session,
        }
    }

    pub async fn list(&self) -> Result<Vec<SubscriptionInfo>, SubscriptionsError> {
        let (status, body) = self
            .call(Method::GET, list_url(&self.collection), None)
            .await?;
        parse_subscription_list(&body).map_err(|reason| unexpected(status, reason))
    }

    pub async fn create(
        &self,
        request: &PushSubscriptionRequest,
    ) -> Result<SubscriptionInfo, SubscriptionsError> {
        let (status, body) = self
            .call(Method::POST, self.collection.clone(), Some(request.body()))
            .await?;
        serde_json::from_slice(&body)
            .map_err(|e| e.to_string())
            .and_then(SubscriptionInfo::parse)
            .map_err(|reason| unexpected(status, reason))
    }

    pub async fn set_status(
        &self,
        id: &SubscriptionId,
        status: SubscriptionStatus,
    ) -> Result<(), SubscriptionsError> {
        let body = json!({ "Status": status.as_str() });
        self.call(
            Method::PATCH,
            subscription_url(&self.collection, id),
            Some(body),
        )
        .await
        .map(drop)
    }

    /// Ends a subscription for good.
    pub async fn terminate(&self, id: &SubscriptionId) -> Result<(), SubscriptionsError> {
        self.call(Method::DELETE, subscription_url(&self.collection, id), None)
            .await
            .map(drop)
    }

    /// One call with a bearer token. A reused token that CDSE refuses (revoked,
    /// or the session ended early) is replaced once.
    async fn call(
        &self,
        method: Method,
        url: Url,
        body: Option<Value>,
    ) -> Result<(u16, Vec<u8>), SubscriptionsError> {
        let mut bearer = self.session.bearer().await?;
        loop {
            let mut request = self
                .http
                .request(method.clone(), url.clone())
                .bearer_auth(&bearer.token)
                .header(header::ACCEPT, "application/json")
                .timeout(REQUEST_TIMEOUT);
            if let Some(body) = &body {
                request = request.json(body);
            }
            let response = request
                .send()
                .await
                .map_err(|e| unreachable(Service::Subscriptions, &url, &e))?;
            let status = response.status().as_u16();
            let bytes = response
                .bytes()
                .await
                .map_err(|e| unreachable(Service::Subscriptions, &url, &e))?;
            if status == 401 && bearer.reused {
                tracing::debug!("CDSE refused a reused token; getting a new one");
                self.session.forget_access_token().await;
                bearer = self.session.bearer().await?;
                continue;
            }
            check_status(Service::Subscriptions, status, &bytes)?;
            return Ok((status, bytes.to_vec()));
        }
    }
}

fn unexpected(status: u16, reason: String) -> SubscriptionsError {
    SubscriptionsError::Unexpected {
        service: Service::Subscriptions,
        status,
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_push_request_is_hls_subscription_and_masks_its_password() {
        let request = PushSubscriptionRequest {
            endpoint: Url::parse("https://api.example.org/events").unwrap(),
            username: "esa".into(),
            password: Password::new("hunter2"),
        };
        let body = request.body();
        assert_eq!(body["SubscriptionType"], "push");
        assert_eq!(body["SubscriptionEvent"], json!(["created"]));
        assert_eq!(body["Status"], "running");
        assert_eq!(
            body["NotificationEndpoint"],
            "https://api.example.org/events"
        );
        assert_eq!(body["NotificationEpUsername"], "esa");
        assert_eq!(body["NotificationEpPassword"], "hunter2");
        let filter = body["FilterParam"].as_str().unwrap();
        assert!(filter.contains("'SENTINEL-2'") && filter.contains("'S2MSI1C'"));
        let masked = request.masked_body();
        assert_eq!(masked["NotificationEpPassword"], "********");
        assert!(!masked.to_string().contains("hunter2"));
        assert!(!format!("{request:?}").contains("hunter2"));
    }

    #[test]
    fn urls_address_one_subscription_or_the_list() {
        let collection = Url::parse("https://c.example/odata/v1/Subscriptions").unwrap();
        let id: SubscriptionId = "991c4730-cf6f-432a-9f6c-47be0230ff45".parse().unwrap();
        assert_eq!(
            subscription_url(&collection, &id).as_str(),
            "https://c.example/odata/v1/Subscriptions(991c4730-cf6f-432a-9f6c-47be0230ff45)"
        );
        assert_eq!(
            list_url(&collection).as_str(),
            "https://c.example/odata/v1/Subscriptions/Info"
        );
        for bad in ["", "a/b", "x)?$filter", "../Products", &"a".repeat(65)] {
            assert!(bad.parse::<SubscriptionId>().is_err(), "{bad:?}");
        }
        assert!(parse_base_url("CDSE_SUBSCRIPTIONS_URL", "ftp://x").is_err());
        assert!(parse_base_url("CDSE_SUBSCRIPTIONS_URL", "not a url").is_err());
    }

    #[test]
    fn subscription_lists_are_read_in_either_shape_without_passwords() {
        let one = json!({
            "Id": "s1", "Status": "running", "SubscriptionType": "push",
            "SubscriptionEvent": ["created"], "NotificationEndpoint": "https://e/events",
            "NotificationEpUsername": "esa", "NotificationEpPassword": "hunter2",
            "FilterParam": "f", "SubmissionDate": "2024-01-01T00:00:00Z"
        });
        let two = json!({ "Id": "s2", "Status": "paused", "SubscriptionEvent": "created" });
        let plain = parse_subscription_list(json!([one, two]).to_string().as_bytes()).unwrap();
        let wrapped =
            parse_subscription_list(json!({ "value": [one, two] }).to_string().as_bytes()).unwrap();
        assert_eq!(plain, wrapped);
        assert!(plain[0].is_running() && !plain[1].is_running());
        assert_eq!(plain[1].events, ["created"]);
        assert_eq!(plain[0].other["SubmissionDate"], "2024-01-01T00:00:00Z");
        assert!(!serde_json::to_string(&plain).unwrap().contains("hunter2"));
        assert!(parse_subscription_list(b"{}").is_err());
        assert!(parse_subscription_list(br#"[{"Status":"running"}]"#).is_err());
    }
}
