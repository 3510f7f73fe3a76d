//! librdkafka settings from a node's options: brokers, TLS and SASL, and `properties`
//! (`name=value` pairs applied last, so an operator can tune anything the options do not cover).

use crate::connectors::ConnectorError;
use crate::observability::readiness::Throttled;
use crate::options::Options;
use rdkafka::ClientConfig;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::KafkaError;
use rdkafka::producer::{DeliveryResult, ProducerContext};
use rdkafka::{ClientContext, consumer::ConsumerContext};
use std::sync::Arc;

/// The settings every Kafka client of a node shares. Secrets (`sasl_password`,
/// `ssl_key_password`) go into the config and nowhere else: librdkafka does not log them.
pub fn client_config(options: &Options) -> Result<ClientConfig, ConnectorError> {
    let brokers = options
        .str("brokers")
        .filter(|b| !b.trim().is_empty())
        .ok_or_else(|| ConnectorError::new("option `brokers` must name at least one broker (`host:port`)"))?;
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers);
    c.set("client.id", format!("phoenix-{}", options.node()));
    let protocol = options.str("security_protocol").unwrap_or("plaintext");
    c.set("security.protocol", protocol);
    let sasl = protocol.starts_with("sasl");
    if sasl {
        let mechanism = options.str("sasl_mechanism").unwrap_or("PLAIN");
        c.set("sasl.mechanism", mechanism);
        let user = options.str("sasl_username").ok_or_else(|| {
            ConnectorError::new(format!("`security_protocol = {protocol}` needs `sasl_username` and `sasl_password`"))
        })?;
        c.set("sasl.username", user);
        c.set("sasl.password", options.str("sasl_password").unwrap_or_default());
    }
    for (option, property) in [
        ("ssl_ca_location", "ssl.ca.location"),
        ("ssl_certificate_location", "ssl.certificate.location"),
        ("ssl_key_location", "ssl.key.location"),
        ("ssl_key_password", "ssl.key.password"),
    ] {
        if let Some(v) = options.str(option) {
            c.set(property, v);
        }
    }
    for p in options.strings("properties") {
        let (name, value) = p.split_once('=').ok_or_else(|| {
            ConnectorError::new(format!(
                "`properties` entry `{p}` is not `name=value` (like `fetch.max.bytes=1048576`)"
            ))
        })?;
        c.set(name.trim(), value.trim());
    }
    Ok(c)
}

/// librdkafka reports configuration mistakes as one string naming the property; say which
/// node it belongs to.
pub fn creation_error(what: &str, e: rdkafka::error::KafkaError) -> ConnectorError {
    ConnectorError::new(format!("cannot create the Kafka {what}: {e}"))
}

/// librdkafka's log lines and errors for one node. A broker that cannot be reached makes
/// librdkafka complain dozens of times a second (each connection attempt, each "all brokers
/// down"); the user needs one clear line, so warnings and errors of a node share one
/// [`Throttled`]: at most one line per 30 s, with the count of the others. librdkafka's
/// informational lines go to debug.
/// Clones share the throttle, so every client of a node (consumer, producer, admin client)
/// together stays within it.
#[derive(Debug, Clone)]
pub struct Reporter(Arc<ReporterInner>);

#[derive(Debug)]
struct ReporterInner {
    node: String,
    brokers: String,
    throttle: Throttled,
}

impl Reporter {
    pub fn new(node: &str, options: &Options) -> Reporter {
        Reporter(Arc::new(ReporterInner {
            node: node.to_string(),
            brokers: options.str("brokers").unwrap_or_default().to_string(),
            throttle: Throttled::default(),
        }))
    }

    /// A problem worth a warning, throttled.
    pub fn warn(&self, message: impl std::fmt::Display) {
        if let Some(line) = self.0.throttle.line(message) {
            tracing::warn!(node = %self.0.node, "{line}");
        }
    }

    /// What a client context's `log` receives.
    pub fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error
            | RDKafkaLogLevel::Warning
                if facility == "FAIL" =>
            {
                // A broker connection failed: say so plainly, whatever librdkafka's wording.
                self.warn(format_args!("cannot reach the Kafka brokers at {}: {message}; retrying", self.0.brokers))
            }
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error
            | RDKafkaLogLevel::Warning => self.warn(format_args!("Kafka ({facility}): {message}")),
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                tracing::debug!(node = %self.0.node, "Kafka ({facility}): {message}")
            }
            RDKafkaLogLevel::Debug => tracing::trace!(node = %self.0.node, "Kafka ({facility}): {message}"),
        }
    }

    /// What a client context's `error` receives.
    pub fn error(&self, error: &KafkaError, reason: &str) {
        use rdkafka::types::RDKafkaErrorCode as C;
        let unreachable = matches!(
            error.rdkafka_error_code(),
            Some(C::BrokerTransportFailure | C::AllBrokersDown | C::Resolve | C::BrokerNotAvailable)
        );
        if unreachable {
            self.warn(format_args!("cannot reach the Kafka brokers at {}: {reason}; retrying", self.0.brokers));
        } else {
            self.warn(format_args!("Kafka: {error}: {reason}"));
        }
    }
}

/// A client with no callbacks of its own (a throwaway consumer, an admin client, a metadata
/// probe) still reports through the node's [`Reporter`].
impl ClientContext for Reporter {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        Reporter::log(self, level, fac, log_message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        Reporter::error(self, &error, reason);
    }
}

impl ConsumerContext for Reporter {}

impl ProducerContext for Reporter {
    type DeliveryOpaque = ();

    fn delivery(&self, _: &DeliveryResult<'_>, _: ()) {}
}
