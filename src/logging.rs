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
    let more = if bytes.len() > QUOTED_ANSWER {
        "…"
    } else {
        ""
    };
    format!("\"{}{more}\"", shown.escape_ascii())
}

/// Rate limit for a warning that can fire per entry on the hot path (a paused replica that
/// resumes can make thousands in a second): at most one line per interval, and that line
/// carries how many events it stands for. Used by both relays.
#[derive(Debug)]
pub struct Throttle {
    interval: std::time::Duration,
    last: Option<std::time::Instant>,
    pending: u64,
}

impl Throttle {
    /// One line per `interval`.
    pub const fn new(interval: std::time::Duration) -> Self {
        Throttle {
            interval,
            last: None,
            pending: 0,
        }
    }

    /// Records `events` more; returns `Some(total)` when a line may be written now, `total`
    /// counting these and every event suppressed since the last line.
    pub fn admit(&mut self, events: u64) -> Option<u64> {
        self.pending += events;
        let now = std::time::Instant::now();
        if self.pending == 0
            || self
                .last
                .is_some_and(|t| now.duration_since(t) < self.interval)
        {
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.pending))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_interval_carrying_the_suppressed_count() {
        let mut t = Throttle::new(std::time::Duration::from_millis(50));
        assert_eq!(t.admit(1), Some(1));
        for _ in 0..999 {
            assert_eq!(t.admit(1), None);
        }
        std::thread::sleep(std::time::Duration::from_millis(60));
        assert_eq!(t.admit(2), Some(1001));
        assert_eq!(t.admit(0), None);
    }
}
