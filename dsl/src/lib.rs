//! The Phoenix flow language.
pub mod ast;
pub mod catalog;
pub mod check;
pub mod compile;
pub mod diagnostic;
pub mod fmt;
pub mod parser;
pub mod plan;
pub mod query;
pub mod span;
pub mod stack;
pub mod types;

pub use compile::{Compilation, Loader, MemoryLoader, compile};
