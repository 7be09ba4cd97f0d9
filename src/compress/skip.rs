//! Why a pass left a candidate weight as it was. Every candidate a pass does not compress gets
//! one [`Skip`], so reports and warnings can say which weights and why.

use std::fmt;

/// Why a weight was not compressed.
#[derive(Clone, Debug, PartialEq)]
pub enum SkipReason {
    /// Not more elements than the config's `weight_threshold` (coremltools' size rule: expected,
    /// so reports count these instead of listing them).
    BelowThreshold { threshold: u64 },
    /// The weight holds NaN or ±inf: no pass compresses it (this project's policy, see
    /// docs/DECISIONS.md).
    NonFinite,
    /// Its consumers read it along different channel axes, so no channel axis can be chosen.
    ChannelAxes,
    /// The config's group, block or vector size does not fit the weight's shape, or the mode
    /// cannot represent it (coremltools' reason, e.g. "The number of channels at 0th axis (1024)
    /// is not divisible by channel_group_size (48).").
    Mode(String),
    /// The pass does not take this kind of weight (dtype, op, rank for the mode).
    Unsupported(String),
    /// The op form cannot hold the weight: its restored values would leave the float type's
    /// range.
    OutOfRange(String),
}

impl SkipReason {
    /// A short tag for programs: below_threshold, non_finite, channel_axes, mode,
    /// unsupported, out_of_range.
    pub fn kind(&self) -> &'static str {
        match self {
            SkipReason::BelowThreshold { .. } => "below_threshold",
            SkipReason::NonFinite => "non_finite",
            SkipReason::ChannelAxes => "channel_axes",
            SkipReason::Mode(_) => "mode",
            SkipReason::Unsupported(_) => "unsupported",
            SkipReason::OutOfRange(_) => "out_of_range",
        }
    }
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SkipReason::BelowThreshold { threshold } => {
                write!(
                    f,
                    "it has no more than weight_threshold = {threshold} elements"
                )
            }
            SkipReason::NonFinite => write!(f, "it contains NaN or infinite values"),
            SkipReason::ChannelAxes => {
                write!(f, "its consumers read it along different channel axes")
            }
            SkipReason::Mode(s) | SkipReason::Unsupported(s) | SkipReason::OutOfRange(s) => {
                f.write_str(s.trim_end_matches(" Skipped."))
            }
        }
    }
}

/// A candidate weight a pass did not compress: its name in the input model, where it is, and why.
#[derive(Clone, Debug, PartialEq)]
pub struct Skip {
    pub function: String,
    pub name: String,
    pub shape: Vec<usize>,
    pub reason: SkipReason,
}

impl fmt::Display for Skip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (shape {:?}, function {}): {}",
            self.name, self.shape, self.function, self.reason
        )
    }
}

/// What compressing one weight came to: the result, or why it was left alone.
pub type Outcome<T> = std::result::Result<T, SkipReason>;
