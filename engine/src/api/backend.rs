//! What the `/api/v1` handlers serve flows from: [`FlowBackend`]. `phoenix serve` answers from
//! [`Flows`] (a [`super::store::FlowStore`] whose flows run in this process); `phoenix
//! controller` answers from PhoenixFlow resources (`cluster::api`), whose pods the controller's
//! reconcile makes. The router is one piece of code over either.
//!
//! The methods return boxed futures rather than being `async fn`s so the trait stays object
//! safe: the router holds an `Arc<dyn FlowBackend>` and knows nothing of which one it is.

use crate::EngineCatalog;
use crate::api::flows::{ApiDiagnostic, ChangeError, Flows, etag};
use crate::api::store::StoreError;
use crate::taskgraph::TaskGraph;
use futures::future::BoxFuture;
use phoenix_dsl::Compilation;
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// A stored flow as the API shows it.
#[derive(Debug, Clone)]
pub struct Stored {
    pub name: String,
    /// The flow's root file.
    pub text: String,
    /// The entity tag of what is stored (quoted), compared with `If-Match`.
    pub etag: String,
    /// What became of it: `{"state": ...}` and whatever else the backend knows, or `null`.
    pub status: Value,
    /// Per-node counters, where the flow runs in this process; `[]` otherwise.
    pub nodes: Value,
    /// The files the flow was stored with besides its root, by path, when the store keeps a
    /// flow's imports with it (a PhoenixFlow); empty when imports are read from disk.
    pub files: BTreeMap<String, String>,
    /// The root file's name in diagnostics, and the path its imports are resolved against.
    pub root: String,
}

/// What a PUT did.
#[derive(Debug, Clone)]
pub struct Put {
    /// Whether it replaced a flow (200) rather than created one (201).
    pub existed: bool,
    pub etag: String,
    pub status: Value,
    pub warnings: Vec<ApiDiagnostic>,
}

/// Why a PUT changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum PutError {
    /// The text does not compile (400 with every diagnostic).
    #[error("the flow has errors")]
    Invalid(Vec<ApiDiagnostic>),
    /// The text compiles but cannot be stored as given (400 with the message): a `deploy`
    /// block a cluster cannot take, a flow too large for a resource.
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Change(#[from] ChangeError),
}

/// The flows the API serves. Names are checked by [`super::store::check_name`] first.
pub trait FlowBackend: std::fmt::Debug + Send + Sync + 'static {
    /// The catalog flows and event definitions are compiled against.
    fn catalog(&self) -> &EngineCatalog;

    /// Every stored flow, sorted by name.
    fn all(&self) -> BoxFuture<'_, Result<Vec<Stored>, StoreError>>;

    fn one<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Option<Stored>, StoreError>>;

    /// Check `text` with the compiler, then store it as `name` (and run it, however this
    /// backend runs flows) when the stored version matches `if_match` (an `If-Match` value).
    fn put<'a>(
        &'a self,
        name: &'a str,
        text: String,
        if_match: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Put, PutError>>;

    /// Stop and forget `name` when it matches `if_match`; `false` if there was no such flow.
    fn remove<'a>(&'a self, name: &'a str, if_match: Option<&'a str>) -> BoxFuture<'a, Result<bool, ChangeError>>;

    /// The front end of `phoenix check` on a stored flow, its imports resolved as its runs
    /// resolve them.
    fn front_end_of(&self, flow: &Stored) -> Compilation;

    /// The task graph a run of a stored flow would build (for `POST /api/v1/route`, which runs
    /// nothing); why not when it does not compile.
    fn task_graph_of(&self, flow: &Stored) -> Result<TaskGraph, String>;
}

fn status_value<T: serde::Serialize>(status: Option<T>) -> Value {
    serde_json::to_value(status).unwrap_or(Value::Null)
}

impl Flows {
    fn stored(&self, name: String, text: String) -> Stored {
        let store = self.store();
        Stored {
            etag: etag(&text),
            status: status_value(store.status(&name)),
            nodes: json!(self.counts(&name).unwrap_or_default()),
            files: BTreeMap::new(),
            root: store.file_name(&name),
            name,
            text,
        }
    }
}

/// `phoenix serve`: the flows of this process, over its directory.
impl FlowBackend for Flows {
    fn catalog(&self) -> &EngineCatalog {
        Flows::catalog(self)
    }

    fn all(&self) -> BoxFuture<'_, Result<Vec<Stored>, StoreError>> {
        Box::pin(async move {
            let mut out = Vec::new();
            for name in self.store().list()? {
                // Deleted since it was listed.
                if let Some(text) = self.store().get(&name)? {
                    out.push(self.stored(name, text));
                }
            }
            Ok(out)
        })
    }

    fn one<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Option<Stored>, StoreError>> {
        Box::pin(async move { Ok(self.store().get(name)?.map(|text| self.stored(name.to_string(), text))) })
    }

    fn put<'a>(
        &'a self,
        name: &'a str,
        text: String,
        if_match: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Put, PutError>> {
        Box::pin(async move {
            let compiled = self.compile(name, &text).map_err(PutError::Invalid)?;
            let warnings = compiled.warnings.clone();
            let existed = self.replace_if(name, &text, compiled, if_match).await?;
            Ok(Put { existed, etag: etag(&text), status: status_value(self.store().status(name)), warnings })
        })
    }

    fn remove<'a>(&'a self, name: &'a str, if_match: Option<&'a str>) -> BoxFuture<'a, Result<bool, ChangeError>> {
        Box::pin(self.delete_if(name, if_match))
    }

    fn front_end_of(&self, flow: &Stored) -> Compilation {
        self.front_end(&flow.name, &flow.text)
    }

    fn task_graph_of(&self, flow: &Stored) -> Result<TaskGraph, String> {
        match self.compile(&flow.name, &flow.text) {
            Ok(c) => c.task_graph().map_err(|e| e.to_string()),
            Err(d) => Err(not_compiling(d.len())),
        }
    }
}

/// Why `POST /api/v1/route` skipped a stored flow that does not compile.
pub fn not_compiling(diagnostics: usize) -> String {
    format!("does not compile ({diagnostics} diagnostics)")
}
