//! The process's listening sockets, one per bound address, owned by a flow rather than by one
//! version of it, so a replacement takes the socket over instead of closing and binding it
//! again (`crate::swap`).
//!
//! An `http` source built while another version of the same flow (the same `owner`) holds its
//! address *claims* that socket instead of binding it; one server accepts on it and hands each
//! request to the version in service: the last one started. When the old version stops it
//! leaves service and finishes only its own requests in flight; connections stay open (a
//! keep-alive connection's next request goes to the new version), and a request that arrives
//! while no version is in service (between the old one leaving and the new one starting) waits
//! for one. The socket closes when the last claim goes.
//!
//! Why not `SO_REUSEPORT` with a socket per version: the kernel spreads connections over the
//! sockets bound at that moment, and the connections queued on a socket that closes are reset,
//! so clients of a version that stops would see refusals unless it kept accepting until its
//! queue was empty, which it cannot tell. It would also let an unrelated process (of the same
//! user) or another flow bind the same port silently. One socket per address, handed over
//! inside the process, never drops a queued connection and keeps "address in use" for anyone
//! else.
//!
//! A socket speaks HTTP or HTTPS for its life: a version that would switch it is refused (the
//! running one is kept). A new version's certificate replaces the old one when it takes over
//! service, so a renewed certificate is deployed by replacing the flow.

use crate::connectors::{ConnectorError, Owner};
use axum::Router;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use std::collections::HashMap;
use std::future::IntoFuture;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard, Weak};
use std::time::Duration;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tower::ServiceExt;

/// Every address an `http` source of this process listens on.
static LISTENERS: LazyLock<Mutex<HashMap<SocketAddr, Weak<Shared>>>> = LazyLock::new(Default::default);

/// Tells the routes of one socket apart.
static ROUTE_IDS: AtomicU64 = AtomicU64::new(0);

/// How long a request waits for a version to be in service before it is answered 503.
const NO_ROUTE_WAIT: Duration = Duration::from_secs(30);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Plain bookkeeping: a panic elsewhere while holding it leaves nothing half-done to fear.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// One listening socket.
#[derive(Debug)]
struct Shared {
    addr: SocketAddr,
    /// The flow whose versions share it.
    flow: String,
    /// HTTPS: the certificate presented, the current version's.
    tls: Option<crate::tls::Certificate>,
    state: Mutex<SocketState>,
    /// Bumped whenever the routes change or the socket closes, for requests waiting for a route.
    changes: watch::Sender<u64>,
}

#[derive(Debug, Default)]
struct SocketState {
    /// The versions of the flow whose sources hold it (built and not yet stopped).
    claims: Vec<u64>,
    /// Bound, until the server takes it.
    listener: Option<std::net::TcpListener>,
    /// The server accepting on it, and what stops it accepting.
    server: Option<(JoinHandle<std::io::Result<()>>, oneshot::Sender<()>)>,
    /// The versions serving, oldest first: the last one takes new requests.
    routes: Vec<(u64, Router)>,
    /// The last claim went: no route will come.
    closed: bool,
}

/// A source's hold on a socket (see the module documentation). Released on drop.
#[derive(Debug)]
pub struct Claim {
    shared: Arc<Shared>,
    version: u64,
    route: Option<u64>,
    released: bool,
    /// This version's certificate, presented once it takes over service.
    tls: Option<Arc<rustls::ServerConfig>>,
}

/// Claim the socket for `address` for a version of the flow `owner`: the one another version
/// of that flow holds, else a new one bound now (so a port in use is reported before the flow
/// starts). `tls`: serve HTTPS with this certificate.
pub fn claim(address: &str, owner: &Owner, tls: Option<Arc<rustls::ServerConfig>>) -> Result<Claim, ConnectorError> {
    let fail = |why: String| ConnectorError(format!("cannot listen on {address}: {why}"));
    let addrs: Vec<SocketAddr> = address
        .to_socket_addrs()
        .map_err(|e| fail(format!("{e} (expected HOST:PORT, like 127.0.0.1:8080)")))?
        .collect();
    let mut all = lock(&LISTENERS);
    for a in addrs.iter().filter(|a| a.port() != 0) {
        let Some(shared) = all.get(a).and_then(Weak::upgrade) else { continue };
        let mut state = lock(&shared.state);
        if state.closed {
            continue;
        }
        if shared.flow != owner.flow {
            return Err(fail("address in use (by another flow of this process)".into()));
        }
        if state.claims.contains(&owner.version) {
            return Err(fail("address in use (by another source of this flow)".into()));
        }
        if shared.tls.is_some() != tls.is_some() {
            let (now, then) = if tls.is_some() { ("HTTP", "HTTPS") } else { ("HTTPS", "HTTP") };
            return Err(fail(format!(
                "the running version serves {now} here; a replacement cannot switch it to {then} \
                 (stop the flow, then start the new one)"
            )));
        }
        state.claims.push(owner.version);
        drop(state);
        return Ok(Claim { shared, version: owner.version, route: None, released: false, tls });
    }
    let listener = bind(&addrs).map_err(fail)?;
    let addr = listener.local_addr().map_err(|e| fail(e.to_string()))?;
    let shared = Arc::new(Shared {
        addr,
        flow: owner.flow.clone(),
        tls: tls.clone().map(crate::tls::Certificate::new),
        state: Mutex::new(SocketState {
            claims: vec![owner.version],
            listener: Some(listener),
            ..SocketState::default()
        }),
        changes: watch::Sender::new(0),
    });
    all.insert(addr, Arc::downgrade(&shared));
    Ok(Claim { shared, version: owner.version, route: None, released: false, tls })
}

fn bind(addrs: &[SocketAddr]) -> Result<std::net::TcpListener, String> {
    let listener = std::net::TcpListener::bind(addrs).map_err(|e| match e.kind() {
        std::io::ErrorKind::AddrInUse => "address in use".to_string(),
        std::io::ErrorKind::AddrNotAvailable => "no such address on this machine".into(),
        std::io::ErrorKind::PermissionDenied => "permission denied (ports below 1024 need privileges)".into(),
        _ => e.to_string(),
    })?;
    listener.set_nonblocking(true).map_err(|e| e.to_string())?;
    Ok(listener)
}

impl Claim {
    /// The address the socket is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.addr
    }

    /// Put `router` in service: it takes every new request from now on. Starts the server
    /// on the first call for the socket.
    pub fn serve(&mut self, router: Router) -> Result<(), ConnectorError> {
        let id = ROUTE_IDS.fetch_add(1, Ordering::Relaxed);
        let mut state = lock(&self.shared.state);
        if let Some(listener) = state.listener.take() {
            let listener = tokio::net::TcpListener::from_std(listener)
                .map_err(|e| ConnectorError(format!("cannot listen on {}: {e}", self.shared.addr)))?;
            let (stop_tx, stop_rx) = oneshot::channel::<()>();
            let app = Router::new()
                .fallback(dispatch)
                .with_state(self.shared.clone())
                .into_make_service_with_connect_info::<SocketAddr>();
            let stopped = async move {
                let _ = stop_rx.await;
            };
            let server = match &self.shared.tls {
                Some(certificate) => {
                    let listener = crate::tls::TlsListener::new(listener, certificate.clone())
                        .map_err(|e| ConnectorError(format!("cannot listen on {}: {e}", self.shared.addr)))?;
                    // `tap_io` only so axum hands the client's address to `ConnectInfo`.
                    let listener = axum::serve::ListenerExt::tap_io(listener, |_| ());
                    tokio::spawn(axum::serve(listener, app).with_graceful_shutdown(stopped).into_future())
                }
                None => tokio::spawn(axum::serve(listener, app).with_graceful_shutdown(stopped).into_future()),
            };
            state.server = Some((server, stop_tx));
        } else if let (Some(certificate), Some(config)) = (&self.shared.tls, &self.tls) {
            // Taking over service: new handshakes present this version's certificate.
            certificate.replace(config.clone());
        }
        state.routes.push((id, router));
        drop(state);
        self.route = Some(id);
        self.shared.changes.send_modify(|n| *n += 1);
        Ok(())
    }

    /// Leave service and give the socket up. Requests in flight keep their route; with the
    /// last claim the socket stops accepting at once and the server is returned, for the
    /// caller to end once its requests are answered.
    pub fn release(&mut self) -> Option<JoinHandle<std::io::Result<()>>> {
        if std::mem::replace(&mut self.released, true) {
            return None;
        }
        let mut all = lock(&LISTENERS);
        let mut state = lock(&self.shared.state);
        if let Some(id) = self.route.take() {
            state.routes.retain(|(r, _)| *r != id);
        }
        if let Some(i) = state.claims.iter().position(|v| *v == self.version) {
            state.claims.swap_remove(i);
        }
        let mut server = None;
        if state.claims.is_empty() {
            state.closed = true;
            state.listener = None;
            if let Some((task, stop)) = state.server.take() {
                let _ = stop.send(());
                server = Some(task);
            }
            if all.get(&self.shared.addr).is_some_and(|w| w.as_ptr() == Arc::as_ptr(&self.shared)) {
                all.remove(&self.shared.addr);
            }
        }
        drop(state);
        drop(all);
        self.shared.changes.send_modify(|n| *n += 1);
        server
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        // A source built and never run (another connector of its flow failed), or a task that
        // panicked: the socket must not stay claimed. A server returned here stops accepting
        // and ends once its connections are idle.
        drop(self.release());
    }
}

/// Hand a request to the route in service, waiting for one if there is none yet.
async fn dispatch(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let mut changes = shared.changes.subscribe();
    let deadline = tokio::time::Instant::now() + NO_ROUTE_WAIT;
    loop {
        let next = {
            let state = lock(&shared.state);
            match state.routes.last() {
                _ if state.closed => Next::Closed,
                Some((_, router)) => Next::Serve(router.clone()),
                None => Next::Wait,
            }
        };
        match next {
            Next::Serve(router) => {
                // A `Router` is infallible.
                let Ok(response) = router.oneshot(req).await;
                return response;
            }
            Next::Closed => return unavailable(),
            Next::Wait => {
                let changed = tokio::time::timeout_at(deadline, changes.changed()).await;
                if !matches!(changed, Ok(Ok(()))) {
                    return unavailable();
                }
            }
        }
    }
}

enum Next {
    Serve(Router),
    Wait,
    Closed,
}

fn unavailable() -> Response {
    (StatusCode::SERVICE_UNAVAILABLE, axum::Json(serde_json::json!({ "error": super::source::STOPPING })))
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    use tokio::net::TcpStream;

    fn answering(text: &'static str) -> Router {
        Router::new().fallback(move || async move { text })
    }

    /// One GET on a kept-alive connection; the body.
    async fn get(conn: &mut BufReader<TcpStream>) -> String {
        conn.get_mut().write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        let mut length = 0;
        loop {
            let mut line = String::new();
            conn.read_line(&mut line).await.unwrap();
            if line == "\r\n" {
                break;
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                length = v.trim().parse().unwrap();
            }
        }
        let mut body = vec![0; length];
        conn.read_exact(&mut body).await.unwrap();
        String::from_utf8(body).unwrap()
    }

    #[test]
    fn only_another_version_of_the_same_flow_takes_a_socket_over() {
        let (a, b) = (Owner::version_of("a"), Owner::version_of("b"));
        let mut first = claim("127.0.0.1:0", &a, None).unwrap();
        let addr = first.local_addr().to_string();
        let err = claim(&addr, &b, None).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("cannot listen on {addr}: address in use (by another flow of this process)")
        );
        let err = claim(&addr, &a, None).unwrap_err();
        assert!(err.to_string().ends_with("(by another source of this flow)"), "{err}");
        let mut next = claim(&addr, &Owner::version_of("a"), None).unwrap();
        assert_eq!(next.local_addr(), first.local_addr());
        assert!(first.release().is_none());
        assert!(std::net::TcpListener::bind(&addr).is_err(), "still bound for the next version");
        drop(next.release());
        std::net::TcpListener::bind(&addr).expect("closed with the last claim");
    }

    /// A self-signed certificate from the openssl CLI, as a server configuration.
    fn certificate(dir: &std::path::Path) -> Arc<rustls::ServerConfig> {
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        let out = std::process::Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"])
            .args(["-days", "1", "-subj", "/CN=127.0.0.1", "-keyout"])
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .output()
            .expect("openssl");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        crate::tls::server_config(&cert, &key).unwrap()
    }

    #[test]
    fn a_replacement_cannot_switch_between_http_and_https() {
        let dir = std::env::temp_dir().join(format!("phoenix-listener-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let tls = certificate(&dir);
        let plain = claim("127.0.0.1:0", &Owner::version_of("p"), None).unwrap();
        let addr = plain.local_addr().to_string();
        let err = claim(&addr, &Owner::version_of("p"), Some(tls.clone())).unwrap_err();
        assert!(
            err.to_string().ends_with(
                "serves HTTP here; a replacement cannot switch it to HTTPS (stop the flow, then start the new one)"
            ),
            "{err}"
        );
        let secure = claim("127.0.0.1:0", &Owner::version_of("s"), Some(tls.clone())).unwrap();
        let addr = secure.local_addr().to_string();
        let err = claim(&addr, &Owner::version_of("s"), None).unwrap_err();
        assert!(err.to_string().contains("serves HTTPS here; a replacement cannot switch it to HTTP "), "{err}");
        claim(&addr, &Owner::version_of("s"), Some(tls)).expect("HTTPS takes HTTPS over");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn requests_go_to_the_version_in_service_on_kept_connections() {
        let mut old = claim("127.0.0.1:0", &Owner::version_of("f"), None).unwrap();
        let addr = old.local_addr();
        old.serve(answering("old")).unwrap();
        let mut conn = BufReader::new(TcpStream::connect(addr).await.unwrap());
        assert_eq!(get(&mut conn).await, "old");
        let mut new = claim(&addr.to_string(), &Owner::version_of("f"), None).unwrap();
        // Claimed but not yet serving: the old version still answers.
        assert_eq!(get(&mut conn).await, "old");
        new.serve(answering("new")).unwrap();
        assert_eq!(get(&mut conn).await, "new", "the next request of a kept connection");
        assert!(old.release().is_none());
        assert_eq!(get(&mut conn).await, "new", "the connection outlives the old version");
        // With no version in service a request waits for one.
        let mut last = claim(&addr.to_string(), &Owner::version_of("f"), None).unwrap();
        assert!(new.release().is_none());
        let waiting = tokio::spawn(async move { get(&mut conn).await });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!waiting.is_finished());
        last.serve(answering("last")).unwrap();
        assert_eq!(waiting.await.unwrap(), "last");
        let server = last.release().expect("the last claim ends the server");
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(TcpStream::connect(addr).await.is_err(), "closed with the last claim");
        server.abort();
    }
}
