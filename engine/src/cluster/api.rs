//! `phoenix controller --api-address`: the control-plane API (`crate::api::router`, the same
//! handlers, keys and answers as `phoenix serve`) over the PhoenixFlow resources of one
//! namespace. A PUT checks the text with the compiler and server-side applies the resource;
//! the controller's reconcile makes its pods, so nothing runs in this process. Event
//! definitions live in a `phoenix serve` flow directory and are not served here (501).

use super::bundle::{FlowFiles, SpecLoader, check_files, flow_hash, phoenix_flow};
use super::crd::PhoenixFlow;
use crate::EngineCatalog;
use crate::api::backend::{FlowBackend, Put, PutError, Stored, not_compiling};
use crate::api::flows::{ApiDiagnostic, ChangeError, diagnostics, if_match};
use crate::api::keys::KeyFile;
use crate::api::store::StoreError;
use crate::observability::metrics::Metrics;
use crate::options::Settings;
use crate::taskgraph::{TaskGraph, node_labels};
use futures::future::BoxFuture;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, Preconditions};
use kube::{Client, ResourceExt};
use phoenix_dsl::Compilation;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;

/// The field manager of what the API applies: `managedFields` tell an API change from a
/// `phoenix submit` (`phoenix-submit`) or the reconcile (`phoenix-controller`).
pub const MANAGER: &str = "phoenix-api";

/// The PhoenixFlows of one namespace, as the API's flows.
pub struct ClusterFlows {
    client: Client,
    namespace: String,
    catalog: EngineCatalog,
}

impl std::fmt::Debug for ClusterFlows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterFlows").field("namespace", &self.namespace).finish_non_exhaustive()
    }
}

fn cluster(e: kube::Error) -> StoreError {
    StoreError::Cluster(match e {
        kube::Error::Api(s) => format!("{} ({})", s.message, s.code),
        e => e.to_string(),
    })
}

/// The entity tag of a resource: its flow hash (of every file, so a changed import changes it
/// too), the hash `status.hash` shows once the pods run it.
pub fn etag_of(flow: &PhoenixFlow) -> String {
    format!("\"{}\"", flow_hash(&flow.spec.main, &flow.spec.files))
}

impl ClusterFlows {
    pub fn new(client: Client, namespace: impl Into<String>) -> ClusterFlows {
        ClusterFlows { client, namespace: namespace.into(), catalog: EngineCatalog::new() }
    }

    fn api(&self) -> Api<PhoenixFlow> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    fn stored(&self, flow: &PhoenixFlow) -> Stored {
        Stored {
            name: flow.name_any(),
            text: flow.spec.files.get(&flow.spec.main).cloned().unwrap_or_default(),
            etag: etag_of(flow),
            status: self.status(flow),
            // The counters are in the pods' `/metrics`, not here.
            nodes: json!([]),
            files: flow.spec.files.clone(),
            root: flow.spec.main.clone(),
        }
    }

    /// The resource's status as the API shows it: `state` is the phase in lower case, or
    /// `pending` until the controller has seen this generation of the spec. A Degraded flow
    /// that does not compile carries the compiler's diagnostics.
    fn status(&self, flow: &PhoenixFlow) -> Value {
        let generation = flow.metadata.generation;
        let s = flow.status.clone().unwrap_or_default();
        let current = s.observed_generation.is_some() && s.observed_generation >= generation;
        let state = match (&s.phase, current) {
            (Some(phase), true) => phase.to_lowercase(),
            _ => "pending".to_string(),
        };
        let mut out = json!({
            "state": state,
            "phase": s.phase,
            "generation": generation,
            "observedGeneration": s.observed_generation,
            "replicas": s.replicas,
            "readyReplicas": s.ready_replicas,
            "hash": s.hash,
            "conditions": s.conditions,
        });
        if s.phase.as_deref() == Some("Degraded")
            && let Some(c) = s.conditions.iter().find(|c| c.type_ == "Degraded")
        {
            out["error"] = json!(c.message);
            if c.reason == "InvalidFlow" {
                let c = self.front_end_of(&self.stored_files(flow));
                out["diagnostics"] = json!(diagnostics(&c));
            }
        }
        out
    }

    /// Only what compiling needs (no status, which would recurse).
    fn stored_files(&self, flow: &PhoenixFlow) -> Stored {
        Stored {
            name: flow.name_any(),
            text: String::new(),
            etag: String::new(),
            status: Value::Null,
            nodes: Value::Null,
            files: flow.spec.files.clone(),
            root: flow.spec.main.clone(),
        }
    }

    /// The PhoenixFlow a PUT of `text` as `name` makes: the root file replaced (a new flow's is
    /// `NAME.phx`), its other files kept, how it runs read from its `deploy` block as `phoenix
    /// submit` reads it. Checked by the same front end as the reconcile, so what is accepted
    /// here is what the controller deploys.
    fn flow_of(
        &self,
        name: &str,
        text: String,
        existing: Option<&PhoenixFlow>,
    ) -> Result<(PhoenixFlow, Vec<ApiDiagnostic>), PutError> {
        let (main, mut files) = match existing {
            Some(f) => (f.spec.main.clone(), f.spec.files.clone()),
            None => (format!("{name}.phx"), BTreeMap::new()),
        };
        files.insert(main.clone(), text);
        let c = phoenix_dsl::compile(&main, &SpecLoader { files: &files }, &self.catalog);
        let found = diagnostics(&c);
        if c.has_errors() {
            return Err(PutError::Invalid(found));
        }
        let flow = phoenix_flow(&c, FlowFiles { main, files }, &Settings::default(), Some(name), Some(&self.namespace))
            .map_err(|e| PutError::Refused(e.to_string()))?;
        check_files(&flow.spec).map_err(|e| PutError::Refused(e.to_string()))?;
        Ok((flow, found))
    }

    async fn put_flow(&self, name: &str, text: String, wanted: Option<&str>) -> Result<Put, PutError> {
        let api = self.api();
        let existing = api.get_opt(name).await.map_err(|e| ChangeError::Store(cluster(e)))?;
        let (mut flow, warnings) = self.flow_of(name, text, existing.as_ref())?;
        let current = existing.as_ref().map(etag_of);
        if let Some(wanted) = wanted {
            if !if_match(wanted, current.as_deref()) {
                return Err(ChangeError::PreconditionFailed { current }.into());
            }
            // The apply then fails (409) if the resource changed since it was read, so no other
            // change slips in between the comparison and the write.
            flow.metadata.resource_version = existing.as_ref().and_then(|f| f.resource_version());
        }
        let params = PatchParams::apply(MANAGER).force();
        let applied = match api.patch(name, &params, &Patch::Apply(&flow)).await {
            Ok(f) => f,
            Err(kube::Error::Api(s)) if s.code == 409 && wanted.is_some() => {
                return Err(ChangeError::PreconditionFailed { current }.into());
            }
            Err(e) => return Err(ChangeError::Store(cluster(e)).into()),
        };
        tracing::info!(flow = %name, namespace = %self.namespace, "PhoenixFlow applied through the API");
        Ok(Put { existed: existing.is_some(), etag: etag_of(&applied), status: self.status(&applied), warnings })
    }

    async fn delete_flow(&self, name: &str, wanted: Option<&str>) -> Result<bool, ChangeError> {
        let api = self.api();
        let mut params = DeleteParams::background();
        let mut current = None;
        if let Some(wanted) = wanted {
            let existing = api.get_opt(name).await.map_err(cluster)?;
            current = existing.as_ref().map(etag_of);
            if !if_match(wanted, current.as_deref()) {
                return Err(ChangeError::PreconditionFailed { current });
            }
            // As for a PUT: the version compared is the version deleted.
            params.preconditions = Some(Preconditions {
                resource_version: existing.as_ref().and_then(|f| f.resource_version()),
                uid: None,
            });
        }
        match api.delete(name, &params).await {
            Ok(_) => {
                tracing::info!(flow = %name, namespace = %self.namespace, "PhoenixFlow deleted through the API");
                Ok(true)
            }
            Err(kube::Error::Api(s)) if s.code == 404 && !super::client::type_not_served(&s) => Ok(false),
            Err(kube::Error::Api(s)) if s.code == 409 && wanted.is_some() => {
                Err(ChangeError::PreconditionFailed { current })
            }
            Err(e) => Err(ChangeError::Store(cluster(e))),
        }
    }
}

impl FlowBackend for ClusterFlows {
    fn catalog(&self) -> &EngineCatalog {
        &self.catalog
    }

    fn all(&self) -> BoxFuture<'_, Result<Vec<Stored>, StoreError>> {
        Box::pin(async move {
            let list = self.api().list(&ListParams::default()).await.map_err(cluster)?;
            let mut out: Vec<Stored> = list.items.iter().map(|f| self.stored(f)).collect();
            out.sort_by(|a, b| a.name.cmp(&b.name));
            Ok(out)
        })
    }

    fn one<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Option<Stored>, StoreError>> {
        Box::pin(async move { Ok(self.api().get_opt(name).await.map_err(cluster)?.map(|f| self.stored(&f))) })
    }

    fn put<'a>(
        &'a self,
        name: &'a str,
        text: String,
        if_match: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Put, PutError>> {
        Box::pin(self.put_flow(name, text, if_match))
    }

    fn remove<'a>(&'a self, name: &'a str, if_match: Option<&'a str>) -> BoxFuture<'a, Result<bool, ChangeError>> {
        Box::pin(self.delete_flow(name, if_match))
    }

    fn front_end_of(&self, flow: &Stored) -> Compilation {
        phoenix_dsl::compile(&flow.root, &SpecLoader { files: &flow.files }, &self.catalog)
    }

    fn task_graph_of(&self, flow: &Stored) -> Result<TaskGraph, String> {
        let c = self.front_end_of(flow);
        if c.has_errors() {
            return Err(not_compiling(c.diagnostics.len()));
        }
        // Lowering a flow the checker accepted does not fail; say so if it ever does.
        let plan = c.plan(&self.catalog).ok_or_else(|| "the flow checked but could not be planned".to_string())?;
        // Counters of its own, which no `/metrics` shows: nothing runs.
        let metrics = Metrics::new(node_labels(&plan, &c.sources));
        TaskGraph::build(&plan, &c.sources, &metrics).map_err(|e| e.to_string())
    }
}

/// Where and how the controller serves the API.
#[derive(Debug, Clone)]
pub struct ApiOptions {
    /// `HOST:PORT` to listen on.
    pub address: String,
    /// The namespace whose PhoenixFlows the API serves.
    pub namespace: String,
    /// The API keys (`--api-keys`, a mounted Secret), re-read when the file changes.
    pub keys: KeyFile,
}

/// Bind `options.address` and serve `/api/v1` over the namespace's PhoenixFlows until `stop`
/// is cancelled. Returns once listening, with the address bound.
pub async fn spawn(
    client: Client,
    options: ApiOptions,
    stop: tokio_util::sync::CancellationToken,
) -> Result<std::net::SocketAddr, crate::observability::server::ServerError> {
    let listener = crate::observability::server::bind(&options.address).await?;
    let bound = listener.local_addr().map_err(crate::observability::server::ServerError::Serve)?;
    let flows: Arc<dyn FlowBackend> = Arc::new(ClusterFlows::new(client, options.namespace.clone()));
    let app = crate::api::router(flows, options.keys, None);
    tracing::info!(address = %bound, namespace = %options.namespace, "serving /api/v1 over PhoenixFlows");
    tokio::spawn(async move {
        let served = axum::serve(listener, app).with_graceful_shutdown(async move { stop.cancelled().await });
        if let Err(e) = served.await {
            tracing::error!("controller API server: {e}");
        }
    });
    Ok(bound)
}
