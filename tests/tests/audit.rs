//! The completeness audit against the stand-in catalogue, real Postgres and an
//! SQS-compatible server: a day fetched completely, rows deleted, products the
//! fetch never saw, the requeue, a day past the `$skip` cap, and the figures of
//! a day found partly by push and partly by poll.

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::NaiveDate;
use hls_core::adapters::catalogue::Platform;
use hls_core::use_cases::audit::DayAudit;
use hls_core::use_cases::day_fetch::Deadline;
use hls_core::{FoundBy, Granule, GranuleStore, Handoff};
use integration_tests::catalogue_stub::synthetic_day;
use integration_tests::fetcher::{Harness, allowed_ids, day, drained_ids, harness, tiles};
use serde_json::Value;

async fn audit(h: &Harness, date: NaiveDate, requeue: bool) -> Vec<DayAudit> {
    h.deps
        .audit(&[date], &Platform::ALL, requeue, Deadline::none(), |_| {})
        .await
        .unwrap()
}

fn total(lines: &[DayAudit], f: fn(&DayAudit) -> i64) -> i64 {
    lines.iter().map(f).sum()
}

fn missing_ids(lines: &[DayAudit]) -> BTreeSet<String> {
    lines
        .iter()
        .flat_map(|l| l.missing_ids.iter().cloned())
        .collect()
}

async fn rows(h: &Harness) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM granule")
        .fetch_one(&h.db.pool)
        .await
        .unwrap()
}

fn ids_of(products: &[Value]) -> Vec<String> {
    products
        .iter()
        .map(|p| p["Id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fetched_day_audits_complete_and_the_gaps_are_listed_then_requeued_once() {
    let h = harness(100).await;
    let date = day("2024-05-01");
    let products = synthetic_day("audited", date, 400, &tiles(2));
    let allowed = allowed_ids(&products);
    h.stub.add_products(products);
    let fetched = h.deps.fetch(date, None, Deadline::none()).await.unwrap();
    assert!(fetched.completed);
    assert_eq!(drained_ids(&h.queue).await, allowed);

    let lines = audit(&h, date, false).await;
    assert_eq!(
        lines
            .iter()
            .map(|l| l.platform.as_str())
            .collect::<Vec<_>>(),
        ["S2A", "S2B", "S2C"]
    );
    for line in &lines {
        assert!(line.complete, "{line:?}");
        assert_eq!(line.missing, 0, "{line:?}");
        assert_eq!(line.recorded, line.allowed);
        assert_eq!(line.found_by.poll, line.allowed);
        assert_eq!(line.unsent, 0);
        assert!(line.queue_delay_s.poll.is_some());
    }
    assert_eq!(total(&lines, |l| l.catalogue_products), 400);
    assert_eq!(total(&lines, |l| l.allowed), allowed.len() as i64);

    // Gaps: rows deleted, and products the fetch never saw (visible late,
    // published before its cursor), some on allowed tiles.
    let deleted: Vec<String> = allowed.iter().step_by(37).cloned().collect();
    sqlx::query("DELETE FROM granule WHERE id = ANY($1)")
        .bind(&deleted)
        .execute(&h.db.pool)
        .await
        .unwrap();
    let late = synthetic_day("late", date, 9, &tiles(3));
    let late_allowed = allowed_ids(&late);
    assert!(!late_allowed.is_empty() && late_allowed.len() < late.len());
    h.stub.add_products(late);
    let expected: BTreeSet<String> = deleted.iter().cloned().chain(late_allowed).collect();
    let rows_before = rows(&h).await;

    let lines = audit(&h, date, false).await;
    assert_eq!(missing_ids(&lines), expected);
    assert_eq!(total(&lines, |l| l.missing), expected.len() as i64);
    assert_eq!(total(&lines, |l| l.catalogue_products), 409);
    assert_eq!(total(&lines, |l| l.requeued), 0);
    // Without requeue nothing is written or sent.
    assert_eq!(rows(&h).await, rows_before);
    assert!(drained_ids(&h.queue).await.is_empty());

    let lines = audit(&h, date, true).await;
    assert_eq!(missing_ids(&lines), expected);
    assert_eq!(total(&lines, |l| l.requeued), expected.len() as i64);
    let drained = h.queue.drain(Duration::from_millis(500)).await;
    assert_eq!(
        drained.by_id.keys().cloned().collect::<BTreeSet<_>>(),
        expected
    );
    assert_eq!(
        drained.deliveries,
        expected.len(),
        "a requeued message was sent twice"
    );

    let lines = audit(&h, date, true).await;
    assert_eq!(total(&lines, |l| l.missing), 0);
    assert_eq!(total(&lines, |l| l.requeued), 0);
    assert_eq!(total(&lines, |l| l.found_by.audit), expected.len() as i64);
    assert!(drained_ids(&h.queue).await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_day_larger_than_the_skip_cap_audits_completely() {
    let h = harness(100).await;
    h.stub.set_skip_cap(150);
    let date = day("2024-05-02");
    let products = synthetic_day("capped", date, 1_200, &tiles(4));
    let allowed = allowed_ids(&products);
    h.stub.add_products(products);

    let lines = audit(&h, date, false).await;
    assert!(lines.iter().all(|l| l.complete), "{lines:?}");
    assert_eq!(total(&lines, |l| l.catalogue_products), 1_200);
    assert_eq!(total(&lines, |l| l.missing), allowed.len() as i64);
    assert_eq!(
        lines.iter().map(|l| l.missing_ids.len()).sum::<usize>(),
        allowed.len(),
        "at most 100 listed per line: this day has fewer"
    );
    assert_eq!(missing_ids(&lines), allowed);
    assert!(lines.iter().all(|l| l.pages >= 4), "{lines:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn found_by_and_queue_delays_tell_push_from_poll() {
    let h = harness(100).await;
    let date = day("2024-05-03");
    // S2A only (every third product), every one on an allowed tile.
    let products: Vec<Value> = synthetic_day("paths", date, 300, &tiles(1))
        .into_iter()
        .step_by(3)
        .collect();
    let ids = ids_of(&products);
    assert_eq!(ids.len(), 100);
    h.stub.add_products(products.clone());

    // The first 20 came by push, before the poll.
    let pushed: Vec<Granule> = products[..20]
        .iter()
        .map(|p| {
            hls_core::adapters::catalogue::odata::parse_page(
                serde_json::json!({ "value": [p] }).to_string().as_bytes(),
            )
            .unwrap()
            .products
            .remove(0)
            .granule
            .unwrap()
        })
        .collect();
    let push = Handoff::new(
        GranuleStore::new(h.db.pool.clone()),
        h.queue.sqs_queue(),
        Duration::from_secs(2),
    );
    assert_eq!(
        push.record_and_queue(&pushed, FoundBy::Push)
            .await
            .unwrap()
            .len(),
        20
    );
    let fetched = h
        .deps
        .fetch(date, Some(Platform::S2A), Deadline::none())
        .await
        .unwrap();
    assert_eq!(fetched.new_granules, 80);
    assert_eq!(
        h.queue.drain(Duration::from_millis(500)).await.by_id.len(),
        100
    );

    // Known send times: push 30 s after publication (one at 90 s), poll an
    // hour (one at two hours).
    sqlx::query(
        "UPDATE granule_outbox o SET sent_at = (g.ingestiondate AT TIME ZONE 'UTC') + \
             CASE WHEN o.found_by = 'push' THEN interval '30 seconds' ELSE interval '1 hour' END \
         FROM granule g WHERE g.id = o.granule_id",
    )
    .execute(&h.db.pool)
    .await
    .unwrap();
    for (id, delay) in [(&ids[5], "90 seconds"), (&ids[50], "2 hours")] {
        sqlx::query(
            "UPDATE granule_outbox o SET sent_at = (g.ingestiondate AT TIME ZONE 'UTC') + $2::interval \
             FROM granule g WHERE g.id = o.granule_id AND g.id = $1",
        )
        .bind(id)
        .bind(delay)
        .execute(&h.db.pool)
        .await
        .unwrap();
    }

    let audit_s2a = || async {
        h.deps
            .audit(&[date], &[Platform::S2A], false, Deadline::none(), |_| {})
            .await
            .unwrap()
            .remove(0)
    };
    let line = &audit_s2a().await;
    assert_eq!((line.allowed, line.recorded, line.missing), (100, 100, 0));
    assert_eq!(
        (
            line.found_by.poll,
            line.found_by.push,
            line.found_by.audit,
            line.found_by.unknown
        ),
        (80, 20, 0, 0)
    );
    let push = line.queue_delay_s.push.as_ref().unwrap();
    assert_eq!((push.median, push.p99, push.count), (30.0, 90.0, 20));
    let poll = line.queue_delay_s.poll.as_ref().unwrap();
    assert_eq!((poll.median, poll.p99, poll.count), (3600.0, 7200.0, 80));
    assert!(line.queue_delay_s.audit.is_none());
    // The Python downloader's flag is counted.
    sqlx::query("UPDATE granule SET downloaded = true WHERE id = ANY($1)")
        .bind(&ids[..7])
        .execute(&h.db.pool)
        .await
        .unwrap();
    assert_eq!(audit_s2a().await.downloaded, 7);
}
