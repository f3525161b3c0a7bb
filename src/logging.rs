//! Log output: human-readable lines by default, JSON with `--log-format json`, filtered by
//! `--log-level` (an `EnvFilter` expression).

use crate::config::LogFormat;
use tracing_subscriber::EnvFilter;

/// Install the global subscriber; logs go to stderr.
pub fn init(format: LogFormat, filter: &str) {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let result = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    if let Err(e) = result {
        eprintln!("logging already initialised: {e}");
    }
}

/// Bytes of a foreign server's answer quoted in the log: enough to recognise it (an HTTP
/// status line, an SSH banner), short enough for one log line.
const QUOTED_ANSWER: usize = 48;

/// `bytes` (network data) as a short, escaped quotation for a log line.
pub fn quote_answer(bytes: &[u8]) -> String {
    let shown = &bytes[..bytes.len().min(QUOTED_ANSWER)];
    let more = if bytes.len() > QUOTED_ANSWER { "…" } else { "" };
    format!("\"{}{more}\"", shown.escape_ascii())
}
