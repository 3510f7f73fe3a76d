//! The flows `phoenix serve` runs: each stored flow compiled by the same front end as
//! `phoenix check` and run as `phoenix run` runs it, replaced or stopped on request.
//!
//! A replacement is make-before-break ([`crate::swap`], shared with `phoenix run`'s reload):
//! the new graph is built, its connectors opened and started while the old one runs, then the
//! old one drains exactly as on SIGTERM. A new version that cannot start leaves the old one
//! running and its text stored.

use crate::api::store::{FlowStatus, FlowStore, StoreError};
use crate::observability::metrics::Metrics;
use crate::observability::readiness::Readiness;
use crate::options::Settings;
use crate::run::RunConfig;
use crate::swap::{self, Generation, LaunchError};
use crate::taskgraph::{TaskGraph, node_labels};
use crate::{EngineCatalog, FsLoader};
use phoenix_dsl::plan::Plan;
use phoenix_dsl::span::SourceMap;
use phoenix_dsl::{Compilation, Loader};
use serde::Serialize;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// Why a flow could not be changed.
#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The process is draining its flows to exit: nothing starts any more.
    #[error("the server is shutting down")]
    ShuttingDown,
    /// `If-Match` named another version of the flow (or a flow that does not exist).
    #[error("the flow is not the version `If-Match` names (it is {})", .current.as_deref().unwrap_or("absent"))]
    PreconditionFailed { current: Option<String> },
    /// The new version of a running flow could not start; the old one runs on.
    #[error("the new version cannot start, so the running flow is kept: {0}")]
    NotStarted(LaunchError),
}

/// A flow text's entity tag (`ETag`, quoted): the first 128 bits of its SHA-256, in hex. The
/// same text has the same tag in every process, so a client can compare without asking.
pub fn etag(text: &str) -> String {
    use sha2::Digest;
    let d = sha2::Sha256::digest(text.as_bytes());
    let hex: String = d[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("\"{hex}\"")
}

/// Whether an `If-Match` value lets a change of a flow whose text has the tag `current` (`None`:
/// there is no such flow) go ahead (RFC 9110 §13.1.1): `*` matches any existing flow, a list
/// matches when one of its tags is the current one by strong comparison, so a weak tag
/// (`W/"..."`) never matches.
pub fn if_match(header: &str, current: Option<&str>) -> bool {
    let Some(current) = current else { return false };
    header.split(',').map(str::trim).any(|tag| tag == "*" || tag == current)
}

/// How long a PUT waits for the new flow's connectors to reach their services before it
/// answers (and, replacing a flow, before the old version drains anyway).
pub const START_WAIT: std::time::Duration = swap::START_WAIT;

/// One diagnostic as the API reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApiDiagnostic {
    pub code: String,
    /// `error` or `warning`.
    pub severity: &'static str,
    pub message: String,
    /// The file it points into: the flow itself, or a file it imports.
    pub file: String,
    pub line: usize,
    pub column: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub help: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// A flow that compiled: ready to run, with its warnings.
#[derive(Debug)]
pub struct Compiled {
    plan: Plan,
    sources: SourceMap,
    pub warnings: Vec<ApiDiagnostic>,
}

impl Compiled {
    /// The task graph a run of it would build, with counters of its own that no `/metrics`
    /// shows (for `POST /api/v1/route`, which runs nothing).
    pub fn task_graph(&self) -> Result<TaskGraph, crate::taskgraph::PlanError> {
        let metrics = Metrics::new(node_labels(&self.plan, &self.sources));
        TaskGraph::build(&self.plan, &self.sources, &metrics)
    }
}

/// A flow's counters, as `GET /api/v1/flows/{name}` shows them.
#[derive(Debug, Clone, Serialize)]
pub struct NodeCounts {
    pub node: String,
    pub at: String,
    pub events_in: u64,
    pub events_out: u64,
    pub errors: u64,
}

/// A running (or ended) flow of this process.
#[derive(Debug)]
struct Deployed {
    generation: Generation,
    /// Each node's counters when this version started: its counts are since then (a version
    /// with the same nodes as the one it replaced counts on in the same `/metrics` series).
    baseline: Vec<[u64; 3]>,
    /// Cleared before the flow is stopped on purpose, so its ending does not overwrite the
    /// status of whatever replaced it.
    current: Arc<AtomicBool>,
}

/// A version's counters and their values when it started.
type Counted = (Arc<Metrics>, Vec<[u64; 3]>);

/// The flows of one process over a [`FlowStore`].
#[derive(Debug)]
pub struct Flows {
    store: Arc<dyn FlowStore>,
    catalog: Arc<EngineCatalog>,
    /// Every flow's counters are siblings of these, so `/metrics` shows them all.
    metrics: Arc<Metrics>,
    /// Every flow's readiness is a child of this one (`/ready`).
    readiness: Readiness,
    workers: usize,
    settings: Settings,
    running: Mutex<HashMap<String, Deployed>>,
    /// The counters and baseline of a version being replaced (out of `running` while the swap
    /// owns it), so `GET /api/v1/flows/{name}` shows its counts meanwhile.
    swapping: Mutex<HashMap<String, Counted>>,
    /// Set (under `changes`) when the process starts draining: later changes are refused, so
    /// no flow starts after the drain and dies undrained at exit.
    closing: AtomicBool,
    /// Held by every change (PUT, DELETE, shutdown), so changes to flows happen one at a time.
    changes: tokio::sync::Mutex<()>,
}

impl Flows {
    pub fn new(
        store: Arc<dyn FlowStore>,
        metrics: Arc<Metrics>,
        readiness: Readiness,
        workers: usize,
        settings: Settings,
    ) -> Flows {
        Flows {
            store,
            catalog: Arc::new(EngineCatalog::new()),
            metrics,
            readiness,
            workers,
            settings,
            running: Mutex::new(HashMap::new()),
            swapping: Mutex::new(HashMap::new()),
            closing: AtomicBool::new(false),
            changes: tokio::sync::Mutex::new(()),
        }
    }

    pub fn store(&self) -> &dyn FlowStore {
        &*self.store
    }

    pub fn catalog(&self) -> &EngineCatalog {
        &self.catalog
    }

    fn running(&self) -> std::sync::MutexGuard<'_, HashMap<String, Deployed>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Compile `text` as the flow `name`, its imports read beside the stored flows.
    pub fn compile(&self, name: &str, text: &str) -> Result<Compiled, Vec<ApiDiagnostic>> {
        let root = self.store.file_name(name);
        let c = self.front_end(name, text);
        let diagnostics = diagnostics(&c);
        if c.has_errors() {
            return Err(diagnostics);
        }
        match c.plan(&*self.catalog) {
            Some(plan) => Ok(Compiled { plan, sources: c.sources, warnings: diagnostics }),
            // Lowering a flow the checker accepted does not fail; say so if it ever does.
            None => Err(vec![ApiDiagnostic {
                code: "internal".into(),
                severity: "error",
                message: "the flow checked but could not be planned".into(),
                file: root,
                line: 1,
                column: 1,
                help: None,
                notes: Vec::new(),
            }]),
        }
    }

    /// The front end of `phoenix check` on `text` as the flow `name`.
    pub fn front_end(&self, name: &str, text: &str) -> Compilation {
        let root = self.store.file_name(name);
        let loader = TextLoader { root: root.clone(), text };
        phoenix_dsl::compile(&root, &loader, &*self.catalog)
    }

    /// Start every stored flow (at start-up). A flow that does not compile is marked
    /// [`FlowStatus::Invalid`] and its diagnostics logged.
    pub async fn start_all(&self) -> Result<(), StoreError> {
        let _change = self.changes.lock().await;
        for name in self.store.list()? {
            // Put through the API before this took the lock (the API is served meanwhile).
            if self.running().contains_key(&name) {
                continue;
            }
            let Some(text) = self.store.get(&name)? else { continue };
            match self.compile(&name, &text) {
                Ok(compiled) => {
                    if let Some(d) = self.launch(&name, compiled, None) {
                        self.readiness.add_child(d.generation.readiness.clone());
                        self.running().insert(name.clone(), d);
                    }
                }
                Err(diagnostics) => {
                    let errors: Vec<_> = diagnostics.iter().filter(|d| d.severity == "error").collect();
                    for d in &errors {
                        tracing::error!(flow = %name, "{}:{}:{}: {} {}", d.file, d.line, d.column, d.code, d.message);
                    }
                    self.store.set_status(&name, FlowStatus::Invalid { errors: errors.len() });
                }
            }
        }
        Ok(())
    }

    /// Store and run `compiled` as `name`. A running flow of that name is replaced
    /// make-before-break ([`swap::replace`]): if the new version cannot start, the old one runs
    /// on, its text stays stored, and the answer is [`ChangeError::NotStarted`]. `true` if
    /// there was a flow of that name.
    pub async fn replace(&self, name: &str, text: &str, compiled: Compiled) -> Result<bool, ChangeError> {
        self.replace_if(name, text, compiled, None).await
    }

    /// [`Flows::replace`] when the stored text matches `precondition` (an `If-Match` value),
    /// checked under the change lock so no other change slips in between.
    pub async fn replace_if(
        &self,
        name: &str,
        text: &str,
        compiled: Compiled,
        precondition: Option<&str>,
    ) -> Result<bool, ChangeError> {
        let _change = self.changes.lock().await;
        if self.closing.load(Ordering::Acquire) {
            return Err(ChangeError::ShuttingDown);
        }
        let stored = self.store.get(name)?;
        self.precondition(stored.as_deref(), precondition)?;
        let existed = stored.is_some();
        let old = self.running().remove(name);
        let Some(old) = old else {
            self.store.put(name, text)?;
            if let Some(d) = self.launch(name, compiled, None) {
                self.readiness.add_child(d.generation.readiness.clone());
                d.generation.started(START_WAIT).await;
                self.running().insert(name.to_string(), d);
            }
            return Ok(existed);
        };
        // A version that ended (finished or failed) holds nothing: replace it as a new flow.
        if old.generation.outcome().is_some() {
            old.generation.retire(&self.readiness, None);
            self.store.put(name, text)?;
            if let Some(d) = self.launch(name, compiled, None) {
                self.readiness.add_child(d.generation.readiness.clone());
                d.generation.started(START_WAIT).await;
                self.running().insert(name.to_string(), d);
            }
            return Ok(existed);
        }
        let next = match self.start(name, compiled, Some(&old.generation.metrics)) {
            Ok(next) => next,
            Err(e) => {
                tracing::error!(flow = %name, "the new version cannot start; the running flow is kept: {e}");
                self.running().insert(name.to_string(), old);
                return Err(ChangeError::NotStarted(e));
            }
        };
        if let Err(e) = self.store.put(name, text) {
            next.current.store(false, Ordering::Release);
            let _ = next.generation.stop(&self.readiness, Some(&old.generation.metrics)).await;
            self.running().insert(name.to_string(), old);
            return Err(e.into());
        }
        old.current.store(false, Ordering::Release);
        tracing::info!(flow = %name, "draining the flow");
        let Deployed { generation: old_generation, baseline: old_baseline, current: old_current } = old;
        self.swapping().insert(name.to_string(), (old_generation.metrics.clone(), old_baseline.clone()));
        let Deployed { generation, baseline, current } = next;
        let swapped = swap::replace(old_generation, generation, &self.readiness).await;
        self.swapping().remove(name);
        match swapped {
            Ok((generation, _)) => {
                tracing::info!(flow = %name, "flow stopped");
                self.store.set_status(name, status_now(&generation));
                self.running().insert(name.to_string(), Deployed { generation, baseline, current });
                Ok(existed)
            }
            Err((generation, e)) => {
                tracing::error!(flow = %name, "the new version failed before it was up; the running flow is kept: {e}");
                // Its ending must not be reported as the flow's status: the old version runs.
                current.store(false, Ordering::Release);
                old_current.store(true, Ordering::Release);
                self.store.set_status(name, FlowStatus::Running);
                self.running()
                    .insert(name.to_string(), Deployed { generation, baseline: old_baseline, current: old_current });
                Err(ChangeError::NotStarted(e))
            }
        }
    }

    /// Stop `name` (draining it) and forget it. `false` if there was no such flow.
    pub async fn delete(&self, name: &str) -> Result<bool, ChangeError> {
        self.delete_if(name, None).await
    }

    /// [`Flows::delete`] when the stored text matches `precondition` (an `If-Match` value).
    pub async fn delete_if(&self, name: &str, precondition: Option<&str>) -> Result<bool, ChangeError> {
        let _change = self.changes.lock().await;
        if self.closing.load(Ordering::Acquire) {
            return Err(ChangeError::ShuttingDown);
        }
        if precondition.is_some() {
            self.precondition(self.store.get(name)?.as_deref(), precondition)?;
        }
        let was_running = self.stop(name).await;
        Ok(self.store.delete(name)? || was_running)
    }

    fn precondition(&self, stored: Option<&str>, precondition: Option<&str>) -> Result<(), ChangeError> {
        let Some(wanted) = precondition else { return Ok(()) };
        let current = stored.map(etag);
        if if_match(wanted, current.as_deref()) { Ok(()) } else { Err(ChangeError::PreconditionFailed { current }) }
    }

    /// Drain every flow (at shutdown), all at once.
    pub async fn stop_all(&self) {
        let _change = self.changes.lock().await;
        self.closing.store(true, Ordering::Release);
        let names: Vec<String> = self.running().keys().cloned().collect();
        futures::future::join_all(names.iter().map(|n| self.stop(n))).await;
    }

    /// The counters of `name`'s nodes, if it has run in this process.
    pub fn counts(&self, name: &str) -> Option<Vec<NodeCounts>> {
        let (metrics, baseline) = match self.running().get(name) {
            Some(d) => (d.generation.metrics.clone(), d.baseline.clone()),
            None => self.swapping().get(name).cloned()?,
        };
        Some(
            metrics
                .nodes
                .iter()
                .zip(&baseline)
                .map(|(n, [events_in, events_out, errors])| NodeCounts {
                    node: n.title.clone(),
                    at: n.at.clone(),
                    events_in: n.events_in.get().saturating_sub(*events_in),
                    events_out: n.events_out.get().saturating_sub(*events_out),
                    errors: n.errors.get().saturating_sub(*errors),
                })
                .collect(),
        )
    }

    fn swapping(&self) -> std::sync::MutexGuard<'_, HashMap<String, Counted>> {
        self.swapping.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// [`Flows::start`] for a flow that is not running: a version that cannot start is stored
    /// as failed (so the answer says why) rather than refused.
    fn launch(&self, name: &str, compiled: Compiled, running: Option<&Metrics>) -> Option<Deployed> {
        match self.start(name, compiled, running) {
            Ok(d) => Some(d),
            Err(e) => {
                tracing::error!(flow = %name, "{e}");
                self.store.set_status(name, FlowStatus::Failed { error: e.to_string() });
                None
            }
        }
    }

    /// Build, open and start `compiled` as `name` (its readiness not yet under the process's),
    /// with a task that records how it ends while it is the current version.
    fn start(&self, name: &str, compiled: Compiled, running: Option<&Metrics>) -> Result<Deployed, LaunchError> {
        let Compiled { plan, sources, .. } = compiled;
        let mut config = RunConfig::new(self.workers);
        config.settings = self.settings.clone();
        config.owner = crate::connectors::Owner::version_of(name);
        let generation = swap::launch(&plan, &sources, &self.catalog, &self.metrics, running, config)?;
        let baseline =
            generation.metrics.nodes.iter().map(|n| [n.events_in.get(), n.events_out.get(), n.errors.get()]).collect();
        let current = Arc::new(AtomicBool::new(true));
        if running.is_none() {
            self.store.set_status(name, FlowStatus::Running);
        }
        {
            let (store, current, name) = (self.store.clone(), current.clone(), name.to_string());
            let (root, own, outcomes) = (self.readiness.clone(), generation.readiness.clone(), generation.outcomes());
            tokio::spawn(async move {
                let outcome = swap::Generation::wait_outcome(outcomes).await;
                let status = match outcome {
                    Ok(()) => FlowStatus::Finished,
                    Err(e) => {
                        tracing::error!(flow = %name, "{e}");
                        FlowStatus::Failed { error: e.to_string() }
                    }
                };
                if current.load(Ordering::Acquire) {
                    store.set_status(&name, status);
                }
                // A flow that ended (a failed one may never have registered its nodes) does
                // not hold up `/ready` for the others.
                root.remove_child(&own);
            });
        }
        tracing::info!(flow = %name, "flow started");
        Ok(Deployed { generation, baseline, current })
    }

    /// Drain `name` as on SIGTERM and wait until it has stopped; `false` if it was not running.
    async fn stop(&self, name: &str) -> bool {
        let Some(d) = self.running().remove(name) else { return false };
        d.current.store(false, Ordering::Release);
        self.store.set_status(name, FlowStatus::Draining);
        tracing::info!(flow = %name, "draining the flow");
        let _ = d.generation.stop(&self.readiness, None).await;
        tracing::info!(flow = %name, "flow stopped");
        true
    }
}

/// Every diagnostic of `c` as the API reports it.
pub fn diagnostics(c: &Compilation) -> Vec<ApiDiagnostic> {
    c.diagnostics
        .iter()
        .map(|d| {
            let (line, column) = c.sources.line_column(d.span());
            ApiDiagnostic {
                code: d.code.as_str().to_string(),
                severity: if d.is_error() { "error" } else { "warning" },
                message: d.message.clone(),
                file: c.sources.get(d.span().file).name.clone(),
                line,
                column,
                help: d.help.clone(),
                notes: d.notes.clone(),
            }
        })
        .collect()
}

/// The status of a version just swapped in: it may already have ended.
fn status_now(g: &Generation) -> FlowStatus {
    match g.outcome() {
        None => FlowStatus::Running,
        Some(Ok(())) => FlowStatus::Finished,
        Some(Err(e)) => FlowStatus::Failed { error: e.to_string() },
    }
}

/// The flow's root file from memory (a text not yet stored), its imports from disk.
struct TextLoader<'a> {
    root: String,
    text: &'a str,
}

impl Loader for TextLoader<'_> {
    fn load(&self, path: &str, from: Option<&str>) -> Result<(String, Vec<u8>), String> {
        if from.is_none() && path == self.root {
            return Ok((self.root.clone(), self.text.as_bytes().to_vec()));
        }
        FsLoader.load(path, from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::store::DirStore;

    #[test]
    fn if_match_compares_tags_strongly() {
        let tag = etag("schema E { id: int }\n");
        assert_eq!(tag, etag("schema E { id: int }\n"), "the same text, the same tag");
        assert_ne!(tag, etag("schema E { id: int }"));
        assert!(if_match(&tag, Some(&tag)));
        assert!(if_match(&format!("\"x\", {tag}"), Some(&tag)));
        assert!(if_match("*", Some(&tag)));
        assert!(!if_match("*", None), "`*` needs a current flow");
        assert!(!if_match(&tag, None));
        assert!(!if_match(&format!("W/{tag}"), Some(&tag)), "weak tags never match");
        assert!(!if_match("\"x\"", Some(&tag)));
    }

    const FLOW: &str = "schema E { id: int }\nsource g = generate { count = 3 } as E\nsink s = stdout {}\ng | s\n";

    fn flows(name: &str) -> (Flows, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("phoenix-flows-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let store = Arc::new(DirStore::open(&dir).expect("store"));
        let flows = Flows::new(store, Arc::new(Metrics::new([])), Readiness::new(), 1, Settings::default());
        (flows, dir)
    }

    #[tokio::test]
    async fn a_flow_runs_to_its_end_and_nothing_changes_after_the_drain() {
        let (flows, dir) = flows("closing");
        let compiled = flows.compile("gen", FLOW).expect("compiles");
        assert!(!flows.replace("gen", FLOW, compiled).await.expect("put"), "a new flow");
        let finished = async {
            while flows.store().status("gen") != Some(FlowStatus::Finished) {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        };
        tokio::time::timeout(std::time::Duration::from_secs(30), finished).await.expect("finished");
        let counts = flows.counts("gen").expect("counts");
        assert_eq!(counts.iter().find(|n| n.node == "sink s (stdout)").map(|n| n.events_out), Some(3), "{counts:?}");

        flows.stop_all().await;
        let compiled = flows.compile("late", FLOW).expect("compiles");
        assert!(matches!(flows.replace("late", FLOW, compiled).await, Err(ChangeError::ShuttingDown)));
        assert!(matches!(flows.delete("gen").await, Err(ChangeError::ShuttingDown)));
        assert!(!dir.join("late.phx").exists(), "nothing stored once closing");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn imports_are_read_beside_the_stored_flows() {
        let (flows, dir) = flows("imports");
        std::fs::write(dir.join("shared.phx"), "schema E { id: int }\n").expect("write");
        let text = "import \"shared.phx\"\nsource g = generate { count = 1 } as E\nsink s = stdout {}\ng | s\n";
        assert!(flows.compile("uses", text).is_ok());
        let errors = flows.compile("uses", "import \"missing.phx\"\n").expect_err("errors");
        assert!(errors[0].message.contains("missing.phx"), "{errors:?}");
        assert_eq!((errors[0].line, errors[0].column), (1, 8));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
