//! Open and save with nothing changed: the base every pass builds on, and a check of the format
//! layer against coremltools.

use std::path::{Path, PathBuf};

use crate::compress::rewrite;
use crate::error::Result;
use crate::format::package::{Package, PackageWriter};

pub fn save_unchanged(input: &Path, output: &Path) -> Result<PathBuf> {
    let package = Package::open(input)?;
    let out = PackageWriter::create(output, Some(&package))?;
    rewrite::finish(&package, package.model.clone(), out)
}
