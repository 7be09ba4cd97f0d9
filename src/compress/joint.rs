//! Joint compression (iOS18+, reference §2.6): compressing a weight that an earlier pass already
//! compressed, by rewriting its constexpr chain into coremltools' joint forms:
//! prune → palettize (`constexpr_lut_to_sparse`), prune → quantize
//! (`constexpr_sparse_blockwise_shift_scale`), palettize → quantize the LUT, quantize →
//! palettize the codes, and palettize/quantize → prune.

use half::f16;

use crate::compress::config::{Granularity, OpConfig, PaletteConfig, QuantizeConfig};
use crate::compress::dense::{Dense, Elements};
use crate::compress::materialize::Materializer;
use crate::compress::palettize::{self, index_dtype, repeat_axis, LutFunction};
use crate::compress::prune::prune_weight;
use crate::compress::quantize::{codes_dtype, quantize_weight, scale_offset_params};
use crate::compress::rewrite::{NewTensor, Replacement};
use crate::compress::select::{Candidate, Site};
use crate::compress::skip::{Outcome, SkipReason};
use crate::compress::target::Target;
use crate::compress::weights::{error_energy, Weights};
use crate::config_err;
use crate::error::Result;
use crate::format::dtype::DType;
use crate::format::spec::proto::mil_spec::Operation;
use crate::kernels::fp16::WeightElement;
use crate::kernels::lut::{self, Palettized};
use crate::kernels::pack;
use crate::kernels::quantize::Codes;
use crate::mil::ops::{build_op, op_name, param, NewParam, Param, ParamStyle};
use crate::mil::tensor::TensorInfo;

/// A parameter of an existing op, passed on unchanged to a new op.
fn reuse(op: &Operation, name: &str) -> Option<NewParam> {
    param(op, name).map(|p| match p {
        Param::Value(v) => NewParam::Value(v.clone()),
        Param::Var(n) => NewParam::Var(n.to_string()),
    })
}

fn required(op: &Operation, name: &str) -> Result<NewParam> {
    reuse(op, name).ok_or_else(|| config_err!("op {} has no parameter {name}", op_name(op)))
}

fn float_weights(d: Dense) -> Result<(Weights<'static>, DType)> {
    Ok(match d.elements {
        Elements::F16(v) => (Weights::F16(v.into()), DType::F16),
        Elements::F32(v) => (Weights::F32(v.into()), DType::F32),
        _ => {
            return Err(config_err!(
                "expected float data, got {}",
                d.info.dtype.name()
            ))
        }
    })
}

fn mask_bits(d: &Dense) -> Result<&[u8]> {
    match &d.elements {
        Elements::U8(m) => Ok(m),
        _ => Err(config_err!("a mask must be uint1")),
    }
}

/// Values at the set bits of a mask.
fn select<T: Copy>(values: &[T], mask: &[u8]) -> Vec<T> {
    values
        .iter()
        .zip(mask)
        .filter(|(_, &m)| m != 0)
        .map(|(&v, _)| v)
        .collect()
}

/// Compresses a candidate inside a constexpr chain into `r`, or says why it is skipped.
pub fn emit(
    c: &Candidate,
    m: &Materializer<'_>,
    target: Target,
    custom: Option<&LutFunction<'_>>,
    r: &mut Replacement,
) -> Result<Outcome<()>> {
    let (op, param_name) = match &c.site {
        Site::Param { op, param } => (op, Some(param.as_str())),
        Site::Op { op } => (op, None),
        Site::Const => return Err(config_err!("internal: {} is not a joint site", c.name)),
    };
    match (&c.config, op.r#type.as_str(), param_name) {
        (OpConfig::Palettize(p), "constexpr_sparse_to_dense", Some(_)) => {
            sparse_then_palettize(c, p, op, m, target, custom, r)
        }
        (OpConfig::Palettize(p), "constexpr_blockwise_shift_scale", Some(_)) => {
            quantized_then_palettize(c, p, op, m, target, custom, r)
        }
        (OpConfig::LinearQuantize(q), "constexpr_sparse_to_dense", Some(_)) => {
            sparse_then_quantize(c, q, op, m, r)
        }
        (OpConfig::LinearQuantize(q), _, Some("lut")) => quantize_lut(c, q, op, m, target, r),
        (OpConfig::MagnitudePrune(_) | OpConfig::ThresholdPrune(_), _, None) => {
            prune_chain(c, op, m, r)
        }
        _ => Err(config_err!(
            "internal: no joint form for {} on {}",
            c.name,
            op.r#type
        )),
    }
}

/// Palettizes a float weight with the candidate's config (as a weight of `c.info.shape`).
fn palettize_float(
    c: &Candidate,
    p: &PaletteConfig,
    w: &Weights,
    target: Target,
    custom: Option<&LutFunction<'_>>,
) -> Result<Outcome<PalettizedAny>> {
    Ok(match w {
        Weights::F16(v) => palettize::palettize_weight(c, p, v, target, custom)?
            .map(|(x, _)| PalettizedAny::F16(x)),
        Weights::F32(v) => palettize::palettize_weight(c, p, v, target, custom)?
            .map(|(x, _)| PalettizedAny::F32(x)),
    })
}

enum PalettizedAny {
    F16(Palettized<f16>),
    F32(Palettized<f32>),
}

impl PalettizedAny {
    /// One index per element, unpacked, and their width.
    fn labels(&self) -> (Vec<u8>, u8) {
        match self {
            PalettizedAny::F16(x) => (x.indices.unpack(), x.nbits),
            PalettizedAny::F32(x) => (x.indices.unpack(), x.nbits),
        }
    }

    /// Signal and noise energy of the weight `w` (zeros where `mask` is 0) against this
    /// palettization (its indices `labels`, unpacked) restored at the kept positions only: the
    /// pruned zeros stay exact.
    fn kept_energy(&self, labels: &[u8], w: &Weights, mask: &[u8]) -> Result<(f64, f64)> {
        fn typed<T: WeightElement>(
            x: &Palettized<T>,
            labels: &[u8],
            w: &[T],
            mask: &[u8],
        ) -> Result<(f64, f64)> {
            let (mut restored, _) =
                lut::lut_to_dense(labels, &x.indices_shape, &x.lut, &x.lut_shape, None)?;
            for ((r, &v), &m) in restored.iter_mut().zip(w).zip(mask) {
                if m == 0 {
                    *r = v;
                }
            }
            Ok(error_energy(w, &restored))
        }
        match (self, w) {
            (PalettizedAny::F16(x), Weights::F16(w)) => typed(x, labels, w, mask),
            (PalettizedAny::F32(x), Weights::F32(w)) => typed(x, labels, w, mask),
            _ => Err(config_err!("internal: palettization of another float type")),
        }
    }

    fn lut_tensor(&self) -> NewTensor {
        match self {
            PalettizedAny::F16(x) => NewTensor {
                info: TensorInfo::new(DType::F16, &x.lut_shape),
                bytes: f16::slice_to_le_bytes(&x.lut),
            },
            PalettizedAny::F32(x) => NewTensor {
                info: TensorInfo::new(DType::F32, &x.lut_shape),
                bytes: f32::slice_to_le_bytes(&x.lut),
            },
        }
    }
}

fn no_vector_or_scale(c: &Candidate, p: &PaletteConfig, what: &str) -> Result<()> {
    if p.cluster_dim > 1 || p.enable_per_channel_scale {
        return Err(config_err!(
            "joint compression of {} ({what}) supports neither vector palettization (cluster_dim > 1) nor \
             enable_per_channel_scale (coremltools fails on these too)",
            c.name
        ));
    }
    Ok(())
}

/// A quantization result with the scale already in blob layout, whatever the weight's float type.
struct QuantizedAny {
    codes: Codes,
    scale_bytes: Vec<u8>,
    scale_shape: Vec<usize>,
    zero_point: Option<Codes>,
    dtype: crate::kernels::quantize::QuantDtype,
    /// Signal and noise energy of the quantized values (see `Quantized::energy`).
    energy: (f64, f64),
}

fn quantize_any(c: &Candidate, q: &QuantizeConfig, w: &Weights) -> Result<Outcome<QuantizedAny>> {
    fn erase<T: WeightElement>(x: crate::kernels::quantize::Quantized<T>) -> QuantizedAny {
        QuantizedAny {
            scale_bytes: T::slice_to_le_bytes(&x.scale),
            codes: x.codes,
            scale_shape: x.scale_shape,
            zero_point: x.zero_point,
            dtype: x.dtype,
            energy: x.energy,
        }
    }
    Ok(match w {
        Weights::F16(v) => quantize_weight(c, q, v)?.map(erase),
        Weights::F32(v) => quantize_weight(c, q, v)?.map(erase),
    })
}

/// prune → palettize: the dense weight (zeros included) is palettized; `constexpr_lut_to_sparse`
/// holds the indices of the kept values and feeds a recreated `constexpr_sparse_to_dense`.
fn sparse_then_palettize(
    c: &Candidate,
    p: &PaletteConfig,
    op: &Operation,
    m: &Materializer<'_>,
    target: Target,
    custom: Option<&LutFunction<'_>>,
    r: &mut Replacement,
) -> Result<Outcome<()>> {
    no_vector_or_scale(c, p, "pruned, then palettized")?;
    let dense = m.op(op)?.swap_remove(0);
    let mask = m
        .param(op, "mask")?
        .ok_or_else(|| config_err!("{}: no mask", c.name))?;
    let mask_bits = mask_bits(&mask)?.to_vec();
    let (w, _) = float_weights(dense)?;
    let x = match palettize_float(c, p, &w, target, custom)? {
        Ok(x) => x,
        Err(reason) => return Ok(Err(reason)),
    };
    let (labels, nbits) = x.labels();
    r.error = Some(x.kept_energy(&labels, &w, &mask_bits)?);
    let kept = select(&labels, &mask_bits);
    let name = format!("{}_palettized", c.name);
    let (mask_out, data_out) = (format!("{name}_0"), format!("{name}_1"));
    let float = c.info.dtype;
    let nonzero = r.value(NewTensor {
        info: TensorInfo::new(index_dtype(nbits)?, &[kept.len()]),
        bytes: pack::pack(&kept, nbits as u32)?,
    });
    let lut = r.value(x.lut_tensor());
    r.ops.push(build_op(
        "constexpr_lut_to_sparse",
        &name,
        vec![
            ("indices_mask", required(op, "mask")?),
            ("indices_nonzero_data", NewParam::Value(nonzero)),
            ("lut", NewParam::Value(lut)),
        ],
        vec![
            (mask_out.clone(), TensorInfo::new(DType::U1, &c.info.shape)),
            (data_out.clone(), TensorInfo::new(float, &[kept.len()])),
        ],
        ParamStyle::Inputs,
    ));
    r.ops.push(build_op(
        "constexpr_sparse_to_dense",
        op_name(op),
        vec![
            ("nonzero_data", NewParam::Var(data_out)),
            ("mask", NewParam::Var(mask_out)),
        ],
        vec![(c.output.clone(), c.info.clone())],
        ParamStyle::Inputs,
    ));
    Ok(Ok(()))
}

/// prune → quantize: the dense weight (zeros included) is quantized;
/// `constexpr_sparse_blockwise_shift_scale` holds the kept codes and feeds the existing
/// `constexpr_sparse_to_dense`, which keeps its mask.
fn sparse_then_quantize(
    c: &Candidate,
    q: &QuantizeConfig,
    op: &Operation,
    m: &Materializer<'_>,
    r: &mut Replacement,
) -> Result<Outcome<()>> {
    let dense = m.op(op)?.swap_remove(0);
    let mask = m
        .param(op, "mask")?
        .ok_or_else(|| config_err!("{}: no mask", c.name))?;
    let mask_bits = mask_bits(&mask)?.to_vec();
    let (w, float) = float_weights(dense)?;
    let QuantizedAny {
        codes,
        scale_bytes,
        scale_shape,
        zero_point,
        dtype,
        energy,
    } = match quantize_any(c, q, &w)? {
        Ok(x) => x,
        Err(reason) => return Ok(Err(reason)),
    };
    // The pruned zeros quantize to the zero point and restore to exactly 0, so the energy of the
    // whole dense weight is that of the kept values.
    r.error = Some(energy);
    let codes_type = codes_dtype(dtype);
    let kept = if dtype.signed() {
        Codes::pack(dtype, &select(&codes.into_signed(), &mask_bits))?
    } else {
        Codes::pack(dtype, &select(&codes.into_unsigned(), &mask_bits))?
    };
    let kept_len = kept.len();
    let name = format!("{}_quantized", c.name);
    let (mask_out, data_out) = (format!("{name}_0"), format!("{name}_1"));
    let mut params = vec![
        ("data_mask", required(op, "mask")?),
        (
            "nonzero_data",
            NewParam::Value(r.value(NewTensor {
                info: TensorInfo::new(codes_type, &[kept_len]),
                bytes: kept.into_bytes(),
            })),
        ),
    ];
    params.extend(scale_offset_params(
        r,
        float,
        &scale_shape,
        scale_bytes,
        zero_point.as_ref(),
        codes_type,
    )?);
    r.ops.push(build_op(
        "constexpr_sparse_blockwise_shift_scale",
        &name,
        params,
        vec![
            (mask_out, TensorInfo::new(DType::U1, &c.info.shape)),
            (data_out.clone(), TensorInfo::new(float, &[kept_len])),
        ],
        ParamStyle::Inputs,
    ));
    r.ops.push(build_op(
        "constexpr_sparse_to_dense",
        op_name(op),
        vec![
            ("nonzero_data", NewParam::Var(data_out)),
            ("mask", required(op, "mask")?),
        ],
        vec![(c.output.clone(), c.info.clone())],
        ParamStyle::Inputs,
    ));
    Ok(Ok(()))
}

/// The `[1, …, 1]` scale shape coremltools gives a per-tensor quantized LUT, reshaped the way
/// its canonicalization moves scales between a LUT and a dense weight.
fn reshaped(shape: &[usize], rank: usize) -> Vec<usize> {
    shape[shape.len() - rank.min(shape.len())..].to_vec()
}

/// palettize → quantize the LUT (per tensor only): `constexpr_blockwise_shift_scale` on the LUT
/// feeds the LUT op (below iOS26; from iOS26 the LUT op reads the codes and the scale follows).
fn quantize_lut(
    c: &Candidate,
    q: &QuantizeConfig,
    op: &Operation,
    m: &Materializer<'_>,
    target: Target,
    r: &mut Replacement,
) -> Result<Outcome<()>> {
    if q.granularity != Granularity::PerTensor {
        return Err(config_err!(
            "When use joint compression for palettization-quantization, please make sure to use per-tensor \
             quantization, because the axis for the data to bequantized (palettization's lut) is different \
             from the original weight."
        ));
    }
    let lut = m
        .param(op, "lut")?
        .ok_or_else(|| config_err!("{}: no lut", c.name))?;
    let (w, float) = float_weights(lut)?;
    let QuantizedAny {
        codes,
        scale_bytes,
        scale_shape,
        zero_point,
        dtype,
        ..
    } = match quantize_any(c, q, &w)? {
        Ok(x) => x,
        Err(reason) => return Ok(Err(reason)),
    };
    let codes_type = codes_dtype(dtype);
    if !matches!(codes_type, DType::I8 | DType::U8) {
        return Err(config_err!(
            "a LUT can only be quantized to int8 or uint8 (got {})",
            codes_type.name()
        ));
    }
    let name = format!("{}_quantized", c.name);
    let data = r.value(NewTensor {
        info: TensorInfo::new(codes_type, &c.info.shape),
        bytes: codes.into_bytes(),
    });
    let dense_out = op
        .outputs
        .iter()
        .map(|o| {
            (
                o.name.clone(),
                crate::mil::tensor::tensor_info(o.r#type.as_ref()),
            )
        })
        .collect::<Vec<_>>();
    let lut_first = target.spec_version >= 10 && op.r#type == "constexpr_lut_to_dense";
    if lut_first {
        // iOS26 order: the LUT op expands the codes, then one scale applies to the dense weight.
        let dense_info = dense_out[0]
            .1
            .clone()
            .ok_or_else(|| config_err!("{}: untyped output", c.name))?;
        let int_info = TensorInfo::new(codes_type, &dense_info.shape);
        let rank = 2.min(scale_shape.len());
        let new_shape = reshaped(&scale_shape, rank);
        let mut lut_params = vec![
            ("indices", required(op, "indices")?),
            ("lut", NewParam::Value(data)),
        ];
        lut_params.extend(reuse(op, "vector_axis").map(|v| ("vector_axis", v)));
        r.ops.push(build_op(
            "constexpr_lut_to_dense",
            &name,
            lut_params,
            vec![(name.clone(), int_info)],
            ParamStyle::Inputs,
        ));
        let mut params = vec![("data", NewParam::Var(name.clone()))];
        params.extend(scale_offset_params(
            r,
            float,
            &new_shape,
            scale_bytes,
            zero_point.as_ref(),
            codes_type,
        )?);
        r.ops.push(build_op(
            "constexpr_blockwise_shift_scale",
            op_name(op),
            params,
            vec![(dense_out[0].0.clone(), dense_info)],
            ParamStyle::Inputs,
        ));
        return Ok(Ok(()));
    }
    let mut params = vec![("data", NewParam::Value(data))];
    params.extend(scale_offset_params(
        r,
        float,
        &scale_shape,
        scale_bytes,
        zero_point.as_ref(),
        codes_type,
    )?);
    r.ops.push(build_op(
        "constexpr_blockwise_shift_scale",
        &name,
        params,
        vec![(name.clone(), TensorInfo::new(float, &c.info.shape))],
        ParamStyle::Inputs,
    ));
    let mut rebuilt = op.clone();
    rebuilt.inputs.insert(
        "lut".to_string(),
        crate::format::spec::proto::mil_spec::Argument {
            arguments: vec![crate::format::spec::proto::mil_spec::argument::Binding {
                binding: Some(
                    crate::format::spec::proto::mil_spec::argument::binding::Binding::Name(name),
                ),
            }],
        },
    );
    r.ops.push(rebuilt);
    Ok(Ok(()))
}

/// Rounds LUT centroids of integer codes back to the codes' type (coremltools truncates; rounding
/// to the nearest representable code is never worse).
fn int_lut(values: &[f32], dtype: DType) -> Result<NewTensorData> {
    let (lo, hi) = match dtype {
        DType::I8 => (-128.0, 127.0),
        DType::I4 => (-8.0, 7.0),
        DType::U8 => (0.0, 255.0),
        DType::U4 => (0.0, 15.0),
        other => return Err(config_err!("cannot palettize {} codes", other.name())),
    };
    let rounded = values.iter().map(|v| v.round_ties_even().clamp(lo, hi));
    Ok(if lo < 0.0 {
        NewTensorData {
            dtype: DType::I8,
            bytes: rounded.map(|v| v as i8 as u8).collect(),
        }
    } else {
        NewTensorData {
            dtype: DType::U8,
            bytes: rounded.map(|v| v as u8).collect(),
        }
    })
}

struct NewTensorData {
    dtype: DType,
    bytes: Vec<u8>,
}

/// quantize → palettize the integer codes: a LUT of codes; below iOS26 coremltools' order puts the
/// scale on the LUT (repeated to the scale's blocks) before `constexpr_lut_to_dense`.
fn quantized_then_palettize(
    c: &Candidate,
    p: &PaletteConfig,
    op: &Operation,
    m: &Materializer<'_>,
    target: Target,
    custom: Option<&LutFunction<'_>>,
    r: &mut Replacement,
) -> Result<Outcome<()>> {
    no_vector_or_scale(c, p, "quantized, then palettized")?;
    let data = m
        .param(op, "data")?
        .ok_or_else(|| config_err!("{}: no data", c.name))?;
    let data_type = data.info.dtype;
    let codes: Vec<f32> = match &data.elements {
        Elements::I8(v) => v.iter().map(|&x| x as f32).collect(),
        Elements::U8(v) => v.iter().map(|&x| x as f32).collect(),
        _ => {
            return Ok(Err(SkipReason::Unsupported(format!(
                "its data is {}, not quantized integer codes",
                data.info.dtype.name()
            ))))
        }
    };
    let scale = m
        .param(op, "scale")?
        .ok_or_else(|| config_err!("{}: no scale", c.name))?;
    let offset = m.param(op, "offset")?;
    let (x, _) = match palettize::palettize_weight(c, p, &codes, target, custom)? {
        Ok(x) => x,
        Err(reason) => return Ok(Err(reason)),
    };
    let lut = int_lut(&x.lut, data_type)?;
    let indices = r.value(NewTensor {
        info: TensorInfo::new(index_dtype(x.nbits)?, &x.indices_shape),
        bytes: x.indices.into_bytes(),
    });
    let name = format!("{}_palettized", c.name);
    let dense_info = op
        .outputs
        .first()
        .and_then(|o| crate::mil::tensor::tensor_info(o.r#type.as_ref()))
        .ok_or_else(|| config_err!("{}: untyped output", c.name))?;
    // Below iOS26 the scale moves onto the LUT when it tiles it.
    let rank = c.info.shape.len();
    let mut scale_shape = scale.info.shape.clone();
    scale_shape.extend([1, 1]);
    let tiles =
        (0..rank).all(|a| scale_shape[a] <= x.lut_shape[a] || scale_shape[a] % x.lut_shape[a] == 0);
    if target.spec_version < 10 && tiles {
        let mut values = lut.bytes.clone();
        let mut shape = x.lut_shape.clone();
        for a in 0..rank {
            if scale_shape[a] > shape[a] {
                values = repeat_axis(&values, &shape, a, scale_shape[a] / shape[a]);
                shape[a] = scale_shape[a];
            }
        }
        let lut_info = TensorInfo::new(lut.dtype, &shape);
        let float_lut = TensorInfo::new(scale.info.dtype, &shape);
        let mut params = vec![
            (
                "data",
                NewParam::Value(r.value(NewTensor {
                    info: lut_info,
                    bytes: values,
                })),
            ),
            (
                "scale",
                NewParam::Value(r.value(NewTensor {
                    info: TensorInfo::new(scale.info.dtype, &scale_shape),
                    bytes: scale.to_bytes()?.into_owned(),
                })),
            ),
        ];
        if let Some(o) = &offset {
            let info = TensorInfo::new(o.info.dtype, &scale_shape);
            params.push((
                "offset",
                NewParam::Value(r.value(NewTensor {
                    info,
                    bytes: o.to_bytes()?.into_owned(),
                })),
            ));
        }
        r.ops.push(build_op(
            "constexpr_blockwise_shift_scale",
            &name,
            params,
            vec![(name.clone(), float_lut)],
            ParamStyle::Inputs,
        ));
        r.ops.push(build_op(
            "constexpr_lut_to_dense",
            op_name(op),
            vec![
                ("indices", NewParam::Value(indices)),
                ("lut", NewParam::Var(name)),
            ],
            vec![(c.output.clone(), dense_info)],
            ParamStyle::Inputs,
        ));
        return Ok(Ok(()));
    }
    let int_info = TensorInfo::new(lut.dtype, &c.info.shape);
    let lut_value = r.value(NewTensor {
        info: TensorInfo::new(lut.dtype, &x.lut_shape),
        bytes: lut.bytes,
    });
    r.ops.push(build_op(
        "constexpr_lut_to_dense",
        &name,
        vec![
            ("indices", NewParam::Value(indices)),
            ("lut", NewParam::Value(lut_value)),
        ],
        vec![(name.clone(), int_info)],
        ParamStyle::Inputs,
    ));
    let mut params = vec![
        ("data", NewParam::Var(name)),
        ("scale", required(op, "scale")?),
    ];
    params.extend(reuse(op, "offset").map(|o| ("offset", o)));
    r.ops.push(build_op(
        "constexpr_blockwise_shift_scale",
        op_name(op),
        params,
        vec![(c.output.clone(), dense_info)],
        ParamStyle::Inputs,
    ));
    Ok(Ok(()))
}

/// palettize/quantize → prune: the dense value of the chain is pruned; the op becomes its sparse
/// form (`constexpr_lut_to_sparse` or `constexpr_sparse_blockwise_shift_scale`) feeding a new
/// `constexpr_sparse_to_dense`.
fn prune_chain(
    c: &Candidate,
    op: &Operation,
    m: &Materializer<'_>,
    r: &mut Replacement,
) -> Result<Outcome<()>> {
    if param(op, "vector_axis").is_some() {
        return Err(config_err!(
            "joint compression of {} (palettized with vectors, then pruned) is not supported (coremltools \
             fails on it too)",
            c.name
        ));
    }
    let dense = m.op(op)?.swap_remove(0);
    let (w, float) = float_weights(dense)?;
    let pruned = match &w {
        Weights::F16(v) => {
            prune_weight(c, &c.config, v)?.map(|p| (p.mask, p.nonzero.len(), p.energy))
        }
        Weights::F32(v) => {
            prune_weight(c, &c.config, v)?.map(|p| (p.mask, p.nonzero.len(), p.energy))
        }
    };
    let (packed_mask, kept_count, energy) = match pruned {
        Ok(x) => x,
        Err(reason) => return Ok(Err(reason)),
    };
    // Against the chain's dense value, which is what pruning changes.
    r.error = Some(energy);
    // One flag per element, to select the kept indices or codes.
    let mask = pack::unpack_unsigned(&packed_mask, 1, c.info.count()?)?;
    let mask_value = r.value(NewTensor {
        info: TensorInfo::new(DType::U1, &c.info.shape),
        bytes: packed_mask,
    });
    let sparse_name = format!("{}_sparse", op_name(op));
    let (mask_out, data_out) = (format!("{sparse_name}_0"), format!("{sparse_name}_1"));
    let new_name = format!("{}_sparsified", op_name(op));
    if op.r#type == "constexpr_lut_to_dense" {
        let indices = m
            .param(op, "indices")?
            .ok_or_else(|| config_err!("{}: no indices", c.name))?;
        let Elements::U8(idx) = &indices.elements else {
            return Err(config_err!("{}: indices must be unsigned", c.name));
        };
        let bits = indices.info.dtype.bits().unwrap_or(8);
        let kept = select(idx, &mask);
        let nonzero = r.value(NewTensor {
            info: TensorInfo::new(indices.info.dtype, &[kept.len()]),
            bytes: pack::pack(&kept, bits)?,
        });
        r.ops.push(build_op(
            "constexpr_lut_to_sparse",
            &sparse_name,
            vec![
                ("indices_mask", NewParam::Value(mask_value)),
                ("indices_nonzero_data", NewParam::Value(nonzero)),
                ("lut", required(op, "lut")?),
            ],
            vec![
                (mask_out.clone(), TensorInfo::new(DType::U1, &c.info.shape)),
                (data_out.clone(), TensorInfo::new(float, &[kept_count])),
            ],
            ParamStyle::Inputs,
        ));
    } else {
        let data = m
            .param(op, "data")?
            .ok_or_else(|| config_err!("{}: no data", c.name))?;
        let bits = data.info.dtype.bits().unwrap_or(8);
        let (kept_bytes, count) = match &data.elements {
            Elements::I8(v) => {
                let k = select(v, &mask);
                (
                    if bits < 8 {
                        pack::pack(&k, bits)?
                    } else {
                        k.iter().map(|&x| x as u8).collect()
                    },
                    k.len(),
                )
            }
            Elements::U8(v) => {
                let k = select(v, &mask);
                let count = k.len();
                (if bits < 8 { pack::pack(&k, bits)? } else { k }, count)
            }
            _ => {
                return Ok(Err(SkipReason::Unsupported(format!(
                    "its data is {}, not quantized integer codes",
                    data.info.dtype.name()
                ))))
            }
        };
        let mut params = vec![
            ("data_mask", NewParam::Value(mask_value)),
            (
                "nonzero_data",
                NewParam::Value(r.value(NewTensor {
                    info: TensorInfo::new(data.info.dtype, &[count]),
                    bytes: kept_bytes,
                })),
            ),
            ("scale", required(op, "scale")?),
        ];
        params.extend(reuse(op, "offset").map(|o| ("offset", o)));
        r.ops.push(build_op(
            "constexpr_sparse_blockwise_shift_scale",
            &sparse_name,
            params,
            vec![
                (mask_out.clone(), TensorInfo::new(DType::U1, &c.info.shape)),
                (data_out.clone(), TensorInfo::new(float, &[kept_count])),
            ],
            ParamStyle::Inputs,
        ));
    }
    r.ops.push(build_op(
        "constexpr_sparse_to_dense",
        &new_name,
        vec![
            ("nonzero_data", NewParam::Var(data_out)),
            ("mask", NewParam::Var(mask_out)),
        ],
        vec![(new_name.clone(), c.info.clone())],
        ParamStyle::Inputs,
    ));
    r.renames.push((c.output.clone(), new_name));
    Ok(Ok(()))
}
