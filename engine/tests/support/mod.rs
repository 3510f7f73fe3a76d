//! Shared by the connector integration tests: running flows in-process, running the `phoenix`
//! binary, and starting the real servers (tansu, moto, a Kubernetes API server) on 127.0.0.1.
#![allow(dead_code)]

pub mod kafka;
pub mod kube;
pub mod servers;
pub mod strict;

use phoenix_dsl::MemoryLoader;
use phoenix_engine::EngineCatalog;
use phoenix_engine::observability::metrics::Metrics;
use phoenix_engine::run::{RunConfig, RunError, run};
use phoenix_engine::taskgraph::{TaskGraph, node_labels};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// A fresh directory for one test.
pub fn temp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("phoenix-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

/// A flow running in this process.
pub struct Running {
    pub shutdown: CancellationToken,
    pub metrics: Arc<Metrics>,
    pub handle: tokio::task::JoinHandle<Result<(), RunError>>,
}

impl Running {
    /// Ask the flow to stop and wait for it to drain.
    pub async fn stop(self) -> Result<(), RunError> {
        self.shutdown.cancel();
        self.join().await
    }

    pub async fn join(self) -> Result<(), RunError> {
        tokio::time::timeout(Duration::from_secs(120), self.handle)
            .await
            .expect("the flow stops within 120s")
            .expect("the flow task does not panic")
    }

    /// Events a sink has written and flushed (acknowledged).
    pub fn written(&self, sink: &str) -> u64 {
        let title = format!("sink {sink}");
        self.metrics.nodes.iter().filter(|n| n.title == title).map(|n| n.events_out.get()).sum()
    }
}

/// Compile `text` and run it with `config` on the current runtime.
pub fn start(text: &str, mut config: RunConfig) -> Running {
    let catalog = EngineCatalog::new();
    let loader = MemoryLoader::new([("flow.phx".to_string(), text.as_bytes().to_vec())]);
    let c = phoenix_dsl::compile("flow.phx", &loader, &catalog);
    assert!(!c.has_errors(), "{}", c.render(false));
    let plan = c.plan(&catalog).expect("the flow plans");
    let metrics = Arc::new(Metrics::new(node_labels(&plan, &c.sources)));
    let graph = TaskGraph::build(&plan, &c.sources, &metrics).expect("task graph");
    let shutdown = config.shutdown.clone();
    config.shutdown = shutdown.clone();
    let m = metrics.clone();
    let handle = tokio::spawn(async move { run(graph, &catalog, m, config).await });
    Running { shutdown, metrics, handle }
}

/// Poll until `f` holds, up to `limit`.
pub async fn eventually(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < limit, "timed out after {limit:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The lines of a file (none if it does not exist yet).
pub fn lines(p: &Path) -> Vec<String> {
    std::fs::read_to_string(p).map(|s| s.lines().map(String::from).collect()).unwrap_or_default()
}

/// Every line of a file as JSON.
pub fn json_lines(p: &Path) -> Vec<serde_json::Value> {
    lines(p).iter().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}"))).collect()
}

/// `phoenix run FLOW` as the end-to-end tests start it: no metrics server, no progress display,
/// verbose logs appended to `log`. Callers add their environment and spawn it.
pub fn phoenix_run(flow: &Path, log: &Path) -> Command {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(log).expect("the phoenix log");
    let mut c = phoenix();
    c.args(["run", flow.to_str().expect("a UTF-8 path"), "--metrics-address", "off", "--no-progress", "-v"])
        .stdout(std::process::Stdio::null())
        .stderr(log);
    c
}

/// Poll `f` until it holds; after `limit`, fail with the end of `dir/phoenix.log`.
pub fn until(dir: &Path, what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        if start.elapsed() > limit {
            let log = std::fs::read_to_string(dir.join("phoenix.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            panic!(
                "timed out after {limit:?} waiting for {what}; phoenix.log ends:\n{}",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The `phoenix` binary, quiet and colourless: `PHOENIX_BIN` if set, else the one cargo built.
/// Tests run a copy, so a test that restarts the binary restarts the same one even if a build
/// replaces it meanwhile. One copy per build (named by its size and time), shared by every test
/// process of the run; copies of other builds older than a day are removed, so runs do not
/// fill `/tmp` with 175 MB binaries.
pub fn phoenix() -> Command {
    static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    let bin = BIN.get_or_init(|| {
        let built =
            std::env::var_os("PHOENIX_BIN").map_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_phoenix")), PathBuf::from);
        let meta = std::fs::metadata(&built).expect("the phoenix binary");
        let stamp = meta.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).unwrap_or_default();
        let tmp = std::env::temp_dir();
        let name = format!("phoenix-under-test-{}-{}", meta.len(), stamp.as_nanos());
        let copy = tmp.join(&name);
        if !copy.exists() {
            // Copied under a name of this process's, then renamed: parallel test processes
            // never run a half-written file.
            let partial = tmp.join(format!("{name}.{}", std::process::id()));
            std::fs::copy(&built, &partial).expect("copy the phoenix binary");
            std::fs::rename(&partial, &copy).expect("rename the phoenix copy");
        }
        let day = Duration::from_secs(86_400);
        for e in std::fs::read_dir(&tmp).into_iter().flatten().flatten() {
            let old = e
                .metadata()
                .ok()
                .and_then(|m| m.modified().ok())
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|a| a > day);
            if old && e.file_name().to_string_lossy().starts_with("phoenix-under-test-") && e.path() != copy {
                let _ = std::fs::remove_file(e.path());
            }
        }
        copy
    });
    let mut c = Command::new(bin);
    c.env_remove("RUST_LOG").env("NO_COLOR", "1");
    c
}

/// Wait for a child to exit, killing it after `limit`.
pub fn wait(mut child: Child, limit: Duration) -> Output {
    let start = Instant::now();
    while child.try_wait().expect("try_wait").is_none() {
        if start.elapsed() > limit {
            child.kill().ok();
            let out = child.wait_with_output().expect("output");
            panic!("phoenix did not exit within {limit:?}\n{}", String::from_utf8_lossy(&out.stderr));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().expect("output")
}

/// Send a signal to a child by pid.
pub fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill").args([sig, &child.id().to_string()]).status().expect("kill").success();
    assert!(ok, "kill {sig}");
}

/// One request with the real curl, to 127.0.0.1 only (`--noproxy`): status and body.
pub fn curl(addr: &str, method: &str, path: &str, content_type: Option<&str>, body: Option<&[u8]>) -> (u16, String) {
    let headers: Vec<String> = content_type.map(|t| format!("Content-Type: {t}")).into_iter().collect();
    curl_with(addr, method, path, &headers, body)
}

/// [`curl`] with any request headers (`Authorization: Bearer KEY`).
pub fn curl_with(addr: &str, method: &str, path: &str, headers: &[String], body: Option<&[u8]>) -> (u16, String) {
    use std::io::Write;
    let mut c = Command::new("/usr/bin/curl");
    c.args(["-sS", "--noproxy", "*", "--max-time", "120", "-X", method, "-w", "\n%{http_code}"]);
    for h in headers {
        c.args(["-H", h]);
    }
    if body.is_some() {
        c.args(["--data-binary", "@-"]);
    }
    c.arg(format!("http://{addr}{path}"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = c.spawn().expect("run /usr/bin/curl");
    if let Some(b) = body {
        child.stdin.take().expect("stdin").write_all(b).expect("write the body to curl");
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().expect("curl");
    assert!(out.status.success(), "curl failed: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).expect("utf-8 answer");
    let (body, status) = text.rsplit_once('\n').expect("curl prints the status last");
    (status.trim().parse().expect("status code"), body.to_string())
}

/// One `POST /events` over a fresh connection (raw HTTP, so a refused connection is told apart
/// from an answer): the status, `None` if the connection was refused or broke.
pub fn post_raw(port: u16, body: &str) -> Option<u16> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(60))).ok()?;
    let request = format!(
        "POST /events HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(request.as_bytes()).ok()?;
    let mut answer = String::new();
    s.read_to_string(&mut answer).ok()?;
    answer.split(' ').nth(1)?.parse().ok()
}

/// `phoenix serve` on `DIR/flows` with the keys of `DIR/keys` at `addr`, one worker, its log in
/// `DIR/phoenix.log`: the command, to add arguments and environment before spawning.
pub fn phoenix_serve(dir: &Path, addr: &str) -> Command {
    let log = std::fs::File::create(dir.join("phoenix.log")).expect("log");
    let mut c = phoenix();
    c.args(["serve", "--flows"])
        .arg(dir.join("flows"))
        .args(["--address", addr, "--api-keys"])
        .arg(dir.join("keys"))
        .args(["--workers", "1"])
        .stdout(std::process::Stdio::null())
        .stderr(log);
    c
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// A child process killed when dropped, so a failing test leaves nothing running.
pub struct Guard(Option<Child>);

impl Guard {
    pub fn new(child: Child) -> Guard {
        Guard(Some(child))
    }

    pub fn child(&self) -> &Child {
        self.0.as_ref().expect("child present until taken")
    }

    pub fn take(mut self) -> Child {
        self.0.take().expect("child present until taken")
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(c) = &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
