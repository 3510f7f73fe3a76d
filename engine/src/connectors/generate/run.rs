//! Random events that fit the source's declared record: reproducible from `seed`, paced by
//! `rate`, bounded by `count`. Events are produced as JSON text and decoded like any other
//! input, so demos and benchmarks exercise the real path.

use crate::connectors::{BoxFuture, ConnectorError, Source, SourceContext};
use crate::exec::ack::Ack;
use crate::exec::batch::RawBatchBuilder;
use crate::options::Options;
use phoenix_dsl::types::{Record, Ty};
use std::io::Write;
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct GenerateSource {
    count: Option<u64>,
    rate: Option<f64>,
    seed: u64,
}

impl GenerateSource {
    pub fn new(options: &Options) -> Result<GenerateSource, ConnectorError> {
        let bad = |o: &str| ConnectorError(format!("generate: `{o}` must not be negative"));
        let count = match options.int("count") {
            Some(n) if n < 0 => return Err(bad("count")),
            n => n.map(|n| n as u64),
        };
        let rate = match options.int("rate") {
            Some(n) if n <= 0 => return Err(ConnectorError("generate: `rate` must be positive".into())),
            n => n.map(|n| n as f64),
        };
        Ok(GenerateSource { count, rate, seed: options.int("seed").unwrap_or(0) as u64 })
    }
}

impl Source for GenerateSource {
    fn run(self: Box<Self>, ctx: SourceContext) -> BoxFuture<'static, Result<(), ConnectorError>> {
        Box::pin(async move {
            // Nothing to reach.
            ctx.set_connected();
            let mut rng = fastrand::Rng::with_seed(self.seed);
            let record = ctx.stream.record.clone();
            let start = Instant::now();
            let mut sent: u64 = 0;
            let mut line = Vec::with_capacity(512);
            loop {
                let left = self.count.map_or(u64::MAX, |c| c - sent);
                if left == 0 || ctx.is_stopping() {
                    return Ok(());
                }
                let mut n = (ctx.batch_size as u64).min(left);
                if let Some(rate) = self.rate {
                    let due = (start.elapsed().as_secs_f64() * rate) as u64;
                    if due <= sent {
                        // Sleep until the next event is due, or a linger at most.
                        let next = Duration::from_secs_f64((sent + 1) as f64 / rate);
                        let wait = next.saturating_sub(start.elapsed()).min(ctx.linger.max(Duration::from_millis(1)));
                        tokio::select! {
                            _ = tokio::time::sleep(wait) => continue,
                            _ = ctx.stopping() => return Ok(()),
                        }
                    }
                    n = n.min(due - sent);
                }
                let mut b = RawBatchBuilder::default();
                for _ in 0..n {
                    line.clear();
                    write_record(&mut line, &record, &mut rng, 0);
                    b.push(&line);
                }
                sent += n;
                if ctx.send(b.finish(Vec::new(), Ack::none())).await.is_err() {
                    return Ok(());
                }
            }
        })
    }
}

const WORDS: &[&str] = &[
    "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet", "kilo", "lima",
    "mike", "november", "oscar", "papa", "quebec", "romeo", "sierra", "tango", "uniform", "victor", "whiskey", "xray",
    "yankee", "zulu",
];

pub(crate) fn write_record(out: &mut Vec<u8>, record: &Record, rng: &mut fastrand::Rng, depth: usize) {
    out.push(b'{');
    let mut first = true;
    for f in &record.fields {
        // Optional fields are sometimes absent, so flows see both cases.
        if f.optional && rng.u8(0..10) == 0 {
            continue;
        }
        if !first {
            out.push(b',');
        }
        first = false;
        // Field names are identifiers or backquoted names; JSON-escape them all the same.
        let _ = serde_json::to_writer(&mut *out, &f.name);
        out.push(b':');
        write_value(out, &f.ty, rng, depth);
    }
    out.push(b'}');
}

fn write_value(out: &mut Vec<u8>, ty: &Ty, rng: &mut fastrand::Rng, depth: usize) {
    // Writing into a Vec cannot fail.
    let _ = match ty {
        Ty::String => {
            let w = WORDS[rng.usize(..WORDS.len())];
            write!(out, "\"{w}-{}\"", rng.u32(0..10_000))
        }
        Ty::Int => write!(out, "{}", rng.i64(0..100_000)),
        Ty::Float => write!(out, "{:.2}", rng.f64() * 1000.0),
        Ty::Bool => write!(out, "{}", rng.bool()),
        Ty::Timestamp => {
            // Within a day of 2026-01-01T00:00:00Z.
            let secs = 1_767_225_600 + rng.i64(0..86_400);
            let t = chrono::DateTime::from_timestamp(secs, rng.u32(0..1000) * 1_000_000).unwrap_or_default();
            write!(out, "\"{}\"", t.format("%Y-%m-%dT%H:%M:%S%.3fZ"))
        }
        Ty::Duration => write!(out, "{}", rng.i64(0..10_000_000_000)),
        Ty::List(item) => {
            out.push(b'[');
            for i in 0..if depth < 3 { rng.usize(0..4) } else { 0 } {
                if i > 0 {
                    out.push(b',');
                }
                write_value(out, item, rng, depth + 1);
            }
            write!(out, "]")
        }
        Ty::Record(r) => {
            write_record(out, r, rng, depth + 1);
            Ok(())
        }
        Ty::Null | Ty::Error => write!(out, "null"),
    };
}
