//! The control-plane API as a user meets it: `phoenix serve` started as a process, called with
//! the real `curl` on 127.0.0.1.
//!
//! `cargo test -p phoenix-engine --test api`

mod support;

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use support::{Guard, curl, curl_with, free_port, lines, phoenix_serve, post_raw, signal, temp, wait};

const READ_KEY: &str = "r3ad-0123456789";
const WRITE_KEY: &str = "wr1te-0123456789";

/// `phoenix serve` on a free port over `dir/flows`, with `dir/keys`; its log in `dir/phoenix.log`.
struct Serve {
    addr: String,
    dir: PathBuf,
    child: Guard,
}

impl Serve {
    /// Started, and `/ready`.
    fn start(dir: &Path) -> Serve {
        let s = Serve::spawn(dir, &[]);
        s.until("/ready", || {
            std::net::TcpStream::connect(&s.addr).is_ok() && curl(&s.addr, "GET", "/ready", None, None).0 == 200
        });
        s
    }

    /// Started with `env`, not waited for.
    fn spawn(dir: &Path, env: &[(&str, String)]) -> Serve {
        Serve::spawn_with(dir, env, &[])
    }

    /// Started with `env` and more arguments, not waited for.
    fn spawn_with(dir: &Path, env: &[(&str, String)], args: &[String]) -> Serve {
        let addr = format!("127.0.0.1:{}", free_port());
        let child = phoenix_serve(dir, &addr)
            .args(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .spawn()
            .expect("start phoenix serve");
        Serve { addr, dir: dir.to_path_buf(), child: Guard::new(child) }
    }

    fn call(&self, key: Option<&str>, method: &str, path: &str, body: Option<&[u8]>) -> (u16, String) {
        let headers: Vec<String> = key.map(|k| format!("Authorization: Bearer {k}")).into_iter().collect();
        curl_with(&self.addr, method, path, &headers, body)
    }

    /// A call with the write key; the answer as JSON (`Null` for an empty body).
    fn json(&self, method: &str, path: &str, body: Option<&[u8]>) -> (u16, Value) {
        let (status, text) = self.call(Some(WRITE_KEY), method, path, body);
        let v = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
        };
        (status, v)
    }

    fn until(&self, what: &str, mut f: impl FnMut() -> bool) {
        let start = Instant::now();
        while !f() {
            if start.elapsed() > Duration::from_secs(60) {
                let log = std::fs::read_to_string(self.dir.join("phoenix.log")).unwrap_or_default();
                panic!("timed out waiting for {what}; phoenix.log:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGTERM: every flow drains, exit 0.
    fn stop(self) {
        signal(self.child.child(), "-TERM");
        let out = wait(self.child.take(), Duration::from_secs(60));
        let log = std::fs::read_to_string(self.dir.join("phoenix.log")).unwrap_or_default();
        assert!(out.status.success(), "exit {:?}:\n{log}", out.status);
        for key in [READ_KEY, WRITE_KEY] {
            assert!(!log.contains(key), "a key was logged:\n{log}");
        }
    }
}

fn setup(name: &str) -> PathBuf {
    let dir = temp(name);
    std::fs::create_dir_all(dir.join("flows")).expect("flows dir");
    std::fs::write(dir.join("keys"), format!("# test keys\n{READ_KEY} read\n{WRITE_KEY} write\n")).expect("keys");
    dir
}

/// An `http` source on `port` into the file `out`.
fn ingest(port: u16, out: &Path) -> String {
    format!(
        "schema E {{ id: int }}\n\
         source api = http {{ address = \"127.0.0.1:{port}\", path = \"/events\" }} as E\n\
         sink out = file {{ path = \"{}\" }}\n\
         api | out\n",
        out.display()
    )
}

fn post_events(port: u16, ids: std::ops::Range<u32>) {
    let body: String = ids.map(|i| format!("{{\"id\":{i}}}\n")).collect();
    let (status, answer) = curl(&format!("127.0.0.1:{port}"), "POST", "/events", None, Some(body.as_bytes()));
    assert_eq!(status, 200, "{answer}");
}

fn ids(path: &Path) -> Vec<u64> {
    lines(path).iter().map(|l| serde_json::from_str::<Value>(l).expect("json")["id"].as_u64().expect("id")).collect()
}

#[test]
fn flows_are_listed_read_replaced_and_deleted() {
    let dir = setup("api-crud");
    let port = free_port();
    let (v1, v2) = (dir.join("out-v1.jsonl"), dir.join("out-v2.jsonl"));
    let text_v1 = ingest(port, &v1);
    std::fs::write(dir.join("flows/ingest.phx"), &text_v1).expect("flow");
    let api = Serve::start(&dir);

    let (status, list) = api.json("GET", "/api/v1/flows", None);
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["flows"], serde_json::json!([{"name": "ingest", "status": {"state": "running"}}]));
    post_events(port, 0..3);
    let (status, flow) = api.json("GET", "/api/v1/flows/ingest", None);
    assert_eq!(status, 200, "{flow}");
    assert_eq!(flow["text"], text_v1.as_str());
    assert_eq!(flow["status"]["state"], "running");
    let sink = flow["nodes"].as_array().expect("nodes").iter().find(|n| n["node"] == "sink out (file)").cloned();
    let sink = sink.unwrap_or_else(|| panic!("no sink in {flow}"));
    assert_eq!(sink["events_out"], 3, "{flow}");
    assert!(sink["at"].as_str().expect("at").ends_with("ingest.phx:3:1"), "{sink}");

    // An invalid text: every diagnostic, nothing changed.
    let broken = text_v1.replace("api | out", "api | where idd > 1 | outt");
    let (status, answer) = api.json("PUT", "/api/v1/flows/ingest", Some(broken.as_bytes()));
    assert_eq!(status, 400, "{answer}");
    let diags = answer["diagnostics"].as_array().expect("diagnostics");
    let errors: Vec<&Value> = diags.iter().filter(|d| d["severity"] == "error").collect();
    assert_eq!(errors.len(), 2, "both errors, not just the first: {answer}");
    assert!(errors.iter().all(|d| d["code"].as_str().is_some_and(|c| c.starts_with('E'))), "{answer}");
    let at = |what: &str| {
        let d = errors.iter().find(|d| d["message"].as_str().is_some_and(|m| m.contains(what)));
        let d = d.unwrap_or_else(|| panic!("no error about {what}: {answer}"));
        assert!(d["file"].as_str().is_some_and(|f| f.ends_with("ingest.phx")), "{d}");
        (d["line"].as_u64(), d["column"].as_u64(), d["help"].as_str().unwrap_or_default().to_string())
    };
    let (line, column, help) = at("idd");
    assert_eq!((line, column), (Some(4), Some(13)), "the column of `idd`");
    assert!(errors.iter().any(|d| d["code"] == "E0020" && d["notes"].as_array().is_some_and(|n| !n.is_empty())));
    assert!(help.contains("`id`"), "did you mean: {help}");
    let (line, column, _) = at("outt");
    assert_eq!((line, column), (Some(4), Some(23)), "the column of `outt`");
    assert_eq!(std::fs::read_to_string(dir.join("flows/ingest.phx")).expect("flow"), text_v1);
    post_events(port, 3..5);
    assert_eq!(ids(&v1), [0, 1, 2, 3, 4], "the running flow is untouched");

    // A valid text replaces the running flow: the old one drained, the new one on the same port.
    let text_v2 = ingest(port, &v2);
    let (status, answer) = api.json("PUT", "/api/v1/flows/ingest", Some(text_v2.as_bytes()));
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["status"]["state"], "running");
    api.until("the new flow listening", || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
    post_events(port, 5..7);
    assert_eq!(ids(&v1), [0, 1, 2, 3, 4]);
    assert_eq!(ids(&v2), [5, 6]);
    assert_eq!(std::fs::read_to_string(dir.join("flows/ingest.phx")).expect("flow"), text_v2);
    let (_, flow) = api.json("GET", "/api/v1/flows/ingest", None);
    assert_eq!(flow["text"], text_v2.as_str());
    let sink = flow["nodes"].as_array().expect("nodes").iter().find(|n| n["node"] == "sink out (file)").cloned();
    assert_eq!(sink.expect("sink")["events_out"], 2, "counts of the new version: {flow}");

    // A new flow, as JSON; then deleted.
    let other = "schema E { id: int }\nsource g = generate { count = 1 } as E\nsink s = stdout {}\ng | s\n";
    let body = serde_json::to_vec(&serde_json::json!({"text": other})).expect("json");
    let headers =
        [format!("Authorization: Bearer {WRITE_KEY}"), "Content-Type: application/json; charset=utf-8".to_string()];
    let (status, answer) = curl_with(&api.addr, "PUT", "/api/v1/flows/other", &headers, Some(&body));
    assert_eq!(status, 201, "{answer}");
    api.until("the generated event delivered", || {
        api.json("GET", "/api/v1/flows/other", None).1["status"]["state"] == "finished"
    });
    let (_, list) = api.json("GET", "/api/v1/flows", None);
    let names: Vec<&str> =
        list["flows"].as_array().expect("flows").iter().map(|f| f["name"].as_str().expect("name")).collect();
    assert_eq!(names, ["ingest", "other"]);
    assert_eq!(api.json("DELETE", "/api/v1/flows/other", None).0, 204);
    assert!(!dir.join("flows/other.phx").exists());
    assert_eq!(api.json("GET", "/api/v1/flows/other", None).0, 404);
    assert_eq!(api.json("DELETE", "/api/v1/flows/other", None).0, 404);

    // Bad requests.
    let (status, answer) = curl_with(&api.addr, "PUT", "/api/v1/flows/other", &headers, Some(b"{\"text\": \n  12,"));
    assert_eq!(status, 400, "{answer}");
    let answer: Value = serde_json::from_str(&answer).expect("json");
    assert_eq!((answer["line"].as_u64(), answer["column"].as_u64()), (Some(2), Some(4)), "{answer}");
    let (status, answer) = api.json("PUT", "/api/v1/flows/big", Some(&vec![b' '; 2 << 20]));
    assert_eq!(status, 413, "{answer}");
    assert!(answer["error"].as_str().is_some_and(|e| e.contains("length limit")), "{answer}");
    assert_eq!(api.json("GET", "/api/v1/flows/Not_A_Name", None).0, 400);
    assert_eq!(api.json("PUT", "/api/v1/flows/bytes", Some(b"\xff\xfe")).0, 400);
    assert!(!dir.join("flows/big.phx").exists() && !dir.join("flows/bytes.phx").exists());

    // /metrics shows the running flow's nodes.
    let (status, metrics) = curl(&api.addr, "GET", "/metrics", None, None);
    assert_eq!(status, 200);
    assert!(metrics.contains("phoenix_events_out_total{node=\"sink out (file)\""), "{metrics}");
    assert!(!metrics.contains("other.phx"), "a deleted flow leaves /metrics: {metrics}");
    api.stop();
}

#[test]
fn every_api_route_needs_a_key_of_the_right_scope_and_the_key_file_is_re_read() {
    let dir = setup("api-auth");
    let api = Serve::start(&dir);
    let flow = b"schema E { id: int }\nsource g = generate { count = 1 } as E\nsink s = stdout {}\ng | s\n";
    let definition = br#"{"name": "E", "schema": "schema E { id: int }"}"#;
    let routes: [(&str, &str, Option<&[u8]>); 11] = [
        ("GET", "/api/v1/flows", None),
        ("GET", "/api/v1/flows/x", None),
        ("PUT", "/api/v1/flows/x", Some(flow)),
        ("DELETE", "/api/v1/flows/x", None),
        ("GET", "/api/v1/routes?type=order", None),
        ("POST", "/api/v1/route", Some(b"{\"id\": 1}")),
        ("GET", "/api/v1/events", None),
        ("POST", "/api/v1/events", Some(definition)),
        ("GET", "/api/v1/events/E-v1", None),
        ("DELETE", "/api/v1/events/E-v1", None),
        ("POST", "/api/v1/events/E-v1/validate", Some(b"{\"id\": 1}")),
    ];
    for (method, path, body) in routes {
        let (status, answer) = api.call(None, method, path, body);
        assert_eq!(status, 401, "{method} {path} without a key: {answer}");
        assert_eq!(api.call(Some("wrong"), method, path, body).0, 401, "{method} {path} with a wrong key");
        assert_eq!(api.call(Some(&WRITE_KEY[..WRITE_KEY.len() - 1]), method, path, body).0, 401, "a prefix");
        let with_read = api.call(Some(READ_KEY), method, path, body).0;
        // Routing or validating an event changes nothing: a read key may.
        if method == "GET" || path == "/api/v1/route" || path.ends_with("/validate") {
            assert!(with_read == 200 || with_read == 404, "{method} {path} with the read key: {with_read}");
        } else {
            assert_eq!(with_read, 403, "{method} {path} with the read key");
        }
    }
    assert!(!dir.join("flows/x.phx").exists(), "nothing was written without the write key");
    assert!(!dir.join("flows/events").exists(), "no definition was written without the write key");
    assert_eq!(api.call(Some(WRITE_KEY), "PUT", "/api/v1/flows/x", Some(flow)).0, 201);
    assert_eq!(api.call(Some(WRITE_KEY), "DELETE", "/api/v1/flows/x", None).0, 204);
    // The operational endpoints stay open (probes and scrapers carry no key).
    assert_eq!(curl(&api.addr, "GET", "/health", None, None).0, 200);

    // A new key file takes effect without a restart; a broken one keeps the keys in force.
    std::fs::write(dir.join("keys"), "rotated-key-0000 write\n").expect("keys");
    api.until("the rotated key", || api.call(Some("rotated-key-0000"), "GET", "/api/v1/flows", None).0 == 200);
    assert_eq!(api.call(Some(WRITE_KEY), "GET", "/api/v1/flows", None).0, 401, "the old key is gone");
    std::fs::write(dir.join("keys"), "rotated-key-0000 admin\n").expect("keys");
    api.until("the broken file noticed", || {
        std::fs::read_to_string(dir.join("phoenix.log")).unwrap_or_default().contains("keeping the keys in force")
    });
    assert_eq!(api.call(Some("rotated-key-0000"), "GET", "/api/v1/flows", None).0, 200);
    let log = std::fs::read_to_string(dir.join("phoenix.log")).unwrap_or_default();
    assert!(!log.contains("rotated-key-0000"), "a key was logged:\n{log}");
    api.stop();
}

/// The commerce example as shipped: every arm an `order` can take, with the sinks it reaches and
/// their configuration, settings shown by name only.
#[test]
fn routes_of_the_commerce_example_by_event_type() {
    let dir = setup("api-routes");
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    std::fs::copy(examples.join("commerce.phx"), dir.join("flows/commerce.phx")).expect("copy");
    std::fs::create_dir_all(dir.join("flows/common")).expect("common");
    for f in ["dead_letters.phx", "commerce_events.phx"] {
        std::fs::copy(examples.join("common").join(f), dir.join("flows/common").join(f)).expect("copy");
    }
    // Everything the flow reaches is on 127.0.0.1; the brokers and Elasticsearch are closed
    // ports (the routes do not need them).
    let closed = free_port();
    let secret_url = format!("http://127.0.0.1:{closed}/?token=s3cr3t");
    let env = [
        ("HTTP_ADDRESS", format!("127.0.0.1:{}", free_port())),
        ("KAFKA_BROKERS", format!("127.0.0.1:{closed}")),
        ("ES_URL", secret_url.clone()),
        ("BATCH_FILES", dir.join("in/*.json").display().to_string()),
        ("REJECTED_FILE", dir.join("rejected.jsonl").display().to_string()),
        ("PHOENIX_DEAD_LETTERS", dir.join("dead.jsonl").display().to_string()),
    ];
    // Not ready (no broker): wait for the API instead.
    let api = Serve::spawn(&dir, &env);
    api.until("the API", || std::net::TcpStream::connect(&api.addr).is_ok());
    let (status, flows) = api.json("GET", "/api/v1/flows", None);
    assert_eq!(status, 200, "{flows}");
    assert_eq!(flows["flows"].as_array().expect("flows").len(), 1, "common/ holds imports, not flows: {flows}");

    let (status, answer) = api.call(Some(READ_KEY), "GET", "/api/v1/routes?type=order", None);
    assert_eq!(status, 200, "{answer}");
    assert!(!answer.contains("s3cr3t"), "a setting's value is shown: {answer}");
    let v: Value = serde_json::from_str(&answer).expect("json");
    let arms = v["routes"].as_array().expect("routes");
    let summary: Vec<(String, String, String, Vec<String>)> = arms
        .iter()
        .map(|a| {
            let sinks =
                a["sinks"].as_array().expect("sinks").iter().map(|s| s["name"].as_str().expect("name").to_string());
            let text = |k: &str| a[k].as_str().unwrap_or_else(|| panic!("{k} in {a}")).to_string();
            (text("id"), text("condition"), text("match"), sinks.collect())
        })
        .collect();
    let row = |id: &str, cond: &str, m: &str, sinks: &[&str]| {
        (id.to_string(), cond.to_string(), m.to_string(), sinks.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    };
    let bad_type = "when type not in ('product', 'order', 'supplier')";
    assert_eq!(
        summary,
        [
            // Validation and routing are written once, after the merge of both paths.
            row("commerce:108:3", bad_type, "conditional", &["rejected"]),
            row("commerce:110:3", "else", "conditional", &[]),
            row("commerce:122:3", "'order'", "exact", &["orders"]),
        ]
    );
    let order = &arms[2];
    assert_eq!(order["key"], "type");
    assert!(order["route"].as_str().is_some_and(|r| r.ends_with("commerce.phx:120:1")), "{order}");
    // `topic` and `key` may be per-event expressions: shown as written.
    assert_eq!(
        order["sinks"][0],
        serde_json::json!({"name": "orders", "connector": "kafka", "config": {
            "brokers": "env(\"KAFKA_BROKERS\")", "topic": "\"orders\"", "key": "id", "compression": "lz4"
        }})
    );

    // Without a type: every arm of the two routes; an unknown type takes the `else` arm.
    let (_, all) = api.json("GET", "/api/v1/routes", None);
    assert_eq!(all["routes"].as_array().expect("routes").len(), 8, "{all}");
    let (_, unknown) = api.json("GET", "/api/v1/routes?type=refund&flow=commerce", None);
    let exact: Vec<&Value> =
        unknown["routes"].as_array().expect("routes").iter().filter(|a| a["match"] == "exact").collect();
    assert_eq!(exact.len(), 1, "{unknown}");
    assert!(exact.iter().all(|a| a["condition"] == "else" && a["sinks"][0]["name"] == "rejected"), "{unknown}");
    let search = all["routes"]
        .as_array()
        .expect("routes")
        .iter()
        .flat_map(|a| a["sinks"].as_array().expect("sinks").iter())
        .find(|s| s["name"] == "search");
    assert!(search.is_none(), "search is fed by a pipeline, not by a route arm");
    assert_eq!(api.json("GET", "/api/v1/routes?flow=nope", None).0, 404);
    assert_eq!(api.json("GET", "/api/v1/routes?typo=order", None).0, 400);

    // One event routed: what each source of the flow would do with it, nothing written.
    let route = |query: &str, event: &str| -> Value {
        let (status, answer) =
            api.call(Some(READ_KEY), "POST", &format!("/api/v1/route{query}"), Some(event.as_bytes()));
        assert_eq!(status, 200, "{answer}");
        assert!(!answer.contains("s3cr3t"), "a setting's value is shown: {answer}");
        serde_json::from_str(&answer).expect("json")
    };
    let sinks = |source: &Value| -> Vec<String> {
        source["sinks"]
            .as_array()
            .expect("sinks")
            .iter()
            .map(|d| d["sink"].as_str().expect("sink").to_string())
            .collect()
    };
    let order = r#"{"id": "o-1", "type": "order", "ts": "2026-03-01T10:00:00Z", "amount": 100, "coupon": "X"}"#;
    let v = route("", order);
    let flows = v["flows"].as_array().expect("flows");
    assert_eq!(flows.len(), 1, "{v}");
    let by_source: Vec<&str> =
        flows[0]["sources"].as_array().expect("sources").iter().map(|s| s["name"].as_str().expect("name")).collect();
    assert_eq!(by_source, ["api", "batch"], "{v}");
    let api_source = &flows[0]["sources"][0];
    assert_eq!(api_source["decoded"], true);
    assert_eq!(sinks(api_source), ["orders", "search"], "{api_source}");
    let to_orders = &api_source["sinks"][0]["event"];
    assert_eq!((to_orders["gross"].clone(), to_orders["channel"].clone()), (Value::from(119.0), Value::from("http")));
    assert_eq!(flows[0]["sources"][1]["sinks"][0]["event"]["channel"], "file", "through the batch flow");
    // `from_http`'s tagging `select`, then the merge, whose first `where` passes.
    let first = &api_source["steps"][0];
    assert_eq!(
        (first["step"].clone(), first["output"]["channel"].clone()),
        (Value::from("select"), Value::from("http"))
    );
    let merged = &first["then"][0];
    assert!(merged["stage"].as_str().is_some_and(|s| s.starts_with("merge at ")), "{merged}");
    let check = &merged["then"][0];
    assert_eq!((check["step"].clone(), check["passed"].clone()), (Value::from("where"), Value::from(true)), "{check}");

    // `type` fills in the event's type; `source` picks one source.
    let unknown = route("?type=refund&source=api", r#"{"id": "r-1", "ts": "2026-03-01T10:00:00Z"}"#);
    let source = &unknown["flows"][0]["sources"][0];
    assert_eq!(unknown["event"]["type"], "refund");
    assert_eq!(sinks(source), ["rejected"], "{unknown}");
    assert_eq!(source["sinks"][0]["event"]["reason"], "bad type");
    let validation = &source["steps"][0]["then"][0]["then"][1];
    assert_eq!(validation["step"], "route", "{source}");
    assert_eq!(validation["taken"][0]["arm"], "when type not in ('product', 'order', 'supplier')", "{validation}");

    // A malformed event: the validator's reason, and the dead letter's way.
    let bad = route("?source=api", r#"{"id": "o-1", "type": "order", "ts": 12,}"#);
    let source = &bad["flows"][0]["sources"][0];
    assert_eq!(source["decoded"], false, "{bad}");
    let reason = source["error"].as_str().expect("error");
    assert_eq!(reason, "invalid JSON at byte 40: expected a key (a string in double quotes)");
    assert_eq!(sinks(source), ["dead_letters"]);
    assert_eq!(source["dead_letters"][0]["error"], reason);

    let (status, _) = api.call(Some(READ_KEY), "POST", "/api/v1/route?type=order", Some(br#"{"type": "refund"}"#));
    assert_eq!(status, 400, "a type that contradicts the event's");
    assert_eq!(api.call(Some(READ_KEY), "POST", "/api/v1/route?flow=nope", Some(b"{}")).0, 404);
    assert_eq!(api.call(Some(READ_KEY), "POST", "/api/v1/route", Some(b"")).0, 400);
    assert!(!dir.join("rejected.jsonl").exists() && !dir.join("dead.jsonl").exists(), "routing wrote nothing");
    api.stop();
}

/// Five replacements sent at once while a client keeps posting: they are applied one at a time
/// (every PUT answered, the last text running), no request is refused (each version takes the
/// socket over from the one before), and every event the `http` source acknowledged is in
/// exactly one version's output.
#[test]
fn racing_replacements_are_serialised_and_lose_no_acknowledged_event() {
    let dir = setup("api-race");
    let port = free_port();
    let out = |v: usize| dir.join(format!("out-{v}.jsonl"));
    std::fs::write(dir.join("flows/ingest.phx"), ingest(port, &out(0))).expect("flow");
    let api = Serve::start(&dir);

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let poster = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let (mut acked, mut refused) = (Vec::new(), 0u32);
            let mut id = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match post_raw(port, &format!("{{\"id\":{id}}}")) {
                    Some(200) => acked.push(id),
                    _ => {
                        refused += 1;
                        std::thread::sleep(Duration::from_millis(5));
                    }
                }
                id += 1;
            }
            (acked, refused)
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    let puts: Vec<_> = (1..=5)
        .map(|v| {
            let (addr, text) = (api.addr.clone(), ingest(port, &out(v)));
            std::thread::spawn(move || {
                let headers = [format!("Authorization: Bearer {WRITE_KEY}")];
                curl_with(&addr, "PUT", "/api/v1/flows/ingest", &headers, Some(text.as_bytes()))
            })
        })
        .collect();
    for p in puts {
        let (status, answer) = p.join().expect("put thread");
        assert_eq!(status, 200, "{answer}");
        let v: Value = serde_json::from_str(&answer).expect("json");
        assert_eq!(v["status"]["state"], "running", "{answer}");
    }
    api.until("the last flow serving", || post_raw(port, "{\"id\":-1}") == Some(200));
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (acked, refused) = poster.join().expect("poster");

    let (_, flow) = api.json("GET", "/api/v1/flows/ingest", None);
    let text = flow["text"].as_str().expect("text").to_string();
    let last = (1..=5).find(|&v| text == ingest(port, &out(v))).expect("one of the texts PUT");
    assert_eq!(flow["status"]["state"], "running", "{flow}");
    assert!(lines(&out(last)).iter().any(|l| l == "{\"id\":-1}"), "the last flow wrote the marker");
    let mut written: Vec<u64> = (0..=5).flat_map(|v| ids_signed(&out(v))).collect();
    written.sort_unstable();
    let before = written.len();
    written.dedup();
    assert_eq!(written.len(), before, "an event written twice");
    let lost: Vec<&u64> = acked.iter().filter(|id| written.binary_search(id).is_err()).collect();
    assert!(lost.is_empty(), "acknowledged but not written: {lost:?}");
    eprintln!("{} events acknowledged, {refused} requests refused during 5 swaps", acked.len());
    assert_eq!(refused, 0, "requests refused or failed during the swaps");
    assert!(acked.len() > 10, "the client kept posting: {} acknowledged, {refused} refused", acked.len());
    // The log shows the swaps one after the other, each make-before-break: the new version
    // started, then the old one drained.
    let log = std::fs::read_to_string(dir.join("phoenix.log")).expect("log");
    let events: Vec<&str> = log
        .lines()
        .filter_map(|l| ["draining the flow", "flow stopped", "flow started"].into_iter().find(|e| l.contains(e)))
        .collect();
    let expected: Vec<&str> = std::iter::once("flow started")
        .chain((0..5).flat_map(|_| ["flow started", "draining the flow", "flow stopped"]))
        .collect();
    assert_eq!(events, expected, "{log}");
    api.stop();
}

/// The ids of a file's events, the marker `-1` left out.
fn ids_signed(path: &Path) -> Vec<u64> {
    lines(path).iter().filter_map(|l| serde_json::from_str::<Value>(l).expect("json")["id"].as_u64()).collect()
}

/// A flow that compiles but cannot start (its port is taken, its input missing) is answered
/// with its failure; a file in the directory that does not compile is `invalid`, and the other
/// flows run.
#[test]
fn flows_that_cannot_start_or_compile_are_reported() {
    let dir = setup("api-failed");
    std::fs::write(dir.join("flows/broken.phx"), "schema E { id: int }\nsource s = nowhere {} as E\n").expect("flow");
    let api = Serve::start(&dir);
    let (status, flow) = api.json("GET", "/api/v1/flows/broken", None);
    assert_eq!(status, 200, "{flow}");
    assert_eq!(flow["status"]["state"], "invalid", "{flow}");
    assert!(flow["status"]["errors"].as_u64().is_some_and(|n| n >= 1), "{flow}");

    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let text = ingest(port, &dir.join("out.jsonl"));
    let (status, answer) = api.json("PUT", "/api/v1/flows/busy", Some(text.as_bytes()));
    assert_eq!(status, 201, "{answer}");
    assert_eq!(answer["status"]["state"], "failed", "{answer}");
    let error = answer["status"]["error"].as_str().expect("error");
    assert!(error.contains(&port.to_string()), "names the address: {error}");

    assert_eq!(curl(&api.addr, "GET", "/ready", None, None).0, 200, "a failed flow does not hold up /ready");
    let missing =
        "schema E { id: int }\nsource f = file { path = \"/nonexistent/in.jsonl\" } as E\nsink s = stdout {}\nf | s\n";
    let (status, answer) = api.json("PUT", "/api/v1/flows/missing", Some(missing.as_bytes()));
    assert_eq!(status, 201, "{answer}");
    assert_eq!(answer["status"]["state"], "failed", "{answer}");
    // A running flow whose new version cannot start is kept, with its text: 409.
    let free = free_port();
    let (status, answer) =
        api.json("PUT", "/api/v1/flows/running", Some(ingest(free, &dir.join("kept.jsonl")).as_bytes()));
    assert_eq!(status, 201, "{answer}");
    let kept = ingest(free, &dir.join("kept.jsonl"));
    let busy = ingest(port, &dir.join("kept.jsonl"));
    let (status, answer) = api.json("PUT", "/api/v1/flows/running", Some(busy.as_bytes()));
    assert_eq!(status, 409, "{answer}");
    assert!(answer["error"].as_str().expect("error").contains("the running flow is kept"), "{answer}");
    let (_, flow) = api.json("GET", "/api/v1/flows/running", None);
    assert_eq!((flow["text"].as_str(), &flow["status"]["state"]), (Some(kept.as_str()), &Value::from("running")));
    post_events(free, 7..8);
    assert_eq!(ids(&dir.join("kept.jsonl")), [7]);

    // A failed flow can be replaced by one that runs.
    drop(taken);
    let (status, answer) = api.json("PUT", "/api/v1/flows/busy", Some(text.as_bytes()));
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["status"]["state"], "running", "{answer}");
    post_events(port, 0..2);
    assert_eq!(ids(&dir.join("out.jsonl")), [0, 1]);
    api.stop();
}

/// The API from Python `requests`: headers curl's helper does not show (`WWW-Authenticate`, the
/// JSON content type), the scheme in lower case, a JSON body, HEAD.
#[test]
fn a_python_requests_client() {
    let dir = setup("api-python");
    let api = Serve::start(&dir);
    // Put there by hand after the start: routing an event names it as skipped.
    std::fs::write(dir.join("flows/broken.phx"), "source g = \n").expect("broken");
    let script = r#"
import os, requests
base = "http://" + os.environ["ADDR"] + "/api/v1"
w = {"Authorization": "Bearer " + os.environ["WRITE_KEY"]}
r = requests.get(base + "/flows")
assert r.status_code == 401, r.status_code
assert r.headers["WWW-Authenticate"] == "Bearer", r.headers
assert r.headers["Content-Type"] == "application/json", r.headers
assert "API key" in r.json()["error"], r.text
flow = "schema E { id: int }\nsource g = generate { count = 2 } as E\nsink s = stdout {}\ng | s\n"
r = requests.put(base + "/flows/py", json={"text": flow}, headers={"authorization": "bearer " + os.environ["WRITE_KEY"]})
assert r.status_code == 201, (r.status_code, r.text)
r = requests.get(base + "/flows/py", headers=w)
assert r.status_code == 200 and r.json()["text"] == flow, r.text
r = requests.head(base + "/flows/py", headers={"Authorization": "Bearer " + os.environ["READ_KEY"]})
assert r.status_code == 200, r.status_code
r = requests.put(base + "/flows/py", data="{", headers=dict(w, **{"Content-Type": "application/json"}))
assert r.status_code == 400 and r.json()["line"] == 1 and r.json()["column"] == 1, r.text
r = requests.post(base + "/route?type=order", json={"id": 7}, headers={"Authorization": "Bearer " + os.environ["READ_KEY"]})
assert r.status_code == 200, (r.status_code, r.text)
src = r.json()["flows"][0]["sources"][0]
assert src["decoded"] and src["sinks"] == [{"sink": "s", "event": {"id": 7, "type": "order"}}], r.text
skipped = r.json()["skipped"]
assert [s["flow"] for s in skipped] == ["broken"] and skipped[0]["reason"].startswith("does not compile"), r.text
r = requests.post(base + "/route", data='{"id": "seven"}', headers=w)
src = r.json()["flows"][0]["sources"][0]
assert r.status_code == 200 and not src["decoded"] and "id" in src["error"] and src["sinks"] == [], r.text
r = requests.delete(base + "/flows/py", headers=w)
assert r.status_code == 204, r.status_code
print("ok")
"#;
    let out = std::process::Command::new("python3")
        .args(["-c", script])
        .env("ADDR", &api.addr)
        .env("READ_KEY", READ_KEY)
        .env("WRITE_KEY", WRITE_KEY)
        .env("NO_PROXY", "*")
        .output()
        .expect("python3");
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "ok",
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    api.stop();
}

/// A POST of JSON with `key`; the status and the answer as JSON.
fn post_json(api: &Serve, key: &str, path: &str, body: &Value) -> (u16, Value) {
    let headers = [format!("Authorization: Bearer {key}"), "Content-Type: application/json".to_string()];
    let (status, text) = curl_with(&api.addr, "POST", path, &headers, Some(body.to_string().as_bytes()));
    (status, serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}")))
}

/// Event definitions: compiled like flows, versioned, imported by a flow from the store's
/// `events/` folder, judged field by field by the decoder, kept across a restart, and not
/// deletable while a flow imports them.
#[test]
fn event_definitions_are_versioned_validated_imported_and_kept() {
    let dir = setup("api-events");
    let api = Serve::start(&dir);
    let v1 = "// who signed up\nschema UserSignup { id: int, email: string, plan: string? }\n";
    let define = |api: &Serve, key: &str, schema: &str| {
        post_json(api, key, "/api/v1/events", &serde_json::json!({"name": "UserSignup", "schema": schema}))
    };
    let (status, def) = define(&api, WRITE_KEY, v1);
    assert_eq!(status, 201, "{def}");
    assert_eq!((def["id"].as_str(), def["version"].as_u64()), (Some("UserSignup-v1"), Some(1)), "{def}");
    assert_eq!(def["validate"], "/api/v1/events/UserSignup-v1/validate");
    assert_eq!(def["import"], "events/UserSignup.phx");
    assert_eq!(define(&api, WRITE_KEY, v1).0, 200, "the same text again is the same version");
    assert_eq!(define(&api, READ_KEY, v1).0, 403, "defining needs the write scope");

    // The compiler's diagnostics, in the flows' shape; texts that are no definition of the name.
    let (status, answer) = define(&api, WRITE_KEY, "schema UserSignup {\n  id: innt\n}\n");
    assert_eq!(status, 400, "{answer}");
    let d = &answer["diagnostics"][0];
    assert_eq!((d["severity"].as_str(), d["line"].as_u64(), d["column"].as_u64()), (Some("error"), Some(2), Some(7)));
    assert!(d["code"].as_str().is_some_and(|c| c.starts_with('E')) && d["help"].is_string(), "{answer}");
    assert!(d["file"].as_str().is_some_and(|f| f.ends_with("events/UserSignup.phx")), "{answer}");
    let (status, answer) = define(&api, WRITE_KEY, "schema Other { id: int }\n");
    assert_eq!(status, 400, "{answer}");
    assert!(answer["error"].as_str().is_some_and(|e| e.contains("schema UserSignup")), "{answer}");
    let with_source = format!("{v1}source s = generate {{}} as UserSignup\n");
    assert_eq!(define(&api, WRITE_KEY, &with_source).0, 400);
    let (status, _) =
        post_json(&api, WRITE_KEY, "/api/v1/events", &serde_json::json!({"name": "no-dash", "schema": v1}));
    assert_eq!(status, 400);

    // Field by field, with a read key.
    let validate = |id: &str, event: &str| -> Value {
        let (status, text) =
            api.call(Some(READ_KEY), "POST", &format!("/api/v1/events/{id}/validate"), Some(event.as_bytes()));
        assert_eq!(status, 200, "{text}");
        serde_json::from_str(&text).expect("json")
    };
    let bad = validate("UserSignup-v1", r#"{"id": "seven", "ref": "ad", "utm": 1}"#);
    assert_eq!(bad["valid"], false, "{bad}");
    // The whole event's verdict is the decoder's, with its reason; the fields say the rest.
    assert_eq!(bad["error"], "missing required field `email`", "{bad}");
    let fields: Vec<(&str, &str, &str)> = bad["fields"]
        .as_array()
        .expect("fields")
        .iter()
        .map(|f| {
            (
                f["field"].as_str().expect("field"),
                f["expected"].as_str().expect("type"),
                f["status"].as_str().expect("status"),
            )
        })
        .collect();
    assert_eq!(fields, [("id", "int", "wrong_type"), ("email", "string", "missing"), ("plan", "string?", "absent")]);
    assert_eq!(bad["undeclared"], serde_json::json!(["ref", "utm"]));
    let good = validate("UserSignup-v1", r#"{"id": 7, "email": "a@example.com", "plan": "pro"}"#);
    assert_eq!((good["valid"].clone(), good["error"].clone()), (Value::Bool(true), Value::Null), "{good}");
    let broken = validate("UserSignup-v1", r#"{"id": 7,}"#);
    assert_eq!(broken["valid"], false);
    assert!(broken["error"].as_str().is_some_and(|e| e.starts_with("invalid JSON at byte 9")), "{broken}");
    assert_eq!(api.call(Some(READ_KEY), "POST", "/api/v1/events/UserSignup-v9/validate", Some(b"{}")).0, 404);

    // A flow imports the definition by its path in the store.
    let out = dir.join("signups.jsonl");
    let flow = format!(
        "import \"events/UserSignup.phx\"\n\
         source g = generate {{ count = 2 }} as UserSignup\n\
         sink out = file {{ path = \"{}\" }}\n\
         g | out\n",
        out.display()
    );
    let (status, answer) = api.json("PUT", "/api/v1/flows/signups", Some(flow.as_bytes()));
    assert_eq!(status, 201, "{answer}");
    api.until("the generated signups", || lines(&out).len() == 2);
    let written: Value = serde_json::from_str(&lines(&out)[0]).expect("json");
    assert!(written["id"].is_i64() && written["email"].is_string(), "{written}");

    // A new version; the old one stays readable by its id.
    let v2 = "schema UserSignup { id: int, email: string, plan: string?, referrer: string? }\n";
    let (status, def) = define(&api, WRITE_KEY, v2);
    assert_eq!((status, def["id"].as_str()), (201, Some("UserSignup-v2")), "{def}");
    let (_, list) = api.json("GET", "/api/v1/events?name=UserSignup", None);
    let versions: Vec<(String, bool)> = list["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|d| (d["id"].as_str().expect("id").to_string(), d["current"].as_bool().expect("current")))
        .collect();
    assert_eq!(versions, [("UserSignup-v1".to_string(), false), ("UserSignup-v2".to_string(), true)]);
    let (status, old) = api.json("GET", "/api/v1/events/UserSignup-v1", None);
    assert_eq!((status, old["schema"].as_str()), (200, Some(v1)));
    assert_eq!(std::fs::read_to_string(dir.join("flows/events/UserSignup.phx")).expect("current"), v2);
    let referred = validate("UserSignup-v2", r#"{"id": 1, "email": "e", "referrer": 5}"#);
    assert_eq!(referred["fields"][3]["status"], "wrong_type", "{referred}");
    assert_eq!(validate("UserSignup-v1", r#"{"id": 1, "email": "e", "referrer": 5}"#)["valid"], true);

    // The current version cannot go while a flow imports it; an old one can.
    assert_eq!(api.call(Some(READ_KEY), "DELETE", "/api/v1/events/UserSignup-v2", None).0, 403);
    let (status, answer) = api.json("DELETE", "/api/v1/events/UserSignup-v2", None);
    assert_eq!(status, 409, "{answer}");
    assert_eq!(answer["flows"], serde_json::json!(["signups"]));
    assert!(answer["error"].as_str().is_some_and(|e| e.contains("signups")), "{answer}");
    assert_eq!(api.json("DELETE", "/api/v1/events/UserSignup-v1", None).0, 204);
    assert_eq!(api.json("GET", "/api/v1/events/UserSignup-v1", None).0, 404);
    api.stop();

    // A restart keeps the definitions, and the flow that imports one starts again.
    let api = Serve::start(&dir);
    let (_, list) = api.json("GET", "/api/v1/events", None);
    let ids: Vec<&str> =
        list["events"].as_array().expect("events").iter().map(|d| d["id"].as_str().expect("id")).collect();
    assert_eq!(ids, ["UserSignup-v2"], "{list}");
    let (_, flow) = api.json("GET", "/api/v1/flows/signups", None);
    assert_ne!(flow["status"]["state"], "invalid", "{flow}");
    assert_eq!(api.json("DELETE", "/api/v1/flows/signups", None).0, 204);
    assert_eq!(api.json("DELETE", "/api/v1/events/UserSignup-v2", None).0, 204, "no flow imports it now");
    assert!(!dir.join("flows/events/UserSignup.phx").exists());
    let (_, list) = api.json("GET", "/api/v1/events", None);
    assert_eq!(list["events"], serde_json::json!([]));
    api.stop();
}

/// `If-Match` on PUT and DELETE: the flow's `ETag` lets the change through, another tag (or a
/// flow that does not exist) is 412 Precondition Failed and changes nothing.
#[test]
fn if_match_guards_replacing_and_deleting_a_flow() {
    let dir = setup("api-if-match");
    let api = Serve::start(&dir);
    let text = |n: u32| {
        format!("schema E {{ id: int }}\nsource g = generate {{ count = {n} }} as E\nsink s = stdout {{}}\ng | s\n")
    };
    let call = |method: &str, if_match: Option<&str>, body: Option<&str>| -> (u16, Value) {
        let mut headers = vec![format!("Authorization: Bearer {WRITE_KEY}")];
        headers.extend(if_match.map(|m| format!("If-Match: {m}")));
        let (status, answer) = curl_with(&api.addr, method, "/api/v1/flows/guarded", &headers, body.map(str::as_bytes));
        (status, if answer.is_empty() { Value::Null } else { serde_json::from_str(&answer).expect("json") })
    };
    // No flow yet: any tag, even `*`, fails.
    assert_eq!(call("PUT", Some("*"), Some(&text(1))).0, 412);
    let (status, created) = call("PUT", None, Some(&text(1)));
    assert_eq!(status, 201, "{created}");
    let tag1 = created["etag"].as_str().expect("etag").to_string();
    assert!(tag1.starts_with('"') && tag1.len() == 34, "{tag1}");
    let (_, got) = call("GET", None, None);
    assert_eq!(got["etag"], tag1.as_str(), "GET and PUT agree");

    let (status, answer) = call("PUT", Some("\"0000\""), Some(&text(2)));
    assert_eq!(status, 412, "{answer}");
    assert!(answer["error"].as_str().is_some_and(|e| e.contains(&tag1)), "names the current tag: {answer}");
    assert_eq!(call("GET", None, None).1["text"], text(1).as_str(), "unchanged");
    // Weak tags never match (If-Match compares strongly).
    assert_eq!(call("PUT", Some(&format!("W/{tag1}")), Some(&text(2))).0, 412);
    let (status, replaced) = call("PUT", Some(&format!("\"1111\", {tag1}")), Some(&text(2)));
    assert_eq!(status, 200, "{replaced}");
    let tag2 = replaced["etag"].as_str().expect("etag").to_string();
    assert_ne!(tag1, tag2);
    // A stale tag: someone else changed it meanwhile.
    assert_eq!(call("DELETE", Some(&tag1), None).0, 412);
    assert!(dir.join("flows/guarded.phx").exists());
    assert_eq!(call("DELETE", Some(&tag2), None).0, 204);
    assert_eq!(call("DELETE", Some("*"), None).0, 412, "nothing to match any more");
    api.stop();
}

/// docs/openapi.yaml against real answers: every answer of a run through the routes validates
/// against the schema the document gives for its route and status (Python `jsonschema`), and
/// every documented operation is served (a wrong method is 405).
#[test]
fn real_answers_match_the_openapi_document() {
    let dir = setup("api-openapi");
    let api = Serve::start(&dir);
    let script = r#"
import os, json, sys, requests, yaml, jsonschema
doc = yaml.safe_load(open(os.environ["DOC"]))
base = "http://" + os.environ["ADDR"]
w = {"Authorization": "Bearer " + os.environ["WRITE_KEY"]}
checked = []
def check(method, template, path, status, **kw):
    headers = kw.pop("headers", w)
    r = requests.request(method, base + path, headers=headers, **kw)
    assert r.status_code == status, (method, path, r.status_code, r.text)
    op = doc["paths"][template][method.lower()]
    resp = op["responses"][str(status)]
    if "$ref" in resp:
        resp = doc["components"]["responses"][resp["$ref"].split("/")[-1]]
    if "content" in resp:
        schema = dict(resp["content"]["application/json"]["schema"])
        schema["components"] = doc["components"]
        jsonschema.Draft202012Validator(schema).validate(r.json())
    else:
        assert r.content == b"", r.text
    checked.append((method, template, status))
    return r
flow = "schema E { id: int }\nsource g = generate { count = 1 } as E\nsink s = stdout {}\ng | s\n"
check("PUT", "/api/v1/flows/{name}", "/api/v1/flows/doc", 201, data=flow)
r = check("GET", "/api/v1/flows/{name}", "/api/v1/flows/doc", 200)
assert r.headers["ETag"] == r.json()["etag"], r.headers
check("PUT", "/api/v1/flows/{name}", "/api/v1/flows/doc", 200, data=flow, headers=dict(w, **{"If-Match": r.headers["ETag"]}))
check("PUT", "/api/v1/flows/{name}", "/api/v1/flows/doc", 412, data=flow, headers=dict(w, **{"If-Match": '"x"'}))
check("PUT", "/api/v1/flows/{name}", "/api/v1/flows/doc", 400, data="source g = \n")
check("GET", "/api/v1/flows", "/api/v1/flows", 200)
check("GET", "/api/v1/flows/{name}", "/api/v1/flows/nope", 404)
check("GET", "/api/v1/routes", "/api/v1/routes", 200)
check("POST", "/api/v1/route", "/api/v1/route?type=order", 200, json={"id": 1})
schema = "schema Signup { id: int }\n"
check("POST", "/api/v1/events", "/api/v1/events", 201, json={"name": "Signup", "schema": schema})
check("POST", "/api/v1/events", "/api/v1/events", 200, json={"name": "Signup", "schema": schema})
check("POST", "/api/v1/events", "/api/v1/events", 400, json={"name": "Signup", "schema": "schema Signup { id: nope }"})
check("GET", "/api/v1/events", "/api/v1/events?name=Signup", 200)
check("GET", "/api/v1/events/{id}", "/api/v1/events/Signup-v1", 200)
check("POST", "/api/v1/events/{id}/validate", "/api/v1/events/Signup-v1/validate", 200, json={"id": "x", "y": 1})
check("POST", "/api/v1/events/{id}/validate", "/api/v1/events/Signup-v1/validate", 200, json={"id": 1})
check("POST", "/api/v1/events/{id}/validate", "/api/v1/events/Signup-v9/validate", 404, json={})
imports = "import \"events/Signup.phx\"\nsource g = generate { count = 1 } as Signup\nsink s = stdout {}\ng | s\n"
check("PUT", "/api/v1/flows/{name}", "/api/v1/flows/importer", 201, data=imports)
check("DELETE", "/api/v1/events/{id}", "/api/v1/events/Signup-v1", 409)
check("DELETE", "/api/v1/flows/{name}", "/api/v1/flows/importer", 204)
check("DELETE", "/api/v1/events/{id}", "/api/v1/events/Signup-v1", 204)
check("DELETE", "/api/v1/flows/{name}", "/api/v1/flows/doc", 204)
check("DELETE", "/api/v1/flows/{name}", "/api/v1/flows/doc", 404)
# Every documented operation is served; other methods on a documented path are 405.
for template, item in doc["paths"].items():
    path = template.replace("{name}", "doc").replace("{id}", "Signup-v1")
    for method in ["GET", "PUT", "POST", "DELETE", "PATCH"]:
        r = requests.request(method, base + path, headers=w, data="{}")
        documented = method.lower() in item
        assert (r.status_code != 405) == documented, (method, template, r.status_code, r.text)
print(json.dumps(len(checked)))
"#;
    let out = std::process::Command::new("python3")
        .args(["-c", script])
        .env("ADDR", &api.addr)
        .env("WRITE_KEY", WRITE_KEY)
        .env("DOC", Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/openapi.yaml"))
        .env("NO_PROXY", "*")
        .output()
        .expect("python3");
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "23",
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    api.stop();
}

/// A self-signed certificate for 127.0.0.1 made with the openssl CLI: `(cert.pem, key.pem)`.
fn self_signed(dir: &Path) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let out = std::process::Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1"])
        .args(["-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    (cert, key)
}

/// curl over HTTPS, trusting only `ca`: the status (0 when no HTTP answer came) and the body.
fn curl_tls(ca: &Path, url: &str, method: &str, headers: &[String], body: Option<&str>) -> (u16, String) {
    let mut c = std::process::Command::new("/usr/bin/curl");
    c.args(["-sS", "--noproxy", "*", "--max-time", "60", "-X", method, "-w", "\n%{http_code}", "--cacert"]).arg(ca);
    for h in headers {
        c.args(["-H", h]);
    }
    if let Some(b) = body {
        c.args(["--data-binary", b]);
    }
    let out = c.arg(url).output().expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", text.as_str()));
    (status.trim().parse().unwrap_or(0), format!("{body}{}", String::from_utf8_lossy(&out.stderr)))
}

/// `phoenix serve --tls-cert --tls-key` serves the API over HTTPS only; an `http` source with
/// `tls_cert`/`tls_key` and `api_keys` takes events over HTTPS from write keys only, and a
/// rewritten key file takes effect without a restart. Real curl and Python `requests`, both
/// verifying the certificate (no `-k`).
#[test]
fn https_for_the_api_and_an_http_source_with_api_keys() {
    let dir = setup("api-tls");
    let (cert, key) = self_signed(&dir);
    let args = ["--tls-cert".to_string(), cert.display().to_string(), "--tls-key".into(), key.display().to_string()];
    let api = Serve::spawn_with(&dir, &[], &args);
    let base = format!("https://{}", api.addr);
    let auth = |k: &str| vec![format!("Authorization: Bearer {k}")];
    api.until("/ready over https", || curl_tls(&cert, &format!("{base}/ready"), "GET", &[], None).0 == 200);
    let (status, answer) = curl_tls(&cert, &format!("{base}/api/v1/flows"), "GET", &auth(READ_KEY), None);
    assert_eq!((status, answer.as_str()), (200, r#"{"flows":[]}"#));
    let (status, _) = curl_tls(&cert, &format!("http://{}/api/v1/flows", api.addr), "GET", &auth(READ_KEY), None);
    assert_ne!(status, 200, "plain HTTP is not served beside HTTPS");
    // A client that trusts another certificate stops at the handshake.
    std::fs::create_dir_all(dir.join("other")).expect("dir");
    let (other, _) = self_signed(&dir.join("other"));
    let (status, answer) = curl_tls(&other, &format!("{base}/health"), "GET", &[], None);
    assert_eq!(status, 0, "{answer}");
    assert!(answer.contains("certificate"), "{answer}");

    // The source: its own key file, HTTPS with the same certificate.
    let port = free_port();
    let out = dir.join("events.jsonl");
    let source_keys = dir.join("ingest-keys");
    std::fs::write(&source_keys, "# producers\npost-0001 write\nlook-0001 read\n").expect("keys");
    let flow = format!(
        "schema E {{ id: int }}\n\
         source api = http {{ address = \"127.0.0.1:{port}\", path = \"/events\", api_keys = \"{}\", \
         tls_cert = \"{}\", tls_key = \"{}\" }} as E\n\
         sink out = file {{ path = \"{}\" }}\n\
         api | out\n",
        source_keys.display(),
        cert.display(),
        key.display(),
        out.display()
    );
    let (status, answer) =
        curl_tls(&cert, &format!("{base}/api/v1/flows/ingest"), "PUT", &auth(WRITE_KEY), Some(&flow));
    assert_eq!(status, 201, "{answer}");
    assert!(answer.contains("running"), "{answer}");
    let events = format!("https://127.0.0.1:{port}/events");
    let post = |key: Option<&str>, body: &str| {
        curl_tls(&cert, &events, "POST", &key.map(auth).unwrap_or_default(), Some(body))
    };
    let (status, answer) = post(None, "{\"id\": 1}");
    assert_eq!(status, 401, "{answer}");
    assert!(answer.contains("API key"), "{answer}");
    assert_eq!(post(Some("post-0002"), "{\"id\": 1}").0, 401, "a wrong key");
    assert_eq!(post(Some("post-000"), "{\"id\": 1}").0, 401, "a prefix of a key");
    assert_eq!(post(Some("look-0001"), "{\"id\": 1}").0, 403, "a read key");
    let (status, answer) = post(Some("post-0001"), "{\"id\": 1}\n{\"id\": 2}\n");
    assert_eq!((status, answer.as_str()), (200, r#"{"accepted":2,"rejected":0,"errors":[]}"#));
    assert_eq!(ids(&out), [1, 2]);
    let (status, _) =
        curl_tls(&cert, &format!("http://127.0.0.1:{port}/events"), "POST", &auth("post-0001"), Some("{\"id\": 9}"));
    assert_ne!(status, 200, "the source speaks HTTPS only");

    // A new key file: the new key in, the old one out, no restart.
    std::fs::write(&source_keys, "post-0002 write\n").expect("keys");
    api.until("the source's new key", || post(Some("post-0002"), "{\"id\": 3}").0 == 200);
    assert_eq!(post(Some("post-0001"), "{\"id\": 4}").0, 401, "the old key is gone");

    // Python `requests`, verifying the certificate: the API and the source.
    let script = r#"
import os, requests
ca = os.environ["CA"]
r = requests.get("https://" + os.environ["ADDR"] + "/api/v1/flows/ingest", headers={"Authorization": "Bearer " + os.environ["READ_KEY"]}, verify=ca)
assert r.status_code == 200 and r.json()["status"]["state"] == "running", r.text
r = requests.post(os.environ["EVENTS"], json=[{"id": 5}, {"id": 6}], headers={"Authorization": "Bearer post-0002"}, verify=ca)
assert r.status_code == 200 and r.json()["accepted"] == 2, r.text
r = requests.post(os.environ["EVENTS"], json={"id": 7}, verify=ca)
assert r.status_code == 401 and r.headers["WWW-Authenticate"] == "Bearer", (r.status_code, r.headers)
print("ok")
"#;
    let py = std::process::Command::new("python3")
        .args(["-c", script])
        .env("ADDR", &api.addr)
        .env("EVENTS", &events)
        .env("CA", &cert)
        .env("READ_KEY", READ_KEY)
        .env("NO_PROXY", "*")
        .output()
        .expect("python3");
    assert!(
        py.status.success() && String::from_utf8_lossy(&py.stdout).trim() == "ok",
        "{}{}",
        String::from_utf8_lossy(&py.stdout),
        String::from_utf8_lossy(&py.stderr)
    );
    assert_eq!(ids(&out), [1, 2, 3, 5, 6]);
    // Deleted: the HTTPS listener closes with the flow.
    let (status, answer) = curl_tls(&cert, &format!("{base}/api/v1/flows/ingest"), "DELETE", &auth(WRITE_KEY), None);
    assert_eq!(status, 204, "{answer}");
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err(), "the source's port is closed");
    let log = std::fs::read_to_string(dir.join("phoenix.log")).unwrap_or_default();
    assert!(!log.contains("post-000"), "a source key was logged:\n{log}");
    api.stop();
}
