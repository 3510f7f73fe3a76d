//! `kafka`: consume topics in a consumer group; produce to a topic chosen per event.

use super::{sink_options, source_metadata, source_options, with};
use phoenix_dsl::catalog::{ConnectorSpec, MetaSpec, OptionSpec, OptionType, Role};
use phoenix_dsl::types::Ty;

fn security() -> Vec<OptionSpec> {
    vec![
        OptionSpec::new(
            "security_protocol",
            OptionType::Enum(&["plaintext", "ssl", "sasl_plaintext", "sasl_ssl"]),
            "How to talk to the brokers.",
        )
        .default("plaintext"),
        OptionSpec::new(
            "sasl_mechanism",
            OptionType::Enum(&["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]),
            "SASL mechanism.",
        ),
        OptionSpec::new("sasl_username", OptionType::String, "SASL user name."),
        OptionSpec::new("sasl_password", OptionType::String, "SASL password; use `env(\"NAME\")`.").secret(),
        OptionSpec::new("ssl_ca_location", OptionType::String, "CA certificate file for TLS."),
    ]
}

pub fn source_spec() -> ConnectorSpec {
    ConnectorSpec {
        name: "kafka",
        role: Role::Source,
        summary: "Consumes topics as a member of a consumer group; commits offsets once events are delivered.",
        options: with(
            with(
                vec![
                    OptionSpec::new("brokers", OptionType::String, "Bootstrap brokers, `host:port[,host:port]`.")
                        .required(),
                    OptionSpec::new(
                        "topic",
                        OptionType::List(Box::new(OptionType::String)),
                        "Topic or list of topics to consume.",
                    )
                    .required(),
                    OptionSpec::new(
                        "group",
                        OptionType::String,
                        "Consumer group id; replicas with the same group share the partitions.",
                    )
                    .required(),
                    OptionSpec::new(
                        "start",
                        OptionType::Enum(&["earliest", "latest"]),
                        "Where a group with no committed offset starts.",
                    )
                    .default("earliest"),
                ],
                security(),
            ),
            source_options(),
        ),
        metadata: with(
            source_metadata(),
            vec![
                MetaSpec { name: "key", ty: Ty::String, optional: true, doc: "Message key (UTF-8)." },
                MetaSpec { name: "topic", ty: Ty::String, optional: false, doc: "Topic the message came from." },
                MetaSpec { name: "partition", ty: Ty::Int, optional: false, doc: "Partition number." },
                MetaSpec { name: "offset", ty: Ty::Int, optional: false, doc: "Offset in the partition." },
                MetaSpec { name: "timestamp", ty: Ty::Timestamp, optional: true, doc: "Message timestamp." },
            ],
        ),
    }
}

pub fn sink_spec() -> ConnectorSpec {
    ConnectorSpec {
        name: "kafka",
        role: Role::Sink,
        summary: "Produces events to Kafka with an idempotent producer; delivery reports drive acknowledgements.",
        options: with(
            with(
                vec![
                    OptionSpec::new("brokers", OptionType::String, "Bootstrap brokers, `host:port[,host:port]`.")
                        .required(),
                    OptionSpec::new(
                        "topic",
                        OptionType::Expr(Ty::String),
                        "Topic to write to: a string, or an expression per event (`type || 's'`).",
                    )
                    .required(),
                    OptionSpec::new("key", OptionType::Expr(Ty::String), "Message key per event (`customer.id`)."),
                    OptionSpec::new("create_topics", OptionType::Bool, "Create missing topics through the admin API.")
                        .default("false"),
                    OptionSpec::new("partitions", OptionType::Int, "Partitions of topics this sink creates.")
                        .default("1"),
                    OptionSpec::new(
                        "compression",
                        OptionType::Enum(&["none", "gzip", "snappy", "lz4", "zstd"]),
                        "Compression codec.",
                    )
                    .default("none"),
                ],
                security(),
            ),
            sink_options(),
        ),
        metadata: Vec::new(),
    }
}
