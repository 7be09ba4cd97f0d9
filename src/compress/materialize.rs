//! Computes the dense value of any variable produced by `const` and `constexpr_*` ops, exactly as
//! coremltools' value inference does: the basis of decompression, inspection and joint
//! compression (which needs the dense value behind an already-compressed weight).

use half::f16;

use crate::compress::dense::{decode, Dense, Elements};
use crate::compress::rewrite::Replacement;
use crate::error::Result;
use crate::format::dtype::DType;
use crate::format::package::Package;
use crate::format::spec::proto::mil_spec::Operation;
use crate::format_err;
use crate::kernels::{lut, pack, quantize};
use crate::mil::ops::{op_name, param, Param};
use crate::mil::program::Graph;
use crate::mil::tensor::{check_declared_shape, read_tensor, TensorInfo};

/// Applies a generic expression to the vector inside an [`Elements`] value, whatever its type.
macro_rules! map_elements {
    ($e:expr, $v:ident => $body:expr) => {
        match $e {
            Elements::F16($v) => Elements::F16($body),
            Elements::F32($v) => Elements::F32($body),
            Elements::I8($v) => Elements::I8($body),
            Elements::U8($v) => Elements::U8($body),
            Elements::I32($v) => Elements::I32($body),
            Elements::Str($v) => Elements::Str($body),
        }
    };
}

/// Evaluates variables of one function's graph.
pub struct Materializer<'a> {
    pub package: &'a Package,
    pub graph: &'a Graph<'a>,
    /// Tensors a pass has made but not written yet, which the graph's ops may refer to (a
    /// recipe's later step reads the earlier step's result from memory).
    pending: Option<&'a Replacement>,
}

impl<'a> Materializer<'a> {
    pub fn new(package: &'a Package, graph: &'a Graph<'a>) -> Self {
        Materializer {
            package,
            graph,
            pending: None,
        }
    }

    /// A materializer whose values may also be tensors held by `pending`.
    pub fn with_pending(
        package: &'a Package,
        graph: &'a Graph<'a>,
        pending: &'a Replacement,
    ) -> Self {
        Materializer {
            package,
            graph,
            pending: Some(pending),
        }
    }

    /// The dense value of a parameter of `op`, or None when the op has no such parameter.
    pub fn param(&self, op: &Operation, name: &str) -> Result<Option<Dense>> {
        match param(op, name) {
            None => Ok(None),
            Some(Param::Var(v)) => self.var(v).map(Some),
            Some(Param::Value(v)) => {
                let what = format!("op {} parameter {name}", op_name(op));
                if let Some(s) = crate::mil::tensor::as_string(v) {
                    let info = TensorInfo::new(DType::Str, &[]);
                    return Ok(Some(Dense {
                        info,
                        elements: Elements::Str(vec![s.to_string()]),
                    }));
                }
                let (info, bytes) = match self.pending.and_then(|r| r.held(v)) {
                    Some(held) => held.map(|(info, bytes)| (info.clone(), bytes))?,
                    None => {
                        let t = read_tensor(v, self.package, &what)?;
                        (t.info, t.bytes)
                    }
                };
                let elements = decode(&info, &bytes)?;
                Ok(Some(Dense { info, elements }))
            }
        }
    }

    fn required(&self, op: &Operation, name: &str) -> Result<Dense> {
        self.param(op, name)?.ok_or_else(|| {
            format_err!("op {} ({}) has no parameter {name}", op_name(op), op.r#type)
        })
    }

    /// The dense value of a variable.
    pub fn var(&self, name: &str) -> Result<Dense> {
        let op = self
            .graph
            .producers
            .get(name)
            .ok_or_else(|| format_err!("variable {name} is not produced by any op"))?;
        let index = op.outputs.iter().position(|o| o.name == name).unwrap_or(0);
        let mut outs = self.op(op)?;
        if index >= outs.len() {
            return Err(format_err!("op {} has no output {index}", op_name(op)));
        }
        Ok(outs.swap_remove(index))
    }

    /// The outputs of a const or constexpr op; an error names the op.
    pub fn op(&self, op: &Operation) -> Result<Vec<Dense>> {
        let what = || format!("op {} ({})", op_name(op), op.r#type);
        let outputs = self.outputs(op).map_err(|e| e.within(&what()))?;
        for (out, dense) in op.outputs.iter().zip(&outputs) {
            check_declared_shape(&what(), out, &dense.info.shape)?;
        }
        Ok(outputs)
    }

    fn outputs(&self, op: &Operation) -> Result<Vec<Dense>> {
        let what = || format!("op {} ({})", op_name(op), op.r#type);
        match op.r#type.as_str() {
            "const" => Ok(vec![self.required(op, "val")?]),
            "constexpr_lut_to_dense" => {
                let lut = self.required(op, "lut")?;
                let indices = self.required(op, "indices")?;
                let vector_axis = self
                    .param(op, "vector_axis")?
                    .and_then(|d| d.to_i64())
                    .map(|v| v[0]);
                match self.param(op, "shape")? {
                    // iOS16: packed indices bytes, a flat LUT and the output shape.
                    Some(shape) => {
                        let shape = to_shape(&shape, &what())?;
                        let k = lut.len();
                        let nbits = k.trailing_zeros();
                        if !k.is_power_of_two() || nbits == 0 || nbits > 8 {
                            return Err(format_err!(
                                "{}: LUT size {k} is not 2, 4, 16, 64 or 256",
                                what()
                            ));
                        }
                        let Elements::U8(packed) = &indices.elements else {
                            return Err(format_err!("{}: indices must be uint8 bytes", what()));
                        };
                        let count = crate::kernels::numel(&shape)?;
                        let idx = pack::unpack_unsigned(packed, nbits, count)?;
                        let info = TensorInfo::new(lut.info.dtype, &shape);
                        let elements = gather_lut(&idx, &[count], &lut, &[1, k, 1], None, &what())?;
                        Ok(vec![Dense { info, elements }])
                    }
                    None => {
                        let out_shape = lut_output_shape(
                            &indices.info.shape,
                            &lut.info.shape,
                            vector_axis,
                            &what(),
                        )?;
                        let Elements::U8(idx) = &indices.elements else {
                            return Err(format_err!(
                                "{}: indices must be unsigned integers",
                                what()
                            ));
                        };
                        let elements = gather_lut(
                            idx,
                            &indices.info.shape,
                            &lut,
                            &lut.info.shape,
                            vector_axis,
                            &what(),
                        )?;
                        Ok(vec![Dense {
                            info: TensorInfo::new(lut.info.dtype, &out_shape),
                            elements,
                        }])
                    }
                }
            }
            "constexpr_sparse_to_dense" => {
                let nonzero = self.required(op, "nonzero_data")?;
                let mask = self.required(op, "mask")?;
                let (mask_bits, shape) = match self.param(op, "shape")? {
                    Some(shape) => {
                        let shape = to_shape(&shape, &what())?;
                        let Elements::U8(packed) = &mask.elements else {
                            return Err(format_err!("{}: mask must be uint8 bytes", what()));
                        };
                        (
                            pack::unpack_unsigned(packed, 1, crate::kernels::numel(&shape)?)?,
                            shape,
                        )
                    }
                    None => match mask.elements {
                        Elements::U8(m) => (m, mask.info.shape.clone()),
                        _ => return Err(format_err!("{}: mask must be uint1", what())),
                    },
                };
                let elements = scatter(&mask_bits, nonzero.elements, &what())?;
                Ok(vec![Dense {
                    info: TensorInfo::new(nonzero.info.dtype, &shape),
                    elements,
                }])
            }
            "constexpr_blockwise_shift_scale" => {
                let data = self.required(op, "data")?;
                let scale = self.required(op, "scale")?;
                let offset = self.param(op, "offset")?;
                let elements = shift_scale(&data, &scale, offset.as_ref(), &what())?;
                Ok(vec![Dense {
                    info: TensorInfo::new(scale.info.dtype, &data.info.shape),
                    elements,
                }])
            }
            "constexpr_affine_dequantize" => {
                let data = self.required(op, "quantized_data")?;
                let scale = self.required(op, "scale")?;
                let zero_point = self.required(op, "zero_point")?;
                let axis = self
                    .required(op, "axis")?
                    .to_i64()
                    .and_then(|v| v.first().copied())
                    .unwrap_or(0);
                let elements = affine(&data, &scale, &zero_point, axis, &what())?;
                Ok(vec![Dense {
                    info: TensorInfo::new(scale.info.dtype, &data.info.shape),
                    elements,
                }])
            }
            "constexpr_lut_to_sparse" => {
                let mask = self.required(op, "indices_mask")?;
                let nonzero_idx = self.required(op, "indices_nonzero_data")?;
                let lut = self.required(op, "lut")?;
                let vector_axis = self
                    .param(op, "vector_axis")?
                    .and_then(|d| d.to_i64())
                    .map(|v| v[0]);
                let Elements::U8(mask_bits) = &mask.elements else {
                    return Err(format_err!("{}: indices_mask must be uint1", what()));
                };
                let idx = match scatter(mask_bits, nonzero_idx.elements, &what())? {
                    Elements::U8(v) => v,
                    _ => return Err(format_err!("{}: indices must be unsigned integers", what())),
                };
                let shape = mask.info.shape.clone();
                let out_shape = lut_output_shape(&shape, &lut.info.shape, vector_axis, &what())?;
                let dense = gather_lut(&idx, &shape, &lut, &lut.info.shape, vector_axis, &what())?;
                let out_mask = match vector_axis {
                    None => mask_bits.clone(),
                    Some(axis) => repeat_along(
                        mask_bits,
                        &shape,
                        axis,
                        lut.info.shape[lut.info.shape.len() - 1],
                    )?,
                };
                let nonzero = select(&out_mask, dense);
                let n = nonzero_len(&nonzero);
                Ok(vec![
                    Dense {
                        info: TensorInfo::new(DType::U1, &out_shape),
                        elements: Elements::U8(out_mask),
                    },
                    Dense {
                        info: TensorInfo::new(lut.info.dtype, &[n]),
                        elements: nonzero,
                    },
                ])
            }
            "constexpr_sparse_blockwise_shift_scale" => {
                let mask = self.required(op, "data_mask")?;
                let nonzero = self.required(op, "nonzero_data")?;
                let scale = self.required(op, "scale")?;
                let offset = self.param(op, "offset")?;
                let Elements::U8(mask_bits) = &mask.elements else {
                    return Err(format_err!("{}: data_mask must be uint1", what()));
                };
                let data = Dense {
                    info: TensorInfo::new(nonzero.info.dtype, &mask.info.shape),
                    elements: scatter(mask_bits, nonzero.elements, &what())?,
                };
                let dense = shift_scale(&data, &scale, offset.as_ref(), &what())?;
                let values = select(mask_bits, dense);
                let n = nonzero_len(&values);
                Ok(vec![
                    mask.clone(),
                    Dense {
                        info: TensorInfo::new(scale.info.dtype, &[n]),
                        elements: values,
                    },
                ])
            }
            "constexpr_cast" => {
                let source = self.required(op, "source_val")?;
                let Elements::F16(v) = &source.elements else {
                    return Err(format_err!("{}: source_val must be fp16", what()));
                };
                let f = Elements::F32(v.iter().map(|x| x.to_f32()).collect());
                Ok(vec![Dense {
                    info: TensorInfo::new(DType::F32, &source.info.shape),
                    elements: f,
                }])
            }
            other => Err(format_err!(
                "{}: cannot compute the value of a {other} op",
                what()
            )),
        }
    }
}

fn to_shape(d: &Dense, what: &str) -> Result<Vec<usize>> {
    d.to_i64()
        .and_then(|v| v.into_iter().map(|x| usize::try_from(x).ok()).collect())
        .ok_or_else(|| format_err!("{what}: shape must be non-negative integers"))
}

fn nonzero_len(e: &Elements) -> usize {
    Dense {
        info: TensorInfo::new(DType::U8, &[]),
        elements: e.clone(),
    }
    .len()
}

/// The dense shape of `lut_to_dense`: the indices' shape, times the vector size on vector_axis.
fn lut_output_shape(
    indices_shape: &[usize],
    lut_shape: &[usize],
    vector_axis: Option<i64>,
    what: &str,
) -> Result<Vec<usize>> {
    let rank = indices_shape.len();
    if lut_shape.len() != rank + 2 {
        return Err(format_err!(
            "{what}: LUT rank {} must be the indices' rank {rank} + 2",
            lut_shape.len()
        ));
    }
    let mut out = indices_shape.to_vec();
    if let Some(axis) = vector_axis {
        let a = normalize_axis(axis, rank, what)?;
        out[a] *= lut_shape[rank + 1];
    }
    Ok(out)
}

fn normalize_axis(axis: i64, rank: usize, what: &str) -> Result<usize> {
    let a = if axis < 0 { axis + rank as i64 } else { axis };
    usize::try_from(a)
        .ok()
        .filter(|&a| a < rank)
        .ok_or_else(|| format_err!("{what}: axis {axis} out of range"))
}

/// `lut_to_dense` (iOS18 LUT layout `[B_0..B_{r-1}, 2^n, VS]`) on whatever element type the LUT has.
fn gather_lut(
    idx: &[u8],
    idx_shape: &[usize],
    lut: &Dense,
    lut_shape: &[usize],
    vector_axis: Option<i64>,
    what: &str,
) -> Result<Elements> {
    macro_rules! expand {
        ($variant:ident, $table:expr) => {
            Elements::$variant(lut::lut_to_dense(idx, idx_shape, $table, lut_shape, vector_axis)?.0)
        };
    }
    Ok(match &lut.elements {
        Elements::F16(t) => expand!(F16, t),
        Elements::F32(t) => expand!(F32, t),
        Elements::I8(t) => expand!(I8, t),
        Elements::U8(t) => expand!(U8, t),
        Elements::I32(t) => expand!(I32, t),
        Elements::Str(_) => return Err(format_err!("{what}: a LUT cannot hold strings")),
    })
}

/// Repeats each element of a mask `times` times along `axis` (the mask of a vector LUT).
fn repeat_along(mask: &[u8], shape: &[usize], axis: i64, times: usize) -> Result<Vec<u8>> {
    let a = normalize_axis(axis, shape.len(), "mask")?;
    let inner: usize = shape[a + 1..].iter().product();
    let mut out = Vec::with_capacity(mask.len() * times);
    for outer in mask.chunks(inner * shape[a]) {
        for row in outer.chunks(inner) {
            for _ in 0..times {
                out.extend_from_slice(row);
            }
        }
    }
    Ok(out)
}

/// Places the nonzero values at the set bits of the mask (row-major), zeros elsewhere.
fn scatter(mask: &[u8], values: Elements, what: &str) -> Result<Elements> {
    let set = mask.iter().filter(|&&m| m != 0).count();
    let have = nonzero_len(&values);
    if set != have {
        return Err(format_err!(
            "{what}: the mask has {set} set bits but there are {have} nonzero values"
        ));
    }
    Ok(map_elements!(values, v => {
        let mut it = v.into_iter();
        mask.iter().map(|&m| if m != 0 { it.next().unwrap_or_default() } else { Default::default() }).collect()
    }))
}

/// The values at the set bits of the mask, row-major.
fn select(mask: &[u8], values: Elements) -> Elements {
    map_elements!(values, v => v.into_iter().zip(mask).filter(|(_, &m)| m != 0).map(|(x, _)| x).collect())
}

/// Runs `$call` with `$d` bound to the codes as a typed slice (the kernels are generic over it).
macro_rules! with_codes {
    ($data:expr, $what:expr, |$d:ident| $call:expr) => {
        match &$data.elements {
            Elements::I8($d) => $call,
            Elements::U8($d) => $call,
            Elements::F16($d) => $call,
            Elements::F32($d) => $call,
            _ => Err(format_err!(
                "{}: quantized data must be integers or floats",
                $what
            )),
        }
    };
}

fn offset_f16<'o>(
    offset: Option<&'o Dense>,
    what: &str,
) -> Result<Option<quantize::Offset<'o, f16>>> {
    use quantize::Offset;
    Ok(match offset.map(|o| &o.elements) {
        None => None,
        Some(Elements::I8(v)) => Some(Offset::Int8(v)),
        Some(Elements::U8(v)) => Some(Offset::UInt8(v)),
        Some(Elements::F16(v)) => Some(Offset::Float(v)),
        Some(Elements::F32(v)) => Some(Offset::Float32(v)),
        Some(_) => return Err(format_err!("{what}: unsupported offset type")),
    })
}

fn offset_f32<'o>(
    offset: Option<&'o Dense>,
    what: &str,
) -> Result<Option<quantize::Offset<'o, f32>>> {
    use quantize::Offset;
    Ok(match offset.map(|o| &o.elements) {
        None => None,
        Some(Elements::I8(v)) => Some(Offset::Int8(v)),
        Some(Elements::U8(v)) => Some(Offset::UInt8(v)),
        Some(Elements::F32(v)) => Some(Offset::Float(v)),
        Some(_) => return Err(format_err!("{what}: unsupported offset type")),
    })
}

fn shift_scale(
    data: &Dense,
    scale: &Dense,
    offset: Option<&Dense>,
    what: &str,
) -> Result<Elements> {
    let (shape, scale_shape) = (&data.info.shape, &scale.info.shape);
    Ok(match &scale.elements {
        Elements::F16(s) => {
            let o = offset_f16(offset, what)?;
            Elements::F16(with_codes!(data, what, |d| {
                quantize::blockwise_shift_scale(d, shape, s, scale_shape, o)
            })?)
        }
        Elements::F32(s) => {
            let o = offset_f32(offset, what)?;
            Elements::F32(with_codes!(data, what, |d| {
                quantize::blockwise_shift_scale(d, shape, s, scale_shape, o)
            })?)
        }
        _ => return Err(format_err!("{what}: scale must be fp16 or fp32")),
    })
}

fn affine(
    data: &Dense,
    scale: &Dense,
    zero_point: &Dense,
    axis: i64,
    what: &str,
) -> Result<Elements> {
    let shape = &data.info.shape;
    let missing = || format_err!("{what}: missing zero point");
    Ok(match &scale.elements {
        Elements::F16(s) => {
            let o = offset_f16(Some(zero_point), what)?.ok_or_else(missing)?;
            Elements::F16(with_codes!(data, what, |d| quantize::affine_dequantize(
                d, shape, s, o, axis
            ))?)
        }
        Elements::F32(s) => {
            let o = offset_f32(Some(zero_point), what)?.ok_or_else(missing)?;
            Elements::F32(with_codes!(data, what, |d| quantize::affine_dequantize(
                d, shape, s, o, axis
            ))?)
        }
        _ => return Err(format_err!("{what}: scale must be fp16 or fp32")),
    })
}
