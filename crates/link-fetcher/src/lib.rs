//! The polling link fetcher: Lambda events and the command line, translated into
//! calls of [`hls_core::use_cases::day_fetch::fetch_day`].

pub mod progress;
pub mod settings;

use anyhow::Context as _;
use chrono::NaiveDate;
use hls_core::adapters::catalogue::{CatalogueError, ODataCatalogue, Platform, distinct_causes};
use hls_core::adapters::metrics::{Metric, Metrics, median_and_p99};
use hls_core::config;
use hls_core::domain::text::short;
use hls_core::use_cases::audit::{DayAudit, audit_day};
use hls_core::use_cases::day_fetch::{
    DayFetchError, DaySummary, Deadline, DryRun, FetchOptions, Progress, StoreRecorder, fetch_day,
};
use hls_core::{
    FoundBy, Granule, GranuleStore, Handoff, RecordError, SqsQueue, StoreError, TileSet,
    adapters::catalogue::DayQuery,
};
use lambda_runtime::LambdaEvent;
use serde_json::{Value, json};
use settings::{SearchSettings, Settings, StoreSettings};

/// What CloudFormation is told the schema resource is called.
pub const SCHEMA_RESOURCE_ID: &str = "hls-link-fetcher-schema";
/// The longest `date_platform_pairs.days` accepted.
pub const MAX_DAYS: u64 = 366;

/// An invocation, in one of the shapes the state machine and CloudFormation send.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(try_from = "Value")]
pub enum Event {
    /// `{"query_date_platform": ["2024-04-01", "S2A"]}`: one day of one platform.
    DatePlatform { date: NaiveDate, platform: Platform },
    /// `{"query_date": "2024-04-01"}`: one day of every platform.
    Date { date: NaiveDate },
    /// `{"date_platform_pairs": {"days": 5, "end": "2024-04-06", "platforms": ["S2A", "S2B"]}}`:
    /// the pairs the state machine then fetches one by one.
    DatePlatformPairs(DayRange),
    /// `{"audit": {"days": 3, "end": "2024-04-06", "platforms": [...], "requeue": true}}`:
    /// the completeness audit of those days.
    Audit { range: DayRange, requeue: bool },
    /// `{"send_owed": true}`: sends the messages still owed (the outbox).
    SendOwed,
    /// A CloudFormation custom-resource event (CDK `Provider`): Create and Update
    /// apply the schema migrations, Delete leaves the database alone.
    CustomResource { request_type: RequestType },
}

/// The `days` UTC days before `end` (exclusive; today when absent), as the
/// Python system's date generator counts them (`now`, `lookback_days`), for
/// each of `platforms`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DayRange {
    pub days: u64,
    pub end: Option<NaiveDate>,
    pub platforms: Vec<Platform>,
}

impl DayRange {
    /// The days, newest first.
    pub fn dates(&self, today: NaiveDate) -> Vec<NaiveDate> {
        let end = self.end.unwrap_or(today);
        (1..=self.days)
            .filter_map(|back| end.checked_sub_days(chrono::Days::new(back)))
            .collect()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestType {
    Create,
    Update,
    Delete,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid event: {0}")]
pub struct EventError(pub String);

fn invalid(message: impl Into<String>) -> EventError {
    EventError(message.into())
}

impl TryFrom<Value> for Event {
    type Error = EventError;

    fn try_from(event: Value) -> Result<Self, EventError> {
        let Value::Object(object) = &event else {
            return Err(invalid(format!(
                "expected a JSON object, got {}",
                quoted(&event)
            )));
        };
        if let Some(request_type) = object.get("RequestType") {
            let request_type = match request_type.as_str() {
                Some("Create") => RequestType::Create,
                Some("Update") => RequestType::Update,
                Some("Delete") => RequestType::Delete,
                _ => {
                    return Err(invalid(format!(
                        "RequestType {} is not Create, Update or Delete",
                        quoted(request_type)
                    )));
                }
            };
            return Ok(Self::CustomResource { request_type });
        }
        let keys = [
            "query_date_platform",
            "query_date",
            "date_platform_pairs",
            "audit",
            "send_owed",
        ];
        let present: Vec<&str> = keys
            .into_iter()
            .filter(|k| object.contains_key(*k))
            .collect();
        match present[..] {
            ["query_date_platform"] => {
                let value = &object["query_date_platform"];
                let pair = value
                    .as_array()
                    .filter(|pair| pair.len() == 2)
                    .ok_or_else(|| {
                        invalid(format!(
                            "query_date_platform must be [\"YYYY-MM-DD\", \"S2A|S2B|S2C\"], got {}",
                            quoted(value)
                        ))
                    })?;
                Ok(Self::DatePlatform {
                    date: date_value("query_date_platform[0]", &pair[0])?,
                    platform: platform_value("query_date_platform[1]", &pair[1])?,
                })
            }
            ["query_date"] => Ok(Self::Date {
                date: date_value("query_date", &object["query_date"])?,
            }),
            ["date_platform_pairs"] => Ok(Self::DatePlatformPairs(day_range(
                "date_platform_pairs",
                &object["date_platform_pairs"],
            )?)),
            ["audit"] => {
                let value = &object["audit"];
                let requeue = match value.get("requeue") {
                    None => false,
                    Some(Value::Bool(requeue)) => *requeue,
                    Some(other) => {
                        return Err(invalid(format!(
                            "audit.requeue must be true or false, got {}",
                            quoted(other)
                        )));
                    }
                };
                Ok(Self::Audit {
                    range: day_range("audit", value)?,
                    requeue,
                })
            }
            ["send_owed"] => match &object["send_owed"] {
                Value::Bool(true) => Ok(Self::SendOwed),
                other => Err(invalid(format!(
                    "send_owed must be true, got {}",
                    quoted(other)
                ))),
            },
            [] => Err(invalid(format!(
                "expected one of query_date_platform, query_date, date_platform_pairs, audit, \
                 send_owed or a CloudFormation RequestType; got keys {:?}",
                object.keys().take(10).collect::<Vec<_>>()
            ))),
            _ => Err(invalid(format!(
                "ambiguous event: it has {}",
                present.join(" and ")
            ))),
        }
    }
}

/// `{"days": N, "end"?: "YYYY-MM-DD", "platforms": [...]}` under `name`.
fn day_range(name: &str, value: &Value) -> Result<DayRange, EventError> {
    let days = value
        .get("days")
        .and_then(Value::as_u64)
        .filter(|d| (1..=MAX_DAYS).contains(d))
        .ok_or_else(|| {
            invalid(format!(
                "{name}.days must be an integer from 1 to {MAX_DAYS}, got {}",
                value.get("days").map_or("nothing".into(), quoted)
            ))
        })?;
    let end = value
        .get("end")
        .map(|end| date_value(&format!("{name}.end"), end))
        .transpose()?;
    let list = value
        .get("platforms")
        .and_then(Value::as_array)
        .filter(|list| !list.is_empty())
        .ok_or_else(|| {
            invalid(format!(
                "{name}.platforms must be a non-empty list of S2A, S2B, S2C, got {}",
                value.get("platforms").map_or("nothing".into(), quoted)
            ))
        })?;
    let mut platforms = Vec::with_capacity(list.len());
    for (index, item) in list.iter().enumerate() {
        let platform = platform_value(&format!("{name}.platforms[{index}]"), item)?;
        if !platforms.contains(&platform) {
            platforms.push(platform);
        }
    }
    Ok(DayRange {
        days,
        end,
        platforms,
    })
}

fn date_value(name: &str, value: &Value) -> Result<NaiveDate, EventError> {
    let text = value.as_str().ok_or_else(|| {
        invalid(format!(
            "{name} must be a date string, got {}",
            quoted(value)
        ))
    })?;
    parse_date(text).map_err(|e| invalid(format!("{name}: {e}")))
}

fn platform_value(name: &str, value: &Value) -> Result<Platform, EventError> {
    let text = value.as_str().ok_or_else(|| {
        invalid(format!(
            "{name} must be S2A, S2B or S2C, got {}",
            quoted(value)
        ))
    })?;
    text.parse().map_err(|e| invalid(format!("{name}: {e}")))
}

/// A calendar day written exactly `YYYY-MM-DD`.
pub fn parse_date(text: &str) -> Result<NaiveDate, String> {
    let date = (text.len() == 10)
        .then(|| NaiveDate::parse_from_str(text, "%Y-%m-%d").ok())
        .flatten();
    date.ok_or_else(|| format!("{:?} is not a date of the form YYYY-MM-DD", short(text, 40)))
}

/// An event's value as JSON, cut for the error message.
fn quoted(value: &Value) -> String {
    short(&value.to_string(), 80)
}

/// The (day, platform) pairs of `range`, newest day first (its products are the
/// ones the download service waits for), each day in the order the platforms
/// were given.
pub fn date_platform_pairs(today: NaiveDate, range: &DayRange) -> Vec<(NaiveDate, Platform)> {
    range
        .dates(today)
        .into_iter()
        .flat_map(|date| range.platforms.iter().map(move |p| (date, *p)))
        .collect()
}

/// The search side, which needs neither database nor queue: enough for `--dry-run`.
#[derive(Debug, Clone)]
pub struct Search {
    pub catalogue: ODataCatalogue,
    pub tiles: TileSet,
    pub options: FetchOptions,
    pub max_acquisition_age: chrono::Duration,
}

impl Search {
    pub fn new(settings: SearchSettings) -> Result<Self, CatalogueError> {
        Ok(Self {
            catalogue: ODataCatalogue::new(&settings.search_url)?,
            tiles: settings.tiles,
            options: settings.options,
            max_acquisition_age: settings.max_acquisition_age,
        })
    }

    pub fn query(&self, date: NaiveDate, platform: Option<Platform>) -> DayQuery {
        DayQuery {
            date,
            platform,
            max_acquisition_age: self.max_acquisition_age,
        }
    }

    /// Queries the catalogue and hands each granule that would be queued to
    /// `on_granule`; records nothing.
    pub async fn dry_run(
        &self,
        date: NaiveDate,
        platform: Option<Platform>,
        on_granule: impl Fn(&Granule) + Sync,
        progress: &dyn Progress,
    ) -> Result<DaySummary, DayFetchError> {
        let recorder = DryRun { on_granule };
        let query = self.query(date, platform);
        fetch_day(
            &self.catalogue,
            &recorder,
            &self.tiles,
            &query,
            &self.options,
            Deadline::none(),
            progress,
        )
        .await
    }
}

/// Everything an invocation needs, built once per process.
#[derive(Debug, Clone)]
pub struct Dependencies {
    pub search: Search,
    /// Postgres and the `To Download` queue, tied by the outbox.
    pub handoff: Handoff<SqsQueue>,
    /// Where the CloudWatch metrics (EMF lines) go.
    pub metrics: Metrics,
}

impl Dependencies {
    /// The catalogue client, the AWS clients and a pool that connects on first
    /// use; the database secret, if one is named, is read now.
    pub async fn new(settings: Settings) -> anyhow::Result<Self> {
        let search = Search::new(settings.search)?;
        let aws = config::aws_sdk_config(settings.store.aws_attempt_timeout).await;
        let queue = SqsQueue::new(
            aws_sdk_sqs::Client::new(&aws),
            settings.queue_url,
            settings.send_concurrency,
        );
        let store = lazy_store(&settings.store.database, &aws).await?;
        Ok(Self {
            search,
            handoff: Handoff::new(store, queue, settings.lease),
            metrics: settings.metrics,
        })
    }

    pub fn store(&self) -> &GranuleStore {
        self.handoff.store()
    }

    /// Fetches one day (of one platform, or of all) until complete or the deadline.
    pub async fn fetch(
        &self,
        date: NaiveDate,
        platform: Option<Platform>,
        deadline: Deadline,
    ) -> Result<DaySummary, DayFetchError> {
        self.fetch_showing(date, platform, deadline, &()).await
    }

    /// [`Dependencies::fetch`], telling `progress` after each page.
    pub async fn fetch_showing(
        &self,
        date: NaiveDate,
        platform: Option<Platform>,
        deadline: Deadline,
        progress: &dyn Progress,
    ) -> Result<DaySummary, DayFetchError> {
        let recorder = StoreRecorder {
            handoff: &self.handoff,
        };
        let query = self.search.query(date, platform);
        let search = &self.search;
        let summary = fetch_day(
            &search.catalogue,
            &recorder,
            &search.tiles,
            &query,
            &search.options,
            deadline,
            progress,
        )
        .await?;
        let mut metrics = vec![
            Metric::count("NewGranules", summary.new_granules),
            Metric::count("ProductsExamined", summary.examined),
        ];
        if let Some((median, p99)) = median_and_p99(&summary.queue_delays_s) {
            metrics.push(Metric::seconds("QueueDelayMedian", median));
            metrics.push(Metric::seconds("QueueDelayP99", p99));
        }
        self.metrics
            .emit(query.platform_label(), FoundBy::Poll.as_str(), &metrics);
        self.emit_oldest_unsent().await;
        Ok(summary)
    }

    /// Audits each (day, platform) of `dates` × `platforms`, oldest day first,
    /// handing each line to `on_line` as it is done. With `requeue` the owed
    /// messages are sent first and the missing granules recorded and queued.
    pub async fn audit(
        &self,
        dates: &[NaiveDate],
        platforms: &[Platform],
        requeue: bool,
        deadline: Deadline,
        on_line: impl FnMut(&DayAudit),
    ) -> Result<Vec<DayAudit>, RecordError> {
        self.audit_showing(dates, platforms, requeue, deadline, on_line, &())
            .await
    }

    /// [`Dependencies::audit`], telling `progress` after each page of each day.
    pub async fn audit_showing(
        &self,
        dates: &[NaiveDate],
        platforms: &[Platform],
        requeue: bool,
        deadline: Deadline,
        mut on_line: impl FnMut(&DayAudit),
        progress: &dyn Progress,
    ) -> Result<Vec<DayAudit>, RecordError> {
        if requeue {
            // A queue still down shows in the lines (`unsent`) and in the requeue's own error.
            match self.handoff.send_owed(deadline.stop_at()).await {
                Ok(sent) => tracing::info!(owed_sent = sent, "owed messages sent before the audit"),
                Err(error) => tracing::error!(%error, "owed messages not sent; auditing anyway"),
            }
        }
        let mut dates = dates.to_vec();
        dates.sort_unstable();
        let mut lines = Vec::with_capacity(dates.len() * platforms.len());
        for date in dates {
            for platform in platforms {
                let query = self.search.query(date, Some(*platform));
                let line = audit_day(
                    &self.search.catalogue,
                    &self.search.tiles,
                    &query,
                    &self.search.options,
                    deadline,
                    &self.handoff,
                    requeue,
                    progress,
                )
                .await?;
                for (path, metrics) in line.metrics() {
                    self.metrics.emit(&line.platform, path, &metrics);
                }
                tracing::info!(
                    query_date = %line.query_date,
                    platform = %line.platform,
                    complete = line.complete,
                    missing = line.missing,
                    requeued = line.requeued,
                    "day audited"
                );
                on_line(&line);
                lines.push(line);
            }
        }
        self.emit_oldest_unsent().await;
        Ok(lines)
    }

    /// Sends the owed messages within the deadline; returns how many were sent
    /// and how many are still owed.
    pub async fn send_owed(&self, deadline: Deadline) -> Result<(usize, i64), RecordError> {
        let sent = self.handoff.send_owed(deadline.stop_at()).await;
        self.emit_oldest_unsent().await;
        let sent = sent?;
        let still_owed = self.store().owed_count().await?;
        Ok((sent, still_owed))
    }

    /// `OldestUnsentAge`: the alarm on messages unsent for over an hour reads it.
    async fn emit_oldest_unsent(&self) {
        match self.store().oldest_owed_age().await {
            Ok(age) => self.metrics.emit(
                "all",
                "outbox",
                &[Metric::seconds("OldestUnsentAge", age.as_secs_f64())],
            ),
            Err(error) => tracing::warn!(%error, "cannot read the age of the oldest owed message"),
        }
    }
}

/// The store over a pool that connects on first use, so that an invocation
/// that needs no database (or a database down at start) does not fail to start.
async fn lazy_store(
    database: &config::DatabaseSettings,
    aws: &aws_config::SdkConfig,
) -> anyhow::Result<GranuleStore> {
    Ok(GranuleStore::new(database.connect_lazy(aws).await?))
}

#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    #[error(transparent)]
    Event(#[from] EventError),
    #[error("fetching {what}: {source}")]
    Fetch {
        what: String,
        #[source]
        source: DayFetchError,
    },
    #[error("applying the schema: {0}")]
    Migrate(#[from] StoreError),
    #[error("audit: {0}")]
    Audit(#[source] RecordError),
    #[error("sending owed messages: {0}")]
    SendOwed(#[source] RecordError),
}

/// What Lambda reports (and the state machine sees as the error name): the kind
/// of failure, and the full message with its causes.
impl From<HandlerError> for lambda_runtime::Diagnostic {
    fn from(error: HandlerError) -> Self {
        let error_type = match &error {
            HandlerError::Event(_) => "InvalidEvent",
            HandlerError::Fetch {
                source: DayFetchError::Catalogue { .. } | DayFetchError::SkipCap { .. },
                ..
            } => "CatalogueError",
            HandlerError::Fetch {
                source: DayFetchError::NoTime { .. },
                ..
            } => "ConfigurationError",
            HandlerError::Fetch { .. } | HandlerError::Audit(_) | HandlerError::SendOwed(_) => {
                "RecordError"
            }
            HandlerError::Migrate(_) => "SchemaError",
        };
        Self {
            error_type: error_type.into(),
            error_message: error.to_string(),
        }
    }
}

/// The Lambda handler.
pub async fn handle(event: LambdaEvent<Value>, deps: &Dependencies) -> Result<Value, HandlerError> {
    let (payload, context) = event.into_parts();
    let event = Event::try_from(payload)?;
    let deadline =
        Deadline::from_epoch_millis(context.deadline, deps.search.options.deadline_margin);
    match event {
        Event::DatePlatform { date, platform } => {
            let summary = fetch_logged(deps, date, Some(platform), deadline).await?;
            Ok(json!({
                "query_date_platform": [date.to_string(), platform.as_str()],
                "completed": summary.completed,
            }))
        }
        Event::Date { date } => {
            let summary = fetch_logged(deps, date, None, deadline).await?;
            Ok(json!({"query_date": date.to_string(), "completed": summary.completed}))
        }
        Event::DatePlatformPairs(range) => {
            let today = chrono::Utc::now().date_naive();
            let pairs: Vec<Value> = date_platform_pairs(today, &range)
                .into_iter()
                .map(|(date, platform)| {
                    json!({"query_date_platform": [date.to_string(), platform.as_str()]})
                })
                .collect();
            Ok(json!({"query_date_platforms": pairs}))
        }
        Event::Audit { range, requeue } => {
            let dates = range.dates(chrono::Utc::now().date_naive());
            let lines = deps
                .audit(&dates, &range.platforms, requeue, deadline, |_| {})
                .await
                .map_err(HandlerError::Audit)?;
            Ok(json!({ "audit": lines }))
        }
        Event::SendOwed => {
            let (sent, still_owed) = deps
                .send_owed(deadline)
                .await
                .map_err(HandlerError::SendOwed)?;
            Ok(json!({"owed_sent": sent, "still_owed": still_owed}))
        }
        Event::CustomResource { request_type } => {
            match request_type {
                RequestType::Create | RequestType::Update => {
                    deps.store().migrate().await?;
                    tracing::info!(?request_type, "schema migrations applied");
                }
                RequestType::Delete => {
                    tracing::info!("stack deletion: the database and its data are kept");
                }
            }
            Ok(json!({"PhysicalResourceId": SCHEMA_RESOURCE_ID}))
        }
    }
}

async fn fetch_logged(
    deps: &Dependencies,
    date: NaiveDate,
    platform: Option<Platform>,
    deadline: Deadline,
) -> Result<DaySummary, HandlerError> {
    let summary = deps
        .fetch(date, platform, deadline)
        .await
        .map_err(|source| HandlerError::Fetch {
            what: format!(
                "{date} {}",
                platform.map_or(
                    hls_core::adapters::catalogue::ALL_PLATFORMS,
                    Platform::as_str
                )
            ),
            source,
        })?;
    tracing::info!(
        summary = %serde_json::to_string(&summary).unwrap_or_default(),
        "summary"
    );
    Ok(summary)
}

/// What the command line prints for a failure: one line, each cause once (the
/// causes of reqwest and hyper repeat one another). `verbose` adds a second
/// line with the failed request: its URL (the whole query) and the transport's
/// own description of the fault.
pub fn error_report(error: &anyhow::Error, verbose: bool) -> String {
    let mut report = format!("link-fetcher: {}", distinct_causes(error.as_ref()));
    let request = error
        .chain()
        .find_map(|e| e.downcast_ref::<CatalogueError>())
        .and_then(CatalogueError::request);
    if let (true, Some(request)) = (verbose, request) {
        report.push_str(&format!(
            "\nlink-fetcher: the last request: GET {}",
            request.url
        ));
        if let Some(cause) = &request.cause {
            report.push_str(&format!(": {cause}"));
        }
    }
    report
}

/// `migrate`: the schema, from the database settings alone.
pub async fn migrate(settings: &StoreSettings) -> anyhow::Result<()> {
    let aws = config::aws_sdk_config(settings.aws_attempt_timeout).await;
    let store = lazy_store(&settings.database, &aws).await?;
    store.migrate().await.context("applying the schema")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Event, String> {
        serde_json::from_str::<Event>(text).map_err(|e| e.to_string())
    }

    fn day(text: &str) -> NaiveDate {
        text.parse().unwrap()
    }

    #[test]
    fn every_event_shape_parses() {
        assert_eq!(
            parse(r#"{"query_date_platform": ["2024-04-01", "S2A"]}"#).unwrap(),
            Event::DatePlatform {
                date: day("2024-04-01"),
                platform: Platform::S2A
            }
        );
        assert_eq!(
            parse(r#"{"query_date": "2024-04-01"}"#).unwrap(),
            Event::Date {
                date: day("2024-04-01")
            }
        );
        assert_eq!(
            parse(r#"{"date_platform_pairs": {"days": 5, "platforms": ["S2A", "S2C", "S2A"]}}"#)
                .unwrap(),
            Event::DatePlatformPairs(DayRange {
                days: 5,
                end: None,
                platforms: vec![Platform::S2A, Platform::S2C]
            })
        );
        assert_eq!(
            parse(
                r#"{"date_platform_pairs": {"days": 2, "end": "2025-01-22", "platforms": ["S2B"]}}"#
            )
            .unwrap(),
            Event::DatePlatformPairs(DayRange {
                days: 2,
                end: Some(day("2025-01-22")),
                platforms: vec![Platform::S2B]
            })
        );
        assert_eq!(
            parse(r#"{"audit": {"days": 3, "platforms": ["S2A", "S2B", "S2C"], "requeue": true}}"#)
                .unwrap(),
            Event::Audit {
                range: DayRange {
                    days: 3,
                    end: None,
                    platforms: Platform::ALL.to_vec()
                },
                requeue: true
            }
        );
        assert_eq!(
            parse(r#"{"audit": {"days": 1, "end": "2024-04-02", "platforms": ["S2C"]}}"#).unwrap(),
            Event::Audit {
                range: DayRange {
                    days: 1,
                    end: Some(day("2024-04-02")),
                    platforms: vec![Platform::S2C]
                },
                requeue: false
            }
        );
        assert_eq!(parse(r#"{"send_owed": true}"#).unwrap(), Event::SendOwed);
        for (request, expected) in [
            ("Create", RequestType::Create),
            ("Update", RequestType::Update),
            ("Delete", RequestType::Delete),
        ] {
            let event = json!({
                "RequestType": request,
                "ServiceToken": "arn:aws:lambda:us-west-2:123:function:provider",
                "ResponseURL": "https://cloudformation-custom-resource-response-uswest2.s3.amazonaws.com/x",
                "StackId": "arn:aws:cloudformation:us-west-2:123:stack/s/1",
                "RequestId": "r",
                "LogicalResourceId": "SchemaMigrations",
                "ResourceType": "Custom::HlsLinkFetcherSchemaMigrations",
                "ResourceProperties": {"LinkFetcherCodeHash": "abc"}
            });
            assert_eq!(
                Event::try_from(event).unwrap(),
                Event::CustomResource {
                    request_type: expected
                }
            );
        }
        // A previous round's result may be sent back: extra keys are ignored.
        assert!(
            parse(r#"{"query_date_platform": ["2024-04-01", "S2B"], "completed": false}"#).is_ok()
        );
    }

    #[test]
    fn every_bad_event_says_what_is_wrong() {
        for (text, says) in [
            (r#"[]"#, "expected a JSON object"),
            (r#"{}"#, "expected one of query_date_platform"),
            (r#"{"date": "2024-04-01"}"#, r#"got keys ["date"]"#),
            (
                r#"{"query_date": "2024-04-01", "query_date_platform": ["2024-04-01", "S2A"]}"#,
                "ambiguous event",
            ),
            (
                r#"{"query_date": "2024-13-01"}"#,
                r#"query_date: "2024-13-01" is not a date"#,
            ),
            (
                r#"{"query_date": "2024-4-1"}"#,
                r#"query_date: "2024-4-1" is not a date"#,
            ),
            (
                r#"{"query_date": 20240401}"#,
                "query_date must be a date string",
            ),
            (
                r#"{"query_date_platform": ["2024-04-01", "S2D"]}"#,
                r#"query_date_platform[1]: unknown platform "S2D""#,
            ),
            (
                r#"{"query_date_platform": ["2024-02-30", "S2A"]}"#,
                "query_date_platform[0]: \"2024-02-30\" is not a date",
            ),
            (
                r#"{"query_date_platform": ["2024-04-01"]}"#,
                "query_date_platform must be [",
            ),
            (
                r#"{"query_date_platform": "2024-04-01,S2A"}"#,
                "query_date_platform must be [",
            ),
            (
                r#"{"query_date_platform": ["2024-04-01", 1]}"#,
                "query_date_platform[1] must be S2A, S2B or S2C",
            ),
            (
                r#"{"date_platform_pairs": {"days": 0, "platforms": ["S2A"]}}"#,
                "days must be an integer from 1 to 366, got 0",
            ),
            (
                r#"{"date_platform_pairs": {"platforms": ["S2A"]}}"#,
                "got nothing",
            ),
            (
                r#"{"date_platform_pairs": {"days": 2, "platforms": []}}"#,
                "platforms must be a non-empty list",
            ),
            (
                r#"{"date_platform_pairs": {"days": 2, "platforms": ["S2A", "L8"]}}"#,
                r#"platforms[1]: unknown platform "L8""#,
            ),
            (
                r#"{"audit": {"days": 3, "platforms": ["S2A"], "requeue": "yes"}}"#,
                r#"audit.requeue must be true or false, got "yes""#,
            ),
            (
                r#"{"audit": {"days": 400, "platforms": ["S2A"]}}"#,
                "audit.days must be an integer from 1 to 366, got 400",
            ),
            (
                r#"{"date_platform_pairs": {"days": 2, "end": "2025-1-22", "platforms": ["S2A"]}}"#,
                r#"date_platform_pairs.end: "2025-1-22" is not a date"#,
            ),
            (r#"{"send_owed": 1}"#, "send_owed must be true, got 1"),
            (
                r#"{"send_owed": true, "audit": {}}"#,
                "ambiguous event: it has audit and send_owed",
            ),
            (
                r#"{"RequestType": "Replace"}"#,
                r#"RequestType "Replace" is not Create, Update or Delete"#,
            ),
        ] {
            let error = parse(text).unwrap_err();
            assert!(
                error.contains(says),
                "{text}: {error:?} should say {says:?}"
            );
            assert!(error.starts_with("invalid event: "), "{error}");
        }
    }

    #[test]
    fn pairs_are_the_days_before_the_end_as_in_the_python_system() {
        let range = |days, end: Option<&str>| DayRange {
            days,
            end: end.map(day),
            platforms: vec![Platform::S2A, Platform::S2B],
        };
        // The Python date generator's own example: now 2024-03-02, 3 days back.
        let pairs = date_platform_pairs(day("2030-01-01"), &range(3, Some("2024-03-02")));
        let expected: Vec<(NaiveDate, Platform)> = [
            ("2024-03-01", Platform::S2A),
            ("2024-03-01", Platform::S2B),
            ("2024-02-29", Platform::S2A),
            ("2024-02-29", Platform::S2B),
            ("2024-02-28", Platform::S2A),
            ("2024-02-28", Platform::S2B),
        ]
        .into_iter()
        .map(|(d, p)| (day(d), p))
        .collect();
        assert_eq!(pairs, expected);
        // Without an end, today is the end: today itself is not included.
        let dates = range(2, None).dates(day("2025-01-03"));
        assert_eq!(dates, [day("2025-01-02"), day("2025-01-01")]);
    }

    #[test]
    fn the_state_machine_sends_events_the_handler_reads() {
        // The events the deployed state machine and rules send, checked against the
        // synthesized stack by the infrastructure tests.
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../infra/test/fixtures/state-machine-events.json"
        );
        let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let events: Value = serde_json::from_str(&text).unwrap();
        let pairs: Event = serde_json::from_value(events["pairs_request"].clone()).unwrap();
        let Event::DatePlatformPairs(range) = pairs else {
            panic!("pairs_request parsed as {pairs:?}");
        };
        assert!(range.days >= 1 && !range.platforms.is_empty());
        let backfill: Event =
            serde_json::from_value(events["backfill_pairs_request"].clone()).unwrap();
        assert!(
            matches!(
                &backfill,
                Event::DatePlatformPairs(DayRange { end: Some(_), .. })
            ),
            "{backfill:?}"
        );
        let audit: Event = serde_json::from_value(events["audit_request"].clone()).unwrap();
        assert!(
            matches!(&audit, Event::Audit { requeue: true, .. }),
            "{audit:?}"
        );
        let flush: Event = serde_json::from_value(events["send_owed_request"].clone()).unwrap();
        assert_eq!(flush, Event::SendOwed);
        let item: Event = serde_json::from_value(events["fetch_item"].clone()).unwrap();
        assert!(matches!(item, Event::DatePlatform { .. }), "{item:?}");
        // Each pair the handler answers is, as it is, a fetch_item event.
        for (date, platform) in date_platform_pairs(day("2024-04-01"), &range) {
            let item = json!({"query_date_platform": [date.to_string(), platform.as_str()]});
            assert_eq!(
                Event::try_from(item).unwrap(),
                Event::DatePlatform { date, platform }
            );
        }
    }

    #[test]
    fn an_error_report_is_one_line_and_the_request_only_when_verbose() {
        use hls_core::adapters::catalogue::{FailedRequest, Fault};
        let url = "https://catalogue.example/odata/v1/Products?$filter=very+long";
        let error = anyhow::Error::new(DayFetchError::Catalogue {
            attempts: 4,
            elapsed: std::time::Duration::from_secs(29),
            source: CatalogueError::Unreachable {
                host: "catalogue.example".into(),
                fault: Fault::Dns,
                request: Box::new(FailedRequest {
                    url: url.into(),
                    cause: Some("dns error: failed to lookup address information".into()),
                }),
            },
        });
        assert_eq!(
            error_report(&error, false),
            "link-fetcher: catalogue catalogue.example unreachable (DNS lookup failed) after \
             4 attempts in 29 s; check the network or SEARCH_URL"
        );
        let verbose = error_report(&error, true);
        assert_eq!(verbose.lines().count(), 2, "{verbose}");
        assert_eq!(verbose.matches(url).count(), 1, "{verbose}");
        assert!(verbose.ends_with(": dns error: failed to lookup address information"));
    }

    #[test]
    fn dates_must_be_exactly_iso() {
        assert_eq!(parse_date("2024-02-29"), Ok(day("2024-02-29")));
        assert!(parse_date("2023-02-29").is_err());
        assert!(parse_date(" 2024-02-29").is_err());
        assert!(parse_date("2024-02-29T00:00:00").is_err());
    }
}
