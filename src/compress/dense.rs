//! A tensor's values held densely (one element per value, sub-byte types widened to a byte) and
//! their conversion from and to the blob layout.

use std::borrow::Cow;

use half::f16;

use crate::error::Result;
use crate::format::dtype::DType;
use crate::format_err;
use crate::kernels::fp16::WeightElement;
use crate::kernels::pack;
use crate::mil::tensor::TensorInfo;

/// Element storage of a dense tensor. Sub-byte unsigned types (indices, masks) live in `U8`,
/// int4 in `I8`; the logical dtype is in the tensor's [`TensorInfo`].
#[derive(Clone, Debug, PartialEq)]
pub enum Elements {
    F16(Vec<f16>),
    F32(Vec<f32>),
    I8(Vec<i8>),
    U8(Vec<u8>),
    I32(Vec<i32>),
    Str(Vec<String>),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Dense {
    pub info: TensorInfo,
    pub elements: Elements,
}

impl Dense {
    /// The tensor in blob layout (little-endian, sub-byte types packed), for storing it:
    /// borrowed where the elements already have that layout.
    pub fn to_bytes(&self) -> Result<Cow<'_, [u8]>> {
        let bits = self.info.dtype.bits().unwrap_or(8);
        Ok(match &self.elements {
            Elements::F16(v) => Cow::Borrowed(bytemuck::cast_slice(v)),
            Elements::F32(v) => Cow::Borrowed(bytemuck::cast_slice(v)),
            Elements::I8(v) if bits < 8 => Cow::Owned(pack::pack(v, bits)?),
            Elements::U8(v) if bits < 8 => Cow::Owned(pack::pack(v, bits)?),
            Elements::I8(v) => Cow::Borrowed(bytemuck::cast_slice(v)),
            Elements::U8(v) => Cow::Borrowed(v),
            Elements::I32(v) => match self.info.dtype {
                DType::I16 | DType::U16 => {
                    Cow::Owned(v.iter().flat_map(|&x| (x as i16).to_le_bytes()).collect())
                }
                _ => Cow::Borrowed(bytemuck::cast_slice(v)),
            },
            Elements::Str(_) => return Err(format_err!("string tensors have no byte layout")),
        })
    }

    /// A float weight of `shape` held as its values (fp16 or fp32), without a copy.
    pub fn from_weights<T: WeightElement>(shape: &[usize], values: Vec<T>) -> Result<Dense> {
        let cast = |e: bytemuck::PodCastError| format_err!("{} weights: {e}", T::NAME);
        Ok(if T::IS_HALF {
            Dense {
                info: TensorInfo::new(DType::F16, shape),
                elements: Elements::F16(
                    bytemuck::allocation::try_cast_vec(values).map_err(|(e, _)| cast(e))?,
                ),
            }
        } else {
            Dense {
                info: TensorInfo::new(DType::F32, shape),
                elements: Elements::F32(
                    bytemuck::allocation::try_cast_vec(values).map_err(|(e, _)| cast(e))?,
                ),
            }
        })
    }

    pub fn len(&self) -> usize {
        match &self.elements {
            Elements::F16(v) => v.len(),
            Elements::F32(v) => v.len(),
            Elements::I8(v) => v.len(),
            Elements::U8(v) => v.len(),
            Elements::I32(v) => v.len(),
            Elements::Str(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Integer values (shapes, axes, small index tensors).
    pub fn to_i64(&self) -> Option<Vec<i64>> {
        Some(match &self.elements {
            Elements::I8(v) => v.iter().map(|&x| x as i64).collect(),
            Elements::U8(v) => v.iter().map(|&x| x as i64).collect(),
            Elements::I32(v) if self.info.dtype == DType::U32 => {
                v.iter().map(|&x| x as u32 as i64).collect()
            }
            Elements::I32(v) => v.iter().map(|&x| x as i64).collect(),
            _ => return None,
        })
    }
}

/// Decodes blob-layout bytes of `info` into elements.
pub fn decode(info: &TensorInfo, bytes: &[u8]) -> Result<Elements> {
    use DType::*;
    let n = info.count()?;
    let le = |k: usize| bytes.chunks_exact(k);
    Ok(match info.dtype {
        F16 => Elements::F16(bytemuck::pod_collect_to_vec(bytes)),
        F32 => Elements::F32(bytemuck::pod_collect_to_vec(bytes)),
        I8 => Elements::I8(bytemuck::pod_collect_to_vec(bytes)),
        U8 | Bool => Elements::U8(bytes.to_vec()),
        I4 => Elements::I8(pack::unpack_signed(bytes, 4, n)?),
        U1 | U2 | U3 | U4 | U6 => {
            Elements::U8(pack::unpack_unsigned(bytes, info.dtype.bits().unwrap(), n)?)
        }
        I16 => Elements::I32(
            le(2)
                .map(|c| i16::from_le_bytes([c[0], c[1]]) as i32)
                .collect(),
        ),
        U16 => Elements::I32(
            le(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]) as i32)
                .collect(),
        ),
        I32 | U32 => Elements::I32(bytemuck::pod_collect_to_vec(bytes)),
        other => {
            return Err(format_err!(
                "{} tensors are not supported here",
                other.name()
            ))
        }
    })
}
