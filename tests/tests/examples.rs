//! Every example flow checks without errors or warnings and plans.

use phoenix_tests::{compile, phx_files, root};

#[test]
fn examples_check_clean() {
    let files = phx_files(&root().join("examples"));
    assert!(files.len() >= 3, "expected the example flows in examples/");
    let catalog = phoenix_engine::EngineCatalog::new();
    let mut failures = Vec::new();
    for path in files {
        let c = compile(&path);
        if !c.diagnostics.is_empty() {
            failures.push(c.render(false));
            continue;
        }
        if c.plan(&catalog).is_none() {
            failures.push(format!("{}: does not lower to a plan", path.display()));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn examples_are_formatted() {
    for path in phx_files(&root().join("examples")) {
        let text = std::fs::read_to_string(&path).expect("read example");
        let formatted = phoenix_dsl::fmt::format(&text).unwrap_or_else(|d| panic!("{}: {d:?}", path.display()));
        assert_eq!(formatted, text, "{} is not in canonical layout (run `phoenix fmt`)", path.display());
    }
}
