//! SparseGPT (Frantar & Alistarh 2023) with coremltools 9.0's conventions: the OBS machinery of
//! [`super::gptq`] (dead inputs, dampening, `U = chol(H⁻¹)ᵀ`, lazy group updates), a mask chosen
//! per processing group from the error-compensated weights by the score `w² / U[i,i]²`
//! (unstructured: every score `≤` the group's `floor(numel·sparsity)`-th smallest; n:m: the `n`
//! smallest of every `m` consecutive columns of a row, chosen when the column loop reaches them),
//! and optional quantization of the survivors with parameters found once on the unpruned weight.

use rayon::prelude::*;

use super::gptq::{find_params, inverse_hessian_factor, lazy_update, ObsResult, QuantSpec};
use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy)]
pub struct SparseGptOptions {
    /// Fraction of each group's weights set to zero (unstructured mode).
    pub target_sparsity: f64,
    /// `(n, m)`: `n` of every `m` consecutive weights of a row are zeroed; overrides the sparsity.
    pub n_m: Option<(usize, usize)>,
    /// Quantize the surviving weights.
    pub quant: Option<QuantSpec>,
    pub damp: f64,
    pub group: usize,
}

/// Runs SparseGPT on the row-major `w [rows, cols]` with Hessian `h [cols, cols]`.
pub fn sparsegpt(
    w: &[f32],
    rows: usize,
    cols: usize,
    h: &[f32],
    opts: &SparseGptOptions,
) -> Result<ObsResult> {
    if rows == 0 || cols == 0 || w.len() != rows * cols {
        return Err(Error::Config(format!(
            "weight has {} values, expected a non-empty {rows}×{cols} matrix",
            w.len()
        )));
    }
    if opts.group == 0 {
        return Err(Error::Config(
            "processing_group_size must be positive".into(),
        ));
    }
    if w.iter().any(|v| !v.is_finite()) {
        return Err(Error::Config(
            "the weight holds NaN or infinite values".into(),
        ));
    }
    if let Some((n, m)) = opts.n_m {
        if m == 0 || n > m {
            return Err(Error::Config(format!(
                "n_m_ratio must satisfy 0 <= n <= m and m > 0, got ({n}, {m})"
            )));
        }
        if opts.group % m != 0 {
            return Err(Error::Config(format!(
                "processing_group_size {} must be a multiple of m = {m}",
                opts.group
            )));
        }
    } else if !(0.0..=1.0).contains(&opts.target_sparsity) {
        return Err(Error::Config(format!(
            "target_sparsity must be in [0, 1], got {}",
            opts.target_sparsity
        )));
    }
    if let Some(q) = &opts.quant {
        q.validate()?;
    }
    let mut w = w.to_vec();
    let params = opts
        .quant
        .map(|q| (q, find_params(&q, &w, rows, cols, 0, cols)));
    let u = inverse_hessian_factor(h, cols, opts.damp, &mut w, rows)?;

    let mut loss = 0.0f64;
    let mut i1 = 0;
    while i1 < cols {
        let i2 = (i1 + opts.group).min(cols);
        let count = i2 - i1;
        let dg: Vec<f32> = (i1..i2).map(|c| u[c * cols + c]).collect();
        // Unstructured threshold over the whole group (all rows) at group start.
        let thresh = if opts.n_m.is_none() {
            let mut scores: Vec<f32> = w
                .par_chunks(cols)
                .flat_map_iter(|row| row[i1..i2].iter().zip(&dg).map(|(&x, &d)| x * x / (d * d)))
                .collect();
            let k = ((scores.len() as f64 * opts.target_sparsity) as usize).min(scores.len() - 1);
            if opts.target_sparsity <= 0.0 {
                Some(f32::NEG_INFINITY)
            } else {
                let (_, kth, _) = scores.select_nth_unstable_by(k, |a, b| a.total_cmp(b));
                Some(*kth)
            }
        } else {
            None
        };
        let ub: Vec<&[f32]> = (i1..i2).map(|c| &u[c * cols + i1..c * cols + i2]).collect();
        let mut e = vec![0.0f32; rows * count];
        let params_ref = &params;
        let group_loss: f64 = w
            .par_chunks_mut(cols)
            .zip(e.par_chunks_mut(count))
            .enumerate()
            .map(|(r, (wrow, erow))| {
                let mut wb: Vec<f32> = wrow[i1..i2].to_vec();
                let mut mask: Vec<bool> = match thresh {
                    Some(t) => wb
                        .iter()
                        .zip(&dg)
                        .map(|(&x, &d)| x * x / (d * d) <= t)
                        .collect(),
                    None => vec![false; count],
                };
                let mut l = 0.0f64;
                for i in 0..count {
                    if let Some((n, m)) = opts.n_m {
                        if i % m == 0 && n > 0 {
                            let end = (i + m).min(count);
                            let mut idx: Vec<usize> = (i..end).collect();
                            idx.sort_by(|&a, &b| {
                                let sa = wb[a] * wb[a] / (dg[a] * dg[a]);
                                let sb = wb[b] * wb[b] / (dg[b] * dg[b]);
                                sa.total_cmp(&sb)
                            });
                            for &j in idx.iter().take(n) {
                                mask[j] = true;
                            }
                        }
                    }
                    let x = wb[i];
                    let mut q = if mask[i] { 0.0 } else { x };
                    if let Some((spec, p)) = params_ref {
                        q = spec.quantize(q, p.scale[r], p.zero[r]);
                    }
                    let err = (x - q) / dg[i];
                    l += (err as f64) * (err as f64);
                    for (wv, &uv) in wb[i + 1..].iter_mut().zip(&ub[i][i + 1..]) {
                        *wv -= err * uv;
                    }
                    wb[i] = q;
                    erow[i] = err;
                }
                wrow[i1..i2].copy_from_slice(&wb);
                l
            })
            .sum();
        loss += group_loss / 2.0;
        lazy_update(&mut w, rows, cols, &e, &u, i1, i2);
        i1 = i2;
    }
    let (scale, zero_point, n_blocks) = match params {
        Some((_, p)) => (p.scale, p.zero, 1),
        None => (Vec::new(), Vec::new(), 0),
    };
    Ok(ObsResult {
        weight: w,
        scale,
        zero_point,
        n_blocks,
        loss,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::gptq::tests::{problem, recon_error};

    fn magnitude_prune(w: &[f32], s: f64) -> Vec<f32> {
        let mut a: Vec<f32> = w.iter().map(|v| v.abs()).collect();
        a.sort_by(|x, y| x.total_cmp(y));
        let t = a[(a.len() as f64 * s) as usize];
        w.iter()
            .map(|&v| if v.abs() <= t { 0.0 } else { v })
            .collect()
    }

    #[test]
    fn unstructured_half_sparse_and_better_than_magnitude() {
        let (rows, cols) = (16, 64);
        let (w, x, h) = problem(rows, cols, 300);
        let opts = SparseGptOptions {
            target_sparsity: 0.5,
            n_m: None,
            quant: None,
            damp: 0.01,
            group: 32,
        };
        let res = sparsegpt(&w, rows, cols, &h, &opts).unwrap();
        let zeros = res.weight.iter().filter(|v| **v == 0.0).count();
        assert!(
            zeros >= rows * cols / 2 && zeros <= rows * cols / 2 + 4,
            "{zeros}"
        );
        let e = recon_error(&w, &res.weight, &x, rows, cols);
        let e_mag = recon_error(&w, &magnitude_prune(&w, 0.5), &x, rows, cols);
        assert!(e < 0.7 * e_mag, "{e} vs {e_mag}");
    }

    #[test]
    fn n_m_pattern_and_quantized_survivors() {
        let (rows, cols) = (8, 32);
        let (w, _, h) = problem(rows, cols, 120);
        let q = QuantSpec {
            n_bits: 8,
            symmetric: true,
            per_channel: true,
            normal_float: false,
        };
        let opts = SparseGptOptions {
            target_sparsity: 0.5,
            n_m: Some((2, 4)),
            quant: Some(q),
            damp: 0.01,
            group: 16,
        };
        let res = sparsegpt(&w, rows, cols, &h, &opts).unwrap();
        for r in 0..rows {
            for g in 0..cols / 4 {
                let z = (0..4)
                    .filter(|k| res.weight[r * cols + g * 4 + k] == 0.0)
                    .count();
                assert!(z >= 2);
            }
            for c in 0..cols {
                let v = res.weight[r * cols + c] / res.scale[r] + res.zero_point[r];
                assert!((v - v.round()).abs() < 1e-3);
            }
        }
        let bad = SparseGptOptions { group: 6, ..opts };
        assert!(sparsegpt(&w, rows, cols, &h, &bad).is_err());
    }
}
