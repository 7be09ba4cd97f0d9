//! A `.mlpackage` directory: opened read-only (weights memory-mapped), and written in a work
//! directory beside its destination that is moved into place only when complete (`commit.rs`).

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::format::blob::{Blob, BlobFile, BlobWriter};
use crate::format::commit::{check_destination, crash_point, WorkDir};
use crate::format::dtype::DType;
use crate::format::manifest::{safe_relative, Manifest};
use crate::format::read_regular;
use crate::format::spec::proto::mil_spec::{
    argument::binding::Binding, dimension::Dimension, value::BlobFileValue, value_type, Block,
    Program, TensorType, ValueType,
};
use crate::format::spec::{self, Model};
use crate::format_err;

/// What `BlobFileValue.fileName` holds for the package's own weight file.
pub const WEIGHT_FILE_NAME: &str = "@model_path/weights/weight.bin";

pub struct Package {
    pub root: PathBuf,
    pub manifest: Manifest,
    pub model: Model,
    /// Weight files by the `fileName` the model uses for them.
    weights: BTreeMap<String, BlobFile>,
}

fn data_dir(root: &Path) -> PathBuf {
    root.join("Data")
}

impl Package {
    pub fn open(root: impl AsRef<Path>) -> Result<Self> {
        let root = root.as_ref().to_path_buf();
        if !root.is_dir() {
            return Err(if root.exists() {
                format_err!("{}: not a .mlpackage directory", root.display())
            } else {
                Error::io(
                    &root,
                    std::io::Error::new(std::io::ErrorKind::NotFound, "no such package directory"),
                )
            });
        }
        let manifest_path = root.join("Manifest.json");
        let text = read_regular(&manifest_path)?;
        let manifest = Manifest::parse(&text, &manifest_path.display().to_string())?;
        let model_path = data_dir(&root).join(&manifest.root_model);
        let bytes = read_regular(&model_path)?;
        let origin = model_path.display().to_string();
        let mut model = spec::decode_model(&bytes, &origin)?;
        check_declared_shapes(spec::program(&model)?, &origin)?;

        let weights_dir = match &manifest.weights_dir {
            Some(dir) => data_dir(&root).join(dir),
            None => model_path.parent().unwrap_or(&root).join("weights"),
        };
        // Every blob reference: (file name, offset, the value's declared dtype and shape).
        let mut refs = Vec::new();
        spec::for_each_value_mut(spec::program_mut(&mut model)?, &mut |v| {
            if let Some(spec::proto::mil_spec::value::Value::BlobFileValue(b)) = &v.value {
                let declared = match v.r#type.as_ref().and_then(|t| t.r#type.as_ref()) {
                    Some(spec::proto::mil_spec::value_type::Type::TensorType(t)) => {
                        DType::from_proto(t.data_type).zip(static_shape(t))
                    }
                    _ => None,
                };
                refs.push((b.file_name.clone(), b.offset, declared));
            }
        });
        let mut weights = BTreeMap::new();
        for (name, _, _) in &refs {
            if weights.contains_key(name) {
                continue;
            }
            let base = name.rsplit('/').next().unwrap_or_default();
            let rel = safe_relative(base, &format!("{}: weight file", model_path.display()))?;
            weights.insert(name.clone(), BlobFile::open(&weights_dir.join(rel))?);
        }
        // Check every referenced blob up front (bounds, sentinel, and that it holds the type and
        // element count the value declares), so that no door — not even a plain copy — passes a
        // malformed blob on.
        for (name, offset, declared) in &refs {
            let file = &weights[name];
            let blob = file.blob(*offset)?;
            let what = file.path().display().to_string();
            let Some((dtype, shape)) = declared else {
                return Err(format_err!(
                    "{what}: the value stored at offset {offset} is not a tensor with a static shape"
                ));
            };
            blob.check_holds(*offset, *dtype, shape, &what)?;
        }
        Ok(Package {
            root,
            manifest,
            model,
            weights,
        })
    }

    /// The blob a model value refers to.
    pub fn blob(&self, value: &BlobFileValue) -> Result<Blob<'_>> {
        self.blob_in_file(value).map(|(_, blob)| blob)
    }

    /// The blob a model value refers to, with the weight file that holds it.
    pub fn blob_in_file(&self, value: &BlobFileValue) -> Result<(&BlobFile, Blob<'_>)> {
        let file = self.weights.get(&value.file_name).ok_or_else(|| {
            format_err!(
                "{}: no weight file {:?}",
                self.root.display(),
                value.file_name
            )
        })?;
        Ok((file, file.blob(value.offset)?))
    }

    /// Releases the resident pages of every weight file (see [`BlobFile::release_pages`]).
    pub fn release_pages(&self) {
        self.weights.values().for_each(BlobFile::release_pages);
    }

    pub fn weight_files(&self) -> impl Iterator<Item = &BlobFile> {
        self.weights.values()
    }
}

/// The shape of a tensor type whose every dimension is a constant; None otherwise.
fn static_shape(t: &TensorType) -> Option<Vec<usize>> {
    t.dimensions
        .iter()
        .map(|d| match d.dimension {
            Some(Dimension::Constant(c)) => usize::try_from(c.size).ok(),
            _ => None,
        })
        .collect()
}

/// Refuses any tensor type of the program (values, op outputs, function and block inputs) whose
/// static shape has too many elements to count, so that every later count of a declared shape
/// is a product that fits.
fn check_declared_shapes(program: &Program, origin: &str) -> Result<()> {
    fn check(t: Option<&ValueType>, origin: &str, what: &dyn Fn() -> String) -> Result<()> {
        let Some(value_type::Type::TensorType(t)) = t.and_then(|t| t.r#type.as_ref()) else {
            return Ok(());
        };
        let too_large = || format_err!("{origin}: {}: tensor shape is too large", what());
        let shape: Vec<usize> = t
            .dimensions
            .iter()
            .filter_map(|d| match d.dimension {
                Some(Dimension::Constant(c)) => Some(usize::try_from(c.size).map_err(|_| ())),
                _ => None,
            })
            .collect::<std::result::Result<_, ()>>()
            .map_err(|()| too_large())?;
        crate::kernels::numel(&shape).map_err(|e| format_err!("{origin}: {}: {e}", what()))?;
        Ok(())
    }
    fn block(b: &Block, origin: &str) -> Result<()> {
        for input in &b.inputs {
            check(input.r#type.as_ref(), origin, &|| {
                format!("block input {}", input.name)
            })?;
        }
        for op in &b.operations {
            let name = || {
                op.outputs
                    .first()
                    .map_or("", |o| o.name.as_str())
                    .to_string()
            };
            for output in &op.outputs {
                check(output.r#type.as_ref(), origin, &|| {
                    format!("output {}", output.name)
                })?;
            }
            let values = op
                .attributes
                .values()
                .chain(op.inputs.values().flat_map(|a| {
                    a.arguments.iter().filter_map(|b| match &b.binding {
                        Some(Binding::Value(v)) => Some(v),
                        _ => None,
                    })
                }));
            for v in values {
                check(v.r#type.as_ref(), origin, &|| {
                    format!("a value of op {}", name())
                })?;
            }
            for nested in &op.blocks {
                block(nested, origin)?;
            }
        }
        Ok(())
    }
    for (name, function) in &program.functions {
        for input in &function.inputs {
            check(input.r#type.as_ref(), origin, &|| {
                format!("input {} of function {name}", input.name)
            })?;
        }
        for b in function.block_specializations.values() {
            block(b, origin)?;
        }
    }
    Ok(())
}

/// What a new package is made from; its input packages, which the destination must not be, lie
/// inside or contain ([`check_destination`]).
pub enum Source<'a> {
    /// A package derived from this one: its files other than the model and the weights are
    /// carried over, and its manifest is kept.
    Package(&'a Package),
    /// A package made from blobs of these packages (none for one made from nothing).
    Blobs(&'a [Package]),
}

/// A scratch directory beside a destination, for intermediate packages; removed when dropped.
pub struct ScratchDir(WorkDir);

impl ScratchDir {
    /// Refuses `dest` as [`PackageWriter::create`] would for `input`, then makes the directory.
    pub fn beside(dest: &Path, input: &Path) -> Result<Self> {
        check_destination(dest, &[input])?;
        WorkDir::beside(dest, "scratch").map(ScratchDir)
    }

    pub fn path(&self) -> &Path {
        self.0.path()
    }
}

/// A package being written in a work directory beside its destination. Nothing appears at the
/// destination until [`PackageWriter::commit`]; dropping the writer removes the work directory.
pub struct PackageWriter {
    dest: PathBuf,
    work: WorkDir,
    temp: PathBuf,
    manifest: Manifest,
    weights: Option<BlobWriter>,
    weights_path: PathBuf,
}

impl PackageWriter {
    /// Starts a package at `dest`, after refusing a destination that would destroy an input or
    /// something that is not a package ([`check_destination`]).
    pub fn create(dest: impl AsRef<Path>, source: Source<'_>) -> Result<Self> {
        let dest = dest.as_ref().to_path_buf();
        let inputs: Vec<&Path> = match &source {
            Source::Package(src) => vec![src.root.as_path()],
            Source::Blobs(packages) => packages.iter().map(|p| p.root.as_path()).collect(),
        };
        check_destination(&dest, &inputs)?;
        let work = WorkDir::beside(&dest, "tmp")?;
        let temp = work.new_package();
        fs::create_dir(&temp).map_err(|e| Error::io(&temp, e))?;
        let manifest = match source {
            Source::Package(src) => src.manifest.clone(),
            Source::Blobs(_) => Manifest::new_default(dest.to_string_lossy().as_bytes()),
        };
        let mut writer = PackageWriter {
            dest,
            work,
            temp,
            weights: None,
            weights_path: PathBuf::new(),
            manifest,
        };
        let model_rel = writer.manifest.root_model.clone();
        let weights_rel = writer.weights_rel();
        if let Source::Package(src) = source {
            let skip = [
                src.root.join("Manifest.json"),
                data_dir(&src.root).join(&model_rel),
                data_dir(&src.root).join(&weights_rel),
            ];
            copy_tree(&src.root, &writer.temp, &skip)?;
        }
        let weights_dir = data_dir(&writer.temp).join(&weights_rel);
        fs::create_dir_all(&weights_dir).map_err(|e| Error::io(&weights_dir, e))?;
        writer.weights_path = weights_dir.join("weight.bin");
        writer.weights = Some(BlobWriter::create(&writer.weights_path)?);
        Ok(writer)
    }

    fn weights_rel(&self) -> PathBuf {
        self.manifest.weights_dir.clone().unwrap_or_else(|| {
            self.manifest
                .root_model
                .parent()
                .unwrap_or(Path::new(""))
                .join("weights")
        })
    }

    /// The weight file being written; values that refer to it use [`WEIGHT_FILE_NAME`].
    pub fn weights(&mut self) -> &mut BlobWriter {
        self.weights
            .as_mut()
            .expect("weights are open until commit")
    }

    /// Writes the model and manifest and moves the package into place, replacing an old package
    /// there in one atomic step ([`WorkDir::put_in_place`]); the work directory, holding what was
    /// replaced, is removed when the writer drops.
    pub fn commit(mut self, model: &Model) -> Result<PathBuf> {
        let weights = self.weights.take().expect("weights are open until commit");
        let blob_count = weights.count();
        weights.finish()?;
        if blob_count == 0 {
            // coremltools leaves an empty weights directory when no value needs the blob file.
            fs::remove_file(&self.weights_path).map_err(|e| Error::io(&self.weights_path, e))?;
        }
        let model_path = data_dir(&self.temp).join(&self.manifest.root_model);
        if let Some(dir) = model_path.parent() {
            fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        write_file(&model_path, &spec::encode_model(model))?;
        write_file(&self.temp.join("Manifest.json"), &self.manifest.to_bytes())?;
        crash_point("package-written");
        self.work.put_in_place(&self.dest)?;
        Ok(self.dest.clone())
    }
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    fs::write(path, bytes).map_err(|e| Error::io(path, e))
}

/// Copies regular files and directories from `from` to `to`, except the paths in `skip`.
/// Links are refused: following one could read outside the package.
fn copy_tree(from: &Path, to: &Path, skip: &[PathBuf]) -> Result<()> {
    for entry in fs::read_dir(from).map_err(|e| Error::io(from, e))? {
        let entry = entry.map_err(|e| Error::io(from, e))?;
        let src = entry.path();
        if skip.contains(&src) {
            continue;
        }
        let dst = to.join(entry.file_name());
        let kind = entry.file_type().map_err(|e| Error::io(&src, e))?;
        if kind.is_dir() {
            fs::create_dir_all(&dst).map_err(|e| Error::io(&dst, e))?;
            copy_tree(&src, &dst, skip)?;
        } else if kind.is_file() {
            fs::copy(&src, &dst).map_err(|e| Error::io(&src, e))?;
        } else {
            return Err(format_err!(
                "{}: links are not allowed inside a package",
                src.display()
            ));
        }
    }
    Ok(())
}
