//! The planned flow: a petgraph DAG of nodes holding DataFusion logical expressions.
//!
//! ```text
//!  FlowGraph<TExpr>  --lower-->  FlowGraph<datafusion_expr::Expr>  --engine-->  physical exprs
//!  (typed, checked)              (explicit casts, Arrow types)                    on RecordBatches
//! ```
pub mod graph;
pub mod lower;
pub mod render;

pub use graph::{Edge, FlowGraph, Node, NodeKind, OptionValue, Port, RouteArm, TestCase};
pub use lower::{LowerError, lower, lower_flow};

/// A flow ready for the engine.
pub type Plan = FlowGraph<datafusion_expr::Expr>;
