//! Data-driven test cases for Phoenix. Each case is a `.phx` file with a golden output beside it:
//!
//! - `cases/parse/NAME.phx` → `NAME.ast`: the syntax tree (`phoenix_dsl::fmt::dump`).
//! - `cases/errors/NAME.phx` → `NAME.stderr`: the rendered diagnostics, exactly as users see them.
//! - `cases/plan/NAME.phx` → `NAME.plan`: the planned DAG with its DataFusion expressions.
//!
//! Run `BLESS=1 cargo test -p phoenix-tests` to (re)write golden files, then review the diff.

use std::path::{Path, PathBuf};

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ is inside the workspace").to_path_buf()
}

/// `.phx` files in a folder, sorted.
pub fn phx_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.extension().is_some_and(|e| e == "phx")).collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

/// Compares `actual` with the golden file, or writes it when `BLESS` is set. Returns a
/// description of the mismatch, if any.
pub fn golden(path: &Path, actual: &str) -> Option<String> {
    if std::env::var_os("BLESS").is_some() {
        std::fs::write(path, actual).expect("write golden file");
        return None;
    }
    let expected = std::fs::read_to_string(path).unwrap_or_default();
    if expected == actual {
        return None;
    }
    Some(format!(
        "--- {} (expected)\n{expected}\n+++ actual\n{actual}\n(run `BLESS=1 cargo test -p phoenix-tests` to accept)\n",
        path.display()
    ))
}

/// Compile a flow file with the engine's catalog, naming it by its path relative to `tests/`
/// so rendered diagnostics are the same on every machine.
pub fn compile(path: &Path) -> phoenix_dsl::Compilation {
    let name = path.strip_prefix(Path::new(env!("CARGO_MANIFEST_DIR"))).unwrap_or(path).to_string_lossy().into_owned();
    let bytes = std::fs::read(path).expect("read case");
    let loader =
        CaseLoader { root: name.clone(), bytes, dir: path.parent().map(Path::to_path_buf).unwrap_or_default() };
    phoenix_dsl::compile(&name, &loader, &phoenix_engine::EngineCatalog::new())
}

/// Loads the case file from memory and its imports from the case's folder.
struct CaseLoader {
    root: String,
    bytes: Vec<u8>,
    dir: PathBuf,
}

impl phoenix_dsl::Loader for CaseLoader {
    fn load(&self, path: &str, from: Option<&str>) -> Result<(String, Vec<u8>), String> {
        if from.is_none() {
            return Ok((self.root.clone(), self.bytes.clone()));
        }
        let full = self.dir.join(path);
        let bytes = std::fs::read(&full).map_err(|e| e.to_string())?;
        Ok((path.to_string(), bytes))
    }
}
