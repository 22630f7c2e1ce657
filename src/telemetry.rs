//! Logging: `tracing` events to standard error, readable text by default or one JSON object per
//! line (`log.format = "json"`). Levels come from `RUST_LOG` (default `info`).

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Without RUST_LOG: pcsync at info; sqlx only when something is wrong (it reports every
/// server NOTICE, such as "schema already exists, skipping", at info).
pub const DEFAULT_FILTER: &str = "info,sqlx=warn";

/// Installs the global subscriber. Safe to call more than once (later calls do nothing), so
/// tests and the binary can share it.
pub fn init(format: LogFormat) {
    init_with_default(format, DEFAULT_FILTER);
}

/// As [`init`], with another filter for when `RUST_LOG` is not set.
pub fn init_with_default(format: LogFormat, default_filter: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // When standard error is closed (`pcsync run 2>&1 | head`, a log shipper gone),
        // tracing-subscriber would report it with eprintln!, which panics on the same closed
        // stream, in whatever task was logging: lose the log line, not the sync.
        .log_internal_errors(false)
        // Colour codes only for a person at a terminal, never into a file, pipe or collector.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false);
    // An Err means a subscriber is already installed: keep that one.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init(),
    };
}
