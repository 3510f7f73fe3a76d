//! What a running flow tells its operator: per-node counters ([`metrics`]), the HTTP endpoint
//! serving them with liveness and readiness ([`server`], [`readiness`]), the live table on a terminal ([`progress`]) and the
//! log output ([`logging`]).

pub mod logging;
pub mod metrics;
pub mod progress;
pub mod readiness;
pub mod server;
