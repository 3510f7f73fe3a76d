//! Connectors: one folder each, registered in one explicit list ([`specs`]).
//!
//! Each connector declares its options (names, types, defaults, docs) so `phoenix check`
//! validates a flow's connector blocks before anything runs.

pub mod elasticsearch;
pub mod file;
pub mod generate;
pub mod http;
pub mod kafka;
pub mod sqs;
pub mod stdio;

use phoenix_dsl::catalog::{ConnectorSpec, MetaSpec, OptionSpec, OptionType};
use phoenix_dsl::types::Ty;

/// Every connector, as source and/or sink. This list is the registry.
pub fn specs() -> Vec<ConnectorSpec> {
    vec![
        file::source_spec(),
        file::sink_spec(),
        stdio::source_spec(),
        stdio::sink_spec(),
        generate::source_spec(),
        http::source_spec(),
        kafka::source_spec(),
        kafka::sink_spec(),
        sqs::source_spec(),
        sqs::sink_spec(),
        elasticsearch::sink_spec(),
    ]
}

/// Options every source has: how events are grouped into batches.
pub(crate) fn source_options() -> Vec<OptionSpec> {
    vec![
        OptionSpec::new("batch_size", OptionType::Int, "Most events in one micro-batch.").default("8192"),
        OptionSpec::new(
            "linger",
            OptionType::Duration,
            "Longest a partly filled batch waits for more events before it is sent on.",
        )
        .default("5ms"),
    ]
}

/// Options every sink has: the retry policy for failed writes.
pub(crate) fn sink_options() -> Vec<OptionSpec> {
    vec![
        OptionSpec::new(
            "max_attempts",
            OptionType::Int,
            "Attempts per event before it goes to the sink's `.errors` port (0: retry forever).",
        )
        .default("10"),
        OptionSpec::new("backoff_min", OptionType::Duration, "First retry delay; doubles each attempt, with jitter.")
            .default("100ms"),
        OptionSpec::new("backoff_max", OptionType::Duration, "Longest retry delay.").default("30s"),
    ]
}

/// Metadata every source provides.
pub(crate) fn source_metadata() -> Vec<MetaSpec> {
    vec![MetaSpec { name: "size", ty: Ty::Int, optional: false, doc: "Size of the event's raw payload in bytes." }]
}

pub(crate) fn with<T>(mut a: Vec<T>, b: Vec<T>) -> Vec<T> {
    a.extend(b);
    a
}
