//! The `phoenix` binary end to end: real processes, real signals, real HTTP over 127.0.0.1.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The binary under test: `PHOENIX_BIN` if set (as in `support::phoenix`: a target directory
/// shared by several checkouts holds whichever built last), else the one cargo built.
fn phoenix() -> Command {
    let bin =
        std::env::var_os("PHOENIX_BIN").map_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_phoenix")), PathBuf::from);
    let mut c = Command::new(bin);
    c.env_remove("RUST_LOG").env("NO_COLOR", "1");
    c
}

fn temp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("phoenix-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A port that was free a moment ago (the child binds it).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill").args([sig, &child.id().to_string()]).status().unwrap().success();
    assert!(ok, "kill {sig}");
}

fn wait(mut child: Child, limit: Duration) -> Output {
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > limit {
            child.kill().ok();
            panic!("phoenix did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

/// Poll until `f` holds (the child is starting up); no timing assertion beyond a generous limit.
fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < Duration::from_secs(60), "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One HTTP/1.1 request; returns (status, body).
fn http(port: u16, method: &str, path: &str, body: &[u8]) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    // A body that starts like JSON is sent as JSON, anything else as NDJSON.
    let kind = if body.first().is_some_and(|b| *b == b'[') || body.ends_with(b"}") { "json" } else { "x-ndjson" };
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/{kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).ok()?;
    s.write_all(body).ok()?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).ok()?;
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    Some((status, body))
}

fn lines(p: &Path) -> Vec<String> {
    std::fs::read_to_string(p).map(|s| s.lines().map(String::from).collect()).unwrap_or_default()
}

#[test]
fn sigterm_drains_and_exits_zero() {
    let dir = temp("sigterm");
    let flow = dir.join("flow.phx");
    std::fs::write(
        &flow,
        format!(
            "schema E {{ id: int, name: string }}\nsource g = generate {{ rate = 2000, seed = 1 }} as E\n\
             sink out = file {{ path = \"{}\" }}\ng | where id >= 0 | out\n",
            dir.join("out.jsonl").display()
        ),
    )
    .unwrap();
    let metrics = free_port();
    let child = phoenix()
        .args(["run", flow.to_str().unwrap(), "--metrics-address", &format!("127.0.0.1:{metrics}")])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    eventually("events written", || lines(&dir.join("out.jsonl")).len() > 100);
    let (status, body) = http(metrics, "GET", "/health", b"").expect("/health answers");
    assert_eq!(status, 200, "{body}");
    let (status, body) = http(metrics, "GET", "/metrics", b"").expect("/metrics answers");
    assert_eq!(status, 200);
    assert!(body.contains("phoenix_events_in_total"), "{body}");
    signal(&child, "-TERM");
    let out = wait(child, Duration::from_secs(60));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "exit {:?}\n{stderr}", out.status);
    // Drained: every line is a whole event, and the summary counts what the file holds.
    let written = lines(&dir.join("out.jsonl"));
    for l in &written {
        serde_json::from_str::<serde_json::Value>(l).unwrap_or_else(|e| panic!("partial line {l:?}: {e}"));
    }
    let summary = stderr.lines().find(|l| l.contains("sink out")).unwrap_or_else(|| panic!("no summary:\n{stderr}"));
    let count = written.len().to_string();
    let formatted =
        count.as_bytes().rchunks(3).rev().map(|c| std::str::from_utf8(c).unwrap()).collect::<Vec<_>>().join(",");
    assert!(summary.contains(&format!("out {formatted}")), "summary {summary:?} vs {} lines", written.len());
}

#[test]
fn http_source_end_to_end() {
    let dir = temp("http");
    let flow = dir.join("flow.phx");
    let port = free_port();
    std::fs::write(
        &flow,
        format!(
            "schema E {{ id: int, kind: string }}\n\
             source api = http {{ address = \"127.0.0.1:{port}\", path = \"/events\", max_body = 1KiB }} as E\n\
             sink out = file {{ path = \"{out}\" }}\nsink dead = file {{ path = \"{dead}\" }}\n\
             api | where kind != 'skip' | out\napi.errors | dead\n",
            out = dir.join("out.jsonl").display(),
            dead = dir.join("dead.jsonl").display()
        ),
    )
    .unwrap();
    let child = phoenix()
        .args(["run", flow.to_str().unwrap(), "--metrics-address", "off"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    eventually("the http source listening", || TcpStream::connect(("127.0.0.1", port)).is_ok());
    // NDJSON: answered only once written (so the file already has the events).
    let (status, body) =
        http(port, "POST", "/events", b"{\"id\":1,\"kind\":\"a\",\"x\":[1]}\n{\"id\":2,\"kind\":\"skip\"}\nnot json\n")
            .unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(lines(&dir.join("out.jsonl")), vec![r#"{"id":1,"kind":"a","x":[1]}"#]);
    assert_eq!(lines(&dir.join("dead.jsonl")).len(), 1);
    // A JSON array and a single object.
    assert_eq!(http(port, "POST", "/events", br#"[{"id":3,"kind":"a"},{"id":4,"kind":"a"}]"#).unwrap().0, 200);
    assert_eq!(http(port, "POST", "/events", br#"{"id":5,"kind":"a"}"#).unwrap().0, 200);
    assert_eq!(lines(&dir.join("out.jsonl")).len(), 4);
    // Bad requests.
    assert_eq!(http(port, "POST", "/events", b"[{\"id\":").unwrap().0, 400);
    assert_eq!(http(port, "POST", "/events", &vec![b' '; 4096]).unwrap().0, 413);
    assert_eq!(http(port, "POST", "/nowhere", b"{}").unwrap().0, 404);
    signal(&child, "-INT");
    let out = wait(child, Duration::from_secs(60));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn test_command_reports_like_cargo_test() {
    let out =
        phoenix().args(["test", concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/quickstart.phx")]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("test result: ok. 2 passed; 0 failed"), "{stdout}");

    let dir = temp("test-fail");
    let flow = dir.join("flow.phx");
    std::fs::write(
        &flow,
        "schema E { id: int }\nsource s = stdin as E\nsink o = stdout\ns | where id > 1 | o\n\
         test \"keeps big ids\" { input s = [{\"id\": 1}, {\"id\": 2}]\n expect o = [{\"id\": 1}] }\n",
    )
    .unwrap();
    let out = phoenix().args(["test", flow.to_str().unwrap()]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("test keeps big ids ... FAILED"), "{stdout}");
    assert!(stdout.contains(r#"{"id":2}"#), "the report shows what was received: {stdout}");
}

#[test]
fn run_reports_a_bad_connector_before_reading() {
    let dir = temp("badpath");
    let flow = dir.join("flow.phx");
    std::fs::write(
        &flow,
        "schema E { id: int }\nsource s = file { path = \"/nonexistent/x.jsonl\" } as E\nsink o = stdout\ns | o\n",
    )
    .unwrap();
    let out = phoenix().args(["run", flow.to_str().unwrap(), "--metrics-address", "off"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("/nonexistent/x.jsonl") && stderr.contains("does not exist"), "{stderr}");
}

/// `/ready` waits for every source and sink to reach its service and names the ones that have
/// not; a broker that cannot be reached is one log line per node, not librdkafka's dozens a
/// second; `/health` stays 200.
#[test]
fn ready_names_what_is_not_connected_and_an_unreachable_broker_is_one_line() {
    let dir = temp("ready");
    let flow = dir.join("flow.phx");
    // Nothing listens there: the port was free a moment ago.
    let (closed, api, metrics) = (free_port(), free_port(), free_port());
    std::fs::write(
        &flow,
        format!(
            "schema E {{ id: int }}\n\
             source api = http {{ address = \"127.0.0.1:{api}\" }} as E\n\
             source orders = kafka {{ brokers = \"127.0.0.1:{closed}\", topic = \"orders\", group = \"g\" }} as E\n\
             sink out = file {{ path = \"{out}\" }}\n\
             sink copy = kafka {{ brokers = \"127.0.0.1:{closed}\", topic = \"copy\" }}\n\
             api | out\norders | copy\n",
            out = dir.join("out.jsonl").display()
        ),
    )
    .unwrap();
    let log = dir.join("stderr.log");
    let child = phoenix()
        .args(["run", flow.to_str().unwrap(), "--no-progress", "--metrics-address", &format!("127.0.0.1:{metrics}")])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let mut waiting = String::new();
    eventually("/ready to name the nodes still connecting", || match http(metrics, "GET", "/ready", b"") {
        Some((503, body)) if body.contains("connecting") && !body.contains("source api") => {
            waiting = body;
            true
        }
        _ => false,
    });
    let v: serde_json::Value = serde_json::from_str(&waiting).unwrap();
    let names: Vec<&str> = v["waiting"].as_array().unwrap().iter().map(|n| n.as_str().unwrap()).collect();
    assert_eq!(names.len(), 2, "{waiting}");
    assert!(names[0].starts_with("source orders (kafka)") && names[1].starts_with("sink copy (kafka)"), "{waiting}");
    let (status, body) = http(metrics, "GET", "/health", b"").unwrap();
    assert_eq!(status, 200, "{body}");

    // Five seconds of librdkafka retrying: before, ~30 lines a second.
    std::thread::sleep(Duration::from_secs(5).saturating_sub(started.elapsed()));
    assert_eq!(http(metrics, "GET", "/ready", b"").unwrap().0, 503, "still not connected");
    signal(&child, "-TERM");
    let out = wait(child, Duration::from_secs(60));
    assert!(out.status.success(), "exit {:?}", out.status);
    let text = std::fs::read_to_string(&log).unwrap();
    let before_stop: Vec<&str> = text.lines().take_while(|l| !l.contains("stopping: draining")).collect();
    let unreachable: Vec<&&str> = before_stop.iter().filter(|l| l.contains("cannot reach the Kafka brokers")).collect();
    assert_eq!(unreachable.len(), 2, "one line per Kafka node:\n{text}");
    assert!(unreachable.iter().any(|l| l.contains("node=source orders")), "{text}");
    assert!(unreachable.iter().any(|l| l.contains("node=sink copy")), "{text}");
    assert!(unreachable[0].contains(&format!("127.0.0.1:{closed}")), "names the brokers: {text}");
    assert!(before_stop.len() <= 8, "{} lines in 5 s:\n{text}", before_stop.len());
}

/// A flow whose sources and sinks need nothing outside the process is ready once it runs.
#[test]
fn ready_once_running() {
    let dir = temp("ready-ok");
    let flow = dir.join("flow.phx");
    let (api, metrics) = (free_port(), free_port());
    std::fs::write(
        &flow,
        format!(
            "schema E {{ id: int }}\nsource api = http {{ address = \"127.0.0.1:{api}\" }} as E\n\
             sink out = file {{ path = \"{}\" }}\napi | out\n",
            dir.join("out.jsonl").display()
        ),
    )
    .unwrap();
    let child = phoenix()
        .args(["run", flow.to_str().unwrap(), "--no-progress", "--metrics-address", &format!("127.0.0.1:{metrics}")])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    eventually("/ready 200", || http(metrics, "GET", "/ready", b"").is_some_and(|(s, _)| s == 200));
    assert_eq!(http(metrics, "GET", "/ready", b"").unwrap().1, r#"{"status":"ready"}"#);
    signal(&child, "-TERM");
    let out = wait(child, Duration::from_secs(60));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}
