//! The command line's progress line: how far the day has got, redrawn in place
//! on stderr when that is a terminal, and cleared at the end so that nothing of
//! it stays beside the JSON lines on stdout.

use std::io::Write;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hls_core::use_cases::day_fetch::{Progress, Retry, Tally};

/// A run shorter than this shows no progress at all.
const SHOW_AFTER: Duration = Duration::from_millis(1500);
/// Redraws at most this often.
const REDRAW_EVERY: Duration = Duration::from_millis(100);
/// Erases the line the cursor is on.
const ERASE: &str = "\r\x1b[2K";

/// What the last number counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counting {
    Queued,
    WouldQueue,
    /// The audit reads, it queues nothing while it reads.
    Nothing,
}

pub struct ProgressLine<W: Write + Send> {
    out: Option<Mutex<Line<W>>>,
    counting: Counting,
}

struct Line<W> {
    writer: W,
    started: Instant,
    drawn: Option<Instant>,
}

impl ProgressLine<std::io::Stderr> {
    /// On stderr when it is a terminal, else nowhere.
    pub fn on_terminal(counting: Counting) -> Self {
        let terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
        Self::new(terminal.then(std::io::stderr), counting, Instant::now())
    }
}

impl<W: Write + Send> ProgressLine<W> {
    pub fn new(writer: Option<W>, counting: Counting, started: Instant) -> Self {
        Self {
            out: writer.map(|writer| {
                Mutex::new(Line {
                    writer,
                    started,
                    drawn: None,
                })
            }),
            counting,
        }
    }

    fn text(&self, tally: Tally) -> String {
        let pages = match tally.pages {
            1 => "1 page".to_owned(),
            n => format!("{n} pages"),
        };
        let examined = format!("{} products examined", tally.examined);
        match self.counting {
            Counting::Queued => format!("{pages}, {examined}, {} queued", tally.queued),
            Counting::WouldQueue => {
                format!("{pages}, {examined}, {} would be queued", tally.queued)
            }
            Counting::Nothing => format!("{pages}, {examined}"),
        }
    }

    /// Erases the line, if it was drawn.
    pub fn clear(&self) {
        let Some(out) = &self.out else { return };
        let mut line = out.lock().unwrap_or_else(|e| e.into_inner());
        if line.drawn.take().is_some() {
            let _ = write!(line.writer, "{ERASE}");
            let _ = line.writer.flush();
        }
    }
}

impl<W: Write + Send> Progress for ProgressLine<W> {
    fn page_done(&self, tally: Tally) {
        let Some(out) = &self.out else { return };
        let text = self.text(tally);
        let mut line = out.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if now.duration_since(line.started) < SHOW_AFTER
            || line
                .drawn
                .is_some_and(|at| now.duration_since(at) < REDRAW_EVERY)
        {
            return;
        }
        line.draw(&text, now);
    }

    /// Shown at once: the person waits through the delay.
    fn retrying(&self, retry: &Retry<'_>) {
        let Some(out) = &self.out else { return };
        let text = format!(
            "{}; attempt {} of {} in {:.1} s",
            retry.error,
            retry.attempt + 1,
            retry.max_attempts,
            retry.delay.as_secs_f64()
        );
        let mut line = out.lock().unwrap_or_else(|e| e.into_inner());
        line.draw(&text, Instant::now());
    }
}

impl<W: Write> Line<W> {
    fn draw(&mut self, text: &str, now: Instant) {
        // The cursor goes back to the start: a log line written next overwrites it.
        let _ = write!(self.writer, "{ERASE}{text}\r");
        let _ = self.writer.flush();
        self.drawn = Some(now);
    }
}

impl<W: Write + Send> Drop for ProgressLine<W> {
    fn drop(&mut self) {
        self.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tally(pages: u32) -> Tally {
        Tally {
            pages,
            examined: i64::from(pages) * 1000,
            queued: 7,
        }
    }

    fn written(line: &ProgressLine<Vec<u8>>) -> String {
        let out = line.out.as_ref().unwrap().lock().unwrap();
        String::from_utf8(out.writer.clone()).unwrap()
    }

    #[test]
    fn a_retry_shows_at_once_with_the_fault_and_the_wait_and_the_next_page_replaces_it() {
        use hls_core::adapters::catalogue::{CatalogueError, FailedRequest, Fault};
        let error = CatalogueError::Unreachable {
            host: "catalogue.dataspace.copernicus.eu".into(),
            fault: Fault::Timeout,
            request: Box::new(FailedRequest {
                url: "https://catalogue.dataspace.copernicus.eu/odata/v1/Products?$filter=long"
                    .into(),
                cause: None,
            }),
        };
        // Right at the start, where a page would not be shown yet.
        let line = ProgressLine::new(Some(Vec::new()), Counting::Queued, Instant::now());
        line.retrying(&Retry {
            attempt: 1,
            max_attempts: 4,
            delay: Duration::from_millis(1500),
            error: &error,
        });
        assert_eq!(
            written(&line),
            "\r\x1b[2Kcatalogue catalogue.dataspace.copernicus.eu unreachable (timed out); attempt 2 of 4 in 1.5 s\r"
        );
        line.clear();
        assert!(written(&line).ends_with("\r\x1b[2K"), "cleared at the end");
        assert!(
            !written(&line).contains("$filter"),
            "the query URL stays out"
        );
    }

    #[test]
    fn a_short_run_shows_nothing() {
        let line = ProgressLine::new(Some(Vec::new()), Counting::Queued, Instant::now());
        line.page_done(tally(1));
        line.clear();
        assert_eq!(written(&line), "");
    }

    #[test]
    fn a_long_run_redraws_one_line_and_erases_it_at_the_end() {
        let long_ago = Instant::now() - Duration::from_secs(5);
        let line = ProgressLine::new(Some(Vec::new()), Counting::Queued, long_ago);
        line.page_done(tally(3));
        // Within the redraw interval: not drawn again.
        line.page_done(tally(4));
        line.clear();
        assert_eq!(
            written(&line),
            "\r\x1b[2K3 pages, 3000 products examined, 7 queued\r\r\x1b[2K"
        );
        assert!(!written(&line).contains('\n'));
    }

    #[test]
    fn nowhere_is_silent() {
        let line: ProgressLine<Vec<u8>> = ProgressLine::new(
            None,
            Counting::Nothing,
            Instant::now() - Duration::from_secs(5),
        );
        line.page_done(tally(1));
        line.clear();
        assert!(line.out.is_none());
    }
}
