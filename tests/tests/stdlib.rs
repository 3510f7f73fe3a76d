//! Every stdlib example is a valid expression whose type matches its documented result.
//! (The engine's tests evaluate them.)

use phoenix_dsl::catalog::Catalog;
use phoenix_engine::EngineCatalog;

#[test]
fn stdlib_examples_typecheck() {
    let catalog = EngineCatalog::new();
    let mut failures = Vec::new();
    let mut count = 0;
    for f in catalog.stdlib().iter() {
        assert!(!f.examples().is_empty(), "`{}` has no examples", f.name());
        assert!(catalog.function(f.name()).is_some());
        for ex in f.examples() {
            count += 1;
            // Check the example as a `select` over an empty event stream.
            let flow = format!("source s = stdin as {{}}\nsink o = stdout\ns | select {} as r | o\n", ex.expr);
            let loader = phoenix_dsl::MemoryLoader::new([("example.phx".to_string(), flow.into_bytes())]);
            let c = phoenix_dsl::compile("example.phx", &loader, &catalog);
            if c.has_errors() {
                failures.push(format!("{}: {}\n{}", f.name(), ex.expr, c.render(false)));
                continue;
            }
            if c.plan(&catalog).is_none() {
                failures.push(format!("{}: {} does not lower", f.name(), ex.expr));
            }
        }
    }
    assert!(count >= 15);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
