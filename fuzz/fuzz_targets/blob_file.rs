//! weight.bin reading: any file gives blobs or errors, never a panic, and every blob's data lies
//! inside the file and holds a whole number of elements.
#![no_main]

use coreml_compress::format::blob::BlobFile;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = std::env::temp_dir().join(format!("coreml-compress-fuzz-{}.bin", std::process::id()));
    std::fs::write(&path, data).expect("the temporary weight file is written");
    if let Ok(file) = BlobFile::open(&path) {
        if let Ok(offsets) = file.offsets() {
            for offset in offsets {
                let blob = file.blob(offset).expect("a listed blob reads");
                let count = blob.element_count() as usize;
                let _ = blob.check_holds(offset, blob.dtype, &[count], "fuzz");
                let _ = blob.check_holds(offset, blob.dtype, &[2, usize::MAX / 2 + 1], "fuzz");
            }
        }
        // Offsets that no walk produced must fail cleanly too.
        for offset in [64, 128, u64::MAX - 63, data.len() as u64] {
            let _ = file.blob(offset);
        }
    }
});
