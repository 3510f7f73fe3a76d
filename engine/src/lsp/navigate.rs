//! Go to definition, find references, rename, the outline, formatting and semantic tokens.
//!
//! References are found in the document's own compilation (the file and everything it imports)
//! and in every other open document that imports the file, so renaming a sink declared in a
//! shared file also renames its uses in the flows that import it.

use super::diagnostics::Ranges;
use super::workspace::{Analysis, Document, Workspace, name_of, resolve, uri_of};
use lsp_server::ErrorCode;
use lsp_types::{
    DocumentFormattingParams, DocumentSymbol, DocumentSymbolParams, DocumentSymbolResponse, GotoDefinitionParams,
    GotoDefinitionResponse, Location, Position, PrepareRenameResponse, Range, ReferenceParams, RenameParams,
    SemanticToken, SemanticTokenModifier, SemanticTokenType, SemanticTokens, SemanticTokensLegend,
    SemanticTokensParams, SemanticTokensResult, SymbolKind, TextDocumentPositionParams, TextEdit, Url, WorkspaceEdit,
};
use phoenix_dsl::query::{self, Occurrence, OutlineKind, Symbol};
use phoenix_dsl::span::Span;
use std::collections::HashMap;

use super::Failure;

/// The symbol under the cursor, in the document's compilation.
fn symbol_at<'a>(ws: &'a Workspace, p: &TextDocumentPositionParams) -> Option<(&'a Document, &'a Occurrence)> {
    let doc = ws.docs.get(&name_of(&p.text_document.uri))?;
    let offset = doc.lines.offset(&doc.text, p.position);
    let occ = doc.analysis.index.at(Analysis::ROOT, offset)?;
    Some((doc, occ))
}

/// A symbol in words that hold across compilations (file ids differ between them).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Named(Symbol),
    Field(String, u32, u32),
}

fn key(a: &Analysis, s: &Symbol) -> Key {
    match s {
        Symbol::Field { decl: Some(d), .. } => {
            Key::Field(a.compilation.sources.get(d.file).name.clone(), d.start, d.end)
        }
        other => Key::Named(other.clone()),
    }
}

/// Every occurrence of the symbol, as (file name, span, text of the file, is definition), from
/// this document and the open documents that import its file.
fn occurrences(ws: &Workspace, doc: &Document, symbol: &Symbol) -> Vec<Location> {
    let wanted = key(&doc.analysis, symbol);
    let this = name_of(&doc.uri);
    let mut seen: Vec<(String, Span)> = Vec::new();
    let mut out = Vec::new();
    let others = ws
        .docs
        .values()
        .filter(|d| d.uri != doc.uri && d.analysis.compilation.sources.files().any(|(_, f)| f.name == this));
    for d in std::iter::once(doc).chain(others) {
        let a = &d.analysis;
        let mut ranges = Ranges::new(&a.compilation.sources);
        for o in &a.index.occurrences {
            if key(a, &o.symbol) != wanted {
                continue;
            }
            let file = a.compilation.sources.get(o.span.file).name.clone();
            let at = (file, Span { file: Default::default(), ..o.span });
            if seen.contains(&at) {
                continue;
            }
            seen.push(at);
            out.push(ranges.location(o.span, &d.uri));
        }
    }
    out
}

pub fn definition(ws: &Workspace, p: GotoDefinitionParams) -> Option<GotoDefinitionResponse> {
    let (doc, occ) = symbol_at(ws, &p.text_document_position_params)?;
    let c = &doc.analysis.compilation;
    let mut ranges = Ranges::new(&c.sources);
    let span = match &occ.symbol {
        Symbol::Import(path) => {
            let uri = uri_of(&resolve(path, Some(&c.sources.get(occ.span.file).name)))?;
            let start = Position::default();
            return Some(GotoDefinitionResponse::Scalar(Location { uri, range: Range { start, end: start } }));
        }
        Symbol::Field { decl, .. } => (*decl)?,
        s => doc.analysis.index.definition(s)?.span,
    };
    Some(GotoDefinitionResponse::Scalar(ranges.location(span, &doc.uri)))
}

pub fn references(ws: &Workspace, p: ReferenceParams) -> Option<Vec<Location>> {
    let (doc, occ) = symbol_at(ws, &p.text_document_position)?;
    let mut locations = occurrences(ws, doc, &occ.symbol);
    if !p.context.include_declaration
        && let Some(def) = definition_location(doc, &occ.symbol)
    {
        locations.retain(|l| *l != def);
    }
    Some(locations)
}

fn definition_location(doc: &Document, s: &Symbol) -> Option<Location> {
    let span = match s {
        Symbol::Field { decl, .. } => (*decl)?,
        s => doc.analysis.index.definition(s)?.span,
    };
    Some(Ranges::new(&doc.analysis.compilation.sources).location(span, &doc.uri))
}

pub fn prepare_rename(ws: &Workspace, p: TextDocumentPositionParams) -> Option<PrepareRenameResponse> {
    let (doc, occ) = symbol_at(ws, &p)?;
    if !occ.symbol.renamable() {
        return None;
    }
    let range = Ranges::new(&doc.analysis.compilation.sources).range(occ.span);
    let placeholder = match &occ.symbol {
        Symbol::Schema(n) | Symbol::Stream(n) | Symbol::Field { name: n, .. } => n.clone(),
        _ => return None,
    };
    Some(PrepareRenameResponse::RangeWithPlaceholder { range, placeholder })
}

pub fn rename(ws: &Workspace, p: RenameParams) -> Result<Option<WorkspaceEdit>, Failure> {
    let Some((doc, occ)) = symbol_at(ws, &p.text_document_position) else { return Ok(None) };
    if !occ.symbol.renamable() {
        return Err(Failure(
            ErrorCode::InvalidRequest,
            "only schemas, sources, sinks, flows and fields can be renamed".into(),
        ));
    }
    let new = p.new_name.strip_prefix('`').and_then(|n| n.strip_suffix('`')).unwrap_or(&p.new_name);
    if new.is_empty() || new.contains('`') {
        return Err(Failure(ErrorCode::InvalidParams, format!("`{}` cannot be a name", p.new_name)));
    }
    // Fields may be soft keywords (`source`); other names must be backquoted then.
    let text = match occ.symbol {
        Symbol::Field { .. } => phoenix_dsl::fmt::field_name(new),
        _ => phoenix_dsl::fmt::ident(new),
    };
    let mut changes: HashMap<Url, Vec<TextEdit>> = HashMap::new();
    for l in occurrences(ws, doc, &occ.symbol) {
        changes.entry(l.uri).or_default().push(TextEdit { range: l.range, new_text: text.clone() });
    }
    Ok(Some(WorkspaceEdit { changes: Some(changes), ..Default::default() }))
}

pub fn symbols(ws: &Workspace, p: DocumentSymbolParams) -> Option<DocumentSymbolResponse> {
    let doc = ws.docs.get(&name_of(&p.text_document.uri))?;
    let c = &doc.analysis.compilation;
    let module = c.modules.first().filter(|m| m.items.first().is_none_or(|i| i.span().file == Analysis::ROOT))?;
    let mut ranges = Ranges::new(&c.sources);
    fn convert(items: Vec<query::OutlineItem>, ranges: &mut Ranges) -> Vec<DocumentSymbol> {
        items
            .into_iter()
            .map(|i| {
                let kind = match i.kind {
                    OutlineKind::Import => SymbolKind::FILE,
                    OutlineKind::Schema => SymbolKind::STRUCT,
                    OutlineKind::Field => SymbolKind::FIELD,
                    OutlineKind::Source => SymbolKind::EVENT,
                    OutlineKind::Sink => SymbolKind::INTERFACE,
                    OutlineKind::Flow => SymbolKind::FUNCTION,
                    OutlineKind::Route | OutlineKind::Pipeline => SymbolKind::OPERATOR,
                    OutlineKind::Test => SymbolKind::METHOD,
                    OutlineKind::Deploy => SymbolKind::PACKAGE,
                };
                #[allow(deprecated)]
                DocumentSymbol {
                    name: if i.name.is_empty() { "?".into() } else { i.name },
                    detail: Some(i.detail),
                    kind,
                    tags: None,
                    deprecated: None,
                    range: ranges.range(i.span),
                    selection_range: ranges.range(i.name_span),
                    children: Some(convert(i.children, ranges)),
                }
            })
            .collect()
    }
    Some(DocumentSymbolResponse::Nested(convert(query::outline(module, &doc.text), &mut ranges)))
}

/// The whole document in `phoenix fmt`'s layout; nothing while it does not parse.
pub fn format(ws: &Workspace, p: DocumentFormattingParams) -> Option<Vec<TextEdit>> {
    let doc = ws.docs.get(&name_of(&p.text_document.uri))?;
    let formatted = phoenix_dsl::fmt::format(&doc.text).ok()?;
    if formatted == doc.text {
        return Some(Vec::new());
    }
    let range = doc.lines.range(&doc.text, 0, doc.text.len());
    Some(vec![TextEdit { range, new_text: formatted }])
}

const TOKEN_TYPES: &[SemanticTokenType] = &[
    SemanticTokenType::TYPE,      // schemas
    SemanticTokenType::VARIABLE,  // sources, sinks, flows
    SemanticTokenType::PROPERTY,  // fields
    SemanticTokenType::FUNCTION,  // functions
    SemanticTokenType::NAMESPACE, // connectors
    SemanticTokenType::PARAMETER, // options
    SemanticTokenType::MACRO,     // metadata
    SemanticTokenType::STRING,    // import paths
];

pub fn legend() -> SemanticTokensLegend {
    SemanticTokensLegend {
        token_types: TOKEN_TYPES.to_vec(),
        token_modifiers: vec![SemanticTokenModifier::DECLARATION],
    }
}

pub fn semantic_tokens(ws: &Workspace, p: SemanticTokensParams) -> Option<SemanticTokensResult> {
    let doc = ws.docs.get(&name_of(&p.text_document.uri))?;
    let mut data = Vec::new();
    let (mut line, mut col) = (0u32, 0u32);
    for o in doc.analysis.index.occurrences.iter().filter(|o| o.span.file == Analysis::ROOT) {
        let ty = match o.symbol {
            Symbol::Schema(_) => 0,
            Symbol::Stream(_) => 1,
            Symbol::Field { .. } => 2,
            Symbol::Function(_) => 3,
            Symbol::Connector { .. } => 4,
            Symbol::Option { .. } => 5,
            Symbol::Metadata(_) => 6,
            Symbol::Import(_) => 7,
        };
        let r = doc.lines.range(&doc.text, o.span.start as usize, o.span.end as usize);
        // Tokens are single-line; names never span lines.
        if r.start.line != r.end.line || (!data.is_empty() && (r.start.line, r.start.character) <= (line, col)) {
            continue;
        }
        let delta_line = r.start.line - line;
        let delta_start = if delta_line == 0 { r.start.character - col } else { r.start.character };
        data.push(SemanticToken {
            delta_line,
            delta_start,
            length: r.end.character - r.start.character,
            token_type: ty,
            token_modifiers_bitset: u32::from(o.def),
        });
        (line, col) = (r.start.line, r.start.character);
    }
    Some(SemanticTokensResult::Tokens(SemanticTokens { result_id: None, data }))
}
