//! Hot reload of `phoenix run` through the binary: SIGHUP, and `--watch`, re-read the flow
//! files; a valid change starts the new version beside the running one, which then drains
//! (make-before-break); an invalid one, or one that cannot start, is logged and changes nothing.
//!
//! `cargo test -p phoenix-engine --test reload`

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;
use support::{Guard, curl, free_port, json_lines, phoenix_run, post_raw, signal, temp, until, wait};

const LIMIT: Duration = Duration::from_secs(60);

/// An `http` source on `port` into `dir/out.jsonl`, every event marked with `version`; the
/// schema is imported from `dir/shared.phx`.
fn flow(dir: &Path, port: u16, version: &str) -> String {
    format!(
        "import \"shared.phx\"\n\
         source api = http {{ address = \"127.0.0.1:{port}\", path = \"/events\" }} as E\n\
         sink out = file {{ path = \"{}\" }}\n\
         api | select *, '{version}' as version | out\n",
        dir.join("out.jsonl").display()
    )
}

fn setup(name: &str, port: u16) -> PathBuf {
    let dir = temp(name);
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(dir.join("shared.phx"), "schema E { id: int }\n").expect("shared");
    std::fs::write(dir.join("flow.phx"), flow(&dir, port, "v1")).expect("flow");
    dir
}

fn log(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("phoenix.log")).unwrap_or_default()
}

/// POST one event once the source listens; it is answered once written.
fn post(dir: &Path, port: u16, id: u32) {
    let addr = format!("127.0.0.1:{port}");
    until(dir, "the http source", LIMIT, || std::net::TcpStream::connect(&addr).is_ok());
    let (status, answer) = curl(&addr, "POST", "/events", None, Some(format!("{{\"id\": {id}}}").as_bytes()));
    assert_eq!(status, 200, "{answer}");
}

/// `(id, version)` of every event written, in order.
fn written(dir: &Path) -> Vec<(i64, String)> {
    json_lines(&dir.join("out.jsonl"))
        .iter()
        .map(|e| (e["id"].as_i64().expect("id"), e["version"].as_str().expect("version").to_string()))
        .collect()
}

/// `true` once `phrase` appears in the log `n` times.
fn logged(dir: &Path, phrase: &str, n: usize) -> bool {
    log(dir).matches(phrase).count() >= n
}

#[test]
fn sighup_swaps_a_valid_change_and_keeps_the_running_flow_on_an_invalid_one() {
    let port = free_port();
    let dir = setup("reload-sighup", port);
    let child = Guard::new(phoenix_run(&dir.join("flow.phx"), &dir.join("phoenix.log")).spawn().expect("phoenix run"));
    post(&dir, port, 1);

    std::fs::write(dir.join("flow.phx"), flow(&dir, port, "v2")).expect("edit");
    signal(child.child(), "-HUP");
    until(&dir, "the reload", LIMIT, || logged(&dir, "reload: the new flow is running", 1));
    post(&dir, port, 2);

    // An invalid edit: the diagnostic is logged and the v2 flow goes on.
    let broken = flow(&dir, port, "v3").replace("select *,", "select *, idd + 1 as n,");
    std::fs::write(dir.join("flow.phx"), broken).expect("edit");
    signal(child.child(), "-HUP");
    until(&dir, "the refusal", LIMIT, || logged(&dir, "reload refused", 1));
    let text = log(&dir);
    assert!(text.contains("flow.phx:4:") && text.contains("idd"), "the diagnostic is logged:\n{text}");
    post(&dir, port, 3);
    assert_eq!(written(&dir), [(1, "v1".into()), (2, "v2".into()), (3, "v2".into())]);
    assert!(!logged(&dir, "reload: the new flow is running", 2), "no second swap:\n{text}");

    signal(child.child(), "-TERM");
    let out = wait(child.take(), LIMIT);
    assert!(out.status.success(), "exit {:?}:\n{}", out.status, log(&dir));
}

#[test]
fn watch_reloads_when_the_flow_or_an_import_changes() {
    let port = free_port();
    let dir = setup("reload-watch", port);
    let mut run = phoenix_run(&dir.join("flow.phx"), &dir.join("phoenix.log"));
    let child = Guard::new(run.arg("--watch").spawn().expect("phoenix run"));
    post(&dir, port, 1);

    std::fs::write(dir.join("flow.phx"), flow(&dir, port, "v2")).expect("edit");
    until(&dir, "the reload", LIMIT, || logged(&dir, "reload: the new flow is running", 1));
    post(&dir, port, 2);

    // A broken import is noticed too, and refused once (not at every poll).
    std::fs::write(dir.join("shared.phx"), "schema E { id: in }\n").expect("edit");
    until(&dir, "the refusal", LIMIT, || logged(&dir, "reload refused", 1));
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(log(&dir).matches("reload refused").count(), 1, "{}", log(&dir));
    post(&dir, port, 3);

    // Fixing the import, with a field the flow does not read: a reload, same behaviour.
    std::fs::write(dir.join("shared.phx"), "schema E { id: int, name: string? }\n").expect("edit");
    until(&dir, "the second reload", LIMIT, || logged(&dir, "reload: the new flow is running", 2));
    post(&dir, port, 4);
    assert_eq!(written(&dir), [(1, "v1".into()), (2, "v2".into()), (3, "v2".into()), (4, "v2".into())]);

    signal(child.child(), "-TERM");
    let out = wait(child.take(), LIMIT);
    assert!(out.status.success(), "exit {:?}:\n{}", out.status, log(&dir));
}

/// Five reloads while a client keeps posting, a new connection per request: no connection is
/// refused (the next version takes the socket over), every event the `http` source
/// acknowledged is written exactly once, and the last version serves.
#[test]
fn reloads_under_load_lose_no_acknowledged_event() {
    let port = free_port();
    let dir = setup("reload-load", port);
    let child = Guard::new(phoenix_run(&dir.join("flow.phx"), &dir.join("phoenix.log")).spawn().expect("phoenix run"));
    post(&dir, port, 1_000_000);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let poster = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let (mut acked, mut refused) = (Vec::new(), Vec::new());
            let mut id = 0i64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match post_raw(port, &format!("{{\"id\":{id}}}")) {
                    Some(200) => acked.push(id),
                    other => {
                        refused.push((id, other));
                        std::thread::sleep(Duration::from_millis(5));
                    }
                }
                id += 1;
            }
            (acked, refused)
        })
    };
    for v in 2..=6 {
        std::thread::sleep(Duration::from_millis(200));
        std::fs::write(dir.join("flow.phx"), flow(&dir, port, &format!("v{v}"))).expect("edit");
        signal(child.child(), "-HUP");
        until(&dir, "the reload", LIMIT, || logged(&dir, "reload: the new flow is running", v - 1));
    }
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (acked, refused) = poster.join().expect("poster");
    assert!(refused.is_empty(), "requests refused or failed during the reloads: {refused:?}");
    signal(child.child(), "-TERM");
    let out = wait(child.take(), LIMIT);
    assert!(out.status.success(), "exit {:?}:\n{}", out.status, log(&dir));

    let written = written(&dir);
    let mut ids: Vec<i64> = written.iter().map(|(id, _)| *id).collect();
    ids.sort_unstable();
    let before = ids.len();
    ids.dedup();
    assert_eq!(ids.len(), before, "an event was written twice");
    let missing: Vec<&i64> = acked.iter().filter(|id| ids.binary_search(id).is_err()).collect();
    assert!(missing.is_empty(), "acknowledged but not written: {missing:?}");
    assert!(acked.len() > 10, "the client got answers throughout: {}", acked.len());
    // Versions overlap for a moment (the old one finishes its requests while the new one
    // takes the next), so their lines may interleave; the last version serves at the end.
    let versions: Vec<&str> = written.iter().map(|(_, v)| v.as_str()).collect();
    assert_eq!(versions.last(), Some(&"v6"), "{versions:?}");
}

/// A new version that cannot start (its port is another process's) is refused like an
/// invalid one: the running version is kept and goes on serving.
#[test]
fn a_version_that_cannot_start_keeps_the_running_one() {
    let port = free_port();
    let dir = setup("reload-cannot-start", port);
    let child = Guard::new(phoenix_run(&dir.join("flow.phx"), &dir.join("phoenix.log")).spawn().expect("phoenix run"));
    post(&dir, port, 1);
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let other = taken.local_addr().expect("addr").port();
    std::fs::write(dir.join("flow.phx"), flow(&dir, other, "v2")).expect("edit");
    signal(child.child(), "-HUP");
    until(&dir, "the refusal", LIMIT, || logged(&dir, "reload refused", 1));
    let text = log(&dir);
    assert!(text.contains(&format!("cannot listen on 127.0.0.1:{other}: address in use")), "{text}");
    post(&dir, port, 2);
    assert_eq!(written(&dir), [(1, "v1".into()), (2, "v1".into())]);
    signal(child.child(), "-TERM");
    let out = wait(child.take(), LIMIT);
    assert!(out.status.success(), "exit {:?}:\n{}", out.status, log(&dir));
}

/// A flow read from stdin cannot be read again: SIGHUP says so and the flow runs on.
#[test]
fn a_flow_from_stdin_is_not_reloaded() {
    use std::io::Write;
    let dir = temp("reload-stdin");
    let text = format!(
        "schema E {{ id: int }}\nsource g = generate {{ count = 3, rate = 2 }} as E\n\
         sink out = file {{ path = \"{}\" }}\ng | out\n",
        dir.join("out.jsonl").display()
    );
    let mut run = phoenix_run(Path::new("-"), &dir.join("phoenix.log"));
    let mut child = run.stdin(std::process::Stdio::piped()).spawn().expect("phoenix run");
    child.stdin.take().expect("stdin").write_all(text.as_bytes()).expect("the flow");
    let child = Guard::new(child);
    until(&dir, "the first event", LIMIT, || !support::lines(&dir.join("out.jsonl")).is_empty());
    signal(child.child(), "-HUP");
    let out = wait(child.take(), LIMIT);
    assert!(out.status.success(), "exit {:?}:\n{}", out.status, log(&dir));
    assert!(logged(&dir, "there is nothing to reload", 1), "{}", log(&dir));
    assert_eq!(support::lines(&dir.join("out.jsonl")).len(), 3, "the flow ran to its end");
}
