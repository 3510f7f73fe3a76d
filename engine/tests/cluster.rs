//! Flows on a real Kubernetes API server (DESIGN §5, issue 12 item 7), through the `phoenix`
//! binary and kubectl: `kubectl apply -f manifests/` installs the CRD and RBAC; `phoenix
//! controller` runs as its ServiceAccount with exactly the shipped RBAC; `phoenix submit`,
//! `status` and `delete` drive it. One server is shared by every step (starting one takes ~7 s),
//! so the steps run in order in one test. Pods never run (there is no kubelet): the test marks
//! them ready as a kubelet would.
//!
//! Without the server binaries (`scripts/kube build`) this fails; it never skips.

mod support;

use serde_json::{Value, json};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};
use support::kube::KubeServer;
use support::{Guard, free_port, phoenix, temp};

const LIMIT: Duration = Duration::from_secs(60);
const NS: &str = "shop";
const NAME: &str = "orders";
const SELECTOR: &str = "app.kubernetes.io/name=phoenix,app.kubernetes.io/instance=orders";
/// Short, so a stand-by takes over from a killed leader within seconds.
const LEASE_SECONDS: &str = "4";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the workspace").to_path_buf()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The test's copy of the cluster flow (`tests/data/cluster`): one replica, so the flow can be
/// Ready on 1.20, which has no `policy/v1` for the PodDisruptionBudget of a bigger one.
struct FlowDir {
    dir: PathBuf,
}

impl FlowDir {
    fn new() -> FlowDir {
        let dir = temp("cluster-flow");
        let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/cluster");
        for f in ["flows/orders.phx", "common/orders.phx"] {
            std::fs::create_dir_all(dir.join(f).parent().expect("a parent")).expect("mkdir");
            let t = std::fs::read_to_string(data.join(f)).expect("the test flow");
            std::fs::write(dir.join(f), t.replace("replicas = 3,", "replicas = 1,")).expect("write");
        }
        FlowDir { dir }
    }

    fn main(&self) -> PathBuf {
        self.dir.join("flows/orders.phx")
    }

    /// Change the imported schema, so the flow's hash changes (`n` makes each change new).
    fn change(&self, n: usize) {
        let path = self.dir.join("common/orders.phx");
        let t = std::fs::read_to_string(&path).expect("read");
        let t = t.replace("customer: string?,", &format!("customer: string?,\n  note{n}: string?,"));
        std::fs::write(path, t).expect("write");
    }
}

/// `phoenix ARGS` with `kubeconfig`, run from the flow directory.
fn phoenix_cmd(kubeconfig: &Path, cwd: &Path, args: &[&str]) -> Command {
    let mut c = phoenix();
    c.env("KUBECONFIG", kubeconfig).env_remove("POD_NAME").env_remove("POD_NAMESPACE").current_dir(cwd).args(args);
    c
}

fn run(mut c: Command) -> Output {
    c.stdin(Stdio::null()).output().expect("run phoenix")
}

fn ok(what: &str, out: &Output) -> String {
    assert!(out.status.success(), "{what} failed ({:?}):\n{}{}", out.status, text(&out.stdout), text(&out.stderr));
    text(&out.stdout) + &text(&out.stderr)
}

/// One `phoenix controller` process, killed on drop.
struct Controller {
    guard: Option<Guard>,
    port: u16,
    identity: String,
    log: PathBuf,
}

impl Controller {
    fn start(kubeconfig: &Path, dir: &Path, identity: &str) -> Controller {
        let port = free_port();
        let log = dir.join(format!("controller-{identity}.log"));
        let file = std::fs::OpenOptions::new().create(true).append(true).open(&log).expect("log");
        let child = phoenix_cmd(
            kubeconfig,
            dir,
            &[
                "controller",
                "--address",
                &format!("127.0.0.1:{port}"),
                "--lease-namespace",
                "phoenix-system",
                "--identity",
                identity,
                "--lease-seconds",
                LEASE_SECONDS,
                "-v",
            ],
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(file)
        .spawn()
        .expect("spawn phoenix controller");
        let c = Controller { guard: Some(Guard::new(child)), port, identity: identity.into(), log };
        c.wait_until("serving /ready", || c.get("/ready").is_some_and(|(s, _)| s == 200));
        c
    }

    fn child(&self) -> &Child {
        self.guard.as_ref().expect("running").child()
    }

    /// SIGKILL: no lease released, no request finished.
    fn kill(&mut self) {
        let mut child = self.guard.take().expect("running").take();
        child.kill().expect("SIGKILL");
        child.wait().expect("wait");
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// A GET on the controller's HTTP port: status and body, or `None` if nothing answers.
    fn get(&self, path: &str) -> Option<(u16, String)> {
        http_get(self.port, path)
    }

    fn reconciles(&self) -> u64 {
        let (_, body) = self.get("/metrics").expect("the controller serves /metrics");
        body.lines()
            .find_map(|l| l.strip_prefix("phoenix_controller_reconciles_total "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no reconcile counter in:\n{body}"))
    }

    fn wait_until(&self, what: &str, mut f: impl FnMut() -> bool) {
        let start = Instant::now();
        while !f() {
            if let Some(g) = &self.guard
                && exited(g.child()).is_some()
            {
                panic!("controller {} exited before {what}:\n{}", self.identity, self.log());
            }
            assert!(
                start.elapsed() < LIMIT,
                "controller {}: timed out waiting for {what}:\n{}",
                self.identity,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Whether a child has exited, without reaping it (a zombie: `/proc/PID/stat` state `Z`), so
/// its output can still be collected.
fn exited(child: &Child) -> Option<()> {
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", child.id())).ok()?;
    (stat.rsplit_once(')')?.1.split_whitespace().next()? == "Z").then_some(())
}

fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").ok()?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).ok()?;
    let (head, body) = raw.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    Some((status, body.to_string()))
}

/// `expected` is contained in `actual`: every field it has, with the same value; arrays
/// element by element, of the same length. What the server adds (defaults, status) is ignored.
fn contains(actual: &Value, expected: &Value, at: &str) -> Result<(), String> {
    match (actual, expected) {
        (Value::Object(a), Value::Object(e)) => {
            for (k, ev) in e {
                let av = a.get(k).ok_or_else(|| format!("{at}.{k} is missing (expected {ev})"))?;
                contains(av, ev, &format!("{at}.{k}"))?;
            }
            Ok(())
        }
        (Value::Array(a), Value::Array(e)) => {
            if a.len() != e.len() {
                return Err(format!("{at}: {} elements, expected {}: {actual} vs {expected}", a.len(), e.len()));
            }
            a.iter().zip(e).enumerate().try_for_each(|(i, (av, ev))| contains(av, ev, &format!("{at}[{i}]")))
        }
        (a, e) if a == e => Ok(()),
        (a, e) => Err(format!("{at} is {a}, expected {e}")),
    }
}

fn str_at<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

fn int_at(v: &Value, pointer: &str) -> i64 {
    v.pointer(pointer).and_then(Value::as_i64).unwrap_or(0)
}

/// The cluster as the test looks at it.
struct Cluster {
    k: KubeServer,
    admin: PathBuf,
    flow: FlowDir,
}

impl Cluster {
    fn get(&self, kind: &str) -> Value {
        self.k.get_json(&["-n", NS, kind, NAME])
    }

    fn flow(&self) -> Value {
        self.get("phoenixflow")
    }

    fn condition(&self, flow: &Value, type_: &str) -> Value {
        flow.pointer("/status/conditions")
            .and_then(Value::as_array)
            .and_then(|cs| cs.iter().find(|c| c["type"] == type_).cloned())
            .unwrap_or(Value::Null)
    }

    fn phoenix(&self, args: &[&str]) -> Output {
        run(phoenix_cmd(&self.admin, &self.flow.dir, args))
    }

    fn submit(&self) -> String {
        ok("phoenix submit", &self.phoenix(&["submit", "flows/orders.phx"]))
    }

    /// The objects `phoenix manifests --expand` shows for the flow as it is now, by kind.
    fn expected(&self) -> Vec<Value> {
        let out = ok("phoenix manifests", &self.phoenix(&["manifests", "flows/orders.phx", "--expand"]));
        let stdout = out.split("\nnote: ").next().unwrap_or(&out);
        let docs = phoenix_engine::cluster::yaml::from_yaml_documents(stdout).expect("manifests prints YAML");
        docs.into_iter().filter(|d| d["kind"] != "PhoenixFlow").collect()
    }

    /// Play the kubelet until `f` holds.
    fn ready_until(&self, what: &str, mut f: impl FnMut(&Value) -> bool) -> Value {
        let start = Instant::now();
        loop {
            self.k.mark_pods_ready(NS, SELECTOR);
            let flow = self.flow();
            if f(&flow) {
                return flow;
            }
            assert!(start.elapsed() < LIMIT, "timed out waiting for {what}; the flow is {flow:#}{}", self.k.logs());
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The flow's current generation is Ready, with its pods running `hash`.
    fn converged(&self, flow: &Value) -> bool {
        flow.pointer("/status/observedGeneration") == flow.pointer("/metadata/generation")
            && str_at(flow, "/status/phase") == "Ready"
            && self.deployment_hash() == str_at(flow, "/status/hash")
    }

    fn deployment_hash(&self) -> String {
        let d = self.get("deployment");
        str_at(&d, "/spec/template/metadata/annotations/phoenix.dev~1flow-hash").to_string()
    }

    /// resourceVersion and generation of the flow and each of its objects.
    fn versions(&self) -> Vec<(String, Value, Value)> {
        ["phoenixflow", "configmap", "serviceaccount", "service", "deployment"]
            .iter()
            .map(|kind| {
                let v = self.get(kind);
                (kind.to_string(), v["metadata"]["resourceVersion"].clone(), v["metadata"]["generation"].clone())
            })
            .collect()
    }
}

#[test]
fn flows_on_a_real_api_server() {
    let started = Instant::now();
    let k = KubeServer::start();
    let admin = k.kubeconfig().to_path_buf();
    let c = Cluster { k, admin, flow: FlowDir::new() };
    let k = &c.k;
    eprintln!("[{:>5.1?}] server up", started.elapsed());

    // Before `kubectl apply -f manifests/`: the clear error, from submit and the controller.
    let out = c.phoenix(&["submit", "flows/orders.phx"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("no PhoenixFlow resource type: install it with `kubectl apply -f manifests/`"),
        "{}",
        text(&out.stderr)
    );
    let out = c.phoenix(&["controller", "--address", "off", "--no-leader-election"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("install it with `kubectl apply -f manifests/`"), "{}", text(&out.stderr));

    // Install as a user would.
    k.kubectl(&["apply", "-f", repo().join("manifests").to_str().expect("utf-8")]);
    k.kubectl(&["wait", "--for=condition=Established", "--timeout=60s", "crd/phoenixflows.phoenix.dev"]);
    k.kubectl(&["create", "namespace", NS]);
    let sa = k.service_account_kubeconfig("phoenix-system", "phoenix-controller");
    let mut a = Controller::start(&sa, k.dir(), "a");
    eprintln!("[{:>5.1?}] installed, controller a running as its ServiceAccount", started.elapsed());

    // `submit --wait` follows the flow to Ready while the "kubelet" marks its pods ready.
    let mut submit = phoenix_cmd(&c.admin, &c.flow.dir, &["submit", "flows/orders.phx", "--wait", "--timeout", "60s"]);
    let submit =
        Guard::new(submit.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("submit"));
    while exited(submit.child()).is_none() {
        k.mark_pods_ready(NS, SELECTOR);
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = submit.take().wait_with_output().expect("submit output");
    let said = ok("phoenix submit --wait", &out);
    assert!(said.contains("phoenixflow shop/orders applied (generation 1)"), "{said}");
    assert!(said.contains("phoenixflow shop/orders is Ready"), "{said}");
    eprintln!("[{:>5.1?}] submitted, Ready", started.elapsed());

    // Every object as `manifests --expand` shows it (the same generator), owned by the flow.
    let flow = c.flow();
    let uid = str_at(&flow, "/metadata/uid").to_string();
    let expected = c.expected();
    let kinds: Vec<&str> = expected.iter().map(|d| d["kind"].as_str().unwrap_or("")).collect();
    assert_eq!(kinds, ["ConfigMap", "ServiceAccount", "Service", "Deployment"], "one replica: no PDB, no HPA");
    for want in &expected {
        let kind = want["kind"].as_str().expect("a kind").to_lowercase();
        let got = c.get(&kind);
        if let Err(e) = contains(&got, want, &kind) {
            panic!("the cluster's {kind} differs from `phoenix manifests --expand`: {e}\n{got:#}");
        }
        let owner = &got["metadata"]["ownerReferences"][0];
        assert_eq!((owner["kind"].as_str(), owner["uid"].as_str()), (Some("PhoenixFlow"), Some(uid.as_str())));
        assert_eq!((&owner["controller"], &owner["blockOwnerDeletion"]), (&json!(true), &json!(true)));
    }
    let d = c.get("deployment");
    let pod = &d["spec"]["template"]["spec"];
    assert_eq!(pod["containers"][0]["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(pod["terminationGracePeriodSeconds"], 75, "longer than the 45 s drain");
    let env = &pod["containers"][0]["env"];
    assert!(
        env.as_array().expect("env").iter().all(|e| e["valueFrom"]["secretKeyRef"]["name"] == "orders-env"),
        "every env() from the Secret: {env}"
    );
    assert_eq!(c.deployment_hash(), str_at(&flow, "/status/hash"));
    assert_eq!(str_at(&flow, "/status/phase"), "Ready");
    assert_eq!((int_at(&flow, "/status/replicas"), int_at(&flow, "/status/readyReplicas")), (1, 1));

    // The ConfigMap holds flow files that `phoenix check` accepts, laid out as the pod mounts them.
    let cm = c.get("configmap");
    let mounted = temp("cluster-mounted");
    let volume = pod["volumes"].as_array().expect("volumes").iter().find(|v| v["name"] == "flow").expect("flow volume");
    for item in volume["configMap"]["items"].as_array().expect("items") {
        let path = mounted.join(item["path"].as_str().expect("path"));
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(&path, cm["data"][item["key"].as_str().expect("key")].as_str().expect("data")).expect("write");
    }
    let main = str_at(&flow, "/spec/main");
    let args = pod["containers"][0]["args"].as_array().expect("args");
    assert_eq!(args[1], format!("/etc/phoenix/flow/{main}"), "the pod runs the mounted main file");
    ok(
        "phoenix check of the ConfigMap's files",
        &run({
            let mut c = phoenix();
            c.arg("check").arg(mounted.join(main));
            c
        }),
    );

    // `phoenix status` and `list` on the ready flow.
    let status = ok("phoenix status", &c.phoenix(&["status", NAME, "-n", NS]));
    assert!(status.contains("orders (shop): Ready"), "{status}");
    assert!(status.contains("1 wanted, 1 running, 1 ready"), "{status}");
    assert!(status.contains("Ready        True   Running"), "{status}");
    assert!(status.lines().any(|l| l.contains("orders-") && l.contains("Running") && l.contains(" ready")), "{status}");
    let list = ok("phoenix list", &c.phoenix(&["list", "-A"]));
    assert!(list.lines().any(|l| l.starts_with("shop") && l.contains("orders") && l.contains("Ready")), "{list}");

    // Resubmitting the same flow changes nothing: no new generation, no write to any object.
    c.k.wait_for("the Deployment to settle", LIMIT, || {
        let d = c.get("deployment");
        d.pointer("/status/observedGeneration") == d.pointer("/metadata/generation")
            && int_at(&d, "/status/availableReplicas") == 1
    });
    let before = c.versions();
    let said = c.submit();
    assert!(said.contains("applied (generation 1)"), "{said}");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(c.versions(), before, "an unchanged flow changed an object");
    eprintln!("[{:>5.1?}] objects as expected; an unchanged resubmit wrote nothing", started.elapsed());

    // A second replica stands by: it reconciles nothing while `a` holds the lease.
    let b = Controller::start(&sa, k.dir(), "b");
    let holder = || {
        str_at(&k.get_json(&["-n", "phoenix-system", "lease", "phoenix-controller"]), "/spec/holderIdentity")
            .to_string()
    };
    assert_eq!(holder(), "a");

    // A changed flow rolls the pods: a new hash on the pod template, a new ReplicaSet.
    let old_hash = c.deployment_hash();
    c.flow.change(0);
    let said = c.submit();
    assert!(said.contains("applied (generation 2)"), "{said}");
    let flow = c.ready_until("the changed flow to roll out", |f| c.converged(f));
    assert_ne!(str_at(&flow, "/status/hash"), old_hash, "a changed flow has a new hash");
    let sets = k.get_json(&["-n", NS, "replicasets", "-l", SELECTOR]);
    let hashes: std::collections::BTreeSet<&str> = sets["items"]
        .as_array()
        .expect("replicasets")
        .iter()
        .map(|rs| str_at(rs, "/spec/template/metadata/annotations/phoenix.dev~1flow-hash"))
        .collect();
    assert!(hashes.contains(old_hash.as_str()) && hashes.contains(str_at(&flow, "/status/hash")), "{hashes:?}");
    eprintln!("[{:>5.1?}] a changed flow rolled out", started.elapsed());

    // An invalid flow, applied with kubectl (submit would refuse it): Degraded with the
    // compiler's diagnostic; the Deployment is left as it was.
    let before = c.get("deployment");
    let mut spec = flow["spec"].clone();
    spec["files"]["flows/orders.phx"] = json!("source api = http { address = \"127.0.0.1:8081\" } as Missing\n");
    let broken = json!({"apiVersion": "phoenix.dev/v1alpha1", "kind": "PhoenixFlow",
        "metadata": {"name": NAME, "namespace": NS}, "spec": spec});
    k.kubectl_in(
        &["apply", "--server-side", "--force-conflicts", "--field-manager=someone", "-f", "-"],
        Some(&broken.to_string()),
    );
    let flow = c.ready_until("the invalid flow to be Degraded", |f| {
        f.pointer("/status/observedGeneration") == f.pointer("/metadata/generation")
            && str_at(f, "/status/phase") == "Degraded"
    });
    let degraded = c.condition(&flow, "Degraded");
    assert_eq!(degraded["reason"], "InvalidFlow", "{degraded}");
    let message = degraded["message"].as_str().unwrap_or("");
    assert!(
        message.contains("error[E") && message.contains("Missing") && message.contains("flows/orders.phx"),
        "{message}"
    );
    let after = c.get("deployment");
    assert_eq!(after["metadata"]["generation"], before["metadata"]["generation"], "the Deployment was changed");
    assert_eq!(after["spec"], before["spec"]);
    assert_eq!(str_at(&flow, "/status/hash"), c.deployment_hash(), "the status names what the pods still run");
    let said = ok("phoenix status", &c.phoenix(&["status", NAME, "-n", NS]));
    assert!(said.contains("Degraded") && said.contains("InvalidFlow"), "{said}");
    // Submitting the good flow again takes the files back.
    c.submit();
    c.ready_until("the good flow to be Ready again", |f| c.converged(f));
    eprintln!("[{:>5.1?}] an invalid flow was Degraded and touched nothing", started.elapsed());

    // `kubectl scale` on the flow reaches the Deployment; two pods want a PodDisruptionBudget,
    // which 1.20 cannot hold (no policy/v1): Degraded, UnsupportedKind.
    k.kubectl(&["scale", "-n", NS, "phoenixflow", NAME, "--replicas=2"]);
    let flow = c.ready_until("two replicas", |f| {
        f.pointer("/status/observedGeneration") == f.pointer("/metadata/generation")
            && int_at(&c.get("deployment"), "/spec/replicas") == 2
            && int_at(f, "/status/readyReplicas") == 2
    });
    let degraded = c.condition(&flow, "Degraded");
    assert_eq!(degraded["reason"], "UnsupportedKind", "{degraded}");
    assert!(degraded["message"].as_str().unwrap_or("").contains("policy/v1 PodDisruptionBudget"), "{degraded}");
    k.kubectl(&["scale", "-n", NS, "phoenixflow", NAME, "--replicas=1"]);
    c.ready_until("one replica again", |f| c.converged(f) && int_at(&c.get("deployment"), "/spec/replicas") == 1);
    eprintln!("[{:>5.1?}] scaled", started.elapsed());

    // Drift is healed: a deleted Deployment comes back; edited fields are set back.
    let old_uid = str_at(&c.get("deployment"), "/metadata/uid").to_string();
    k.kubectl(&["delete", "-n", NS, "deployment", NAME, "--wait=false"]);
    k.wait_for("the deleted Deployment to come back", LIMIT, || {
        k.exists(&["-n", NS, "deployment", NAME]) && str_at(&c.get("deployment"), "/metadata/uid") != old_uid
    });
    k.kubectl(&["patch", "-n", NS, "deployment", NAME, "--type=merge", "-p", r#"{"spec":{"replicas":4}}"#]);
    k.kubectl(&[
        "patch",
        "-n",
        NS,
        "configmap",
        NAME,
        "--type=merge",
        "-p",
        r#"{"data":{"flows__orders.phx":"edited"}}"#,
    ]);
    k.wait_for("the edits to be undone", LIMIT, || {
        int_at(&c.get("deployment"), "/spec/replicas") == 1
            && str_at(&c.get("configmap"), "/data/flows__orders.phx") != "edited"
    });
    assert_eq!(
        str_at(&c.get("configmap"), "/data/flows__orders.phx"),
        std::fs::read_to_string(c.flow.main()).expect("the flow file")
    );
    c.ready_until("the flow to be Ready after the drift", |f| c.converged(f));
    eprintln!("[{:>5.1?}] drift healed", started.elapsed());

    // All along only the lease holder reconciled.
    assert_eq!(holder(), "a");
    assert!(a.reconciles() > 0);
    assert_eq!(b.reconciles(), 0, "the stand-by reconciled:\n{}", b.log());
    assert!(b.log().contains("waiting for the leader lease"), "{}", b.log());

    // SIGKILL at moments around a reconcile of a changed flow; the controller restarts (same
    // pod name, as a restarted container keeps it) and converges each time.
    // What each kill interrupted: whether the new Deployment and the status were written yet.
    let mut moments = Vec::new();
    for (n, delay_ms) in [0u64, 3, 6, 10, 20].into_iter().enumerate() {
        c.flow.change(n + 1);
        let old_hash = c.deployment_hash();
        c.submit();
        std::thread::sleep(Duration::from_millis(delay_ms));
        a.kill();
        let f = c.flow();
        let applied = c.deployment_hash() != old_hash;
        let observed = f.pointer("/status/observedGeneration") == f.pointer("/metadata/generation");
        moments.push(format!("{delay_ms} ms: deployment {applied}, status {observed}"));
        a = Controller::start(&sa, k.dir(), "a");
        c.ready_until("the flow to converge after the restart", |f| c.converged(f));
    }
    eprintln!(
        "[{:>5.1?}] killed and restarted five times, converged each time ({})",
        started.elapsed(),
        moments.join("; ")
    );
    assert_eq!(b.reconciles(), 0, "the stand-by reconciled:\n{}", b.log());

    // The leader dies for good: the stand-by takes the lease over once the leader's last renewal
    // is a lease duration old, and reconciles.
    a.kill();
    let lease = || k.get_json(&["-n", "phoenix-system", "lease", "phoenix-controller"]);
    let time = |l: &Value, field: &str| {
        chrono::DateTime::parse_from_rfc3339(str_at(l, &format!("/spec/{field}"))).expect("a lease time")
    };
    std::thread::sleep(Duration::from_millis(200));
    let last = lease();
    assert_eq!(str_at(&last, "/spec/holderIdentity"), "a", "nothing released the lease of a killed leader");
    c.k.wait_for("b to take the lease over", LIMIT, || holder() == "b");
    let takeover = time(&lease(), "acquireTime") - time(&last, "renewTime");
    assert!(
        takeover >= chrono::Duration::seconds(LEASE_SECONDS.parse().expect("seconds")),
        "taken over {takeover} after the last renewal, within the lease"
    );
    k.kubectl(&["scale", "-n", NS, "phoenixflow", NAME, "--replicas=0"]);
    c.ready_until("b to scale the flow to zero", |f| {
        str_at(f, "/status/phase") == "Ready" && int_at(&c.get("deployment"), "/spec/replicas") == 0
    });
    assert!(b.reconciles() > 0);
    eprintln!("[{:>5.1?}] b took over {takeover} after a's last renewal", started.elapsed());

    // `delete --wait` returns once the flow and everything made of it are gone.
    let said = ok("phoenix delete --wait", &c.phoenix(&["delete", NAME, "-n", NS, "--wait"]));
    assert!(said.contains("deleted with everything made of it"), "{said}");
    for kind in ["phoenixflow", "configmap", "serviceaccount", "service", "deployment"] {
        assert!(!k.exists(&["-n", NS, kind, NAME]), "{kind} {NAME} is still there after delete --wait");
    }
    k.wait_for("the ReplicaSets and pods to be collected", LIMIT, || {
        k.get_json(&["-n", NS, "replicasets,pods", "-l", SELECTOR])["items"].as_array().is_some_and(Vec::is_empty)
    });
    let out = c.phoenix(&["status", NAME, "-n", NS]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("no PhoenixFlow `orders` in namespace `shop`"), "{}", text(&out.stderr));
    assert!(exited(b.child()).is_none(), "b is still running:\n{}", b.log());
    eprintln!("[{:>5.1?}] deleted", started.elapsed());
}
