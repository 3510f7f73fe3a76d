//! The Phoenix engine: everything that does I/O. Today: the connector list, the catalog the
//! checker validates against, the file loader and the `phoenix` command line.
pub mod catalog;
pub mod cli;
pub mod connectors;
pub mod loader;

pub use catalog::EngineCatalog;
pub use loader::FsLoader;
