//! Hot reload of `phoenix run` through the binary: SIGHUP, and `--watch`, re-read the flow
//! files; a valid change drains the running flow and starts the new one, an invalid one is
//! logged and changes nothing.
//!
//! `cargo test -p phoenix-engine --test reload`

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;
use support::{Guard, curl, free_port, json_lines, phoenix_run, signal, temp, until, wait};

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
