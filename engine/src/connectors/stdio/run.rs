//! `stdin` reads NDJSON until end of input; `stdout` writes one event per line (or indented).

use crate::connectors::lines::{Origin, read_ndjson};
use crate::connectors::{BoxFuture, ConnectorError, Sink, Source, SourceContext, WriteError};
use crate::exec::batch::SinkBatch;
use crate::options::Options;
use arrow::array::Array;
use tokio::io::{AsyncWriteExt, BufWriter};

#[derive(Debug)]
pub struct StdinSource;

impl Source for StdinSource {
    fn run(self: Box<Self>, ctx: SourceContext) -> BoxFuture<'static, Result<(), ConnectorError>> {
        Box::pin(async move {
            let origin = Origin::default();
            ctx.set_connected();
            read_ndjson(tokio::io::stdin(), origin, &ctx)
                .await
                .map_err(|e| ConnectorError(format!("reading standard input: {e}")))?
                .ok();
            Ok(())
        })
    }
}

#[derive(Debug)]
pub struct StdoutSink {
    pretty: bool,
    out: BufWriter<tokio::io::Stdout>,
}

impl StdoutSink {
    pub fn new(options: &Options) -> Result<StdoutSink, ConnectorError> {
        Ok(StdoutSink {
            pretty: options.str("format") == Some("pretty"),
            out: BufWriter::with_capacity(1 << 16, tokio::io::stdout()),
        })
    }
}

impl Sink for StdoutSink {
    fn write<'a>(&'a mut self, batch: &'a SinkBatch) -> BoxFuture<'a, Result<(), WriteError>> {
        Box::pin(async move {
            let text = if self.pretty {
                let mut out = Vec::new();
                for i in 0..batch.payloads.len() {
                    let payload = batch.payloads.value(i);
                    match serde_json::from_slice::<serde_json::Value>(payload)
                        .and_then(|v| serde_json::to_vec_pretty(&v))
                    {
                        Ok(pretty) => out.extend_from_slice(&pretty),
                        Err(_) => out.extend_from_slice(payload),
                    }
                    out.push(b'\n');
                }
                out
            } else {
                batch.ndjson()
            };
            self.out.write_all(&text).await.map_err(|e| WriteError::Retryable(format!("writing standard output: {e}")))
        })
    }

    fn flush(&mut self) -> BoxFuture<'_, Result<(), WriteError>> {
        Box::pin(async move {
            self.out.flush().await.map_err(|e| WriteError::Retryable(format!("writing standard output: {e}")))
        })
    }
}
