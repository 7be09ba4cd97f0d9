//! `inspect`: one record per weight of a package — every dense `const` the model computes with and
//! every `constexpr_*` chain end — with its consumers, dense shape and dtype, bytes on disk, how it
//! is compressed (with the parameters read off the chain) and its number of distinct values.
//! A superset of coremltools' `get_weights_metadata`.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use rayon::prelude::*;

use crate::compress::dense::{Dense, Elements};
use crate::compress::materialize::Materializer;
use crate::error::Result;
use crate::format::dtype::DType;
use crate::format::package::Package;
use crate::format::spec::{
    self,
    proto::mil_spec::{argument::binding::Binding, value, Operation, Value},
};
use crate::format_err;
use crate::kernels::fp16::{bit_histogram, f32_order_key};
use crate::mil::ops::{const_value, input_vars, op_name, param, Param};
use crate::mil::program::Graph;
use crate::mil::tensor::{tensor_info, TensorInfo};

/// Fewer elements than this and a const is a hyper-parameter, not a weight (coremltools' rule
/// for the weight file).
pub const MIN_WEIGHT_ELEMENTS: usize = 10;

/// A value of a compression parameter.
#[derive(Clone, Debug, PartialEq)]
pub enum ParamValue {
    Int(i64),
    Float(f64),
    Bool(bool),
    Str(String),
    Ints(Vec<i64>),
}

/// A non-constexpr use of a weight.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Consumer {
    pub op_type: String,
    pub op_name: String,
    pub param: String,
}

#[derive(Clone, Debug, PartialEq)]
pub struct WeightRecord {
    /// The const op's name, or the chain end op's name.
    pub name: String,
    /// The variable the model computes with.
    pub var: String,
    pub function: String,
    pub consumers: Vec<Consumer>,
    /// Whether the variable is returned by a block.
    pub block_output: bool,
    pub shape: Vec<usize>,
    /// The dtype of the dense value (`fp16`, `fp32`, …).
    pub dtype: String,
    /// Bytes of every tensor of the chain: blob data plus immediate tensors.
    pub bytes_on_disk: u64,
    /// What this weight adds to the package's size: `bytes_on_disk` less the blobs an earlier
    /// weight of the listing (in another function of a multifunction package) already holds.
    pub counted_bytes: u64,
    /// The other functions whose weights read a blob of this one (merged multifunction
    /// packages share identical weights).
    pub shared_with: Vec<String>,
    /// `none`, `palettized`, `quantized`, `sparse`, or joint (`sparse+palettized`, …).
    pub compression: String,
    /// The op types of the chain, from the dense end back to the stored tensors.
    pub chain: Vec<String>,
    pub params: Vec<(String, ParamValue)>,
    /// Distinct values of the dense tensor (numpy's `np.unique` count: ±0 and all NaNs are one).
    pub distinct: u64,
}

fn is_constexpr(op_type: &str) -> bool {
    op_type.starts_with("constexpr_")
}

/// Whether a dense const of this type counts as a weight.
fn is_weight_tensor(info: &TensorInfo) -> bool {
    info.dtype != DType::Str
        && info.dtype != DType::Bool
        && info.count().is_ok_and(|n| n >= MIN_WEIGHT_ELEMENTS)
}

/// The versions a package's model declares: its specification version and each function's
/// opset name (`CoreML6` is iOS16, `CoreML8` iOS18), which decide the op forms it may hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelVersions {
    pub specification_version: i32,
    /// `(function, opset)` in the program's order.
    pub opsets: Vec<(String, String)>,
}

/// The versions of the package at `path` (see [`ModelVersions`]).
pub fn model_versions(path: &Path) -> Result<ModelVersions> {
    let package = Package::open(path)?;
    let program = spec::program(&package.model)?;
    Ok(ModelVersions {
        specification_version: package.model.specification_version,
        opsets: program
            .functions
            .iter()
            .map(|(name, f)| (name.clone(), f.opset.clone()))
            .collect(),
    })
}

/// Every weight of the package at `path`, function by function, in program order.
pub fn inspect(path: &Path) -> Result<Vec<WeightRecord>> {
    let package = Package::open(path)?;
    crate::compress::select::check_chains(&package)?;
    let mut out = Vec::new();
    for_each_block(&package, |function, graph, ends| {
        let materializer = Materializer::new(&package, graph);
        // A few weights at a time, then their pages are dropped: every weight is read (its
        // distinct values), and the whole weight file would otherwise stay resident (2.4 GB
        // peak for the 1.1B package; `fit` inspects before it measures).
        for few in ends.chunks(rayon::current_num_threads()) {
            let records: Vec<(WeightRecord, Vec<BlobUse>)> = few
                .par_iter()
                .map(|&(op, var)| record(&materializer, function, op, var))
                .collect::<Result<_>>()?;
            out.extend(records);
            package.release_pages();
        }
        Ok(())
    })?;
    Ok(count_shared_blobs(out))
}

/// Computes every constexpr chain of the package and drops the values: a pass copies the chains
/// it does not rewrite as they are, so it refuses what `inspect` would refuse in its output
/// (shapes that disagree along a chain, parameters a chain op cannot read). Packages without
/// chains cost nothing; otherwise this is the work of decompressing them, a few weights at a time.
pub fn check_chain_values(package: &Package) -> Result<()> {
    for_each_block(package, |_, graph, ends| {
        let materializer = Materializer::new(package, graph);
        let producer = |n: &str| graph.producers.get(n).copied();
        ends.par_iter()
            .filter(|(op, _)| is_constexpr(&op.r#type))
            .try_for_each(|&(op, var)| {
                chain_params(&materializer, &chain(op, &producer))?;
                materializer.var(var).map(drop)
            })
    })
}

/// Where each weight of the package is used: (function, weight name) → its first use by a
/// non-constexpr op, as (consumer op name, parameter). Passes keep consumers and their
/// parameters, so a use names the same weight before and after a pass renames its chain.
pub fn weight_uses(package: &Package) -> Result<HashMap<(String, String), (String, String)>> {
    let mut uses = HashMap::new();
    for_each_block(package, |function, graph, ends| {
        for &(op, var) in ends {
            let first = graph
                .consumers_of(var)
                .iter()
                .find(|u| !is_constexpr(&u.op.r#type))
                .map(|u| (op_name(u.op).to_string(), u.param.to_string()));
            if let Some(first) = first {
                uses.insert((function.to_string(), op_name(op).to_string()), first);
            }
        }
        Ok(())
    })?;
    Ok(uses)
}

/// Calls `f` for each block of each function with the block's weights: every dense weight const
/// and every constexpr chain end the model computes with, each with the variable it uses.
fn for_each_block<'p>(
    package: &'p Package,
    mut f: impl FnMut(&'p str, &Graph<'p>, &[(&'p Operation, &'p str)]) -> Result<()>,
) -> Result<()> {
    for (function, func) in &spec::program(&package.model)?.functions {
        for block in func.block_specializations.values() {
            let graph = Graph::new(block);
            let used_outside = |var: &str| {
                graph.block_outputs.contains(var)
                    || graph
                        .consumers_of(var)
                        .iter()
                        .any(|u| !is_constexpr(&u.op.r#type))
            };
            let ends: Vec<(&Operation, &str)> = graph
                .ops
                .iter()
                .filter_map(|&op| {
                    let var = op.outputs.iter().find(|o| used_outside(&o.name))?;
                    if is_constexpr(&op.r#type) {
                        return Some((op, var.name.as_str()));
                    }
                    let info = tensor_info(const_value(op)?.r#type.as_ref())?;
                    is_weight_tensor(&info).then_some((op, var.name.as_str()))
                })
                .collect();
            f(function, &graph, &ends)?;
        }
    }
    Ok(())
}

/// A blob a weight reads: (file, offset) and its data size.
type BlobUse = ((String, u64), u64);

/// Fills `counted_bytes` and `shared_with`: each blob counts for the first weight that reads it.
fn count_shared_blobs(records: Vec<(WeightRecord, Vec<BlobUse>)>) -> Vec<WeightRecord> {
    let mut readers: std::collections::HashMap<&(String, u64), BTreeSet<&str>> =
        std::collections::HashMap::new();
    for (r, blobs) in &records {
        for (key, _) in blobs {
            readers.entry(key).or_default().insert(r.function.as_str());
        }
    }
    let shared: Vec<Vec<String>> = records
        .iter()
        .map(|(r, blobs)| {
            let functions: BTreeSet<&str> = blobs
                .iter()
                .flat_map(|(key, _)| readers[key].iter().copied())
                .filter(|&f| f != r.function)
                .collect();
            functions.into_iter().map(str::to_string).collect()
        })
        .collect();
    let mut counted = std::collections::HashSet::new();
    records
        .into_iter()
        .zip(shared)
        .map(|((mut r, blobs), shared_with)| {
            let repeated: u64 = blobs
                .into_iter()
                .filter(|(key, _)| !counted.insert(key.clone()))
                .map(|(_, size)| size)
                .sum();
            r.counted_bytes = r.bytes_on_disk - repeated;
            r.shared_with = shared_with;
            r
        })
        .collect()
}

/// Bytes stored for the weight that `ends` compute, as `bytes_on_disk` counts them: the values
/// held by `ends` and by every const and constexpr op they read, directly or not, each op once.
/// `producer` finds the op that makes a variable; `blob_bytes` gives a blob value's data size.
pub fn stored_bytes<'a>(
    ends: &[&'a Operation],
    producer: &dyn Fn(&str) -> Option<&'a Operation>,
    blob_bytes: &dyn Fn(&value::BlobFileValue) -> Result<u64>,
) -> Result<u64> {
    let mut total = 0;
    let mut seen = BTreeSet::new();
    for &end in ends {
        for op in chain(end, producer) {
            if seen.insert(op as *const Operation as usize) {
                total += op_bytes(op, blob_bytes)?;
            }
        }
    }
    Ok(total)
}

/// The const and constexpr ops feeding `op` (itself included), each once, from `op` backwards.
fn chain<'a>(
    op: &'a Operation,
    producer: &dyn Fn(&str) -> Option<&'a Operation>,
) -> Vec<&'a Operation> {
    let mut seen = BTreeSet::new();
    let mut order = Vec::new();
    let mut stack = vec![op];
    while let Some(op) = stack.pop() {
        if !seen.insert(op as *const Operation as usize) {
            continue;
        }
        order.push(op);
        for n in input_vars(op) {
            if let Some(p) = producer(n) {
                if p.r#type == "const" || is_constexpr(&p.r#type) {
                    stack.push(p);
                }
            }
        }
    }
    order
}

/// Stored bytes of one value: its blob's data, or the packed size of an immediate tensor.
fn value_bytes(
    v: &Value,
    blob_bytes: &dyn Fn(&value::BlobFileValue) -> Result<u64>,
) -> Result<u64> {
    match &v.value {
        Some(value::Value::BlobFileValue(b)) => blob_bytes(b),
        Some(value::Value::ImmediateValue(_)) => Ok(tensor_info(v.r#type.as_ref())
            .and_then(|i| i.dtype.storage_bytes(i.count().ok()?))
            .unwrap_or(0) as u64),
        _ => Ok(0),
    }
}

fn op_bytes(
    op: &Operation,
    blob_bytes: &dyn Fn(&value::BlobFileValue) -> Result<u64>,
) -> Result<u64> {
    let mut total = 0;
    for (key, v) in &op.attributes {
        if key != "name" {
            total += value_bytes(v, blob_bytes)?;
        }
    }
    for arg in op.inputs.values() {
        for b in &arg.arguments {
            if let Some(Binding::Value(v)) = &b.binding {
                total += value_bytes(v, blob_bytes)?;
            }
        }
    }
    Ok(total)
}

/// The type of a parameter, whether inline or fed by a variable.
fn param_info(graph: &Graph<'_>, op: &Operation, name: &str) -> Option<TensorInfo> {
    match param(op, name)? {
        Param::Value(v) => tensor_info(v.r#type.as_ref()),
        Param::Var(n) => {
            let producer = graph.producers.get(n)?;
            let out = producer.outputs.iter().find(|o| o.name == n)?;
            tensor_info(out.r#type.as_ref())
        }
    }
}

fn shape_param(shape: &[usize]) -> ParamValue {
    ParamValue::Ints(shape.iter().map(|&d| d as i64).collect())
}

fn int_param(m: &Materializer<'_>, op: &Operation, name: &str) -> Result<Option<i64>> {
    Ok(m.param(op, name)?
        .and_then(|d| d.to_i64())
        .and_then(|v| v.first().copied()))
}

struct Params {
    list: Vec<(String, ParamValue)>,
    sparse: bool,
    palettized: bool,
    quantized: bool,
}

impl Params {
    fn set(&mut self, key: &str, value: ParamValue) {
        match self.list.iter_mut().find(|(k, _)| k == key) {
            Some((_, v)) => *v = value,
            None => self.list.push((key.to_string(), value)),
        }
    }
}

/// The element count of a parameter's type, 0 when it has none (the package was checked when
/// opened, so a declared shape's count fits).
fn count_of(info: Option<TensorInfo>) -> usize {
    info.and_then(|i| i.count().ok()).unwrap_or(0)
}

fn lut_params(p: &mut Params, lut: Option<TensorInfo>, vector_axis: Option<i64>, ios16: bool) {
    p.palettized = true;
    let Some(lut) = lut else { return };
    let entries = if ios16 {
        lut.count().unwrap_or(0)
    } else {
        lut.shape[lut.shape.len().saturating_sub(2)]
    };
    p.set(
        "nbits",
        ParamValue::Int(entries.max(1).trailing_zeros() as i64),
    );
    p.set("lut_shape", shape_param(&lut.shape));
    p.set("lut_dtype", ParamValue::Str(lut.dtype.name().into()));
    if !ios16 {
        p.set(
            "cluster_dim",
            ParamValue::Int(*lut.shape.last().unwrap_or(&1) as i64),
        );
    }
    if let Some(a) = vector_axis {
        p.set("vector_axis", ParamValue::Int(a));
    }
}

fn quant_params(
    p: &mut Params,
    data: Option<TensorInfo>,
    scale: Option<TensorInfo>,
    offset: Option<TensorInfo>,
) {
    p.quantized = true;
    if let Some(d) = data {
        p.set("data_dtype", ParamValue::Str(d.dtype.name().into()));
        if let Some(bits) = d.dtype.bits() {
            p.set("nbits", ParamValue::Int(bits as i64));
        }
    }
    if let Some(s) = scale {
        p.set("scale_shape", shape_param(&s.shape));
    }
    p.set("has_offset", ParamValue::Bool(offset.is_some()));
    if let Some(o) = offset {
        p.set("offset_dtype", ParamValue::Str(o.dtype.name().into()));
    }
}

fn sparse_params(p: &mut Params, mask_count: usize, nonzero: usize) {
    p.sparse = true;
    let density = if mask_count == 0 {
        0.0
    } else {
        nonzero as f64 / mask_count as f64
    };
    p.set("nonzero", ParamValue::Int(nonzero as i64));
    p.set("density", ParamValue::Float(density));
    p.set("sparsity", ParamValue::Float(1.0 - density));
}

/// Reads the compression parameters off the ops of a chain.
fn chain_params(m: &Materializer<'_>, ops: &[&Operation]) -> Result<Params> {
    let graph = m.graph;
    let mut p = Params {
        list: Vec::new(),
        sparse: false,
        palettized: false,
        quantized: false,
    };
    // Walk from the stored tensors to the dense end so that outer ops' values win.
    for &op in ops.iter().rev() {
        let info = |name: &str| param_info(graph, op, name);
        match op.r#type.as_str() {
            "constexpr_lut_to_dense" => {
                let ios16 = param(op, "shape").is_some();
                lut_params(&mut p, info("lut"), int_param(m, op, "vector_axis")?, ios16);
            }
            "constexpr_affine_dequantize" => {
                quant_params(
                    &mut p,
                    info("quantized_data"),
                    info("scale"),
                    info("zero_point"),
                );
                if let Some(axis) = int_param(m, op, "axis")? {
                    p.set("axis", ParamValue::Int(axis));
                }
            }
            "constexpr_blockwise_shift_scale" => {
                let data = info("data");
                // A float `data` is a palettized weight times a per-channel scale, not a
                // quantization.
                if data.as_ref().is_some_and(|d| d.dtype.is_float()) {
                    if let Some(s) = info("scale") {
                        p.set("per_channel_scale_shape", shape_param(&s.shape));
                    }
                } else {
                    quant_params(&mut p, data, info("scale"), info("offset"));
                }
            }
            "constexpr_sparse_to_dense" => {
                let nonzero = count_of(info("nonzero_data"));
                let count = match m.param(op, "shape")?.and_then(|s| s.to_i64()) {
                    Some(shape) => {
                        let dims: Vec<usize> = shape.iter().map(|&d| d.max(0) as usize).collect();
                        crate::kernels::numel(&dims)?
                    }
                    None => count_of(info("mask")),
                };
                sparse_params(&mut p, count, nonzero);
            }
            "constexpr_lut_to_sparse" => {
                let mask = info("indices_mask");
                let nonzero = count_of(info("indices_nonzero_data"));
                sparse_params(&mut p, count_of(mask), nonzero);
                lut_params(&mut p, info("lut"), int_param(m, op, "vector_axis")?, false);
            }
            "constexpr_sparse_blockwise_shift_scale" => {
                let mask = info("data_mask");
                let data = info("nonzero_data");
                sparse_params(&mut p, count_of(mask), count_of(data.clone()));
                quant_params(&mut p, data, info("scale"), info("offset"));
            }
            "constexpr_cast" => {
                if let Some(s) = info("source_val") {
                    p.set("cast_from", ParamValue::Str(s.dtype.name().into()));
                }
            }
            _ => {}
        }
    }
    Ok(p)
}

fn compression_kind(p: &Params) -> String {
    let parts: Vec<&str> = [
        (p.sparse, "sparse"),
        (p.palettized, "palettized"),
        (p.quantized, "quantized"),
    ]
    .into_iter()
    .filter_map(|(on, name)| on.then_some(name))
    .collect();
    if parts.is_empty() {
        "none".into()
    } else {
        parts.join("+")
    }
}

/// numpy's `np.unique` count over floats: -0 equals 0 and every NaN is one value.
pub fn distinct_values(d: &Dense) -> u64 {
    match &d.elements {
        Elements::F16(v) => {
            let h = bit_histogram(v);
            let mut n = 0u64;
            let mut nan = false;
            for (bits, &c) in h.iter().enumerate() {
                if c == 0 || bits == 0x8000 && h[0] != 0 {
                    continue;
                }
                let exp_all_ones = bits & 0x7C00 == 0x7C00;
                if exp_all_ones && bits & 0x03FF != 0 {
                    nan = true;
                } else {
                    n += 1;
                }
            }
            n + nan as u64
        }
        Elements::F32(v) => {
            let mut keys: Vec<u32> = v
                .iter()
                .filter(|x| !x.is_nan())
                .map(|&x| f32_order_key(x))
                .collect();
            let nan = keys.len() < v.len();
            keys.par_sort_unstable();
            keys.dedup();
            keys.len() as u64 + nan as u64
        }
        Elements::I8(v) => count_sorted(v.clone()),
        Elements::U8(v) => count_sorted(v.clone()),
        Elements::I32(v) => count_sorted(v.clone()),
        Elements::Str(v) => count_sorted(v.clone()),
    }
}

fn count_sorted<T: Ord + Send>(mut v: Vec<T>) -> u64 {
    v.par_sort_unstable();
    v.dedup();
    v.len() as u64
}

fn record(
    m: &Materializer<'_>,
    function: &str,
    op: &Operation,
    var: &str,
) -> Result<(WeightRecord, Vec<BlobUse>)> {
    let graph = m.graph;
    let producer = |n: &str| graph.producers.get(n).copied();
    let ops = chain(op, &producer);
    let blobs = std::cell::RefCell::new(Vec::new());
    let bytes_on_disk = stored_bytes(&[op], &producer, &|b| {
        let size = m.package.blob(b)?.data.len() as u64;
        blobs
            .borrow_mut()
            .push(((b.file_name.clone(), b.offset), size));
        Ok(size)
    })?;
    let params = chain_params(m, &ops)?;
    let dense = m.var(var)?;
    if dense.info.dtype == DType::Str {
        return Err(format_err!(
            "op {}: a weight cannot be a string tensor",
            op_name(op)
        ));
    }
    let consumers = graph
        .consumers_of(var)
        .iter()
        .filter(|u| !is_constexpr(&u.op.r#type))
        .map(|u| Consumer {
            op_type: u.op.r#type.clone(),
            op_name: op_name(u.op).to_string(),
            param: u.param.to_string(),
        })
        .collect();
    let record = WeightRecord {
        name: op_name(op).to_string(),
        var: var.to_string(),
        function: function.to_string(),
        consumers,
        block_output: graph.block_outputs.contains(var),
        shape: dense.info.shape.clone(),
        dtype: dense.info.dtype.name().to_string(),
        bytes_on_disk,
        counted_bytes: bytes_on_disk,
        shared_with: Vec::new(),
        compression: compression_kind(&params),
        chain: ops
            .iter()
            .filter(|o| is_constexpr(&o.r#type))
            .map(|o| o.r#type.clone())
            .collect(),
        params: params.list,
        distinct: distinct_values(&dense),
    };
    Ok((record, blobs.into_inner()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use half::f16;

    #[test]
    fn distinct_counts_like_numpy_unique() {
        let h = |v: &[f32]| Dense {
            info: TensorInfo::new(DType::F16, &[v.len()]),
            elements: Elements::F16(v.iter().map(|&x| f16::from_f32(x)).collect()),
        };
        assert_eq!(distinct_values(&h(&[0.0, -0.0, 1.0, 1.0, 2.0])), 3);
        assert_eq!(distinct_values(&h(&[f32::NAN, -f32::NAN, 1.0])), 2);
        assert_eq!(distinct_values(&h(&[-0.0, -0.0])), 1);
        let f = Dense {
            info: TensorInfo::new(DType::F32, &[5]),
            elements: Elements::F32(vec![0.0, -0.0, 3.0, f32::NAN, 3.0]),
        };
        assert_eq!(distinct_values(&f), 3);
        let i = Dense {
            info: TensorInfo::new(DType::I8, &[4]),
            elements: Elements::I8(vec![1, -1, 1, 0]),
        };
        assert_eq!(distinct_values(&i), 3);
    }

    #[test]
    fn inspects_the_example_package() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("example.mlpackage");
        crate::compress::example::write_example(&path).unwrap();
        let versions = model_versions(&path).unwrap();
        assert_eq!(versions.specification_version, 9);
        assert_eq!(
            versions.opsets,
            vec![("main".to_string(), "CoreML8".to_string())]
        );
        let records = inspect(&path).unwrap();
        assert!(!records.is_empty());
        for r in &records {
            assert_eq!(r.compression, "none");
            assert!(r.chain.is_empty());
            assert!(r.distinct >= 1);
            let n: usize = r.shape.iter().product();
            assert!(n >= MIN_WEIGHT_ELEMENTS);
            assert!(!r.consumers.is_empty() || r.block_output);
            if r.dtype == "fp16" {
                assert!(r.bytes_on_disk >= 2 * n as u64);
            }
        }
    }
}
