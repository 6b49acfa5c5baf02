//! `tracing` set-up: JSON lines in Lambda (CloudWatch), readable text on a terminal.

use tracing_subscriber::EnvFilter;

/// Logs go to stderr so that a command's stdout stays machine-readable.
/// `RUST_LOG` sets the filter (default `info`).
pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = if running_in_lambda() {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .without_time() // CloudWatch stamps each line
            .with_ansi(false)
            .try_init()
    } else {
        builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init()
    };
    // A second call (tests) keeps the first subscriber.
    let _ = result;
}

/// The Lambda runtime sets `AWS_LAMBDA_RUNTIME_API` for the function's process.
pub fn running_in_lambda() -> bool {
    std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_some()
}
