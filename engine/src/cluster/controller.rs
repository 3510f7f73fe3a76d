//! `phoenix controller`: reconciles every `PhoenixFlow` into its objects and reports status.
//!
//! Level-triggered: each reconcile reads the flow, compiles its files with the same front end
//! as `phoenix check`, and server-side applies every object [`objects::children`] generates
//! (forcing the controller's fields back, which heals drift; owner references make deleting the
//! flow delete them). Watches on the owned objects bring a reconcile when one is changed or
//! deleted. Nothing is remembered between reconciles, so a controller killed half-way simply
//! converges when it (or another replica) starts again. An invalid flow sets `Degraded` with
//! the rendered diagnostics and leaves the running objects alone. A kind the cluster does not
//! serve (policy/v1, autoscaling/v2 before 1.21/1.23) is reported as `Degraded` and the rest
//! is applied.

use super::bundle::{FlowFacts, check_files, compile_spec};
use super::crd::{API_VERSION, Condition, KIND, PhoenixFlow, PhoenixFlowStatus};
use super::objects::{self, Children, selector, wanted_replicas};
use crate::EngineCatalog;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fmt::Debug;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// The field manager of everything the controller applies.
pub const MANAGER: &str = "phoenix-controller";
/// How often a flow is reconciled with no change seen (a safety net under the watches).
const RESYNC: Duration = Duration::from_secs(300);
/// How long after a failed reconcile to try again.
const RETRY: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("the PhoenixFlow has no namespace")]
    NoNamespace,
    #[error("applying {kind} {name}: {source}")]
    Apply {
        kind: &'static str,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("{0}")]
    Kube(#[from] kube::Error),
}

/// Which optional kinds the cluster serves (found once at start).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Served {
    /// `policy/v1` PodDisruptionBudget (Kubernetes 1.21+).
    pub pdb: bool,
    /// `autoscaling/v2` HorizontalPodAutoscaler (Kubernetes 1.23+).
    pub hpa: bool,
}

impl Served {
    pub async fn discover(client: &Client) -> Result<Served, kube::Error> {
        Ok(Served {
            pdb: serves(client, "policy/v1", "poddisruptionbudgets").await?,
            hpa: serves(client, "autoscaling/v2", "horizontalpodautoscalers").await?,
        })
    }
}

async fn serves(client: &Client, api_version: &str, plural: &str) -> Result<bool, kube::Error> {
    match client.list_api_group_resources(api_version).await {
        Ok(list) => Ok(list.resources.iter().any(|r| r.name == plural)),
        Err(kube::Error::Api(s)) if s.is_not_found() => Ok(false),
        Err(e) => Err(e),
    }
}

/// What a reconcile needs, shared by all of them.
pub struct Context {
    pub client: Client,
    pub catalog: EngineCatalog,
    pub served: Served,
    pub stats: Stats,
}

impl Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context").field("served", &self.served).field("stats", &self.stats).finish_non_exhaustive()
    }
}

/// Counters served on `/metrics`.
#[derive(Debug, Default)]
pub struct Stats {
    pub reconciles: AtomicU64,
    pub failures: AtomicU64,
    /// The controller's watches have started (leader) or it is standing by (not leader).
    pub ready: AtomicBool,
}

/// Run the controller until `shutdown` resolves. `namespace` limits it to one namespace.
pub async fn run(
    ctx: Arc<Context>,
    namespace: Option<&str>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let api = |c: &Client| -> Api<PhoenixFlow> {
        match namespace {
            Some(ns) => Api::namespaced(c.clone(), ns),
            None => Api::all(c.clone()),
        }
    };
    let owned = watcher::Config::default().labels("app.kubernetes.io/managed-by=phoenix-controller");
    let mut controller = Controller::new(api(&ctx.client), watcher::Config::default())
        .owns(scoped::<ConfigMap>(&ctx.client, namespace), owned.clone())
        .owns(scoped::<ServiceAccount>(&ctx.client, namespace), owned.clone())
        .owns(scoped::<Service>(&ctx.client, namespace), owned.clone())
        .owns(scoped::<Deployment>(&ctx.client, namespace), owned.clone());
    // Watching a kind the server lacks would fail forever.
    if ctx.served.pdb {
        controller = controller.owns(scoped::<PodDisruptionBudget>(&ctx.client, namespace), owned.clone());
    }
    if ctx.served.hpa {
        controller = controller.owns(scoped::<HorizontalPodAutoscaler>(&ctx.client, namespace), owned);
    }
    ctx.stats.ready.store(true, Ordering::Relaxed);
    controller
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx.clone())
        .for_each(|r| async move {
            match r {
                Ok((obj, _)) => tracing::debug!(flow = %obj, "reconciled"),
                // error_policy has logged a failed reconcile already.
                Err(kube::runtime::controller::Error::ReconcilerFailed(..)) => {}
                // An owned object changed after its flow was deleted: nothing to do.
                Err(kube::runtime::controller::Error::ObjectNotFound(obj)) => {
                    tracing::debug!(flow = %obj, "gone");
                }
                Err(e) => tracing::warn!("{e}"),
            }
        })
        .await;
}

fn scoped<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

fn error_policy(flow: Arc<PhoenixFlow>, error: &ReconcileError, ctx: Arc<Context>) -> Action {
    ctx.stats.failures.fetch_add(1, Ordering::Relaxed);
    tracing::warn!(flow = %flow.name_any(), namespace = ?flow.namespace(), "reconcile failed: {error}");
    Action::requeue(RETRY)
}

/// One pass over one flow.
pub async fn reconcile(flow: Arc<PhoenixFlow>, ctx: Arc<Context>) -> Result<Action, ReconcileError> {
    ctx.stats.reconciles.fetch_add(1, Ordering::Relaxed);
    let ns = flow.namespace().ok_or(ReconcileError::NoNamespace)?;
    let name = flow.name_any();
    // Being deleted: the garbage collector is removing its objects (in the foreground, while
    // the flow still exists); applying them again would bring them back.
    if flow.metadata.deletion_timestamp.is_some() {
        tracing::debug!(flow = %name, namespace = %ns, "being deleted: not reconciled");
        return Ok(Action::await_change());
    }
    let client = &ctx.client;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);

    // The files, then the flow: refused ones leave everything running as it is.
    let invalid = match check_files(&flow.spec) {
        Err(e) => Some(("InvalidSpec", e.to_string())),
        Ok(()) => None,
    };
    let compiled = invalid.is_none().then(|| compile_spec(&flow.spec, &ctx.catalog));
    let invalid = invalid.or_else(|| {
        let c = compiled.as_ref()?;
        c.has_errors().then(|| ("InvalidFlow", c.render(false)))
    });
    if let Some((reason, message)) = invalid {
        tracing::info!(flow = %name, namespace = %ns, "{reason}: not applied");
        let running = deployments.get_opt(&name).await?;
        let status = status(&flow, running.as_ref(), None, Some((reason, message)));
        patch_status(client, &ns, &name, status).await?;
        return Ok(Action::await_change());
    }
    let compiled = compiled.expect("compiled when valid");
    let facts = FlowFacts::of(compiled.flow.as_ref().expect("a checked flow"), &ctx.catalog);
    let children = objects::children(&flow, &facts);
    for note in &children.notes {
        tracing::warn!(flow = %name, namespace = %ns, "{note}");
    }

    let deployment = apply_children(client, &ns, &name, &children).await?;
    let mut degraded = None;
    for (wanted, served, kind) in [
        (children.pdb.is_some(), ctx.served.pdb, "policy/v1 PodDisruptionBudget (Kubernetes 1.21+)"),
        (children.hpa.is_some(), ctx.served.hpa, "autoscaling/v2 HorizontalPodAutoscaler (Kubernetes 1.23+)"),
    ] {
        if wanted && !served {
            degraded =
                Some(("UnsupportedKind", format!("this cluster does not serve {kind}; the flow runs without it")));
        }
    }
    if ctx.served.pdb {
        sync_optional(client, &ns, &name, &flow, children.pdb.as_ref()).await?;
    }
    if ctx.served.hpa {
        sync_optional(client, &ns, &name, &flow, children.hpa.as_ref()).await?;
    }
    let status = status(&flow, Some(&deployment), Some(&children.hash), degraded);
    let done = status.phase.as_deref() == Some("Ready");
    patch_status(client, &ns, &name, status).await?;
    // While pods roll, look again soon even if no watch event comes.
    Ok(if done { Action::requeue(RESYNC) } else { Action::requeue(Duration::from_secs(15)) })
}

async fn apply_children(client: &Client, ns: &str, name: &str, c: &Children) -> Result<Deployment, ReconcileError> {
    apply(client, ns, name, &c.config_map, "ConfigMap").await?;
    apply(client, ns, name, &c.service_account, "ServiceAccount").await?;
    apply(client, ns, name, &c.service, "Service").await?;
    apply(client, ns, name, &c.deployment, "Deployment").await
}

/// Server-side apply, forcing: the controller owns these fields, whoever changed them.
async fn apply<K>(client: &Client, ns: &str, name: &str, obj: &K, kind: &'static str) -> Result<K, ReconcileError>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Serialize
        + DeserializeOwned
        + Clone
        + Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    api.patch(name, &PatchParams::apply(MANAGER).force(), &Patch::Apply(obj))
        .await
        .map_err(|source| ReconcileError::Apply { kind, name: name.to_string(), source })
}

/// Apply an optional object, or delete it (only if this flow owns it) when no longer wanted.
async fn sync_optional<K>(
    client: &Client,
    ns: &str,
    name: &str,
    flow: &PhoenixFlow,
    wanted: Option<&K>,
) -> Result<(), ReconcileError>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Serialize
        + DeserializeOwned
        + Clone
        + Debug,
{
    let kind = if std::any::type_name::<K>().ends_with("PodDisruptionBudget") {
        "PodDisruptionBudget"
    } else {
        "HorizontalPodAutoscaler"
    };
    if let Some(obj) = wanted {
        apply(client, ns, name, obj, kind).await?;
        return Ok(());
    }
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    let Some(existing) = api.get_opt(name).await? else { return Ok(()) };
    let ours = existing.owner_references().iter().any(|o| Some(&o.uid) == flow.meta().uid.as_ref());
    if ours {
        match api.delete(name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.is_not_found() => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

async fn patch_status(client: &Client, ns: &str, name: &str, status: PhoenixFlowStatus) -> Result<(), ReconcileError> {
    let api: Api<PhoenixFlow> = Api::namespaced(client.clone(), ns);
    let body = serde_json::json!({ "apiVersion": API_VERSION, "kind": KIND, "status": status });
    api.patch_status(name, &PatchParams::apply(MANAGER).force(), &Patch::Apply(&body)).await?;
    Ok(())
}

/// The status of `flow` given its Deployment as the cluster has it. `hash` is what was just
/// applied (`None`: nothing was, keep the last one); `degraded` a reason and message.
pub fn status(
    flow: &PhoenixFlow,
    deployment: Option<&Deployment>,
    hash: Option<&str>,
    degraded: Option<(&str, String)>,
) -> PhoenixFlowStatus {
    let name = flow.name_any();
    let previous = flow.status.clone().unwrap_or_default();
    let generation = flow.metadata.generation;
    let wanted = wanted_replicas(flow);
    let ds = deployment.and_then(|d| d.status.clone()).unwrap_or_default();
    let replicas = ds.replicas.unwrap_or(0);
    let ready = ds.ready_replicas.unwrap_or(0);
    let updated = ds.updated_replicas.unwrap_or(0);
    let observed = deployment.is_some_and(|d| ds.observed_generation >= d.metadata.generation);
    let stuck =
        ds.conditions.iter().flatten().find(|c| {
            c.type_.as_deref() == Some("Progressing") && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
        });
    let rolled_out = deployment.is_some() && observed && updated == wanted && replicas == wanted && ready >= wanted;

    let degraded = degraded.or_else(|| stuck.map(|c| ("RolloutStuck", c.message.clone().unwrap_or_default())));
    let pods = format!("{ready}/{wanted} pods ready");
    let (ready_c, progressing_c) = if rolled_out {
        let reason = if wanted == 0 { "ScaledToZero" } else { "Running" };
        (("True", reason, pods.clone()), ("False", "Complete", format!("{pods}, all updated")))
    } else if deployment.is_none() {
        (
            ("False", "NotDeployed", "no Deployment yet".to_string()),
            ("False", "NotDeployed", "no Deployment yet".to_string()),
        )
    } else {
        let rolling = format!("{pods}, {updated}/{wanted} updated");
        let ready_now = if ready >= wanted.max(1) { "True" } else { "False" };
        ((ready_now, "RollingOut", rolling.clone()), ("True", "RollingOut", rolling))
    };
    let degraded_c = match &degraded {
        Some((reason, message)) => ("True", *reason, message.clone()),
        // Never empty: 1.20's server-side apply turns "" into null, which the schema refuses.
        None => ("False", "AsExpected", "no problems".to_string()),
    };
    let now = Timestamp::now().to_string();
    let condition = |type_: &str, (status, reason, message): (&str, &str, String)| {
        // The transition time moves only when the status does.
        let since = previous
            .conditions
            .iter()
            .find(|c| c.type_ == type_ && c.status == status)
            .map_or_else(|| now.clone(), |c| c.last_transition_time.clone());
        Condition {
            type_: type_.into(),
            status: status.into(),
            reason: reason.into(),
            message,
            last_transition_time: since,
            observed_generation: generation,
        }
    };
    let conditions =
        vec![condition("Ready", ready_c), condition("Progressing", progressing_c), condition("Degraded", degraded_c)];
    let phase = if degraded.is_some() {
        "Degraded"
    } else if rolled_out {
        "Ready"
    } else {
        "Progressing"
    };
    PhoenixFlowStatus {
        observed_generation: generation,
        phase: Some(phase.into()),
        conditions,
        hash: hash.map(str::to_string).or(previous.hash),
        replicas,
        ready_replicas: ready,
        selector: Some(selector(&name)),
    }
}

/// How `phoenix controller` runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// Only flows in this namespace (default: all).
    pub namespace: Option<String>,
    /// Kubeconfig context (default: the current one, else the pod's service account).
    pub context: Option<String>,
    /// Where to serve `/health`, `/ready` and `/metrics`; `None`: nowhere.
    pub address: Option<String>,
    /// Leader election: the Lease's namespace and this replica's identity; `None`: no election.
    pub election: Option<(String, String)>,
    /// Lease duration.
    pub lease_duration: Duration,
    /// Serve the control-plane API over PhoenixFlows; `None`: no API.
    pub api: Option<super::api::ApiOptions>,
}

#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    #[error(transparent)]
    Client(#[from] super::client::ClientError),
    #[error("the cluster has no PhoenixFlow resource type: install it with `kubectl apply -f manifests/`")]
    NoCrd,
    #[error("the cluster refused: {0}")]
    Kube(#[from] kube::Error),
    #[error(transparent)]
    Serve(#[from] crate::observability::server::ServerError),
    #[error(
        "lost the leader lease `{0}` (another replica may have taken it over); exiting so no two replicas reconcile"
    )]
    LostLease(String),
}

/// The name of the leader-election Lease.
pub const LEASE: &str = "phoenix-controller";

/// `phoenix controller`: connect, check the CRD, serve health, win the election, reconcile
/// until `shutdown` resolves.
pub async fn serve(
    options: Options,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ControllerError> {
    let client = super::client::connect(options.context.as_deref()).await?;
    let flows: Api<PhoenixFlow> = match &options.namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    match flows.list(&kube::api::ListParams::default().limit(1)).await {
        Err(kube::Error::Api(s)) if super::client::type_not_served(&s) => return Err(ControllerError::NoCrd),
        other => {
            other?;
        }
    }
    let served = Served::discover(&client).await?;
    if !served.pdb || !served.hpa {
        tracing::warn!(
            "this cluster lacks {}; flows that need it are reported Degraded",
            [(!served.pdb).then_some("policy/v1"), (!served.hpa).then_some("autoscaling/v2")]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join(" and ")
        );
    }
    let ctx =
        Arc::new(Context { client: client.clone(), catalog: EngineCatalog::new(), served, stats: Stats::default() });
    let stop = tokio_util::sync::CancellationToken::new();
    {
        let stop = stop.clone();
        tokio::spawn(async move {
            shutdown.await;
            stop.cancel();
        });
    }
    if let Some(address) = &options.address {
        let listener = crate::observability::server::bind(address).await?;
        let bound = listener.local_addr().map_err(crate::observability::server::ServerError::Serve)?;
        tracing::info!(address = %bound, "serving /health, /ready and /metrics");
        let app = http::router(ctx.clone());
        let stop = stop.clone();
        tokio::spawn(async move {
            let served = axum::serve(listener, app).with_graceful_shutdown(async move { stop.cancelled().await });
            if let Err(e) = served.await {
                tracing::error!("controller HTTP server: {e}");
            }
        });
    }
    // Every replica serves the API, leader or not: it only reads and writes PhoenixFlows, and
    // whichever replica leads reconciles what it writes.
    if let Some(api) = options.api.clone() {
        super::api::spawn(client.clone(), api, stop.clone()).await?;
    }
    let namespace = options.namespace.clone();
    let Some((lease_ns, identity)) = options.election.clone() else {
        tracing::info!("reconciling PhoenixFlows (no leader election)");
        run(ctx, namespace.as_deref(), stop.clone().cancelled_owned()).await;
        return Ok(());
    };
    let lock = Arc::new(super::lease::LeaseLock::new(client, &lease_ns, LEASE, &identity, options.lease_duration));
    // Stand by until this replica holds the lease (it is ready meanwhile: a stand-by is healthy).
    ctx.stats.ready.store(true, Ordering::Relaxed);
    tracing::info!(lease = %format!("{lease_ns}/{LEASE}"), identity = %identity, "waiting for the leader lease");
    loop {
        match lock.try_acquire().await {
            Ok(true) => break,
            Ok(false) => {}
            Err(e) => tracing::warn!("leader election: {e}"),
        }
        tokio::select! {
            () = stop.cancelled() => return Ok(()),
            () = tokio::time::sleep(lock.renew_every()) => {}
        }
    }
    tracing::info!(identity = %identity, "leading: reconciling PhoenixFlows");
    let lost = tokio_util::sync::CancellationToken::new();
    let renew = {
        let (lock, lost, stop) = (lock.clone(), lost.clone(), stop.clone());
        tokio::spawn(async move {
            let mut held_at = tokio::time::Instant::now();
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(lock.renew_every()) => {}
                }
                match lock.try_acquire().await {
                    Ok(true) => held_at = tokio::time::Instant::now(),
                    Ok(false) => {
                        lost.cancel();
                        return;
                    }
                    Err(e) => tracing::warn!("renewing the leader lease: {e}"),
                }
                // Past the lease without a renewal, another replica may lead: stop first.
                if held_at.elapsed() + lock.renew_every() >= lock.duration() {
                    lost.cancel();
                    return;
                }
            }
        })
    };
    let until = {
        let (stop, lost) = (stop.clone(), lost.clone());
        async move {
            tokio::select! {
                () = stop.cancelled() => {}
                () = lost.cancelled() => {}
            }
        }
    };
    run(ctx, namespace.as_deref(), until).await;
    renew.abort();
    if lost.is_cancelled() && !stop.is_cancelled() {
        return Err(ControllerError::LostLease(LEASE.into()));
    }
    lock.release().await;
    Ok(())
}

/// `/health` (200 while the process runs), `/ready` (200 once watching or standing by),
/// `/metrics` (reconcile counters, Prometheus text).
mod http {
    use super::Context;
    use axum::Router;
    use axum::extract::State;
    use axum::http::{StatusCode, header};
    use axum::response::IntoResponse;
    use axum::routing::get;
    use std::sync::Arc;
    use std::sync::atomic::Ordering;

    pub fn router(ctx: Arc<Context>) -> Router {
        Router::new()
            .route("/health", get(|| async { "ok\n" }))
            .route("/ready", get(ready))
            .route("/metrics", get(metrics))
            .with_state(ctx)
    }

    async fn ready(State(ctx): State<Arc<Context>>) -> impl IntoResponse {
        if ctx.stats.ready.load(Ordering::Relaxed) {
            (StatusCode::OK, "ready\n")
        } else {
            (StatusCode::SERVICE_UNAVAILABLE, "starting\n")
        }
    }

    async fn metrics(State(ctx): State<Arc<Context>>) -> impl IntoResponse {
        let s = &ctx.stats;
        let body = format!(
            "# HELP phoenix_controller_reconciles_total Reconciles of PhoenixFlows.\n\
             # TYPE phoenix_controller_reconciles_total counter\n\
             phoenix_controller_reconciles_total {}\n\
             # HELP phoenix_controller_reconcile_failures_total Reconciles that failed and were retried.\n\
             # TYPE phoenix_controller_reconcile_failures_total counter\n\
             phoenix_controller_reconcile_failures_total {}\n",
            s.reconciles.load(Ordering::Relaxed),
            s.failures.load(Ordering::Relaxed)
        );
        ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::crd::PhoenixFlowSpec;
    use k8s_openapi::api::apps::v1::DeploymentStatus;

    fn flow(replicas: i32) -> PhoenixFlow {
        let mut f = PhoenixFlow::new(
            "orders",
            PhoenixFlowSpec {
                main: "f.phx".into(),
                files: Default::default(),
                replicas: Some(replicas),
                autoscaling: None,
                image: "phoenix".into(),
                resources: Default::default(),
                port: 9898,
                secret: None,
            },
        );
        f.metadata.generation = Some(4);
        f
    }

    fn deployment(replicas: i32, updated: i32, ready: i32) -> Deployment {
        let mut d = Deployment::default();
        d.metadata.generation = Some(2);
        d.status = Some(DeploymentStatus {
            observed_generation: Some(2),
            replicas: Some(replicas),
            updated_replicas: Some(updated),
            ready_replicas: Some(ready),
            ..DeploymentStatus::default()
        });
        d
    }

    fn conditions(s: &PhoenixFlowStatus) -> Vec<(&str, &str, &str)> {
        s.conditions.iter().map(|c| (c.type_.as_str(), c.status.as_str(), c.reason.as_str())).collect()
    }

    #[test]
    fn ready_once_every_pod_is_updated_and_ready() {
        let s = status(&flow(2), Some(&deployment(2, 2, 2)), Some("abc"), None);
        assert_eq!(s.phase.as_deref(), Some("Ready"));
        assert_eq!(
            conditions(&s),
            [("Ready", "True", "Running"), ("Progressing", "False", "Complete"), ("Degraded", "False", "AsExpected")]
        );
        assert_eq!((s.replicas, s.ready_replicas, s.observed_generation), (2, 2, Some(4)));
        assert_eq!(s.hash.as_deref(), Some("abc"));
    }

    #[test]
    fn a_rolling_update_is_progressing_and_still_ready() {
        let s = status(&flow(2), Some(&deployment(3, 1, 2)), Some("abc"), None);
        assert_eq!(s.phase.as_deref(), Some("Progressing"));
        assert_eq!(conditions(&s)[..2], [("Ready", "True", "RollingOut"), ("Progressing", "True", "RollingOut")]);
    }

    #[test]
    fn an_invalid_flow_keeps_the_running_hash_and_transition_times() {
        let mut f = flow(1);
        let before = status(&f, Some(&deployment(1, 1, 1)), Some("old"), None);
        f.status = Some(before.clone());
        let s = status(&f, Some(&deployment(1, 1, 1)), None, Some(("InvalidFlow", "error[E0013]".into())));
        assert_eq!(s.phase.as_deref(), Some("Degraded"));
        assert_eq!(s.hash.as_deref(), Some("old"), "the pods still run the old flow");
        assert_eq!(s.conditions[0].last_transition_time, before.conditions[0].last_transition_time);
        assert_eq!(conditions(&s)[2], ("Degraded", "True", "InvalidFlow"));
    }
}
