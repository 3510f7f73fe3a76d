//! The live progress display of `phoenix run`, and the summary printed when a run ends.
//!
//! Both show one line per node of the flow under a header with the elapsed time and the
//! throughput of the sources:
//!
//! ```text
//! ⠹ phoenix  1m05s  1.2M events read  35.1k/s (avg 18.4k/s)  600k written  2 errors (2 unhandled)
//!   source orders (file)  in 1.2M  out 1.2M  errors 0  35.1k/s
//!   where                 in 1.2M  out 600k  errors 0
//!   sink search (http)    in 600k  out 600k  errors 2  17.6k/s  unhandled 2  retries 4
//! ```
//!
//! The live view ([`spawn`]) redraws four times a second with humanised numbers and rates over
//! the last interval, colouring nonzero errors; its final frame, left on screen, shows rates
//! averaged over the run. [`summary`] is the plain-text table for the end of a run, with exact
//! counts (`1,000,000`) and average rates. Rates are shown for sources (events read) and sinks
//! (events written); `unhandled` and `retries` appear on a node's line only when nonzero.

use crate::observability::metrics::{Metrics, NodeStats};
use console::style;
use indicatif::{HumanCount, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

const REDRAW: Duration = Duration::from_millis(250);
/// The shortest interval a live rate is measured over.
const MIN_SAMPLE: Duration = Duration::from_millis(200);

/// The bar being drawn, so [`suspend`] can clear it around other writes to stderr.
static ACTIVE: Mutex<Option<ProgressBar>> = Mutex::new(None);

/// Draw the live display on stderr until `stop` is cancelled, then draw the final counts and
/// leave them on screen. Await the handle before printing anything else to stderr.
///
/// Call it only when stderr is a terminal (`std::io::stderr().is_terminal()`); elsewhere print
/// [`summary`] at the end instead. Colours follow `console`'s stderr setting (`NO_COLOR`,
/// `CLICOLOR_FORCE`, `console::set_colors_enabled_stderr`). Must be called within a Tokio
/// runtime.
pub fn spawn(metrics: Arc<Metrics>, stop: CancellationToken) -> JoinHandle<()> {
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    tokio::spawn(run(metrics, stop, bar))
}

/// Run `f` with the live display (if any) cleared, then redraw it. Log lines and other stderr
/// output written inside `f` land above the table instead of through it.
pub fn suspend<R>(f: impl FnOnce() -> R) -> R {
    let bar = ACTIVE.lock().unwrap_or_else(|e| e.into_inner()).clone();
    match bar {
        Some(bar) => bar.suspend(f),
        None => f(),
    }
}

/// The final counts as plain text, one line per node under a header, ending in a newline.
pub fn summary(metrics: &Metrics) -> String {
    let elapsed = metrics.started.elapsed();
    let secs = elapsed.as_secs_f64();
    let snap = Snapshot::take(metrics);
    let average = |n: u64| if secs > 0.0 { n as f64 / secs } else { 0.0 };
    let mut out = format!(
        "phoenix: ran {}, {} events read ({}), {} written, {}\n",
        human_duration(elapsed),
        HumanCount(snap.read),
        human_rate(average(snap.read)),
        HumanCount(snap.written),
        error_counts(&snap, |n| HumanCount(n).to_string()),
    );
    let rates: Vec<Option<f64>> = snap.rows.iter().map(|r| r.rated().map(average)).collect();
    for line in table(&snap.rows, &rates, |n| HumanCount(n).to_string(), false) {
        let _ = writeln!(out, "  {line}");
    }
    out
}

/// `999`, `35.1k`, `600k`, `1.2M`: at most three significant digits and a unit.
pub fn human_count(n: u64) -> String {
    si(n as f64)
}

/// Events per second: `0.5/s`, `35.1k/s`.
pub fn human_rate(per_second: f64) -> String {
    if per_second < 9.95 { format!("{per_second:.1}/s") } else { format!("{}/s", si(per_second)) }
}

/// `0.4s`, `12.3s`, `1m05s`, `2h03m04s`.
pub fn human_duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{:.1}s", d.as_secs_f64()),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m{:02}s", s / 3600, s / 60 % 60, s % 60),
    }
}

fn si(v: f64) -> String {
    const UNITS: [&str; 7] = ["", "k", "M", "G", "T", "P", "E"];
    let (mut v, mut unit) = (v, 0);
    while v >= 999.5 && unit + 1 < UNITS.len() {
        v /= 1000.0;
        unit += 1;
    }
    match unit {
        0 => format!("{v:.0}"),
        _ if v < 99.95 => format!("{v:.1}{}", UNITS[unit]),
        _ => format!("{v:.0}{}", UNITS[unit]),
    }
}

async fn run(metrics: Arc<Metrics>, stop: CancellationToken, bar: ProgressBar) {
    let spinner = ["⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏", " "];
    let template = ProgressStyle::with_template("{spinner:.cyan} {msg}").expect("a valid template");
    bar.set_style(template.tick_strings(&spinner));
    *ACTIVE.lock().unwrap_or_else(|e| e.into_inner()) = Some(bar.clone());
    let mut live = Live::new(&metrics);
    let mut ticks = tokio::time::interval(REDRAW);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            _ = ticks.tick() => {
                bar.set_message(live.frame(&metrics, false));
                bar.tick();
            }
        }
    }
    bar.set_message(live.frame(&metrics, true));
    bar.finish();
    *ACTIVE.lock().unwrap_or_else(|e| e.into_inner()) = None;
}

/// The live view's memory of the last sample, for rates over the last interval.
struct Live {
    /// When the counters below were read.
    at: Instant,
    read: u64,
    rated: Vec<Option<u64>>,
    /// The rates shown until the next sample: events read, and per node.
    read_rate: f64,
    rates: Vec<Option<f64>>,
}

impl Live {
    fn new(metrics: &Metrics) -> Live {
        let snap = Snapshot::take(metrics);
        Live {
            at: Instant::now(),
            read: snap.read,
            rated: snap.rows.iter().map(Row::rated).collect(),
            read_rate: 0.0,
            rates: snap.rows.iter().map(|r| r.rated().map(|_| 0.0)).collect(),
        }
    }

    /// The display text. Rates cover the time since the last sample, resampled only once
    /// [`MIN_SAMPLE`] has passed so they do not jump; the `last` frame, left on screen, shows
    /// rates averaged over the whole run instead.
    fn frame(&mut self, metrics: &Metrics, last: bool) -> String {
        let snap = Snapshot::take(metrics);
        let elapsed = metrics.started.elapsed();
        let secs = elapsed.as_secs_f64();
        let average = |n: u64| if secs > 0.0 { n as f64 / secs } else { 0.0 };
        let now = Instant::now();
        let dt = now.duration_since(self.at).as_secs_f64();
        if dt >= MIN_SAMPLE.as_secs_f64() {
            let rate = |now: u64, before: u64| now.saturating_sub(before) as f64 / dt;
            self.read_rate = rate(snap.read, self.read);
            self.rates =
                snap.rows.iter().zip(&self.rated).map(|(row, before)| Some(rate(row.rated()?, (*before)?))).collect();
            self.at = now;
            self.read = snap.read;
            self.rated = snap.rows.iter().map(Row::rated).collect();
        }
        let (throughput, rates) = if last {
            let rates: Vec<Option<f64>> = snap.rows.iter().map(|r| r.rated().map(average)).collect();
            (format!("avg {}", human_rate(average(snap.read))), rates)
        } else {
            let now = style(human_rate(self.read_rate)).for_stderr().bold();
            (format!("{now} (avg {})", human_rate(average(snap.read))), self.rates.clone())
        };
        let errors = error_counts(&snap, human_count);
        let mut out = format!(
            "{}  {}  {} events read  {throughput}  {} written  {}",
            style("phoenix").for_stderr().bold(),
            human_duration(elapsed),
            human_count(snap.read),
            human_count(snap.written),
            if snap.errors > 0 { style(errors).for_stderr().red() } else { style(errors).for_stderr() },
        );
        for line in table(&snap.rows, &rates, human_count, true) {
            let _ = write!(out, "\n  {line}");
        }
        out
    }
}

/// One reading of every counter.
struct Snapshot {
    rows: Vec<Row>,
    /// Events read by all sources.
    read: u64,
    /// Events written by all sinks.
    written: u64,
    errors: u64,
    unhandled: u64,
}

struct Row {
    title: String,
    role: Role,
    events_in: u64,
    events_out: u64,
    errors: u64,
    unhandled: u64,
    retries: u64,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    Source,
    Sink,
    Stage,
}

impl Row {
    fn read(n: &NodeStats) -> Row {
        // Node titles are `source NAME (connector)`, `sink NAME (connector)`, or a stage keyword.
        let role = match n.title.split(' ').next() {
            Some("source") => Role::Source,
            Some("sink") => Role::Sink,
            _ => Role::Stage,
        };
        Row {
            title: n.title.clone(),
            role,
            events_in: n.events_in.get(),
            events_out: n.events_out.get(),
            errors: n.errors.get(),
            unhandled: n.unhandled.get(),
            retries: n.retries.get(),
        }
    }

    /// The counter a rate is shown for: events read by a source, written by a sink.
    fn rated(&self) -> Option<u64> {
        match self.role {
            Role::Source => Some(self.events_in),
            Role::Sink => Some(self.events_out),
            Role::Stage => None,
        }
    }
}

impl Snapshot {
    fn take(metrics: &Metrics) -> Snapshot {
        let rows: Vec<Row> = metrics.nodes.iter().map(|n| Row::read(n)).collect();
        let sum = |f: fn(&Row) -> Option<u64>| rows.iter().filter_map(f).sum::<u64>();
        Snapshot {
            read: sum(|r| (r.role == Role::Source).then_some(r.events_in)),
            written: sum(|r| (r.role == Role::Sink).then_some(r.events_out)),
            errors: sum(|r| Some(r.errors)),
            unhandled: sum(|r| Some(r.unhandled)),
            rows,
        }
    }
}

/// `0 errors`, `1 error`, `12 errors (3 unhandled)`.
fn error_counts(snap: &Snapshot, number: impl Fn(u64) -> String) -> String {
    let noun = if snap.errors == 1 { "error" } else { "errors" };
    match snap.unhandled {
        0 => format!("{} {noun}", number(snap.errors)),
        u => format!("{} {noun} ({} unhandled)", number(snap.errors), number(u)),
    }
}

/// The node lines, columns aligned: title, in, out, errors, rate, then `unhandled` and `retries`
/// when nonzero. `color` highlights nonzero errors (for the terminal).
fn table(rows: &[Row], rates: &[Option<f64>], number: impl Fn(u64) -> String, color: bool) -> Vec<String> {
    let cells: Vec<[String; 5]> = rows
        .iter()
        .zip(rates)
        .map(|(r, rate)| {
            [
                r.title.clone(),
                number(r.events_in),
                number(r.events_out),
                number(r.errors),
                rate.map(human_rate).unwrap_or_default(),
            ]
        })
        .collect();
    let width = |i: usize| cells.iter().map(|c| c[i].chars().count()).max().unwrap_or(0);
    let w = [width(0), width(1), width(2), width(3), width(4)];
    rows.iter()
        .zip(cells)
        .map(|(r, [title, events_in, events_out, errors, rate])| {
            let errors = format!("errors {errors:>0$}", w[3]);
            let errors = match (color, r.errors) {
                (false, _) => errors,
                (true, 0) => style(errors).for_stderr().dim().to_string(),
                (true, _) => style(errors).for_stderr().red().to_string(),
            };
            let mut line = format!(
                "{title:<0$}  in {events_in:>1$}  out {events_out:>2$}  {errors}  {rate:>3$}",
                w[0], w[1], w[2], w[4]
            );
            if r.unhandled > 0 {
                let unhandled = format!("unhandled {}", number(r.unhandled));
                match color {
                    true => line += &format!("  {}", style(unhandled).for_stderr().red().bold()),
                    false => line += &format!("  {unhandled}"),
                }
            }
            if r.retries > 0 {
                let retries = format!("retries {}", number(r.retries));
                match color {
                    true => line += &format!("  {}", style(retries).for_stderr().yellow()),
                    false => line += &format!("  {retries}"),
                }
            }
            line.trim_end().to_string()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow() -> Metrics {
        Metrics::new(
            [("source orders (file)", "f.phx:1:1"), ("where", "f.phx:2:3"), ("sink out (stdout)", "f.phx:3:1")]
                .map(|(t, a)| (t.to_string(), a.to_string())),
        )
    }

    #[test]
    fn counts_are_humanised() {
        let cases = [
            (0, "0"),
            (999, "999"),
            (1_000, "1.0k"),
            (1_234, "1.2k"),
            (35_149, "35.1k"),
            (99_949, "99.9k"),
            (99_950, "100k"),
            (600_000, "600k"),
            (999_499, "999k"),
            (999_500, "1.0M"),
            (1_200_000, "1.2M"),
            (3_000_000_000, "3.0G"),
            (u64::MAX, "18.4E"),
        ];
        for (n, want) in cases {
            assert_eq!(human_count(n), want, "{n}");
        }
    }

    #[test]
    fn rates_and_durations_are_humanised() {
        assert_eq!(human_rate(0.0), "0.0/s");
        assert_eq!(human_rate(0.5), "0.5/s");
        assert_eq!(human_rate(12.4), "12/s");
        assert_eq!(human_rate(35_100.0), "35.1k/s");
        assert_eq!(human_duration(Duration::from_millis(400)), "0.4s");
        assert_eq!(human_duration(Duration::from_millis(12_340)), "12.3s");
        assert_eq!(human_duration(Duration::from_secs(65)), "1m05s");
        assert_eq!(human_duration(Duration::from_secs(2 * 3600 + 3 * 60 + 4)), "2h03m04s");
    }

    #[test]
    fn summary_lists_every_node_aligned() {
        let m = flow();
        let [source, filter, sink] = &m.nodes[..] else { panic!("three nodes") };
        source.events_in.inc_by(1_000_000);
        source.events_out.inc_by(1_000_000);
        filter.events_in.inc_by(1_000_000);
        filter.events_out.inc_by(500_000);
        sink.events_in.inc_by(500_000);
        sink.events_out.inc_by(499_990);
        sink.errors.inc_by(10);
        sink.unhandled.inc_by(10);
        sink.retries.inc_by(3);

        let text = summary(&m);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        assert!(text.ends_with('\n'));
        assert!(lines[0].starts_with("phoenix: ran "), "{text}");
        assert!(
            lines[0].contains("1,000,000 events read (")
                && lines[0].ends_with("/s), 499,990 written, 10 errors (10 unhandled)"),
            "{text}"
        );
        assert!(!text.contains('\x1b'), "plain text has no colour codes");
        // Rates depend on the clock: compare the lines up to the rate column.
        let head = |l: &str| l.split("  errors").next().unwrap_or_default().to_string();
        assert_eq!(head(lines[1]), "  source orders (file)  in 1,000,000  out 1,000,000");
        assert_eq!(head(lines[2]), "  where                 in 1,000,000  out   500,000");
        assert_eq!(head(lines[3]), "  sink out (stdout)     in   500,000  out   499,990");
        assert!(lines[1].contains("errors  0  ") && lines[1].ends_with("/s"), "{text}");
        assert!(lines[2].ends_with("errors  0"), "stages have no rate: {text}");
        assert!(lines[3].contains("errors 10  ") && lines[3].ends_with("/s  unhandled 10  retries 3"), "{text}");
        // The rate column is right-aligned: sources and sinks end it at the same place.
        let rate_end = |l: &str| l.find("/s").map(|i| i + 2);
        assert_eq!(rate_end(lines[1]), rate_end(lines[3]), "{text}");
    }

    #[test]
    fn summary_of_an_empty_flow() {
        let m = Metrics::new(Vec::new());
        let text = summary(&m);
        assert!(
            text.starts_with("phoenix: ran ") && text.ends_with(", 0 events read (0.0/s), 0 written, 0 errors\n"),
            "{text}"
        );
    }

    #[test]
    fn live_frame_shows_counts_and_interval_rates() {
        let plain = |s: String| console::strip_ansi_codes(&s).into_owned();
        let m = flow();
        let mut live = Live::new(&m);
        m.nodes[0].events_in.inc_by(1_500);
        m.nodes[2].errors.inc();
        // Too soon after the last sample: the rates shown stay as they were.
        let frame = plain(live.frame(&m, false));
        let lines: Vec<&str> = frame.lines().collect();
        assert_eq!(lines.len(), 4, "{frame}");
        assert!(lines[0].starts_with("phoenix  ") && lines[0].contains("  1.5k events read  0.0/s (avg "), "{frame}");
        assert!(lines[0].ends_with("  0 written  1 error"), "{frame}");
        assert_eq!(lines[1], "  source orders (file)  in 1.5k  out 0  errors 0  0.0/s");
        assert_eq!(lines[2], "  where                 in    0  out 0  errors 0");
        assert_eq!(lines[3], "  sink out (stdout)     in    0  out 0  errors 1  0.0/s");
        // A sample a second later measures the events since the last one.
        live.at -= Duration::from_secs(1);
        let frame = plain(live.frame(&m, false));
        assert!(frame.lines().nth(1).is_some_and(|l| l.ends_with("  1.5k/s")), "{frame}");
        assert!(frame.lines().next().is_some_and(|l| l.contains("events read  1.5k/s (avg ")), "{frame}");
        let last = plain(live.frame(&m, true));
        assert!(last.lines().next().is_some_and(|l| l.contains("events read  avg ")), "{last}");
    }

    #[tokio::test]
    async fn stopping_leaves_the_final_frame() {
        let m = Arc::new(flow());
        m.nodes[0].events_in.inc_by(7);
        let stop = CancellationToken::new();
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::hidden());
        let task = tokio::spawn(run(m.clone(), stop.clone(), bar.clone()));
        stop.cancel();
        task.await.expect("no panic");
        assert!(bar.is_finished());
        let message = console::strip_ansi_codes(&bar.message()).into_owned();
        assert!(message.contains("source orders (file)  in 7"), "{message}");
        assert_eq!(suspend(|| 42), 42);
    }
}
