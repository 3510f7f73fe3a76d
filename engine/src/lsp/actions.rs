//! Quick fixes: the compiler's own fixes (every did-you-mean, a missing `else` arm), and wiring
//! an unread `.errors` port to a dead-letter sink.

use super::diagnostics::{self, Ranges};
use super::workspace::{Analysis, Workspace, name_of};
use lsp_types::{CodeAction, CodeActionKind, CodeActionOrCommand, CodeActionParams, Range, TextEdit, WorkspaceEdit};
use phoenix_dsl::catalog::Role;
use phoenix_dsl::fmt::ident;
use phoenix_dsl::query;
use phoenix_dsl::span::Span;
use std::collections::HashMap;

pub fn code_actions(ws: &Workspace, p: CodeActionParams) -> Vec<CodeActionOrCommand> {
    let Some(doc) = ws.docs.get(&name_of(&p.text_document.uri)) else { return Vec::new() };
    let c = &doc.analysis.compilation;
    let mut ranges = Ranges::new(&c.sources);
    let mut out = Vec::new();
    let action = |title: String, edits: Vec<TextEdit>, diagnostic: Option<lsp_types::Diagnostic>, preferred: bool| {
        let changes = HashMap::from([(doc.uri.clone(), edits)]);
        CodeActionOrCommand::CodeAction(CodeAction {
            title,
            kind: Some(CodeActionKind::QUICKFIX),
            diagnostics: diagnostic.map(|d| vec![d]),
            edit: Some(WorkspaceEdit { changes: Some(changes), ..Default::default() }),
            is_preferred: preferred.then_some(true),
            ..Default::default()
        })
    };
    for (d, lsp) in diagnostics::all(doc) {
        if d.span().file != Analysis::ROOT || !overlaps(lsp.range, p.range) {
            continue;
        }
        for fix in &d.fixes {
            let edits = fix
                .edits
                .iter()
                .filter(|(s, _)| s.file == Analysis::ROOT)
                .map(|(s, text)| TextEdit { range: ranges.range(*s), new_text: text.clone() })
                .collect();
            out.push(action(fix.title.clone(), edits, Some(lsp.clone()), d.fixes.len() == 1));
        }
    }
    // A source or sink whose failed events nobody reads: offer to send them somewhere.
    let dead = query::dead_letter_sinks(c);
    for (decl, role) in query::unwired_errors(c) {
        if !overlaps(ranges.range(decl.span), p.range) {
            continue;
        }
        let name = &decl.name.name;
        let line_end = line_end(&doc.text, decl.span.end as usize);
        let at = ranges.range(Span { start: line_end as u32, end: line_end as u32, ..decl.span });
        let what = if role == Role::Source { "events it cannot decode" } else { "events it gives up on" };
        for sink in dead.iter().filter(|s| *s != name) {
            let stmt = format!("\n{}.errors | {}", ident(name), ident(sink));
            let title = format!("send `{name}.errors` ({what}) to `{sink}`");
            out.push(action(title, vec![TextEdit { range: at, new_text: stmt }], None, false));
        }
        let sink = fresh_name(c, &format!("{name}_errors"));
        let text = format!(
            "\nsink {s} = file {{ path = \"{file}.jsonl\" }}\n{n}.errors | {s}",
            s = ident(&sink),
            n = ident(name),
            file = sink.replace('_', "-").replace(|c: char| !c.is_ascii_alphanumeric() && c != '-', ""),
        );
        let title = format!("send `{name}.errors` ({what}) to a new file sink `{sink}`");
        out.push(action(title, vec![TextEdit { range: at, new_text: text }], None, false));
    }
    out
}

fn overlaps(a: Range, b: Range) -> bool {
    a.start <= b.end && b.start <= a.end
}

fn line_end(text: &str, from: usize) -> usize {
    text[from.min(text.len())..].find('\n').map_or(text.len(), |i| from + i)
}

/// `base`, or `base2`, `base3`... whichever no source, sink or flow is named.
fn fresh_name(c: &phoenix_dsl::Compilation, base: &str) -> String {
    (1..)
        .map(|i| if i == 1 { base.to_string() } else { format!("{base}{i}") })
        .find(|n| query::stream_decl(c, n).is_none())
        .unwrap_or_else(|| base.to_string())
}
