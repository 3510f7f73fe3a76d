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

/// The `test` blocks of every example pass on the real engine (what `phoenix test` runs).
#[test]
fn example_tests_pass() {
    let catalog = phoenix_engine::EngineCatalog::new();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let mut failures = Vec::new();
    let mut count = 0;
    for path in phx_files(&root().join("examples")) {
        let c = compile(&path);
        let plan = c.plan(&catalog).expect("examples plan");
        for case in &plan.tests {
            count += 1;
            let inputs = phoenix_engine::testing::test_inputs(case);
            let outcome = rt
                .block_on(phoenix_engine::testing::run_captured(&plan, &c.sources, &catalog, &inputs))
                .map_err(|e| e.to_string())
                .and_then(|(captured, _)| phoenix_engine::testing::check_expectations(case, &captured));
            if let Err(why) = outcome {
                failures.push(format!("{} / {}:\n{why}", path.display(), case.name));
            }
        }
    }
    assert!(count >= 10, "expected the examples to carry test blocks, found {count}");
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// The quick start in the README runs end to end through the real file connectors.
#[test]
fn quickstart_runs_end_to_end() {
    use phoenix_engine::observability::metrics::Metrics;
    use phoenix_engine::run::{RunConfig, run};
    use phoenix_engine::taskgraph::{TaskGraph, node_labels};
    let dir = std::env::temp_dir().join(format!("phoenix-quickstart-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let catalog = phoenix_engine::EngineCatalog::new();
    let c = compile(&root().join("examples/quickstart.phx"));
    let plan = c.plan(&catalog).expect("quickstart plans");
    let metrics = std::sync::Arc::new(Metrics::new(node_labels(&plan, &c.sources)));
    let graph = TaskGraph::build(&plan, &c.sources, &metrics).expect("task graph");
    let mut config = RunConfig::new(2);
    let input = root().join("examples/data/orders.jsonl").display().to_string();
    config.settings.env.insert("QUICKSTART_INPUT".into(), input);
    for sink in ["orders", "big_orders", "catalog", "other", "dead_letters"] {
        let path = dir.join(format!("{sink}.jsonl")).display().to_string();
        config.settings.overrides.insert((sink.into(), "path".into()), path);
    }
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(run(graph, &catalog, metrics, config)).expect("quickstart runs");
    let lines =
        |sink: &str| std::fs::read_to_string(dir.join(format!("{sink}.jsonl"))).expect("output").lines().count();
    let counts: Vec<usize> =
        ["orders", "big_orders", "catalog", "other", "dead_letters"].iter().map(|s| lines(s)).collect();
    assert_eq!(counts, vec![2, 1, 3, 1, 2], "orders, big_orders, catalog, other, dead_letters");
    std::fs::remove_dir_all(&dir).ok();
}

/// docs/diagnostics.md lists every code (editors link each diagnostic to its heading;
/// `BLESS=1` rewrites it).
#[test]
fn diagnostics_reference_is_current() {
    let md = phoenix_engine::docs::diagnostics_markdown();
    if let Some(diff) = phoenix_tests::golden(&root().join("docs/diagnostics.md"), &md) {
        panic!(
            "docs/diagnostics.md is stale (regenerate with `BLESS=1 cargo test -p phoenix-tests --test examples`)\n{diff}"
        );
    }
}

/// docs/connectors.md is what `phoenix connectors --markdown` prints (`BLESS=1` rewrites it).
#[test]
fn connector_reference_is_current() {
    let md = phoenix_engine::docs::connectors_markdown(&phoenix_engine::EngineCatalog::new());
    if let Some(diff) = phoenix_tests::golden(&root().join("docs/connectors.md"), &md) {
        panic!(
            "docs/connectors.md is stale (regenerate with `cargo phoenix connectors --markdown > docs/connectors.md`)\n{diff}"
        );
    }
}
