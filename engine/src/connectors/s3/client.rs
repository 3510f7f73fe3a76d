//! The S3 client: the AWS configuration chain with `region` and `endpoint` on top
//! ([`crate::connectors::aws`], shared with `sqs`).

use crate::connectors::ConnectorError;
use crate::connectors::aws::AwsConfig;
use crate::options::Options;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::Region;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use std::time::Duration;

pub use crate::connectors::aws::describe;

/// Where the bucket is and how to reach it.
#[derive(Debug, Clone)]
pub struct BucketConfig {
    pub bucket: String,
    aws: AwsConfig,
}

impl BucketConfig {
    pub fn new(options: &Options) -> Result<BucketConfig, ConnectorError> {
        let bucket = options
            .str("bucket")
            .filter(|b| !b.is_empty() && !b.contains('/'))
            .ok_or_else(|| ConnectorError::new("option `bucket` must be a bucket's name (no `s3://`, no `/`)"))?
            .to_string();
        Ok(BucketConfig { bucket, aws: AwsConfig::new(options)? })
    }

    /// A client whose request attempts give up after `attempt_timeout`, retried by the SDK.
    pub async fn client(&self, attempt_timeout: Duration) -> Client {
        let sdk = self.aws.load(attempt_timeout).await;
        // A local endpoint (moto, MinIO) serves buckets as paths: `bucket.127.0.0.1` does
        // not resolve.
        let mut conf = aws_sdk_s3::config::Builder::from(&sdk).force_path_style(self.aws.has_endpoint());
        if sdk.region().is_none() {
            // Requests must be signed for some region; S3 redirects none of ours.
            conf = conf.region(Region::new("us-east-1"));
        }
        Client::from_conf(conf.build())
    }
}

/// How an S3 request failed, as far as what to do next goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The object (or bucket) is not there.
    Missing,
    /// Refused for what it is (access denied, invalid request): trying again will not help.
    Refused(String),
    /// Might work later (a timeout, no connection, throttling, a 5xx).
    Transient(String),
}

/// Classify an SDK error: 404s, other 4xx (but 408 and 429), the rest.
pub fn classify<E, R>(e: &SdkError<E, R>) -> Failure
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug + HasStatus,
{
    let text = match e.as_service_error() {
        Some(s) => match (s.code(), s.message()) {
            (Some(c), Some(m)) => format!("{c}: {m}"),
            (Some(c), None) => c.to_string(),
            _ => describe(e),
        },
        None => describe(e),
    };
    let status = match e {
        SdkError::ServiceError(s) => Some(s.raw().status()),
        _ => None,
    };
    let code = e.as_service_error().and_then(|s| s.code());
    match (status, code) {
        (_, Some("NoSuchKey" | "NoSuchBucket" | "NotFound")) | (Some(404), _) => Failure::Missing,
        (Some(408 | 429), _) => Failure::Transient(text),
        (Some(s), _) if (400..500).contains(&s) => Failure::Refused(text),
        _ => Failure::Transient(text),
    }
}

/// The HTTP status of a raw response.
pub trait HasStatus {
    fn status(&self) -> u16;
}

impl HasStatus for aws_sdk_s3::config::http::HttpResponse {
    fn status(&self) -> u16 {
        self.status().as_u16()
    }
}
