//! The one path every pass takes from an input package to an output package: compute
//! replacements for selected ops in parallel (in bounded chunks), stream their new tensors to the
//! output weight file in a fixed order, splice the new ops into the graph, then copy every blob
//! the result still uses from the input. Output bytes do not depend on the thread count.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};

use rayon::prelude::*;

use crate::compress::dense::Dense;
use crate::error::Result;
use crate::format::blob::BlobWriter;
use crate::format::package::{Package, PackageWriter, WEIGHT_FILE_NAME};
use crate::format::spec::proto::mil_spec::{value, Block, Operation, Value};
use crate::format::spec::{self, Model};
use crate::mil::ops::output_name;
use crate::mil::program::{rename_uses, replace_ops};
use crate::mil::tensor::{blob_value, goes_to_blob, immediate_value, TensorInfo};

/// Marks values whose bytes are still held by a [`Replacement`] (offset = index into it).
const PENDING: &str = "@coreml_compress/pending";
/// Marks values already written to the output weight file during this pass.
const WRITTEN: &str = "@coreml_compress/written";

/// A tensor made by a pass, in blob layout.
pub struct NewTensor {
    pub info: TensorInfo,
    pub bytes: Vec<u8>,
}

impl NewTensor {
    /// The `shape` parameter of iOS16/17 constexpr ops: uint32 dimensions.
    pub fn uint32_shape(shape: &[usize]) -> Self {
        NewTensor {
            info: TensorInfo::new(crate::format::dtype::DType::U32, &[shape.len()]),
            bytes: shape
                .iter()
                .flat_map(|&d| (d as u32).to_le_bytes())
                .collect(),
        }
    }
}

/// The ops that take the place of one op, with the tensors they hold.
#[derive(Default)]
pub struct Replacement {
    pub ops: Vec<Operation>,
    /// Variables whose uses must point elsewhere (old name → new name).
    pub renames: Vec<(String, String)>,
    /// Signal and noise energy (Σw², Σ(w−ŵ)²) of the compressed weight, for reports.
    pub error: Option<(f64, f64)>,
    tensors: Vec<Held>,
    /// Pending index of `tensors[0]`: a replacement that continues another (a recipe's next
    /// step) numbers its tensors after the other's, so the ops of both can refer to either.
    first_index: usize,
    spec_version: i32,
}

/// The type and blob-layout bytes of a held tensor.
pub type HeldBytes<'a> = (&'a TensorInfo, Cow<'a, [u8]>);

/// A tensor a [`Replacement`] holds until it is written.
enum Held {
    Bytes(NewTensor),
    /// Kept as elements, so that a large dense tensor is written without a byte copy.
    Dense(Dense),
}

impl Held {
    fn info(&self) -> &TensorInfo {
        match self {
            Held::Bytes(t) => &t.info,
            Held::Dense(d) => &d.info,
        }
    }
}

impl Replacement {
    pub fn new(spec_version: i32) -> Self {
        Replacement {
            spec_version,
            ..Default::default()
        }
    }

    /// A value holding `tensor`: inline or in the weight file, by coremltools' rule.
    pub fn value(&mut self, tensor: NewTensor) -> Value {
        if goes_to_blob(&tensor.info, self.spec_version) {
            self.hold(Held::Bytes(tensor))
        } else {
            immediate_value(&tensor.info, &tensor.bytes)
        }
    }

    /// [`Replacement::value`] for a dense tensor.
    pub fn dense_value(&mut self, dense: Dense) -> Result<Value> {
        if !goes_to_blob(&dense.info, self.spec_version) {
            let bytes = dense.to_bytes()?;
            return Ok(immediate_value(&dense.info, &bytes));
        }
        // Packed when written (`emit`), not here.
        Ok(self.hold(Held::Dense(dense)))
    }

    fn hold(&mut self, tensor: Held) -> Value {
        let index = self.first_index + self.tensors.len();
        let v = blob_value(tensor.info(), PENDING, index as u64);
        self.tensors.push(tensor);
        v
    }

    /// An empty replacement whose tensors are numbered after `previous`'s (see
    /// [`Replacement::absorb`]).
    pub fn after(previous: &Replacement) -> Self {
        Replacement {
            spec_version: previous.spec_version,
            first_index: previous.first_index + previous.tensors.len(),
            ..Default::default()
        }
    }

    /// The data size in the weight file of a tensor this replacement holds, if `b` refers to one.
    pub fn held_size(&self, b: &value::BlobFileValue) -> Option<Result<u64>> {
        let index = (b.offset as usize).checked_sub(self.first_index)?;
        let info = (b.file_name == PENDING)
            .then(|| self.tensors.get(index))??
            .info();
        Some(info.count().and_then(|count| {
            info.dtype
                .storage_bytes(count)
                .map(|n| n as u64)
                .ok_or_else(|| {
                    crate::format_err!("{} tensors have no byte layout", info.dtype.name())
                })
        }))
    }

    /// What the replacement stores: the data bytes of each tensor it writes to the weight file,
    /// in the order [`Replacement::emit`] writes them, and the bytes of the values its ops keep
    /// inline (in model.mlmodel).
    pub fn stored_sizes(&self) -> Result<(Vec<u64>, u64)> {
        let mut blobs = Vec::with_capacity(self.tensors.len());
        for held in &self.tensors {
            let info = held.info();
            let bytes = info.dtype.storage_bytes(info.count()?).ok_or_else(|| {
                crate::format_err!("{} tensors have no byte layout", info.dtype.name())
            })?;
            blobs.push(bytes as u64);
        }
        let mut inline = 0u64;
        let mut ops = self.ops.clone();
        for op in &mut ops {
            for_each_op_value(op, &mut |v| {
                if let Some(value::Value::ImmediateValue(_)) = &v.value {
                    inline += crate::mil::tensor::tensor_info(v.r#type.as_ref())
                        .and_then(|i| i.dtype.storage_bytes(i.count().ok()?))
                        .unwrap_or(0) as u64;
                }
            });
        }
        Ok((blobs, inline))
    }

    /// The type and bytes of a tensor this replacement holds, if `value` refers to one.
    pub fn held(&self, value: &Value) -> Option<Result<HeldBytes<'_>>> {
        let Some(value::Value::BlobFileValue(b)) = &value.value else {
            return None;
        };
        let index = (b.offset as usize).checked_sub(self.first_index)?;
        let held = (b.file_name == PENDING).then(|| self.tensors.get(index))??;
        Some(match held {
            Held::Bytes(t) => Ok((&t.info, Cow::Borrowed(t.bytes.as_slice()))),
            Held::Dense(d) => d.to_bytes().map(|bytes| (&d.info, bytes)),
        })
    }

    /// Takes in `next`, made with [`Replacement::after`] from this one: its ops take the place
    /// of the op whose first output is `target`, its renames apply to the ops, its tensors join
    /// these. Tensors no op refers to any more are dropped by [`Replacement::retain_used`].
    pub fn absorb(&mut self, mut next: Replacement, target: &str) -> Result<()> {
        if next.first_index != self.first_index + self.tensors.len() {
            return Err(crate::format_err!(
                "internal: a replacement was not made after the one absorbing it"
            ));
        }
        let mut block = Block {
            operations: std::mem::take(&mut self.ops),
            ..Default::default()
        };
        let mut ops = Some(std::mem::take(&mut next.ops));
        replace_ops(&mut block, &mut |op| {
            (output_name(op) == target).then(|| ops.take()).flatten()
        });
        let renames: HashMap<String, String> = next.renames.into_iter().collect();
        rename_uses(&mut block, &renames);
        self.ops = block.operations;
        for (_, to) in &mut self.renames {
            if let Some(new) = renames.get(to) {
                *to = new.clone();
            }
        }
        self.tensors.append(&mut next.tensors);
        Ok(())
    }

    /// Drops the held tensors no op refers to and numbers the rest from 0, in order.
    pub fn retain_used(&mut self) {
        let mut used = vec![false; self.tensors.len()];
        let first = self.first_index;
        for_each_pending(&mut self.ops, &mut |b| {
            used[b.offset as usize - first] = true
        });
        let mut new_index = Vec::with_capacity(used.len());
        let mut kept = 0u64;
        for &u in &used {
            new_index.push(kept);
            kept += u as u64;
        }
        for_each_pending(&mut self.ops, &mut |b| {
            b.offset = new_index[b.offset as usize - first]
        });
        let mut flags = used.into_iter();
        self.tensors.retain(|_| flags.next().unwrap_or(false));
        self.first_index = 0;
    }

    /// Writes the held tensors and points the ops' values at them.
    fn emit(&mut self, out: &mut BlobWriter) -> Result<()> {
        debug_assert_eq!(
            self.first_index, 0,
            "retain_used numbers held tensors from 0"
        );
        let mut offsets = Vec::with_capacity(self.tensors.len());
        for held in std::mem::take(&mut self.tensors) {
            let bytes = match &held {
                Held::Bytes(t) => Cow::Borrowed(t.bytes.as_slice()),
                Held::Dense(d) => d.to_bytes()?,
            };
            let info = held.info();
            offsets.push(out.append(info.dtype, info.count()? as u64, &bytes)?);
        }
        for_each_pending(&mut self.ops, &mut |b| {
            b.file_name = WRITTEN.to_string();
            b.offset = offsets[b.offset as usize];
        });
        Ok(())
    }
}

/// Calls `f` on every value of `ops` that refers to a held (pending) tensor.
fn for_each_pending(ops: &mut [Operation], f: &mut impl FnMut(&mut value::BlobFileValue)) {
    for op in ops {
        for_each_op_value(op, &mut |v| {
            if let Some(value::Value::BlobFileValue(b)) = &mut v.value {
                if b.file_name == PENDING {
                    f(b);
                }
            }
        });
    }
}

fn for_each_op_value(op: &mut Operation, f: &mut impl FnMut(&mut Value)) {
    use crate::format::spec::proto::mil_spec::argument::binding::Binding;
    op.attributes.values_mut().for_each(&mut *f);
    for arg in op.inputs.values_mut() {
        for b in &mut arg.arguments {
            if let Some(Binding::Value(v)) = &mut b.binding {
                f(v);
            }
        }
    }
}

/// One unit of work: replace the op whose first output is `target` in `function`.
pub struct Job<T> {
    pub function: String,
    pub target: String,
    /// Bytes of input the job reads, to bound how much is in flight at once.
    pub input_bytes: usize,
    pub task: T,
}

/// How much input a chunk of parallel jobs may read before its results are written. Two chunks
/// are in flight: one being computed while the previous one is written.
const CHUNK_BYTES: usize = 128 << 20;

/// Runs `compute` over the jobs (in parallel, chunk by chunk), writes the replacements it makes
/// into the output weight file in job order and returns the package's model with the
/// replacements made, and the record `compute` returned for each job, in job order. Each chunk is
/// written while the next one is computed. `progress(done, total)` is called after each chunk,
/// on the calling thread.
pub fn apply<T: Sync, R: Send>(
    package: &Package,
    jobs: &[Job<T>],
    out: &mut PackageWriter,
    compute: impl Fn(&Job<T>) -> Result<(Option<Replacement>, R)> + Sync,
    progress: &mut dyn FnMut(usize, usize) -> Result<()>,
) -> Result<(Model, Vec<R>)> {
    let mut replaced: BTreeMap<&str, HashMap<&str, Replacement>> = BTreeMap::new();
    let mut report = Vec::new();
    let mut write = |start: usize, results: Vec<Result<(Option<Replacement>, R)>>| -> Result<()> {
        for (index, result) in results.into_iter().enumerate() {
            let job = &jobs[start + index];
            let (replacement, record) = result?;
            report.push(record);
            if let Some(mut r) = replacement {
                let _t = crate::trace::span("write new tensors");
                r.emit(out.weights())?;
                replaced
                    .entry(&job.function)
                    .or_default()
                    .insert(&job.target, r);
            }
        }
        Ok(())
    };
    #[allow(clippy::type_complexity)]
    let mut computed: Option<(usize, Vec<Result<(Option<Replacement>, R)>>)> = None;
    let mut start = 0;
    loop {
        let mut end = start;
        let mut bytes = 0;
        let min_jobs = rayon::current_num_threads();
        while end < jobs.len()
            && (end - start < min_jobs || bytes + jobs[end].input_bytes <= CHUNK_BYTES)
        {
            bytes += jobs[end].input_bytes;
            end += 1;
        }
        let previous = computed.take();
        let (results, written) = rayon::join(
            || {
                jobs[start..end]
                    .par_iter()
                    .map(&compute)
                    .collect::<Vec<_>>()
            },
            || previous.map_or(Ok(()), |(at, results)| write(at, results)),
        );
        written?;
        package.release_pages();
        if start == end {
            break;
        }
        computed = Some((start, results));
        start = end;
        progress(start, jobs.len())?;
    }

    let mut model = package.model.clone();
    let program = spec::program_mut(&mut model)?;
    for (function_name, function) in program.functions.iter_mut() {
        let Some(mut by_target) = replaced.remove(function_name.as_str()) else {
            continue;
        };
        let renames: HashMap<String, String> = by_target
            .values_mut()
            .flat_map(|r| std::mem::take(&mut r.renames))
            .collect();
        for block in function.block_specializations.values_mut() {
            replace_ops(block, &mut |op| {
                by_target
                    .get_mut(output_name(op))
                    .map(|r| std::mem::take(&mut r.ops))
            });
            rename_uses(block, &renames);
        }
    }
    Ok((model, report))
}

/// Copies into the output weight file every input blob `model` still refers to (each distinct
/// blob once, so shared weights stay shared, and in input file order, so an unchanged model keeps
/// its offsets), then commits the package.
pub fn finish(
    package: &Package,
    mut model: Model,
    mut out: PackageWriter,
) -> Result<std::path::PathBuf> {
    let _t = crate::trace::span("copy unchanged blobs, commit");
    let program = spec::program_mut(&mut model)?;
    let mut used: std::collections::BTreeSet<(String, u64)> = std::collections::BTreeSet::new();
    spec::for_each_value_mut(program, &mut |v| {
        if let Some(value::Value::BlobFileValue(b)) = &v.value {
            if b.file_name != WRITTEN {
                used.insert((b.file_name.clone(), b.offset));
            }
        }
    });
    let mut copied: HashMap<(String, u64), u64> = HashMap::new();
    for (file_name, offset) in used {
        let source = value::BlobFileValue { file_name, offset };
        let (file, blob) = package.blob_in_file(&source)?;
        let new_offset = out.weights().copy(file, &blob)?;
        copied.insert((source.file_name, source.offset), new_offset);
    }
    spec::for_each_value_mut(program, &mut |v| {
        let Some(value::Value::BlobFileValue(b)) = &mut v.value else {
            return;
        };
        if b.file_name != WRITTEN {
            b.offset = copied[&(std::mem::take(&mut b.file_name), b.offset)];
        }
        b.file_name = WEIGHT_FILE_NAME.to_string();
    });
    out.commit(&model)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::dtype::DType;
    use crate::mil::ops::{build_op, param, NewParam, ParamStyle};

    fn tensor(fill: u8) -> NewTensor {
        NewTensor {
            info: TensorInfo::new(DType::U8, &[16]),
            bytes: vec![fill; 16],
        }
    }

    fn op(output: &str, params: Vec<(&str, Value)>) -> Operation {
        let params = params
            .into_iter()
            .map(|(k, v)| (k, NewParam::Value(v)))
            .collect();
        let info = TensorInfo::new(DType::F16, &[16]);
        build_op(
            "constexpr_x",
            output,
            params,
            vec![(output.into(), info)],
            ParamStyle::Inputs,
        )
    }

    fn held_fill(r: &Replacement, v: &Value) -> u8 {
        r.held(v).expect("held").expect("bytes").1[0]
    }

    #[test]
    fn absorb_replaces_the_target_and_keeps_only_used_tensors() {
        let mut first = Replacement::new(9);
        let (a, b) = (first.value(tensor(1)), first.value(tensor(2)));
        first.ops.push(op("w_1", vec![("a", a.clone()), ("b", b)]));
        first.renames.push(("w".into(), "w_1".into()));

        // The next step reuses `a`, drops `b` and adds `c`; it renames its output.
        let mut next = Replacement::after(&first);
        let c = next.value(tensor(3));
        assert_eq!(held_fill(&first, &a), 1);
        assert!(next.held(&a).is_none(), "numbered after the first");
        next.ops.push(op("w_2", vec![("a", a), ("c", c.clone())]));
        next.renames.push(("w_1".into(), "w_2".into()));
        assert_eq!(held_fill(&next, &c), 3);

        first.absorb(next, "w_1").unwrap();
        first.retain_used();
        assert_eq!(first.ops.len(), 1);
        assert_eq!(first.renames, vec![("w".to_string(), "w_2".to_string())]);
        assert_eq!(first.tensors.len(), 2);
        let values: Vec<Value> = ["a", "c"]
            .iter()
            .map(|k| match param(&first.ops[0], k) {
                Some(crate::mil::ops::Param::Value(v)) => v.clone(),
                _ => panic!("{k} is a value"),
            })
            .collect();
        assert_eq!(
            values
                .iter()
                .map(|v| held_fill(&first, v))
                .collect::<Vec<_>>(),
            [1, 3]
        );
    }

    #[test]
    fn stored_sizes_count_held_blobs_and_inline_values() {
        let mut r = Replacement::new(9);
        let big = r.value(tensor(1));
        let small = r.value(NewTensor {
            info: TensorInfo::new(DType::U8, &[4]),
            bytes: vec![7; 4],
        });
        assert!(r.held(&big).is_some() && r.held(&small).is_none());
        r.ops.push(op("w_1", vec![("a", big), ("b", small)]));
        assert_eq!(r.stored_sizes().unwrap(), (vec![16], 4));
    }

    #[test]
    fn absorb_checks_the_numbering() {
        let mut first = Replacement::new(9);
        first.value(tensor(1));
        let unrelated = Replacement::new(9);
        assert!(first.absorb(unrelated, "w").is_err());
    }
}
