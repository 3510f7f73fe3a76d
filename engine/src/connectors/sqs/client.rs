//! The SQS client: region and credentials from the standard AWS configuration chain
//! (environment, profile, instance or pod role), with `region` and `endpoint` options on top
//! ([`crate::connectors::aws`], shared with `s3`).

use crate::connectors::ConnectorError;
use crate::connectors::aws::AwsConfig;
use crate::options::Options;
use aws_sdk_sqs::Client;
use aws_sdk_sqs::config::Region;
use std::time::Duration;

pub use crate::connectors::aws::describe;

/// Where and how to reach the queue, checked when the flow is built.
#[derive(Debug, Clone)]
pub struct QueueConfig {
    pub queue_url: String,
    aws: AwsConfig,
}

impl QueueConfig {
    pub fn new(options: &Options) -> Result<QueueConfig, ConnectorError> {
        let queue_url = options
            .str("queue_url")
            .filter(|u| u.starts_with("http://") || u.starts_with("https://"))
            .ok_or_else(|| ConnectorError::new("option `queue_url` must be the queue's URL (https://…)"))?
            .to_string();
        QueueConfig::at(queue_url, options)
    }

    /// The queue at `queue_url`, reached with the `region` and `endpoint` of `options`.
    pub fn at(queue_url: String, options: &Options) -> Result<QueueConfig, ConnectorError> {
        Ok(QueueConfig { queue_url, aws: AwsConfig::new(options)? })
    }

    /// A client whose every request attempt gives up after `attempt_timeout` (a server that
    /// hangs must not hang the flow), retried by the SDK's standard policy.
    pub async fn client(&self, attempt_timeout: Duration) -> Client {
        let sdk = self.aws.load(attempt_timeout).await;
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

#[cfg(test)]
mod tests {
    #[test]
    fn region_from_queue_url() {
        assert_eq!(super::region_of("https://sqs.eu-west-1.amazonaws.com/123/q"), Some("eu-west-1"));
        assert_eq!(super::region_of("http://127.0.0.1:4566/123/q"), None);
    }
}
