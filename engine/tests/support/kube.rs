//! A real Kubernetes API server for tests (DESIGN §5): kube-apiserver 1.20, etcd and
//! kube-controller-manager on 127.0.0.1, started by `scripts/kube up` in a directory of its own
//! and stopped on drop. There is no kubelet: pods stay `Pending` until `mark_pods_ready` reports
//! them Running and Ready through their status, as a kubelet would.
//!
//! `scripts/kube build` (run by `scripts/test`) builds the servers once per machine; without
//! them `KubeServer::start` fails, it never skips.

use serde_json::Value;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// `scripts/kube`, from this crate's directory.
fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/kube")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A running API server. Its files (logs, pids, certificates, `kubeconfig`) are in `dir()`,
/// removed on drop unless the test failed.
#[derive(Debug)]
pub struct KubeServer {
    dir: PathBuf,
    kubeconfig: PathBuf,
    server: String,
    token: String,
}

impl KubeServer {
    /// Start a server: ready to serve (the default ServiceAccount has its token) when this returns.
    pub fn start() -> KubeServer {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("phoenix-kube-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let out = Command::new(script())
            .args(["up", dir.to_str().expect("a UTF-8 temp dir")])
            .args(["--owner-pid", &std::process::id().to_string()])
            .stdin(Stdio::null())
            .output()
            .expect("run scripts/kube up");
        // Without the servers built, this says "run scripts/kube build".
        assert!(out.status.success(), "scripts/kube up failed:\n{}", text(&out.stderr));
        let env = std::fs::read_to_string(dir.join("env")).expect("scripts/kube up writes DIR/env");
        let var = |name: &str| {
            env.lines()
                .find_map(|l| l.strip_prefix(&format!("export {name}=")))
                .map(|v| v.trim_matches('\'').to_string())
                .unwrap_or_else(|| panic!("{name} in {}/env", dir.display()))
        };
        let (server, token) = (var("KUBE_SERVER"), var("KUBE_TOKEN"));
        KubeServer { kubeconfig: dir.join("kubeconfig"), dir, server, token }
    }

    /// The admin's kubeconfig (user `admin`, group `system:masters`; context `phoenix-test`,
    /// namespace `default`).
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// Where the server's files are: `kube-apiserver.log`, `pki/ca.crt`, ...
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `https://127.0.0.1:PORT`.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// The admin's bearer token.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// `kubectl ARGS` as the admin, with its own discovery cache; its output, whatever the exit.
    pub fn kubectl_output(&self, args: &[&str], stdin: Option<&str>) -> Output {
        kubectl_with(&self.kubeconfig, &self.dir, args, stdin)
    }

    /// `kubectl ARGS` as the admin; its standard output. Fails the test when kubectl does.
    pub fn kubectl(&self, args: &[&str]) -> String {
        self.kubectl_in(args, None)
    }

    /// `kubectl ARGS` with `stdin` (for `apply -f -`); its standard output. Fails the test when
    /// kubectl does.
    pub fn kubectl_in(&self, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.kubectl_output(args, stdin);
        assert!(out.status.success(), "kubectl {} failed: {}{}", args.join(" "), text(&out.stderr), self.logs());
        text(&out.stdout)
    }

    /// `kubectl apply --server-side -f -` of YAML or JSON text.
    pub fn apply(&self, manifest: &str) -> String {
        self.kubectl_in(&["apply", "--server-side", "--field-manager=phoenix-test", "-f", "-"], Some(manifest))
    }

    /// `kubectl get ARGS -o json`, parsed.
    pub fn get_json(&self, args: &[&str]) -> Value {
        let mut all = vec!["get"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["-o", "json"]);
        serde_json::from_str(&self.kubectl(&all)).expect("kubectl -o json prints JSON")
    }

    /// Whether `kubectl get ARGS` finds the object.
    pub fn exists(&self, args: &[&str]) -> bool {
        let mut all = vec!["get"];
        all.extend_from_slice(args);
        let out = self.kubectl_output(&all, None);
        if out.status.success() {
            return true;
        }
        let err = text(&out.stderr);
        assert!(err.contains("NotFound"), "kubectl get {}: {err}", args.join(" "));
        false
    }

    /// Report every pod in `namespace` matching `selector` (a label selector, or "" for all) that
    /// is not ready yet as Running, with every container started and ready, as a kubelet would.
    /// Deployments then count them as ready and available. The names of the pods marked.
    pub fn mark_pods_ready(&self, namespace: &str, selector: &str) -> Vec<String> {
        let out = self.script(&["mark-ready", namespace, selector]);
        out.lines().map(String::from).collect()
    }

    /// A kubeconfig (written in `dir()`) that authenticates as the ServiceAccount `namespace/name`
    /// with its token, so a process runs with exactly the RBAC granted to it. Waits for the
    /// controller-manager to create the token.
    pub fn service_account_kubeconfig(&self, namespace: &str, name: &str) -> PathBuf {
        let path = self.dir.join(format!("sa-{namespace}-{name}.kubeconfig"));
        self.script(&["sa-kubeconfig", namespace, name, path.to_str().expect("a UTF-8 path")]);
        path
    }

    /// Poll `f` every 200 ms until it holds; after `limit`, fail with the end of the servers' logs.
    pub fn wait_for(&self, what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
        let start = Instant::now();
        while !f() {
            assert!(start.elapsed() < limit, "timed out after {limit:?} waiting for {what}{}", self.logs());
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The last lines of the API server's and controller-manager's logs, for failure messages.
    pub fn logs(&self) -> String {
        let mut s = String::new();
        for name in ["kube-apiserver", "kube-controller-manager"] {
            let path = self.dir.join(format!("{name}.log"));
            let log = std::fs::read_to_string(&path).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(15).collect();
            s += &format!("\n---- {} ends:\n", path.display());
            s += &tail.into_iter().rev().collect::<Vec<_>>().join("\n");
        }
        s
    }

    /// `scripts/kube ACTION DIR ARGS...`; its standard output.
    fn script(&self, args: &[&str]) -> String {
        let (action, rest) = args.split_first().expect("an action");
        let out = Command::new(script())
            .arg(action)
            .arg(&self.dir)
            .args(rest)
            .stdin(Stdio::null())
            .output()
            .expect("run scripts/kube");
        assert!(out.status.success(), "scripts/kube {}: {}{}", args.join(" "), text(&out.stderr), self.logs());
        text(&out.stdout)
    }
}

impl Drop for KubeServer {
    fn drop(&mut self) {
        let _ = Command::new(script()).arg("down").arg(&self.dir).stdin(Stdio::null()).output();
        if std::thread::panicking() {
            eprintln!("the Kubernetes test server's files are kept in {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// `kubectl` with the given kubeconfig (for instance a ServiceAccount's), caching discovery in
/// `cache_dir` (a server's port may be reused by the next one).
pub fn kubectl_with(kubeconfig: &Path, cache_dir: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .arg("--cache-dir")
        .arg(cache_dir.join("kubectl-cache"))
        .args(args)
        .env_remove("KUBECONFIG")
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl on PATH (scripts/kube build installs it)");
    if let Some(input) = stdin {
        child.stdin.take().expect("stdin").write_all(input.as_bytes()).expect("write to kubectl");
    }
    child.wait_with_output().expect("kubectl output")
}
