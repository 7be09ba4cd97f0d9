//! The bytes of a `.mlpackage`: Manifest.json, the Model protobuf and weight.bin. Nothing here
//! knows about compression or Python.

pub mod blob;
pub mod commit;
pub mod dtype;
pub mod manifest;
pub mod package;
pub mod spec;

use std::fs::File;
use std::io::Read;
use std::path::Path;

use crate::error::{Error, Result};

/// Opens a file of a package for reading, following symlinks (packages in a Hugging Face cache
/// are links into a blob store), and returns it with its length. What the path leads to must be
/// a regular file: it is checked before opening, since opening a FIFO blocks until a writer
/// comes, and again on the opened file.
pub fn open_regular(path: &Path) -> Result<(File, u64)> {
    let not_regular = |kind: std::fs::FileType| {
        let what = if kind.is_dir() {
            "a directory"
        } else {
            "a FIFO, socket or device"
        };
        crate::format_err!("{}: not a regular file (it is {what})", path.display())
    };
    let kind = std::fs::metadata(path)
        .map_err(|e| Error::io(path, e))?
        .file_type();
    if !kind.is_file() {
        return Err(not_regular(kind));
    }
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let meta = file.metadata().map_err(|e| Error::io(path, e))?;
    if !meta.is_file() {
        return Err(not_regular(meta.file_type()));
    }
    Ok((file, meta.len()))
}

/// Reads a whole regular file (see [`open_regular`]), never more than its length when opened.
pub fn read_regular(path: &Path) -> Result<Vec<u8>> {
    let (file, len) = open_regular(path)?;
    let mut bytes = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    file.take(len)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io(path, e))?;
    Ok(bytes)
}
