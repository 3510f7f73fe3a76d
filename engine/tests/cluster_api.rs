//! The control-plane API served by `phoenix controller --api-address` over PhoenixFlow
//! resources (issue 12), on a real Kubernetes API server: the manifests installed with kubectl,
//! the real `phoenix controller` binary running as its ServiceAccount with exactly the shipped
//! RBAC, curl as the client. One server is shared by every step (starting one takes ~7 s), so
//! the steps run in order in one test. Pods never run (there is no kubelet): the test marks
//! them ready as a kubelet would.
//!
//! Without the server binaries (`scripts/kube build`) this fails; it never skips.

mod support;

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use support::kube::KubeServer;
use support::{Guard, curl_with, free_port, phoenix, temp};

const LIMIT: Duration = Duration::from_secs(60);
/// The commerce example's `deploy { namespace }`, where the API serves.
const NS: &str = "commerce";
const WRITE_KEY: &str = "w-2f9c1d7e";
const READ_KEY: &str = "r-8a4b6c0f";

const FLOW: &str = "schema E { id: int }\nsource g = generate { count = 3 } as E\nsink s = stdout {}\ng | s\n";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the workspace").to_path_buf()
}

/// `phoenix controller` as the ServiceAccount, serving the API; killed on drop.
struct Controller {
    _guard: Guard,
    api: String,
    log: PathBuf,
    /// Every answer: `{method, template, status, body}`, checked against docs/openapi.yaml.
    answers: std::cell::RefCell<Vec<Value>>,
}

/// The OpenAPI path template of a request path.
fn template(path: &str) -> String {
    let path = path.split('?').next().unwrap_or(path);
    let parts: Vec<&str> = path.split('/').collect();
    match parts.as_slice() {
        ["", "api", "v1", "flows", _] => "/api/v1/flows/{name}".into(),
        ["", "api", "v1", "events", _] => "/api/v1/events/{id}".into(),
        ["", "api", "v1", "events", _, "validate"] => "/api/v1/events/{id}/validate".into(),
        _ => path.to_string(),
    }
}

impl Controller {
    fn start(kubeconfig: &Path, dir: &Path, keys: &Path) -> Controller {
        let (health, api) = (free_port(), free_port());
        let log = dir.join("controller-api.log");
        let file = std::fs::File::create(&log).expect("log");
        let child = phoenix()
            .env("KUBECONFIG", kubeconfig)
            .env_remove("POD_NAME")
            .env_remove("POD_NAMESPACE")
            .env_remove("PHOENIX_API_NAMESPACE")
            .args(["controller", "--no-leader-election", "-v", "--address", &format!("127.0.0.1:{health}")])
            .args(["--api-address", &format!("127.0.0.1:{api}"), "--api-namespace", NS, "--api-keys"])
            .arg(keys)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("spawn phoenix controller");
        let c = Controller {
            _guard: Guard::new(child),
            api: format!("127.0.0.1:{api}"),
            log,
            answers: std::cell::RefCell::new(Vec::new()),
        };
        let start = Instant::now();
        while std::net::TcpStream::connect(&c.api).is_err() {
            assert!(start.elapsed() < LIMIT, "the controller's API never listened:\n{}", c.log());
            std::thread::sleep(Duration::from_millis(100));
        }
        c
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// One call with curl: status and body as JSON (`null` for an empty body).
    fn call(&self, key: Option<&str>, method: &str, path: &str, headers: &[&str], body: Option<&str>) -> (u16, Value) {
        let mut all: Vec<String> = key.map(|k| format!("Authorization: Bearer {k}")).into_iter().collect();
        all.extend(headers.iter().map(|h| h.to_string()));
        let (status, text) = curl_with(&self.api, method, path, &all, body.map(str::as_bytes));
        let v = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{method} {path}: not JSON ({e}): {text}\n{}", self.log()))
        };
        let answer = serde_json::json!({"method": method, "template": template(path), "status": status, "body": v});
        self.answers.borrow_mut().push(answer);
        (status, v)
    }

    fn get(&self, path: &str) -> (u16, Value) {
        self.call(Some(READ_KEY), "GET", path, &[], None)
    }

    fn put(&self, name: &str, headers: &[&str], text: &str) -> (u16, Value) {
        self.call(Some(WRITE_KEY), "PUT", &format!("/api/v1/flows/{name}"), headers, Some(text))
    }

    /// Every answer so far against the schema docs/openapi.yaml gives for its route and status
    /// (Python `jsonschema`, as engine/tests/api.rs checks `phoenix serve`'s); 401 and 403 are
    /// the document's global `security`. The number of answers checked against a schema.
    fn check_openapi(&self, dir: &Path) -> usize {
        let file = dir.join("answers.json");
        std::fs::write(&file, serde_json::to_vec(&*self.answers.borrow()).expect("json")).expect("write");
        let script = r#"
import json, os, yaml, jsonschema
doc = yaml.safe_load(open(os.environ["DOC"]))
n = 0
for a in json.load(open(os.environ["ANSWERS"])):
    op = doc["paths"][a["template"]][a["method"].lower()]
    resp = op["responses"].get(str(a["status"]))
    if resp is None:
        assert a["status"] in (401, 403), ("undocumented status", a)
        continue
    if "$ref" in resp:
        resp = doc["components"]["responses"][resp["$ref"].split("/")[-1]]
    if "content" in resp:
        schema = dict(resp["content"]["application/json"]["schema"])
        schema["components"] = doc["components"]
        jsonschema.Draft202012Validator(schema).validate(a["body"])
    else:
        assert a["body"] is None, a
    n += 1
print(n)
"#;
        let out = std::process::Command::new("python3")
            .args(["-c", script])
            .env("DOC", repo().join("docs/openapi.yaml"))
            .env("ANSWERS", &file)
            .output()
            .expect("python3");
        let said = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{said}{}", String::from_utf8_lossy(&out.stderr));
        said.trim().parse().expect("a count")
    }

    fn until(&self, what: &str, mut f: impl FnMut() -> bool) {
        let start = Instant::now();
        while !f() {
            assert!(start.elapsed() < LIMIT, "timed out waiting for {what}:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

#[test]
fn the_controller_serves_the_api_over_phoenixflows() {
    let started = Instant::now();
    let k = KubeServer::start();
    k.kubectl(&["apply", "-f", repo().join("manifests").to_str().expect("utf-8")]);
    k.kubectl(&["wait", "--for=condition=Established", "--timeout=60s", "crd/phoenixflows.phoenix.dev"]);
    k.kubectl(&["create", "namespace", NS]);
    let sa = k.service_account_kubeconfig("phoenix-system", "phoenix-controller");
    let dir = temp("cluster-api");
    let keys = dir.join("keys");
    std::fs::write(&keys, format!("{WRITE_KEY} write\n{READ_KEY} read\n")).expect("keys");
    let c = Controller::start(&sa, &dir, &keys);
    eprintln!("[{:>5.1?}] installed, controller serving the API as its ServiceAccount", started.elapsed());

    // Keys: none, unknown, read-only for a change.
    let (status, answer) = c.call(None, "GET", "/api/v1/flows", &[], None);
    assert_eq!(status, 401, "{answer}");
    assert_eq!(c.call(Some("nope"), "GET", "/api/v1/flows", &[], None).0, 401);
    let (status, answer) = c.call(Some(READ_KEY), "PUT", "/api/v1/flows/gen", &[], Some(FLOW));
    assert_eq!(status, 403, "{answer}");
    assert_eq!(c.call(Some(READ_KEY), "DELETE", "/api/v1/flows/gen", &[], None).0, 403);
    assert!(!k.exists(&["-n", NS, "phoenixflow", "gen"]), "a refused PUT applied nothing");
    let (status, answer) = c.get("/api/v1/flows");
    assert_eq!((status, answer), (200, serde_json::json!({"flows": []})));

    // PUT: the PhoenixFlow exists, applied by the API's field manager; the controller makes
    // its Deployment; the status follows the pods.
    let (status, put) = c.put("gen", &[], FLOW);
    assert_eq!(status, 201, "{put}\n{}", c.log());
    let etag = put["etag"].as_str().expect("etag").to_string();
    let pf = k.get_json(&["-n", NS, "phoenixflow", "gen", "--show-managed-fields"]);
    assert_eq!(pf["spec"]["main"], "gen.phx");
    assert_eq!(pf["spec"]["files"]["gen.phx"], FLOW);
    let managers: Vec<&str> = pf["metadata"]["managedFields"]
        .as_array()
        .expect("managedFields")
        .iter()
        .filter_map(|m| m["manager"].as_str())
        .collect();
    assert!(managers.contains(&"phoenix-api"), "{managers:?}");
    k.wait_for("the controller to create gen's Deployment", LIMIT, || k.exists(&["-n", NS, "deployment", "gen"]));
    c.until("gen Ready through the API", || {
        k.mark_pods_ready(NS, "app.kubernetes.io/instance=gen");
        let (_, f) = c.get("/api/v1/flows/gen");
        f["status"]["state"] == "ready"
    });
    let (status, got) = c.get("/api/v1/flows/gen");
    assert_eq!(status, 200, "{got}");
    assert_eq!((got["text"].as_str(), got["etag"].as_str()), (Some(FLOW), Some(etag.as_str())));
    let s = &got["status"];
    assert_eq!(
        (s["phase"].as_str(), s["replicas"].as_i64(), s["readyReplicas"].as_i64()),
        (Some("Ready"), Some(1), Some(1))
    );
    assert_eq!(etag, format!("\"{}\"", s["hash"].as_str().expect("hash")), "the ETag is the flow hash the pods run");
    let types: Vec<&str> =
        s["conditions"].as_array().expect("conditions").iter().filter_map(|c| c["type"].as_str()).collect();
    assert_eq!(types, ["Ready", "Progressing", "Degraded"]);
    let (_, list) = c.get("/api/v1/flows");
    assert_eq!(list["flows"][0]["name"], "gen");
    assert_eq!(list["flows"][0]["status"]["state"], "ready");
    eprintln!("[{:>5.1?}] PUT applied, the controller deployed it, GET shows Ready", started.elapsed());

    // An invalid flow: 400 with the compiler's diagnostics, the resource untouched.
    let version = |k: &KubeServer| k.get_json(&["-n", NS, "phoenixflow", "gen"])["metadata"]["resourceVersion"].clone();
    let before = version(&k);
    let (status, answer) = c.put("gen", &[], "schema E { id: int }\nsource s = nowhere {} as E\n");
    assert_eq!(status, 400, "{answer}");
    let d = &answer["diagnostics"][0];
    assert_eq!((d["severity"].as_str(), d["line"].as_i64()), (Some("error"), Some(2)), "{answer}");
    assert_eq!(d["file"], "gen.phx", "{answer}");
    assert_eq!(version(&k), before, "an invalid PUT changed the resource");

    // If-Match: another version → 412, nothing applied; the current one → applied.
    let changed = FLOW.replace("count = 3", "count = 4");
    let (status, answer) = c.put("gen", &["If-Match: \"0123\""], &changed);
    assert_eq!(status, 412, "{answer}");
    assert_eq!(version(&k), before, "a failed precondition changed the resource");
    let (status, answer) = c.put("gen", &[&format!("If-Match: {etag}")], &changed);
    assert_eq!(status, 200, "{answer}");
    let new_etag = answer["etag"].as_str().expect("etag").to_string();
    assert_ne!(new_etag, etag);
    assert_eq!(k.get_json(&["-n", NS, "phoenixflow", "gen"])["spec"]["files"]["gen.phx"], changed.as_str());
    assert_eq!(c.put("gen", &[&format!("If-Match: {etag}")], FLOW).0, 412, "the old tag no longer matches");

    // A flow made invalid behind the API's back (kubectl): Degraded, with the diagnostics.
    let broken = serde_json::json!({
        "apiVersion": "phoenix.dev/v1alpha1", "kind": "PhoenixFlow",
        "metadata": {"name": "broken", "namespace": NS},
        "spec": {"main": "broken.phx", "files": {"broken.phx": "source s = nowhere {} as Missing\n"}, "replicas": 1},
    });
    k.apply(&broken.to_string());
    c.until("broken Degraded through the API", || c.get("/api/v1/flows/broken").1["status"]["state"] == "degraded");
    let (_, got) = c.get("/api/v1/flows/broken");
    let diagnostics = got["status"]["diagnostics"].as_array().expect("diagnostics of a Degraded flow");
    assert!(!diagnostics.is_empty() && diagnostics.iter().all(|d| d["file"] == "broken.phx"), "{got}");
    assert!(got["status"]["error"].as_str().is_some_and(|e| e.contains("error[")), "{got}");
    eprintln!("[{:>5.1?}] 400, 412 and Degraded as expected", started.elapsed());

    // Routes over a stored flow with imports: the commerce example as `phoenix submit` stores
    // it (its files in the resource), compiled here, run nowhere.
    let out = phoenix()
        .env("KUBECONFIG", k.kubeconfig())
        .current_dir(repo())
        .args(["submit", "examples/commerce.phx"])
        .stdin(Stdio::null())
        .output()
        .expect("phoenix submit");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (status, routes) = c.get("/api/v1/routes?type=order&flow=commerce");
    assert_eq!(status, 200, "{routes}");
    let arms: Vec<(String, Vec<String>)> = routes["routes"]
        .as_array()
        .expect("routes")
        .iter()
        .map(|a| {
            let sinks =
                a["sinks"].as_array().expect("sinks").iter().map(|s| s["name"].as_str().expect("name").to_string());
            (a["condition"].as_str().expect("condition").to_string(), sinks.collect())
        })
        .collect();
    let arm = |cond: &str, sinks: &[&str]| (cond.to_string(), sinks.iter().map(|s| s.to_string()).collect::<Vec<_>>());
    assert_eq!(
        arms,
        [
            arm("when type not in ('product', 'order', 'supplier')", &["rejected"]),
            arm("else", &[]),
            arm("'order'", &["orders"]),
        ],
        "{routes}"
    );
    assert_eq!(c.get("/api/v1/routes?flow=nope").0, 404);
    let order = r#"{"id": "o-1", "type": "order", "ts": "2026-03-01T10:00:00Z", "amount": 100, "coupon": "X"}"#;
    let (status, routed) = c.call(Some(READ_KEY), "POST", "/api/v1/route?flow=commerce&source=api", &[], Some(order));
    assert_eq!(status, 200, "{routed}");
    let source = &routed["flows"][0]["sources"][0];
    let sinks: Vec<&str> =
        source["sinks"].as_array().expect("sinks").iter().filter_map(|s| s["sink"].as_str()).collect();
    assert_eq!(sinks, ["orders", "search"], "{routed}");
    // Every stored flow is traced or skipped: `broken` does not compile.
    let (_, all) = c.call(Some(READ_KEY), "POST", "/api/v1/route", &[], Some(order));
    let skipped: Vec<&str> =
        all["skipped"].as_array().expect("skipped").iter().filter_map(|s| s["flow"].as_str()).collect();
    assert_eq!(skipped, ["broken"], "{all}");

    // Event definitions are `phoenix serve`'s: a clear 501.
    let (status, answer) = c.get("/api/v1/events");
    assert_eq!(status, 501, "{answer}");
    assert!(answer["error"].as_str().is_some_and(|e| e.contains("phoenix serve")), "{answer}");
    eprintln!("[{:>5.1?}] routes and route over the stored commerce example", started.elapsed());

    // DELETE: If-Match first, then the resource goes (and its objects with it, by owner).
    let (status, answer) = c.call(Some(WRITE_KEY), "DELETE", "/api/v1/flows/gen", &["If-Match: \"0123\""], None);
    assert_eq!(status, 412, "{answer}");
    assert!(k.exists(&["-n", NS, "phoenixflow", "gen"]));
    let (status, answer) =
        c.call(Some(WRITE_KEY), "DELETE", "/api/v1/flows/gen", &[&format!("If-Match: {new_etag}")], None);
    assert_eq!(status, 204, "{answer}");
    k.wait_for("gen deleted", LIMIT, || !k.exists(&["-n", NS, "phoenixflow", "gen"]));
    assert_eq!(c.call(Some(WRITE_KEY), "DELETE", "/api/v1/flows/gen", &[], None).0, 404);
    assert_eq!(c.get("/api/v1/flows/gen").0, 404);
    let (_, list) = c.get("/api/v1/flows");
    let names: Vec<&str> = list["flows"].as_array().expect("flows").iter().filter_map(|f| f["name"].as_str()).collect();
    assert_eq!(names, ["broken", "commerce"]);
    eprintln!("[{:>5.1?}] deleted", started.elapsed());

    // Every recorded answer is validated (the script fails on any that does not match); how
    // many there are depends on how often the waits above polled, so only a floor is held: the
    // calls made once each.
    let checked = c.check_openapi(&dir);
    assert!(checked >= 15, "only {checked} answers were checked against docs/openapi.yaml");
}
