//! The control plane: `phoenix serve` runs named flows and serves `/api/v1` beside `/health`,
//! `/ready` and `/metrics` (docs/api.md is the reference).
//!
//! - [`backend`] — what the handlers serve flows from ([`FlowBackend`]): the flows of this
//!   process over a [`FlowStore`] for `phoenix serve`, PhoenixFlow resources for `phoenix
//!   controller` (`cluster::api`). [`router`] is the same code over either.
//! - [`store`] — where `phoenix serve` keeps flow texts ([`FlowStore`], a directory).
//! - [`flows`] — the running flows: compile, start, replace, stop.
//! - [`keys`] — API keys and their scopes, re-read when the file changes.
//! - [`events`] — event definitions: versioned schemas flows import, and events checked
//!   against them ([`event_routes`] serves them).
//! - docs/openapi.yaml describes every route [`router`] serves (a test in `openapi` holds them
//!   together).
//!
//! Like the metrics server, binding is the caller's and serving takes a shutdown future, so
//! tests bind port 0 and stop it when they like.

pub mod backend;
mod event_routes;
pub mod events;
pub mod flows;
pub mod keys;
#[cfg(test)]
mod openapi;
pub mod routes;
pub mod store;

use crate::api::backend::{FlowBackend, PutError, Stored};
use crate::api::events::EventStore;
use crate::api::flows::{ApiDiagnostic, ChangeError, Flows};
use crate::api::keys::{KeyFile, Scope};
use crate::api::store::{FlowStore, StoreError, check_name};
use crate::exec::trace::trace;
use crate::observability::metrics::Metrics;
use crate::observability::server::{self, Health, ServerError};
use crate::options::Settings;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{get, post};
use serde_json::json;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// The largest request body the API reads (a flow text); larger ones get 413.
pub const MAX_BODY: usize = 1 << 20;

/// How often the key file's modification time is looked at.
pub const KEY_POLL: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Server(#[from] ServerError),
    #[error("cannot serve HTTPS: {0}")]
    Tls(#[source] std::io::Error),
}

/// What `phoenix serve` needs besides its listener.
#[derive(Debug)]
pub struct Config {
    pub store: Arc<dyn FlowStore>,
    pub keys: KeyFile,
    /// The event definitions (`DIR/events/` beside the flows).
    pub events: Arc<EventStore>,
    /// Decode-and-process tasks per source of each flow.
    pub workers: usize,
    pub settings: Settings,
    /// Serve HTTPS with this (`--tls-cert`, `--tls-key`) instead of plain HTTP.
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

/// Start the stored flows, serve the API and the operational endpoints on `listener` until
/// `shutdown` resolves, then drain every flow (as `phoenix run` does on SIGTERM) and return.
pub async fn serve(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ApiError> {
    let metrics = Arc::new(Metrics::new([]));
    let health = Health::new();
    let flows =
        Arc::new(Flows::new(config.store, metrics.clone(), health.readiness(), config.workers, config.settings));
    let app = server::router(metrics, health.clone()).merge(router(flows.clone(), config.keys, Some(config.events)));
    let served = CancellationToken::new();
    let server = {
        let stop = served.clone();
        let stopped = async move { stop.cancelled().await };
        match config.tls {
            Some(tls) => {
                let listener =
                    crate::tls::TlsListener::new(listener, crate::tls::Certificate::new(tls)).map_err(ApiError::Tls)?;
                tokio::spawn(server::serve_router(listener, app, stopped))
            }
            None => tokio::spawn(server::serve_router(listener, app, stopped)),
        }
    };
    // Serving first: `/health` answers (and `/ready` says `starting`) while the flows start.
    if let Err(e) = flows.start_all().await {
        served.cancel();
        return Err(e.into());
    }
    health.readiness().started();
    shutdown.await;
    tracing::info!("stopping: draining every flow");
    health.set_draining();
    flows.stop_all().await;
    served.cancel();
    match server.await {
        Ok(r) => r.map_err(ApiError::from),
        Err(e) => Err(ApiError::Server(ServerError::Serve(std::io::Error::other(e)))),
    }
}

#[derive(Debug, Clone)]
struct Api {
    flows: Arc<dyn FlowBackend>,
    keys: KeyFile,
    /// `None` where event definitions are not kept (the controller: they live in a flow
    /// directory, which a cluster has not): their routes answer 501.
    events: Option<Arc<EventStore>>,
}

/// `/api/v1`, every route behind [`authorize`], over `flows` (a test in `openapi` holds these
/// routes and docs/openapi.yaml together).
pub fn router(flows: Arc<dyn FlowBackend>, keys: KeyFile, events: Option<Arc<EventStore>>) -> Router {
    let api = Api { flows, keys, events };
    Router::new()
        .route("/api/v1/flows", get(list_flows))
        .route("/api/v1/flows/{name}", get(get_flow).put(put_flow).delete(delete_flow))
        .route("/api/v1/routes", get(list_routes))
        .route("/api/v1/route", post(route_event))
        .route("/api/v1/events", get(event_routes::list).post(event_routes::create))
        .route("/api/v1/events/{id}", get(event_routes::get).delete(event_routes::delete))
        .route("/api/v1/events/{id}/validate", post(event_routes::validate))
        .route_layer(middleware::from_fn_with_state(api.clone(), authorize))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(api)
}

/// A JSON error answer: `{"error": message}`.
fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({"error": message.into()}))).into_response()
}

fn change_error(e: ChangeError) -> Response {
    match e {
        ChangeError::Store(e) => store_error(e),
        ChangeError::ShuttingDown => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        ChangeError::PreconditionFailed { .. } => error(StatusCode::PRECONDITION_FAILED, e.to_string()),
        // The request was fine and the running flow is kept; the machine is in the way (a port
        // another flow holds, an input that is missing).
        ChangeError::NotStarted(_) => error(StatusCode::CONFLICT, e.to_string()),
    }
}

fn store_error(e: StoreError) -> Response {
    match e {
        StoreError::BadName(_) => error(StatusCode::BAD_REQUEST, e.to_string()),
        StoreError::Io { .. } => {
            tracing::error!("{e}");
            error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
        }
        // The API server behind the controller refused or could not be reached: a gateway's
        // error, not this server's.
        StoreError::Cluster(_) => {
            tracing::error!("{e}");
            error(StatusCode::BAD_GATEWAY, e.to_string())
        }
    }
}

/// `Authorization: Bearer KEY` with a key of the scope the call needs (GET, HEAD and `POST
/// /api/v1/route`, which changes nothing, read; everything else writes). The key itself is
/// never logged.
async fn authorize(State(api): State<Api>, request: Request, next: Next) -> Response {
    let presented = request.headers().get(header::AUTHORIZATION).and_then(|v| bearer(v.as_bytes()));
    let Some(presented) = presented.filter(|p| !p.is_empty()) else {
        return unauthorized("an API key is needed: `Authorization: Bearer KEY`");
    };
    let reads = matches!(*request.method(), Method::GET | Method::HEAD) || changes_nothing(request.uri().path());
    let needed = if reads { Scope::Read } else { Scope::Write };
    match api.keys.scope(presented) {
        None => unauthorized("the API key is not valid"),
        Some(scope) if scope < needed => error(StatusCode::FORBIDDEN, "this API key may only read"),
        Some(_) => next.run(request).await,
    }
}

/// POSTs that only compute an answer: routing an event, validating one against a definition.
fn changes_nothing(path: &str) -> bool {
    path == "/api/v1/route" || path.strip_prefix("/api/v1/events/").is_some_and(|p| p.ends_with("/validate"))
}

/// The credentials of `Bearer KEY` (the scheme in any case, RFC 9110 §11.1).
pub(crate) fn bearer(value: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = value.split_at_checked(7)?;
    scheme.eq_ignore_ascii_case(b"bearer ").then(|| rest.trim_ascii())
}

fn unauthorized(message: &str) -> Response {
    let mut r = error(StatusCode::UNAUTHORIZED, message);
    r.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
    r
}

async fn list_flows(State(api): State<Api>) -> Response {
    let stored = match api.flows.all().await {
        Ok(s) => s,
        Err(e) => return store_error(e),
    };
    let flows: Vec<_> = stored.iter().map(|f| json!({"name": f.name, "status": f.status})).collect();
    Json(json!({ "flows": flows })).into_response()
}

async fn get_flow(State(api): State<Api>, Path(name): Path<String>) -> Response {
    if let Err(e) = check_name(&name) {
        return store_error(e);
    }
    match api.flows.one(&name).await {
        Ok(Some(f)) => with_etag(
            Json(json!({
                "name": name,
                "etag": f.etag,
                "text": f.text,
                "status": f.status,
                "nodes": f.nodes,
            }))
            .into_response(),
            &f.etag,
        ),
        Ok(None) => error(StatusCode::NOT_FOUND, format!("no flow named `{name}`")),
        Err(e) => store_error(e),
    }
}

/// The flow text of a PUT: the body as it is, or `{"text": "..."}` when it is JSON.
fn flow_text(headers: &HeaderMap, body: &[u8]) -> Result<String, Response> {
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.split(';').next().is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json")));
    if json {
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Body {
            text: String,
        }
        return serde_json::from_slice::<Body>(body).map(|b| b.text).map_err(|e| {
            let answer = json!({
                "error": format!("malformed JSON: {e}"),
                "line": e.line(),
                "column": e.column(),
            });
            (StatusCode::BAD_REQUEST, Json(answer)).into_response()
        });
    }
    String::from_utf8(body.to_vec()).map_err(|e| {
        let at = e.utf8_error().valid_up_to();
        error(StatusCode::BAD_REQUEST, format!("the flow text is not UTF-8 (byte {at})"))
    })
}

async fn put_flow(
    State(api): State<Api>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    if let Err(e) = check_name(&name) {
        return store_error(e);
    }
    // Over `MAX_BODY` (413) or cut short: answered as JSON like every other error.
    let body = match body {
        Ok(b) => b,
        Err(e) => return error(e.status(), e.body_text()),
    };
    let text = match flow_text(&headers, &body) {
        Ok(t) => t,
        Err(r) => return r,
    };
    // No definition this text imports can be deleted until it is stored (`EventStore::imports`).
    let _imports = match &api.events {
        Some(events) => Some(events.imports.read().await),
        None => None,
    };
    match api.flows.put(&name, text, precondition(&headers)).await {
        Ok(put) => {
            let status = if put.existed { StatusCode::OK } else { StatusCode::CREATED };
            let answer = json!({
                "name": name,
                "etag": put.etag,
                "status": put.status,
                "warnings": put.warnings,
            });
            with_etag((status, Json(answer)).into_response(), &put.etag)
        }
        Err(PutError::Invalid(diagnostics)) => invalid(&name, diagnostics),
        Err(PutError::Refused(message)) => error(StatusCode::BAD_REQUEST, message),
        Err(PutError::Change(e)) => change_error(e),
    }
}

/// The `If-Match` of a change; a value that is not text matches nothing.
fn precondition(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::IF_MATCH).map(|v| v.to_str().unwrap_or("\u{0}"))
}

fn with_etag(mut r: Response, etag: &str) -> Response {
    if let Ok(v) = header::HeaderValue::from_str(etag) {
        r.headers_mut().insert(header::ETAG, v);
    }
    r
}

/// 400 with every diagnostic; the running flow is untouched.
fn invalid(name: &str, diagnostics: Vec<ApiDiagnostic>) -> Response {
    invalid_text(&format!("the flow `{name}`"), diagnostics)
}

/// 400 with every diagnostic of `what` (a flow, an event definition).
fn invalid_text(what: &str, diagnostics: Vec<ApiDiagnostic>) -> Response {
    let errors = diagnostics.iter().filter(|d| d.severity == "error").count();
    let answer = json!({
        "error": format!("{what} has {errors} error{}", if errors == 1 { "" } else { "s" }),
        "diagnostics": diagnostics,
    });
    (StatusCode::BAD_REQUEST, Json(answer)).into_response()
}

async fn delete_flow(State(api): State<Api>, Path(name): Path<String>, headers: HeaderMap) -> Response {
    if let Err(e) = check_name(&name) {
        return store_error(e);
    }
    match api.flows.remove(&name, precondition(&headers)).await {
        Ok(true) => StatusCode::NO_CONTENT.into_response(),
        Ok(false) => error(StatusCode::NOT_FOUND, format!("no flow named `{name}`")),
        Err(e) => change_error(e),
    }
}

/// `GET /api/v1/routes[?type=T][&field=F][&flow=NAME]`: the route arms of every stored flow
/// that compiles (or of one), only those an event whose field `F` (default `type`) is `T` can
/// take when `type` is given.
async fn list_routes(State(api): State<Api>, uri: Uri) -> Response {
    let mut ty = None;
    let mut field = "type".to_string();
    let mut only = None;
    for (k, v) in query_pairs(uri.query().unwrap_or("")) {
        match k.as_str() {
            "type" => ty = Some(v),
            "field" => field = v,
            "flow" => only = Some(v),
            other => return error(StatusCode::BAD_REQUEST, format!("unknown query parameter `{other}`")),
        }
    }
    let stored = match selected(&api, only.as_deref()).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let filter = ty.as_deref().map(|value| routes::TypeFilter { field: &field, value });
    let mut arms = Vec::new();
    for stored in &stored {
        let c = api.flows.front_end_of(stored);
        if let (false, Some(flow)) = (c.has_errors(), &c.flow) {
            arms.extend(routes::arms(&stored.name, flow, &c.sources, filter));
        }
    }
    Json(json!({ "routes": arms })).into_response()
}

/// `POST /api/v1/route[?type=T][&field=F][&flow=NAME][&source=S]`: what the stored flows that
/// compile (or `NAME`) would do with the one event in the body, traced through each source's
/// decoder and pipelines ([`crate::exec::trace`]); nothing is written anywhere.
async fn route_event(State(api): State<Api>, uri: Uri, body: Result<Bytes, BytesRejection>) -> Response {
    let mut ty = None;
    let mut field = "type".to_string();
    let mut only = None;
    let mut source = None;
    for (k, v) in query_pairs(uri.query().unwrap_or("")) {
        match k.as_str() {
            "type" => ty = Some(v),
            "field" => field = v,
            "flow" => only = Some(v),
            "source" => source = Some(v),
            other => return error(StatusCode::BAD_REQUEST, format!("unknown query parameter `{other}`")),
        }
    }
    let body = match body {
        Ok(b) => b,
        Err(e) => return error(e.status(), e.body_text()),
    };
    if body.trim_ascii().is_empty() {
        return error(StatusCode::BAD_REQUEST, "the body must be one JSON event");
    }
    let payload = match &ty {
        Some(t) => match with_type(&body, &field, t) {
            Ok(p) => p,
            Err(message) => return error(StatusCode::BAD_REQUEST, message),
        },
        None => body.to_vec(),
    };
    let stored = match selected(&api, only.as_deref()).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let mut flows = Vec::new();
    let mut skipped = Vec::new();
    for stored in &stored {
        let name = &stored.name;
        match api.flows.task_graph_of(stored) {
            Ok(g) => {
                let sources = trace(&g, &payload, source.as_deref());
                if !sources.is_empty() {
                    flows.push(json!({"flow": name, "sources": sources}));
                }
            }
            Err(reason) => skipped.push(json!({"flow": name, "reason": reason})),
        }
    }
    let event = serde_json::from_slice::<serde_json::Value>(&payload)
        .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(&payload).into_owned()));
    Json(json!({"event": event, "flows": flows, "skipped": skipped})).into_response()
}

/// Every stored flow, or only `only` (404 when there is no such flow).
async fn selected(api: &Api, only: Option<&str>) -> Result<Vec<Stored>, Response> {
    let all = api.flows.all().await.map_err(store_error)?;
    match only {
        None => Ok(all),
        Some(f) => {
            let one: Vec<Stored> = all.into_iter().filter(|s| s.name == f).collect();
            if one.is_empty() { Err(error(StatusCode::NOT_FOUND, format!("no flow named `{f}`"))) } else { Ok(one) }
        }
    }
}

/// The event with its field `field` set to `value`: added when absent, refused when it holds
/// another value. A body that is no JSON object is left as it is, for the decoder to explain.
fn with_type(body: &[u8], field: &str, value: &str) -> Result<Vec<u8>, String> {
    let Ok(serde_json::Value::Object(mut event)) = serde_json::from_slice::<serde_json::Value>(body) else {
        return Ok(body.to_vec());
    };
    match event.get(field) {
        None => {
            event.insert(field.to_string(), serde_json::Value::String(value.to_string()));
            Ok(serde_json::Value::Object(event).to_string().into_bytes())
        }
        Some(serde_json::Value::String(s)) if s == value => Ok(body.to_vec()),
        Some(other) => Err(format!("the event's `{field}` is {other}, not \"{value}\" as `type` says")),
    }
}

/// `a=1&b=x%20y` → pairs, percent-decoded (`+` is a space); a malformed escape is kept as is.
fn query_pairs(query: &str) -> Vec<(String, String)> {
    fn decode(s: &str) -> String {
        let bytes = s.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            let hex = |b: u8| (b as char).to_digit(16);
            match bytes[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                },
                b => out.push(b),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    }
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::{bearer, query_pairs};

    #[test]
    fn bearer_credentials() {
        assert_eq!(bearer(b"Bearer k-1"), Some(&b"k-1"[..]));
        assert_eq!(bearer(b"bearer  k-1 "), Some(&b"k-1"[..]));
        assert_eq!(bearer(b"Basic k-1"), None);
        assert_eq!(bearer(b"Bearer"), None);
        assert_eq!(bearer(b"Bearerk-1"), None);
    }

    #[test]
    fn query_strings_are_percent_decoded() {
        let pairs = |q: &str| -> Vec<(String, String)> { query_pairs(q) };
        let p = |k: &str, v: &str| (k.to_string(), v.to_string());
        assert_eq!(pairs("type=order&field=kind"), [p("type", "order"), p("field", "kind")]);
        assert_eq!(pairs("type=User%20Created+x&&flag"), [p("type", "User Created x"), p("flag", "")]);
        assert_eq!(pairs("a=%zz%4"), [p("a", "%zz%4")]);
        assert_eq!(pairs("a=%C3%A9"), [p("a", "é")]);
        assert_eq!(pairs(""), []);
    }
}
