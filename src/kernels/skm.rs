//! Weighted (sensitivity) k-means palettization of groups of f32 values: the kernel behind
//! coremltools' `SKMPalettizer` (weights = normalised Fisher information) and, with unit weights,
//! `PostTrainingPalettizer`.
//!
//! Each group is clustered by the exact weighted 1-D k-means of [`super::kmeans1d`] after sorting
//! its values and merging equal values (summing their weights, which leaves every cluster cost
//! unchanged), so the weighted squared error is optimal. Groups with more than `max_exact`
//! distinct values (or more than 2^26 / k) fall back to [`super::kmeans1d::kmeans_1d_large`] (exact DP on buckets, then
//! Lloyd steps). Groups run in parallel; the result does not depend on the thread count.

use rayon::prelude::*;

use super::kmeans1d::{kmeans_1d_large, optimal_kmeans_1d};
use crate::error::{Error, Result};

/// Palettized groups: the dense values (same layout as the input) and one LUT of `k` entries per
/// group (ascending, zero-padded when a group has fewer than `k` distinct values).
#[derive(Debug, Clone)]
pub struct WeightedPalette {
    pub dense: Vec<f32>,
    pub luts: Vec<f32>,
    /// Σ weight·(x − centroid)² over all values.
    pub weighted_sse: f64,
}

/// Clusters `values` (`n_groups` contiguous groups of equal length) into `k` centroids per group,
/// minimising Σ weight·(x − c)². `weights` must be positive, one per value.
pub fn weighted_palettize(
    values: &[f32],
    weights: &[f32],
    n_groups: usize,
    k: usize,
    max_exact: usize,
) -> Result<WeightedPalette> {
    if values.len() != weights.len() {
        return Err(Error::Config(format!(
            "{} values but {} weights",
            values.len(),
            weights.len()
        )));
    }
    if n_groups == 0 || values.len() % n_groups != 0 || k == 0 {
        return Err(Error::Config(format!(
            "cannot split {} values into {n_groups} groups of {k} clusters",
            values.len()
        )));
    }
    if values.iter().any(|v| !v.is_finite()) {
        return Err(Error::Config(
            "the weight holds NaN or infinite values".into(),
        ));
    }
    if weights.iter().any(|w| !(w.is_finite() && *w > 0.0)) {
        return Err(Error::Config(
            "importance weights must be positive and finite".into(),
        ));
    }
    let len = values.len() / n_groups;
    let mut dense = vec![0.0f32; values.len()];
    let mut luts = vec![0.0f32; n_groups * k];
    let sse: f64 = dense
        .par_chunks_mut(len.max(1))
        .zip(luts.par_chunks_mut(k))
        .enumerate()
        .map(|(g, (out, lut))| {
            let v = &values[g * len..(g + 1) * len];
            let wt = &weights[g * len..(g + 1) * len];
            cluster_group(v, wt, k, max_exact, out, lut)
        })
        .sum();
    Ok(WeightedPalette {
        dense,
        luts,
        weighted_sse: sse,
    })
}

fn cluster_group(
    v: &[f32],
    wt: &[f32],
    k: usize,
    max_exact: usize,
    out: &mut [f32],
    lut: &mut [f32],
) -> f64 {
    let mut order: Vec<u32> = (0..v.len() as u32).collect();
    order.sort_by(|&a, &b| v[a as usize].total_cmp(&v[b as usize]));
    // Distinct values with summed weights, and each sorted position's distinct index.
    let mut ux: Vec<f64> = Vec::new();
    let mut uw: Vec<f64> = Vec::new();
    let mut uid = vec![0u32; v.len()];
    for &i in &order {
        let x = v[i as usize];
        if ux.last() != Some(&(x as f64)) {
            ux.push(x as f64);
            uw.push(0.0);
        }
        *uw.last_mut().unwrap() += wt[i as usize] as f64;
        uid[i as usize] = (ux.len() - 1) as u32;
    }
    // The exact DP keeps one back-pointer per (cluster, value): bound it to 2^26 entries.
    let max_exact = max_exact.min((1usize << 26) / k.max(1)).max(k);
    let c = if ux.len() <= max_exact {
        optimal_kmeans_1d(&ux, &uw, k)
    } else {
        kmeans_1d_large(&ux, &uw, k, max_exact)
    };
    let cent: Vec<f32> = c.centroids.iter().map(|&x| x as f32).collect();
    lut.fill(0.0);
    lut[..cent.len()].copy_from_slice(&cent);
    let mut sse = 0.0f64;
    for (i, o) in out.iter_mut().enumerate() {
        let q = cent[c.labels[uid[i] as usize] as usize];
        *o = q;
        let d = (v[i] - q) as f64;
        sse += wt[i] as f64 * d * d;
    }
    sse
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weighted_optimum_on_tiny_input() {
        // Two heavy points pull their centroids; the light middle point joins the nearer one.
        let v = [0.0f32, 1.0, 1.0, 10.0, 0.0, 5.0, 5.0, 5.0];
        let w = [100.0f32, 1.0, 1.0, 100.0, 1.0, 1.0, 1.0, 1.0];
        let p = weighted_palettize(&v, &w, 2, 2, 1 << 20).unwrap();
        let c0 = (2.0f64 / 102.0) as f32;
        assert_eq!(&p.luts[..2], &[c0, 10.0]);
        assert_eq!(&p.dense[..4], &[c0, c0, c0, 10.0]);
        // Second group: 2 distinct values for 2 clusters: exact.
        assert_eq!(&p.dense[4..], &[0.0, 5.0, 5.0, 5.0]);
        // Fewer distinct values than k: LUT zero-padded.
        let p = weighted_palettize(&[2.0, 2.0], &[1.0, 1.0], 1, 4, 1 << 20).unwrap();
        assert_eq!(p.luts, vec![2.0, 0.0, 0.0, 0.0]);
        assert!(weighted_palettize(&[1.0], &[0.0], 1, 2, 10).is_err());
    }

    #[test]
    fn matches_brute_force_partition() {
        let mut g = crate::kernels::gptq::tests::lcg(11);
        let v: Vec<f32> = (0..12).map(|_| g()).collect();
        let w: Vec<f32> = (0..12).map(|_| g().abs() + 0.1).collect();
        let p = weighted_palettize(&v, &w, 1, 3, 1 << 20).unwrap();
        // Brute force over contiguous partitions of the sorted values.
        let mut idx: Vec<usize> = (0..12).collect();
        idx.sort_by(|&a, &b| v[a].total_cmp(&v[b]));
        let cost = |a: usize, b: usize| {
            let sw: f64 = idx[a..b].iter().map(|&i| w[i] as f64).sum();
            let m: f64 = idx[a..b].iter().map(|&i| (w[i] * v[i]) as f64).sum::<f64>() / sw;
            idx[a..b]
                .iter()
                .map(|&i| w[i] as f64 * (v[i] as f64 - m).powi(2))
                .sum::<f64>()
        };
        let mut best = f64::INFINITY;
        for a in 1..11 {
            for b in a + 1..12 {
                best = best.min(cost(0, a) + cost(a, b) + cost(b, 12));
            }
        }
        assert!(
            (p.weighted_sse - best).abs() < 1e-5 * best.max(1e-9),
            "{} vs {best}",
            p.weighted_sse
        );
    }
}
