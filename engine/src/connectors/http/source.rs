//! The `http` source: events POSTed to one path, answered only once the flow has them.
//!
//! Each request becomes one or more [`RawBatch`]es (at most `batch_size` events each) sharing
//! one [`Ack`]; the response waits for that ack, so a 200 means every event of the request was
//! handled downstream (written, filtered out or dead-lettered) and a 503 means the client
//! should send the request again.
//!
//! | request                                   | response                     |
//! |-------------------------------------------|------------------------------|
//! | `api_keys` set, no key or an unknown one  | 401 (`WWW-Authenticate`)     |
//! | `api_keys` set, a read key                | 403                          |
//! | POST to `path`, every event handled       | 200 (below)                  |
//! | the flow could not deliver / is stopping  | 503 `{"error": "..."}`       |
//! | empty body, broken JSON array             | 400 `{"error": "..."}`       |
//! | another path                              | 404                          |
//! | another method                            | 405 (`Allow: POST`)          |
//! | body larger than `max_body`               | 413                          |
//!
//! Framing: a `Content-Type` of NDJSON (`application/x-ndjson` and friends) means one event per
//! line. Otherwise the first non-blank byte decides: `[` is a JSON array whose elements are the
//! events, `{` is one (possibly pretty-printed) object if the whole body is one JSON value, and
//! anything else is NDJSON. A line that is not a valid event (not JSON, not UTF-8, not fitting
//! the schema) is not a bad request: the engine's decoder sends it to the source's `.errors`
//! port, and the 200 says so: `{"accepted": N, "rejected": K, "errors": [{"index": I, "error":
//! "..."}]}`, where `index` is the event's position in the request from 0 (non-blank line or
//! array element) and at most 100 errors are listed per batch of `batch_size` events.
//!
//! The handlers never hold the [`SourceContext`]: they pass batches to [`Source::run`], which
//! forwards them. So once `run` returns, nothing can reach the flow through this source.
//!
//! The listening socket is not the source's own: it is claimed from [`super::listener`], so the
//! next version of the flow takes it over and no connection is refused while a flow is
//! replaced. Stopping, the source leaves service (new requests go to the next version, or the
//! socket closes if there is none) and finishes the requests it took.

use super::listener::{self, Claim};
use crate::api::KEY_POLL;
use crate::api::keys::{KeyFile, Scope};
use crate::connectors::{BoxFuture, ConnectorError, Owner, Source, SourceContext, Stopped};
use crate::exec::ack::{Ack, AckWaiter, Rejected};
use crate::exec::batch::RawBatch;
use crate::options::Options;
use arrow::array::{ArrayRef, StringArray};
use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, DefaultBodyLimit, FromRequest, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::value::RawValue;
use std::net::SocketAddr;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{debug, info, warn};

/// How long requests still in flight when the flow stops may take to finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// Why an accepted request could not be delivered because the flow is going away.
pub(super) const STOPPING: &str = "the flow is stopping";

/// Content types that mean "one event per line", whatever the body starts with.
const NDJSON_TYPES: &[&str] = &[
    "application/x-ndjson",
    "application/ndjson",
    "application/jsonl",
    "application/x-jsonlines",
    "application/jsonlines",
];

#[derive(Debug)]
pub struct HttpSource {
    /// Claimed in [`HttpSource::new`] so a port in use is reported before the flow starts.
    claim: Claim,
    local_addr: SocketAddr,
    path: String,
    max_body: u64,
    /// Who may post (`api_keys`); `None`: anyone who can connect.
    keys: Option<KeyFile>,
    /// Whether the socket speaks HTTPS (`tls_cert`, `tls_key`).
    https: bool,
}

impl HttpSource {
    /// A source whose socket no other flow version takes over.
    pub fn new(options: &Options) -> Result<HttpSource, ConnectorError> {
        HttpSource::for_flow(options, &Owner::unique())
    }

    /// A source of a version of the flow `owner`: it takes over the socket of another version
    /// of that flow on its address ([`super::listener`]).
    pub fn for_flow(options: &Options, owner: &Owner) -> Result<HttpSource, ConnectorError> {
        let address = options.str("address").unwrap_or("127.0.0.1:8080");
        let path = options.str("path").unwrap_or("/").to_string();
        if !path.starts_with('/') {
            return Err(ConnectorError(format!("option `path` must start with `/`, like `/{path}`")));
        }
        let max_body = options.size("max_body").unwrap_or(10 << 20);
        // Read up front: a missing key file or certificate fails the flow before it listens.
        let keys = match options.str("api_keys") {
            Some(file) => Some(KeyFile::load(file).map_err(|e| ConnectorError(e.to_string()))?),
            None => None,
        };
        let tls = match (options.str("tls_cert"), options.str("tls_key")) {
            (Some(cert), Some(key)) => Some(
                crate::tls::server_config(cert.as_ref(), key.as_ref()).map_err(|e| ConnectorError(e.to_string()))?,
            ),
            (None, None) => None,
            _ => return Err(ConnectorError("options `tls_cert` and `tls_key` go together".into())),
        };
        let https = tls.is_some();
        let claim = listener::claim(address, owner, tls)?;
        let local_addr = claim.local_addr();
        Ok(HttpSource { claim, local_addr, path, max_body, keys, https })
    }

    /// The address the source listens on (the real port when `address` asks for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }
}

/// What every request handler shares.
#[derive(Debug)]
struct Ingest {
    path: String,
    max_body: u64,
    batch_size: usize,
    keys: Option<KeyFile>,
    /// To [`Source::run`], which hands the batches to the flow.
    tx: mpsc::Sender<RawBatch>,
}

impl Source for HttpSource {
    fn run(self: Box<Self>, ctx: SourceContext) -> BoxFuture<'static, Result<(), ConnectorError>> {
        Box::pin(async move {
            let HttpSource { mut claim, local_addr, path, max_body, keys, https } = *self;
            // Dropped (so no longer polling the key file) when the source ends.
            let _watching = keys.clone().map(|k| AbortOnDrop(tokio::spawn(k.watch(KEY_POLL))));
            let (tx, mut rx) = mpsc::channel::<RawBatch>(1);
            let ingest = Arc::new(Ingest { path: path.clone(), max_body, batch_size: ctx.batch_size, keys, tx });
            let app = Router::new()
                .fallback(handle)
                .layer(DefaultBodyLimit::max(usize::try_from(max_body).unwrap_or(usize::MAX)))
                .with_state(ingest);
            claim.serve(app)?;
            let scheme = if https { "https" } else { "http" };
            info!(source = %ctx.name, "listening on {scheme}://{local_addr}{path}");
            ctx.set_connected();

            // Forward batches until every handler is gone: the route's last clone goes with
            // the last request in flight once the source has left service.
            let mut server = None;
            let mut serving = true;
            let grace = tokio::time::sleep(SHUTDOWN_GRACE);
            tokio::pin!(grace);
            loop {
                let stop = tokio::select! {
                    batch = rx.recv() => match batch {
                        Some(batch) => forward(&ctx, batch).await.is_err(),
                        None => break,
                    },
                    _ = ctx.stopping(), if serving => true,
                    _ = &mut grace, if !serving => {
                        warn!(source = %ctx.name, "requests still running {SHUTDOWN_GRACE:?} after the flow stopped; \
                                                   answering them with 503");
                        break;
                    }
                };
                if stop && std::mem::replace(&mut serving, false) {
                    debug!(source = %ctx.name, "no longer taking requests");
                    // Another version of the flow takes the socket over, or it closes now.
                    server = claim.release();
                    grace.as_mut().reset(Instant::now() + SHUTDOWN_GRACE);
                }
            }
            rx.close();
            while let Ok(batch) = rx.try_recv() {
                batch.ack.fail(STOPPING);
            }
            if serving {
                // The workers are gone without a stop: leave the socket too.
                server = claim.release();
            }
            if let Some(server) = server {
                // Every request of this source is answered (or the grace period is over); the
                // connections left are idle keep-alives, or answer 503.
                server.abort();
                match server.await {
                    Ok(Err(e)) => return Err(ConnectorError(format!("HTTP server on {local_addr}: {e}"))),
                    Err(e) if !e.is_cancelled() => {
                        return Err(ConnectorError(format!("HTTP server on {local_addr} failed: {e}")));
                    }
                    _ => {}
                }
            }
            Ok(())
        })
    }
}

/// Hand one batch to the flow; if the flow is gone, its ack says so (the handler answers 503).
async fn forward(ctx: &SourceContext, batch: RawBatch) -> Result<(), Stopped> {
    let ack = batch.ack.clone();
    let sent = ctx.send(batch).await;
    if sent.is_err() {
        ack.fail(STOPPING);
    }
    sent
}

async fn handle(
    State(ingest): State<Arc<Ingest>>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    req: Request,
) -> Response {
    let response = ingest_request(&ingest, remote, req).await;
    match response {
        Ok(r) => r,
        Err((status, message)) => {
            debug!(%remote, status = status.as_u16(), "{message}");
            let mut r = (status, Json(serde_json::json!({ "error": message }))).into_response();
            if status == StatusCode::METHOD_NOT_ALLOWED {
                r.headers_mut().insert(header::ALLOW, header::HeaderValue::from_static("POST"));
            }
            if status == StatusCode::UNAUTHORIZED {
                r.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
            }
            r
        }
    }
}

type Refusal = (StatusCode, String);

async fn ingest_request(ingest: &Ingest, remote: SocketAddr, req: Request) -> Result<Response, Refusal> {
    if let Some(keys) = &ingest.keys {
        authorize(keys, req.headers())?;
    }
    if req.uri().path() != ingest.path {
        return Err((
            StatusCode::NOT_FOUND,
            format!("nothing at `{}`: events are POSTed to `{}`", req.uri().path(), ingest.path),
        ));
    }
    if req.method() != Method::POST {
        return Err((
            StatusCode::METHOD_NOT_ALLOWED,
            format!("method {} is not allowed: POST events to `{}`", req.method(), ingest.path),
        ));
    }
    let too_large =
        || (StatusCode::PAYLOAD_TOO_LARGE, format!("request body is larger than max_body ({} bytes)", ingest.max_body));
    // Refuse a declared length up front, without reading the body.
    let declared = req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > ingest.max_body) {
        return Err(too_large());
    }
    let ndjson = is_ndjson(req.headers());
    // Read through the `DefaultBodyLimit` layer: a chunked body stops at `max_body` too.
    let body = Bytes::from_request(req, &()).await.map_err(|rejection| match rejection.status() {
        StatusCode::PAYLOAD_TOO_LARGE => too_large(),
        status => (status, rejection.body_text()),
    })?;
    let (data, spans) = frame(body, ndjson).map_err(|m| (StatusCode::BAD_REQUEST, m))?;

    let remote = remote.to_string();
    // One ack per batch, so each refused event's position in the request is known.
    let mut waiters = Vec::with_capacity(spans.len().div_ceil(ingest.batch_size));
    for chunk in spans.chunks(ingest.batch_size) {
        let (ack, waiter) = Ack::reporting();
        waiters.push(waiter);
        if ingest.tx.send(raw_batch(&data, chunk, &remote, ack)).await.is_err() {
            return Err((StatusCode::SERVICE_UNAVAILABLE, STOPPING.into()));
        }
    }
    let mut rejected = Rejected::default();
    for (n, outcome) in
        futures::future::join_all(waiters.into_iter().map(AckWaiter::report)).await.into_iter().enumerate()
    {
        match outcome {
            Ok(r) => {
                for (i, reason) in r.listed {
                    rejected.add(n * ingest.batch_size + i, &reason);
                }
                // Those beyond the batch's list count without a reason.
                rejected.count += r.count - r.count.min(Rejected::LISTED);
            }
            Err(reason) => {
                return Err((StatusCode::SERVICE_UNAVAILABLE, format!("the events were not delivered: {reason}")));
            }
        }
    }
    let errors: Vec<serde_json::Value> =
        rejected.listed.iter().map(|(index, error)| serde_json::json!({ "index": index, "error": error })).collect();
    let answer = serde_json::json!({
        "accepted": spans.len() - rejected.count,
        "rejected": rejected.count,
        "errors": errors,
    });
    Ok((StatusCode::OK, Json(answer)).into_response())
}

/// `Authorization: Bearer KEY` with a write key of `keys`, compared as the API compares them.
fn authorize(keys: &KeyFile, headers: &HeaderMap) -> Result<(), Refusal> {
    let presented = headers.get(header::AUTHORIZATION).and_then(|v| crate::api::bearer(v.as_bytes()));
    match presented.filter(|p| !p.is_empty()).map(|p| keys.scope(p)) {
        None => Err((StatusCode::UNAUTHORIZED, "an API key is needed: `Authorization: Bearer KEY`".into())),
        Some(None) => Err((StatusCode::UNAUTHORIZED, "the API key is not valid".into())),
        Some(Some(Scope::Read)) => Err((StatusCode::FORBIDDEN, "posting events needs a write key".into())),
        Some(Some(Scope::Write)) => Ok(()),
    }
}

/// Aborts the task when dropped, so the key file watcher ends with the source.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn is_ndjson(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let mime = value.split(';').next().unwrap_or("").trim();
    NDJSON_TYPES.iter().any(|t| t.eq_ignore_ascii_case(mime))
}

/// Cut a request body into event payloads: the bytes holding them and each one's span. The
/// payloads are separated by whitespace only, as [`RawBatch::data`] requires; NDJSON and a
/// single object share the body's buffer, array elements are copied out of it.
fn frame(body: Bytes, ndjson: bool) -> Result<(Bytes, Vec<Range<usize>>), String> {
    let bom = if body.starts_with("\u{feff}".as_bytes()) { 3 } else { 0 };
    let all = trim(&body, bom..body.len());
    if all.is_empty() {
        return Err("empty body: expected NDJSON, a JSON array of events or one JSON object".into());
    }
    let content = &body[all.clone()];
    if !ndjson && content.starts_with(b"[") {
        let items: Vec<&RawValue> =
            serde_json::from_slice(content).map_err(|e| format!("body is not a JSON array of events: {e}"))?;
        let mut data = Vec::with_capacity(content.len());
        let mut spans = Vec::with_capacity(items.len());
        for item in items {
            let start = data.len();
            data.extend_from_slice(item.get().as_bytes());
            spans.push(start..data.len());
            data.push(b'\n');
        }
        return Ok((Bytes::from(data), spans));
    }
    // One object, perhaps spread over several lines; on failure (several lines of NDJSON)
    // this stops at the end of the first value.
    if !ndjson && content.starts_with(b"{") && serde_json::from_slice::<&RawValue>(content).is_ok() {
        return Ok((body, vec![all]));
    }
    // NDJSON: each line is an event, valid or not (the decoder says which and why), so a line
    // that is not UTF-8 is a dead letter, not a reason to refuse the others.
    let spans = lines(&body, all);
    Ok((body, spans))
}

/// Non-blank lines of `data[within]`, each trimmed.
fn lines(data: &[u8], within: Range<usize>) -> Vec<Range<usize>> {
    let mut spans = Vec::new();
    let mut start = within.start;
    while start < within.end {
        let end = memchr::memchr(b'\n', &data[start..within.end]).map_or(within.end, |i| start + i);
        let span = trim(data, start..end);
        if !span.is_empty() {
            spans.push(span);
        }
        start = end + 1;
    }
    spans
}

fn trim(data: &[u8], mut r: Range<usize>) -> Range<usize> {
    while r.start < r.end && data[r.start].is_ascii_whitespace() {
        r.start += 1;
    }
    while r.end > r.start && data[r.end - 1].is_ascii_whitespace() {
        r.end -= 1;
    }
    r
}

/// One batch of `spans` (not empty) from `data`, sharing its buffer.
fn raw_batch(data: &Bytes, spans: &[Range<usize>], remote: &str, ack: Ack) -> RawBatch {
    let base = spans.first().map_or(0, |s| s.start);
    let end = spans.last().map_or(base, |s| s.end);
    let remote: ArrayRef = Arc::new(StringArray::from_iter_values(std::iter::repeat_n(remote, spans.len())));
    RawBatch {
        data: data.slice(base..end),
        spans: spans.iter().map(|s| s.start - base..s.end - base).collect(),
        meta: vec![("remote", remote)],
        rejected: Vec::new(),
        ack,
        place: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observability::metrics::Metrics;
    use crate::options::Settings;
    use arrow::array::Array;
    use phoenix_dsl::plan::graph::OptionValue;
    use phoenix_dsl::types::{Record, StreamType};
    use std::future::Future;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;
    use tokio::task::JoinHandle;
    use tokio_util::sync::CancellationToken;

    struct Running {
        addr: SocketAddr,
        stop: CancellationToken,
        task: JoinHandle<Result<(), ConnectorError>>,
    }

    fn options(extra: &[(&str, OptionValue)]) -> Options {
        let mut written: Vec<(String, OptionValue)> = extra.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
        if !extra.iter().any(|(k, _)| *k == "address") {
            written.push(("address".into(), OptionValue::String("127.0.0.1:0".into())));
        }
        Options::resolve("s", &super::super::source_spec(), &written, &Settings::default()).unwrap()
    }

    /// A running source; the receiver stands in for the flow's workers.
    fn start(extra: &[(&str, OptionValue)]) -> (Running, mpsc::Receiver<RawBatch>) {
        let options = options(extra);
        let source = HttpSource::new(&options).unwrap();
        let addr = source.local_addr();
        let (tx, rx) = mpsc::channel(4);
        let stop = CancellationToken::new();
        let stats = Metrics::new([("source s".into(), "f:1:1".into())]).nodes[0].clone();
        let stream =
            StreamType { record: Arc::new(Record::default()), open: true, metadata: Arc::new(Record::default()) };
        let ctx = SourceContext::new("s".into(), stream, options, tx, stop.clone(), stats).unwrap();
        let task = tokio::spawn(Box::new(source).run(ctx));
        (Running { addr, stop, task }, rx)
    }

    #[derive(Debug)]
    struct Seen {
        payloads: Vec<String>,
        remote: Vec<String>,
    }

    /// Workers that take every batch, note what it held and drop it (failing its ack first
    /// when `fail` is given).
    fn consume(mut rx: mpsc::Receiver<RawBatch>, fail: Option<&'static str>) -> mpsc::UnboundedReceiver<Seen> {
        let (tx, seen) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Some(b) = rx.recv().await {
                let payloads = (0..b.len()).map(|i| String::from_utf8(b.payload(i).to_vec()).unwrap()).collect();
                let remote = b
                    .meta
                    .iter()
                    .find(|(n, _)| *n == "remote")
                    .map(|(_, a)| {
                        let a = a.as_any().downcast_ref::<StringArray>().unwrap();
                        a.iter().map(|v| v.unwrap().to_string()).collect()
                    })
                    .unwrap_or_default();
                if let Some(reason) = fail {
                    b.ack.fail(reason);
                }
                drop(b);
                let _ = tx.send(Seen { payloads, remote });
            }
        });
        seen
    }

    async fn within<T>(f: impl Future<Output = T>) -> T {
        tokio::time::timeout(Duration::from_secs(10), f).await.expect("timed out")
    }

    /// Send `raw` as it is; the status and body of the response.
    async fn exchange(addr: SocketAddr, raw: Vec<u8>) -> (u16, String, String) {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(&raw).await.unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.unwrap();
        let text = String::from_utf8(out).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let status = head.split(' ').nth(1).unwrap().parse().unwrap();
        (status, head.to_string(), body.to_string())
    }

    async fn request(
        addr: SocketAddr,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: &[u8],
    ) -> (u16, String, String) {
        let mut raw = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
            body.len()
        );
        if let Some(t) = content_type {
            raw.push_str(&format!("Content-Type: {t}\r\n"));
        }
        raw.push_str("\r\n");
        let mut raw = raw.into_bytes();
        raw.extend_from_slice(body);
        exchange(addr, raw).await
    }

    async fn post(addr: SocketAddr, body: &[u8]) -> (u16, String) {
        let (status, _, body) = within(request(addr, "POST", "/", None, body)).await;
        (status, body)
    }

    async fn stop(r: Running) {
        r.stop.cancel();
        within(r.task).await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn ndjson_body() {
        let (r, rx) = start(&[]);
        let mut seen = consume(rx, None);
        let body = b"{\"a\":1}\n\n{\"b\":2}\r\n  {\"c\":3}  \n";
        let (status, text) = post(r.addr, body).await;
        assert_eq!((status, text.as_str()), (200, r#"{"accepted":3,"rejected":0,"errors":[]}"#));
        let got = seen.recv().await.unwrap();
        assert_eq!(got.payloads, [r#"{"a":1}"#, r#"{"b":2}"#, r#"{"c":3}"#]);
        assert_eq!(got.remote.len(), 3);
        assert!(got.remote.iter().all(|a| a.starts_with("127.0.0.1:")), "{:?}", got.remote);
        stop(r).await;
    }

    #[tokio::test]
    async fn bad_ndjson_line_is_an_event() {
        let (r, rx) = start(&[]);
        let mut seen = consume(rx, None);
        let (status, text) = post(r.addr, b"{\"a\":1}\nnot json\n").await;
        assert_eq!((status, text.as_str()), (200, r#"{"accepted":2,"rejected":0,"errors":[]}"#));
        assert_eq!(seen.recv().await.unwrap().payloads, [r#"{"a":1}"#, "not json"]);
        stop(r).await;
    }

    #[tokio::test]
    async fn json_array_body() {
        let (r, rx) = start(&[]);
        let mut seen = consume(rx, None);
        let (status, text) = post(r.addr, b" [ {\"a\": 1},\n {\"b\": [2, 3]} ] ").await;
        assert_eq!((status, text.as_str()), (200, r#"{"accepted":2,"rejected":0,"errors":[]}"#));
        assert_eq!(seen.recv().await.unwrap().payloads, [r#"{"a": 1}"#, r#"{"b": [2, 3]}"#]);
        // An empty array is fine: nothing to wait for.
        assert_eq!(post(r.addr, b"[]").await, (200, r#"{"accepted":0,"rejected":0,"errors":[]}"#.into()));
        stop(r).await;
    }

    #[tokio::test]
    async fn single_object_body() {
        let (r, rx) = start(&[]);
        let mut seen = consume(rx, None);
        let (status, text) = post(r.addr, b"\xef\xbb\xbf{\n  \"a\": 1,\n  \"b\": \"x\"\n}\n").await;
        assert_eq!((status, text.as_str()), (200, r#"{"accepted":1,"rejected":0,"errors":[]}"#));
        assert_eq!(seen.recv().await.unwrap().payloads, ["{\n  \"a\": 1,\n  \"b\": \"x\"\n}"]);
        stop(r).await;
    }

    #[tokio::test]
    async fn ndjson_content_type_means_lines() {
        let (r, rx) = start(&[]);
        let mut seen = consume(rx, None);
        let (status, _, text) =
            within(request(r.addr, "POST", "/", Some("application/x-ndjson; charset=utf-8"), b"[1]\n[2]\n")).await;
        assert_eq!((status, text.as_str()), (200, r#"{"accepted":2,"rejected":0,"errors":[]}"#));
        assert_eq!(seen.recv().await.unwrap().payloads, ["[1]", "[2]"]);
        stop(r).await;
    }

    #[tokio::test]
    async fn bad_bodies_are_400() {
        let (r, rx) = start(&[]);
        let _seen = consume(rx, None);
        for (body, says) in [
            (&b""[..], "empty body"),
            (b" \n\r\n ", "empty body"),
            (b"[{\"a\":1}, {\"b\":", "not a JSON array"),
            (b"[{\"a\":1}]\n[{\"b\":2}]", "not a JSON array"),
            // An array is parsed whole; a line that is not UTF-8 is only a bad event (below).
            (b"[{\"a\":\"\xff\"}]", "not a JSON array"),
        ] {
            let (status, text) = post(r.addr, body).await;
            assert_eq!(status, 400, "{text}");
            let v: serde_json::Value = serde_json::from_str(&text).unwrap();
            assert!(v["error"].as_str().unwrap().contains(says), "{text}");
        }
        stop(r).await;
    }

    #[tokio::test]
    async fn oversized_bodies_are_413() {
        let (r, rx) = start(&[("max_body", OptionValue::Size(1024))]);
        let mut seen = consume(rx, None);
        // Refused from the declared length, before the body is sent.
        let head =
            format!("POST / HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Length: 100000\r\n\r\n", r.addr);
        let (status, _, text) = within(exchange(r.addr, head.into_bytes())).await;
        assert_eq!(status, 413, "{text}");
        assert!(text.contains("max_body (1024 bytes)"), "{text}");
        // A chunked body is cut off while it is read.
        let mut raw = format!(
            "POST / HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n800\r\n",
            r.addr
        )
        .into_bytes();
        raw.extend_from_slice(&[b' '; 0x800]);
        raw.extend_from_slice(b"\r\n0\r\n\r\n");
        let (status, _, text) = within(exchange(r.addr, raw)).await;
        assert_eq!(status, 413, "{text}");
        // Up to the limit is fine.
        let mut body = b"{\"a\":1}\n".to_vec();
        body.resize(1024, b' ');
        assert_eq!(post(r.addr, &body).await.0, 200);
        assert_eq!(seen.recv().await.unwrap().payloads, [r#"{"a":1}"#]);
        stop(r).await;
    }

    #[tokio::test]
    async fn wrong_path_and_method() {
        let (r, rx) = start(&[("path", OptionValue::String("/events".into()))]);
        let mut seen = consume(rx, None);
        let (status, _, text) = within(request(r.addr, "POST", "/", None, b"{}")).await;
        assert_eq!(status, 404, "{text}");
        assert!(text.contains("`/events`"), "{text}");
        let (status, head, text) = within(request(r.addr, "GET", "/events", None, b"")).await;
        assert_eq!(status, 405, "{text}");
        assert!(head.to_ascii_lowercase().contains("allow: post"), "{head}");
        let (status, _, text) = within(request(r.addr, "POST", "/events?x=1", None, b"{}")).await;
        assert_eq!((status, text.as_str()), (200, r#"{"accepted":1,"rejected":0,"errors":[]}"#));
        assert_eq!(seen.recv().await.unwrap().payloads, ["{}"]);
        stop(r).await;
    }

    #[tokio::test]
    async fn failed_ack_is_503() {
        let (r, rx) = start(&[]);
        let _seen = consume(rx, Some("sink down"));
        let (status, text) = post(r.addr, b"{\"a\":1}\n").await;
        assert_eq!(status, 503, "{text}");
        assert!(text.contains("sink down"), "{text}");
        stop(r).await;
    }

    #[tokio::test]
    async fn workers_gone_is_503() {
        let (r, rx) = start(&[]);
        drop(rx);
        let (status, text) = post(r.addr, b"{\"a\":1}\n").await;
        assert_eq!(status, 503, "{text}");
        assert!(text.contains("stop"), "{text}");
        // The source stops by itself: the flow is gone.
        within(r.task).await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn answers_only_once_acknowledged() {
        let (r, mut rx) = start(&[("batch_size", OptionValue::Int(2))]);
        let addr = r.addr;
        let req = tokio::spawn(async move { post(addr, b"1\n2\n3\n4\n5\n").await });
        let mut held = Vec::new();
        for _ in 0..3 {
            held.push(within(rx.recv()).await.unwrap());
        }
        assert_eq!(held.iter().map(RawBatch::len).collect::<Vec<_>>(), [2, 2, 1]);
        assert_eq!(held[2].payload(0), b"5");
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!req.is_finished());
        held.truncate(1);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!req.is_finished());
        drop(held);
        assert_eq!(within(req).await.unwrap(), (200, r#"{"accepted":5,"rejected":0,"errors":[]}"#.into()));
        stop(r).await;
    }

    #[tokio::test]
    async fn stopping_finishes_requests_in_flight() {
        let (r, mut rx) = start(&[]);
        let addr = r.addr;
        let req = tokio::spawn(async move { post(addr, b"{\"a\":1}").await });
        let batch = within(rx.recv()).await.unwrap();
        r.stop.cancel();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!r.task.is_finished());
        assert!(TcpStream::connect(addr).await.is_err(), "still accepting after stop");
        drop(batch);
        assert_eq!(within(req).await.unwrap(), (200, r#"{"accepted":1,"rejected":0,"errors":[]}"#.into()));
        within(r.task).await.unwrap().unwrap();
        // The source no longer holds the flow's queue.
        assert!(within(rx.recv()).await.is_none());
    }

    #[tokio::test]
    async fn stops_when_idle() {
        let (r, rx) = start(&[]);
        let addr = r.addr;
        stop(r).await;
        drop(rx);
        assert!(TcpStream::connect(addr).await.is_err());
    }

    #[test]
    fn port_in_use_is_reported_up_front() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap().to_string();
        let err = HttpSource::new(&options(&[("address", OptionValue::String(addr.clone()))])).unwrap_err();
        assert_eq!(err.to_string(), format!("cannot listen on {addr}: address in use"));
        let err = HttpSource::new(&options(&[("address", OptionValue::String("127.0.0.1".into()))])).unwrap_err();
        assert!(err.to_string().starts_with("cannot listen on 127.0.0.1: "), "{err}");
        let err = HttpSource::new(&options(&[("path", OptionValue::String("events".into()))])).unwrap_err();
        assert!(err.to_string().contains("must start with `/`"), "{err}");
    }

    #[test]
    fn key_and_certificate_files_are_read_up_front() {
        let s = |v: &str| OptionValue::String(v.into());
        let err = HttpSource::new(&options(&[("api_keys", s("/nonexistent/keys"))])).unwrap_err();
        assert!(err.to_string().starts_with("cannot read the API key file /nonexistent/keys"), "{err}");
        let err = HttpSource::new(&options(&[("tls_cert", s("/nonexistent/cert.pem"))])).unwrap_err();
        assert!(err.to_string().contains("go together"), "{err}");
        let both = [("tls_cert", s("/nonexistent/cert.pem")), ("tls_key", s("/nonexistent/key.pem"))];
        let err = HttpSource::new(&options(&both)).unwrap_err();
        assert!(err.to_string().starts_with("cannot read the TLS certificate /nonexistent/cert.pem"), "{err}");
    }

    #[tokio::test]
    async fn api_keys_guard_every_request() {
        let dir = std::env::temp_dir().join(format!("phoenix-http-keys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let keys = dir.join("keys");
        std::fs::write(&keys, "w-1 write\nr-1 read\n").unwrap();
        let (r, rx) = start(&[("api_keys", OptionValue::String(keys.display().to_string()))]);
        let mut seen = consume(rx, None);
        let with = |key: &str| {
            let raw = format!(
                "POST / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {key}\r\n\
                 Content-Length: 7\r\n\r\n{{\"a\":1}}"
            );
            within(exchange(r.addr, raw.into_bytes()))
        };
        let (status, head, _) = within(request(r.addr, "POST", "/", None, b"{\"a\":1}")).await;
        assert_eq!(status, 401);
        assert!(head.to_ascii_lowercase().contains("www-authenticate: bearer"), "{head}");
        assert_eq!(with("w-2").await.0, 401);
        assert_eq!(with("r-1").await.0, 403);
        // Refused before the path is looked at: nothing about the source shows without a key.
        let (status, _, _) = within(request(r.addr, "GET", "/elsewhere", None, b"")).await;
        assert_eq!(status, 401);
        let (status, _, body) = with("w-1").await;
        assert_eq!((status, body.as_str()), (200, r#"{"accepted":1,"rejected":0,"errors":[]}"#));
        assert_eq!(seen.recv().await.unwrap().payloads, [r#"{"a":1}"#]);
        stop(r).await;
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn framing() {
        let spans = |body: &str, ndjson| {
            let (data, spans) = frame(Bytes::from(body.to_string()), ndjson).unwrap();
            spans.iter().map(|s| String::from_utf8(data[s.clone()].to_vec()).unwrap()).collect::<Vec<_>>()
        };
        assert_eq!(spans("{\"a\":1}\n{\"b\":2}", false), [r#"{"a":1}"#, r#"{"b":2}"#]);
        assert_eq!(spans("{\"a\":1} ", false), [r#"{"a":1}"#]);
        assert_eq!(spans("[1, {\"x\": [2]}, \"s\"]", false), ["1", r#"{"x": [2]}"#, r#""s""#]);
        assert_eq!(spans("[1]\n[2]", true), ["[1]", "[2]"]);
        // A broken object is a line the decoder will refuse, not a bad request.
        assert_eq!(spans("{\"a\":", false), [r#"{"a":"#]);
        assert!(frame(Bytes::from_static(b"\xef\xbb\xbf "), false).is_err());
    }
}
