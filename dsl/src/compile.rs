//! The front end in one call: load the root file and its imports, parse, check, and (if clean)
//! lower to a [`Plan`].

use crate::ast::{Item, Module};
use crate::catalog::Catalog;
use crate::check::facts::Facts;
use crate::check::typed::TExpr;
use crate::diagnostic::{Code, Diagnostic};
use crate::plan::{FlowGraph, Plan};
use crate::span::{SourceMap, Span};
use std::collections::{HashSet, VecDeque};

/// Where flow text comes from. The `dsl` crate does no I/O: the engine passes a file-system
/// loader, tests pass an in-memory one.
pub trait Loader {
    /// Read `path`, as imported from the file named `from` (`None` for the root). Returns the
    /// canonical name (used for display and to load each file once) and the raw bytes.
    fn load(&self, path: &str, from: Option<&str>) -> Result<(String, Vec<u8>), String>;
}

/// The outcome of compiling a flow: its files, its diagnostics, and the typed flow when parsing
/// succeeded (even if checking found errors, for `graph` on a broken flow).
#[derive(Debug)]
pub struct Compilation {
    pub sources: SourceMap,
    pub diagnostics: Vec<Diagnostic>,
    pub modules: Vec<Module>,
    pub flow: Option<FlowGraph<TExpr>>,
    /// What editors ask about (empty when parsing failed).
    pub facts: Facts,
}

impl Compilation {
    pub fn has_errors(&self) -> bool {
        self.diagnostics.iter().any(Diagnostic::is_error)
    }

    /// The flow lowered to DataFusion expressions; `None` if there are errors.
    pub fn plan(&self, catalog: &dyn Catalog) -> Option<Plan> {
        if self.has_errors() {
            return None;
        }
        crate::stack::with_room(|| crate::plan::lower_flow(self.flow.clone()?, catalog).ok())
    }

    pub fn render(&self, color: bool) -> String {
        crate::diagnostic::render(&self.sources, &self.diagnostics, color)
    }
}

/// Compile the flow at `root`.
pub fn compile(root: &str, loader: &dyn Loader, catalog: &dyn Catalog) -> Compilation {
    crate::stack::with_room(|| compile_on(root, loader, catalog))
}

fn compile_on(root: &str, loader: &dyn Loader, catalog: &dyn Catalog) -> Compilation {
    let mut sources = SourceMap::new();
    let mut diagnostics = Vec::new();
    let mut modules = Vec::new();
    let mut seen = HashSet::new();
    // Breadth-first over imports; each file once, so import cycles are harmless.
    let mut queue: VecDeque<(String, Option<(String, Span)>)> = VecDeque::from([(root.to_string(), None)]);
    let mut parse_failed = false;
    while let Some((path, from)) = queue.pop_front() {
        let loaded = loader.load(&path, from.as_ref().map(|(f, _)| f.as_str()));
        let (name, bytes) = match loaded {
            Ok(x) => x,
            Err(e) => {
                match &from {
                    Some((_, span)) => diagnostics.push(
                        Diagnostic::new(Code::ImportFailed, *span, format!("cannot import {path:?}: {e}"))
                            .label("imported here")
                            .help("import paths are relative to the importing file"),
                    ),
                    None => {
                        // No file to point into: report against an empty pseudo-file.
                        let id = sources.add(path.clone(), "");
                        diagnostics.push(Diagnostic::new(
                            Code::ImportFailed,
                            Span::new(id, 0, 0),
                            format!("cannot read {path:?}: {e}"),
                        ));
                        parse_failed = true;
                    }
                }
                continue;
            }
        };
        if !seen.insert(name.clone()) {
            continue;
        }
        let text = match String::from_utf8(bytes) {
            Ok(t) => t,
            Err(e) => {
                let valid = e.utf8_error().valid_up_to();
                let bytes = e.into_bytes();
                let lossy = String::from_utf8_lossy(&bytes).into_owned();
                let id = sources.add(name, lossy);
                // Offsets in the lossy text match up to the first bad byte.
                diagnostics.push(
                    Diagnostic::new(Code::InvalidUtf8, Span::new(id, valid, valid + 1), "file is not valid UTF-8")
                        .label("invalid byte here")
                        .help("save the file as UTF-8"),
                );
                parse_failed = true;
                continue;
            }
        };
        let id = sources.add(name.clone(), text);
        match crate::parser::parse(id, &sources.get(id).text) {
            Ok(m) => {
                for item in &m.items {
                    if let Item::Import(i) = item {
                        queue.push_back((i.path.clone(), Some((name.clone(), i.path_span))));
                    }
                }
                modules.push(m);
            }
            Err(d) => {
                diagnostics.extend(d);
                parse_failed = true;
            }
        }
    }
    if parse_failed {
        return Compilation { sources, diagnostics, modules, flow: None, facts: Facts::default() };
    }
    let (flow, mut checked, facts) = crate::check::check(&modules, &sources, catalog);
    diagnostics.append(&mut checked);
    Compilation { sources, diagnostics, modules, flow: Some(flow), facts }
}

/// A loader over in-memory files (tests, fuzzing, `phoenix check -`).
#[derive(Debug, Default, Clone)]
pub struct MemoryLoader {
    pub files: Vec<(String, Vec<u8>)>,
}

impl MemoryLoader {
    pub fn new(files: impl IntoIterator<Item = (String, Vec<u8>)>) -> Self {
        MemoryLoader { files: files.into_iter().collect() }
    }
}

impl Loader for MemoryLoader {
    fn load(&self, path: &str, _from: Option<&str>) -> Result<(String, Vec<u8>), String> {
        self.files
            .iter()
            .find(|(n, _)| n == path)
            .map(|(n, b)| (n.clone(), b.clone()))
            .ok_or_else(|| "no such file".to_string())
    }
}
