//! `linear_quantize_weights`: the kernel in kernels::quantize, emitted as
//! `constexpr_affine_dequantize` (iOS16/17, attributes) or `constexpr_blockwise_shift_scale`
//! (iOS18+, inputs).

use crate::compress::config::{Granularity, QuantizeConfig, QuantizeMode};
use crate::compress::rewrite::{NewTensor, Replacement};
use crate::compress::select::block_sizes;
use crate::compress::select::Candidate;
use crate::compress::skip::{Outcome, SkipReason};
use crate::compress::target::Target;
use crate::compress::weights::Weights;
use crate::config_err;
use crate::error::Result;
use crate::format::dtype::DType;
use crate::kernels::fp16::WeightElement;
use crate::kernels::lut::all_finite;
use crate::kernels::quantize::{
    self as kernel, Codes, QuantDtype, QuantMode, QuantizeOutcome, Quantized,
};
use crate::mil::ops::{build_op, NewParam, ParamStyle};
use crate::mil::tensor::TensorInfo;

fn dtype_of(name: &str) -> Result<QuantDtype> {
    Ok(match name {
        "int8" => QuantDtype::Int8,
        "uint8" => QuantDtype::UInt8,
        "int4" => QuantDtype::Int4,
        "uint4" => QuantDtype::UInt4,
        other => {
            return Err(config_err!(
                "Invalid dtype {other}. Only support int8/uint8/int4/uint4."
            ))
        }
    })
}

/// coremltools' opset checks for quantization below iOS18.
pub fn check_target(q: &QuantizeConfig, target: Target) -> Result<()> {
    if target.ios18() {
        return Ok(());
    }
    let what = if q.granularity == Granularity::PerBlock {
        "per_block"
    } else if matches!(q.dtype.as_str(), "int4" | "uint4") {
        "4-bit"
    } else {
        return Ok(());
    };
    Err(config_err!(
        "The {what} quantization is supported since iOS18. Please re-convert your model with \
         minimum_deployment_target set to at least ct.target.iOS18."
    ))
}

pub fn codes_dtype(d: QuantDtype) -> DType {
    match d {
        QuantDtype::Int8 => DType::I8,
        QuantDtype::UInt8 => DType::U8,
        QuantDtype::Int4 => DType::I4,
        QuantDtype::UInt4 => DType::U4,
    }
}

/// Quantizes one candidate into `r`, or says why it is skipped.
pub fn emit(
    c: &Candidate,
    q: &QuantizeConfig,
    weights: &Weights,
    target: Target,
    r: &mut Replacement,
) -> Result<Outcome<()>> {
    match weights {
        Weights::F16(w) => emit_typed(c, q, w, DType::F16, target, r),
        Weights::F32(w) => emit_typed(c, q, w, DType::F32, target, r),
    }
}

/// The `scale` (float) and optional `offset` (codes' type) parameters of a shift-scale op, both
/// of `shape`.
pub fn scale_offset_params(
    r: &mut Replacement,
    float: DType,
    shape: &[usize],
    scale_bytes: Vec<u8>,
    zero_point: Option<&Codes>,
    codes_type: DType,
) -> Result<Vec<(&'static str, NewParam)>> {
    let scale = r.value(NewTensor {
        info: TensorInfo::new(float, shape),
        bytes: scale_bytes,
    });
    let mut params = vec![("scale", NewParam::Value(scale))];
    if let Some(zp) = zero_point {
        let info = TensorInfo::new(codes_type, shape);
        let offset = r.value(NewTensor {
            info,
            bytes: zp.bytes().to_vec(),
        });
        params.push(("offset", NewParam::Value(offset)));
    }
    Ok(params)
}

/// coremltools' quantization of one weight (of `c.info.shape`), or why it is skipped: where
/// coremltools skips it, and weights with NaN or ±inf (coremltools skips ±inf but spreads NaN
/// through the block's scale; this project compresses neither, see docs/DECISIONS.md).
pub fn quantize_weight<T: WeightElement>(
    c: &Candidate,
    q: &QuantizeConfig,
    w: &[T],
) -> Result<Outcome<Quantized<T>>> {
    // coremltools skips a weight with ±inf before it looks at the block sizes.
    if !all_finite(w) {
        return Ok(Err(SkipReason::NonFinite));
    }
    let Some(blocks) = block_sizes(c, q.granularity, 0, None, &q.block_size)? else {
        return Ok(Err(SkipReason::ChannelAxes));
    };
    let mode = match q.mode {
        QuantizeMode::Linear => QuantMode::Linear,
        QuantizeMode::LinearSymmetric => QuantMode::LinearSymmetric,
    };
    Ok(
        match kernel::quantize(w, &c.info.shape, &blocks, dtype_of(&q.dtype)?, mode)? {
            // Restored values that leave the float type's range (an fp16 scale rounded up
            // next to ±65504) would be infinite: the op form cannot hold this weight.
            QuantizeOutcome::Quantized(x) if !x.energy.1.is_finite() => {
                Err(SkipReason::OutOfRange(format!(
                    "{} codes times their scale would restore values beyond the range of {} \
                     (largest scale {})",
                    q.dtype,
                    T::NAME,
                    x.scale.iter().map(|v| v.to_f64()).fold(0.0, f64::max)
                )))
            }
            QuantizeOutcome::Quantized(x) => Ok(x),
            QuantizeOutcome::Skipped(reason) => Err(SkipReason::Mode(reason)),
        },
    )
}

fn emit_typed<T: WeightElement>(
    c: &Candidate,
    q: &QuantizeConfig,
    w: &[T],
    float: DType,
    target: Target,
    r: &mut Replacement,
) -> Result<Outcome<()>> {
    let kernel_time = crate::trace::span("quantize: kernel");
    let mut quantized = match quantize_weight(c, q, w)? {
        Ok(x) => x,
        Err(reason) => return Ok(Err(reason)),
    };
    drop(kernel_time);
    let _t = crate::trace::span("quantize: encode");
    r.error = Some(quantized.energy);
    let codes_type = codes_dtype(quantized.dtype);
    let name = format!("{}_quantized", c.name);
    let codes = std::mem::replace(&mut quantized.codes, Codes::empty(quantized.dtype));
    let data = r.value(NewTensor {
        info: TensorInfo::new(codes_type, &c.info.shape),
        bytes: codes.into_bytes(),
    });
    let scale_bytes = T::slice_to_le_bytes(&quantized.scale);
    let op = if target.ios18() {
        let mut params = vec![("data", NewParam::Value(data))];
        params.extend(scale_offset_params(
            r,
            float,
            &quantized.scale_shape,
            scale_bytes,
            quantized.zero_point.as_ref(),
            codes_type,
        )?);
        build_op(
            "constexpr_blockwise_shift_scale",
            &name,
            params,
            vec![(name.clone(), TensorInfo::new(float, &c.info.shape))],
            ParamStyle::Inputs,
        )
    } else {
        // iOS16: scale and zero point squeezed to rank 0 or 1 along the one non-unit axis.
        let non_unit: Vec<usize> = (0..quantized.scale_shape.len())
            .filter(|&a| quantized.scale_shape[a] > 1)
            .collect();
        if non_unit.len() > 1 {
            return Err(config_err!(
                "constexpr_affine_dequantize cannot take a scale of shape {:?} (const {})",
                quantized.scale_shape,
                c.name
            ));
        }
        let axis = non_unit.first().copied().unwrap_or(0);
        let squeezed: Vec<usize> = non_unit.iter().map(|&a| quantized.scale_shape[a]).collect();
        let zp_bytes = match &quantized.zero_point {
            Some(zp) => zp.bytes().to_vec(),
            None => vec![0u8; quantized.scale.len()],
        };
        let int32_axis = NewTensor {
            info: TensorInfo::new(DType::I32, &[]),
            bytes: (axis as i32).to_le_bytes().to_vec(),
        };
        let params = vec![
            ("quantized_data", NewParam::Value(data)),
            (
                "zero_point",
                NewParam::Value(r.value(NewTensor {
                    info: TensorInfo::new(codes_type, &squeezed),
                    bytes: zp_bytes,
                })),
            ),
            (
                "scale",
                NewParam::Value(r.value(NewTensor {
                    info: TensorInfo::new(float, &squeezed),
                    bytes: scale_bytes,
                })),
            ),
            ("axis", NewParam::Value(r.value(int32_axis))),
        ];
        build_op(
            "constexpr_affine_dequantize",
            &name,
            params,
            vec![(name.clone(), TensorInfo::new(float, &c.info.shape))],
            ParamStyle::Attributes,
        )
    };
    r.ops.push(op);
    r.renames.push((c.output.clone(), name));
    Ok(Ok(()))
}
