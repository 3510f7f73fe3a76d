//! `stdin` / `stdout`: events on the process's standard streams.

mod run;

pub use run::{StdinSource, StdoutSink};

use super::{sink_options, source_metadata, source_options, with};
use phoenix_dsl::catalog::{ConnectorSpec, OptionSpec, OptionType, Role};

pub fn source_spec() -> ConnectorSpec {
    ConnectorSpec {
        name: "stdin",
        role: Role::Source,
        summary: "Reads NDJSON events from standard input until it closes.",
        options: source_options(),
        metadata: source_metadata(),
    }
}

pub fn sink_spec() -> ConnectorSpec {
    ConnectorSpec {
        name: "stdout",
        role: Role::Sink,
        summary: "Writes events to standard output.",
        options: with(
            vec![
                OptionSpec::new(
                    "format",
                    OptionType::Enum(&["json", "pretty"]),
                    "`json`: one line per event; `pretty`: indented.",
                )
                .default("json"),
            ],
            sink_options(),
        ),
        metadata: Vec::new(),
    }
}
