//! The operational HTTP endpoint of `phoenix run`: liveness, readiness and Prometheus metrics.
//!
//! ```text
//! GET /health   200 {"status":"ok","uptime_s":42}       while the process serves requests,
//!               200 {"status":"draining","uptime_s":42} draining included (liveness)
//! GET /ready    503 {"status":"starting"}               until every node is built
//!               503 {"status":"connecting","waiting":["source orders (kafka)"]}
//!                                                       until every source and sink has reached its service
//!               200 {"status":"ready"}                  then
//!               503 {"status":"stopping"}               once the flow drains
//! GET /metrics  the per-node counters, OpenMetrics text
//! GET /         the list of endpoints
//! ```
//!
//! Liveness is only "the process answers": a Kubernetes liveness probe that failed while the
//! flow drains would have the kubelet kill the pod before its events are delivered, so
//! draining is reported but stays 200. Readiness is what takes a pod out of a Service and lets
//! a rolling update go on ([`readiness`](super::readiness)).
//!
//! Binding is separate from serving so the caller can report a busy port before the flow starts
//! and tests can bind port 0:
//!
//! ```no_run
//! # async fn demo(metrics: std::sync::Arc<phoenix_engine::observability::metrics::Metrics>) -> Result<(), phoenix_engine::observability::server::ServerError> {
//! use phoenix_engine::observability::server::{self, Health};
//! let listener = server::bind("127.0.0.1:9090").await?;
//! let health = Health::new();
//! let stop = tokio_util::sync::CancellationToken::new();
//! let task = tokio::spawn(server::serve(listener, metrics, health.clone(), stop.clone().cancelled_owned()));
//! // ... run the flow; when it starts draining:
//! health.set_draining();
//! // ... when it has stopped:
//! stop.cancel();
//! task.await.expect("server task")?;
//! # Ok(()) }
//! ```

use crate::observability::metrics::Metrics;
use crate::observability::readiness::Readiness;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use serde_json::json;
use std::future::{Future, IntoFuture};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// What prometheus-client's text encoder produces.
pub const METRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// How long `serve` waits for open connections after the shutdown future resolves.
const DRAIN_GRACE: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The address is malformed, unresolvable, in use or not ours to bind.
    #[error("cannot serve metrics on {addr}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    /// Accepting connections failed after a successful bind.
    #[error("the metrics server failed")]
    Serve(#[source] std::io::Error),
}

/// The flow's state as `/health` and `/ready` report it. Clones share it.
#[derive(Debug, Clone, Default)]
pub struct Health {
    draining: Arc<AtomicBool>,
    readiness: Readiness,
}

impl Health {
    pub fn new() -> Health {
        Health::default()
    }

    /// The sources and sinks `/ready` waits for: hand it to the run (`RunConfig::readiness`).
    pub fn readiness(&self) -> Readiness {
        self.readiness.clone()
    }

    /// From now on `/ready` answers 503, so load balancers and orchestrators stop sending work;
    /// `/health` says `draining` and stays 200.
    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }
}

/// Bind the listener for [`serve`]. `addr` is `host:port` (`127.0.0.1:9090`, `0.0.0.0:9090`,
/// `localhost:0`); port 0 picks a free port, read it back with `local_addr()`.
pub async fn bind(addr: &str) -> Result<TcpListener, ServerError> {
    TcpListener::bind(addr).await.map_err(|source| ServerError::Bind { addr: addr.to_string(), source })
}

/// Serve `/health`, `/ready`, `/metrics` and `/` on `listener` until `shutdown` resolves, then stop
/// accepting, let open requests finish (at most one second) and return.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    health: Health,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    serve_router(listener, router(metrics, health), shutdown).await
}

/// [`serve`] with any router (`phoenix serve` adds the control-plane API to [`router`]).
pub async fn serve_router<L>(
    listener: L,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError>
where
    // A plain TCP listener, or [`crate::tls::TlsListener`].
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
{
    let stopping = CancellationToken::new();
    let signal = {
        let stopping = stopping.clone();
        async move {
            shutdown.await;
            stopping.cancel();
        }
    };
    let server = axum::serve(listener, router).with_graceful_shutdown(signal).into_future();
    // Graceful shutdown waits for every open connection; a stuck client must not hold the
    // process, so the wait is bounded.
    let deadline = async {
        stopping.cancelled().await;
        tokio::time::sleep(DRAIN_GRACE).await;
    };
    tokio::select! {
        served = server => served.map_err(ServerError::Serve),
        () = deadline => Ok(()),
    }
}

#[derive(Debug, Clone)]
struct AppState {
    metrics: Arc<Metrics>,
    health: Health,
}

/// `/`, `/health`, `/ready`, `/metrics`, and 404 for anything else.
pub fn router(metrics: Arc<Metrics>, health: Health) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/health", get(health_check))
        .route("/ready", get(ready_check))
        .route("/metrics", get(prometheus))
        .fallback(not_found)
        .with_state(AppState { metrics, health })
}

async fn index() -> &'static str {
    "phoenix\n\nGET /health   200 while the process answers (draining too)\nGET /ready    200 once every source and sink is connected, 503 before and while stopping\nGET /metrics  per-node counters (Prometheus / OpenMetrics text)\n"
}

async fn health_check(State(s): State<AppState>) -> Response {
    let status = if s.health.is_draining() { "draining" } else { "ok" };
    Json(json!({"status": status, "uptime_s": s.metrics.started.elapsed().as_secs()})).into_response()
}

async fn ready_check(State(s): State<AppState>) -> Response {
    let unavailable = |body| (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response();
    if s.health.is_draining() {
        return unavailable(json!({"status": "stopping"}));
    }
    match s.health.readiness.waiting() {
        None => unavailable(json!({"status": "starting"})),
        Some(waiting) if !waiting.is_empty() => unavailable(json!({"status": "connecting", "waiting": waiting})),
        Some(_) => Json(json!({"status": "ready"})).into_response(),
    }
}

async fn prometheus(State(s): State<AppState>) -> Response {
    ([(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)], s.metrics.render()).into_response()
}

async fn not_found() -> (StatusCode, &'static str) {
    (StatusCode::NOT_FOUND, "not found; see GET /\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::sync::oneshot;
    use tokio::task::JoinHandle;

    struct Reply {
        status: u16,
        headers: String,
        body: String,
    }

    /// A minimal HTTP/1.1 GET: one request, `Connection: close`, read to the end.
    async fn get(addr: SocketAddr, path: &str) -> Reply {
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.expect("send");
        let mut raw = String::new();
        stream.read_to_string(&mut raw).await.expect("read");
        let (head, body) = raw.split_once("\r\n\r\n").expect("a header block");
        let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("a status line");
        Reply { status, headers: head.to_ascii_lowercase(), body: body.to_string() }
    }

    struct Running {
        addr: SocketAddr,
        metrics: Arc<Metrics>,
        health: Health,
        stop: oneshot::Sender<()>,
        task: JoinHandle<Result<(), ServerError>>,
    }

    async fn start() -> Running {
        let metrics = Arc::new(Metrics::new([
            ("source orders (file)".to_string(), "flow.phx:1:1".to_string()),
            ("sink out (stdout)".to_string(), "flow.phx:3:1".to_string()),
        ]));
        let health = Health::new();
        let listener = bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serve(listener, metrics.clone(), health.clone(), async {
            let _ = stopped.await;
        }));
        Running { addr, metrics, health, stop, task }
    }

    async fn finish(r: Running) {
        let _ = r.stop.send(());
        let served = tokio::time::timeout(Duration::from_secs(5), r.task).await.expect("serve stops");
        served.expect("no panic").expect("no error");
    }

    #[tokio::test]
    async fn health_is_ok_even_while_draining() {
        let r = start().await;
        let ok = get(r.addr, "/health").await;
        assert_eq!(ok.status, 200);
        assert!(ok.headers.contains("content-type: application/json"), "{}", ok.headers);
        let v: serde_json::Value = serde_json::from_str(&ok.body).expect("json");
        assert_eq!(v["status"], "ok");
        assert!(v["uptime_s"].is_u64(), "{v}");

        r.health.set_draining();
        // A liveness probe failing now would kill the pod before its events are delivered.
        let draining = get(r.addr, "/health").await;
        assert_eq!(draining.status, 200);
        let v: serde_json::Value = serde_json::from_str(&draining.body).expect("json");
        assert_eq!(v["status"], "draining");
        finish(r).await;
    }

    #[tokio::test]
    async fn ready_once_every_node_is_connected_and_until_draining() {
        let r = start().await;
        let readiness = r.health.readiness();
        let starting = get(r.addr, "/ready").await;
        assert_eq!((starting.status, starting.body.as_str()), (503, r#"{"status":"starting"}"#));
        let source = readiness.register("source orders (kafka)");
        let sink = readiness.register("sink out (kafka)");
        readiness.started();
        let waiting = get(r.addr, "/ready").await;
        assert_eq!(
            (waiting.status, waiting.body.as_str()),
            (503, r#"{"status":"connecting","waiting":["source orders (kafka)","sink out (kafka)"]}"#)
        );
        sink.set();
        let waiting = get(r.addr, "/ready").await;
        assert_eq!(waiting.body, r#"{"status":"connecting","waiting":["source orders (kafka)"]}"#);
        source.set();
        let ok = get(r.addr, "/ready").await;
        assert_eq!((ok.status, ok.body.as_str()), (200, r#"{"status":"ready"}"#));
        r.health.set_draining();
        let stopping = get(r.addr, "/ready").await;
        assert_eq!((stopping.status, stopping.body.as_str()), (503, r#"{"status":"stopping"}"#));
        finish(r).await;
    }

    #[tokio::test]
    async fn metrics_are_exposed_per_node() {
        let r = start().await;
        r.metrics.nodes[0].events_in.inc_by(42);
        let m = get(r.addr, "/metrics").await;
        assert_eq!(m.status, 200);
        assert!(m.headers.contains(&format!("content-type: {METRICS_CONTENT_TYPE}")), "{}", m.headers);
        assert!(
            m.body.contains(r#"phoenix_events_in_total{node="source orders (file)",at="flow.phx:1:1"} 42"#),
            "{}",
            m.body
        );
        assert!(m.body.contains(r#"phoenix_events_in_total{node="sink out (stdout)",at="flow.phx:3:1"} 0"#));
        assert!(m.body.ends_with("# EOF\n"));
        finish(r).await;
    }

    #[tokio::test]
    async fn index_lists_endpoints_and_unknown_paths_are_404() {
        let r = start().await;
        let index = get(r.addr, "/").await;
        assert_eq!(index.status, 200);
        assert!(index.body.contains("/health") && index.body.contains("/metrics"), "{}", index.body);
        assert_eq!(get(r.addr, "/nope").await.status, 404);
        finish(r).await;
    }

    #[tokio::test]
    async fn shutdown_stops_serve_even_with_an_idle_client() {
        let r = start().await;
        // A client that connects and never sends a request must not keep the server alive.
        let _idle = tokio::net::TcpStream::connect(r.addr).await.expect("connect");
        let addr = r.addr;
        finish(r).await;
        assert!(tokio::net::TcpStream::connect(addr).await.is_err(), "still accepting after shutdown");
    }

    #[tokio::test]
    async fn bind_errors_name_the_address() {
        let taken = bind("127.0.0.1:0").await.expect("bind");
        let addr = taken.local_addr().expect("addr").to_string();
        let e = bind(&addr).await.expect_err("port in use");
        assert_eq!(e.to_string(), format!("cannot serve metrics on {addr}"));
        assert!(std::error::Error::source(&e).is_some());
        let e = bind("not an address").await.expect_err("malformed");
        assert!(e.to_string().contains("not an address"));
    }
}
