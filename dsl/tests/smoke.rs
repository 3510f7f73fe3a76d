#[test]
fn smoke() {
    let path = std::env::var("PHX").unwrap_or("/tmp/phx/design.phx".into());
    let text = std::fs::read_to_string(&path).unwrap();
    let mut sm = phoenix_dsl::span::SourceMap::new();
    let id = sm.add(path, text.clone());
    match phoenix_dsl::parser::parse(id, &text) {
        Ok(m) => println!("{m:#?}"),
        Err(d) => println!("{}", phoenix_dsl::diagnostic::render(&sm, &d, false)),
    }
}
