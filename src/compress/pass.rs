//! The driver shared by the compression passes: open the package, check what coremltools checks,
//! select candidate consts, run the pass's kernel on each (in parallel), write the package.

use std::path::{Path, PathBuf};

use half::f16;

use crate::compress::config::{Granularity, OpConfig, OptimizationConfig};
use crate::compress::rewrite::{self, Job, Replacement};
use crate::compress::select::{candidates, Candidate};
use crate::compress::{prune, quantize};
use crate::error::Result;
use crate::format::dtype::DType;
use crate::format::package::{Package, PackageWriter};
use crate::format::spec;
use crate::kernels::quantize::WeightFloat;
use crate::mil::tensor::read_tensor;
use crate::{config_err, format_err};

/// The compression passes, by their coremltools function names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PassKind {
    Palettize,
    LinearQuantize,
    Prune,
}

impl PassKind {
    pub fn from_name(name: &str) -> Result<Self> {
        Ok(match name {
            "palettize_weights" => PassKind::Palettize,
            "linear_quantize_weights" => PassKind::LinearQuantize,
            "prune_weights" => PassKind::Prune,
            _ => return Err(config_err!("unknown compression pass {name:?}")),
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            PassKind::Palettize => "palettize_weights",
            PassKind::LinearQuantize => "linear_quantize_weights",
            PassKind::Prune => "prune_weights",
        }
    }

    fn accepts(self, c: &OpConfig) -> bool {
        matches!(
            (self, c),
            (PassKind::Palettize, OpConfig::Palettize(_))
                | (PassKind::LinearQuantize, OpConfig::LinearQuantize(_))
                | (
                    PassKind::Prune,
                    OpConfig::MagnitudePrune(_) | OpConfig::ThresholdPrune(_)
                )
        )
    }
}

/// What a pass needs to know about the model it writes: the specification version after
/// coremltools' upgrade of iOS15 models, and whether iOS18 op forms apply.
#[derive(Clone, Copy, Debug)]
pub struct Target {
    pub spec_version: i32,
}

impl Target {
    pub fn ios18(self) -> bool {
        self.spec_version >= 9
    }
}

/// A weight's values in its own float type, for kernels generic over fp16/fp32.
pub enum Weights {
    F16(Vec<f16>),
    F32(Vec<f32>),
}

/// Reads a candidate's values; None for integer or bool weights, which these passes skip.
pub fn read_weights(package: &Package, c: &Candidate) -> Result<Option<Weights>> {
    let what = format!("function {}, const {}", c.function, c.name);
    let t = read_tensor(&c.value, package, &what)?;
    Ok(match t.info.dtype {
        DType::F16 => Some(Weights::F16(
            t.bytes
                .chunks_exact(2)
                .map(|b| f16::from_le_bytes([b[0], b[1]]))
                .collect(),
        )),
        DType::F32 => Some(Weights::F32(
            t.bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes")))
                .collect(),
        )),
        _ => None,
    })
}

/// Little-endian bytes of float weights.
pub fn float_bytes<T: WeightFloat>(values: &[T]) -> Vec<u8> {
    let mut out = Vec::with_capacity(values.len() * 4);
    for v in values {
        let x = v.to_f32();
        if T::NAME == "float16" {
            out.extend_from_slice(&f16::from_f32(x).to_le_bytes());
        } else {
            out.extend_from_slice(&x.to_le_bytes());
        }
    }
    out
}

/// coremltools' `infer_block_sizes` (reference §1.8): block size per axis, 0 = whole axis.
/// None when the consumers do not agree on the channel axes.
pub fn block_sizes(
    c: &Candidate,
    granularity: Granularity,
    group_size: usize,
    channel_axis: Option<i64>,
    block: &crate::compress::config::BlockSize,
) -> Result<Option<Vec<usize>>> {
    use crate::compress::config::BlockSize;
    let rank = c.info.shape.len();
    if let (Granularity::PerBlock, BlockSize::PerAxis(sizes)) = (granularity, block) {
        if sizes.len() != rank {
            return Err(config_err!(
                "The block_size in config must has one element for each axis. However, for op {}, there are {} \
                 elements in block_size, but there are {rank} axes in the weight.",
                c.name,
                sizes.len()
            ));
        }
        return Ok(Some(sizes.clone()));
    }
    let (Some(mut out_axis), Some(in_axis)) = (c.output_axis, c.input_axis) else {
        return Ok(None);
    };
    if granularity == Granularity::PerGroupedChannel {
        if let Some(axis) = channel_axis {
            let a = if axis < 0 { axis + rank as i64 } else { axis };
            out_axis =
                usize::try_from(a).map_err(|_| config_err!("invalid channel_axis {axis}"))?;
        }
    }
    let (in_size, out_size) = match (granularity, block) {
        (Granularity::PerTensor, _) => (0, 0),
        (Granularity::PerChannel, _) => (0, 1),
        (Granularity::PerGroupedChannel, _) => (0, group_size),
        (Granularity::PerBlock, BlockSize::Uniform(b)) => (*b, 1),
        (Granularity::PerBlock, BlockSize::PerAxis(_)) => unreachable!("handled above"),
    };
    let mut sizes = vec![0; rank];
    if in_axis < rank {
        sizes[in_axis] = in_size;
    }
    if out_axis < rank {
        sizes[out_axis] = out_size;
    }
    Ok(Some(sizes))
}

/// Runs one compression pass from `input` to `output`.
pub fn run(
    kind: PassKind,
    input: &Path,
    output: &Path,
    config: &OptimizationConfig,
    joint_compression: bool,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<PathBuf> {
    let package = Package::open(input)?;
    let has_functions = package
        .model
        .description
        .as_ref()
        .is_some_and(|d| !d.functions.is_empty());
    if has_functions {
        return Err(config_err!(
            "{} is not supported for a multifunction model.",
            kind.name()
        ));
    }
    let target = Target {
        spec_version: package.model.specification_version.max(7),
    };
    if joint_compression {
        if !target.ios18() {
            return Err(config_err!(
                "Joint compression is only supported since iOS18. Please re-convert your model with \
                 minimum_deployment_target set to at least ct.target.iOS18."
            ));
        }
        return Err(crate::unsupported!(
            "joint_compression=True is not supported by this version of coreml-compress yet"
        ));
    }
    if let Some(bad) = config.all().find(|c| !kind.accepts(c)) {
        return Err(config_err!(
            "{} does not accept this config: {bad:?}",
            kind.name()
        ));
    }
    let selected = candidates(&package.model, config, |c| kind.accepts(c))?;
    let jobs: Vec<Job<Candidate>> = selected
        .into_iter()
        .map(|c| Job {
            function: c.function.clone(),
            target: c.output.clone(),
            input_bytes: c.info.dtype.storage_bytes(c.info.count()).unwrap_or(0),
            task: c,
        })
        .collect();
    // coremltools checks the opset before compressing any weight.
    for job in &jobs {
        match (kind, &job.task.config) {
            (PassKind::LinearQuantize, OpConfig::LinearQuantize(q)) => {
                quantize::check_target(q, target)?
            }
            (PassKind::Palettize, OpConfig::Palettize(_)) => {
                return Err(crate::unsupported!(
                    "palettize_weights is not available in this build yet"
                ))
            }
            _ => {}
        }
    }
    let mut out = PackageWriter::create(output, Some(&package))?;
    let mut model = rewrite::apply(
        &package,
        &jobs,
        &mut out,
        |job| {
            let c = &job.task;
            let Some(weights) = read_weights(&package, c)? else {
                return Ok(None);
            };
            let mut r = Replacement::new(target.spec_version);
            let done = match &c.config {
                OpConfig::LinearQuantize(q) => quantize::emit(c, q, &weights, target, &mut r)?,
                OpConfig::MagnitudePrune(_) | OpConfig::ThresholdPrune(_) => {
                    prune::emit(c, &c.config, &weights, target, &mut r)?
                }
                OpConfig::Palettize(_) => false,
            };
            Ok(done.then_some(r))
        },
        progress,
    )?;
    upgrade_spec(&mut model, target)?;
    rewrite::finish(&package, model, out)
}

/// coremltools writes every compressed model at spec 7 or later: an iOS15 (spec 6, opset
/// CoreML5) program becomes a spec 7 (CoreML6) program.
fn upgrade_spec(model: &mut spec::Model, target: Target) -> Result<()> {
    if model.specification_version >= target.spec_version {
        return Ok(());
    }
    model.specification_version = target.spec_version;
    for function in spec::program_mut(model)?.functions.values_mut() {
        if function.opset == "CoreML5" {
            function.opset = "CoreML6".into();
            let blocks = std::mem::take(&mut function.block_specializations);
            for (key, block) in blocks {
                let key = if key == "CoreML5" {
                    "CoreML6".to_string()
                } else {
                    key
                };
                if function
                    .block_specializations
                    .insert(key.clone(), block)
                    .is_some()
                {
                    return Err(format_err!(
                        "function has two block specializations for {key}"
                    ));
                }
            }
        }
    }
    Ok(())
}
