//! What a running flow tells its operator: per-node counters ([`metrics`]), the HTTP endpoint
//! serving them with liveness ([`server`]), the live table on a terminal ([`progress`]) and the
//! log output ([`logging`]).

pub mod logging;
pub mod metrics;
pub mod progress;
pub mod server;
