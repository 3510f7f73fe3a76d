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
