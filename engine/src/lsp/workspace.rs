//! The open documents and what the compiler says about each. Imports resolve through the open
//! documents first (their unsaved text), then the disk.

use super::text::LineIndex;
use crate::EngineCatalog;
use crate::loader::normalize;
use lsp_types::Url;
use phoenix_dsl::query::Index;
use phoenix_dsl::span::FileId;
use phoenix_dsl::{Compilation, Loader};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// One open document.
#[derive(Debug)]
pub struct Document {
    pub uri: Url,
    pub version: i32,
    pub text: String,
    pub lines: LineIndex,
    pub analysis: Analysis,
}

/// A document compiled as the root of a flow.
#[derive(Debug)]
pub struct Analysis {
    pub compilation: Compilation,
    pub index: Index,
}

impl Analysis {
    /// The root file: `compile` loads it first.
    pub const ROOT: FileId = FileId(0);
}

#[derive(Debug, Default)]
pub struct Workspace {
    /// By file name, as the compiler names files (a normalised path, or the URI when the
    /// document is not a file).
    pub docs: HashMap<String, Document>,
}

/// The file name the compiler uses for a URI.
pub fn name_of(uri: &Url) -> String {
    match uri.to_file_path() {
        Ok(p) => normalize(&p),
        Err(()) => uri.to_string(),
    }
}

/// The URI of a file the compiler named.
pub fn uri_of(name: &str) -> Option<Url> {
    if Path::new(name).is_absolute() { Url::from_file_path(name).ok() } else { Url::parse(name).ok() }
}

impl Workspace {
    pub fn open(&mut self, uri: Url, version: i32, text: String, catalog: &EngineCatalog) -> String {
        let name = name_of(&uri);
        let analysis = self.analyse(&name, &text, catalog);
        let lines = LineIndex::new(&text);
        self.docs.insert(name.clone(), Document { uri, version, text, lines, analysis });
        name
    }

    pub fn close(&mut self, uri: &Url) {
        self.docs.remove(&name_of(uri));
    }

    /// Compile `text` as the file `name`, its imports from the open documents or the disk.
    pub fn analyse(&self, name: &str, text: &str, catalog: &EngineCatalog) -> Analysis {
        let loader = WorkspaceLoader { ws: self, root: (name, text) };
        let compilation = phoenix_dsl::compile(name, &loader, catalog);
        let index = Index::build(&compilation);
        Analysis { compilation, index }
    }

    /// The other open documents whose compilation read the file `changed`: they are checked
    /// again when it changes.
    pub fn dependents(&self, changed: &str) -> Vec<String> {
        self.docs
            .iter()
            .filter(|(n, d)| *n != changed && d.analysis.compilation.sources.files().any(|(_, f)| f.name == changed))
            .map(|(n, _)| n.clone())
            .collect()
    }

    pub fn reanalyse(&mut self, name: &str, catalog: &EngineCatalog) {
        let Some(doc) = self.docs.get(name) else { return };
        let analysis = self.analyse(name, &doc.text, catalog);
        if let Some(doc) = self.docs.get_mut(name) {
            doc.analysis = analysis;
        }
    }
}

/// Loads the root from the editor, imports from open documents, anything else from disk.
struct WorkspaceLoader<'a> {
    ws: &'a Workspace,
    root: (&'a str, &'a str),
}

/// The name of `path` imported from the file named `from`: relative to its directory.
pub fn resolve(path: &str, from: Option<&str>) -> String {
    let full: PathBuf = match from {
        Some(f) if Path::new(path).is_relative() => Path::new(f).parent().unwrap_or(Path::new("")).join(path),
        _ => PathBuf::from(path),
    };
    normalize(&full)
}

impl Loader for WorkspaceLoader<'_> {
    fn load(&self, path: &str, from: Option<&str>) -> Result<(String, Vec<u8>), String> {
        let name = if from.is_none() { path.to_string() } else { resolve(path, from) };
        if name == self.root.0 {
            return Ok((name, self.root.1.as_bytes().to_vec()));
        }
        if let Some(doc) = self.ws.docs.get(&name) {
            return Ok((name, doc.text.as_bytes().to_vec()));
        }
        let bytes = std::fs::read(&name).map_err(|e| e.to_string())?;
        Ok((name, bytes))
    }
}
