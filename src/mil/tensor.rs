//! Tensor values: their type (dtype and static shape) and their stored bytes, whether immediate
//! in the protobuf or in a weight file. Bytes are always in blob layout: little-endian, sub-byte
//! elements packed LSB-first.

use std::borrow::Cow;

use crate::error::Result;
use crate::format::dtype::DType;
use crate::format::package::Package;
use crate::format::spec::proto::mil_spec::{
    dimension, tensor_value, value, value::ImmediateValue, value_type, Dimension, NamedValueType,
    TensorType, TensorValue, Value, ValueType,
};
use crate::format_err;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorInfo {
    pub dtype: DType,
    pub shape: Vec<usize>,
}

impl TensorInfo {
    pub fn new(dtype: DType, shape: &[usize]) -> Self {
        TensorInfo {
            dtype,
            shape: shape.to_vec(),
        }
    }

    /// The element count; an error for a shape whose product does not fit (declared shapes are
    /// untrusted).
    pub fn count(&self) -> Result<usize> {
        crate::kernels::numel(&self.shape)
    }

    /// The protobuf type of a tensor with this dtype and fully known shape.
    pub fn value_type(&self) -> ValueType {
        ValueType {
            r#type: Some(value_type::Type::TensorType(TensorType {
                data_type: self.dtype.to_proto(),
                rank: self.shape.len() as i64,
                dimensions: self
                    .shape
                    .iter()
                    .map(|&size| Dimension {
                        dimension: Some(dimension::Dimension::Constant(
                            dimension::ConstantDimension { size: size as u64 },
                        )),
                    })
                    .collect(),
                attributes: Default::default(),
            })),
        }
    }
}

/// The dtype and static shape of a tensor type; None for other types or symbolic shapes.
pub fn tensor_info(value_type: Option<&ValueType>) -> Option<TensorInfo> {
    let Some(value_type::Type::TensorType(t)) = value_type?.r#type.as_ref() else {
        return None;
    };
    let dtype = DType::from_proto(t.data_type)?;
    let shape = t
        .dimensions
        .iter()
        .map(|d| match d.dimension {
            Some(dimension::Dimension::Constant(c)) => usize::try_from(c.size).ok(),
            _ => None,
        })
        .collect::<Option<Vec<_>>>()?;
    (shape.len() as i64 == t.rank).then_some(TensorInfo { dtype, shape })
}

/// A tensor's type and bytes, borrowed from the weight file where possible.
pub struct TensorData<'a> {
    pub info: TensorInfo,
    pub bytes: Cow<'a, [u8]>,
}

/// Refuses an output of `op` (e.g. "op w (const)") whose declared tensor shape is not `shape`,
/// the shape of the value it holds: consumers and passes read the declaration.
pub fn check_declared_shape(op: &str, output: &NamedValueType, shape: &[usize]) -> Result<()> {
    match tensor_info(output.r#type.as_ref()) {
        Some(declared) if declared.shape != shape => Err(format_err!(
            "{op}: output {} is declared with shape {:?} but its value has shape {shape:?}",
            output.name,
            declared.shape
        )),
        _ => Ok(()),
    }
}

/// True when the value is stored in a weight file.
pub fn is_blob(value: &Value) -> bool {
    matches!(value.value, Some(value::Value::BlobFileValue(_)))
}

/// Reads a tensor value (immediate or blob) into blob-layout bytes, checking sizes.
pub fn read_tensor<'a>(
    value: &'a Value,
    package: &'a Package,
    what: &str,
) -> Result<TensorData<'a>> {
    let info = tensor_info(value.r#type.as_ref())
        .ok_or_else(|| format_err!("{what}: not a tensor with a static shape"))?;
    let count = info.count().map_err(|e| format_err!("{what}: {e}"))?;
    let expected = info
        .dtype
        .storage_bytes(count)
        .ok_or_else(|| format_err!("{what}: {} tensors have no byte layout", info.dtype.name()))?;
    let bytes: Cow<'a, [u8]> = match &value.value {
        Some(value::Value::BlobFileValue(b)) => {
            let blob = package.blob(b)?;
            blob.check_holds(b.offset, info.dtype, &info.shape, what)?;
            Cow::Borrowed(blob.data)
        }
        Some(value::Value::ImmediateValue(ImmediateValue {
            value: Some(value::immediate_value::Value::Tensor(t)),
        })) => immediate_bytes(t, info.dtype, what)?,
        _ => return Err(format_err!("{what}: value holds no tensor data")),
    };
    if bytes.len() != expected {
        return Err(format_err!(
            "{what}: {} bytes of data for a {} tensor of shape {:?} ({expected} bytes expected)",
            bytes.len(),
            info.dtype.name(),
            info.shape
        ));
    }
    Ok(TensorData { info, bytes })
}

fn immediate_bytes<'a>(t: &'a TensorValue, dtype: DType, what: &str) -> Result<Cow<'a, [u8]>> {
    use tensor_value::Value as V;
    let bad = || {
        format_err!(
            "{what}: immediate value does not match its {} type",
            dtype.name()
        )
    };
    Ok(match (t.value.as_ref(), dtype) {
        (Some(V::Bytes(b)), _) => Cow::Borrowed(&b.values[..]),
        (Some(V::Floats(f)), DType::F32) => {
            Cow::Owned(f.values.iter().flat_map(|x| x.to_le_bytes()).collect())
        }
        (Some(V::Doubles(f)), DType::F64) => {
            Cow::Owned(f.values.iter().flat_map(|x| x.to_le_bytes()).collect())
        }
        (Some(V::Bools(b)), DType::Bool) => Cow::Owned(b.values.iter().map(|&x| x as u8).collect()),
        (Some(V::Ints(i)), DType::I32 | DType::U32) => {
            Cow::Owned(i.values.iter().flat_map(|x| x.to_le_bytes()).collect())
        }
        (Some(V::Ints(i)), DType::I16 | DType::U16) => Cow::Owned(
            i.values
                .iter()
                .flat_map(|&x| (x as i16).to_le_bytes())
                .collect(),
        ),
        (Some(V::Ints(i)), DType::I8 | DType::U8) => {
            Cow::Owned(i.values.iter().map(|&x| x as u8).collect())
        }
        (Some(V::LongInts(i)), DType::I64 | DType::U64) => {
            Cow::Owned(i.values.iter().flat_map(|x| x.to_le_bytes()).collect())
        }
        (None, _) => Cow::Borrowed(&[][..]),
        _ => return Err(bad()),
    })
}

/// Whether coremltools stores a tensor of this dtype and size in the weight file rather than
/// inline: at least 10 elements of a type the blob writer takes (more types from iOS18 on).
pub fn goes_to_blob(info: &TensorInfo, spec_version: i32) -> bool {
    use DType::*;
    let blob_type = match info.dtype {
        F16 | F32 | U8 | I8 | I4 | U1 | U2 | U3 | U4 | U6 => true,
        U16 | I16 | I32 | U32 => spec_version >= 9,
        _ => false,
    };
    blob_type && info.count().is_ok_and(|n| n >= 10)
}

/// An immediate tensor value in the protobuf field coremltools uses for the dtype.
pub fn immediate_value(info: &TensorInfo, bytes: &[u8]) -> Value {
    use tensor_value::Value as V;
    let chunks = |n: usize| bytes.chunks_exact(n);
    let tensor = match info.dtype {
        DType::F32 => V::Floats(tensor_value::RepeatedFloats {
            values: chunks(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect(),
        }),
        DType::F64 => V::Doubles(tensor_value::RepeatedDoubles {
            values: chunks(8)
                .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
                .collect(),
        }),
        DType::I32 => V::Ints(tensor_value::RepeatedInts {
            values: chunks(4)
                .map(|c| i32::from_le_bytes(c.try_into().unwrap()))
                .collect(),
        }),
        DType::I16 => V::Ints(tensor_value::RepeatedInts {
            values: chunks(2)
                .map(|c| i16::from_le_bytes(c.try_into().unwrap()) as i32)
                .collect(),
        }),
        DType::U16 => V::Ints(tensor_value::RepeatedInts {
            values: chunks(2)
                .map(|c| u16::from_le_bytes(c.try_into().unwrap()) as i32)
                .collect(),
        }),
        DType::I64 | DType::U64 => V::LongInts(tensor_value::RepeatedLongInts {
            values: chunks(8)
                .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
                .collect(),
        }),
        DType::Bool => V::Bools(tensor_value::RepeatedBools {
            values: bytes.iter().map(|&b| b != 0).collect(),
        }),
        _ => V::Bytes(tensor_value::RepeatedBytes {
            values: bytes.to_vec(),
        }),
    };
    Value {
        doc_string: String::new(),
        r#type: Some(info.value_type()),
        value: Some(value::Value::ImmediateValue(ImmediateValue {
            value: Some(value::immediate_value::Value::Tensor(TensorValue {
                value: Some(tensor),
            })),
        })),
    }
}

/// A scalar or 1-D string value (op names, dtype names).
pub fn string_value(s: &str) -> Value {
    Value {
        doc_string: String::new(),
        r#type: Some(ValueType {
            r#type: Some(value_type::Type::TensorType(TensorType {
                data_type: DType::Str.to_proto(),
                rank: 0,
                dimensions: vec![],
                attributes: Default::default(),
            })),
        }),
        value: Some(value::Value::ImmediateValue(ImmediateValue {
            value: Some(value::immediate_value::Value::Tensor(TensorValue {
                value: Some(tensor_value::Value::Strings(
                    tensor_value::RepeatedStrings {
                        values: vec![s.to_string()],
                    },
                )),
            })),
        })),
    }
}

/// The first string of a string value.
pub fn as_string(value: &Value) -> Option<&str> {
    match &value.value {
        Some(value::Value::ImmediateValue(ImmediateValue {
            value:
                Some(value::immediate_value::Value::Tensor(TensorValue {
                    value: Some(tensor_value::Value::Strings(s)),
                })),
        })) => s.values.first().map(String::as_str),
        _ => None,
    }
}

/// A blob value pointing at `offset` in the weight file named `file_name`.
pub fn blob_value(info: &TensorInfo, file_name: &str, offset: u64) -> Value {
    Value {
        doc_string: String::new(),
        r#type: Some(info.value_type()),
        value: Some(value::Value::BlobFileValue(value::BlobFileValue {
            file_name: file_name.to_string(),
            offset,
        })),
    }
}
