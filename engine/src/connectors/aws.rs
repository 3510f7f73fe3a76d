//! What the AWS connectors (`sqs`, `s3`) share: the `region` and `endpoint` options and the SDK
//! configuration built from them on top of the standard AWS chain (environment, profile,
//! instance or pod role), so both find credentials and regions the same way.

use super::ConnectorError;
use crate::options::Options;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use phoenix_dsl::catalog::{OptionSpec, OptionType};
use std::time::Duration;

/// The `region` and `endpoint` options; `endpoint_doc` says what a local endpoint would be.
pub(crate) fn options(endpoint_doc: &'static str) -> Vec<OptionSpec> {
    vec![
        OptionSpec::new("region", OptionType::String, "AWS region; defaults to the standard AWS configuration chain."),
        OptionSpec::new("endpoint", OptionType::String, endpoint_doc),
    ]
}

/// Region and endpoint as the flow set them, checked when the flow is built.
#[derive(Debug, Clone)]
pub struct AwsConfig {
    region: Option<String>,
    endpoint: Option<String>,
}

impl AwsConfig {
    pub fn new(options: &Options) -> Result<AwsConfig, ConnectorError> {
        let endpoint = options.str("endpoint").filter(|e| !e.is_empty()).map(String::from);
        if let Some(e) = &endpoint
            && !(e.starts_with("http://") || e.starts_with("https://"))
        {
            return Err(ConnectorError::new(format!("option `endpoint` must be a URL, got `{e}`")));
        }
        Ok(AwsConfig { region: options.str("region").filter(|r| !r.is_empty()).map(String::from), endpoint })
    }

    /// Whether requests go to an `endpoint` the flow named rather than AWS.
    pub fn has_endpoint(&self) -> bool {
        self.endpoint.is_some()
    }

    /// The SDK configuration: every request attempt gives up after `attempt_timeout` (a server
    /// that hangs must not hang the flow), retried by the SDK's standard policy.
    pub async fn load(&self, attempt_timeout: Duration) -> SdkConfig {
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
        loader.load().await
    }
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
