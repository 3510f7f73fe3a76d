//! `sqs`: long-poll a queue with several pollers; send in batches of ten.
//!
//! - [`source`]: `pollers` ReceiveMessage loops; a batch's messages are deleted
//!   (DeleteMessageBatch) only once every sink it reached acknowledged it, their visibility is
//!   extended while they are in flight, and undelivered ones are made visible again at once.
//! - [`sink`]: SendMessageBatch in tens, concurrently; failed entries are sent again.
//! - [`client`]: the AWS SDK client from the standard configuration chain plus `region` and
//!   `endpoint`.

pub mod client;
pub mod sink;
pub mod source;

pub use sink::SqsSink;
pub use source::SqsSource;

use super::{sink_options, source_metadata, source_options, with};
use phoenix_dsl::catalog::{ConnectorSpec, MetaSpec, OptionSpec, OptionType, Role};
use phoenix_dsl::types::Ty;

fn aws() -> Vec<OptionSpec> {
    with(
        vec![OptionSpec::new("queue_url", OptionType::String, "The queue's URL.").required()],
        super::aws::options(
            "Endpoint URL override (a local SQS-compatible server); default: the standard AWS configuration chain.",
        ),
    )
}

pub fn source_spec() -> ConnectorSpec {
    ConnectorSpec {
        name: "sqs",
        role: Role::Source,
        summary: "Receives messages with long polling; deletes them once delivered.",
        options: with(
            with(
                aws(),
                vec![
                    OptionSpec::new("pollers", OptionType::Int, "Concurrent ReceiveMessage loops.").default("2"),
                    OptionSpec::new("wait_time", OptionType::Duration, "Long-poll wait per request (at most 20s).")
                        .default("20s"),
                    OptionSpec::new(
                        "visibility_timeout",
                        OptionType::Duration,
                        "How long a received message stays hidden; extended while in flight.",
                    )
                    .default("30s"),
                    OptionSpec::new(
                        "drain_timeout",
                        OptionType::Duration,
                        "On shutdown, how long to wait for in-flight messages to be acknowledged and deleted.",
                    )
                    .default("30s"),
                ],
            ),
            source_options(),
        ),
        metadata: with(
            source_metadata(),
            vec![
                MetaSpec { name: "message_id", ty: Ty::String, optional: false, doc: "SQS message id." },
                MetaSpec {
                    name: "receive_count",
                    ty: Ty::Int,
                    optional: true,
                    doc: "How often the message was received.",
                },
            ],
        ),
    }
}

pub fn sink_spec() -> ConnectorSpec {
    ConnectorSpec {
        name: "sqs",
        role: Role::Sink,
        summary: "Sends events with SendMessageBatch, retrying failed entries.",
        options: with(
            with(
                aws(),
                vec![
                    OptionSpec::new(
                        "message_group_id",
                        OptionType::Expr(Ty::String),
                        "FIFO queues: message group per event.",
                    ),
                    OptionSpec::new(
                        "deduplication_id",
                        OptionType::Expr(Ty::String),
                        "FIFO queues: deduplication id per event.",
                    ),
                    OptionSpec::new(
                        "concurrency",
                        OptionType::Int,
                        "SendMessageBatch requests in flight at once (1 for FIFO queues, to keep group order).",
                    )
                    .default("4"),
                    OptionSpec::new(
                        "max_message_size",
                        OptionType::Size,
                        "Largest message body; a larger event goes to the sink's `.errors`.",
                    )
                    .default("256KiB"),
                ],
            ),
            sink_options(),
        ),
        metadata: Vec::new(),
    }
}
