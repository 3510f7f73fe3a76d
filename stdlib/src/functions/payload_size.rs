//! `payload_size`: The size in bytes of the event's raw payload, as received.

use crate::prelude::*;
use arrow::datatypes::DataType;
use datafusion_common::{Result, exec_err};
use datafusion_expr::{ColumnarValue, ScalarFunctionArgs, ScalarUDFImpl, Signature as UdfSignature, Volatility};

#[derive(Debug)]
pub struct PayloadSize;

impl Function for PayloadSize {
    fn name(&self) -> &'static str {
        "payload_size"
    }

    fn signature(&self) -> Signature {
        Signature::new(Vec::new(), Returns::Exact(Ty::Int))
    }

    fn summary(&self) -> &'static str {
        "The size in bytes of the event's raw payload as the source received it (its `@size`)."
    }

    fn examples(&self) -> &'static [Example] {
        // Examples run on the event `{}`: two bytes.
        &[Example { expr: "payload_size()", result: "2" }, Example { expr: "payload_size() > 1024", result: "false" }]
    }

    fn udf(&self) -> Arc<ScalarUDF> {
        Arc::new(ScalarUDF::from(PayloadSizeUdf::new()))
    }

    fn implicit_metadata(&self) -> Option<&'static str> {
        Some("size")
    }
}

/// The checker passes `@size` as the only argument; the function returns it.
#[derive(Debug, PartialEq, Eq, Hash)]
struct PayloadSizeUdf {
    signature: UdfSignature,
}

impl PayloadSizeUdf {
    fn new() -> PayloadSizeUdf {
        PayloadSizeUdf { signature: UdfSignature::exact(vec![DataType::Int64], Volatility::Immutable) }
    }
}

impl ScalarUDFImpl for PayloadSizeUdf {
    fn name(&self) -> &str {
        "payload_size"
    }

    fn signature(&self) -> &UdfSignature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Int64)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        match args.args.as_slice() {
            [size] if size.data_type() == DataType::Int64 => Ok(size.clone()),
            [size] => size.cast_to(&DataType::Int64, None),
            other => exec_err!("payload_size takes the event's `@size`, got {} arguments", other.len()),
        }
    }
}
