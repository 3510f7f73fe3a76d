//! The Phoenix engine: everything that does I/O — the compiler from plan to task graph, the
//! data path, the connectors, what a running flow reports, the benchmarks and the `phoenix`
//! command line.
pub mod api;
pub mod bench;
pub mod catalog;
pub mod cli;
pub mod cluster;
pub mod connectors;
pub mod docs;
pub mod exec;
pub mod loader;
pub mod lsp;
pub mod observability;
pub mod options;
pub mod reload;
pub mod run;
pub mod swap;
pub mod taskgraph;
pub mod testing;
pub mod tls;

pub use catalog::EngineCatalog;
pub use loader::FsLoader;
