//! The Phoenix flow language.
pub mod ast;
pub mod catalog;
pub mod check;
pub mod diagnostic;
pub mod fmt;
pub mod parser;
pub mod plan;
pub mod span;
pub mod types;
