//! Manifest.json: the index of a `.mlpackage`. Item paths are relative to the package's `Data/`
//! directory; any path that could leave the package is refused.

use std::path::{Component, Path, PathBuf};

use serde_json::{json, Map, Value};

use crate::error::Result;
use crate::format_err;

pub const AUTHOR: &str = "com.apple.CoreML";

#[derive(Clone, Debug)]
pub struct Manifest {
    /// The document as read, so that writing it back loses nothing.
    pub json: Value,
    /// The root model file, relative to `Data/`.
    pub root_model: PathBuf,
    /// The weights directory, relative to `Data/`, when the manifest names one.
    pub weights_dir: Option<PathBuf>,
}

/// A relative path that stays inside its directory: no `..`, no root, no prefix.
pub fn safe_relative(path: &str, what: &str) -> Result<PathBuf> {
    let p = Path::new(path);
    let ok = !path.is_empty()
        && p.components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
    if ok {
        Ok(p.to_path_buf())
    } else {
        Err(format_err!(
            "{what}: path {path:?} escapes the package directory"
        ))
    }
}

impl Manifest {
    pub fn parse(text: &[u8], origin: &str) -> Result<Self> {
        let json: Value = serde_json::from_slice(text)
            .map_err(|e| format_err!("{origin}: not valid JSON ({e})"))?;
        let version = json
            .get("fileFormatVersion")
            .and_then(Value::as_str)
            .unwrap_or("");
        // Core ML's loader requires major.minor.patch: three non-negative integers.
        let parts: Vec<&str> = version.split('.').collect();
        let numeric = |p: &&str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
        if parts.len() != 3 || !parts.iter().all(numeric) {
            return Err(format_err!(
                "{origin}: fileFormatVersion {version:?} is not of the form major.minor.patch"
            ));
        }
        if parts[0].trim_start_matches('0') != "1" {
            return Err(format_err!(
                "{origin}: unsupported fileFormatVersion {version:?} (expected 1.x.x)"
            ));
        }
        let items = json
            .get("itemInfoEntries")
            .and_then(Value::as_object)
            .ok_or_else(|| format_err!("{origin}: missing itemInfoEntries"))?;
        let root_id = json
            .get("rootModelIdentifier")
            .and_then(Value::as_str)
            .ok_or_else(|| format_err!("{origin}: missing rootModelIdentifier"))?;
        let mut root_model = None;
        let mut weights_dir = None;
        for (id, item) in items {
            let field = |key: &str| {
                item.get(key)
                    .and_then(Value::as_str)
                    .ok_or_else(|| format_err!("{origin}: item {id} has no {key:?} string"))
            };
            let path = safe_relative(field("path")?, &format!("{origin}: item {id}"))?;
            let (name, author) = (field("name")?, field("author")?);
            field("description")?;
            if id == root_id {
                root_model = Some(path.clone());
            }
            if name == "weights" && author == AUTHOR {
                weights_dir = Some(path);
            }
        }
        let root_model = root_model
            .ok_or_else(|| format_err!("{origin}: rootModelIdentifier {root_id} names no item"))?;
        Ok(Manifest {
            json,
            root_model,
            weights_dir,
        })
    }

    /// The manifest of a new package with the model and its weights at their usual places.
    /// Identifiers derive from `seed` so that equal inputs give equal packages.
    pub fn new_default(seed: &[u8]) -> Self {
        let uuid = |salt: &[u8]| {
            let h = blake3::Hasher::new().update(seed).update(salt).finalize();
            let b = h.as_bytes();
            format!(
                "{}-{}-4{}-8{}-{}",
                hex(&b[0..4]),
                hex(&b[4..6]),
                &hex(&b[6..8])[1..],
                &hex(&b[8..10])[1..],
                hex(&b[10..16])
            )
        };
        let (model_id, weights_id) = (uuid(b"model"), uuid(b"weights"));
        let mut items = Map::new();
        items.insert(
            model_id.clone(),
            json!({"author": AUTHOR, "description": "CoreML Model Specification",
                   "name": "model.mlmodel", "path": "com.apple.CoreML/model.mlmodel"}),
        );
        items.insert(
            weights_id,
            json!({"author": AUTHOR, "description": "CoreML Model Weights",
                   "name": "weights", "path": "com.apple.CoreML/weights"}),
        );
        let json = json!({
            "fileFormatVersion": "1.0.0",
            "itemInfoEntries": items,
            "rootModelIdentifier": model_id,
        });
        Manifest {
            json,
            root_model: "com.apple.CoreML/model.mlmodel".into(),
            weights_dir: Some("com.apple.CoreML/weights".into()),
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(&self.json).expect("a JSON value serializes")
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_manifest_parses_back() {
        let m = Manifest::new_default(b"x");
        let back = Manifest::parse(&m.to_bytes(), "t").unwrap();
        assert_eq!(
            back.root_model,
            PathBuf::from("com.apple.CoreML/model.mlmodel")
        );
        assert_eq!(
            back.weights_dir,
            Some(PathBuf::from("com.apple.CoreML/weights"))
        );
    }

    #[test]
    fn escaping_paths_are_refused() {
        for bad in ["../x", "/etc/passwd", "a/../../b", ""] {
            let text = format!(
                r#"{{"fileFormatVersion":"1.0.0","rootModelIdentifier":"a","itemInfoEntries":
                {{"a":{{"author":"a","description":"d","name":"n","path":{bad:?}}}}}}}"#
            );
            let err = Manifest::parse(text.as_bytes(), "t")
                .unwrap_err()
                .to_string();
            assert!(err.contains("escapes"), "{bad}: {err}");
        }
    }

    #[test]
    fn malformed_manifests_are_refused() {
        assert!(Manifest::parse(b"{", "t").is_err());
        assert!(Manifest::parse(br#"{"fileFormatVersion":"2.0.0"}"#, "t").is_err());
        for version in [
            "1",
            "1.0",
            "1.0.0.0.0",
            "1.a.0",
            "1..0",
            "+1.0.0",
            "1.0.-1",
            "",
        ] {
            let text = format!(r#"{{"fileFormatVersion":{version:?}}}"#);
            let err = Manifest::parse(text.as_bytes(), "t")
                .unwrap_err()
                .to_string();
            assert!(err.contains("major.minor.patch"), "{version}: {err}");
        }
        assert!(Manifest::parse(
            br#"{"fileFormatVersion":"1.0.0","itemInfoEntries":{}}"#,
            "t"
        )
        .is_err());
    }
}
