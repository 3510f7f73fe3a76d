//! `kafka`: consume topics in a consumer group; produce to a topic chosen per event.
//!
//! - [`source`]: one consumer per source, polled on its own thread; offsets are committed per
//!   partition only up to the last contiguous acknowledged batch ([`offsets`]).
//! - [`sink`]: an idempotent producer; a flush waits for every delivery report and re-sends
//!   what failed on the next attempt.
//! - [`config`]: the librdkafka settings both share (brokers, TLS, SASL, extra properties).

pub mod config;
pub mod offsets;
pub mod sink;
pub mod source;

pub use sink::KafkaSink;
pub use source::KafkaSource;

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
        OptionSpec::new(
            "ssl_certificate_location",
            OptionType::String,
            "Client certificate file (PEM) for mutual TLS.",
        ),
        OptionSpec::new("ssl_key_location", OptionType::String, "Client private key file (PEM) for mutual TLS."),
        OptionSpec::new("ssl_key_password", OptionType::String, "Password of the client key; use `env(\"NAME\")`.")
            .secret(),
        OptionSpec::new(
            "properties",
            OptionType::List(Box::new(OptionType::String)),
            "Extra librdkafka settings as `name=value` (`[\"fetch.max.bytes=1048576\"]`); they win over the above.",
        ),
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
                    OptionSpec::new(
                        "commit_interval",
                        OptionType::Duration,
                        "How often acknowledged offsets are committed; a crash replays at most this much more.",
                    )
                    .default("1s"),
                    OptionSpec::new(
                        "drain_timeout",
                        OptionType::Duration,
                        "On shutdown or when partitions are revoked, how long to wait for in-flight events to be \
                         acknowledged before committing what is.",
                    )
                    .default("30s"),
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
                MetaSpec {
                    name: "headers",
                    ty: Ty::String,
                    optional: true,
                    doc: "Message headers as a JSON object of strings (`json_get(@headers, 'trace-id')`); \
                          NULL when there are none.",
                },
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
                    OptionSpec::new(
                        "headers",
                        OptionType::Expr(Ty::String),
                        "Message headers per event: a JSON object of names to values \
                         (`'{\"origin\": \"phoenix\"}'`, or `@headers` to forward a Kafka source's).",
                    ),
                    OptionSpec::new("create_topics", OptionType::Bool, "Create missing topics through the admin API.")
                        .default("false"),
                    OptionSpec::new("partitions", OptionType::Int, "Partitions of topics this sink creates.")
                        .default("1"),
                    OptionSpec::new(
                        "replication",
                        OptionType::Int,
                        "Replication factor of topics this sink creates (-1: the broker's default).",
                    )
                    .default("-1"),
                    OptionSpec::new(
                        "delivery_timeout",
                        OptionType::Duration,
                        "How long the producer retries one message before the sink's own retry policy takes over.",
                    )
                    .default("30s"),
                    OptionSpec::new(
                        "max_message_size",
                        OptionType::Size,
                        "Largest message; a larger event is refused and goes to the sink's `.errors`.",
                    )
                    .default("1MiB"),
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
