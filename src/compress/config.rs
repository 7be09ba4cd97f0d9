//! Compression configs as the engine receives them (JSON from the Python layer, which has already
//! validated each op config with coremltools' rules), and coremltools' per-const resolution.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::config_err;
use crate::error::Result;

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum OpConfig {
    Palettize(PaletteConfig),
    LinearQuantize(QuantizeConfig),
    #[serde(rename = "prune_magnitude")]
    MagnitudePrune(MagnitudePruneConfig),
    #[serde(rename = "prune_threshold")]
    ThresholdPrune(ThresholdPruneConfig),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Granularity {
    PerTensor,
    PerChannel,
    PerGroupedChannel,
    PerBlock,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaletteMode {
    Kmeans,
    Uniform,
    Unique,
    Custom,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct PaletteConfig {
    pub mode: PaletteMode,
    pub nbits: Option<u32>,
    pub granularity: Granularity,
    pub group_size: usize,
    pub channel_axis: Option<i64>,
    pub cluster_dim: usize,
    pub enable_per_channel_scale: bool,
    pub weight_threshold: Option<u64>,
    /// Identifies the user's `lut_function` for CUSTOM mode (configs with different functions
    /// differ); the function itself stays in Python.
    #[serde(default)]
    pub lut_function_id: Option<u64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QuantizeMode {
    Linear,
    LinearSymmetric,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum BlockSize {
    Uniform(usize),
    PerAxis(Vec<usize>),
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct QuantizeConfig {
    pub mode: QuantizeMode,
    /// "int8", "uint8", "int4" or "uint4".
    pub dtype: String,
    pub granularity: Granularity,
    pub block_size: BlockSize,
    pub weight_threshold: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct MagnitudePruneConfig {
    pub target_sparsity: Option<f64>,
    pub block_size: Option<usize>,
    pub n_m_ratio: Option<(usize, usize)>,
    pub dim: Option<usize>,
    pub weight_threshold: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct ThresholdPruneConfig {
    pub threshold: f64,
    pub minimum_sparsity_percentile: f64,
    pub weight_threshold: Option<u64>,
}

impl OpConfig {
    pub fn weight_threshold(&self) -> Option<u64> {
        match self {
            OpConfig::Palettize(c) => c.weight_threshold,
            OpConfig::LinearQuantize(c) => c.weight_threshold,
            OpConfig::MagnitudePrune(c) => c.weight_threshold,
            OpConfig::ThresholdPrune(c) => c.weight_threshold,
        }
    }
}

/// coremltools' OptimizationConfig: a global config, per op type and per op name (None = skip).
#[derive(Clone, Debug, Default, Deserialize)]
pub struct OptimizationConfig {
    #[serde(default)]
    pub global: Option<OpConfig>,
    #[serde(default)]
    pub op_type: BTreeMap<String, Option<OpConfig>>,
    #[serde(default)]
    pub op_name: BTreeMap<String, Option<OpConfig>>,
}

impl OptimizationConfig {
    pub fn from_json(text: &str) -> Result<Self> {
        serde_json::from_str(text).map_err(|e| config_err!("invalid compression config: {e}"))
    }

    /// The config of a consumer op: by its name, then its type, then the global one.
    pub fn for_consumer(&self, op_name: &str, op_type: &str) -> Option<&OpConfig> {
        if let Some(c) = self.op_name.get(op_name) {
            return c.as_ref();
        }
        if let Some(c) = self.op_type.get(op_type) {
            return c.as_ref();
        }
        self.global.as_ref()
    }

    /// Every op config present (for type checks).
    pub fn all(&self) -> impl Iterator<Item = &OpConfig> {
        self.global
            .iter()
            .chain(self.op_type.values().flatten())
            .chain(self.op_name.values().flatten())
    }
}
