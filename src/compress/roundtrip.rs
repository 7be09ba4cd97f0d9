//! Open and save with nothing changed: the base every pass builds on, and a check of the format
//! layer against coremltools.

use std::path::{Path, PathBuf};

use crate::compress::rewrite;
use crate::error::Result;
use crate::format::package::{Package, PackageWriter, Source};

pub fn save_unchanged(input: &Path, output: &Path) -> Result<PathBuf> {
    let package = Package::open(input)?;
    crate::compress::select::check_chains(&package)?;
    crate::compress::inspect::check_chain_values(&package)?;
    let out = PackageWriter::create(output, Source::Package(&package))?;
    rewrite::finish(&package, package.model.clone(), out)
}

/// Build with `cargo test --features crash-points crash_tests` (the default build has no crash
/// points): every step of a commit is made to abort a write in a child process.
#[cfg(all(test, feature = "crash-points"))]
mod crash_tests {
    use std::collections::BTreeMap;
    use std::fs;
    use std::path::Path;
    use std::process::{Command, Stdio};

    use super::save_unchanged;
    use crate::compress::example::write_example;
    use crate::format::package::ScratchDir;

    /// Every step `crate::format::commit::crash_point` names, in the order a write meets them.
    const STEPS: [&str; 7] = [
        "work-created",
        "marked",
        "package-written",
        "parked",
        "in-place",
        "emptied",
        "unmarked",
    ];

    /// Every file under `dir` by relative path, with its bytes.
    fn fingerprint(dir: &Path) -> BTreeMap<String, Vec<u8>> {
        fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
            for entry in fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    walk(root, &path, out);
                } else {
                    let rel = path.strip_prefix(root).unwrap().display().to_string();
                    out.insert(rel, fs::read(&path).unwrap());
                }
            }
        }
        let mut out = BTreeMap::new();
        walk(dir, dir, &mut out);
        out
    }

    fn names_in(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    /// The write a child makes (run by the test below, not on its own).
    #[test]
    #[ignore = "a child process of every_crash_point_leaves_the_old_or_the_new_package"]
    fn crash_child() {
        let src = std::env::var("CRASH_TEST_SOURCE").unwrap();
        let dest = std::env::var("CRASH_TEST_DEST").unwrap();
        save_unchanged(Path::new(&src), Path::new(&dest)).unwrap();
    }

    #[test]
    fn every_crash_point_leaves_the_old_or_the_new_package() {
        let dir = tempfile::tempdir().unwrap();
        let src = write_example(&dir.path().join("src.mlpackage")).unwrap();
        let out = dir.path().join("out");
        fs::create_dir(&out).unwrap();
        let dest = out.join("m.mlpackage");
        let new = fingerprint(&src);
        for exchange in [true, false] {
            for replaces in [true, false] {
                for step in STEPS {
                    let _ = fs::remove_dir_all(&dest);
                    let old = replaces.then(|| {
                        // The example written at another path differs in Manifest.json only.
                        fingerprint(&write_example(&dest).unwrap())
                    });
                    assert_ne!(old.as_ref(), Some(&new));
                    let mut child = Command::new(std::env::current_exe().unwrap());
                    child
                        .args([
                            "--exact",
                            "compress::roundtrip::crash_tests::crash_child",
                            "--ignored",
                            "--test-threads=1",
                        ])
                        .env("CRASH_TEST_SOURCE", &src)
                        .env("CRASH_TEST_DEST", &dest)
                        .env("COREML_COMPRESS_CRASH_AT", step)
                        .stdout(Stdio::null())
                        .stderr(Stdio::null());
                    if !exchange {
                        child.env("COREML_COMPRESS_NO_EXCHANGE", "1");
                    }
                    let status = child.status().unwrap();
                    let case = format!("step {step}, exchange {exchange}, replacing {replaces}");
                    let reached = step != "parked" || (replaces && !exchange);
                    assert_eq!(!status.success(), reached, "{case}: {status}");
                    let state = dest.exists().then(|| fingerprint(&dest));
                    if step == "parked" && reached {
                        // Between the fallback's two renames nothing is at the destination;
                        // the next write puts the parked package back first.
                        assert_eq!(state, None, "{case}");
                    } else {
                        assert!(state == old || state.as_ref() == Some(&new), "{case}");
                    }
                    // The next write's housekeeping alone restores and removes everything of
                    // the crashed write ...
                    drop(ScratchDir::beside(&dest, &src).unwrap());
                    let state = dest.exists().then(|| fingerprint(&dest));
                    assert!(state == old || state.as_ref() == Some(&new), "{case}");
                    let want: Vec<String> = state.iter().map(|_| "m.mlpackage".into()).collect();
                    assert_eq!(names_in(&out), want, "{case}");
                    // ... and a whole write leaves only the new package.
                    save_unchanged(&src, &dest).unwrap();
                    assert_eq!(fingerprint(&dest), new, "{case}");
                    assert_eq!(names_in(&out), ["m.mlpackage"], "{case}");
                }
            }
        }
    }
}
