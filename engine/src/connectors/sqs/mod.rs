//! `sqs`: long-poll a queue with several pollers; send in batches of ten.

use super::{sink_options, source_metadata, source_options, with};
use phoenix_dsl::catalog::{ConnectorSpec, MetaSpec, OptionSpec, OptionType, Role};
use phoenix_dsl::types::Ty;

fn aws() -> Vec<OptionSpec> {
    vec![
        OptionSpec::new("queue_url", OptionType::String, "The queue's URL.").required(),
        OptionSpec::new("region", OptionType::String, "AWS region; defaults to the standard AWS configuration chain."),
        OptionSpec::new("endpoint", OptionType::String, "Endpoint URL override (a local SQS-compatible server)."),
    ]
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
                ],
            ),
            sink_options(),
        ),
        metadata: Vec::new(),
    }
}
