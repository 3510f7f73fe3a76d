//! An in-process Elasticsearch `_bulk` endpoint for tests and benchmarks (no Elasticsearch can
//! be installed where Phoenix is built). It implements the documented bulk contract: NDJSON
//! action/source pairs (`index`, `create`, `delete`; `_index` from the line or the path;
//! generated ids), one item per action in the response with its `status` and, on failure, an
//! `error` object, and the top-level `took`/`errors`/`items`; `create` on an existing id is a
//! `409 version_conflict_engine_exception`, bad index names and non-object sources are refused
//! like Elasticsearch refuses them, and malformed bodies fail the whole request with `400`.
//!
//! Faults are injected per item (429 `es_rejected_execution_exception`, 500, 503, 400
//! `mapper_parsing_exception`) by a plan that sees each document and how often it was sent
//! before, per request (a status for the whole request, or a slow answer after indexing, as a
//! real cluster that times out would), and by taking the server down (every connection is
//! reset) and up again.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use phoenix_engine::connectors::elasticsearch::test_server::{self, ItemFault};
//! let stop = tokio_util::sync::CancellationToken::new();
//! let es = test_server::spawn(stop.clone().cancelled_owned()).await?;
//! es.set_item_faults(|item| (item.seen == 0).then_some(ItemFault::Rejected));
//! // ... point a flow's `url` at es.url()
//! assert_eq!(es.count("orders-index"), 0);
//! stop.cancel();
//! # Ok(()) }
//! ```

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

/// Elasticsearch's default `http.max_content_length`.
const MAX_CONTENT_LENGTH: usize = 100 << 20;

/// A failure of one bulk item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ItemFault {
    /// `429 es_rejected_execution_exception`: the write queue is full.
    Rejected,
    /// `500` (an internal error on the shard).
    Internal,
    /// `503 unavailable_shards_exception`: the primary shard is not active.
    Unavailable,
    /// `400 mapper_parsing_exception` with this reason: the document does not fit the mapping.
    Mapping(String),
}

/// A failure of a whole bulk request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestFault {
    /// Answer with this status and Elasticsearch's error body for it; nothing is indexed.
    Status(u16),
    /// Index as usual, then answer only after this long (a client with a shorter timeout gives
    /// up although the documents are in).
    Slow(Duration),
}

/// What an item fault plan sees of each document.
#[derive(Debug)]
pub struct ItemView<'a> {
    pub action: &'a str,
    pub index: &'a str,
    pub id: Option<&'a str>,
    pub source: &'a Value,
    /// How many times this document (by index and id, or by source without an id) was received
    /// before.
    pub seen: u32,
}

type ItemPlan = Arc<dyn Fn(&ItemView<'_>) -> Option<ItemFault> + Send + Sync>;
type RequestPlan = Arc<dyn Fn(u64) -> Option<RequestFault> + Send + Sync>;

/// Counters of what the server received.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Bulk requests answered (any status).
    pub requests: u64,
    /// Bytes of bulk request bodies.
    pub body_bytes: u64,
    /// Bulk items received.
    pub items: u64,
    /// Items answered with an error.
    pub item_errors: u64,
    /// Requests failed as a whole by a [`RequestFault`] or a malformed body.
    pub request_errors: u64,
    /// Connections reset while the server was down.
    pub resets: u64,
}

/// A stored document.
#[derive(Debug, Clone)]
pub struct Doc {
    pub source: Bytes,
    pub version: u64,
}

#[derive(Default)]
struct Store {
    indices: BTreeMap<String, HashMap<String, Doc>>,
    /// Receipts per document, for fault plans.
    seen: HashMap<u64, u32>,
    next_id: u64,
}

#[derive(Default)]
struct Faults {
    items: Option<ItemPlan>,
    requests: Option<RequestPlan>,
    /// The `Authorization` header every request must carry.
    authorization: Option<String>,
    /// Keep nothing but counts (benchmarks).
    discard: bool,
}

#[derive(Default)]
struct Shared {
    store: Mutex<Store>,
    faults: Mutex<Faults>,
    down: AtomicBool,
    requests: AtomicU64,
    body_bytes: AtomicU64,
    items: AtomicU64,
    item_errors: AtomicU64,
    request_errors: AtomicU64,
    resets: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking handler leaves the data as consistent as any request would.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A running test server; clones share it.
#[derive(Clone)]
pub struct TestServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for TestServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestServer").field("addr", &self.addr).finish_non_exhaustive()
    }
}

/// Bind 127.0.0.1 on a free port and serve until `shutdown` resolves.
pub async fn spawn(shutdown: impl Future<Output = ()> + Send + 'static) -> std::io::Result<TestServer> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let shared = Arc::new(Shared::default());
    let app = router(shared.clone());
    let gate = Gate { listener, shared: shared.clone() };
    tokio::spawn(async move {
        // Serving only ends with `shutdown`; an accept error is retried by the gate.
        let _ = axum::serve(gate, app).with_graceful_shutdown(shutdown).await;
    });
    Ok(TestServer { addr, shared })
}

impl TestServer {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`, for a sink's `url`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Down: every new and open connection is reset. Up: serve again.
    pub fn set_down(&self, down: bool) {
        self.shared.down.store(down, Ordering::SeqCst);
    }

    /// Decide a fault per item (`None`: process it normally).
    pub fn set_item_faults(&self, plan: impl Fn(&ItemView<'_>) -> Option<ItemFault> + Send + Sync + 'static) {
        lock(&self.shared.faults).items = Some(Arc::new(plan));
    }

    /// Decide a fault per request, by its number (1, 2, ...).
    pub fn set_request_faults(&self, plan: impl Fn(u64) -> Option<RequestFault> + Send + Sync + 'static) {
        lock(&self.shared.faults).requests = Some(Arc::new(plan));
    }

    pub fn clear_faults(&self) {
        let mut f = lock(&self.shared.faults);
        f.items = None;
        f.requests = None;
    }

    /// Require this exact `Authorization` header (`Basic ...`, `ApiKey ...`); 401 otherwise.
    pub fn require_authorization(&self, value: Option<String>) {
        lock(&self.shared.faults).authorization = value;
    }

    /// Count items without keeping documents (for benchmarks, so memory is the engine's).
    pub fn discard_documents(&self, discard: bool) {
        lock(&self.shared.faults).discard = discard;
    }

    pub fn stats(&self) -> Stats {
        let s = &self.shared;
        let get = |c: &AtomicU64| c.load(Ordering::SeqCst);
        Stats {
            requests: get(&s.requests),
            body_bytes: get(&s.body_bytes),
            items: get(&s.items),
            item_errors: get(&s.item_errors),
            request_errors: get(&s.request_errors),
            resets: get(&s.resets),
        }
    }

    /// Names of the indices that hold documents.
    pub fn indices(&self) -> Vec<String> {
        lock(&self.shared.store).indices.keys().cloned().collect()
    }

    pub fn count(&self, index: &str) -> usize {
        lock(&self.shared.store).indices.get(index).map_or(0, HashMap::len)
    }

    /// Every document of an index by id.
    pub fn documents(&self, index: &str) -> HashMap<String, Doc> {
        lock(&self.shared.store).indices.get(index).cloned().unwrap_or_default()
    }

    /// One document's source.
    pub fn get(&self, index: &str, id: &str) -> Option<Value> {
        let store = lock(&self.shared.store);
        let doc = store.indices.get(index)?.get(id)?;
        serde_json::from_slice(&doc.source).ok()
    }
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/", get(info))
        .route("/_bulk", post(bulk_all).put(bulk_all))
        .route("/{index}/_bulk", post(bulk_index).put(bulk_index))
        .layer(DefaultBodyLimit::max(MAX_CONTENT_LENGTH))
        .with_state(shared)
}

/// `GET /`: the cluster's identity, as a client's first request sees it.
async fn info() -> Response {
    let body = json!({
        "name": "phoenix-test",
        "cluster_name": "phoenix-test",
        "cluster_uuid": "phoenix-test-cluster",
        "version": {"number": "9.1.0", "build_flavor": "default", "lucene_version": "10.2.2",
                    "minimum_wire_compatibility_version": "8.19.0", "minimum_index_compatibility_version": "8.0.0"},
        "tagline": "You Know, for Search"
    });
    es_json(StatusCode::OK, &body)
}

async fn bulk_all(State(s): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    bulk(s, None, headers, body).await
}

async fn bulk_index(
    State(s): State<Arc<Shared>>,
    Path(index): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    bulk(s, Some(index), headers, body).await
}

fn es_json(status: StatusCode, body: &Value) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::HeaderName::from_static("x-elastic-product"), "Elasticsearch"),
        ],
        body.to_string(),
    )
        .into_response()
}

/// Elasticsearch's error envelope for a failed request.
fn request_error(s: &Shared, status: u16, kind: &str, reason: &str) -> Response {
    s.request_errors.fetch_add(1, Ordering::SeqCst);
    let error = json!({"type": kind, "reason": reason});
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut r = es_json(
        code,
        &json!({"error": {"root_cause": [error.clone()], "type": kind, "reason": reason}, "status": status}),
    );
    if status == 401 {
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Basic realm=\"security\", charset=\"UTF-8\", ApiKey"),
        );
    }
    r
}

async fn bulk(s: Arc<Shared>, path_index: Option<String>, headers: HeaderMap, body: Bytes) -> Response {
    let started = Instant::now();
    let number = s.requests.fetch_add(1, Ordering::SeqCst) + 1;
    s.body_bytes.fetch_add(body.len() as u64, Ordering::SeqCst);
    let (authorization, request_plan, item_plan, discard) = {
        let f = lock(&s.faults);
        (f.authorization.clone(), f.requests.clone(), f.items.clone(), f.discard)
    };
    if let Some(want) = authorization {
        let given = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        if given != Some(want.as_str()) {
            return request_error(
                &s,
                401,
                "security_exception",
                "missing authentication credentials for REST request [/_bulk]",
            );
        }
    }
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let mime = content_type.split(';').next().unwrap_or("").trim();
    if !matches!(mime, "application/json" | "application/x-ndjson") {
        let reason = format!("Content-Type header [{content_type}] is not supported");
        return request_error(&s, 406, "media_type_header_exception", &reason);
    }
    let mut slow = None;
    match request_plan.and_then(|p| p(number)) {
        Some(RequestFault::Status(status)) => {
            let (kind, reason) = match status {
                429 => (
                    "es_rejected_execution_exception",
                    "rejected execution of coordinating operation [coordinating_and_primary_bytes=0, replica_bytes=0, all_bytes=0, coordinating_operation_bytes=1, max_coordinating_and_primary_bytes=0]",
                ),
                503 => ("cluster_block_exception", "blocked by: [SERVICE_UNAVAILABLE/2/no master];"),
                _ => ("internal_server_error", "injected failure"),
            };
            return request_error(&s, status, kind, reason);
        }
        Some(RequestFault::Slow(d)) => slow = Some(d),
        None => {}
    }
    let actions = match parse_body(&body, path_index.as_deref()) {
        Ok(a) => a,
        Err((kind, reason)) => return request_error(&s, 400, kind, &reason),
    };
    s.items.fetch_add(actions.len() as u64, Ordering::SeqCst);
    let mut items = Vec::with_capacity(actions.len());
    let mut errors = false;
    {
        let mut store = lock(&s.store);
        for a in &actions {
            let (status, item) = apply(&mut store, a, item_plan.as_ref(), discard);
            if status >= 300 {
                s.item_errors.fetch_add(1, Ordering::SeqCst);
                errors |= item.get("error").is_some();
            }
            items.push(json!({ a.action: item }));
        }
    }
    if let Some(d) = slow {
        tokio::time::sleep(d).await;
    }
    let took = started.elapsed().as_millis() as u64;
    es_json(StatusCode::OK, &json!({"took": took, "errors": errors, "items": items}))
}

/// One parsed bulk action.
struct BulkAction<'a> {
    action: &'static str,
    index: String,
    id: Option<String>,
    source: Option<&'a [u8]>,
}

/// Split a bulk body into actions, or the whole-request error Elasticsearch gives for it.
fn parse_body<'a>(body: &'a [u8], path_index: Option<&str>) -> Result<Vec<BulkAction<'a>>, (&'static str, String)> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(("action_request_validation_exception", "Validation Failed: 1: no requests added;".into()));
    }
    if body.last() != Some(&b'\n') {
        return Err(("illegal_argument_exception", "The bulk request must be terminated by a newline [\\n]".into()));
    }
    let mut lines = body.split(|b| *b == b'\n').enumerate().filter(|(_, l)| !l.iter().all(u8::is_ascii_whitespace));
    let mut out = Vec::new();
    while let Some((n, line)) = lines.next() {
        let malformed = |found: &str| {
            (
                "illegal_argument_exception",
                format!("Malformed action/metadata line [{}], expected START_OBJECT but found [{found}]", n + 1),
            )
        };
        let meta: Value = serde_json::from_slice(line).map_err(|_| malformed("VALUE_STRING"))?;
        let Value::Object(meta) = meta else { return Err(malformed("VALUE_STRING")) };
        let (name, params) = meta.iter().next().ok_or_else(|| malformed("END_OBJECT"))?;
        let action = match name.as_str() {
            "index" => "index",
            "create" => "create",
            "delete" => "delete",
            "update" => "update",
            other => {
                return Err((
                    "illegal_argument_exception",
                    format!(
                        "Malformed action/metadata line [{}], expected field [create], [delete], [index] or [update] but found [{other}]",
                        n + 1
                    ),
                ));
            }
        };
        let index = params.get("_index").and_then(Value::as_str).map(String::from).or(path_index.map(String::from));
        let Some(index) = index else {
            return Err(("action_request_validation_exception", "Validation Failed: 1: index is missing;".into()));
        };
        let id = match params.get("_id") {
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Number(n)) => Some(n.to_string()),
            _ => None,
        };
        let source = if action == "delete" {
            None
        } else {
            let (_, src) = lines.next().ok_or_else(|| {
                (
                    "action_request_validation_exception",
                    format!("Validation Failed: 1: source is missing for line [{}];", n + 1),
                )
            })?;
            Some(src)
        };
        if action == "delete" && id.is_none() {
            return Err(("action_request_validation_exception", "Validation Failed: 1: id is missing;".into()));
        }
        out.push(BulkAction { action, index, id, source });
    }
    Ok(out)
}

/// Elasticsearch's index name rules.
fn index_name_problem(name: &str) -> Option<&'static str> {
    if name.chars().any(|c| c.is_uppercase()) {
        return Some("must be lowercase");
    }
    if name.starts_with(['_', '-', '+']) {
        return Some("must not start with '_', '-', or '+'");
    }
    if name.contains(['\\', '/', '*', '?', '"', '<', '>', '|', ' ', ',', '#', ':']) {
        return Some("must not contain the following characters [ , \", *, \\, <, |, ,, >, /, ?, #, :]");
    }
    if name == "." || name == ".." || name.len() > 255 {
        return Some("must not be '.', '..' or longer than 255 bytes");
    }
    None
}

fn item_error(index: &str, id: Option<&str>, status: u16, kind: &str, reason: &str) -> (u16, Value) {
    let mut item =
        json!({"_index": index, "status": status, "error": {"type": kind, "reason": reason, "index": index}});
    if let Some(id) = id {
        item["_id"] = json!(id);
    }
    (status, item)
}

fn fingerprint(index: &str, id: Option<&str>, source: &[u8]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    index.hash(&mut h);
    match id {
        Some(id) => id.hash(&mut h),
        None => source.hash(&mut h),
    }
    h.finish()
}

/// Perform one action on the store; the item's status and response object.
fn apply(store: &mut Store, a: &BulkAction<'_>, plan: Option<&ItemPlan>, discard: bool) -> (u16, Value) {
    let (index, id) = (a.index.as_str(), a.id.as_deref());
    let src = a.source.unwrap_or_default();
    if let Some(problem) = index_name_problem(index) {
        return item_error(
            index,
            id,
            400,
            "invalid_index_name_exception",
            &format!("Invalid index name [{index}], {problem}"),
        );
    }
    if a.action == "update" {
        return item_error(
            index,
            id,
            400,
            "illegal_argument_exception",
            "the Phoenix test server does not implement update",
        );
    }
    // A document must be a JSON object. It is only built as a `Value` for a fault plan to see;
    // otherwise checking it is enough (and keeps the benchmark's server cheap).
    let parsed: Option<Value> = if a.action == "delete" {
        None
    } else {
        let object = src.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
        let checked = match plan {
            Some(_) => serde_json::from_slice::<Value>(src).ok().filter(|_| object),
            None => serde_json::from_slice::<serde::de::IgnoredAny>(src).ok().filter(|_| object).map(|_| Value::Null),
        };
        match checked {
            Some(v) => Some(v),
            None => {
                return item_error(
                    index,
                    id,
                    400,
                    "document_parsing_exception",
                    "[1:1] failed to parse: source is not a JSON object",
                );
            }
        }
    };
    if let Some(plan) = plan {
        let key = fingerprint(index, id, src);
        let seen = store.seen.entry(key).or_insert(0);
        let view =
            ItemView { action: a.action, index, id, source: parsed.as_ref().unwrap_or(&Value::Null), seen: *seen };
        *seen += 1;
        match plan(&view) {
            Some(ItemFault::Rejected) => {
                return item_error(
                    index,
                    id,
                    429,
                    "es_rejected_execution_exception",
                    "rejected execution of primary operation [coordinating_and_primary_bytes=1, replica_bytes=0, all_bytes=1, primary_operation_bytes=1, max_coordinating_and_primary_bytes=1]",
                );
            }
            Some(ItemFault::Internal) => {
                return item_error(index, id, 500, "exception", "injected internal error");
            }
            Some(ItemFault::Unavailable) => {
                return item_error(
                    index,
                    id,
                    503,
                    "unavailable_shards_exception",
                    "[index][0] primary shard is not active",
                );
            }
            Some(ItemFault::Mapping(reason)) => {
                return item_error(index, id, 400, "mapper_parsing_exception", &reason);
            }
            None => {}
        }
    }
    let id = match id {
        Some(id) => id.to_string(),
        None => {
            store.next_id += 1;
            // Elasticsearch's generated ids are 20 URL-safe characters.
            format!("gen{:017}", store.next_id)
        }
    };
    let ok = |status: u16, result: &str, version: u64, seq: u64| {
        (
            status,
            json!({"_index": index, "_id": id, "_version": version, "result": result,
                   "_shards": {"total": 2, "successful": 1, "failed": 0}, "_seq_no": seq, "_primary_term": 1, "status": status}),
        )
    };
    let seq = store.next_id;
    store.next_id += 1;
    if discard {
        return ok(201, "created", 1, seq);
    }
    let docs = store.indices.entry(index.to_string()).or_default();
    match a.action {
        "delete" => match docs.remove(&id) {
            Some(d) => ok(200, "deleted", d.version + 1, seq),
            // Not an error object: a missing document is a 404 result.
            None => ok(404, "not_found", 1, seq),
        },
        "create" if docs.contains_key(&id) => {
            let version = docs.get(&id).map_or(1, |d| d.version);
            item_error(
                index,
                Some(&id),
                409,
                "version_conflict_engine_exception",
                &format!("[{id}]: version conflict, document already exists (current version [{version}])"),
            )
        }
        _ => {
            let source = Bytes::copy_from_slice(src);
            match docs.get_mut(&id) {
                Some(d) => {
                    d.version += 1;
                    d.source = source;
                    ok(200, "updated", d.version, seq)
                }
                None => {
                    docs.insert(id.clone(), Doc { source, version: 1 });
                    ok(201, "created", 1, seq)
                }
            }
        }
    }
}

/// The listener: while the server is down, accepted connections are dropped at once.
struct Gate {
    listener: TcpListener,
    shared: Arc<Shared>,
}

impl axum::serve::Listener for Gate {
    type Io = GatedStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (GatedStream, SocketAddr) {
        loop {
            match self.listener.accept().await {
                Ok((stream, addr)) => {
                    if self.shared.down.load(Ordering::SeqCst) {
                        self.shared.resets.fetch_add(1, Ordering::SeqCst);
                        drop(stream);
                        continue;
                    }
                    return (GatedStream { stream, shared: self.shared.clone() }, addr);
                }
                // Out of file descriptors and the like: wait instead of spinning.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }
}

/// A connection that fails its next read once the server goes down, so kept-alive connections
/// break as well as new ones.
struct GatedStream {
    stream: TcpStream,
    shared: Arc<Shared>,
}

impl AsyncRead for GatedStream {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        if self.shared.down.load(Ordering::SeqCst) {
            self.shared.resets.fetch_add(1, Ordering::SeqCst);
            return Poll::Ready(Err(std::io::ErrorKind::ConnectionReset.into()));
        }
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for GatedStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
