//! Where `phoenix serve` keeps flows: named `.phx` texts and what became of each. The handlers
//! see them through [`super::backend::FlowBackend`], which the cluster controller implements
//! over PhoenixFlow resources instead.

use serde::Serialize;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("`{0}` is not a flow name: use 1 to 63 lowercase letters, digits and `-`, starting with a letter or digit")]
    BadName(String),
    #[error("flow store {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The Kubernetes API server behind `phoenix controller` refused a call or could not be
    /// reached.
    #[error("the cluster: {0}")]
    Cluster(String),
}

/// What became of a stored flow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum FlowStatus {
    /// Its connectors are being built or reaching their services, or it is processing events.
    Running,
    /// It is draining: sources stopped, sinks writing what they hold.
    Draining,
    /// Its inputs ended and everything was delivered.
    Finished,
    /// It stopped with an error.
    Failed { error: String },
    /// The stored text does not compile (only a file put in the directory by hand: the API
    /// refuses such texts).
    Invalid { errors: usize },
}

/// Named flow texts and their status. Names are checked by [`check_name`] before any call.
pub trait FlowStore: std::fmt::Debug + Send + Sync + 'static {
    /// Every stored name, sorted.
    fn list(&self) -> Result<Vec<String>, StoreError>;
    fn get(&self, name: &str) -> Result<Option<String>, StoreError>;
    /// Store `text` under `name`, replacing what was there.
    fn put(&self, name: &str, text: &str) -> Result<(), StoreError>;
    /// `false` if there was no such flow.
    fn delete(&self, name: &str) -> Result<bool, StoreError>;
    fn status(&self, name: &str) -> Option<FlowStatus>;
    fn set_status(&self, name: &str, status: FlowStatus);
    /// The name the flow's root file has in diagnostics and metrics (`orders.phx`), and the
    /// path its imports are resolved against.
    fn file_name(&self, name: &str) -> String;
}

/// A flow name: also a file name and (later) a Kubernetes object name, so DNS-label rules.
pub fn check_name(name: &str) -> Result<(), StoreError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok { Ok(()) } else { Err(StoreError::BadName(name.to_string())) }
}

/// Flows as `DIR/NAME.phx` files; statuses in memory (they describe this process's flows).
#[derive(Debug)]
pub struct DirStore {
    dir: PathBuf,
    statuses: Mutex<HashMap<String, FlowStatus>>,
}

impl DirStore {
    /// The directory must exist.
    pub fn open(dir: impl Into<PathBuf>) -> Result<DirStore, StoreError> {
        let dir = dir.into();
        let meta = std::fs::metadata(&dir).map_err(|source| io(&dir, source))?;
        if !meta.is_dir() {
            return Err(io(&dir, std::io::Error::new(std::io::ErrorKind::NotADirectory, "not a directory")));
        }
        Ok(DirStore { dir, statuses: Mutex::new(HashMap::new()) })
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.phx"))
    }

    fn statuses(&self) -> std::sync::MutexGuard<'_, HashMap<String, FlowStatus>> {
        self.statuses.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn io(path: &Path, source: std::io::Error) -> StoreError {
    StoreError::Io { path: path.display().to_string(), source }
}

impl FlowStore for DirStore {
    fn list(&self) -> Result<Vec<String>, StoreError> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&self.dir).map_err(|e| io(&self.dir, e))? {
            let entry = entry.map_err(|e| io(&self.dir, e))?;
            let file = entry.file_name();
            // Files whose stem is no flow name (`Shared Schemas.phx`) can still be imported.
            if let Some(stem) = file.to_str().and_then(|f| f.strip_suffix(".phx"))
                && check_name(stem).is_ok()
            {
                names.push(stem.to_string());
            }
        }
        names.sort();
        Ok(names)
    }

    fn get(&self, name: &str) -> Result<Option<String>, StoreError> {
        let path = self.path(name);
        match std::fs::read_to_string(&path) {
            Ok(text) => Ok(Some(text)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(&path, e)),
        }
    }

    fn put(&self, name: &str, text: &str) -> Result<(), StoreError> {
        // Write beside it and rename, so a crash leaves the old text or the new, never half.
        let path = self.path(name);
        let tmp = self.dir.join(format!(".{name}.phx.tmp"));
        std::fs::write(&tmp, text).map_err(|e| io(&tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| io(&path, e))
    }

    fn delete(&self, name: &str) -> Result<bool, StoreError> {
        self.statuses().remove(name);
        let path = self.path(name);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io(&path, e)),
        }
    }

    fn status(&self, name: &str) -> Option<FlowStatus> {
        self.statuses().get(name).cloned()
    }

    fn set_status(&self, name: &str, status: FlowStatus) {
        self.statuses().insert(name.to_string(), status);
    }

    fn file_name(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("phoenix-store-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("temp dir");
        d
    }

    #[test]
    fn names_are_dns_labels() {
        for ok in ["orders", "a", "orders-2", "0x"] {
            assert!(check_name(ok).is_ok(), "{ok}");
        }
        let long = "a".repeat(64);
        for bad in ["", "Orders", "a_b", "-a", "a-", "../etc", "a.phx", long.as_str()] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn crud_on_a_directory() {
        let d = dir("crud");
        std::fs::write(d.join("by-hand.phx"), "// x").expect("write");
        std::fs::write(d.join("Not A Name.phx"), "// shared").expect("write");
        std::fs::write(d.join("notes.txt"), "").expect("write");
        let s = DirStore::open(&d).expect("open");
        assert_eq!(s.list().expect("list"), ["by-hand"]);
        s.put("orders", "// v1").expect("put");
        s.put("orders", "// v2").expect("put again");
        assert_eq!(s.get("orders").expect("get").as_deref(), Some("// v2"));
        assert_eq!(s.list().expect("list"), ["by-hand", "orders"]);
        assert!(!d.join(".orders.phx.tmp").exists(), "the temporary file is renamed");
        s.set_status("orders", FlowStatus::Running);
        assert_eq!(s.status("orders"), Some(FlowStatus::Running));
        assert!(s.delete("orders").expect("delete"));
        assert!(!s.delete("orders").expect("delete again"));
        assert_eq!(s.get("orders").expect("get"), None);
        assert_eq!(s.status("orders"), None, "a deleted flow has no status");
        assert_eq!(s.file_name("x"), d.join("x.phx").display().to_string());
        assert!(DirStore::open(d.join("notes.txt")).is_err());
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn status_serialises_with_its_state() {
        let v = serde_json::to_value(FlowStatus::Failed { error: "port in use".into() }).expect("json");
        assert_eq!(v, serde_json::json!({"state": "failed", "error": "port in use"}));
        assert_eq!(serde_json::to_value(FlowStatus::Running).expect("json"), serde_json::json!({"state": "running"}));
    }
}
