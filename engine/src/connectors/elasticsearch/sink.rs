//! The `elasticsearch` sink on the official client: `write` adds events to a bulk body,
//! `flush` sends it as one or more `_bulk` requests (bounded by `bulk_max_events` and
//! `bulk_max_bytes`) and reports every failed item with its own error. It never keeps a failed
//! event: the engine retries the retryable ones on their own and dead-letters the others.

use super::bulk::{self, Action, BulkBody, Outcome};
use crate::connectors::{Batching, BoxFuture, ConnectorError, ItemFailure, PartialFailure, Sink, WriteError};
use crate::exec::batch::SinkBatch;
use crate::observability::readiness::Throttled;
use crate::options::Options;
use arrow::array::{Array, ArrayRef, AsArray, StringArray};
use arrow_schema::DataType;
use elasticsearch::auth::Credentials;
use elasticsearch::cert::{Certificate, CertificateValidation};
use elasticsearch::http::Url;
use elasticsearch::http::headers::{CONTENT_TYPE, HeaderValue};
use elasticsearch::http::transport::{SingleNodeConnectionPool, TransportBuilder};
use elasticsearch::{BulkParts, Elasticsearch};
use std::time::Duration;

/// `Content-Type` of a bulk body (the client's default is `application/json`).
const NDJSON: &str = "application/x-ndjson";

pub struct ElasticsearchSink {
    client: Elasticsearch,
    /// The cluster URL without credentials, for messages.
    url: String,
    action: Action,
    timeout: Duration,
    max_events: usize,
    max_bytes: usize,
    linger: Duration,
    body: BulkBody,
}

impl std::fmt::Debug for ElasticsearchSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the client: it holds the credentials.
        f.debug_struct("ElasticsearchSink")
            .field("url", &self.url)
            .field("action", &self.action)
            .finish_non_exhaustive()
    }
}

/// The per-request outcome of one `_bulk` call.
enum Sent {
    /// A 2xx with one outcome per item.
    Items(Vec<Outcome>),
    /// The request as a whole failed (no answer, timeout, non-2xx, unreadable response).
    Failed { retryable: bool, error: String },
}

impl ElasticsearchSink {
    pub fn new(options: &Options) -> Result<ElasticsearchSink, ConnectorError> {
        let err = |m: String| ConnectorError(m);
        let text = options.str("url").unwrap_or_default();
        let mut url = Url::parse(text).map_err(|e| err(format!("`url` is not a URL: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(err(format!("`url` must be http:// or https://, not {}://", url.scheme())));
        }
        // Credentials in the URL become basic auth (sent once, not twice), and never appear in
        // messages.
        let mut credentials = None;
        if !url.username().is_empty() {
            let user = url.username().to_string();
            let password = url.password().unwrap_or_default().to_string();
            credentials = Some(Credentials::Basic(user, password));
            let _ = url.set_username("");
            let _ = url.set_password(None);
        }
        // An empty value (`env("ES_API_KEY", "")` with the variable unset) means "not set".
        let set = |name: &str| options.str(name).filter(|v| !v.is_empty());
        match (set("username"), set("password"), set("api_key")) {
            (Some(_), _, Some(_)) => return Err(err("set either `username`/`password` or `api_key`, not both".into())),
            (Some(user), Some(password), None) => {
                credentials = Some(Credentials::Basic(user.to_string(), password.to_string()));
            }
            (Some(_), None, None) => return Err(err("`username` needs a `password`".into())),
            (None, Some(_), _) => return Err(err("`password` needs a `username`".into())),
            (None, None, Some(key)) => credentials = Some(Credentials::EncodedApiKey(key.to_string())),
            (None, None, None) => {}
        }
        let timeout = options.duration("timeout").unwrap_or(Duration::from_secs(30));
        let mut builder = TransportBuilder::new(SingleNodeConnectionPool::new(url.clone())).timeout(timeout);
        if let Some(c) = credentials {
            builder = builder.auth(c);
        }
        if let Some(path) = options.str("ca_cert") {
            let pem = std::fs::read(path).map_err(|e| err(format!("cannot read `ca_cert` {path}: {e}")))?;
            let cert = Certificate::from_pem(&pem)
                .map_err(|e| err(format!("`ca_cert` {path} is not a PEM certificate: {e}")))?;
            builder = builder.cert_validation(CertificateValidation::Full(cert));
        }
        let transport = builder.build().map_err(|e| err(format!("cannot set up the Elasticsearch client: {e}")))?;
        let action = Action::parse(options.str("action").unwrap_or("index"))
            .ok_or_else(|| err("`action` must be index or create".into()))?;
        let max_bytes = options.size("bulk_max_bytes").unwrap_or(5 << 20);
        Ok(ElasticsearchSink {
            client: Elasticsearch::new(transport),
            url: url.to_string(),
            action,
            timeout,
            max_events: options.positive("bulk_max_events").map_err(|e| err(e.to_string()))?,
            max_bytes: usize::try_from(max_bytes).unwrap_or(usize::MAX).max(1),
            linger: options.duration("linger").unwrap_or(Duration::from_millis(200)),
            body: BulkBody::default(),
        })
    }

    /// Send one bulk request of `items` of the body.
    async fn send(&self, items: std::ops::Range<usize>) -> Sent {
        let n = items.len();
        let response = self
            .client
            .bulk(BulkParts::None)
            .header(CONTENT_TYPE, HeaderValue::from_static(NDJSON))
            .request_timeout(self.timeout)
            .body(vec![self.body.body(items)])
            .send()
            .await;
        let response = match response {
            Ok(r) => r,
            Err(e) if e.is_timeout() => {
                return Sent::Failed {
                    retryable: true,
                    error: format!("no answer from {} within {:?}", self.url, self.timeout),
                };
            }
            Err(e) => return Sent::Failed { retryable: true, error: format!("{}: {}", self.url, chain(&e)) },
        };
        let status = response.status_code().as_u16();
        let body = match response.bytes().await {
            Ok(b) => b,
            Err(e) => {
                return Sent::Failed {
                    retryable: true,
                    error: format!("reading the answer of {}: {}", self.url, chain(&e)),
                };
            }
        };
        if !(200..300).contains(&status) {
            return Sent::Failed {
                retryable: bulk::request_retryable(status),
                error: bulk::request_error(status, &body),
            };
        }
        match bulk::parse_response(&body, n) {
            Ok(items) => Sent::Items(items),
            Err(error) => Sent::Failed { retryable: true, error },
        }
    }
}

/// An error with its causes ("error sending request: connection refused").
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let t = c.to_string();
        if !s.contains(&t) {
            s += ": ";
            s += &t;
        }
        cause = c.source();
    }
    s
}

/// A per-event option as strings (`index`, `id`), whatever string type the expression gave.
fn strings(batch: &SinkBatch, name: &str) -> Result<Option<StringArray>, String> {
    let Some(a) = batch.field(name) else { return Ok(None) };
    let a: ArrayRef = if a.data_type() == &DataType::Utf8 {
        a.clone()
    } else {
        arrow::compute::cast(a, &DataType::Utf8).map_err(|e| format!("option `{name}`: {e}"))?
    };
    Ok(Some(a.as_string::<i32>().clone()))
}

impl Sink for ElasticsearchSink {
    /// Connected once the cluster answered `GET /` with a success (reachable, and the
    /// credentials accepted), or a bulk request was accepted.
    fn connected(&self) -> Option<BoxFuture<'static, ()>> {
        let (client, url, timeout) = (self.client.clone(), self.url.clone(), self.timeout);
        Some(Box::pin(async move {
            let throttle = Throttled::default();
            loop {
                let problem = match client.info().request_timeout(timeout).send().await {
                    Ok(r) if r.status_code().is_success() => return,
                    Ok(r) => format!("Elasticsearch at {url} answered {}", r.status_code()),
                    Err(e) => format!("cannot reach Elasticsearch at {url}: {}", chain(&e)),
                };
                if let Some(line) = throttle.line(format_args!("{problem}; retrying")) {
                    tracing::warn!(url = %url, "{line}");
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }))
    }

    fn write<'a>(&'a mut self, batch: &'a SinkBatch) -> BoxFuture<'a, Result<(), WriteError>> {
        Box::pin(async move {
            let index = strings(batch, "index").map_err(WriteError::Fatal)?;
            let Some(index) = index else {
                return Err(WriteError::Fatal("no `index` value for these events".into()));
            };
            let ids = strings(batch, "id").map_err(WriteError::Fatal)?;
            let mut failed = Vec::new();
            for i in 0..batch.len() {
                if index.is_null(i) || index.value(i).is_empty() {
                    failed.push(ItemFailure {
                        index: i,
                        retryable: false,
                        error: "the `index` expression gave no index name (NULL or empty) for this event".into(),
                    });
                    continue;
                }
                // A NULL or empty id lets Elasticsearch choose one.
                let id = ids.as_ref().filter(|a| !a.is_null(i)).map(|a| a.value(i)).filter(|s| !s.is_empty());
                self.body.push(self.action, index.value(i), id, batch.payloads.value(i));
            }
            if failed.is_empty() { Ok(()) } else { Err(WriteError::Partial(PartialFailure { items: failed })) }
        })
    }

    fn flush(&mut self) -> BoxFuture<'_, Result<(), WriteError>> {
        Box::pin(async move {
            let mut failed = Vec::new();
            // After a request failed as a whole the cluster is unlikely to take the next one at
            // once: the rest wait for the engine's backoff instead of being sent now.
            let mut down: Option<String> = None;
            for items in self.body.requests(self.max_events, self.max_bytes) {
                if let Some(error) = &down {
                    failed.extend(items.map(|index| ItemFailure { index, retryable: true, error: error.clone() }));
                    continue;
                }
                match self.send(items.clone()).await {
                    Sent::Items(outcomes) => {
                        for (index, outcome) in items.zip(outcomes) {
                            match outcome {
                                Outcome::Indexed => {}
                                Outcome::Retry(error) => failed.push(ItemFailure { index, retryable: true, error }),
                                Outcome::Reject(error) => failed.push(ItemFailure { index, retryable: false, error }),
                            }
                        }
                    }
                    Sent::Failed { retryable, error } => {
                        let error = format!("bulk request failed: {error}");
                        failed.extend(items.map(|index| ItemFailure { index, retryable, error: error.clone() }));
                        if retryable {
                            down = Some(error);
                        }
                    }
                }
            }
            self.body.clear();
            if failed.is_empty() { Ok(()) } else { Err(WriteError::Partial(PartialFailure { items: failed })) }
        })
    }

    fn batching(&self) -> Batching {
        Batching {
            // Every batch holds at least one event, so the event bound also bounds batches.
            max_batches: usize::MAX,
            max_events: self.max_events,
            max_bytes: self.max_bytes,
            linger: self.linger,
        }
    }
}
