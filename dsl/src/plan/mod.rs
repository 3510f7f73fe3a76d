//! The planned flow: a petgraph DAG of nodes with DataFusion logical expressions.
pub mod graph;
