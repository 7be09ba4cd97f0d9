//! `palettize_weights`: the kernels in kernels::lut, emitted as `constexpr_lut_to_dense` (iOS16/17:
//! packed indices, flat LUT and shape as attributes; iOS18+: typed indices and a blocked LUT as
//! inputs), with the per-channel scale as `constexpr_blockwise_shift_scale` in the order
//! coremltools' `canonicalize_quantized_lut_pattern` leaves it.

use half::f16;

use crate::compress::config::{BlockSize, Granularity, PaletteConfig, PaletteMode as Mode};
use crate::compress::rewrite::{NewTensor, Replacement};
use crate::compress::select::block_sizes;
use crate::compress::select::Candidate;
use crate::compress::skip::{Outcome, SkipReason};
use crate::compress::target::Target;
use crate::compress::weights::{error_energy, Weights};
use crate::config_err;
use crate::error::Result;
use crate::format::dtype::DType;
use crate::kernels::fp16::WeightElement;
use crate::kernels::lut::{self, GroupLut, PaletteMode, PaletteOutcome, PaletteParams, Palettized};
use crate::mil::ops::{build_op, NewParam, ParamStyle};
use crate::mil::tensor::TensorInfo;

/// One channel group handed to a user's CUSTOM `lut_function`, in the weight's dtype.
pub enum GroupData<'a> {
    F16(&'a [f16]),
    F32(&'a [f32]),
}

/// Calls the user's `lut_function` (identified by the config's `lut_function_id`) on a group of
/// the given shape; returns the LUT values and one index per element.
pub type LutFunction<'a> =
    dyn Fn(u64, GroupData<'_>, &[usize]) -> Result<(Vec<f64>, Vec<u8>)> + Sync + 'a;

/// coremltools' opset checks for palettization below iOS18.
pub fn check_target(p: &PaletteConfig, target: Target) -> Result<()> {
    if target.ios18() {
        return Ok(());
    }
    let since = |what: &str| {
        config_err!(
            "The {what} palettization is supported since iOS18. Please re-convert your model with \
             minimum_deployment_target set to at least ct.target.iOS18."
        )
    };
    if p.granularity == Granularity::PerGroupedChannel {
        return Err(since("per_grouped_channel"));
    }
    if p.cluster_dim > 1 {
        return Err(since("vector"));
    }
    if p.enable_per_channel_scale {
        return Err(config_err!(
            "Palettization with per-channel-scale is only supported since iOS18. Please set \
             minimum_deployment_target accordingly."
        ));
    }
    if p.nbits == Some(3) {
        // coremltools crashes here: the iOS16/17 op takes LUTs of 2, 4, 16, 64 or 256 entries.
        return Err(config_err!(
            "3-bit palettization is supported since iOS18 (constexpr_lut_to_dense on iOS16/17 takes \
             LUTs of 2, 4, 16, 64 or 256 entries). Use nbits=4, or re-convert your model with \
             minimum_deployment_target set to at least ct.target.iOS18."
        ));
    }
    Ok(())
}

/// The channel axis and group size coremltools derives from the block sizes (a per-tensor config
/// keeps the output channel axis, which vector palettization needs); None when the consumers
/// disagree on the channel axes.
fn channel_axis_and_group(c: &Candidate, p: &PaletteConfig) -> Result<Option<(usize, usize)>> {
    let Some(blocks) = block_sizes(
        c,
        p.granularity,
        p.group_size,
        p.channel_axis,
        &BlockSize::Uniform(0),
    )?
    else {
        return Ok(None);
    };
    let rank = c.info.shape.len();
    let mut axis = match (p.granularity, p.channel_axis) {
        (Granularity::PerGroupedChannel, Some(a)) => {
            let a = if a < 0 { a + rank as i64 } else { a };
            usize::try_from(a)
                .ok()
                .filter(|&a| a < rank)
                .ok_or_else(|| config_err!("invalid channel_axis {a}"))?
        }
        _ => c.output_axis.unwrap_or(0),
    };
    let mut group = 0;
    for (a, (&b, &d)) in blocks.iter().zip(&c.info.shape).enumerate() {
        if b != 0 && b != d {
            axis = a;
            group = b;
        }
    }
    Ok(Some((axis, group)))
}

fn mode_of(m: Mode) -> PaletteMode {
    match m {
        Mode::Kmeans => PaletteMode::Kmeans,
        Mode::Uniform => PaletteMode::Uniform,
        Mode::Unique | Mode::Custom => PaletteMode::Unique,
    }
}

/// Palettizes one candidate into `r`, or says why it is skipped.
pub fn emit(
    c: &Candidate,
    p: &PaletteConfig,
    weights: &Weights,
    target: Target,
    custom: Option<&LutFunction<'_>>,
    r: &mut Replacement,
) -> Result<Outcome<()>> {
    match weights {
        Weights::F16(w) => emit_typed(c, p, w, DType::F16, target, custom, r),
        Weights::F32(w) => emit_typed(c, p, w, DType::F32, target, custom, r),
    }
}

/// A user LUT function's view of a group.
pub trait AsGroupData: WeightElement {
    fn group_data(values: &[Self]) -> GroupData<'_>;
}

impl AsGroupData for f16 {
    fn group_data(values: &[Self]) -> GroupData<'_> {
        GroupData::F16(values)
    }
}

impl AsGroupData for f32 {
    fn group_data(values: &[Self]) -> GroupData<'_> {
        GroupData::F32(values)
    }
}

/// coremltools' palettization of one weight (of `c.info.shape`): the result and its channel axis,
/// or why the weight is skipped (where coremltools skips it, and weights with NaN or ±inf).
pub fn palettize_weight<T: AsGroupData>(
    c: &Candidate,
    p: &PaletteConfig,
    w: &[T],
    target: Target,
    custom: Option<&LutFunction<'_>>,
) -> Result<Outcome<(Palettized<T>, usize)>> {
    if !lut::all_finite(w) {
        return Ok(Err(SkipReason::NonFinite));
    }
    let Some((axis, group)) = channel_axis_and_group(c, p)? else {
        return Ok(Err(SkipReason::ChannelAxes));
    };
    let cd = p.cluster_dim.max(1);
    if cd > 1 {
        // A conv's weight holds `groups` independent blocks along axis 0.
        let mut effective = c.info.shape.clone();
        if c.conv_groups > 1 {
            effective[0] /= c.conv_groups;
        }
        if effective[axis] % cd != 0 {
            return Ok(Err(SkipReason::Mode(format!(
                "The number of channels at {axis}th axis ({}) is not divisible by cluster_dim \
                 ({cd}).",
                effective[axis]
            ))));
        }
    }
    let palettized = if p.mode == Mode::Custom {
        let Some(f) = custom else {
            return Err(config_err!(
                "mode CUSTOM needs the lut_function, which was not provided"
            ));
        };
        if p.enable_per_channel_scale {
            return Err(config_err!(
                "enable_per_channel_scale cannot be combined with mode CUSTOM"
            ));
        }
        let id = p
            .lut_function_id
            .ok_or_else(|| config_err!("mode CUSTOM needs a lut_function"))?;
        let groups = match lut::channel_groups(w, &c.info.shape, axis, group, cd)? {
            Ok(g) => g,
            Err(reason) => return Ok(Err(SkipReason::Mode(reason))),
        };
        let mut luts = Vec::with_capacity(groups.num_groups);
        for g in 0..groups.num_groups {
            let (values, indices) = f(id, T::group_data(groups.group(g)), &groups.group_shape)?;
            let lut = values.into_iter().map(T::from_f64).collect();
            luts.push(
                GroupLut::from_labels(lut, &indices, cd)
                    .map_err(|e| config_err!("lut_function, group {g}: {e}"))?,
            );
        }
        lut::stack_groups(luts, &c.info.shape, axis, cd)?
    } else {
        let mut params = PaletteParams {
            mode: mode_of(p.mode),
            nbits: p.nbits.map(|n| n as u8),
            channel_axis: axis,
            group_size: group,
            cluster_dim: cd,
            per_channel_scale: p.enable_per_channel_scale,
        };
        let mut outcome = lut::palettize(w, &c.info.shape, &params)?;
        if let PaletteOutcome::Compressed(x) = &outcome {
            if x.nbits == 3 && !target.ios18() {
                // Unique values that need 3 bits: the iOS16/17 op has no 8-entry LUT, so use 4
                // bits (coremltools crashes here).
                params.nbits = Some(4);
                outcome = lut::palettize(w, &c.info.shape, &params)?;
            }
        }
        match outcome {
            PaletteOutcome::Compressed(x) => x,
            PaletteOutcome::Skipped { reason } => return Ok(Err(SkipReason::Mode(reason))),
        }
    };
    Ok(Ok((palettized, axis)))
}

fn emit_typed<T: AsGroupData>(
    c: &Candidate,
    p: &PaletteConfig,
    w: &[T],
    float: DType,
    target: Target,
    custom: Option<&LutFunction<'_>>,
    r: &mut Replacement,
) -> Result<Outcome<()>> {
    let kernel_time = crate::trace::span("palettize: kernel");
    let (palettized, axis) = match palettize_weight(c, p, w, target, custom)? {
        Ok(x) => x,
        Err(reason) => return Ok(Err(reason)),
    };
    drop(kernel_time);
    let _t = crate::trace::span("palettize: encode");
    r.error = Some(match palettized.energy {
        Some(e) => e,
        None => error_energy(w, &reconstructed(&palettized, &c.info.shape, axis)?),
    });
    let name = format!("{}_palettized", c.name);
    let op_output = if target.ios18() {
        emit_ios18(c, palettized, float, target, &name, r)?
    } else {
        emit_ios16(c, palettized, float, &name, r)?
    };
    r.renames.push((c.output.clone(), op_output));
    Ok(Ok(()))
}

/// The weight as the model will see it: LUT entries, times the per-channel scale if any.
pub fn reconstructed<T: WeightElement>(
    x: &Palettized<T>,
    shape: &[usize],
    axis: usize,
) -> Result<Vec<T>> {
    let vector_axis = x.vector_axis.map(|a| a as i64);
    let (mut dense, _) = lut::lut_to_dense(
        &x.indices.unpack::<u8>(),
        &x.indices_shape,
        &x.lut,
        &x.lut_shape,
        vector_axis,
    )?;
    if let Some(pcs) = &x.per_channel_scale {
        // The scale has the weight's shape with the channel axis collapsed to 1.
        let inner: usize = shape[axis + 1..].iter().product();
        let channel = shape[axis];
        for (i, v) in dense.iter_mut().enumerate() {
            let s = pcs.values[i / (inner * channel) * inner + i % inner];
            *v = v.mul(s);
        }
    }
    Ok(dense)
}

pub fn index_dtype(nbits: u8) -> Result<DType> {
    Ok(match nbits {
        1 => DType::U1,
        2 => DType::U2,
        3 => DType::U3,
        4 => DType::U4,
        6 => DType::U6,
        8 => DType::U8,
        n => {
            return Err(config_err!(
                "Invalid nbits. Support (1, 2, 3, 4, 6, 8), but got {n}"
            ))
        }
    })
}

fn emit_ios16<T: WeightElement>(
    c: &Candidate,
    x: Palettized<T>,
    float: DType,
    name: &str,
    r: &mut Replacement,
) -> Result<String> {
    let entries = 1usize << x.nbits;
    let packed = x.indices.into_bytes();
    let indices = r.value(NewTensor {
        info: TensorInfo::new(DType::U8, &[packed.len()]),
        bytes: packed,
    });
    let lut = r.value(NewTensor {
        info: TensorInfo::new(float, &[entries]),
        bytes: T::slice_to_le_bytes(&x.lut),
    });
    let shape = r.value(NewTensor::uint32_shape(&c.info.shape));
    r.ops.push(build_op(
        "constexpr_lut_to_dense",
        name,
        vec![
            ("indices", NewParam::Value(indices)),
            ("lut", NewParam::Value(lut)),
            ("shape", NewParam::Value(shape)),
        ],
        vec![(name.to_string(), c.info.clone())],
        ParamStyle::Attributes,
    ));
    Ok(name.to_string())
}

/// `np.repeat(a, k, axis)` on a row-major tensor.
pub fn repeat_axis<T: Copy>(a: &[T], shape: &[usize], axis: usize, k: usize) -> Vec<T> {
    let inner: usize = shape[axis + 1..].iter().product();
    let mut out = Vec::with_capacity(a.len() * k);
    for outer in a.chunks(inner * shape[axis]) {
        for row in outer.chunks(inner) {
            for _ in 0..k {
                out.extend_from_slice(row);
            }
        }
    }
    out
}

fn emit_ios18<T: WeightElement>(
    c: &Candidate,
    x: Palettized<T>,
    float: DType,
    target: Target,
    name: &str,
    r: &mut Replacement,
) -> Result<String> {
    let idx_type = index_dtype(x.nbits)?;
    let indices = r.value(NewTensor {
        info: TensorInfo::new(idx_type, &x.indices_shape),
        bytes: x.indices.into_bytes(),
    });
    let vector_axis = |r: &mut Replacement| {
        x.vector_axis.map(|a| {
            let axis = NewTensor {
                info: TensorInfo::new(DType::I32, &[]),
                bytes: (a as i32).to_le_bytes().to_vec(),
            };
            ("vector_axis", NewParam::Value(r.value(axis)))
        })
    };
    let pcs_name = format!("{name}_pcs");
    let below_ios26_scale = x
        .per_channel_scale
        .as_ref()
        .filter(|_| target.spec_version < 10);
    let Some(pcs) = below_ios26_scale else {
        // The LUT op first; from iOS26 on, a per-channel scale then applies to the dense weight.
        let lut = r.value(NewTensor {
            info: TensorInfo::new(float, &x.lut_shape),
            bytes: T::slice_to_le_bytes(&x.lut),
        });
        let mut params = vec![
            ("indices", NewParam::Value(indices)),
            ("lut", NewParam::Value(lut)),
        ];
        params.extend(vector_axis(r));
        r.ops.push(build_op(
            "constexpr_lut_to_dense",
            name,
            params,
            vec![(name.to_string(), c.info.clone())],
            ParamStyle::Inputs,
        ));
        let Some(pcs) = &x.per_channel_scale else {
            return Ok(name.to_string());
        };
        let scale = r.value(NewTensor {
            info: TensorInfo::new(float, &pcs.shape),
            bytes: T::slice_to_le_bytes(&pcs.values),
        });
        r.ops.push(build_op(
            "constexpr_blockwise_shift_scale",
            &pcs_name,
            vec![
                ("data", NewParam::Var(name.to_string())),
                ("scale", NewParam::Value(scale)),
            ],
            vec![(pcs_name.clone(), c.info.clone())],
            ParamStyle::Inputs,
        ));
        return Ok(pcs_name);
    };
    let scale_bytes = T::slice_to_le_bytes(&pcs.values);
    // Below iOS26 coremltools moves the scale onto the LUT: scale shape + [1, 1], and the LUT
    // repeated along every axis where the scale is larger.
    let rank = c.info.shape.len();
    let mut scale_shape = pcs.shape.clone();
    scale_shape.extend([1, 1]);
    let mut lut_values = x.lut.clone();
    let mut lut_shape = x.lut_shape.clone();
    for a in 0..rank {
        if scale_shape[a] > lut_shape[a] {
            if scale_shape[a] % lut_shape[a] != 0 {
                return Err(config_err!(
                    "per-channel scale of shape {:?} does not tile the LUT of shape {:?} (const {})",
                    pcs.shape,
                    x.lut_shape,
                    c.name
                ));
            }
            lut_values = repeat_axis(&lut_values, &lut_shape, a, scale_shape[a] / lut_shape[a]);
            lut_shape[a] = scale_shape[a];
        }
    }
    let lut_info = TensorInfo::new(float, &lut_shape);
    let lut = r.value(NewTensor {
        info: lut_info.clone(),
        bytes: T::slice_to_le_bytes(&lut_values),
    });
    let scale = r.value(NewTensor {
        info: TensorInfo::new(float, &scale_shape),
        bytes: scale_bytes,
    });
    r.ops.push(build_op(
        "constexpr_blockwise_shift_scale",
        name,
        vec![
            ("data", NewParam::Value(lut)),
            ("scale", NewParam::Value(scale)),
        ],
        vec![(name.to_string(), lut_info)],
        ParamStyle::Inputs,
    ));
    let mut params = vec![
        ("indices", NewParam::Value(indices)),
        ("lut", NewParam::Var(name.to_string())),
    ];
    params.extend(vector_axis(r));
    r.ops.push(build_op(
        "constexpr_lut_to_dense",
        &pcs_name,
        params,
        vec![(pcs_name.clone(), c.info.clone())],
        ParamStyle::Inputs,
    ));
    Ok(pcs_name)
}
