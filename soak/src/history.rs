//! The full history of a soak: every request and its answer, every fetch run and
//! its summary, every fault, every message the downloader received, and the
//! samples of the server's connections and memory. The checks read only this
//! and the database at the end; `history.jsonl` keeps it, in time order.

use std::io::Write;
use std::path::Path;
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;

static START: OnceLock<(Instant, DateTime<Utc>)> = OnceLock::new();

/// Starts the soak's clock; every time in the history is seconds since then.
pub fn start_clock() {
    START.get_or_init(|| (Instant::now(), Utc::now()));
}

/// Seconds since the soak started.
pub fn now() -> f64 {
    START
        .get()
        .expect("the clock is started first")
        .0
        .elapsed()
        .as_secs_f64()
}

/// An instant of the wall clock (milliseconds since the epoch, as SQS stamps
/// messages) on the soak's clock.
pub fn from_epoch_ms(ms: i64) -> f64 {
    let (_, started) = START.get().expect("the clock is started first");
    (ms - started.timestamp_millis()) as f64 / 1000.0
}

/// The wall-clock time of a point on the soak's clock.
pub fn to_utc(t: f64) -> DateTime<Utc> {
    let (_, started) = START.get().expect("the clock is started first");
    *started + chrono::Duration::microseconds((t * 1e6) as i64)
}

/// What a notification is, and so what it must be answered and leave behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A product nobody has seen: recorded and queued.
    New,
    /// A product of a catalogue day, which the poller finds too: recorded once.
    Known,
    /// Acquired more than 30 days ago: 204, nothing written.
    TooOld,
    /// On a tile HLS does not process: 204, nothing written.
    OtherTile,
    /// `modified` and `deleted` events: 204, nothing written.
    Modified,
    Deleted,
    /// Wrong password, no header, another scheme, garbled base64: 401.
    BadAuth,
    /// Cut short, not JSON, a field missing, no Extracted location: 400.
    BadJson,
    /// Over 1 MiB: 413.
    TooLarge,
}

impl Kind {
    pub const ALL: [Kind; 9] = [
        Kind::New,
        Kind::Known,
        Kind::TooOld,
        Kind::OtherTile,
        Kind::Modified,
        Kind::Deleted,
        Kind::BadAuth,
        Kind::BadJson,
        Kind::TooLarge,
    ];

    /// The product must be recorded and its message sent.
    pub fn is_recorded(self) -> bool {
        matches!(self, Kind::New | Kind::Known)
    }

    /// The answer that settles it (CDSE redelivers on 503 and on no answer).
    pub fn expected_status(self) -> u16 {
        match self {
            Kind::BadAuth => 401,
            Kind::BadJson => 400,
            Kind::TooLarge => 413,
            _ => 204,
        }
    }

    /// Whether a 503 is a correct answer: only where Postgres or SQS is touched.
    pub fn may_be_unavailable(self) -> bool {
        self.is_recorded()
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::New => "new",
            Kind::Known => "known to the poller",
            Kind::TooOld => "too old",
            Kind::OtherTile => "other tile",
            Kind::Modified => "modified",
            Kind::Deleted => "deleted",
            Kind::BadAuth => "bad auth",
            Kind::BadJson => "bad JSON",
            Kind::TooLarge => "too large",
        }
    }
}

/// One notification CDSE would send: its product id and kind. Its requests
/// (first delivery, redeliveries after 503, duplicates) point back to it.
#[derive(Debug, Clone, Serialize)]
pub struct Notification {
    pub product_id: String,
    pub kind: Kind,
    /// For `BadAuth` and `BadJson`: which way it is bad.
    pub variant: &'static str,
}

/// Why a request was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    First,
    /// The last answer was 503 or none: CDSE tries again later.
    Retry,
    /// CDSE delivers a notification it already delivered.
    Duplicate,
}

/// What came back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Answer {
    Status(u16),
    /// No answer within API Gateway's 29 s.
    Timeout,
    /// The connection failed.
    Transport(String),
}

impl Answer {
    pub fn label(&self) -> String {
        match self {
            Answer::Status(code) => code.to_string(),
            Answer::Timeout => "timeout".into(),
            Answer::Transport(_) => "connection error".into(),
        }
    }

    /// CDSE delivers again (503, or nothing came back).
    pub fn is_retried(&self) -> bool {
        !matches!(self, Answer::Status(code) if *code != 503)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Request {
    /// When it was sent.
    pub t: f64,
    pub latency_ms: f64,
    pub client: usize,
    pub notification: usize,
    pub reason: Reason,
    pub answer: Answer,
    /// For 401: whether `WWW-Authenticate: Basic` came with it; for 4xx: the error text.
    pub detail: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct FetchRun {
    pub run: usize,
    pub day: NaiveDate,
    pub started: f64,
    pub ended: f64,
    /// Exit code; `None` when killed.
    pub exit: Option<i32>,
    pub killed: bool,
    /// The JSON summary line, when it printed one.
    pub summary: Option<serde_json::Value>,
    /// The last lines of its stderr when it failed.
    pub error: Option<String>,
    pub peak_rss_kib: u64,
    /// The run after the load that sends whatever is still owed.
    pub final_flush: bool,
}

impl FetchRun {
    pub fn completed(&self) -> bool {
        self.summary
            .as_ref()
            .is_some_and(|s| s["completed"] == serde_json::Value::Bool(true))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// `pg_ctl stop -m fast`, then start.
    PostgresFastRestart,
    /// `pg_ctl stop -m immediate` (a crash: WAL recovery on start), then start.
    PostgresCrashRestart,
    /// The queue server killed (SIGKILL): connections refused until it is back.
    QueueKilled,
    /// The queue server frozen (SIGSTOP): connections hang until it is back.
    QueueFrozen,
    /// `link-fetcher` killed (SIGKILL) with a page recorded and its sends under way.
    FetcherKilled,
}

impl FaultKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FaultKind::PostgresFastRestart => "Postgres restart (stop -m fast)",
            FaultKind::PostgresCrashRestart => "Postgres crash restart (stop -m immediate)",
            FaultKind::QueueKilled => "queue server killed (connections refused)",
            FaultKind::QueueFrozen => "queue server frozen (connections hang)",
            FaultKind::FetcherKilled => "link-fetcher SIGKILL mid-page",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Fault {
    pub n: usize,
    pub kind: FaultKind,
    pub started: f64,
    /// When the dependency was back (for a fetcher kill: the kill itself).
    pub back: f64,
    pub detail: String,
    /// For a fetcher kill: whether it landed with a page recorded and not all sent.
    pub mid_page: Option<bool>,
    /// For a fetcher kill: when its run began (its recorded rows are those since).
    pub run_started: Option<f64>,
}

/// One message the downloader received.
#[derive(Debug, Clone, Serialize)]
pub struct Delivery {
    pub t: f64,
    pub granule_id: String,
    pub message_id: String,
    /// When SQS accepted it (SentTimestamp), on the soak's clock.
    pub sent: f64,
    /// Whether the granule's row was there when the message was looked up.
    pub row_found: bool,
    /// How long after receiving it the lookup succeeded (longer while Postgres is down).
    pub lookup_ms: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    pub t: f64,
    pub handler_connections: i64,
    pub fetcher_connections: i64,
    pub handler_rss_kib: u64,
}

/// Everything, appended to as it happens.
#[derive(Default)]
pub struct History {
    pub notifications: Mutex<Vec<Notification>>,
    pub requests: Mutex<Vec<Request>>,
    pub fetch_runs: Mutex<Vec<FetchRun>>,
    pub faults: Mutex<Vec<Fault>>,
    pub deliveries: Mutex<Vec<Delivery>>,
    pub samples: Mutex<Vec<Sample>>,
}

impl History {
    /// Writes every event, one JSON object a line, in time order.
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        let mut lines: Vec<(f64, serde_json::Value)> = Vec::new();
        let mut push = |t: f64, event: &str, value: serde_json::Value| {
            let mut value = value;
            value["event"] = event.into();
            lines.push((t, value));
        };
        let notifications = self.notifications.lock().unwrap();
        for request in self.requests.lock().unwrap().iter() {
            let mut value = serde_json::to_value(request).expect("serialisable");
            value["product_id"] = notifications[request.notification]
                .product_id
                .clone()
                .into();
            value["kind"] = serde_json::to_value(notifications[request.notification].kind)
                .expect("serialisable");
            push(request.t, "request", value);
        }
        for run in self.fetch_runs.lock().unwrap().iter() {
            push(run.started, "fetch_run", serde_json::to_value(run).unwrap());
        }
        for fault in self.faults.lock().unwrap().iter() {
            push(fault.started, "fault", serde_json::to_value(fault).unwrap());
        }
        for delivery in self.deliveries.lock().unwrap().iter() {
            push(
                delivery.t,
                "delivery",
                serde_json::to_value(delivery).unwrap(),
            );
        }
        for sample in self.samples.lock().unwrap().iter() {
            push(sample.t, "sample", serde_json::to_value(sample).unwrap());
        }
        lines.sort_by(|a, b| a.0.total_cmp(&b.0));
        let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
        for (_, line) in lines {
            writeln!(out, "{line}")?;
        }
        out.flush()
    }
}
