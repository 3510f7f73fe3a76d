//! librdkafka settings from a node's options: brokers, TLS and SASL, and `properties`
//! (`name=value` pairs applied last, so an operator can tune anything the options do not cover).

use crate::connectors::ConnectorError;
use crate::options::Options;
use rdkafka::ClientConfig;

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
