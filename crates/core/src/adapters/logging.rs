//! `tracing` set-up: JSON lines in Lambda (CloudWatch), readable text on a terminal.

use tracing::Subscriber;
use tracing::level_filters::LevelFilter;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::{self, Vars};

/// Crates that log whole requests at `debug` or `trace`: the Lambda runtime logs
/// each raw event (the push event carries its `Authorization` header), the HTTP
/// and AWS SDK stacks log headers and signing input. Targets match by prefix, so
/// `lambda_runtime` covers `lambda_runtime_api_client` and `hyper` `hyper_util`.
const CAPPED_TARGETS: [&str; 6] = [
    "lambda_runtime",
    "lambda_http",
    "hyper",
    "h2",
    "aws_smithy",
    "aws_sigv4",
];

/// How the process logs, from the settings read at start-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogSettings {
    /// `RUST_LOG`: the filter, whatever else is said here.
    pub rust_log: Option<String>,
    /// Started by the Lambda runtime (which sets `AWS_LAMBDA_RUNTIME_API`):
    /// JSON lines for CloudWatch.
    pub in_lambda: bool,
    /// The level when `RUST_LOG` is unset, empty or unreadable.
    pub default_level: LevelFilter,
    /// Targets left out when `RUST_LOG` is unset, empty or unreadable (what a
    /// command line shows another way).
    pub quiet_targets: &'static [&'static str],
}

impl LogSettings {
    /// `RUST_LOG` and `AWS_LAMBDA_RUNTIME_API`; `info` by default.
    pub fn read(vars: &Vars) -> Self {
        Self {
            rust_log: vars.get("RUST_LOG").map(str::to_owned),
            in_lambda: config::in_lambda(vars),
            default_level: LevelFilter::INFO,
            quiet_targets: &[],
        }
    }
}

/// Logs go to stderr so that a command's stdout stays machine-readable.
/// `RUST_LOG` sets the filter (default [`LogSettings::default_level`]), except
/// that [`CAPPED_TARGETS`] never log below `info`.
pub fn init(settings: &LogSettings) {
    let ansi = !settings.in_lambda && std::io::IsTerminal::is_terminal(&std::io::stderr());
    // A second call (tests) keeps the first subscriber.
    let _ = subscriber(settings, ansi, std::io::stderr).try_init();
}

/// `RUST_LOG`'s filter; unset, empty or unreadable means `default`, without `quiet` targets.
pub fn log_filter(rust_log: Option<&str>, default: LevelFilter, quiet: &[&str]) -> EnvFilter {
    rust_log
        .filter(|directives| !directives.trim().is_empty())
        .and_then(|directives| EnvFilter::try_new(directives).ok())
        .unwrap_or_else(|| {
            let mut directives = default.to_string();
            for target in quiet {
                directives.push_str(&format!(",{target}=off"));
            }
            EnvFilter::new(directives)
        })
}

/// Keeps [`CAPPED_TARGETS`] at `info` or above and lets everything else through.
/// A layer of its own rather than directives added to the [`EnvFilter`]: there
/// a more specific `RUST_LOG` directive (`lambda_runtime::layers=trace`) would
/// win over the cap.
pub fn runtime_cap() -> Targets {
    Targets::new()
        .with_default(LevelFilter::TRACE)
        .with_targets(CAPPED_TARGETS.map(|target| (target, LevelFilter::INFO)))
}

/// The subscriber [`init`] installs, writing to `writer`: JSON lines in Lambda.
pub fn subscriber<W>(
    settings: &LogSettings,
    ansi: bool,
    writer: W,
) -> Box<dyn Subscriber + Send + Sync>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let builder = tracing_subscriber::fmt()
        .with_env_filter(log_filter(
            settings.rust_log.as_deref(),
            settings.default_level,
            settings.quiet_targets,
        ))
        .with_writer(writer);
    if settings.in_lambda {
        Box::new(
            builder
                .json()
                .flatten_event(true)
                .with_current_span(false)
                .with_span_list(false)
                .without_time() // CloudWatch stamps each line
                .with_ansi(false)
                .finish()
                .with(runtime_cap()),
        )
    } else {
        Box::new(builder.with_ansi(ansi).finish().with(runtime_cap()))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn logged(rust_log: Option<&str>, json: bool) -> String {
        logged_with(rust_log, json, LevelFilter::INFO)
    }

    fn logged_with(rust_log: Option<&str>, json: bool, default_level: LevelFilter) -> String {
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let settings = LogSettings {
            rust_log: rust_log.map(str::to_owned),
            in_lambda: json,
            default_level,
            quiet_targets: &[],
        };
        let subscriber = subscriber(&settings, false, move || writer.clone());
        tracing::subscriber::with_default(subscriber, || {
            tracing::trace!(target: "lambda_runtime", "Authorization: Basic secret");
            tracing::debug!(target: "lambda_runtime::layers::trace", "Authorization: Basic secret2");
            tracing::trace!(target: "lambda_runtime_api_client", "Authorization: Basic secret3");
            tracing::trace!(target: "lambda_http", "Authorization: Basic secret4");
            tracing::info!(target: "lambda_runtime", "runtime started");
            tracing::trace!(target: "hls_core::adapters::store", "our own trace");
            tracing::debug!(target: "link_fetcher", "our own debug");
        });
        String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap()
    }

    #[test]
    fn quiet_targets_are_left_out_unless_rust_log_asks_for_them() {
        let logged = |rust_log: Option<&str>| {
            let buffer = Buffer::default();
            let writer = buffer.clone();
            let settings = LogSettings {
                rust_log: rust_log.map(str::to_owned),
                in_lambda: false,
                default_level: LevelFilter::WARN,
                quiet_targets: &["hls_core::catalogue_retry"],
            };
            let subscriber = subscriber(&settings, false, move || writer.clone());
            tracing::subscriber::with_default(subscriber, || {
                tracing::warn!(target: "hls_core::catalogue_retry", "catalogue fault; retrying");
                tracing::warn!(target: "hls_core::use_cases", "another warning");
            });
            String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap()
        };
        let quiet = logged(None);
        assert!(!quiet.contains("retrying"), "{quiet}");
        assert!(quiet.contains("another warning"), "{quiet}");
        let asked = logged(Some("warn"));
        assert!(asked.contains("retrying"), "{asked}");
    }

    #[test]
    fn the_runtime_never_logs_below_info_whatever_rust_log_says() {
        for rust_log in [
            "trace",
            "lambda_runtime=trace,trace",
            "lambda_runtime::layers=trace,lambda_runtime_api_client=trace,lambda_http=trace,trace",
        ] {
            for json in [false, true] {
                let out = logged(Some(rust_log), json);
                assert!(!out.contains("secret"), "{rust_log} (json {json}): {out}");
                assert!(out.contains("runtime started"), "{rust_log}: {out}");
                assert!(out.contains("our own trace"), "{rust_log}: {out}");
                assert!(out.contains("our own debug"), "{rust_log}: {out}");
            }
        }
    }

    #[test]
    fn rust_log_defaults_to_info() {
        for rust_log in [None, Some(""), Some("not a [filter")] {
            let out = logged(rust_log, false);
            assert!(out.contains("runtime started"), "{rust_log:?}: {out}");
            assert!(!out.contains("our own"), "{rust_log:?}: {out}");
        }
        let out = logged(Some("link_fetcher=debug"), false);
        assert!(out.contains("our own debug") && !out.contains("our own trace"));
    }

    #[test]
    fn the_default_level_applies_only_without_rust_log() {
        let quiet = logged_with(None, false, LevelFilter::WARN);
        assert!(!quiet.contains("runtime started"), "{quiet}");
        let asked = logged_with(Some("info"), false, LevelFilter::WARN);
        assert!(asked.contains("runtime started"), "{asked}");
    }

    #[test]
    fn settings_come_from_the_snapshot() {
        let vars: Vars = [("RUST_LOG", "debug"), ("AWS_LAMBDA_RUNTIME_API", "")]
            .into_iter()
            .collect();
        let settings = LogSettings::read(&vars);
        assert_eq!(settings.rust_log.as_deref(), Some("debug"));
        assert!(settings.in_lambda);
        assert!(!LogSettings::read(&Vars::default()).in_lambda);
    }
}
