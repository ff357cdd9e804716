//! Log set-up shared by both binaries: `tracing` to stderr, filtered by `RUST_LOG`.
//!
//! `FRAMECAST_LOG_FORMAT=json` switches to one JSON object per line for log collectors.

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber; `default_filter` applies when `RUST_LOG` is unset.
///
/// Safe to call more than once (later calls are ignored), so tests can call it freely.
pub fn init(default_filter: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let json = std::env::var("FRAMECAST_LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.compact().try_init()
    };
}
