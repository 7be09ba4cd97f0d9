//! weight.bin, the MILBlob storage format v2: a 64-byte header, then for each blob a 64-byte
//! metadata record at a 64-aligned offset immediately followed by its data. All little-endian.
//!
//! The reader works over a memory map and bounds-checks every offset and size before slicing;
//! the writer streams blobs to disk as they are produced.

use std::fs::File;
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use memmap2::Mmap;
#[cfg(linux_syscalls)]
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::format::dtype::DType;
use crate::format_err;

pub const HEADER_SIZE: u64 = 64;
pub const METADATA_SIZE: u64 = 64;
pub const ALIGNMENT: u64 = 64;
pub const SENTINEL: u32 = 0xDEAD_BEEF;
pub const VERSION: u32 = 2;

/// One blob as stored: its element type, its packed bytes and the unused bits at the end.
#[derive(Clone, Copy, Debug)]
pub struct Blob<'a> {
    pub dtype: DType,
    pub data: &'a [u8],
    pub padding_bits: u64,
}

/// A multiple of every page size in use (4, 16 or 64 KiB): page advice is rounded outwards to it.
const PAGE_GRAIN: usize = 64 << 10;

/// A read-only, memory-mapped weight file.
pub struct BlobFile {
    path: PathBuf,
    map: Option<Mmap>,
    /// The open file, for copying blobs kernel-side (see [`BlobWriter::copy`]).
    file: Mutex<File>,
}

fn read_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

fn read_u64(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
}

impl BlobFile {
    /// Maps `path` and checks its storage header.
    pub fn open(path: &Path) -> Result<Self> {
        let (file, len) = super::open_regular(path)?;
        // Mapping an empty file fails on some systems; an empty file has no valid header anyway.
        let map = if len == 0 {
            None
        } else {
            // SAFETY: the map is read-only; a package's weight file is not expected to change
            // while it is being read, and every access below is bounds-checked against its length.
            Some(unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?)
        };
        let blobs = BlobFile {
            path: path.to_path_buf(),
            map,
            file: Mutex::new(file),
        };
        blobs.check_header()?;
        Ok(blobs)
    }

    /// The whole file, as mapped.
    pub fn bytes(&self) -> &[u8] {
        self.map.as_deref().unwrap_or(&[])
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn check_header(&self) -> Result<()> {
        let bytes = self.bytes();
        if (bytes.len() as u64) < HEADER_SIZE {
            return Err(format_err!(
                "{}: weight file is {} bytes, shorter than its 64-byte storage header",
                self.path.display(),
                bytes.len()
            ));
        }
        let version = read_u32(bytes, 4);
        if version != VERSION {
            return Err(format_err!(
                "{}: weight file has storage version {version}; only version 2 is supported",
                self.path.display()
            ));
        }
        Ok(())
    }

    /// Drops this process's mapping of the pages read so far (they stay in the page cache), so
    /// that reading a large weight file does not pile up resident memory. Later reads fault the
    /// pages back in.
    pub fn release_pages(&self) {
        if let Some(map) = &self.map {
            // SAFETY: the map is private and read-only and the file is not modified while it is
            // open, so discarding pages only means they are read again from the file on access.
            let _ = unsafe { map.unchecked_advise(memmap2::UncheckedAdvice::DontNeed) };
        }
    }

    /// Like [`BlobFile::release_pages`], for the pages under `part`, a slice of this file's
    /// bytes (for example a blob's data); parts outside the mapping are ignored.
    pub fn release(&self, part: &[u8]) {
        let Some((map, pages)) = self.pages_under(part) else {
            return;
        };
        // SAFETY: as in `release_pages`.
        let _ = unsafe {
            map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, pages.start, pages.len())
        };
    }

    /// Maps the pages under `part` (a slice of this file's bytes) into the process in one call,
    /// before a kernel reads them all: cheaper than one page fault per few pages. A hint only:
    /// ignored where the kernel cannot do it (before Linux 5.14, other systems).
    pub fn prefault(&self, part: &[u8]) {
        #[cfg(linux_syscalls)]
        if let Some((map, pages)) = self.pages_under(part) {
            // In pieces on the thread pool: mapping pages is per-thread work that parallelizes.
            const PIECE: usize = 4 << 20;
            (0..pages.len().div_ceil(PIECE))
                .into_par_iter()
                .for_each(|piece| {
                    let at = pages.start + piece * PIECE;
                    let len = PIECE.min(pages.end - at);
                    let _ = map.advise_range(memmap2::Advice::PopulateRead, at, len);
                });
        }
        #[cfg(not(linux_syscalls))]
        let _ = part;
    }

    /// The mapping and the pages under `part`, rounded outwards to [`PAGE_GRAIN`] within it;
    /// None for an empty part or memory outside the mapping.
    fn pages_under(&self, part: &[u8]) -> Option<(&Mmap, std::ops::Range<usize>)> {
        let (map, at) = (self.map.as_ref()?, self.offset_of(part)?);
        if part.is_empty() {
            return None;
        }
        let from = at / PAGE_GRAIN * PAGE_GRAIN;
        let to = (at + part.len())
            .next_multiple_of(PAGE_GRAIN)
            .min(map.len());
        Some((map, from..to))
    }

    /// Where `part`, a slice of this file's bytes, starts in the file; None for other memory.
    fn offset_of(&self, part: &[u8]) -> Option<usize> {
        let bytes = self.bytes().as_ptr_range();
        let part_range = part.as_ptr_range();
        (bytes.start <= part_range.start && part_range.end <= bytes.end)
            .then(|| part_range.start as usize - bytes.start as usize)
    }

    /// The number of blobs the header declares.
    pub fn declared_count(&self) -> u32 {
        read_u32(self.bytes(), 0)
    }

    /// The blob whose metadata record starts at `offset` (the offset a `BlobFileValue` holds).
    pub fn blob(&self, offset: u64) -> Result<Blob<'_>> {
        let bytes = self.bytes();
        let file_len = bytes.len() as u64;
        let here = || format!("{}: blob at offset {offset}", self.path.display());
        if offset < HEADER_SIZE || offset % ALIGNMENT != 0 {
            return Err(format_err!(
                "{}: offset is not a 64-aligned position after the header",
                here()
            ));
        }
        let meta_end = offset
            .checked_add(METADATA_SIZE)
            .filter(|&end| end <= file_len)
            .ok_or_else(|| {
                format_err!(
                    "{}: metadata extends past the end of the file ({file_len} bytes)",
                    here()
                )
            })?;
        let meta = &bytes[offset as usize..meta_end as usize];
        let sentinel = read_u32(meta, 0);
        if sentinel != SENTINEL {
            return Err(format_err!(
                "{}: wrong sentinel {sentinel:#010x} (expected 0xdeadbeef)",
                here()
            ));
        }
        let code = read_u32(meta, 4);
        let dtype = DType::from_blob_code(code)
            .ok_or_else(|| format_err!("{}: unknown blob data type code {code}", here()))?;
        let size = read_u64(meta, 8);
        let data_offset = read_u64(meta, 16);
        let padding_bits = read_u64(meta, 24);
        if data_offset < meta_end {
            return Err(format_err!(
                "{}: data offset {data_offset} points into the metadata",
                here()
            ));
        }
        let data_end = data_offset.checked_add(size).filter(|&end| end <= file_len).ok_or_else(|| {
            format_err!(
                "{}: data of {size} bytes at offset {data_offset} extends past the end of the file ({file_len} bytes)",
                here()
            )
        })?;
        let bits = dtype.bits().expect("blob types have a width") as u64;
        if bits < 8 {
            if padding_bits >= 8 || padding_bits > size * 8 || (size * 8 - padding_bits) % bits != 0
            {
                return Err(format_err!(
                    "{}: {} blob of {size} bytes has an invalid padding of {padding_bits} bits",
                    here(),
                    dtype.name()
                ));
            }
        } else if padding_bits != 0 || size % (bits / 8) != 0 {
            return Err(format_err!(
                "{}: {} blob of {size} bytes is not a whole number of elements",
                here(),
                dtype.name()
            ));
        }
        Ok(Blob {
            dtype,
            data: &bytes[data_offset as usize..data_end as usize],
            padding_bits,
        })
    }

    /// Every blob in file order, found by walking from the header as the Core ML reader does.
    pub fn offsets(&self) -> Result<Vec<u64>> {
        let mut offsets = Vec::new();
        let mut at = HEADER_SIZE;
        let len = self.bytes().len() as u64;
        while at < len {
            let blob = self.blob(at)?;
            offsets.push(at);
            let data_start = self.offset_of(blob.data).expect("a blob of this file") as u64;
            at = (data_start + blob.data.len() as u64).next_multiple_of(ALIGNMENT);
        }
        Ok(offsets)
    }
}

impl Blob<'_> {
    /// Element count implied by the size and padding.
    pub fn element_count(&self) -> u64 {
        let bits = self.dtype.bits().expect("blob types have a width") as u64;
        (self.data.len() as u64 * 8 - self.padding_bits) / bits
    }

    /// Checks that this blob, at `offset`, holds a tensor of the declared `dtype` and `shape`
    /// (bool tensors are stored as uint8; sub-byte elements are counted at their width). `what`
    /// names the value in the message.
    pub fn check_holds(
        &self,
        offset: u64,
        dtype: DType,
        shape: &[usize],
        what: &str,
    ) -> Result<()> {
        if self.dtype != dtype && !(self.dtype == DType::U8 && dtype == DType::Bool) {
            return Err(format_err!(
                "{what}: blob at offset {offset} holds {} data but the value is {}",
                self.dtype.name(),
                dtype.name()
            ));
        }
        let count = crate::kernels::numel(shape).map_err(|e| format_err!("{what}: {e}"))?;
        if self.element_count() != count as u64 {
            return Err(format_err!(
                "{what}: blob at offset {offset} holds {} elements but the value's shape {shape:?} has {count}",
                self.element_count(),
            ));
        }
        Ok(())
    }
}

/// Streams blobs into a new weight file. The header's count is written on [`BlobWriter::finish`].
pub struct BlobWriter {
    path: PathBuf,
    out: BufWriter<File>,
    position: u64,
    count: u32,
}

impl BlobWriter {
    pub fn create(path: &Path) -> Result<Self> {
        let file = File::create(path).map_err(|e| Error::io(path, e))?;
        let mut out = BufWriter::with_capacity(1 << 20, file);
        let mut header = [0u8; HEADER_SIZE as usize];
        header[4..8].copy_from_slice(&VERSION.to_le_bytes());
        out.write_all(&header).map_err(|e| Error::io(path, e))?;
        Ok(BlobWriter {
            path: path.to_path_buf(),
            out,
            position: HEADER_SIZE,
            count: 0,
        })
    }

    /// Appends `count` elements of `dtype` already packed in `data`; returns the metadata offset.
    pub fn append(&mut self, dtype: DType, count: u64, data: &[u8]) -> Result<u64> {
        let meta_offset = self.start_blob(dtype, count, data.len() as u64)?;
        self.out
            .write_all(data)
            .map_err(|e| Error::io(&self.path, e))?;
        Ok(meta_offset)
    }

    /// Copies `blob`, read from `source`, unchanged. On Linux the data goes file to file inside
    /// the kernel (`std::io::copy` uses `copy_file_range` between files), which avoids faulting
    /// the source pages into this process and copying them through user space; elsewhere, and in
    /// `portable` builds, it is a read/write loop.
    pub fn copy(&mut self, source: &BlobFile, blob: &Blob<'_>) -> Result<u64> {
        let at = source.offset_of(blob.data).ok_or_else(|| {
            format_err!("internal: blob to copy is not in {}", source.path.display())
        })?;
        let len = blob.data.len() as u64;
        let meta_offset = self.start_blob(blob.dtype, blob.element_count(), len)?;
        let mut file = source.file.lock().unwrap_or_else(|e| e.into_inner());
        file.seek(SeekFrom::Start(at as u64))
            .map_err(|e| Error::io(&source.path, e))?;
        let source_part = (&mut *file).take(len);
        #[cfg(not(linux_syscalls))]
        let source_part = ReadOnly(source_part);
        let copied = std::io::copy(&mut { source_part }, &mut self.out)
            .map_err(|e| Error::io(&self.path, e))?;
        if copied != len {
            return Err(format_err!(
                "{}: blob data ends after {copied} of {len} bytes (file changed while open?)",
                source.path.display()
            ));
        }
        Ok(meta_offset)
    }

    /// Writes the alignment gap and the metadata record of a blob of `count` elements of `dtype`
    /// whose `len` data bytes follow; returns the metadata offset.
    fn start_blob(&mut self, dtype: DType, count: u64, len: u64) -> Result<u64> {
        let code = dtype.blob_code().ok_or_else(|| {
            format_err!("{} tensors cannot be stored in weight.bin", dtype.name())
        })?;
        let bits = dtype.bits().expect("blob types have a width") as u64;
        let expected = (count * bits).div_ceil(8);
        if len != expected {
            return Err(format_err!(
                "internal: {count} {} elements need {expected} bytes, got {len}",
                dtype.name(),
            ));
        }
        let padding_bits = expected * 8 - count * bits;
        let io = |e| Error::io(&self.path, e);
        // The gap before a blob is zero-filled; the file ends at the last blob's data.
        let meta_offset = self.position.next_multiple_of(ALIGNMENT);
        let gap = (meta_offset - self.position) as usize;
        self.out
            .write_all(&[0u8; ALIGNMENT as usize][..gap])
            .map_err(io)?;
        let mut meta = [0u8; METADATA_SIZE as usize];
        meta[0..4].copy_from_slice(&SENTINEL.to_le_bytes());
        meta[4..8].copy_from_slice(&code.to_le_bytes());
        meta[8..16].copy_from_slice(&expected.to_le_bytes());
        meta[16..24].copy_from_slice(&(meta_offset + METADATA_SIZE).to_le_bytes());
        meta[24..32].copy_from_slice(&padding_bits.to_le_bytes());
        self.out.write_all(&meta).map_err(io)?;
        self.position = meta_offset + METADATA_SIZE + expected;
        self.count += 1;
        Ok(meta_offset)
    }

    pub fn count(&self) -> u32 {
        self.count
    }

    /// Writes the blob count into the header and flushes.
    pub fn finish(mut self) -> Result<()> {
        let path = self.path.clone();
        let io = |e| Error::io(&path, e);
        self.out.flush().map_err(io)?;
        let mut file = self
            .out
            .into_inner()
            .map_err(|e| Error::io(&path, e.into_error()))?;
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        // No fsync: like coremltools, leave write-back to the OS (it dominated large writes).
        file.write_all(&self.count.to_le_bytes()).map_err(io)?;
        Ok(())
    }
}

/// A reader seen only as `Read`, so that `std::io::copy` cannot specialize a file-to-file copy
/// into a Linux system call: what other platforms do, for `portable` builds.
#[cfg(not(linux_syscalls))]
struct ReadOnly<R>(R);

#[cfg(not(linux_syscalls))]
impl<R: Read> Read for ReadOnly<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.read(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(blobs: &[(DType, u64, Vec<u8>)]) -> (tempfile::TempDir, PathBuf, Vec<u64>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("weight.bin");
        let mut w = BlobWriter::create(&path).unwrap();
        let offsets = blobs
            .iter()
            .map(|(d, n, b)| w.append(*d, *n, b).unwrap())
            .collect();
        w.finish().unwrap();
        (dir, path, offsets)
    }

    #[test]
    fn layout_matches_milblob_v2() {
        // An fp16 [64,128] tensor then an fp16 [64] tensor: 64 + 64 + 16384 + 64 + 128 bytes.
        let (_d, path, offsets) = write(&[
            (DType::F16, 8192, vec![1; 16384]),
            (DType::F16, 64, vec![2; 128]),
        ]);
        assert_eq!(offsets, vec![64, 16512]);
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(bytes.len(), 16704);
        assert_eq!(&bytes[0..8], &[2, 0, 0, 0, 2, 0, 0, 0]);
        let f = BlobFile::open(&path).unwrap();
        assert_eq!(f.offsets().unwrap(), offsets);
        let b = f.blob(64).unwrap();
        assert_eq!(
            (b.dtype, b.data.len(), b.element_count()),
            (DType::F16, 16384, 8192)
        );
    }

    #[test]
    fn sub_byte_padding_is_recorded() {
        let (_d, path, offsets) =
            write(&[(DType::I4, 4083, vec![0; 2042]), (DType::U3, 3, vec![0; 2])]);
        let f = BlobFile::open(&path).unwrap();
        let b = f.blob(offsets[0]).unwrap();
        assert_eq!((b.padding_bits, b.element_count()), (4, 4083));
        let b = f.blob(offsets[1]).unwrap();
        assert_eq!((b.padding_bits, b.element_count()), (7, 3));
    }

    #[test]
    fn malformed_files_give_errors() {
        let (_d, path, _) = write(&[(DType::F32, 16, vec![0; 64])]);
        let good = std::fs::read(&path).unwrap();
        let check = |bytes: &[u8], offset: u64, needle: &str| {
            std::fs::write(&path, bytes).unwrap();
            let err = BlobFile::open(&path).and_then(|f| f.blob(offset).map(|_| ()));
            let msg = err.expect_err("malformed input must fail").to_string();
            assert!(msg.contains(needle), "{msg:?} lacks {needle:?}");
        };
        check(&good[..10], 64, "shorter than");
        check(&good[..100], 64, "past the end");
        let mut bad = good.clone();
        bad[64] ^= 1;
        check(&bad, 64, "sentinel");
        let mut bad = good.clone();
        bad[64 + 8..64 + 16].copy_from_slice(&u64::MAX.to_le_bytes());
        check(&bad, 64, "past the end");
        let mut bad = good.clone();
        bad[4] = 3;
        check(&bad, 64, "version 3");
        check(&good, 1 << 40, "past the end");
        check(&good, u64::MAX - 63, "past the end");
        check(&good, 65, "64-aligned");
        let mut bad = good.clone();
        bad[64 + 4] = 99;
        check(&bad, 64, "unknown blob data type");
    }
}
