//! `file`: read NDJSON or JSON-array files (one file, a glob, or a directory); write NDJSON.

mod sink;
mod source;

pub use sink::FileSink;
pub use source::FileSource;

use super::{sink_options, source_metadata, source_options, with};
use phoenix_dsl::catalog::{ConnectorSpec, MetaSpec, OptionSpec, OptionType, Role};
use phoenix_dsl::types::Ty;

pub fn source_spec() -> ConnectorSpec {
    ConnectorSpec {
        name: "file",
        role: Role::Source,
        summary: "Reads events from files: NDJSON (one JSON object per line) or a JSON array per file.",
        options: with(
            vec![
                OptionSpec::new(
                    "path",
                    OptionType::String,
                    "A file, a glob (`data/*.jsonl`) or a directory (every file in it).",
                )
                .required(),
                OptionSpec::new(
                    "format",
                    OptionType::Enum(&["auto", "ndjson", "json"]),
                    "`json`: each file is one JSON array of events; `auto` decides per file from its first character.",
                )
                .default("auto"),
            ],
            source_options(),
        ),
        metadata: with(
            source_metadata(),
            vec![
                MetaSpec {
                    name: "file",
                    ty: Ty::String,
                    optional: false,
                    doc: "Path of the file the event came from.",
                },
                MetaSpec {
                    name: "line",
                    ty: Ty::Int,
                    optional: false,
                    doc: "1-based line number (NDJSON) or array position (JSON).",
                },
            ],
        ),
    }
}

pub fn sink_spec() -> ConnectorSpec {
    ConnectorSpec {
        name: "file",
        role: Role::Sink,
        summary: "Appends events to a file as NDJSON.",
        options: with(
            vec![
                OptionSpec::new("path", OptionType::String, "The file to write; created if missing.").required(),
                OptionSpec::new(
                    "append",
                    OptionType::Bool,
                    "Append to an existing file instead of truncating it at start.",
                )
                .default("true"),
            ],
            sink_options(),
        ),
        metadata: Vec::new(),
    }
}
