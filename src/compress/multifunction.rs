//! Multifunction packages (coremltools' `MultiFunctionDescriptor` / `save_multifunction`), merged
//! at the blob level, and single functions extracted back out.
//!
//! No tensor is decoded. Each function is copied as it is — its inputs, its opset label and
//! block, its ops in their own version and parameter style — and only blob offsets change. Blobs
//! are deduplicated by full content across all inputs: a cheap digest (element type, padding,
//! length, first and last 4 KiB) pairs each blob with the first that may equal it, and a byte
//! comparison decides; compressed parts (indices, LUTs, scales, offsets, masks) are blobs like
//! any other, so separately compressed copies of one base share it. Reading only what a
//! comparison needs (no hash of every byte) keeps a merge close to the cost of writing its output.
//!
//! Memory: blobs are compared through the inputs' memory maps, dropping the pages read after
//! each piece, and copied file to file by the kernel, so the peak is a few pieces whatever the
//! number or size of the inputs.

use std::collections::{hash_map::Entry, HashMap, HashSet};
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use crate::error::Result;
use crate::format::blob::{Blob, BlobFile, ALIGNMENT, HEADER_SIZE, METADATA_SIZE};
use crate::format::package::{Package, PackageWriter, Source, WEIGHT_FILE_NAME};
use crate::format::spec::proto::array_feature_type::ArrayDataType;
use crate::format::spec::proto::mil_spec::{
    argument::binding::Binding, value, value::immediate_value, Block, Function, Program, Value,
};
use crate::format::spec::proto::{
    self, feature_type, state_feature_type, FeatureDescription, FunctionDescription,
    ModelDescription,
};
use crate::format::spec::{self, Model};
use crate::{config_err, format_err};

/// The first specification version with multifunction models (iOS18).
pub const MULTIFUNCTION_SPEC_VERSION: i32 = 9;

/// One function of a merged package: function `source` of the package at `package`, stored
/// under the name `target`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FunctionSource {
    pub package: PathBuf,
    pub source: String,
    pub target: String,
}

/// What a merge or an extraction wrote.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MergeStats {
    pub path: PathBuf,
    pub functions: usize,
    /// Blobs the functions use, each counted once per function that uses it.
    pub blob_references: usize,
    /// Distinct blobs written.
    pub blobs_written: usize,
    /// Size of the output weight file (0 when no value needs one).
    pub weight_file_bytes: u64,
    /// Size the weight files would have if every function were saved as its own package.
    pub separate_bytes: u64,
    /// `separate_bytes - weight_file_bytes`: what sharing saved.
    pub saved_bytes: u64,
}

/// A model's functions as coremltools lists them: the described functions of a multifunction
/// model, or `["main"]`.
pub fn model_function_names(model: &Model) -> Vec<String> {
    let described: Vec<String> = model
        .description
        .iter()
        .flat_map(|d| d.functions.iter().map(|f| f.name.clone()))
        .collect();
    if described.is_empty() {
        vec!["main".to_string()]
    } else {
        described
    }
}

/// The functions of the package at `path` (see [`model_function_names`]).
pub fn function_names(path: &Path) -> Result<Vec<String>> {
    Ok(model_function_names(&Package::open(path)?.model))
}

/// The description of function `name`: a copy of the described function of a multifunction
/// model, or the top-level inputs, outputs and states of a single-function one.
fn function_description(model: &Model, name: &str) -> Option<FunctionDescription> {
    let d = model.description.clone().unwrap_or_default();
    if d.functions.is_empty() {
        (name == "main").then(|| FunctionDescription {
            name: name.to_string(),
            input: d.input,
            output: d.output,
            state: d.state,
            predicted_feature_name: d.predicted_feature_name,
            predicted_probabilities_name: d.predicted_probabilities_name,
        })
    } else {
        d.functions.into_iter().find(|f| f.name == name)
    }
}

/// A function of an opened package, ready to be written under a new name.
struct Selected {
    package: usize,
    function: Function,
    description: FunctionDescription,
    target: String,
}

fn select(packages: &[Package], package: usize, source: &str, target: &str) -> Result<Selected> {
    let p = &packages[package];
    let root = p.root.display();
    if !model_function_names(&p.model).iter().any(|n| n == source) {
        return Err(config_err!(
            "src_function_name {source} not found in {root}."
        ));
    }
    let function = spec::program(&p.model)?
        .functions
        .get(source)
        .ok_or_else(|| {
            format_err!(
                "{root}: function {source} is described but the program has no such function"
            )
        })?
        .clone();
    if !function.block_specializations.contains_key(&function.opset) {
        return Err(format_err!(
            "{root}: function {source} is labelled with opset {:?} but has no block for it",
            function.opset
        ));
    }
    let mut description =
        function_description(&p.model, source).expect("a listed function has a description");
    description.name = target.to_string();
    Ok(Selected {
        package,
        function,
        description,
        target: target.to_string(),
    })
}

/// Opens each distinct package once; returns the packages and, for each path, its index.
fn open_packages<'a>(
    paths: impl IntoIterator<Item = &'a Path>,
) -> Result<(Vec<Package>, Vec<usize>)> {
    let mut packages = Vec::new();
    let mut by_key: HashMap<PathBuf, usize> = HashMap::new();
    let mut indices = Vec::new();
    for path in paths {
        let key = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        let index = match by_key.entry(key) {
            Entry::Occupied(e) => *e.get(),
            Entry::Vacant(e) => {
                packages.push(Package::open(path)?);
                *e.insert(packages.len() - 1)
            }
        };
        indices.push(index);
    }
    Ok((packages, indices))
}

/// Merges functions of several packages into one multifunction package at `dest`, as
/// coremltools' `save_multifunction` does: one `FunctionDescription` per function in the given
/// order, `default_function` as the default, specification version at least 9 (iOS18). Unlike
/// coremltools, every function keeps its ops exactly as they are (iOS16/17 compressed ops
/// included), every equal blob is shared, and the first source's metadata is kept.
/// `progress(done, total)` counts blobs written.
pub fn merge(
    functions: &[FunctionSource],
    default_function: &str,
    dest: &Path,
    progress: &mut dyn FnMut(usize, usize) -> Result<()>,
) -> Result<MergeStats> {
    if functions.is_empty() {
        return Err(config_err!("no functions to merge"));
    }
    let mut targets = HashSet::new();
    for f in functions {
        if f.target.is_empty() {
            return Err(config_err!("function names must not be empty"));
        }
        if !targets.insert(f.target.as_str()) {
            return Err(config_err!("function {} already exist.", f.target));
        }
    }
    if !targets.contains(default_function) {
        let names: Vec<&str> = functions.iter().map(|f| f.target.as_str()).collect();
        return Err(config_err!(
            "default_function_name {default_function} not found in the program. \
             Available functions names are {names:?}"
        ));
    }
    let (packages, indices) = open_packages(functions.iter().map(|f| f.package.as_path()))?;
    let selected = functions
        .iter()
        .zip(&indices)
        .map(|(f, &i)| select(&packages, i, &f.source, &f.target))
        .collect::<Result<Vec<_>>>()?;
    let layout = Layout::Multi {
        default: default_function.to_string(),
    };
    write_package(&packages, selected, layout, dest, progress)
}

/// Writes function `function` of the package at `input` as a single-function package at `dest`
/// holding only the blobs that function uses. The specification version is the one of the
/// function's opset (so an iOS16 function merged into an iOS18 package comes back as iOS16),
/// raised where its description needs more (states: iOS18; Int8 arrays: iOS26).
pub fn extract(input: &Path, function: &str, dest: &Path) -> Result<MergeStats> {
    let packages = vec![Package::open(input)?];
    let selected = select(&packages, 0, function, "main")?;
    write_package(
        &packages,
        vec![selected],
        Layout::Single,
        dest,
        &mut |_, _| Ok(()),
    )
}

enum Layout {
    Multi { default: String },
    Single,
}

fn has_int8_array(features: &[FeatureDescription]) -> bool {
    features.iter().any(|f| {
        let array = match f.r#type.as_ref().and_then(|t| t.r#type.as_ref()) {
            Some(feature_type::Type::MultiArrayType(a)) => Some(a),
            Some(feature_type::Type::StateType(s)) => s
                .r#type
                .as_ref()
                .map(|state_feature_type::Type::ArrayType(a)| a),
            _ => None,
        };
        array.is_some_and(|a| a.data_type == ArrayDataType::Int8 as i32)
    })
}

/// The specification version of a single-function package holding `f`.
fn single_function_spec_version(container: i32, f: &Function, d: &FunctionDescription) -> i32 {
    let mut version = spec::opset_spec_version(&f.opset).unwrap_or(container);
    if !d.state.is_empty() {
        version = version.max(MULTIFUNCTION_SPEC_VERSION);
    }
    if has_int8_array(&d.input) || has_int8_array(&d.output) || has_int8_array(&d.state) {
        version = version.max(10);
    }
    version
}

/// Calls `f` on every value of a function that may hold a blob: attributes of the function, its
/// blocks and ops, op input bindings, and the values nested in immediate tuples, lists and
/// dictionaries; in a fixed order (maps are sorted).
fn for_each_function_value(function: &mut Function, f: &mut impl FnMut(&mut Value)) {
    fn visit(v: &mut Value, f: &mut impl FnMut(&mut Value)) {
        f(v);
        if let Some(value::Value::ImmediateValue(imm)) = &mut v.value {
            match &mut imm.value {
                Some(immediate_value::Value::Tuple(t)) => {
                    t.values.iter_mut().for_each(|v| visit(v, f))
                }
                Some(immediate_value::Value::List(l)) => {
                    l.values.iter_mut().for_each(|v| visit(v, f))
                }
                Some(immediate_value::Value::Dictionary(d)) => {
                    for kv in &mut d.values {
                        kv.key
                            .iter_mut()
                            .chain(kv.value.iter_mut())
                            .for_each(|v| visit(v, f));
                    }
                }
                _ => {}
            }
        }
    }
    fn block(b: &mut Block, f: &mut impl FnMut(&mut Value)) {
        b.attributes.values_mut().for_each(|v| visit(v, f));
        for op in &mut b.operations {
            op.attributes.values_mut().for_each(|v| visit(v, f));
            for arg in op.inputs.values_mut() {
                for binding in &mut arg.arguments {
                    if let Some(Binding::Value(v)) = &mut binding.binding {
                        visit(v, f);
                    }
                }
            }
            for nested in &mut op.blocks {
                block(nested, f);
            }
        }
    }
    function.attributes.values_mut().for_each(|v| visit(v, f));
    for b in function.block_specializations.values_mut() {
        block(b, f);
    }
}

/// A blob the selected functions use, where it lies in its input's memory map.
struct Stored<'a> {
    file: &'a BlobFile,
    blob: Blob<'a>,
}

impl Stored<'_> {
    /// Bytes the blob takes in a weight file: its metadata and its data, padded to alignment.
    fn stored_bytes(&self) -> u64 {
        METADATA_SIZE + (self.blob.data.len() as u64).next_multiple_of(ALIGNMENT)
    }

    /// A digest of everything that must match for two blobs to be equal except the bytes between
    /// the first and last [`PROBE`] bytes: cheap (at most two pages read), and equal for equal
    /// blobs.
    fn probe(&self) -> [u8; 32] {
        let b = &self.blob;
        let mut h = blake3::Hasher::new();
        h.update(&b.dtype.blob_code().unwrap_or(0).to_le_bytes());
        h.update(&b.padding_bits.to_le_bytes());
        h.update(&(b.data.len() as u64).to_le_bytes());
        let n = b.data.len();
        h.update(&b.data[..n.min(PROBE)]);
        h.update(&b.data[n - n.min(PROBE)..]);
        *h.finalize().as_bytes()
    }

    /// Whether two blobs hold the same element type, padding and bytes. Compares piece by piece
    /// and drops the pages it read, so memory stays bounded whatever the blob sizes.
    fn same(&self, other: &Stored<'_>) -> bool {
        let (a, b) = (&self.blob, &other.blob);
        (a.dtype, a.padding_bits, a.data.len()) == (b.dtype, b.padding_bits, b.data.len())
            && a.data
                .chunks(PIECE)
                .zip(b.data.chunks(PIECE))
                .all(|(x, y)| {
                    let equal = x == y;
                    self.file.release(x);
                    other.file.release(y);
                    equal
                })
    }
}

/// Bytes at each end of a blob that go into its probe digest.
const PROBE: usize = 4096;
/// Bytes compared before the pages read are dropped.
const PIECE: usize = 8 << 20;

/// A blob as a model refers to it: package index, weight file name, metadata offset.
type BlobKey = (usize, String, u64);

/// Finds every blob in `refs` in the memory maps of `packages` (bounds-checked by the reader).
fn locate<'a>(packages: &'a [Package], refs: &[BlobKey]) -> Result<Vec<Stored<'a>>> {
    refs.iter()
        .map(|(pkg, file_name, offset)| {
            let v = value::BlobFileValue {
                file_name: file_name.clone(),
                offset: *offset,
            };
            let (file, blob) = packages[*pkg].blob_in_file(&v)?;
            Ok(Stored { file, blob })
        })
        .collect()
}

/// For each blob, the index of the first blob with the same content (itself when it is the
/// first). Probe digests pair each blob with the first one that may equal it; a full byte
/// comparison decides, and a blob that differs from that candidate is compared with every
/// earlier distinct blob of the same digest.
fn deduplicate(blobs: &[Stored<'_>]) -> Vec<usize> {
    let probes: Vec<[u8; 32]> = blobs.par_iter().map(Stored::probe).collect();
    let mut first_with_probe: HashMap<[u8; 32], usize> = HashMap::new();
    let candidate: Vec<usize> = probes
        .iter()
        .enumerate()
        .map(|(i, p)| *first_with_probe.entry(*p).or_insert(i))
        .collect();
    let confirmed: Vec<bool> = candidate
        .par_iter()
        .enumerate()
        .map(|(i, &c)| c == i || blobs[i].same(&blobs[c]))
        .collect();
    let mut unique_of = candidate;
    let mut distinct_by_probe: HashMap<[u8; 32], Vec<usize>> = HashMap::new();
    for i in 0..blobs.len() {
        let group = distinct_by_probe.entry(probes[i]).or_default();
        if unique_of[i] == i {
            group.push(i);
        } else if !confirmed[i] {
            match group.iter().find(|&&u| blobs[i].same(&blobs[u])) {
                Some(&u) => unique_of[i] = u,
                None => {
                    unique_of[i] = i;
                    group.push(i);
                }
            }
        }
    }
    unique_of
}

fn write_package(
    packages: &[Package],
    mut selected: Vec<Selected>,
    layout: Layout,
    dest: &Path,
    progress: &mut dyn FnMut(usize, usize) -> Result<()>,
) -> Result<MergeStats> {
    // Every blob the selected functions use, in first-use order.
    let mut refs: Vec<BlobKey> = Vec::new();
    let mut ref_index: HashMap<BlobKey, usize> = HashMap::new();
    let mut used_by: Vec<Vec<usize>> = Vec::new();
    for s in &mut selected {
        let mut used = Vec::new();
        for_each_function_value(&mut s.function, &mut |v| {
            if let Some(value::Value::BlobFileValue(b)) = &v.value {
                let key = (s.package, b.file_name.clone(), b.offset);
                let next = refs.len();
                let i = *ref_index.entry(key.clone()).or_insert(next);
                if i == next {
                    refs.push(key);
                }
                used.push(i);
            }
        });
        used_by.push(used);
    }
    let blobs = locate(packages, &refs)?;
    let unique_of = deduplicate(&blobs);

    let mut out = PackageWriter::create(dest, Source::Blobs(packages))?;
    let distinct: Vec<usize> = (0..refs.len()).filter(|&i| unique_of[i] == i).collect();
    let mut new_offset: HashMap<usize, u64> = HashMap::new();
    let mut file_end = 0u64;
    for (n, &u) in distinct.iter().enumerate() {
        let Stored { file, blob } = &blobs[u];
        let offset = out.weights().copy(file, blob)?;
        new_offset.insert(u, offset);
        file_end = offset + METADATA_SIZE + blob.data.len() as u64;
        progress(n + 1, distinct.len())?;
    }

    let mut stats = MergeStats {
        functions: selected.len(),
        blobs_written: distinct.len(),
        weight_file_bytes: file_end,
        ..Default::default()
    };
    for used in &used_by {
        let mut mine: Vec<usize> = used.iter().map(|&i| unique_of[i]).collect();
        mine.sort_unstable();
        mine.dedup();
        stats.blob_references += mine.len();
        if !mine.is_empty() {
            let blobs: u64 = mine.iter().map(|&u| blobs[u].stored_bytes()).sum();
            // The last blob of a file is not padded; count it as written here.
            stats.separate_bytes += HEADER_SIZE + blobs;
        }
    }
    let written: u64 = distinct.iter().map(|&u| blobs[u].stored_bytes()).sum();
    stats.saved_bytes = stats.separate_bytes.saturating_sub(if distinct.is_empty() {
        0
    } else {
        HEADER_SIZE + written
    });

    for s in &mut selected {
        for_each_function_value(&mut s.function, &mut |v| {
            if let Some(value::Value::BlobFileValue(b)) = &mut v.value {
                let i = ref_index[&(s.package, std::mem::take(&mut b.file_name), b.offset)];
                b.offset = new_offset[&unique_of[i]];
                b.file_name = WEIGHT_FILE_NAME.to_string();
            }
        });
    }

    let first = &packages[selected[0].package];
    let metadata = first
        .model
        .description
        .as_ref()
        .and_then(|d| d.metadata.clone());
    let attributes = spec::program(&first.model)?.attributes.clone();
    let model = match layout {
        Layout::Multi { default } => {
            let spec_version = selected
                .iter()
                .map(|s| packages[s.package].model.specification_version)
                .max()
                .unwrap_or(0)
                .max(MULTIFUNCTION_SPEC_VERSION);
            let mut functions = std::collections::BTreeMap::new();
            let mut descriptions = Vec::new();
            for s in selected {
                descriptions.push(s.description);
                functions.insert(s.target, s.function);
            }
            Model {
                specification_version: spec_version,
                description: Some(ModelDescription {
                    functions: descriptions,
                    default_function_name: default,
                    metadata,
                    ..Default::default()
                }),
                is_updatable: false,
                r#type: Some(proto::model::Type::MlProgram(Program {
                    version: 1,
                    functions,
                    doc_string: String::new(),
                    attributes,
                })),
            }
        }
        Layout::Single => {
            let s = selected.pop().expect("one function");
            let container = first.model.specification_version;
            let d = s.description;
            Model {
                specification_version: single_function_spec_version(container, &s.function, &d),
                description: Some(ModelDescription {
                    input: d.input,
                    output: d.output,
                    state: d.state,
                    predicted_feature_name: d.predicted_feature_name,
                    predicted_probabilities_name: d.predicted_probabilities_name,
                    metadata,
                    ..Default::default()
                }),
                is_updatable: false,
                r#type: Some(proto::model::Type::MlProgram(Program {
                    version: 1,
                    functions: [(s.target, s.function)].into_iter().collect(),
                    doc_string: String::new(),
                    attributes,
                })),
            }
        }
    };
    stats.path = out.commit(&model)?;
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compress::example::write_example;
    use crate::format::dtype::DType;
    use crate::mil::tensor::is_blob;

    fn function_source(package: &Path, source: &str, target: &str) -> FunctionSource {
        FunctionSource {
            package: package.to_path_buf(),
            source: source.into(),
            target: target.into(),
        }
    }

    /// (function name, op outputs, blob bytes of each blob value) in a fixed order.
    fn fingerprint(path: &Path) -> Vec<(String, String, Vec<Vec<u8>>)> {
        let p = Package::open(path).unwrap();
        let mut out = Vec::new();
        for name in model_function_names(&p.model) {
            let mut f = spec::program(&p.model).unwrap().functions[&name].clone();
            let mut blobs = Vec::new();
            for_each_function_value(&mut f, &mut |v| {
                if let Some(value::Value::BlobFileValue(b)) = &v.value {
                    blobs.push(p.blob(b).unwrap().data.to_vec());
                }
            });
            let ops = f.block_specializations[&f.opset]
                .operations
                .iter()
                .map(|o| format!("{}:{}", o.r#type, crate::mil::ops::output_name(o)))
                .collect::<Vec<_>>()
                .join(",");
            out.push((name, format!("{}|{ops}", f.opset), blobs));
        }
        out
    }

    fn blob_count(path: &Path) -> usize {
        let p = Package::open(path).unwrap();
        p.weight_files().map(|f| f.offsets().unwrap().len()).sum()
    }

    #[test]
    fn blobs_with_equal_probes_are_compared_in_full() {
        use crate::format::blob::BlobWriter;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("weight.bin");
        let n = 3 * PROBE;
        let base = vec![7u8; n];
        let mut middle = base.clone();
        middle[n / 2] = 8;
        // a, a', m, m', a'', m'' and one of another type with a's bytes
        let contents = [&base, &base, &middle, &middle, &base, &middle];
        let mut w = BlobWriter::create(&path).unwrap();
        let mut offsets: Vec<u64> = contents
            .iter()
            .map(|c| w.append(DType::U8, n as u64, c).unwrap())
            .collect();
        offsets.push(w.append(DType::I8, n as u64, &base).unwrap());
        w.finish().unwrap();
        let file = BlobFile::open(&path).unwrap();
        let blobs: Vec<Stored<'_>> = offsets
            .iter()
            .map(|&o| Stored {
                file: &file,
                blob: file.blob(o).unwrap(),
            })
            .collect();
        assert_eq!(blobs[0].probe(), blobs[2].probe());
        assert_eq!(deduplicate(&blobs), vec![0, 0, 2, 2, 0, 2, 6]);
    }

    #[test]
    fn same_function_twice_shares_every_blob() {
        let dir = tempfile::tempdir().unwrap();
        let src = write_example(&dir.path().join("a.mlpackage")).unwrap();
        let dest = dir.path().join("m.mlpackage");
        let stats = merge(
            &[
                function_source(&src, "main", "first"),
                function_source(&src, "main", "second"),
            ],
            "second",
            &dest,
            &mut |_, _| Ok(()),
        )
        .unwrap();
        assert_eq!(stats.functions, 2);
        assert_eq!(stats.blobs_written, 6);
        assert_eq!(stats.blob_references, 12);
        assert_eq!(blob_count(&dest), 6);
        let src_len = std::fs::metadata(src.join("Data/com.apple.CoreML/weights/weight.bin"))
            .unwrap()
            .len();
        assert_eq!(stats.weight_file_bytes, src_len);
        assert_eq!(stats.separate_bytes - stats.saved_bytes, src_len);

        let merged = Package::open(&dest).unwrap();
        assert_eq!(merged.model.specification_version, 9);
        let d = merged.model.description.as_ref().unwrap();
        assert_eq!(d.default_function_name, "second");
        let names: Vec<_> = d.functions.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["first", "second"]);
        assert!(d.input.is_empty() && d.output.is_empty());
        assert_eq!(d.functions[0].input.len(), 1);
        assert!(d.metadata.is_some(), "the first source's metadata is kept");
        assert_eq!(model_function_names(&merged.model), ["first", "second"]);

        let source_print = fingerprint(&src);
        for (name, ops, blobs) in fingerprint(&dest) {
            assert!(name == "first" || name == "second");
            assert_eq!((&ops, &blobs), (&source_print[0].1, &source_print[0].2));
        }
    }

    #[test]
    fn merged_inputs_and_extraction_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let src = write_example(&dir.path().join("a.mlpackage")).unwrap();
        let first = dir.path().join("m1.mlpackage");
        merge(
            &[
                function_source(&src, "main", "a"),
                function_source(&src, "main", "b"),
            ],
            "a",
            &first,
            &mut |_, _| Ok(()),
        )
        .unwrap();
        // A multifunction input: its functions come from description.functions.
        assert_eq!(function_names(&first).unwrap(), ["a", "b"]);
        let second = dir.path().join("m2.mlpackage");
        let stats = merge(
            &[
                function_source(&first, "b", "b"),
                function_source(&src, "main", "c"),
                function_source(&first, "a", "a"),
            ],
            "c",
            &second,
            &mut |_, _| Ok(()),
        )
        .unwrap();
        assert_eq!(stats.blobs_written, 6);
        assert_eq!(function_names(&second).unwrap(), ["b", "c", "a"]);

        let out = dir.path().join("x.mlpackage");
        let stats = extract(&second, "c", &out).unwrap();
        assert_eq!((stats.functions, stats.blobs_written), (1, 6));
        let x = Package::open(&out).unwrap();
        let d = x.model.description.as_ref().unwrap();
        assert!(d.functions.is_empty() && d.default_function_name.is_empty());
        assert_eq!(d.input.len(), 1);
        assert_eq!(x.model.specification_version, 9);
        assert_eq!(fingerprint(&out), fingerprint(&src));
    }

    #[test]
    fn extraction_keeps_only_the_blobs_of_the_function() {
        let dir = tempfile::tempdir().unwrap();
        let src = write_example(&dir.path().join("a.mlpackage")).unwrap();
        // A second source whose first weight differs: same program, one blob rewritten.
        let other = dir.path().join("b.mlpackage");
        {
            let p = Package::open(&src).unwrap();
            let mut model = p.model.clone();
            let mut out =
                PackageWriter::create(&other, Source::Blobs(std::slice::from_ref(&p))).unwrap();
            let mut first = true;
            let mut copies: HashMap<u64, u64> = HashMap::new();
            spec::for_each_value_mut(spec::program_mut(&mut model).unwrap(), &mut |v| {
                if let Some(value::Value::BlobFileValue(b)) = &mut v.value {
                    let blob = p.blob(b).unwrap();
                    let offset = *copies.entry(b.offset).or_insert_with(|| {
                        let mut data = blob.data.to_vec();
                        if std::mem::take(&mut first) {
                            data[0] ^= 0x55;
                        }
                        out.weights()
                            .append(blob.dtype, blob.element_count(), &data)
                            .unwrap()
                    });
                    b.offset = offset;
                }
            });
            out.commit(&model).unwrap();
        }
        let merged = dir.path().join("m.mlpackage");
        let mut calls = 0;
        let stats = merge(
            &[
                function_source(&src, "main", "base"),
                function_source(&other, "main", "tuned"),
            ],
            "base",
            &merged,
            &mut |done, total| {
                calls += 1;
                assert!(done <= total);
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(stats.blobs_written, 7);
        assert_eq!(calls, 7);
        let x = dir.path().join("x.mlpackage");
        let stats = extract(&merged, "tuned", &x).unwrap();
        assert_eq!(stats.blobs_written, 6);
        assert_eq!(fingerprint(&x), fingerprint(&other));
        assert_eq!(
            fingerprint(&extract_path(&merged, "base", dir.path())),
            fingerprint(&src)
        );
    }

    fn extract_path(merged: &Path, name: &str, dir: &Path) -> PathBuf {
        extract(merged, name, &dir.join(format!("{name}.mlpackage")))
            .unwrap()
            .path
    }

    #[test]
    fn bad_descriptors_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let src = write_example(&dir.path().join("a.mlpackage")).unwrap();
        let dest = dir.path().join("m.mlpackage");
        let err = |fs: &[FunctionSource], default: &str| {
            merge(fs, default, &dest, &mut |_, _| Ok(()))
                .unwrap_err()
                .to_string()
        };
        assert!(err(&[], "main").contains("no functions"));
        let twice = [
            function_source(&src, "main", "a"),
            function_source(&src, "main", "a"),
        ];
        assert_eq!(err(&twice, "a"), "function a already exist.");
        let one = [function_source(&src, "main", "a")];
        assert!(err(&one, "zzz").contains("default_function_name zzz not found"));
        let missing = [function_source(&src, "nope", "a")];
        assert!(err(&missing, "a").contains("src_function_name nope not found"));
        assert!(extract(&src, "nope", &dest).is_err());
        assert!(!dest.exists());
    }

    #[test]
    fn spec_version_of_an_extracted_function_follows_its_opset() {
        let f = |opset: &str| Function {
            opset: opset.into(),
            ..Default::default()
        };
        let d = FunctionDescription::default();
        assert_eq!(single_function_spec_version(9, &f("CoreML6"), &d), 7);
        assert_eq!(single_function_spec_version(9, &f("CoreML8"), &d), 9);
        assert_eq!(single_function_spec_version(9, &f("Custom"), &d), 9);
        let mut stateful = d.clone();
        stateful.state.push(FeatureDescription::default());
        assert_eq!(single_function_spec_version(9, &f("CoreML7"), &stateful), 9);
    }

    #[test]
    fn every_blob_value_is_visited() {
        let dir = tempfile::tempdir().unwrap();
        let src = write_example(&dir.path().join("a.mlpackage")).unwrap();
        let p = Package::open(&src).unwrap();
        let mut f = spec::program(&p.model).unwrap().functions["main"].clone();
        let mut n = 0;
        for_each_function_value(&mut f, &mut |v| n += is_blob(v) as usize);
        assert_eq!(n, 6);
    }
}
