//! The compiler's diagnostics as LSP diagnostics: code, range (UTF-16), the related spans
//! ("first defined here"), and a link to the code's explanation.

use super::text::LineIndex;
use super::workspace::{Analysis, Document, resolve, uri_of};
use lsp_server::{Message, Notification};
use lsp_types::notification::Notification as _;
use lsp_types::{
    CodeDescription, DiagnosticRelatedInformation, DiagnosticSeverity, DiagnosticTag, Location, NumberOrString,
    PublishDiagnosticsParams, Range, Url,
};
use phoenix_dsl::ast::Item;
use phoenix_dsl::diagnostic::{Code, Diagnostic, Severity};
use phoenix_dsl::span::{FileId, SourceMap, Span};
use std::collections::HashMap;

/// Where each code is explained (docs/diagnostics.md, one heading per code).
pub const DOCS: &str = "https://github.com/phoenix-dataflow/phoenix/blob/main/docs/diagnostics.md";

pub fn publish(doc: &Document) -> Message {
    let diagnostics = all(doc).into_iter().map(|(_, d)| d).collect();
    let p = PublishDiagnosticsParams { uri: doc.uri.clone(), diagnostics, version: Some(doc.version) };
    Notification::new(lsp_types::notification::PublishDiagnostics::METHOD.to_string(), p).into()
}

/// Every diagnostic of the document, beside the compiler's diagnostic it came from. Problems in
/// imported files are shown on the `import` that brings them in.
pub fn all(doc: &Document) -> Vec<(&Diagnostic, lsp_types::Diagnostic)> {
    let c = &doc.analysis.compilation;
    let mut ranges = Ranges::new(&c.sources);
    let importers = importers(&doc.analysis);
    let mut out = Vec::new();
    for d in &c.diagnostics {
        let span = d.span();
        let mut lsp = convert(d, &mut ranges, &doc.uri);
        if span.file != Analysis::ROOT {
            let Some(import) = root_import(&importers, span.file) else { continue };
            let file = &c.sources.get(span.file).name;
            lsp.message = format!("in imported {file}: {}", lsp.message);
            let here = ranges.location(span, &doc.uri);
            lsp.related_information
                .get_or_insert_with(Vec::new)
                .insert(0, DiagnosticRelatedInformation { location: here, message: d.primary.1.clone() });
            lsp.range = ranges.range(import);
        }
        out.push((d, lsp));
    }
    out
}

fn convert(d: &Diagnostic, ranges: &mut Ranges, root: &Url) -> lsp_types::Diagnostic {
    let mut message = d.message.clone();
    if let Some(h) = &d.help {
        message.push_str(&format!("\nhelp: {h}"));
    }
    for n in &d.notes {
        message.push_str(&format!("\nnote: {n}"));
    }
    let related: Vec<DiagnosticRelatedInformation> = d
        .secondary
        .iter()
        .map(|(s, label)| DiagnosticRelatedInformation { location: ranges.location(*s, root), message: label.clone() })
        .collect();
    let tags = match d.code {
        Code::UnusedSource | Code::UnusedFlow | Code::UnusedSink | Code::UnreachableArm => {
            Some(vec![DiagnosticTag::UNNECESSARY])
        }
        _ => None,
    };
    lsp_types::Diagnostic {
        range: ranges.range(d.span()),
        severity: Some(match d.severity() {
            Severity::Error => DiagnosticSeverity::ERROR,
            Severity::Warning => DiagnosticSeverity::WARNING,
        }),
        code: Some(NumberOrString::String(d.code.as_str().to_string())),
        code_description: Url::parse(&format!("{DOCS}#{}", d.code.as_str().to_lowercase()))
            .ok()
            .map(|href| CodeDescription { href }),
        source: Some("phoenix".into()),
        message,
        related_information: (!related.is_empty()).then_some(related),
        tags,
        data: None,
    }
}

/// Converts spans of any file of a compilation to LSP ranges and locations.
pub struct Ranges<'a> {
    sources: &'a SourceMap,
    lines: HashMap<FileId, LineIndex>,
}

impl<'a> Ranges<'a> {
    pub fn new(sources: &'a SourceMap) -> Self {
        Ranges { sources, lines: HashMap::new() }
    }

    pub fn range(&mut self, s: Span) -> Range {
        let text = &self.sources.get(s.file).text;
        let idx = self.lines.entry(s.file).or_insert_with(|| LineIndex::new(text));
        idx.range(text, s.start as usize, s.end as usize)
    }

    /// `root` is the URI of the root file (which may not be a file on disk).
    pub fn location(&mut self, s: Span, root: &Url) -> Location {
        let uri = if s.file == Analysis::ROOT {
            root.clone()
        } else {
            uri_of(&self.sources.get(s.file).name).unwrap_or_else(|| root.clone())
        };
        Location { uri, range: self.range(s) }
    }
}

/// For each imported file: the file and `import` that loaded it.
fn importers(a: &Analysis) -> HashMap<FileId, (FileId, Span)> {
    let c = &a.compilation;
    let by_name: HashMap<&str, FileId> = c.sources.files().map(|(id, f)| (f.name.as_str(), id)).collect();
    let mut out = HashMap::new();
    for m in &c.modules {
        for item in &m.items {
            let Item::Import(i) = item else { continue };
            let from = i.span.file;
            let name = resolve(&i.path, Some(&c.sources.get(from).name));
            if let Some(&id) = by_name.get(name.as_str()) {
                out.entry(id).or_insert((from, i.path_span));
            }
        }
    }
    out
}

/// The root file's `import` through which `file` was loaded.
fn root_import(importers: &HashMap<FileId, (FileId, Span)>, mut file: FileId) -> Option<Span> {
    for _ in 0..importers.len() + 1 {
        let (from, span) = *importers.get(&file)?;
        if from == Analysis::ROOT {
            return Some(span);
        }
        file = from;
    }
    None
}
