//! `prune_weights`: the kernels in kernels::prune, emitted as `constexpr_sparse_to_dense`
//! (iOS16/17: packed uint8 mask and shape as attributes; iOS18+: uint1 mask as inputs).

use crate::compress::config::OpConfig;
use crate::compress::materialize::Dense;
use crate::compress::pass::{Target, Weights};
use crate::compress::rewrite::{NewTensor, Replacement};
use crate::compress::select::Candidate;
use crate::error::Result;
use crate::format::dtype::DType;
use crate::kernels::fp16::WeightElement;
use crate::kernels::prune::{self as kernel, PruneOutcome, Pruned};
use crate::mil::ops::{build_op, NewParam, ParamStyle};
use crate::mil::tensor::TensorInfo;

/// Prunes one candidate into `r`; false when coremltools would skip it.
pub fn emit(
    c: &Candidate,
    config: &OpConfig,
    weights: &Weights,
    target: Target,
    r: &mut Replacement,
) -> Result<bool> {
    match weights {
        Weights::F16(w) => emit_typed(c, config, w, target, r),
        Weights::F32(w) => emit_typed(c, config, w, target, r),
    }
}

/// coremltools' pruning of one weight (of `c.info.shape`), or None where it skips it.
pub fn prune_weight<T: WeightElement>(
    c: &Candidate,
    config: &OpConfig,
    w: &[T],
) -> Result<Option<Pruned<T>>> {
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
                return Ok(None);
            }
            match (m.target_sparsity, m.block_size, m.n_m_ratio) {
                (Some(s), Some(b), _) => {
                    kernel::prune_block(w, &c.info.shape, s, b, m.dim.unwrap_or(0))?
                }
                (Some(s), None, _) => PruneOutcome::Pruned(kernel::prune_magnitude(w, s)?),
                (None, _, Some((n, mm))) => {
                    kernel::prune_n_m(w, &c.info.shape, n, mm, m.dim.unwrap_or(1))?
                }
                (None, _, None) => return Ok(None),
            }
        }
        _ => return Ok(None),
    };
    Ok(match outcome {
        PruneOutcome::Pruned(p) => Some(p),
        PruneOutcome::Skipped(_) => None,
    })
}

fn emit_typed<T: WeightElement>(
    c: &Candidate,
    config: &OpConfig,
    w: &[T],
    target: Target,
    r: &mut Replacement,
) -> Result<bool> {
    let kernel_time = crate::trace::span("prune: kernel");
    let Some(pruned) = prune_weight(c, config, w)? else {
        return Ok(false);
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
    Ok(true)
}
