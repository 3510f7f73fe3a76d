//! YAML in and out (serde-saphyr: the YAML crate kube already links for kubeconfigs).

use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum YamlError {
    #[error("cannot write YAML: {0}")]
    Write(String),
    #[error("cannot read YAML: {0}")]
    Read(String),
}

/// One YAML document.
pub fn to_yaml<T: Serialize>(value: &T) -> Result<String, YamlError> {
    serde_saphyr::to_string(value).map_err(|e| YamlError::Write(e.to_string()))
}

/// Several documents, each started by `---` (as `kubectl apply -f` reads them).
pub fn to_yaml_documents<T: Serialize>(values: &[T]) -> Result<String, YamlError> {
    let mut out = String::new();
    for v in values {
        out.push_str("---\n");
        out.push_str(&to_yaml(v)?);
    }
    Ok(out)
}

/// Every document of a YAML stream, as JSON values (empty documents left out).
pub fn from_yaml_documents(text: &str) -> Result<Vec<serde_json::Value>, YamlError> {
    let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(text).map_err(|e| YamlError::Read(e.to_string()))?;
    Ok(docs.into_iter().filter(|d| !d.is_null()).collect())
}
