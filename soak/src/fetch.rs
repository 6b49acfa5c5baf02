//! The polling side: the stand-in catalogue serving one multi-page day after
//! another, and `link-fetcher fetch` run over them in a loop, each day again
//! until it answers `completed` (as the Step Function does), with the fetcher
//! killed in the middle of a page when the fault schedule says so.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use hls_core::TileSet;
use integration_tests::catalogue_stub::{CatalogueStub, synthetic_day};
use sqlx::Connection;
use tokio::sync::{mpsc, oneshot};

use crate::history::{FetchRun, History, now, to_utc};
use crate::load::Product;

/// Tiles of the real fixtures: 28PHQ and 55PBR are processed by HLS, 54PXA and 99ZZZ are not.
const TILES: [&str; 4] = ["54PXA", "28PHQ", "55PBR", "99ZZZ"];
/// Days whose products were acquired recently enough for the push endpoint too.
pub const PUSH_RECENT_DAYS: usize = 25;

/// One day of the catalogue.
#[derive(Debug, Clone)]
pub struct Day {
    pub date: NaiveDate,
    pub products: usize,
    /// The products on tiles HLS processes: each must end up recorded.
    pub allowed: Vec<Product>,
    /// The others: never recorded.
    pub skipped: Vec<String>,
}

pub struct Catalogue {
    pub stub: CatalogueStub,
    days: Mutex<Vec<Day>>,
    products_per_day: usize,
    tiles: TileSet,
}

impl Catalogue {
    pub async fn start(products_per_day: usize, page_delay: Duration) -> Self {
        let stub = CatalogueStub::start().await;
        stub.set_page_delay(page_delay);
        let catalogue = Self {
            stub,
            days: Mutex::default(),
            products_per_day,
            tiles: TileSet::built_in(),
        };
        for k in 0..PUSH_RECENT_DAYS {
            catalogue.day(k);
        }
        catalogue
    }

    /// Day `k`: `k` days before the day before yesterday, added on first use.
    pub fn day(&self, k: usize) -> Day {
        let mut days = self.days.lock().unwrap();
        while days.len() <= k {
            let date = Utc::now().date_naive() - chrono::Duration::days(2 + days.len() as i64);
            let products =
                synthetic_day(&format!("soak-{date}"), date, self.products_per_day, &TILES);
            let time = |v: &serde_json::Value| -> DateTime<Utc> {
                v.as_str()
                    .and_then(|t| t.parse().ok())
                    .expect("a timestamp")
            };
            let (mut allowed, mut skipped) = (Vec::new(), Vec::new());
            for product in &products {
                let id = product["Id"].as_str().unwrap().to_owned();
                let name = product["Name"].as_str().unwrap().to_owned();
                let tile = hls_core::domain::granule::tile_id_from_name(&name).unwrap_or("");
                if self.tiles.contains(tile) {
                    allowed.push(Product {
                        id,
                        name,
                        published: time(&product["PublicationDate"]),
                        acquired: time(&product["ContentDate"]["Start"]),
                    });
                } else {
                    skipped.push(id);
                }
            }
            self.stub.add_products(products);
            days.push(Day {
                date,
                products: self.products_per_day,
                allowed,
                skipped,
            });
        }
        days[k].clone()
    }

    pub fn days_served(&self) -> Vec<Day> {
        self.days.lock().unwrap().clone()
    }

    /// The allowed products of the days recent enough for push, for `Known` notifications.
    pub fn recent_products(&self) -> Vec<Product> {
        self.days.lock().unwrap()[..PUSH_RECENT_DAYS]
            .iter()
            .flat_map(|d| d.allowed.iter().cloned())
            .collect()
    }
}

/// How the fault schedule asks for a kill, and what it is told.
pub struct KillRequest {
    pub reply: oneshot::Sender<KillReport>,
}

#[derive(Debug, Clone)]
pub struct KillReport {
    pub at: f64,
    pub run_started: f64,
    /// A page was recorded and not all of its messages sent.
    pub mid_page: bool,
    pub owed: i64,
    pub sent: i64,
    pub day: NaiveDate,
}

/// Everything a fetch run needs.
pub struct Fetcher {
    pub binary: PathBuf,
    pub env: Vec<(String, String)>,
    pub log: PathBuf,
    pub database_url: String,
    pub history: Arc<History>,
    pub reaper: Arc<crate::procs::Reaper>,
}

enum RunEnd {
    Exited(FetchRun),
    Killed(FetchRun, KillReport),
}

impl Fetcher {
    /// Days 0, 1, 2, ... each until completed, until `stop` is set and the day
    /// in hand is complete. Returns the days started.
    pub async fn run_loop(
        &self,
        catalogue: &Catalogue,
        stop: Arc<AtomicBool>,
        give_up: Arc<AtomicBool>,
        mut kills: mpsc::Receiver<KillRequest>,
    ) -> usize {
        let mut k = 0;
        let mut pending_kill: Option<KillRequest> = None;
        loop {
            let day = catalogue.day(k);
            if pending_kill.is_none() {
                pending_kill = kills.try_recv().ok();
            }
            let end = self
                .run(day.date, false, &mut pending_kill, &mut kills)
                .await;
            let run = match end {
                RunEnd::Exited(run) => run,
                RunEnd::Killed(run, report) => {
                    if let Some(request) = pending_kill.take() {
                        let _ = request.reply.send(report);
                    }
                    run
                }
            };
            let completed = run.completed();
            self.history.fetch_runs.lock().unwrap().push(run);
            if completed {
                if stop.load(Ordering::SeqCst) {
                    return k + 1;
                }
                k += 1;
            } else {
                if give_up.load(Ordering::SeqCst) {
                    return k + 1;
                }
                // The Step Function retries a failed or unfinished invocation.
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }

    /// One `link-fetcher fetch --date`, after the load: it sends what is owed first.
    pub async fn flush(&self, date: NaiveDate) -> FetchRun {
        let mut none = None;
        let (_, mut idle) = mpsc::channel(1);
        match self.run(date, true, &mut none, &mut idle).await {
            RunEnd::Exited(run) | RunEnd::Killed(run, _) => run,
        }
    }

    async fn run(
        &self,
        date: NaiveDate,
        final_flush: bool,
        pending_kill: &mut Option<KillRequest>,
        kills: &mut mpsc::Receiver<KillRequest>,
    ) -> RunEnd {
        let number = self.history.fetch_runs.lock().unwrap().len();
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("the fetcher log");
        let _ = writeln!(
            log,
            "=== run {number}: fetch --date {date} at {:.1} s",
            now()
        );
        let mut command = Command::new(&self.binary);
        command
            .args(["fetch", "--date", &date.to_string()])
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let started = now();
        let mut child = command.spawn().expect("start link-fetcher");
        self.reaper.watch(child.id());
        let pid = child.id();
        let mut stdout = child.stdout.take().expect("piped");
        let mut stderr = child.stderr.take().expect("piped");
        let out = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stdout.read_to_string(&mut text);
            text
        });
        let err = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text);
            text
        });
        let mut peak_rss_kib = 0;
        let mut watcher: Option<sqlx::PgConnection> = None;
        let mut armed_since: Option<f64> = None;
        let mut report = None;
        let status = loop {
            if let Some((hwm, _)) = crate::procs::memory_kib(pid) {
                peak_rss_kib = peak_rss_kib.max(hwm);
            }
            if let Some(status) = child.try_wait().expect("wait for link-fetcher") {
                break Some(status);
            }
            if pending_kill.is_none()
                && let Ok(request) = kills.try_recv()
            {
                *pending_kill = Some(request);
            }
            if pending_kill.is_some() {
                let since = *armed_since.get_or_insert_with(now);
                let (owed, sent) = self.page_in_flight(&mut watcher, started).await;
                // A page committed and its sends under way: the moment to kill.
                // After 30 s without one, kill wherever it is.
                if owed > 0 || now() - since > 30.0 {
                    let _ = child.kill();
                    let at = now();
                    let _ = child.wait();
                    report = Some(KillReport {
                        at,
                        run_started: started,
                        mid_page: owed > 0,
                        owed,
                        sent,
                        day: date,
                    });
                    break None;
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            } else {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        self.reaper.forget(pid);
        let stdout = out.join().unwrap_or_default();
        let stderr = err.join().unwrap_or_default();
        let _ = log.write_all(stderr.as_bytes());
        let summary = stdout
            .lines()
            .rev()
            .find_map(|line| serde_json::from_str::<serde_json::Value>(line).ok());
        let run = FetchRun {
            run: number,
            day: date,
            started,
            ended: now(),
            exit: status.and_then(|s| s.code()),
            killed: status.is_none(),
            error: match status {
                Some(s) if s.success() => None,
                Some(_) => Some(crate::procs::tail(&stderr, 3)),
                None => Some("killed (SIGKILL)".into()),
            },
            summary: if status.is_some_and(|s| s.success()) {
                summary
            } else {
                None
            },
            peak_rss_kib,
            final_flush,
        };
        match report {
            Some(report) => RunEnd::Killed(run, report),
            None => RunEnd::Exited(run),
        }
    }

    /// Messages of rows this run recorded: still owed, and sent.
    async fn page_in_flight(
        &self,
        watcher: &mut Option<sqlx::PgConnection>,
        run_started: f64,
    ) -> (i64, i64) {
        if watcher.is_none() {
            *watcher = sqlx::PgConnection::connect(&self.database_url).await.ok();
        }
        let Some(connection) = watcher.as_mut() else {
            return (0, 0);
        };
        let counts: Result<(i64, i64), _> = sqlx::query_as(
            "SELECT count(*) FILTER (WHERE sent_at IS NULL), count(*) FILTER (WHERE sent_at IS NOT NULL) \
             FROM granule_outbox WHERE found_by = 'poll' AND recorded_at >= $1",
        )
        .bind(to_utc(run_started))
        .fetch_one(connection)
        .await;
        match counts {
            Ok(counts) => counts,
            Err(_) => {
                *watcher = None;
                (0, 0)
            }
        }
    }
}
