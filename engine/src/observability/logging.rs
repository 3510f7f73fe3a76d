//! Log output on stderr: human text or one JSON object per line.

use std::io::{IsTerminal, Write};
use tracing_subscriber::EnvFilter;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines, coloured on a terminal.
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Install the global subscriber. `RUST_LOG` wins if set; otherwise Phoenix logs at `info`
/// (`-v` debug, `-vv` trace, `-vvv` trace for every crate) and other crates at `warn`.
/// A second call does nothing.
pub fn init(format: LogFormat, verbosity: u8) {
    let filter = filter(std::env::var("RUST_LOG").ok(), verbosity);
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(|| Stderr);
    // Err means a subscriber is already installed (tests, a second call): keep it.
    let _ = match format {
        LogFormat::Text => builder.with_ansi(ansi).try_init(),
        LogFormat::Json => builder.json().with_ansi(false).try_init(),
    };
}

/// `RUST_LOG` (invalid directives skipped) or the default for `verbosity`. The `phoenix` target
/// prefix covers every Phoenix crate (`phoenix_engine`, `phoenix_dsl`, ...) and the binary.
fn filter(rust_log: Option<String>, verbosity: u8) -> EnvFilter {
    match rust_log {
        Some(spec) if !spec.trim().is_empty() => EnvFilter::builder().parse_lossy(spec),
        _ => EnvFilter::new(match verbosity {
            0 => "warn,phoenix=info",
            1 => "warn,phoenix=debug",
            2 => "warn,phoenix=trace",
            _ => "trace",
        }),
    }
}

/// Stderr that writes above the live progress display instead of through it.
struct Stderr;

impl Write for Stderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        crate::observability::progress::suspend(|| std::io::stderr().lock().write_all(buf))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

#[cfg(test)]
mod tests {
    use super::filter;

    // `init` itself is not called here: it installs a process-wide subscriber that would print
    // the logs of every other test in this binary.
    #[test]
    fn verbosity_and_rust_log_choose_the_filter() {
        assert_eq!(filter(None, 0).to_string(), "phoenix=info,warn");
        assert_eq!(filter(Some(" ".into()), 1).to_string(), "phoenix=debug,warn");
        assert_eq!(filter(None, 2).to_string(), "phoenix=trace,warn");
        assert_eq!(filter(None, 9).to_string(), "trace");
        assert_eq!(filter(Some("phoenix_engine::run=debug".into()), 0).to_string(), "phoenix_engine::run=debug");
        assert_eq!(filter(Some("phoenix=bogus_level".into()), 0).to_string(), "", "invalid directives are skipped");
    }
}
