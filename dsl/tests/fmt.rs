//! `phoenix fmt`: canonical layout, idempotency, comment preservation and meaning preservation.

use phoenix_dsl::fmt::{dump, format};
use phoenix_dsl::parser::parse;
use phoenix_dsl::span::FileId;
use std::path::{Path, PathBuf};

/// The structural dump of `text`, which must parse.
fn ast(text: &str) -> String {
    match parse(FileId(0), text) {
        Ok(module) => dump(&module),
        Err(d) => panic!("does not parse: {d:?}\n{text}"),
    }
}

fn fmt(text: &str) -> String {
    format(text).unwrap_or_else(|d| panic!("format failed: {d:?}\n{text}"))
}

/// Formats `text` and checks the invariants every formatting must keep: the result parses to the
/// same tree (spans aside), formatting it again changes nothing, and every comment survives.
fn check(text: &str) -> String {
    let once = fmt(text);
    assert_eq!(ast(&once), ast(text), "formatting changed the meaning of:\n{text}\n--- into:\n{once}");
    let twice = fmt(&once);
    assert_eq!(twice, once, "formatting is not idempotent on:\n{text}");
    for comment in comments(text) {
        assert!(once.contains(&comment), "comment {comment:?} lost in:\n{once}");
    }
    assert_eq!(comments(&once).len(), comments(text).len(), "comment count changed:\n{once}");
    once
}

/// Comment texts of a `.phx` file: `//` to the end of the line, `/* */`, outside strings and
/// quoted names.
fn comments(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut chars = text.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        match (c, chars.peek().map(|(_, n)| *n)) {
            ('/', Some('/')) => {
                let len = text[i..].find('\n').unwrap_or(text.len() - i);
                out.push(text[i..i + len].trim_end().to_string());
                chars.by_ref().take_while(|(_, c)| *c != '\n').for_each(drop);
            }
            ('/', Some('*')) => {
                let len = text[i + 2..].find("*/").map_or(text.len() - i, |j| j + 4);
                out.push(text[i..i + len].to_string());
                while chars.peek().is_some_and(|(j, _)| *j < i + len) {
                    chars.next();
                }
            }
            ('\'' | '"' | '`', _) => {
                while let Some((_, n)) = chars.next() {
                    if n == '\\' && c != '`' {
                        chars.next();
                    } else if n == c {
                        break;
                    }
                }
            }
            _ => {}
        }
    }
    out
}

const SAMPLE: &str = r#"// Header comment: the whole file.
/* A block
   comment spanning lines. */

import "common.phx"
import 'more/other.phx' // trailing on an import

// Orders as they arrive.
schema Order {
  id: string,   // the key
  amount: float,
  /* before a field */ country: string?,
  tags: list<string>,
  customer: { name: string, address: { city: string, zip: string? }? },

  // after a blank line
  lines: list<{ sku: string, qty: int }>?,
  `unit price`: float,
  source: string, end: int
}

schema Empty {}
schema Keyed{ type: string, `select`: bool, `Weird-Name`: string ,}

source orders = kafka { topic = "orders", brokers = ['a:9092', "b:9092"], poll = 250ms, max = 10MiB } as Order
source clicks = http { port = 8080 } as { url: string, at: timestamp }
sink vip = elasticsearch { index = "vip-orders" }
sink dead = stdout
sink audit = s3 { bucket = "audit", prefix = 'orders/', region = "eu-central-1", batch = 5_000, flush = 1m, compress = true } as Order
sink `weird sink` = stdout {}

flow big = orders | where amount > 100 and not (country is null) | select id, amount * 1.19 as gross, *

flow long_one = orders | where amount between 10 and 1_000 and country in ('DE', 'FR', 'NL') | select id, customer.name as who, upper(country) as cc
flow commented = orders
  // keep only paid ones
  | where @paid = true /* inline */ or @key like 'vip-%'
  | select id

orders.errors | dead
vip.errors | drop;

big | where (amount + 1) * 2 >= -3 - -4 and gross % 7 != 0 or id not like 'x%' | vip

orders | route all by country {
  'DE' | 'AT' => vip,        // German-speaking
  -1 | 2.5 => drop,
  when amount > 1e3 => where id is not null | select id | audit,
  // the rest
  else => dead
}

route orders by case when amount > 100 then 'big' else 'small' end {
  'big' => route by country { 'DE' => vip, else => drop },
  else => dead,
}

route all clicks {
  when url ilike '%checkout%' => audit,
  when not url not ilike '%x%' => where at between '2026-01-01T00:00:00Z' and '2027-01-01T00:00:00Z' | select url, length(url) - 1 as n, [1, 2, 3] as l, `my field`.x as y, f(url).`a b` as z | dead,
}

orders | where country = "it's" || 'x' and id ilike '%\n%' and case country when 'DE' then 1 when 'FR' then 2 end > 0 | select -amount as neg, - -amount as pos, (amount) as p, coalesce(country, 'none') as c | vip

test "vip orders reach vip" {
  input orders = {"id": "1", "amount": 500, "country": "DE", "tags": ["a", 'b'], "x": null, "ok": true, "n": -1.5e3}
  // expectations
  expect vip = [{"id": "1"},]
  input orders = [{"id": "2"}, {"id": "3"}];
  expect audit = "raw line"
}

test "empty" {}

deploy { replicas = 3, cpu = "500m", memory = '512Mi' } // trailing on deploy

// The end of the file.
"#;

#[test]
fn sample_keeps_meaning_and_comments_and_is_idempotent() {
    let out = check(SAMPLE);
    // A few layout facts about the sample, spot-checked.
    assert!(out.starts_with("// Header comment: the whole file.\n/* A block\n   comment spanning lines. */\n\nimport \"common.phx\"\nimport \"more/other.phx\"  // trailing on an import\n"), "{out}");
    assert!(out.contains("  id: string,  // the key\n"), "{out}");
    assert!(out.contains("  amount: float,\n  /* before a field */\n  country: string?,\n"), "{out}");
    assert!(out.contains("  lines: list<{ sku: string, qty: int }>?,\n"), "{out}");
    assert!(out.contains("\n\n  // after a blank line\n  lines:"), "{out}");
    assert!(out.contains("  `unit price`: float,\n  source: string,\n  end: int,\n}\n"), "{out}");
    assert!(out.contains("schema Keyed {\n  type: string,\n  select: bool,\n  `Weird-Name`: string,\n}\n"), "{out}");
    assert!(out.contains("sink `weird sink` = stdout {}\n"), "{out}");
    assert!(
        out.contains("    | where @paid = true or @key like 'vip-%'\n    /* inline */\n    | select id\n"),
        "{out}"
    );
    assert!(out.contains("orders.errors | dead\n\nvip.errors | drop\n"), "{out}");
    assert!(out.contains("  'DE' | 'AT' => vip,  // German-speaking\n  -1 | 2.5 => drop,\n"), "{out}");
    assert!(out.contains("  'big' => route by country {\n    'DE' => vip,\n    else => drop,\n  },\n"), "{out}");
    assert!(out.contains("where country = 'it''s' || 'x' and id ilike '%\\n%'"), "{out}");
    assert!(out.contains("select -amount as neg, --amount as pos, (amount) as p"), "{out}");
    assert!(out.contains(
        "  input orders = {\"id\": \"1\", \"amount\": 500, \"country\": \"DE\", \"tags\": [\"a\", \"b\"], \"x\": null, \"ok\": true, \"n\": -1.5e3}\n  // expectations\n  expect vip = [{\"id\": \"1\"}]\n"
    ), "{out}");
    assert!(out.contains("test \"empty\" {}\n"), "{out}");
    assert!(out.ends_with("deploy { replicas = 3, cpu = \"500m\", memory = \"512Mi\" }  // trailing on deploy\n\n// The end of the file.\n"), "{out}");
}

#[test]
fn dump_shows_structure() {
    let text = "orders | where amount > 100 and country in ('DE', 'FR') | select id, a.b as c, * | vip\n\
                route all orders by k { 'a' | -1 => drop, when x is not null => where y | s, else => t }\n";
    assert_eq!(
        ast(text),
        "(pipeline orders (where (and (> amount 100) (in country ['DE' 'FR']))) (select id (as a.b c) *) (sink vip))\n\
         (route-statement orders (route all (by k) (=> (values 'a' -1) (drop)) (=> (when (is-not-null x)) (where y) (sink s)) (=> else (sink t))))\n"
    );
    assert_eq!(
        ast(
            "source s = k { a = 1_000, b = \"x\" } as { f: list<int>?, `g h`: { i: bool } }\nsink t = k\nsink u = k {}\n"
        ),
        "(source s k (options (a 1_000) (b 'x')) (as (record (f (list int)?) (`g h` (record (i bool))))))\n\
         (sink t k)\n\
         (sink u k (options))\n"
    );
    assert_eq!(
        ast(
            "s | where not -a * (b + c) - d.e.f || @m = `null` and null is null | select case x when 1 then f(y).z else [] end | o"
        ),
        "(pipeline s (where (and (not (= (|| (- (* (neg a) (paren (+ b c))) d.e.f) @m) `null`)) (is-null null))) \
         (select (case (operand x) (when 1 (. (call f y) z)) (else []))) (sink o))\n"
    );
}

#[test]
fn short_pipeline_stays_on_one_line() {
    assert_eq!(
        fmt("orders   |where amount>100|select id,amount AS a|vip;"),
        "orders | where amount > 100 | select id, amount as a | vip\n"
    );
}

#[test]
fn long_pipeline_breaks_one_stage_per_line() {
    let text =
        "orders | where amount > 100 and country in ('DE', 'FR', 'NL', 'AT', 'CH') | select id, amount, country | vip";
    assert_eq!(
        fmt(text),
        "orders\n  | where amount > 100 and country in ('DE', 'FR', 'NL', 'AT', 'CH')\n  | select id, amount, country\n  | vip\n"
    );
    let flow = format!("flow f = {text}");
    assert_eq!(
        fmt(&flow),
        "flow f =\n  orders\n    | where amount > 100 and country in ('DE', 'FR', 'NL', 'AT', 'CH')\n    | select id, amount, country\n    | vip\n"
    );
}

#[test]
fn connectors_break_their_options_when_long() {
    assert_eq!(fmt("source  o=kafka{topic='orders',}as Order"), "source o = kafka { topic = \"orders\" } as Order\n");
    assert_eq!(
        fmt(
            "sink s = elasticsearch { index = 'orders-index', hosts = ['http://a:9200', 'http://b:9200'], batch = 500 } as Order"
        ),
        "sink s = elasticsearch {\n  index = \"orders-index\",\n  hosts = [\"http://a:9200\", \"http://b:9200\"],\n  batch = 500,\n} as Order\n"
    );
    // A comment inside the options keeps them one per line.
    assert_eq!(
        fmt("source o = kafka { topic = 'o' /* why */ }"),
        "source o = kafka {\n  topic = \"o\",  /* why */\n}\n"
    );
}

#[test]
fn schemas_have_one_field_per_line() {
    assert_eq!(
        fmt("schema Order{id:string,amount:float?,tags:list<string>}"),
        "schema Order {\n  id: string,\n  amount: float?,\n  tags: list<string>,\n}\n"
    );
}

#[test]
fn routes_keep_their_form() {
    assert_eq!(
        fmt("route all orders by tier {'gold'|'silver'=>vip,else=>drop}"),
        "route all orders by tier {\n  'gold' | 'silver' => vip,\n  else => drop,\n}\n"
    );
    assert_eq!(
        fmt("orders | where x | route by tier { 'gold' => select id | vip, else => route { when y => a, else => b } }"),
        "orders | where x | route by tier {\n  'gold' => select id | vip,\n  else => route {\n    when y => a,\n    else => b,\n  },\n}\n"
    );
    let long = "orders | where amount > 100 and country in ('DE', 'FR', 'NL', 'AT') | select id, amount | route by country { 'DE' => vip, else => drop }";
    assert_eq!(
        fmt(long),
        "orders\n  | where amount > 100 and country in ('DE', 'FR', 'NL', 'AT')\n  | select id, amount\n  | route by country {\n    'DE' => vip,\n    else => drop,\n  }\n"
    );
}

#[test]
fn expressions_get_minimal_parentheses_and_keep_written_ones() {
    assert_eq!(
        fmt("s | where ((a)) OR b AND NOT c IS NOT NULL AND d NOT BETWEEN 1 AND 2 | o"),
        "s | where ((a)) or b and not c is not null and d not between 1 and 2 | o\n"
    );
    assert_eq!(fmt("s | where a == 1 and b <> 2 and c = TRUE | o"), "s | where a = 1 and b != 2 and c = true | o\n");
    assert_eq!(
        fmt("s | select a - (b - c), (a - b) - c, -x * 2, - 5 as n | o"),
        "s | select a - (b - c), (a - b) - c, -x * 2, -5 as n | o\n"
    );
}

#[test]
fn strings_and_names_are_quoted_canonically() {
    assert_eq!(
        fmt("s | where a = \"it's\" and b = 'say \"hi\"' and c = 'tab\\there\\u{1}' | o"),
        "s | where a = 'it''s' and b = 'say \"hi\"' and c = 'tab\\there\\u{1}' | o\n"
    );
    assert_eq!(fmt("import 'a\"b.phx'"), "import \"a\\\"b.phx\"\n");
    assert_eq!(
        fmt("`orders` | select `a`, `my field`, `and`, `end`.`list` as `where` | `out`"),
        "orders | select a, `my field`, `and`, end.list as where | out\n"
    );
    assert_eq!(
        fmt("test 'it''s' { input s = {'k': 'v'}, expect o = [1,2.5,true,null] }"),
        "test \"it's\" {\n  input s = {\"k\": \"v\"}\n  expect o = [1, 2.5, true, null]\n}\n"
    );
}

#[test]
fn blank_lines_between_items() {
    // Connector declarations and imports keep their tight groups; other items get one blank line.
    assert_eq!(
        fmt(
            "import \"a.phx\"\nimport \"b.phx\"\n\n\n\nsource a = k\nsink b = k\n\nsink c = k\nschema X { a: int }\nflow f = a | b\na | c"
        ),
        "import \"a.phx\"\nimport \"b.phx\"\n\nsource a = k\nsink b = k\n\nsink c = k\n\nschema X {\n  a: int,\n}\n\nflow f = a | b\n\na | c\n"
    );
}

#[test]
fn comments_in_odd_places_move_to_the_next_line() {
    let text = "flow f = /* a */ orders | where a /* b */ and c // c\n| select x // d\n\n// e\nsink s /* f */ = k /* g */ as /* h */ S\n/* i */";
    let out = check(text);
    assert_eq!(
        out,
        "flow f =\n  /* a */\n  orders\n    | where a and c  // c\n    /* b */\n    | select x  // d\n\n// e\nsink s = k as S\n/* f */\n/* g */\n/* h */\n/* i */\n"
    );
}

#[test]
fn crlf_and_unusual_blanks() {
    let text = "\u{FEFF}schema X {\r\n  a: int, // c\r\n}\r\nsource s = k { a = 1 } // d\u{a0}\r\nsink o = k\t\r\n";
    assert_eq!(check(text), "schema X {\n  a: int,  // c\n}\n\nsource s = k { a = 1 }  // d\u{a0}\nsink o = k\n");
}

#[test]
fn empty_and_comment_only_files() {
    assert_eq!(fmt(""), "");
    assert_eq!(fmt("  \n\n"), "");
    assert_eq!(fmt("// only\n\n\n/* me */   "), "// only\n\n/* me */\n");
}

/// Every keyword of the grammar, used as a (quoted) name in every place a name can go, survives
/// formatting: the formatter's keyword lists agree with `grammar/phoenix.pest`.
#[test]
fn keywords_as_names_round_trip() {
    let grammar = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../grammar/phoenix.pest"))
        .expect("read the grammar");
    let block = grammar.split("\nkeyword = @{").nth(1).and_then(|rest| rest.split("\n}").next()).expect("keyword rule");
    let words: Vec<&str> = block.split('"').skip(1).step_by(2).collect();
    assert!(words.len() > 30, "keywords not found in the grammar: {words:?}");
    for word in words {
        for w in [word.to_string(), word.to_uppercase()] {
            let q = format!("`{w}`");
            let text = format!(
                "schema {q} {{ {q}: {q}, f: list<{q}>? }}\n\
                 source {q} = {q} {{ {q} = @{q} }} as {q}\n\
                 {q}.errors | where {q}.{q} = {q}({q}) and f(x).{q} | select {q} as {q} | route by {q} {{ else => {q} }}\n\
                 test \"t\" {{ input {q} = 1 }}\n"
            );
            check(&text);
        }
    }
}

#[test]
fn syntax_errors_are_reported() {
    assert!(format("schema {").is_err());
}

/// Small deterministic edits of the sample and the examples: whatever still parses must format
/// idempotently and keep its meaning. `PHX_FMT_MUTANTS=100000` runs a longer search.
#[test]
fn mutated_samples_format_idempotently() {
    let rounds: usize = std::env::var("PHX_FMT_MUTANTS").ok().and_then(|n| n.parse().ok()).unwrap_or(120);
    let mut corpus = vec![SAMPLE.to_string()];
    corpus.extend(examples().iter().filter_map(|p| std::fs::read_to_string(p).ok()));
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let tokens = ["\n", " ", "//x\n", "/*y*/", "(", ")", ",", ";", "|", "{", "}", "\n\n", " not ", " and ", "-", "`"];
    let mut parsed = 0;
    for round in 0..rounds {
        let mut text: Vec<char> = corpus[round % corpus.len()].chars().collect();
        for _ in 0..1 + next() % 3 {
            let at = (next() % (text.len() as u64 + 1)) as usize;
            if next() % 2 == 0 && at < text.len() {
                let end = (at + 1 + (next() % 8) as usize).min(text.len());
                text.drain(at..end);
            } else {
                let t = tokens[(next() % tokens.len() as u64) as usize];
                text.splice(at..at, t.chars());
            }
        }
        let text: String = text.into_iter().collect();
        if parse(FileId(0), &text).is_ok() {
            parsed += 1;
            let once = fmt(&text);
            assert_eq!(ast(&once), ast(&text), "meaning changed:\n{text}\n---\n{once}");
            assert_eq!(fmt(&once), once, "not idempotent:\n{text}\n---\n{once}");
        }
    }
    assert!(parsed * 5 > rounds, "too few mutants parse ({parsed} of {rounds}); the test is not testing much");
}

fn phx_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            phx_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "phx") {
            out.push(path);
        }
    }
}

/// `.phx` files under `examples/`, sorted.
fn examples() -> Vec<PathBuf> {
    let mut files = Vec::new();
    phx_files(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples"), &mut files);
    files.sort();
    files
}

/// Every example that parses formats idempotently to the same tree. (Examples that are not UTF-8
/// or do not parse are the business of other tests.)
#[test]
fn examples_format_idempotently() {
    for path in examples() {
        let Ok(text) = std::fs::read_to_string(&path) else { continue };
        if parse(FileId(0), &text).is_ok() {
            check(&text);
        }
    }
}
