//! The checker: reads the whole history and the database at the end, decides
//! whether anything was lost, written wrongly or answered wrongly, and works out
//! the figures. Each check names what it found when it fails.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::NaiveDate;
use serde::Serialize;
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::fetch::Day;
use crate::history::{Answer, Fault, FaultKind, FetchRun, History, Kind, Reason, to_utc};

/// The database as the soak left it, after the final flush.
pub struct DatabaseState {
    /// Every granule row: how its outbox row says it was found, and whether sent.
    pub rows: HashMap<String, (Option<String>, bool)>,
    pub owed: i64,
    /// `granule_count` by (date, platform): (available_links, fetched_links).
    pub counts: HashMap<(NaiveDate, String), (i64, i64)>,
    /// For each fetcher kill: when the last message its run had recorded was
    /// sent (soak clock), and how many are still owed.
    pub killed_run_sends: Vec<(Option<f64>, i64)>,
}

impl DatabaseState {
    pub async fn read(pool: &PgPool, faults: &[Fault]) -> anyhow::Result<Self> {
        let rows: Vec<(String, Option<String>, Option<bool>)> = sqlx::query_as(
            "SELECT g.id, o.found_by, o.sent_at IS NOT NULL FROM granule g \
             LEFT JOIN granule_outbox o ON o.granule_id = g.id",
        )
        .fetch_all(pool)
        .await?;
        let owed: i64 =
            sqlx::query_scalar("SELECT count(*) FROM granule_outbox WHERE sent_at IS NULL")
                .fetch_one(pool)
                .await?;
        let counts: Vec<(NaiveDate, String, i64, i64)> = sqlx::query_as(
            "SELECT date, platform, available_links, fetched_links FROM granule_count",
        )
        .fetch_all(pool)
        .await?;
        let mut killed_run_sends = Vec::new();
        for fault in faults.iter().filter(|f| f.kind == FaultKind::FetcherKilled) {
            let (last, owed): (Option<chrono::DateTime<chrono::Utc>>, i64) = sqlx::query_as(
                "SELECT max(sent_at), count(*) FILTER (WHERE sent_at IS NULL) FROM granule_outbox \
                 WHERE found_by = 'poll' AND recorded_at >= $1 AND recorded_at <= $2",
            )
            .bind(to_utc(fault.run_started.unwrap_or(fault.started)))
            .bind(to_utc(fault.back))
            .fetch_one(pool)
            .await?;
            let on_clock =
                last.map(|t| (t - to_utc(0.0)).num_microseconds().unwrap_or(0) as f64 / 1e6);
            killed_run_sends.push((on_clock, owed));
        }
        Ok(Self {
            rows: rows
                .into_iter()
                .map(|(id, found_by, sent)| (id, (found_by, sent.unwrap_or(false))))
                .collect(),
            owed,
            counts: counts
                .into_iter()
                .map(|(date, platform, available, fetched)| {
                    ((date, platform), (available, fetched))
                })
                .collect(),
            killed_run_sends,
        })
    }
}

/// The server process as seen at the end.
pub struct ServerState {
    pub pid_at_start: u32,
    pub pid_at_end: Option<u32>,
    pub alive_at_end: bool,
    pub peak_rss_kib: u64,
    pub pool: u32,
}

pub struct Inputs<'a> {
    pub settings: Value,
    pub clients: usize,
    pub duration_s: f64,
    pub history: &'a History,
    pub days: &'a [Day],
    pub days_started: usize,
    pub database: DatabaseState,
    pub server: ServerState,
    pub unsettled: usize,
    pub peak_in_flight: usize,
    pub lease_s: f64,
}

#[derive(Debug, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub passed: bool,
    pub detail: String,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub figures: Value,
    pub checks: Vec<Check>,
    pub lost: usize,
}

impl Report {
    pub fn passed(&self) -> bool {
        self.checks.iter().all(|c| c.passed)
    }
}

fn examples<T: std::fmt::Display>(items: impl IntoIterator<Item = T>) -> String {
    let items: Vec<String> = items.into_iter().map(|i| i.to_string()).collect();
    let shown: Vec<&str> = items.iter().take(5).map(String::as_str).collect();
    format!("{} (e.g. {})", items.len(), shown.join("; "))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let index = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[index]
}

pub fn check(inputs: Inputs<'_>) -> Report {
    let history = inputs.history;
    let notifications = history.notifications.lock().unwrap().clone();
    let requests = history.requests.lock().unwrap().clone();
    let runs: Vec<FetchRun> = history.fetch_runs.lock().unwrap().clone();
    let faults: Vec<Fault> = history.faults.lock().unwrap().clone();
    let deliveries = history.deliveries.lock().unwrap().clone();
    let samples = history.samples.lock().unwrap().clone();
    let rows = &inputs.database.rows;
    let mut checks = Vec::new();
    let mut add = |name: &'static str, passed: bool, detail: String| {
        checks.push(Check {
            name,
            passed,
            detail,
        });
    };

    let mut by_notification: Vec<Vec<usize>> = vec![Vec::new(); notifications.len()];
    for (i, request) in requests.iter().enumerate() {
        by_notification[request.notification].push(i);
    }
    let delivered_ok: HashSet<&str> = deliveries
        .iter()
        .filter(|d| d.row_found)
        .map(|d| d.granule_id.as_str())
        .collect();
    let delivered_any: HashSet<&str> = deliveries.iter().map(|d| d.granule_id.as_str()).collect();

    // Every answer is one its kind allows.
    let mut wrong = Vec::new();
    for request in &requests {
        let note = &notifications[request.notification];
        let kind = note.kind;
        let fine = match &request.answer {
            Answer::Status(code) if *code == kind.expected_status() => match code {
                401 => request.detail.as_deref() == Some("WWW-Authenticate: Basic"),
                400 | 413 => request
                    .detail
                    .as_deref()
                    .is_some_and(|d| !d.is_empty() && !d.starts_with("no JSON error")),
                _ => true,
            },
            Answer::Status(503) | Answer::Timeout => kind.may_be_unavailable(),
            _ => false,
        };
        if !fine {
            wrong.push(format!(
                "{} {} ({}) at {:.1} s answered {} {}",
                kind.as_str(),
                note.product_id,
                note.variant,
                request.t,
                request.answer.label(),
                request.detail.clone().unwrap_or_default()
            ));
        }
    }
    add(
        "every request got the answer its kind calls for (204 / 401 with WWW-Authenticate / 400 and 413 naming the problem; 503 or a timeout only where Postgres or SQS is needed)",
        wrong.is_empty(),
        if wrong.is_empty() {
            format!("{} requests", requests.len())
        } else {
            examples(wrong)
        },
    );

    // Every notification of a new product was, in the end, accepted.
    let unaccepted: Vec<&str> = notifications
        .iter()
        .enumerate()
        .filter(|(i, n)| {
            n.kind.is_recorded()
                && !by_notification[*i]
                    .iter()
                    .any(|&r| requests[r].answer == Answer::Status(204))
        })
        .map(|(_, n)| n.product_id.as_str())
        .collect();
    add(
        "every notification answered 503 was redelivered until answered 204",
        unaccepted.is_empty() && inputs.unsettled == 0,
        if unaccepted.is_empty() && inputs.unsettled == 0 {
            "none left unanswered".into()
        } else {
            format!(
                "{} still unsettled; never answered 204: {}",
                inputs.unsettled,
                examples(unaccepted)
            )
        },
    );

    // 204 as new: one row and at least one message.
    let accepted_new: Vec<&str> = notifications
        .iter()
        .enumerate()
        .filter(|(i, n)| {
            n.kind.is_recorded()
                && by_notification[*i]
                    .iter()
                    .any(|&r| requests[r].answer == Answer::Status(204))
        })
        .map(|(_, n)| n.product_id.as_str())
        .collect();
    let accepted_set: HashSet<&str> = accepted_new.iter().copied().collect();
    let missing: Vec<String> = accepted_set
        .iter()
        .filter(|id| !rows.contains_key(**id) || !delivered_ok.contains(**id))
        .map(|id| {
            format!(
                "{id}: row {}, message {}",
                if rows.contains_key(*id) { "yes" } else { "NO" },
                if delivered_ok.contains(id) {
                    "yes"
                } else {
                    "NO"
                }
            )
        })
        .collect();
    add(
        "every notification answered 204 as new has exactly one granule row and at least one message",
        missing.is_empty(),
        if missing.is_empty() {
            format!("{} notifications of new products", accepted_set.len())
        } else {
            examples(missing)
        },
    );

    // Every row has a message once the owed ones are flushed.
    let without_message: Vec<&str> = rows
        .keys()
        .filter(|id| !delivered_ok.contains(id.as_str()))
        .map(String::as_str)
        .collect();
    add(
        "every granule row has at least one message once the owed messages are flushed",
        without_message.is_empty() && inputs.database.owed == 0,
        format!(
            "{} rows, {} still owed after the flush, {} without a message{}",
            rows.len(),
            inputs.database.owed,
            without_message.len(),
            if without_message.is_empty() {
                String::new()
            } else {
                format!(": {}", examples(without_message))
            }
        ),
    );

    // No message about a granule without a row, then or now.
    let orphans: Vec<String> = deliveries
        .iter()
        .filter(|d| !d.row_found || !rows.contains_key(&d.granule_id))
        .map(|d| format!("{} at {:.1} s", d.granule_id, d.t))
        .collect();
    add(
        "no message refers to a granule without a row (the downloader found every row when the message arrived)",
        orphans.is_empty(),
        if orphans.is_empty() {
            format!("{} messages", deliveries.len())
        } else {
            examples(orphans)
        },
    );

    // Each fetched day complete.
    let mut incomplete = Vec::new();
    for day in &inputs.days[..inputs.days_started.min(inputs.days.len())] {
        let completed = runs.iter().any(|r| r.day == day.date && r.completed());
        let absent = day
            .allowed
            .iter()
            .filter(|p| !rows.contains_key(&p.id))
            .count();
        let recorded_skipped = day
            .skipped
            .iter()
            .filter(|id| rows.contains_key(*id))
            .count();
        let count = inputs
            .database
            .counts
            .get(&(day.date, "S2A+S2B+S2C".to_owned()))
            .copied();
        let counted = count == Some((day.products as i64, day.products as i64));
        if !completed || absent > 0 || recorded_skipped > 0 || !counted {
            incomplete.push(format!(
                "{}: completed {completed}, {absent} allowed products without a row, {recorded_skipped} skipped ones recorded, granule_count {count:?} of {}",
                day.date, day.products
            ));
        }
    }
    add(
        "each fetched day is complete (every allowed product recorded, none other, granule_count available = fetched = the day's products)",
        incomplete.is_empty(),
        if incomplete.is_empty() {
            format!(
                "{} days of {} products",
                inputs.days_started,
                inputs.days.first().map_or(0, |d| d.products)
            )
        } else {
            examples(incomplete)
        },
    );

    // Filtered and bad requests wrote nothing.
    let written: Vec<String> = notifications
        .iter()
        .filter(|n| !n.kind.is_recorded())
        .filter(|n| {
            rows.contains_key(&n.product_id) || delivered_any.contains(n.product_id.as_str())
        })
        .map(|n| format!("{} {} ({})", n.kind.as_str(), n.product_id, n.variant))
        .collect();
    let rejected = notifications
        .iter()
        .filter(|n| !n.kind.is_recorded())
        .count();
    add(
        "filtered and bad requests never wrote anything (no row, no message)",
        written.is_empty(),
        if written.is_empty() {
            format!("{rejected} notifications")
        } else {
            examples(written)
        },
    );

    // The server process.
    let server = &inputs.server;
    add(
        "the server process never restarted (same pid, alive at the end)",
        server.alive_at_end && server.pid_at_end == Some(server.pid_at_start),
        format!(
            "pid {} at the start, {:?} at the end, alive: {}",
            server.pid_at_start, server.pid_at_end, server.alive_at_end
        ),
    );
    let handler_max = samples
        .iter()
        .map(|s| s.handler_connections)
        .max()
        .unwrap_or(0);
    let fetcher_max = samples
        .iter()
        .map(|s| s.fetcher_connections)
        .max()
        .unwrap_or(0);
    add(
        "the server's open Postgres connections never exceeded its pool (pg_stat_activity, sampled every 100 ms)",
        !samples.is_empty() && handler_max <= i64::from(server.pool),
        format!(
            "at most {handler_max} of a pool of {} over {} samples",
            server.pool,
            samples.len()
        ),
    );

    // Duplicates, and the fault behind each.
    let mut messages_by_granule: HashMap<&str, BTreeMap<&str, (f64, usize)>> = HashMap::new();
    for delivery in &deliveries {
        let entry = messages_by_granule
            .entry(delivery.granule_id.as_str())
            .or_default()
            .entry(delivery.message_id.as_str())
            .or_insert((delivery.sent, 0));
        entry.1 += 1;
    }
    let mut duplicates_by_cause: BTreeMap<String, usize> = BTreeMap::new();
    let mut duplicates_by_fault: HashMap<usize, usize> = HashMap::new();
    let mut unexplained = Vec::new();
    let mut queue_redeliveries = 0;
    let mut duplicated_granules = 0;
    for (granule, messages) in &messages_by_granule {
        queue_redeliveries += messages.values().map(|(_, n)| n - 1).sum::<usize>();
        if messages.len() < 2 {
            continue;
        }
        duplicated_granules += 1;
        let first_sent = messages
            .values()
            .map(|(t, _)| *t)
            .fold(f64::INFINITY, f64::min);
        let cause = faults
            .iter()
            .filter(|f| first_sent >= f.started - 10.0 && first_sent <= f.back + 10.0)
            .min_by(|a, b| {
                (first_sent - a.started)
                    .abs()
                    .total_cmp(&(first_sent - b.started).abs())
            });
        let extra = messages.len() - 1;
        match cause {
            Some(fault) => {
                *duplicates_by_fault.entry(fault.n).or_default() += extra;
                *duplicates_by_cause
                    .entry(format!("#{} {}", fault.n, fault.kind.as_str()))
                    .or_default() += extra;
            }
            None => unexplained.push(format!(
                "{granule}: {} messages, first sent at {first_sent:.1} s",
                messages.len()
            )),
        }
    }
    let duplicates_sent: usize = duplicates_by_cause.values().sum::<usize>() + unexplained.len();
    add(
        "every message sent more than once is explained by a fault (sent, then the sender died or timed out, or the mark failed, within 10 s of it)",
        unexplained.is_empty(),
        if unexplained.is_empty() {
            format!(
                "{duplicates_sent} duplicates over {duplicated_granules} granules, all within a fault"
            )
        } else {
            examples(unexplained.clone())
        },
    );

    // The faults themselves.
    let kills: Vec<&Fault> = faults
        .iter()
        .filter(|f| f.kind == FaultKind::FetcherKilled)
        .collect();
    let planned = [
        FaultKind::PostgresFastRestart,
        FaultKind::PostgresCrashRestart,
        FaultKind::QueueKilled,
        FaultKind::QueueFrozen,
    ];
    let outages_ok = planned
        .iter()
        .all(|kind| faults.iter().filter(|f| f.kind == *kind).count() == 1);
    add(
        "Postgres restarted twice, the queue server stopped twice, the fetcher killed mid-page twice",
        outages_ok && kills.len() == 2 && kills.iter().all(|k| k.mid_page == Some(true)),
        faults
            .iter()
            .map(|f| {
                format!(
                    "#{} {} at {:.1} s ({})",
                    f.n,
                    f.kind.as_str(),
                    f.started,
                    f.detail
                )
            })
            .collect::<Vec<_>>()
            .join("; "),
    );
    let peak = inputs.peak_in_flight;
    add(
        "the load was closed-loop with every client busy at once",
        peak >= inputs.clients && !requests.is_empty(),
        format!(
            "{} requests, at most {peak} in flight, {} clients",
            requests.len(),
            inputs.clients
        ),
    );

    // Lost: granules that should have reached the downloader and did not.
    let expected: HashSet<&str> = rows
        .keys()
        .map(String::as_str)
        .chain(accepted_set.iter().copied())
        .collect();
    let lost = expected
        .iter()
        .filter(|id| !delivered_ok.contains(**id))
        .count();

    // Figures.
    let mut by_answer: BTreeMap<String, usize> = BTreeMap::new();
    let mut by_kind: BTreeMap<&str, BTreeMap<String, usize>> = BTreeMap::new();
    for request in &requests {
        let label = request.answer.label();
        *by_answer.entry(label.clone()).or_default() += 1;
        *by_kind
            .entry(notifications[request.notification].kind.as_str())
            .or_default()
            .entry(label)
            .or_default() += 1;
    }
    let mut unavailable_reasons: BTreeMap<String, usize> = BTreeMap::new();
    for request in requests.iter().filter(|r| r.answer == Answer::Status(503)) {
        *unavailable_reasons
            .entry(request.detail.clone().unwrap_or_default())
            .or_default() += 1;
    }
    let notification_counts: BTreeMap<&str, usize> = Kind::ALL
        .iter()
        .map(|k| {
            (
                k.as_str(),
                notifications.iter().filter(|n| n.kind == *k).count(),
            )
        })
        .collect();
    let by_reason = |reason: Reason| requests.iter().filter(|r| r.reason == reason).count();
    let attempts: Vec<usize> = notifications
        .iter()
        .enumerate()
        .filter(|(_, n)| n.kind.is_recorded())
        .map(|(i, _)| {
            by_notification[i]
                .iter()
                .take_while(|&&r| requests[r].answer != Answer::Status(204))
                .count()
                + 1
        })
        .collect();
    let recorded_by_push = rows
        .values()
        .filter(|(found_by, _)| found_by.as_deref() == Some("push"))
        .count();
    let recorded_by_poll = rows
        .values()
        .filter(|(found_by, _)| found_by.as_deref() == Some("poll"))
        .count();
    let mut latencies: Vec<f64> = requests
        .iter()
        .filter(|r| matches!(r.answer, Answer::Status(_)))
        .map(|r| r.latency_ms)
        .collect();
    latencies.sort_by(f64::total_cmp);
    let over_lambda_timeout = requests.iter().filter(|r| r.latency_ms > 25_000.0).count();

    let mut kill_index = 0;
    let outages: Vec<Value> = faults
        .iter()
        .map(|f| {
            if f.kind == FaultKind::FetcherKilled {
                let (last_sent, still_owed) = inputs
                    .database
                    .killed_run_sends
                    .get(kill_index)
                    .copied()
                    .unwrap_or((None, -1));
                kill_index += 1;
                let next_completed = runs
                    .iter()
                    .filter(|r| r.started >= f.back && r.completed())
                    .map(|r| r.ended)
                    .fold(f64::INFINITY, f64::min);
                return json!({
                    "n": f.n,
                    "kind": f.kind.as_str(),
                    "at_s": round(f.started),
                    "detail": f.detail,
                    "mid_page": f.mid_page,
                    "its_messages_all_sent_after_s": last_sent.map(|t| round(t - f.back)),
                    "duplicates_sent": duplicates_by_fault.get(&f.n).copied().unwrap_or(0),
                    "its_messages_still_owed": still_owed,
                    "next_completed_run_after_s": next_completed.is_finite().then(|| round(next_completed - f.back)),
                });
            }
            let first_204 = requests
                .iter()
                .filter(|r| {
                    r.t >= f.back
                        && r.answer == Answer::Status(204)
                        && notifications[r.notification].kind == Kind::New
                })
                .map(|r| r.t + r.latency_ms / 1000.0)
                .fold(f64::INFINITY, f64::min);
            let refused = requests
                .iter()
                .filter(|r| r.t >= f.started && r.t <= f.back && r.answer.is_retried())
                .count();
            json!({
                "n": f.n,
                "kind": f.kind.as_str(),
                "at_s": round(f.started),
                "down_s": round(f.back - f.started),
                "detail": f.detail,
                "answered_503_or_timed_out_meanwhile": refused,
                "first_new_204_after_back_s": first_204.is_finite().then(|| round(first_204 - f.back)),
                "duplicates_sent": duplicates_by_fault.get(&f.n).copied().unwrap_or(0),
            })
        })
        .collect();
    let completed_runs = runs
        .iter()
        .filter(|r| r.completed() && !r.final_flush)
        .count();
    let sum = |key: &str| -> i64 {
        runs.iter()
            .filter_map(|r| r.summary.as_ref())
            .filter_map(|s| s[key].as_i64())
            .sum()
    };
    let flush = runs.iter().find(|r| r.final_flush);
    let figures = json!({
        "settings": inputs.settings,
        "duration_s": round(inputs.duration_s),
        "requests": {
            "total": requests.len(),
            "per_second": round(requests.len() as f64 / inputs.duration_s.max(1.0)),
            "by_answer": by_answer,
            "by_kind": by_kind,
            "503_by_reason": unavailable_reasons,
            "first_deliveries": by_reason(Reason::First),
            "redeliveries_after_503_or_no_answer": by_reason(Reason::Retry),
            "duplicate_deliveries": by_reason(Reason::Duplicate),
            "latency_ms": {
                "p50": round(percentile(&latencies, 0.5)),
                "p99": round(percentile(&latencies, 0.99)),
                "max": round(latencies.last().copied().unwrap_or(0.0)),
            },
            "slower_than_the_lambda_timeout_25_s": over_lambda_timeout,
            "peak_in_flight": inputs.peak_in_flight,
        },
        "notifications": {
            "by_kind": notification_counts,
            "new_answered_204": accepted_set.len(),
            "max_deliveries_until_204": attempts.iter().max().copied().unwrap_or(0),
            "needing_more_than_3_retries": attempts.iter().filter(|&&a| a > 4).count(),
        },
        "rows": {
            "total": rows.len(),
            "recorded_by_push": recorded_by_push,
            "recorded_by_poll": recorded_by_poll,
        },
        "fetch": {
            "runs": runs.len(),
            "days_completed": completed_runs,
            "failed_runs": runs.iter().filter(|r| !r.killed && r.exit != Some(0)).count(),
            "killed_runs": runs.iter().filter(|r| r.killed).count(),
            "incomplete_runs": runs.iter().filter(|r| r.exit == Some(0) && !r.completed()).count(),
            "new_granules": sum("new_granules"),
            "known_granules": sum("known_granules"),
            "owed_sent": sum("owed_sent"),
            "final_flush": flush.map(|r| json!({"owed_sent": r.summary.as_ref().map(|s| s["owed_sent"].clone()), "exit": r.exit})),
            "failures": runs.iter().filter_map(|r| r.error.clone()).fold(BTreeMap::<String, usize>::new(), |mut m, e| {
                let key: String = e.lines().last().unwrap_or("").chars().take(140).collect();
                *m.entry(key).or_default() += 1;
                m
            }),
        },
        "messages": {
            "received": deliveries.len(),
            "distinct_granules": messages_by_granule.len(),
            "duplicates_sent": duplicates_sent,
            "duplicates_by_cause": duplicates_by_cause,
            "duplicates_unexplained": unexplained.len(),
            "received_again_by_the_downloader": queue_redeliveries,
            "lookup_ms_max": round(deliveries.iter().map(|d| d.lookup_ms).fold(0.0, f64::max)),
        },
        "outages_survived": faults.len(),
        "outages": outages,
        "peak_rss_mib": {
            "handler": round(server.peak_rss_kib as f64 / 1024.0),
            "fetcher": round(runs.iter().map(|r| r.peak_rss_kib).max().unwrap_or(0) as f64 / 1024.0),
        },
        "postgres_connections": {
            "handler_max": handler_max,
            "handler_pool": server.pool,
            "fetcher_max": fetcher_max,
            "samples": samples.len(),
        },
        "lease_s": inputs.lease_s,
        "lost": lost,
    });
    Report {
        figures,
        checks,
        lost,
    }
}

fn round(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// The report for a person.
pub fn render(report: &Report) -> String {
    let f = &report.figures;
    let mut out = String::new();
    let mut line = |s: String| {
        out.push_str(&s);
        out.push('\n');
    };
    line(format!(
        "soak: {} s, {} clients, {} requests ({}/s, at most {} in flight)",
        f["duration_s"],
        f["settings"]["clients"],
        f["requests"]["total"],
        f["requests"]["per_second"],
        f["requests"]["peak_in_flight"]
    ));
    line(format!(
        "requests by answer: {}",
        compact(&f["requests"]["by_answer"])
    ));
    if let Some(kinds) = f["requests"]["by_kind"].as_object() {
        for (kind, answers) in kinds {
            line(format!("  {kind}: {}", compact(answers)));
        }
    }
    line(format!(
        "  503 by reason: {}",
        compact(&f["requests"]["503_by_reason"])
    ));
    line(format!(
        "  first deliveries {}, redeliveries after 503/no answer {}, duplicates {}; latency p50 {} ms, p99 {} ms, max {} ms; slower than 25 s: {}",
        f["requests"]["first_deliveries"],
        f["requests"]["redeliveries_after_503_or_no_answer"],
        f["requests"]["duplicate_deliveries"],
        f["requests"]["latency_ms"]["p50"],
        f["requests"]["latency_ms"]["p99"],
        f["requests"]["latency_ms"]["max"],
        f["requests"]["slower_than_the_lambda_timeout_25_s"],
    ));
    line(format!(
        "notifications: {}",
        compact(&f["notifications"]["by_kind"])
    ));
    line(format!(
        "  new ones answered 204: {}; at most {} deliveries until 204; {} needed more than CDSE's 3 retries",
        f["notifications"]["new_answered_204"],
        f["notifications"]["max_deliveries_until_204"],
        f["notifications"]["needing_more_than_3_retries"]
    ));
    line(format!(
        "notifications recorded (rows found by push): {}; rows found by the poller: {}; rows in all: {}",
        f["rows"]["recorded_by_push"], f["rows"]["recorded_by_poll"], f["rows"]["total"]
    ));
    line(format!(
        "fetch runs: {} ({} days completed, {} failed, {} killed, {} stopped short); new granules {}, already known {}, owed sent {}; final flush {}",
        f["fetch"]["runs"],
        f["fetch"]["days_completed"],
        f["fetch"]["failed_runs"],
        f["fetch"]["killed_runs"],
        f["fetch"]["incomplete_runs"],
        f["fetch"]["new_granules"],
        f["fetch"]["known_granules"],
        f["fetch"]["owed_sent"],
        f["fetch"]["final_flush"]
    ));
    if let Some(failures) = f["fetch"]["failures"].as_object() {
        for (failure, n) in failures {
            line(format!("  {n} × {failure}"));
        }
    }
    line(format!(
        "messages: {} received, {} granules; duplicates delivered: {} sent twice ({}), {} received again by the downloader (the queue redelivered)",
        f["messages"]["received"],
        f["messages"]["distinct_granules"],
        f["messages"]["duplicates_sent"],
        compact(&f["messages"]["duplicates_by_cause"]),
        f["messages"]["received_again_by_the_downloader"]
    ));
    line(format!("outages survived: {}", f["outages_survived"]));
    if let Some(outages) = f["outages"].as_array() {
        for o in outages {
            if o.get("mid_page").is_some() {
                line(format!(
                    "  #{} {} at {} s: {}; the last message its run recorded was marked sent {} s after the kill (lease {} s), {} still owed; {} sent twice; the next run completed the day {} s after the kill",
                    o["n"],
                    o["kind"].as_str().unwrap_or(""),
                    o["at_s"],
                    o["detail"].as_str().unwrap_or(""),
                    o["its_messages_all_sent_after_s"],
                    f["lease_s"],
                    o["its_messages_still_owed"],
                    o["duplicates_sent"],
                    o["next_completed_run_after_s"]
                ));
            } else {
                line(format!(
                    "  #{} {} at {} s for {} s: {} requests sent meanwhile answered 503 or timed out; first 204 to a new product {} s after it was back; {} sent twice",
                    o["n"],
                    o["kind"].as_str().unwrap_or(""),
                    o["at_s"],
                    o["down_s"],
                    o["answered_503_or_timed_out_meanwhile"],
                    o["first_new_204_after_back_s"],
                    o["duplicates_sent"]
                ));
            }
        }
    }
    line(format!(
        "peak RSS: handler {} MiB, fetcher {} MiB; handler Postgres connections: at most {} (pool {}), fetcher at most {}",
        f["peak_rss_mib"]["handler"],
        f["peak_rss_mib"]["fetcher"],
        f["postgres_connections"]["handler_max"],
        f["postgres_connections"]["handler_pool"],
        f["postgres_connections"]["fetcher_max"]
    ));
    line("checks:".into());
    for check in &report.checks {
        line(format!(
            "  [{}] {}: {}",
            if check.passed { "pass" } else { "FAIL" },
            check.name,
            check.detail
        ));
    }
    line(format!("lost: {}", report.lost));
    out
}

fn compact(value: &Value) -> String {
    match value.as_object() {
        Some(map) => map
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect::<Vec<_>>()
            .join(", "),
        None => value.to_string(),
    }
}
