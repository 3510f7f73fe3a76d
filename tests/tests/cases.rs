//! Runs every case under `tests/cases/` against its golden file.

use phoenix_dsl::diagnostic::Code;
use phoenix_tests::{compile, golden, phx_files, root};

fn cases(kind: &str) -> Vec<std::path::PathBuf> {
    let files = phx_files(&root().join("tests/cases").join(kind));
    assert!(!files.is_empty(), "no cases in tests/cases/{kind}");
    files
}

fn report(failures: Vec<String>) {
    assert!(failures.is_empty(), "{} case(s) differ:\n\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn parse_cases() {
    let mut failures = Vec::new();
    for path in cases("parse") {
        let text = std::fs::read_to_string(&path).expect("read case");
        let actual = match phoenix_dsl::parser::parse(phoenix_dsl::span::FileId(0), &text) {
            Ok(m) => phoenix_dsl::fmt::dump(&m),
            Err(d) => format!("parse error: {}\n", d.iter().map(|d| d.message.clone()).collect::<Vec<_>>().join("; ")),
        };
        failures.extend(golden(&path.with_extension("ast"), &actual));
    }
    report(failures);
}

#[test]
fn error_cases() {
    let mut failures = Vec::new();
    for path in cases("errors") {
        let c = compile(&path);
        if c.diagnostics.is_empty() {
            failures.push(format!("{}: expected diagnostics, got none", path.display()));
            continue;
        }
        failures.extend(golden(&path.with_extension("stderr"), &c.render(false)));
    }
    report(failures);
}

#[test]
fn plan_cases() {
    let mut failures = Vec::new();
    let catalog = phoenix_engine::EngineCatalog::new();
    for path in cases("plan") {
        let c = compile(&path);
        if c.has_errors() {
            failures.push(format!("{}: has errors:\n{}", path.display(), c.render(false)));
            continue;
        }
        let plan = c.plan(&catalog).expect("a clean flow lowers");
        failures.extend(golden(&path.with_extension("plan"), &phoenix_dsl::plan::render::text(&plan)));
    }
    report(failures);
}

/// Every diagnostic code has at least one error case showing it.
#[test]
fn every_code_has_a_case() {
    let mut rendered = String::new();
    for path in cases("errors") {
        rendered.push_str(&std::fs::read_to_string(path.with_extension("stderr")).unwrap_or_default());
    }
    let missing: Vec<&str> =
        Code::ALL.iter().map(|c| c.as_str()).filter(|c| !rendered.contains(&format!("[{c}]"))).collect();
    assert!(missing.is_empty(), "no error case covers: {}", missing.join(", "));
}

/// `phoenix graph` draws a merge as one node, as written, with an edge from each input.
#[test]
fn merge_is_drawn_once_with_an_edge_per_input() {
    let c = compile(&phoenix_tests::root().join("tests/cases/plan/merge_metadata.phx"));
    let flow = c.flow.as_ref().expect("checks");
    let dot = phoenix_dsl::plan::render::dot(flow, &c.sources);
    let node: Vec<&str> = dot.lines().filter(|l| l.contains("invtrapezium")).collect();
    assert_eq!(node, ["  n3 [label=\"merge(api, batch)\", shape=invtrapezium];"], "{dot}");
    assert!(dot.contains("n0 -> n3") && dot.contains("n1 -> n3"), "{dot}");
    let mermaid = phoenix_dsl::plan::render::mermaid(flow, &c.sources);
    assert!(mermaid.contains("n3[\\\"merge(api, batch)\"/]"), "{mermaid}");
    assert!(mermaid.contains("n0 --> n3") && mermaid.contains("n1 --> n3"), "{mermaid}");
}
