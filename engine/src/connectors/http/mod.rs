//! `http`: events POSTed to an endpoint (NDJSON, a JSON array, or one object).

pub mod listener;
mod source;

pub use source::HttpSource;

use super::{source_metadata, source_options, with};
use phoenix_dsl::catalog::{ConnectorSpec, MetaSpec, OptionSpec, OptionType, Role};
use phoenix_dsl::types::Ty;

pub fn source_spec() -> ConnectorSpec {
    ConnectorSpec {
        name: "http",
        role: Role::Source,
        summary: "Accepts events POSTed over HTTP; answers 2xx only once every event is accepted downstream.",
        options: with(
            vec![
                OptionSpec::new("address", OptionType::String, "Address to listen on.").default("127.0.0.1:8080"),
                OptionSpec::new("path", OptionType::String, "Request path that accepts events.").default("/"),
                OptionSpec::new("max_body", OptionType::Size, "Largest request body; larger requests get 413.")
                    .default("10MiB"),
                OptionSpec::new(
                    "api_keys",
                    OptionType::String,
                    "Key file (`KEY write` a line, as `phoenix serve --api-keys`): requests need `Authorization: \
                     Bearer KEY` with a write key, else 401 (403 for a read key); re-read when it changes.",
                ),
                OptionSpec::new(
                    "tls_cert",
                    OptionType::String,
                    "PEM certificate chain (leaf first): serve HTTPS. Needs `tls_key`.",
                ),
                OptionSpec::new("tls_key", OptionType::String, "PEM private key of `tls_cert`."),
            ],
            source_options(),
        ),
        metadata: with(
            source_metadata(),
            vec![MetaSpec {
                name: "remote",
                ty: Ty::String,
                optional: true,
                doc: "Address of the client that sent the event (`ip:port`).",
            }],
        ),
    }
}
