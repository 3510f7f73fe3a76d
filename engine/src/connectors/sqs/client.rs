//! The SQS client: region and credentials from the standard AWS configuration chain
//! (environment, profile, instance or pod role), with `region` and `endpoint` options on top.

use crate::connectors::ConnectorError;
use crate::options::Options;
use aws_config::BehaviorVersion;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_sqs::Client;
use aws_sdk_sqs::config::Region;
use std::time::Duration;

/// Where and how to reach the queue, checked when the flow is built.
#[derive(Debug, Clone)]
pub struct QueueConfig {
    pub queue_url: String,
    region: Option<String>,
    endpoint: Option<String>,
}

impl QueueConfig {
    pub fn new(options: &Options) -> Result<QueueConfig, ConnectorError> {
        let queue_url = options
            .str("queue_url")
            .filter(|u| u.starts_with("http://") || u.starts_with("https://"))
            .ok_or_else(|| ConnectorError::new("option `queue_url` must be the queue's URL (https://…)"))?
            .to_string();
        let endpoint = options.str("endpoint").filter(|e| !e.is_empty()).map(String::from);
        if let Some(e) = &endpoint
            && !(e.starts_with("http://") || e.starts_with("https://"))
        {
            return Err(ConnectorError::new(format!("option `endpoint` must be a URL, got `{e}`")));
        }
        Ok(QueueConfig { queue_url, region: options.str("region").map(String::from), endpoint })
    }

    /// A client whose every request attempt gives up after `attempt_timeout` (a server that
    /// hangs must not hang the flow), retried by the SDK's standard policy.
    pub async fn client(&self, attempt_timeout: Duration) -> Client {
        let mut loader = aws_config::defaults(BehaviorVersion::latest()).timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(5))
                .operation_attempt_timeout(attempt_timeout)
                .build(),
        );
        if let Some(r) = &self.region {
            loader = loader.region(Region::new(r.clone()));
        }
        if let Some(e) = &self.endpoint {
            loader = loader.endpoint_url(e);
        }
        let sdk = loader.load().await;
        let mut conf = aws_sdk_sqs::config::Builder::from(&sdk);
        if sdk.region().is_none() {
            // The chain found no region: one is required to sign requests, and a queue URL
            // names its region as the host's second label (sqs.eu-west-1.amazonaws.com).
            conf = conf.region(Region::new(region_of(&self.queue_url).unwrap_or("us-east-1").to_string()));
        }
        Client::from_conf(conf.build())
    }
}

fn region_of(url: &str) -> Option<&str> {
    let host = url.split("://").nth(1)?.split('/').next()?;
    let mut labels = host.split('.');
    (labels.next()? == "sqs").then_some(())?;
    labels.next().filter(|r| r.contains('-'))
}

/// An SDK error with its cause (the SDK's own `Display` says only "service error").
pub fn describe<E: std::error::Error>(e: &E) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn region_from_queue_url() {
        assert_eq!(super::region_of("https://sqs.eu-west-1.amazonaws.com/123/q"), Some("eu-west-1"));
        assert_eq!(super::region_of("http://127.0.0.1:4566/123/q"), None);
    }
}
