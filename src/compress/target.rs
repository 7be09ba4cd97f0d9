//! What an emitter writes for: the specification version of the model (or of one of its
//! functions), which decides the op forms.

use crate::format::spec;

/// What a pass needs to know about the model it writes: the specification version after
/// coremltools' upgrade of iOS15 models, and whether iOS18 op forms apply.
#[derive(Clone, Copy, Debug)]
pub struct Target {
    pub spec_version: i32,
}

impl Target {
    pub fn ios18(self) -> bool {
        self.spec_version >= 9
    }

    /// The target of one function of `model`: its own opset's specification version where that
    /// is older than the package's (merged multifunction packages keep each function's opset),
    /// so that a pass emits into a function only the op forms of its opset.
    pub fn for_function(self, model: &spec::Model, function: &str) -> Target {
        let own = spec::program(model)
            .ok()
            .and_then(|p| p.functions.get(function))
            .and_then(|f| spec::opset_spec_version(&f.opset));
        Target {
            spec_version: own.map_or(self.spec_version, |v| v.max(7).min(self.spec_version)),
        }
    }
}
