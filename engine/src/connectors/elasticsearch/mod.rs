//! `elasticsearch`: bulk indexing with per-item retries and dead letters.
//!
//! [`bulk`] is the wire format (body builder, response classification), [`ElasticsearchSink`]
//! the sink on the official client, [`test_server`] an in-process `_bulk` server with fault
//! injection for the tests and `phoenix bench --sink elasticsearch`.

pub mod bulk;
mod sink;
pub mod test_server;

pub use sink::ElasticsearchSink;

use super::{sink_options, with};
use phoenix_dsl::catalog::{ConnectorSpec, OptionSpec, OptionType, Role};
use phoenix_dsl::types::Ty;

pub fn sink_spec() -> ConnectorSpec {
    ConnectorSpec {
        name: "elasticsearch",
        role: Role::Sink,
        summary: "Indexes events with the _bulk API; failed items are retried alone or dead-lettered with their error.",
        options: with(
            vec![
                OptionSpec::new("url", OptionType::String, "Cluster URL.").required(),
                OptionSpec::new(
                    "index",
                    OptionType::Expr(Ty::String),
                    "Index per event: a string or an expression (`type || 's-index'`).",
                )
                .required(),
                OptionSpec::new(
                    "id",
                    OptionType::Expr(Ty::String),
                    "Document `_id` per event; makes retries idempotent. Without it (or NULL) Elasticsearch generates one.",
                ),
                OptionSpec::new(
                    "action",
                    OptionType::Enum(&["index", "create"]),
                    "Bulk action: `index` adds or replaces the document with the same `_id`; `create` refuses an existing `_id` (409, dead-lettered).",
                )
                .default("index"),
                OptionSpec::new("username", OptionType::String, "Basic-auth user."),
                OptionSpec::new("password", OptionType::String, "Basic-auth password; use `env(\"NAME\")`.").secret(),
                OptionSpec::new("api_key", OptionType::String, "API key (base64 `id:key`); use `env(\"NAME\")`.")
                    .secret(),
                OptionSpec::new("ca_cert", OptionType::String, "CA certificate (PEM file) to trust for an https:// `url`, besides the built-in roots."),
                OptionSpec::new("bulk_max_bytes", OptionType::Size, "Largest bulk request body (a larger single event goes alone).")
                    .default("5MiB"),
                OptionSpec::new("bulk_max_events", OptionType::Int, "Most events in one bulk request.").default("1000"),
                OptionSpec::new("linger", OptionType::Duration, "Longest a partly filled bulk request waits for more events.")
                    .default("200ms"),
                OptionSpec::new(
                    "timeout",
                    OptionType::Duration,
                    "Per-request timeout; a timed-out request is retried.",
                )
                .default("30s"),
            ],
            sink_options(),
        ),
        metadata: Vec::new(),
    }
}
