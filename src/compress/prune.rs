//! `prune_weights`: the kernels in kernels::prune, emitted as `constexpr_sparse_to_dense`
//! (iOS16/17: packed uint8 mask and shape as attributes; iOS18+: uint1 mask as inputs).

use crate::compress::config::OpConfig;
use crate::compress::dense::Dense;
use crate::compress::rewrite::{NewTensor, Replacement};
use crate::compress::select::Candidate;
use crate::compress::skip::{Outcome, SkipReason};
use crate::compress::target::Target;
use crate::compress::weights::Weights;
use crate::error::Result;
use crate::format::dtype::DType;
use crate::kernels::fp16::WeightElement;
use crate::kernels::lut::all_finite;
use crate::kernels::prune::{self as kernel, PruneOutcome, Pruned};
use crate::mil::ops::{build_op, NewParam, ParamStyle};
use crate::mil::tensor::TensorInfo;

/// Prunes one candidate into `r`, or says why it is skipped.
pub fn emit(
    c: &Candidate,
    config: &OpConfig,
    weights: &Weights,
    target: Target,
    r: &mut Replacement,
) -> Result<Outcome<()>> {
    match weights {
        Weights::F16(w) => emit_typed(c, config, w, target, r),
        Weights::F32(w) => emit_typed(c, config, w, target, r),
    }
}

/// coremltools' pruning of one weight (of `c.info.shape`), or why it is skipped: where
/// coremltools skips it, and weights with NaN or ±inf.
pub fn prune_weight<T: WeightElement>(
    c: &Candidate,
    config: &OpConfig,
    w: &[T],
) -> Result<Outcome<Pruned<T>>> {
    if !all_finite(w) {
        return Ok(Err(SkipReason::NonFinite));
    }
    let outcome = match config {
        OpConfig::ThresholdPrune(t) => {
            kernel::prune_threshold(w, t.threshold, t.minimum_sparsity_percentile)
        }
        OpConfig::MagnitudePrune(m) => {
            let structural = m.block_size.is_some() || m.n_m_ratio.is_some();
            // Structural sparsity applies to conv and linear weights only, unless named explicitly.
            if structural
                && !c.named
                && !c
                    .consumer_types
                    .iter()
                    .all(|t| t == "conv" || t == "linear")
            {
                return Ok(Err(SkipReason::Unsupported(format!(
                    "structured sparsity (block_size or n_m_ratio) applies to conv and linear \
                     weights only, and its consumers are {:?} (name the weight in \
                     op_name_configs to prune it anyway)",
                    c.consumer_types
                ))));
            }
            match (m.target_sparsity, m.block_size, m.n_m_ratio) {
                (Some(s), Some(b), _) => {
                    kernel::prune_block(w, &c.info.shape, s, b, m.dim.unwrap_or(0))?
                }
                (Some(s), None, _) => PruneOutcome::Pruned(kernel::prune_magnitude(w, s)?),
                (None, _, Some((n, mm))) => {
                    kernel::prune_n_m(w, &c.info.shape, n, mm, m.dim.unwrap_or(1))?
                }
                (None, _, None) => {
                    return Ok(Err(SkipReason::Unsupported(
                        "the config sets neither target_sparsity nor n_m_ratio".into(),
                    )))
                }
            }
        }
        other => {
            return Err(crate::config_err!(
                "internal: {other:?} is not a pruning config"
            ))
        }
    };
    Ok(match outcome {
        PruneOutcome::Pruned(p) => Ok(p),
        PruneOutcome::Skipped(reason) => Err(SkipReason::Mode(reason)),
    })
}

fn emit_typed<T: WeightElement>(
    c: &Candidate,
    config: &OpConfig,
    w: &[T],
    target: Target,
    r: &mut Replacement,
) -> Result<Outcome<()>> {
    let kernel_time = crate::trace::span("prune: kernel");
    let pruned = match prune_weight(c, config, w)? {
        Ok(x) => x,
        Err(reason) => return Ok(Err(reason)),
    };
    drop(kernel_time);
    let _t = crate::trace::span("prune: encode");
    r.error = Some(pruned.energy);
    let name = format!("{}_sparsified", c.name);
    let packed = pruned.mask;
    let count = pruned.nonzero.len();
    let nonzero = r.dense_value(Dense::from_weights(&[count], pruned.nonzero)?)?;
    let op = if target.ios18() {
        let mask = r.value(NewTensor {
            info: TensorInfo::new(DType::U1, &c.info.shape),
            bytes: packed,
        });
        build_op(
            "constexpr_sparse_to_dense",
            &name,
            vec![
                ("nonzero_data", NewParam::Value(nonzero)),
                ("mask", NewParam::Value(mask)),
            ],
            vec![(name.clone(), c.info.clone())],
            ParamStyle::Inputs,
        )
    } else {
        let mask = r.value(NewTensor {
            info: TensorInfo::new(DType::U8, &[packed.len()]),
            bytes: packed,
        });
        let shape = r.value(NewTensor::uint32_shape(&c.info.shape));
        build_op(
            "constexpr_sparse_to_dense",
            &name,
            vec![
                ("nonzero_data", NewParam::Value(nonzero)),
                ("mask", NewParam::Value(mask)),
                ("shape", NewParam::Value(shape)),
            ],
            vec![(name.clone(), c.info.clone())],
            ParamStyle::Attributes,
        )
    };
    r.ops.push(op);
    r.renames.push((c.output.clone(), name));
    Ok(Ok(()))
}
