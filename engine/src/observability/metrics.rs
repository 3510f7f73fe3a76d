//! Per-node counters, shared by the tasks, the progress display and `/metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use std::sync::Arc;
use std::time::Instant;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NodeLabels {
    /// `source orders`, `where`, `sink search`.
    pub node: String,
    /// Where the node is written: `flow.phx:12:5`.
    pub at: String,
}

/// The counters of one node of the flow.
#[derive(Debug, Clone)]
pub struct NodeStats {
    pub title: String,
    pub at: String,
    pub events_in: Counter,
    pub events_out: Counter,
    pub bytes_in: Counter,
    /// Events that failed here (sent to `.errors`, or counted as unhandled).
    pub errors: Counter,
    /// Failed events with no `.errors` wired: counted and logged, never silently lost.
    pub unhandled: Counter,
    /// Sink write attempts that failed and were retried.
    pub retries: Counter,
}

#[derive(Debug)]
pub struct Metrics {
    /// Shared with [`Metrics::sibling`]s, so one `/metrics` shows every flow of `phoenix serve`.
    pub registry: Arc<Registry>,
    families: Vec<Family<NodeLabels, Counter>>,
    pub nodes: Vec<Arc<NodeStats>>,
    pub started: Instant,
}

impl Metrics {
    /// One set of counters per node, `(title, location)`, in node-index order.
    pub fn new(nodes: impl IntoIterator<Item = (String, String)>) -> Metrics {
        let mut registry = Registry::with_prefix("phoenix");
        let families: Vec<Family<NodeLabels, Counter>> = (0..6).map(|_| Family::default()).collect();
        let names = [
            ("events_in", "Events that entered the node"),
            ("events_out", "Events the node passed on (for a sink: written)"),
            ("bytes_in", "Payload bytes a source received"),
            ("errors", "Events that failed at the node"),
            ("unhandled_errors", "Failed events with no .errors port wired"),
            ("sink_retries", "Failed sink writes that were retried"),
        ];
        for ((name, help), f) in names.iter().zip(&families) {
            registry.register(*name, *help, f.clone());
        }
        let nodes = stats(&families, nodes);
        Metrics { registry: Arc::new(registry), families, nodes, started: Instant::now() }
    }

    /// Counters for another flow's nodes in the same registry. Nodes are told apart by their
    /// location (`orders.phx:3:1`); a flow replaced by one with the same nodes keeps counting on.
    pub fn sibling(&self, nodes: impl IntoIterator<Item = (String, String)>) -> Metrics {
        Metrics {
            registry: self.registry.clone(),
            families: self.families.clone(),
            nodes: stats(&self.families, nodes),
            started: Instant::now(),
        }
    }

    /// Take this flow's nodes out of the shared registry (a flow of `phoenix serve` that was
    /// replaced or deleted), so edited flows do not leave series behind. A sibling made later
    /// with the same nodes starts from zero.
    pub fn forget(&self) {
        for n in &self.nodes {
            let labels = NodeLabels { node: n.title.clone(), at: n.at.clone() };
            self.families.iter().for_each(|f| {
                f.remove(&labels);
            });
        }
    }

    /// [`forget`](Self::forget) the nodes `keep` does not have. A version replaced by another
    /// (make-before-break) leaves the series they share, which the new one counts on: both
    /// versions count into one series while they overlap, so a counter never goes back.
    pub fn forget_except(&self, keep: &Metrics) {
        for n in &self.nodes {
            if keep.nodes.iter().any(|k| k.title == n.title && k.at == n.at) {
                continue;
            }
            let labels = NodeLabels { node: n.title.clone(), at: n.at.clone() };
            self.families.iter().for_each(|f| {
                f.remove(&labels);
            });
        }
    }

    /// The Prometheus text exposition (of every sibling).
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

fn stats(
    families: &[Family<NodeLabels, Counter>],
    nodes: impl IntoIterator<Item = (String, String)>,
) -> Vec<Arc<NodeStats>> {
    nodes
        .into_iter()
        .map(|(title, at)| {
            let l = NodeLabels { node: title.clone(), at: at.clone() };
            let c = |i: usize| families[i].get_or_create(&l).clone();
            Arc::new(NodeStats {
                title,
                at,
                events_in: c(0),
                events_out: c(1),
                bytes_in: c(2),
                errors: c(3),
                unhandled: c(4),
                retries: c(5),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(title: &str, at: &str) -> (String, String) {
        (title.to_string(), at.to_string())
    }

    #[test]
    fn siblings_share_one_exposition_until_forgotten() {
        let root = Metrics::new([]);
        let a = root.sibling([node("sink out (file)", "a.phx:3:1")]);
        let b = root.sibling([node("sink out (file)", "b.phx:3:1")]);
        a.nodes[0].events_out.inc_by(2);
        b.nodes[0].events_out.inc_by(5);
        let text = root.render();
        assert!(text.contains(r#"phoenix_events_out_total{node="sink out (file)",at="a.phx:3:1"} 2"#), "{text}");
        assert!(text.contains(r#"phoenix_events_out_total{node="sink out (file)",at="b.phx:3:1"} 5"#), "{text}");
        a.forget();
        let text = root.render();
        assert!(!text.contains("a.phx"), "{text}");
        assert!(text.contains(r#"at="b.phx:3:1"} 5"#), "{text}");
        let again = root.sibling([node("sink out (file)", "a.phx:3:1")]);
        assert_eq!(again.nodes[0].events_out.get(), 0);
    }
}
