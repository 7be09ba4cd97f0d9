//! Which weights a pass compresses, with which config and along which channel axes: coremltools'
//! candidate rules (reference §1.1 and §1.8) over the protobuf graph.

use std::collections::HashSet;

use crate::compress::config::{BlockSize, Granularity, OpConfig, OptimizationConfig};
use crate::compress::skip::{Skip, SkipReason};
use crate::config_err;
use crate::error::Result;
use crate::format::dtype::DType;
use crate::format::package::Package;
use crate::format::spec::proto::mil_spec::{Block, Operation, Value};
use crate::format::spec::{self, Model};
use crate::format_err;
use crate::kernels::pack;
use crate::mil::ops::{const_value, input_vars, op_name, output_name, param, Param};
use crate::mil::program::{Graph, Use};
use crate::mil::tensor::{
    as_string, check_declared_shape, is_blob, read_tensor, tensor_info, TensorInfo,
};

/// Refuses, before `inspect` or a pass reads or copies anything, the inconsistent programs a
/// pass would otherwise pass on: a variable defined twice or read but never defined, a chain op
/// that reads a variable an op other than const and constexpr ones produces, and a sparse op
/// whose mask's set bits differ from its count of nonzero values, and an inline const whose
/// bytes do not fit its type. Cheap: masks are counted packed, no weight-file value is decoded.
pub fn check_chains(package: &Package) -> Result<()> {
    const SPARSE: [(&str, &str, &str); 3] = [
        ("constexpr_sparse_to_dense", "mask", "nonzero_data"),
        (
            "constexpr_lut_to_sparse",
            "indices_mask",
            "indices_nonzero_data",
        ),
        (
            "constexpr_sparse_blockwise_shift_scale",
            "data_mask",
            "nonzero_data",
        ),
    ];
    for function in spec::program(&package.model)?.functions.values() {
        for block in function.block_specializations.values() {
            let graph = Graph::new(block);
            // Variables are defined once: by an op, or as an input of the function or a block.
            let mut defined: HashSet<&str> =
                function.inputs.iter().map(|i| i.name.as_str()).collect();
            let mut blocks = vec![block];
            while let Some(b) = blocks.pop() {
                defined.extend(b.inputs.iter().map(|i| i.name.as_str()));
                blocks.extend(b.operations.iter().flat_map(|op| &op.blocks));
            }
            for op in &graph.ops {
                for out in &op.outputs {
                    if !defined.insert(&out.name) {
                        return Err(format_err!("variable {} is defined twice", out.name));
                    }
                }
            }
            for op in &graph.ops {
                if let Some(var) = input_vars(op).find(|v| !defined.contains(v)) {
                    return Err(format_err!("variable {var} is not produced by any op"));
                }
            }
            // A const's outputs are declared as its value, and inline const tensors hold the
            // bytes their declared type needs (weight-file ones were checked when the package was
            // opened): a pass copies them as they are.
            for op in &graph.ops {
                let Some(v) = const_value(op) else {
                    continue;
                };
                if let Some(value) = tensor_info(v.r#type.as_ref()) {
                    let what = format!("op {} (const)", op_name(op));
                    for out in &op.outputs {
                        check_declared_shape(&what, out, &value.shape)?;
                    }
                }
                if is_blob(v) {
                    continue;
                }
                if tensor_info(v.r#type.as_ref()).is_some_and(|info| info.dtype != DType::Str) {
                    read_tensor(v, package, &format!("op {} parameter val", op_name(op)))?;
                }
            }
            for op in graph.ops.iter().filter(|op| is_constexpr(&op.r#type)) {
                for var in input_vars(op) {
                    let Some(producer) = graph.producers.get(var) else {
                        return Err(format_err!("variable {var} is not produced by any op"));
                    };
                    let kind = &producer.r#type;
                    if kind != "const" && !is_constexpr(kind) {
                        return Err(format_err!(
                            "op {} ({kind}): cannot compute the value of a {kind} op",
                            op_name(producer)
                        ));
                    }
                }
                let Some(&(_, mask, nonzero)) = SPARSE.iter().find(|s| s.0 == op.r#type) else {
                    continue;
                };
                let what = format!("op {} ({})", op_name(op), op.r#type);
                let stored = |name: &str| match param(op, name) {
                    Some(Param::Value(v)) => Some(v),
                    Some(Param::Var(var)) => graph.producers.get(var).and_then(|p| const_value(p)),
                    None => None,
                };
                // Masks made by another op of the chain are checked when `inspect` runs it.
                let (Some(mask), Some(nonzero)) = (stored(mask), stored(nonzero)) else {
                    continue;
                };
                let mask = read_tensor(mask, package, &what)?;
                let have = tensor_info(nonzero.r#type.as_ref())
                    .ok_or_else(|| format_err!("{what}: {nonzero:?} is not a tensor"))?
                    .count()?;
                let count = match param(op, "shape") {
                    // iOS16: a byte mask and the dense shape.
                    Some(Param::Value(v)) => {
                        let t = read_tensor(v, package, &what)?;
                        let dims = t
                            .bytes
                            .chunks_exact(4)
                            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]) as usize)
                            .collect::<Vec<_>>();
                        crate::kernels::numel(&dims)?
                    }
                    _ => mask.info.count()?,
                };
                let set = pack::mask_popcount(&mask.bytes, count)
                    .map_err(|e| format_err!("{what}: {e}"))?;
                if set != have {
                    return Err(format_err!(
                        "{what}: the mask has {set} set bits but there are {have} nonzero values"
                    ));
                }
            }
        }
    }
    Ok(())
}

/// A const chosen for compression.
#[derive(Clone, Debug)]
pub struct Candidate {
    pub function: String,
    /// The const op's name (what `set_op_name` matches) and its output variable.
    pub name: String,
    pub output: String,
    /// The weight's name in the input model, for reports: the const's name, or for a site inside
    /// a constexpr chain the name of the chain's last op (`name` is then coremltools' name of
    /// the site, which configs match).
    pub weight: String,
    /// The weight's dense shape (`info` is the site's: a LUT's, for a LUT site).
    pub weight_shape: Vec<usize>,
    pub value: Value,
    pub info: TensorInfo,
    pub config: OpConfig,
    /// Output and input channel axes implied by the consumers (None when they disagree).
    pub output_axis: Option<usize>,
    pub input_axis: Option<usize>,
    /// Types of the consuming ops, and the largest `groups` of a consuming conv.
    pub consumer_types: Vec<String>,
    pub conv_groups: usize,
    /// Whether the user named this const explicitly in `op_name_configs`.
    pub named: bool,
    /// Where the weight lives: a `const` op, or (joint compression) inside a constexpr chain.
    pub site: Site,
}

/// Where a candidate weight lives.
#[derive(Clone, Debug)]
pub enum Site {
    /// A `const` op (its value is `Candidate::value`).
    Const,
    /// A parameter held by a constexpr op, which coremltools sees as a const named
    /// `<op>_<param>_0` (e.g. the nonzero data of a `constexpr_sparse_to_dense`).
    Param { op: Operation, param: String },
    /// A constexpr op whose dense output is compressed again (joint pruning).
    Op { op: Operation },
}

fn is_constexpr(op_type: &str) -> bool {
    op_type.starts_with("constexpr_")
}

/// A parameter's constant value: inline, or the value of the const op that feeds it.
fn const_param<'a>(graph: &Graph<'a>, op: &'a Operation, name: &str) -> Option<&'a Value> {
    match param(op, name)? {
        Param::Value(v) => Some(v),
        Param::Var(var) => graph.producers.get(var).and_then(|p| const_value(p)),
    }
}

fn bool_param(graph: &Graph<'_>, op: &Operation, name: &str) -> bool {
    match const_param(graph, op, name) {
        Some(v) => {
            use crate::format::spec::proto::mil_spec::{tensor_value, value};
            matches!(&v.value, Some(value::Value::ImmediateValue(value::ImmediateValue {
                value: Some(value::immediate_value::Value::Tensor(t)) })) if matches!(&t.value,
                Some(tensor_value::Value::Bools(b)) if b.values.first() == Some(&true)))
        }
        None => false,
    }
}

fn int_param(graph: &Graph<'_>, op: &Operation, name: &str) -> Option<i64> {
    use crate::format::spec::proto::mil_spec::{tensor_value, value};
    let v = const_param(graph, op, name)?;
    let Some(value::Value::ImmediateValue(value::ImmediateValue {
        value: Some(value::immediate_value::Value::Tensor(t)),
    })) = &v.value
    else {
        return None;
    };
    match &t.value {
        Some(tensor_value::Value::Ints(i)) => i.values.first().map(|&x| x as i64),
        Some(tensor_value::Value::LongInts(i)) => i.values.first().copied(),
        _ => None,
    }
}

/// The (output, input) channel axes one consumer implies for the tensor it reads (§1.8).
fn consumer_axes(graph: &Graph<'_>, u: &Use<'_>) -> (i64, i64) {
    match u.op.r#type.as_str() {
        "conv_transpose" => (1, 0),
        "matmul" if u.param == "y" => {
            if bool_param(graph, u.op, "transpose_y") {
                (-2, -1)
            } else {
                (-1, -2)
            }
        }
        "matmul" => {
            if bool_param(graph, u.op, "transpose_x") {
                (-1, -2)
            } else {
                (-2, -1)
            }
        }
        _ => (0, 1),
    }
}

/// The channel axes for a tensor of `rank` read by `uses`, None where consumers disagree.
fn channel_axes(
    graph: &Graph<'_>,
    uses: &[Use<'_>],
    rank: usize,
) -> (Option<usize>, Option<usize>) {
    let norm = |a: i64| if a < 0 { a + rank as i64 } else { a };
    let agree = |pick: fn((i64, i64)) -> i64| {
        let mut axes = uses.iter().map(|u| norm(pick(consumer_axes(graph, u))));
        let first = axes.next()?;
        axes.all(|a| a == first)
            .then_some(first)
            .filter(|&a| a >= 0)
            .map(|a| a as usize)
    };
    (agree(|(o, _)| o), agree(|(_, i)| i))
}

/// coremltools' `_get_const_op_config`: op name, then the consumers' configs, which must agree.
fn resolve<'c>(
    config: &'c OptimizationConfig,
    const_op: &Operation,
    uses: &[Use<'_>],
) -> Result<Option<&'c OpConfig>> {
    if let Some(c) = config.op_name.get(op_name(const_op)) {
        return Ok(c.as_ref());
    }
    if config.op_type.contains_key("const") {
        return Err(config_err!(
            "const ops cannot be set by the `set_op_type` function. Please use `set_global`"
        ));
    }
    resolve_uses(config, uses)
}

/// The largest `groups` of the convolutions among `uses` (1 when there are none).
fn max_conv_groups(graph: &Graph<'_>, uses: &[Use<'_>]) -> usize {
    uses.iter()
        .filter(|u| matches!(u.op.r#type.as_str(), "conv" | "conv_transpose"))
        .filter_map(|u| int_param(graph, u.op, "groups"))
        .max()
        .unwrap_or(1)
        .max(1) as usize
}

/// Whether a const's value may be stored in the weight file (coremltools' `should_use_weight_file`
/// at its iOS15 default): 10 elements or more of fp16, fp32, uint8 or int8 (sub-byte included).
fn weight_file_eligible(info: &TensorInfo) -> bool {
    use DType::*;
    matches!(
        info.dtype,
        F16 | F32 | U8 | I8 | I4 | U1 | U2 | U3 | U4 | U6
    ) && info.count().is_ok_and(|n| n >= 10)
}

/// Every const the config selects for a plain (not joint) compression pass, in program order.
/// `accepts` says which op config kinds the pass takes. Consts the config names but that are not
/// larger than its weight_threshold go to `skipped`.
pub fn candidates(
    model: &Model,
    config: &OptimizationConfig,
    accepts: impl Fn(&OpConfig) -> bool,
    skipped: &mut Vec<Skip>,
) -> Result<Vec<Candidate>> {
    let mut out = Vec::new();
    for (function_name, function) in &spec::program(model)?.functions {
        for block in function.block_specializations.values() {
            let graph = Graph::new(block);
            for op in &graph.ops {
                let Some(value) = const_value(op) else {
                    continue;
                };
                let Some(info) = tensor_info(value.r#type.as_ref()) else {
                    continue;
                };
                if !weight_file_eligible(&info) {
                    continue;
                }
                let output = output_name(op);
                let uses = graph.consumers_of(output);
                let Some(op_config) = resolve(config, op, uses)? else {
                    continue;
                };
                if !accepts(op_config) {
                    return Err(config_err!(
                        "unexpected config kind {op_config:?} for this pass"
                    ));
                }
                if uses.is_empty() || uses.iter().any(|u| is_constexpr(&u.op.r#type)) {
                    continue;
                }
                if info.shape.len() <= 1 {
                    continue;
                }
                let name = op
                    .attributes
                    .get("name")
                    .and_then(as_string)
                    .unwrap_or(output)
                    .to_string();
                let threshold = op_config
                    .weight_threshold()
                    .ok_or_else(|| config_err!("weight_threshold cannot be None"))?;
                if info.count()? as u64 <= threshold {
                    skipped.push(Skip {
                        function: function_name.clone(),
                        name,
                        shape: info.shape,
                        reason: SkipReason::BelowThreshold { threshold },
                    });
                    continue;
                }
                let (output_axis, input_axis) = channel_axes(&graph, uses, info.shape.len());
                let conv_groups = max_conv_groups(&graph, uses);
                out.push(Candidate {
                    function: function_name.clone(),
                    named: config.op_name.contains_key(&name),
                    weight: name.clone(),
                    weight_shape: info.shape.clone(),
                    name,
                    output: output.to_string(),
                    value: value.clone(),
                    info,
                    config: op_config.clone(),
                    output_axis,
                    input_axis,
                    consumer_types: uses.iter().map(|u| u.op.r#type.clone()).collect(),
                    conv_groups,
                    site: Site::Const,
                });
            }
        }
    }
    Ok(out)
}

/// Which constexpr sites a joint pass compresses (reference §2.6): (op type, parameter), where a
/// parameter of None means the op's own dense output.
pub fn joint_sites(kind: &str) -> &'static [(&'static str, Option<&'static str>)] {
    match kind {
        "palettize_weights" => &[
            ("constexpr_sparse_to_dense", Some("nonzero_data")),
            ("constexpr_blockwise_shift_scale", Some("data")),
        ],
        "linear_quantize_weights" => &[
            ("constexpr_lut_to_dense", Some("lut")),
            ("constexpr_lut_to_sparse", Some("lut")),
            ("constexpr_sparse_to_dense", Some("nonzero_data")),
        ],
        "prune_weights" => &[
            ("constexpr_blockwise_shift_scale", None),
            ("constexpr_lut_to_dense", None),
        ],
        _ => &[],
    }
}

/// The first non-constexpr consumers at the end of a constexpr chain starting at `op`, and the
/// op whose first output they read (coremltools follows the first constexpr child).
fn chain_end<'a>(graph: &Graph<'a>, mut op: &'a Operation) -> (Vec<Use<'a>>, &'a Operation) {
    loop {
        let uses: Vec<Use<'a>> = op
            .outputs
            .iter()
            .flat_map(|o| graph.consumers_of(&o.name).iter().copied())
            .collect();
        match uses.first() {
            Some(first) if uses.iter().all(|u| is_constexpr(&u.op.r#type)) => op = first.op,
            _ => return (uses, op),
        }
    }
}

/// coremltools' config resolution for a weight inside a constexpr chain: its own name, then each
/// constexpr op's name along the chain, then the real consumers' configs.
fn resolve_joint<'c, 'g>(
    config: &'c OptimizationConfig,
    graph: &Graph<'g>,
    name: &str,
    mut op: &'g Operation,
) -> Result<Option<&'c OpConfig>> {
    if let Some(c) = config.op_name.get(name) {
        return Ok(c.as_ref());
    }
    loop {
        if let Some(c) = config.op_name.get(op_name(op)) {
            return Ok(c.as_ref());
        }
        if config.op_type.contains_key(&op.r#type) {
            return Err(config_err!(
                "const ops cannot be set by the `set_op_type` function. Please use `set_global`"
            ));
        }
        let uses: Vec<Use<'g>> = op
            .outputs
            .iter()
            .flat_map(|o| graph.consumers_of(&o.name).iter().copied())
            .collect();
        match uses.first() {
            None => return Ok(None),
            Some(first) if uses.iter().all(|u| is_constexpr(&u.op.r#type)) => op = first.op,
            Some(_) => return resolve_uses(config, &uses),
        }
    }
}

/// The common config of the consumers (by op name, op type, global), which must agree.
fn resolve_uses<'c>(
    config: &'c OptimizationConfig,
    uses: &[Use<'_>],
) -> Result<Option<&'c OpConfig>> {
    let Some(first) = uses.first() else {
        return Ok(None);
    };
    let first_config = config.for_consumer(op_name(first.op), &first.op.r#type);
    for u in &uses[1..] {
        let c = config.for_consumer(op_name(u.op), &u.op.r#type);
        if c != first_config {
            return Err(config_err!(
                "compression config conflict detected between ops {} ({}) and {} ({}). {} has config \
                 {first_config:?} while {} has {c:?}.",
                op_name(first.op),
                first.op.r#type,
                op_name(u.op),
                u.op.r#type,
                op_name(first.op),
                op_name(u.op)
            ));
        }
    }
    Ok(first_config)
}

/// The constexpr sites a joint pass compresses, in program order (reference §2.6); sites not
/// larger than the weight_threshold go to `skipped`.
pub fn joint_candidates(
    model: &Model,
    config: &OptimizationConfig,
    kind: &str,
    skipped: &mut Vec<Skip>,
) -> Result<Vec<Candidate>> {
    let mut out = Vec::new();
    for (function_name, function) in &spec::program(model)?.functions {
        for block in function.block_specializations.values() {
            out.extend(joint_candidates_in(
                function_name,
                block,
                config,
                kind,
                skipped,
            )?);
        }
    }
    Ok(out)
}

/// [`joint_candidates`] in one block of function `function_name`.
pub fn joint_candidates_in(
    function_name: &str,
    block: &Block,
    config: &OptimizationConfig,
    kind: &str,
    skipped: &mut Vec<Skip>,
) -> Result<Vec<Candidate>> {
    let sites = joint_sites(kind);
    let mut out = Vec::new();
    let graph = Graph::new(block);
    for op in &graph.ops {
        for &(op_type, param_name) in sites {
            if op.r#type != op_type {
                continue;
            }
            let (value, name) = match param_name {
                Some(p) => match param(op, p) {
                    Some(Param::Value(v)) => (v.clone(), format!("{}_{p}_0", op_name(op))),
                    _ => continue,
                },
                None => (Value::default(), op_name(op).to_string()),
            };
            let (uses, end) = chain_end(&graph, op);
            let Some(dense) = end
                .outputs
                .first()
                .and_then(|o| tensor_info(o.r#type.as_ref()))
            else {
                continue;
            };
            let info = match param_name {
                // The LUT itself is quantized; sparse data is restored to its dense shape.
                Some("lut") => match tensor_info(value.r#type.as_ref()) {
                    Some(i) => i,
                    None => continue,
                },
                _ => match op
                    .outputs
                    .first()
                    .and_then(|o| tensor_info(o.r#type.as_ref()))
                {
                    Some(i) => i,
                    None => continue,
                },
            };
            if param_name.is_some()
                && !tensor_info(value.r#type.as_ref()).is_some_and(|i| weight_file_eligible(&i))
            {
                continue;
            }
            let Some(op_config) = resolve_joint(config, &graph, &name, op)? else {
                continue;
            };
            let threshold = op_config
                .weight_threshold()
                .ok_or_else(|| config_err!("weight_threshold cannot be None"))?;
            if uses.is_empty() {
                continue;
            }
            if dense.count()? as u64 <= threshold {
                skipped.push(Skip {
                    function: function_name.to_string(),
                    name: op_name(end).to_string(),
                    shape: dense.shape.clone(),
                    reason: SkipReason::BelowThreshold { threshold },
                });
                continue;
            }
            let (output_axis, input_axis) = channel_axes(&graph, &uses, info.shape.len());
            let conv_groups = max_conv_groups(&graph, &uses);
            let site = match param_name {
                Some(p) => Site::Param {
                    op: (*op).clone(),
                    param: p.to_string(),
                },
                None => Site::Op { op: (*op).clone() },
            };
            out.push(Candidate {
                function: function_name.to_string(),
                named: config.op_name.contains_key(&name),
                weight: op_name(end).to_string(),
                weight_shape: dense.shape.clone(),
                name,
                output: output_name(op).to_string(),
                value,
                info,
                config: op_config.clone(),
                output_axis,
                input_axis,
                consumer_types: uses.iter().map(|u| u.op.r#type.clone()).collect(),
                conv_groups,
                site,
            });
        }
    }
    Ok(out)
}

impl Skip {
    /// Candidate `c` skipped, under its weight's name and dense shape.
    pub fn of(c: &Candidate, reason: SkipReason) -> Self {
        Skip {
            function: c.function.clone(),
            name: c.weight.clone(),
            shape: c.weight_shape.clone(),
            reason,
        }
    }
}

/// coremltools' `infer_block_sizes` (reference §1.8): block size per axis, 0 = whole axis.
/// None when the consumers do not agree on the channel axes.
pub fn block_sizes(
    c: &Candidate,
    granularity: Granularity,
    group_size: usize,
    channel_axis: Option<i64>,
    block: &BlockSize,
) -> Result<Option<Vec<usize>>> {
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
