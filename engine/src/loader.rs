//! Reads flow files from disk for the front end (which does no I/O itself).

use phoenix_dsl::Loader;
use std::path::{Component, Path, PathBuf};

/// Loads the root file as given and imports relative to the importing file's directory.
#[derive(Debug, Default, Clone, Copy)]
pub struct FsLoader;

impl Loader for FsLoader {
    fn load(&self, path: &str, from: Option<&str>) -> Result<(String, Vec<u8>), String> {
        let full: PathBuf = match from {
            Some(f) if Path::new(path).is_relative() => Path::new(f).parent().unwrap_or(Path::new("")).join(path),
            _ => PathBuf::from(path),
        };
        let name = normalize(&full);
        let bytes = if name == "-" {
            let mut buf = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf).map_err(|e| e.to_string())?;
            buf
        } else {
            std::fs::read(&name).map_err(|e| e.to_string())?
        };
        Ok((name, bytes))
    }
}

/// `a/./b/../c.phx` → `a/c.phx`, without touching the file system (keeps names readable).
pub(crate) fn normalize(p: &Path) -> String {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir if out.components().next_back().is_some_and(|l| matches!(l, Component::Normal(_))) => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    if out.as_os_str().is_empty() { ".".into() } else { out.to_string_lossy().into_owned() }
}
