//! The Phoenix engine: everything that does I/O. Today: the connector list, the catalog the
//! checker validates against, the file loader and the `phoenix` command line.
pub mod catalog;
pub mod cli;
pub mod connectors;
pub mod loader;
pub mod logging;
pub mod progress;
pub mod server;

pub use catalog::EngineCatalog;
pub use loader::FsLoader;
pub mod bench;
pub mod bench_elasticsearch;
pub mod bench_kafka;
pub mod docs;
pub mod exec;
pub mod metrics;
pub mod options;
pub mod run;
pub mod taskgraph;
pub mod testing;
