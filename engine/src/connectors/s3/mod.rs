//! `s3`: read objects of a bucket as events; write events as objects.
//!
//! - [`source`]: finds objects by listing the bucket every `poll_interval` or from S3 event
//!   notifications on an SQS queue, reads up to `concurrency` of them at once ([`object`]:
//!   NDJSON or one JSON array, streamed, gzip by extension or `Content-Encoding`) and, once
//!   every event of an object is acknowledged, deletes it, moves it or records it in a
//!   checkpoint object ([`checkpoint`]).
//! - [`sink`]: each group of events becomes one NDJSON object (gzip optional), keyed by a
//!   per-event expression plus a unique suffix; large ones go up in parts.
//! - [`client`]: the S3 client, on the AWS configuration chain shared with `sqs`.

pub mod checkpoint;
pub mod client;
pub mod notification;
pub mod object;
pub mod sink;
pub mod source;

pub use sink::S3Sink;
pub use source::S3Source;

use super::{aws, sink_options, source_metadata, source_options, with};
use phoenix_dsl::catalog::{ConnectorSpec, MetaSpec, OptionSpec, OptionType, Role};
use phoenix_dsl::types::Ty;

const ENDPOINT_DOC: &str = "Endpoint URL override (a local S3-compatible server, addressed path-style); default: the standard AWS configuration chain.";

fn bucket() -> Vec<OptionSpec> {
    with(
        vec![OptionSpec::new("bucket", OptionType::String, "The bucket's name.").required()],
        aws::options(ENDPOINT_DOC),
    )
}

pub fn source_spec() -> ConnectorSpec {
    ConnectorSpec {
        name: "s3",
        role: Role::Source,
        summary: "Reads NDJSON or JSON-array objects (gzip too) found by listing or by event notifications; each object is done once all its events are delivered.",
        options: with(
            with(
                bucket(),
                vec![
                    OptionSpec::new("prefix", OptionType::String, "Only keys starting with this (`uploads/`).")
                        .default(""),
                    OptionSpec::new(
                        "glob",
                        OptionType::String,
                        "Only keys matching this glob (`uploads/*.json`, `**/*.gz`): `*` stays within one `/` level, `**` crosses them.",
                    ),
                    OptionSpec::new(
                        "format",
                        OptionType::Enum(&["auto", "ndjson", "json"]),
                        "`json`: each object is one JSON array of events; `auto`: an array if it starts with `[`, NDJSON if with `{`, otherwise the object is not JSON.",
                    )
                    .default("auto"),
                    OptionSpec::new(
                        "compression",
                        OptionType::Enum(&["auto", "none", "gzip"]),
                        "`auto`: gzip when the key ends in `.gz` or the object's `Content-Encoding` is gzip.",
                    )
                    .default("auto"),
                    OptionSpec::new(
                        "poll_interval",
                        OptionType::Duration,
                        "How often the bucket is listed for new objects; `0s`: list once, read what is there and stop.",
                    )
                    .default("10s"),
                    OptionSpec::new(
                        "notifications",
                        OptionType::String,
                        "URL of an SQS queue receiving the bucket's S3 event notifications: objects are found from them instead of by listing, and a notification is deleted once its object is done.",
                    ),
                    OptionSpec::new("concurrency", OptionType::Int, "Objects read at once.").default("4"),
                    OptionSpec::new(
                        "on_done",
                        OptionType::Enum(&["checkpoint", "delete", "move"]),
                        "What happens to an object once every event of it is delivered (written or dead-lettered): `checkpoint` records its key and ETag in `checkpoint_key`; `delete`; `move` it under `move_to`. A restart never reads a finished object again. An object that cannot be read at all (access denied, not JSON, not valid gzip) is dead-lettered whole, once: with `move` it is moved under `move_unreadable_to`; otherwise, or if it cannot be moved, it is left in place and its key and ETag are recorded in `checkpoint_key` (with `delete` too: data nobody read is not deleted), and it is read again only once it is written again.",
                    )
                    .default("checkpoint"),
                    OptionSpec::new(
                        "move_to",
                        OptionType::String,
                        "With `on_done = \"move\"`: the prefix finished objects are moved under (the key's part after `prefix` is kept).",
                    ),
                    OptionSpec::new(
                        "move_unreadable_to",
                        OptionType::String,
                        "With `on_done = \"move\"`: the prefix unreadable objects are moved under (the key's part after `prefix` is kept); default `unreadable/` beside `move_to` (`archive/done/` → `archive/unreadable/`).",
                    ),
                    OptionSpec::new(
                        "checkpoint_key",
                        OptionType::String,
                        "The object in the bucket that remembers finished objects (with `on_done = \"checkpoint\"`) and unreadable ones left in place (always; with `delete` or `move` it is written only once there is one); default `.phoenix/<source name>.checkpoint.json`. It is read at start, so the source needs `s3:GetObject` on it (a missing one is empty).",
                    ),
                    OptionSpec::new(
                        "visibility_timeout",
                        OptionType::Duration,
                        "With `notifications`: how long a received notification stays hidden; extended while its object is read.",
                    )
                    .default("60s"),
                    OptionSpec::new(
                        "drain_timeout",
                        OptionType::Duration,
                        "On shutdown, how long to wait for objects read to the end to be acknowledged and finished.",
                    )
                    .default("30s"),
                ],
            ),
            source_options(),
        ),
        metadata: with(
            source_metadata(),
            vec![
                MetaSpec { name: "bucket", ty: Ty::String, optional: false, doc: "Bucket of the object." },
                MetaSpec { name: "key", ty: Ty::String, optional: false, doc: "Key of the object the event came from (a file's name can say what its records are: `examples/commerce-ingest.phx`)." },
                MetaSpec {
                    name: "object_size",
                    ty: Ty::Int,
                    optional: false,
                    doc: "Size of the whole object in bytes, as stored (compressed).",
                },
                MetaSpec {
                    name: "last_modified",
                    ty: Ty::Timestamp,
                    optional: true,
                    doc: "When the object was last written.",
                },
                MetaSpec {
                    name: "line",
                    ty: Ty::Int,
                    optional: false,
                    doc: "1-based line number (NDJSON) or array position (JSON) in the object.",
                },
            ],
        ),
    }
}

pub fn sink_spec() -> ConnectorSpec {
    ConnectorSpec {
        name: "s3",
        role: Role::Sink,
        summary: "Writes each group of events as one NDJSON object (gzip optional); large objects go up in parts.",
        options: with(
            with(
                bucket(),
                vec![
                    OptionSpec::new(
                        "key",
                        OptionType::Expr(Ty::String),
                        "Key prefix per event (`'orders/' || format_timestamp(ts, '%Y/%m/%d') || '/'`); events with the same one share objects, each named by it plus a unique suffix. Without it, keys are the suffix alone.",
                    ),
                    OptionSpec::new(
                        "compression",
                        OptionType::Enum(&["none", "gzip"]),
                        "`gzip`: objects are gzip-compressed, keys end in `.jsonl.gz` and `Content-Encoding` is gzip.",
                    )
                    .default("none"),
                    OptionSpec::new("max_events", OptionType::Int, "Most events in one object.").default("100000"),
                    OptionSpec::new("max_bytes", OptionType::Size, "Largest object before compression.")
                        .default("64MiB"),
                    OptionSpec::new(
                        "max_age",
                        OptionType::Duration,
                        "Longest a partly filled object waits for more events.",
                    )
                    .default("30s"),
                    OptionSpec::new(
                        "part_size",
                        OptionType::Size,
                        "Objects larger than this go up as a multipart upload in parts of this size (at least 5MiB).",
                    )
                    .default("8MiB"),
                ],
            ),
            sink_options(),
        ),
        metadata: Vec::new(),
    }
}
