//! Connecting to a cluster, and what `phoenix submit`, `status`, `list` and `delete` do there.

use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "no Kubernetes configuration: {0} (set KUBECONFIG or write ~/.kube/config; in a pod, the service account is used)"
    )]
    NoConfig(String),
    #[error("the kubeconfig cannot be used: {0}")]
    Kubeconfig(String),
    #[error("cannot connect to the cluster: {0}")]
    Connect(#[source] kube::Error),
}

/// A client for the kubeconfig's current context (or `context`), else the pod's service
/// account.
pub async fn connect(context: Option<&str>) -> Result<Client, ClientError> {
    // kube builds its TLS configuration from the process-wide rustls provider; two are linked
    // (aws-lc-rs, and ring through elasticsearch's reqwest), so none is chosen by default.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let options = KubeConfigOptions { context: context.map(str::to_string), ..KubeConfigOptions::default() };
    let config = if context.is_some() || Kubeconfig::read().is_ok() {
        Config::from_kubeconfig(&options).await.map_err(|e| ClientError::Kubeconfig(e.to_string()))?
    } else {
        Config::incluster().map_err(|e| ClientError::NoConfig(e.to_string()))?
    };
    Client::try_from(config).map_err(ClientError::Connect)
}

use super::crd::{PhoenixFlow, PhoenixFlowStatus};
use super::objects::selector;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use std::time::{Duration, Instant};

/// The field manager of `phoenix submit`.
pub const SUBMITTER: &str = "phoenix-submit";

#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("the cluster has no PhoenixFlow resource type: install it with `kubectl apply -f manifests/`")]
    NoCrd,
    #[error("the cluster refused ({reason}): {message}")]
    Forbidden { reason: String, message: String },
    #[error("no PhoenixFlow `{name}` in namespace `{namespace}`")]
    NotFound { namespace: String, name: String },
    #[error("cannot reach the cluster: {0}")]
    Unreachable(String),
    #[error("{0}")]
    Api(String),
    #[error("`{name}` is Degraded: {message}")]
    Degraded { name: String, message: String },
    #[error("`{name}` was not Ready after {timeout:?}: {last}")]
    Timeout { name: String, timeout: Duration, last: String },
}

/// Whether a 404 means the resource type is not served, not that one object is missing. A
/// read of an unserved type gets a Status saying so; a write (the apply of `submit`) reaches
/// no handler at all and gets the API server's plain-text "404 page not found".
pub(crate) fn type_not_served(s: &kube::core::Status) -> bool {
    s.code == 404
        && (s.message.contains("could not find the requested resource") || s.message.contains("404 page not found"))
}

/// Name the failures a user can act on.
fn classify(e: kube::Error) -> CommandError {
    match e {
        kube::Error::Api(s) if type_not_served(&s) => CommandError::NoCrd,
        kube::Error::Api(s) if s.is_forbidden() || s.code == 401 => CommandError::Forbidden {
            reason: if s.code == 401 { "not authenticated".into() } else { "RBAC".into() },
            message: s.message,
        },
        kube::Error::Api(s) => CommandError::Api(format!("{} ({})", s.message, s.code)),
        e @ (kube::Error::HyperError(_) | kube::Error::Service(_)) => CommandError::Unreachable(e.to_string()),
        e => CommandError::Api(e.to_string()),
    }
}

/// Whether a submission is only tried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DryRun {
    /// Validated and defaulted by the API server, not stored.
    Server,
}

/// Apply `flow` (server-side apply as `phoenix-submit`); returns it as the server has it.
pub async fn submit(client: &Client, flow: &PhoenixFlow, dry_run: Option<DryRun>) -> Result<PhoenixFlow, CommandError> {
    let ns = flow.namespace().unwrap_or_else(|| client.default_namespace().to_string());
    let api: Api<PhoenixFlow> = Api::namespaced(client.clone(), &ns);
    let mut params = PatchParams::apply(SUBMITTER).force();
    if dry_run == Some(DryRun::Server) {
        params = params.dry_run();
    }
    api.patch(&flow.name_any(), &params, &Patch::Apply(flow)).await.map_err(classify)
}

/// A one-line account of a flow's status.
pub fn progress_line(s: Option<&PhoenixFlowStatus>) -> String {
    let Some(s) = s else {
        return "no status yet (is `phoenix controller` running? kubectl -n phoenix-system get deploy phoenix-controller)"
            .into();
    };
    let phase = s.phase.as_deref().unwrap_or("Unknown");
    let why = s
        .conditions
        .iter()
        .find(|c| c.type_ == phase || (phase == "Progressing" && c.type_ == "Ready"))
        .map(|c| c.message.lines().next().unwrap_or("").to_string())
        .unwrap_or_default();
    format!(
        "{phase}: {}/{} ready{}",
        s.ready_replicas,
        s.replicas,
        if why.is_empty() { String::new() } else { format!(" — {why}") }
    )
}

/// Follow `name` until the controller reports the `generation` submitted Ready; fails on
/// Degraded or after `timeout`. `progress` is called with each new line.
pub async fn wait_ready(
    client: &Client,
    namespace: &str,
    name: &str,
    generation: Option<i64>,
    timeout: Duration,
    mut progress: impl FnMut(&str),
) -> Result<PhoenixFlow, CommandError> {
    let api: Api<PhoenixFlow> = Api::namespaced(client.clone(), namespace);
    let start = Instant::now();
    let mut last = String::new();
    loop {
        let flow = api
            .get_opt(name)
            .await
            .map_err(classify)?
            .ok_or_else(|| CommandError::NotFound { namespace: namespace.into(), name: name.into() })?;
        let status = flow.status.as_ref().filter(|s| s.observed_generation >= generation);
        let line = progress_line(status);
        if line != last {
            progress(&line);
            last = line;
        }
        match status.and_then(|s| s.phase.as_deref()) {
            Some("Ready") => return Ok(flow),
            Some("Degraded") => {
                let s = status.expect("a status");
                let message = s.conditions.iter().find(|c| c.type_ == "Degraded").map(|c| c.message.clone());
                return Err(CommandError::Degraded { name: name.into(), message: message.unwrap_or_default() });
            }
            _ => {}
        }
        if start.elapsed() >= timeout {
            return Err(CommandError::Timeout { name: name.into(), timeout, last });
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// `phoenix status`: the flow's phase, conditions, replicas and pods.
pub async fn status(client: &Client, namespace: &str, name: &str) -> Result<String, CommandError> {
    use std::fmt::Write;
    let api: Api<PhoenixFlow> = Api::namespaced(client.clone(), namespace);
    let flow = api
        .get_opt(name)
        .await
        .map_err(classify)?
        .ok_or_else(|| CommandError::NotFound { namespace: namespace.into(), name: name.into() })?;
    let mut out = String::new();
    let s = flow.status.clone().unwrap_or_default();
    let _ = writeln!(
        out,
        "{name} ({namespace}): {}\n  replicas: {} wanted, {} running, {} ready\n  flow hash: {}\n  generation: {} (observed {})",
        s.phase.as_deref().unwrap_or("no status yet"),
        flow.spec.replicas.map_or("autoscaled".to_string(), |r| r.to_string()),
        s.replicas,
        s.ready_replicas,
        s.hash.as_deref().unwrap_or("-"),
        flow.metadata.generation.unwrap_or(0),
        s.observed_generation.map_or("-".to_string(), |g| g.to_string()),
    );
    if !s.conditions.is_empty() {
        let _ = writeln!(out, "  conditions:");
        for c in &s.conditions {
            let _ = writeln!(
                out,
                "    {:<12} {:<6} {:<16} {}",
                c.type_,
                c.status,
                c.reason,
                c.message.lines().next().unwrap_or("")
            );
            for more in c.message.lines().skip(1) {
                let _ = writeln!(out, "    {:<36} {more}", "");
            }
        }
    }
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let list = pods.list(&ListParams::default().labels(&selector(name))).await.map_err(classify)?;
    let _ = writeln!(out, "  pods:{}", if list.items.is_empty() { " none" } else { "" });
    for p in &list.items {
        let st = p.status.clone().unwrap_or_default();
        let ready = st.conditions.iter().flatten().any(|c| c.type_ == "Ready" && c.status == "True");
        let restarts: i32 = st.container_statuses.iter().flatten().map(|c| c.restart_count).sum();
        let _ = writeln!(
            out,
            "    {:<40} {:<10} {:<9} {restarts} restarts",
            p.name_any(),
            st.phase.as_deref().unwrap_or("Unknown"),
            if ready { "ready" } else { "not ready" },
        );
    }
    Ok(out)
}

/// `phoenix list`: one line per flow (every namespace when `namespace` is `None`).
pub async fn list(client: &Client, namespace: Option<&str>) -> Result<String, CommandError> {
    let api: Api<PhoenixFlow> = match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let flows = api.list(&ListParams::default()).await.map_err(classify)?;
    let mut out =
        format!("{:<16} {:<32} {:<9} {:<6} {:<12} {}\n", "NAMESPACE", "NAME", "REPLICAS", "READY", "PHASE", "HASH");
    for f in &flows.items {
        let s = f.status.clone().unwrap_or_default();
        out.push_str(&format!(
            "{:<16} {:<32} {:<9} {:<6} {:<12} {}\n",
            f.namespace().unwrap_or_default(),
            f.name_any(),
            f.spec.replicas.map_or("auto".to_string(), |r| r.to_string()),
            s.ready_replicas,
            s.phase.as_deref().unwrap_or("-"),
            s.hash.as_deref().unwrap_or("-"),
        ));
    }
    Ok(out)
}

/// `phoenix delete`: the flow and (through owner references) everything made of it. With
/// `wait`, deletion is in the foreground and returns once the flow and its objects are gone.
pub async fn delete(client: &Client, namespace: &str, name: &str, wait: Option<Duration>) -> Result<(), CommandError> {
    let api: Api<PhoenixFlow> = Api::namespaced(client.clone(), namespace);
    let params = if wait.is_some() { DeleteParams::foreground() } else { DeleteParams::background() };
    match api.delete(name, &params).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.is_not_found() && !type_not_served(&s) => {
            return Err(CommandError::NotFound { namespace: namespace.into(), name: name.into() });
        }
        Err(e) => return Err(classify(e)),
    }
    let Some(timeout) = wait else { return Ok(()) };
    let start = Instant::now();
    while api.get_opt(name).await.map_err(classify)?.is_some() {
        if start.elapsed() >= timeout {
            return Err(CommandError::Timeout { name: name.into(), timeout, last: "still being deleted".into() });
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Ok(())
}
