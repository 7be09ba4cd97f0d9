//! Running Hessian of a layer's reconstruction loss from calibration activations, with
//! coremltools' normalisation: after batches of `t₁, t₂, …` samples, `H = (2/n)·Σ x·xᵀ` over every
//! activation row seen, `n = Σ tᵢ` (a "sample" is an item of the leading batch dimension, so the
//! scale depends on how the caller counts; GPTQ and SparseGPT do not depend on it).
//!
//! The update is a symmetric rank-k product (only one triangle is computed, by faer's
//! triangular GEMM) followed by a mirror into the other triangle, so `h` is always a full
//! symmetric row-major matrix.

use faer::linalg::matmul::triangular::{matmul, BlockStructure};
use faer::{Accum, MatMut, MatRef, Par};
use rayon::prelude::*;

use crate::error::{Error, Result};

/// Adds the activations `x [tokens, cols]` (row-major), counted as `samples` samples, to the
/// running Hessian `h [cols, cols]` that has seen `seen` samples so far. Returns the new count.
pub fn accumulate(h: &mut [f32], cols: usize, seen: f64, x: &[f32], samples: f64) -> Result<f64> {
    if cols == 0 || h.len() != cols * cols {
        return Err(Error::Config(format!(
            "the Hessian has {} values, expected {cols}×{cols}",
            h.len()
        )));
    }
    if x.len() % cols != 0 {
        return Err(Error::Config(format!(
            "activations have {} values, not a multiple of {cols} columns",
            x.len()
        )));
    }
    if samples.is_nan() || samples <= 0.0 || seen.is_nan() || seen < 0.0 {
        return Err(Error::Config("sample counts must be positive".into()));
    }
    let tokens = x.len() / cols;
    let total = seen + samples;
    let keep = (seen / total) as f32;
    if keep != 1.0 {
        h.par_iter_mut().for_each(|v| *v *= keep);
    }
    if tokens == 0 {
        return Ok(total);
    }
    let alpha = (2.0 / total) as f32;
    {
        // Column-major views only (faer 0.24 mis-handles some row-major destinations); the lower
        // triangle of the column-major view is the upper triangle of the row-major matrix.
        let dst = MatMut::from_column_major_slice_mut(h, cols, cols);
        // Row-major x [tokens, cols] is column-major xᵀ [cols, tokens].
        let xt = MatRef::from_column_major_slice(x, cols, tokens);
        matmul(
            dst,
            BlockStructure::TriangularLower,
            Accum::Add,
            xt,
            BlockStructure::Rectangular,
            xt.transpose(),
            BlockStructure::Rectangular,
            alpha,
            Par::rayon(0),
        );
    }
    symmetrize_from_upper(h, cols);
    Ok(total)
}

/// Copies the upper triangle of the row-major `h [n, n]` into its lower triangle.
pub fn symmetrize_from_upper(h: &mut [f32], n: usize) {
    for i in 0..n {
        for j in 0..i {
            h[i * n + j] = h[j * n + i];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn running_mean_matches_direct_sum() {
        let cols = 13;
        let mut g = crate::kernels::gptq::tests::lcg(3);
        let x1: Vec<f32> = (0..7 * cols).map(|_| g()).collect();
        let x2: Vec<f32> = (0..5 * cols).map(|_| g()).collect();
        let mut h = vec![0.0f32; cols * cols];
        let n = accumulate(&mut h, cols, 0.0, &x1, 1.0).unwrap();
        let n = accumulate(&mut h, cols, n, &x2, 3.0).unwrap();
        assert_eq!(n, 4.0);
        for i in 0..cols {
            for j in 0..cols {
                let mut s = 0.0f64;
                for x in [&x1, &x2] {
                    for t in 0..x.len() / cols {
                        s += x[t * cols + i] as f64 * x[t * cols + j] as f64;
                    }
                }
                let want = 2.0 * s / 4.0;
                assert!((h[i * cols + j] as f64 - want).abs() < 1e-4 * (1.0 + want.abs()));
            }
        }
        assert!(accumulate(&mut h, cols, n, &x1[1..], 1.0).is_err());
    }

    /// `cargo test --release --lib kernels::hessian::tests::bench_cholesky -- --ignored --nocapture`
    /// measures faer's Cholesky against a plain blocked Cholesky written here (see
    /// docs/DECISIONS.md).
    #[test]
    #[ignore]
    fn bench_cholesky() {
        use crate::kernels::gptq::cholesky_in_place;
        use std::time::Instant;
        let n = 4096;
        let mut g = crate::kernels::gptq::tests::lcg(5);
        let x: Vec<f32> = (0..2 * n * n).map(|_| g()).collect();
        let mut h = vec![0.0f32; n * n];
        let t = Instant::now();
        accumulate(&mut h, n, 0.0, &x, 1.0).unwrap();
        println!(
            "hessian accumulate 8192 tokens x {n}: {:.3}s",
            t.elapsed().as_secs_f64()
        );
        let mut w = vec![0.0f32; n];
        let t = Instant::now();
        let _u = crate::kernels::gptq::inverse_hessian_factor(&h, n, 0.01, &mut w, 1).unwrap();
        println!(
            "faer f64 chol + triangular inverse: {:.3}s",
            t.elapsed().as_secs_f64()
        );
        for par in [Par::Seq, Par::rayon(0)] {
            let mut a: Vec<f64> = h.iter().map(|&v| v as f64).collect();
            for i in 0..n {
                a[i * n + i] += 1.0;
            }
            let t = Instant::now();
            cholesky_in_place(&mut a, n, par).unwrap();
            println!(
                "faer f64 cholesky {par:?}: {:.3}s",
                t.elapsed().as_secs_f64()
            );
        }
        let mut a: Vec<f32> = h.clone();
        for i in 0..n {
            a[i * n + i] += 1.0;
        }
        let t = Instant::now();
        cholesky_in_place(&mut a, n, Par::rayon(0)).unwrap();
        println!("faer f32 cholesky rayon: {:.3}s", t.elapsed().as_secs_f64());
        let a32 = a.clone();
        // A plain right-looking Cholesky (row-major lower, one thread).
        let mut a: Vec<f64> = h.iter().map(|&v| v as f64).collect();
        for i in 0..n {
            a[i * n + i] += 1.0;
        }
        let t = Instant::now();
        naive_cholesky(&mut a, n);
        println!(
            "plain row Cholesky (f64, one thread): {:.3}s",
            t.elapsed().as_secs_f64()
        );
        for par in [Par::Seq, Par::rayon(0)] {
            let xt = MatRef::from_column_major_slice(&x, n, 2 * n);
            let mut full = vec![0.0f32; n * n];
            let t = Instant::now();
            faer::linalg::matmul::matmul(
                MatMut::from_column_major_slice_mut(&mut full, n, n),
                Accum::Add,
                xt,
                xt.transpose(),
                1.0f32,
                par,
            );
            println!(
                "full f32 GEMM XtX {par:?}: {:.3}s",
                t.elapsed().as_secs_f64()
            );
            let mut tri = vec![0.0f32; n * n];
            let t = Instant::now();
            matmul(
                MatMut::from_column_major_slice_mut(&mut tri, n, n),
                BlockStructure::TriangularLower,
                Accum::Add,
                xt,
                BlockStructure::Rectangular,
                xt.transpose(),
                BlockStructure::Rectangular,
                1.0f32,
                par,
            );
            println!(
                "triangular f32 XtX {par:?}: {:.3}s",
                t.elapsed().as_secs_f64()
            );
            let mut l = vec![0.0f32; n * n];
            let t = Instant::now();
            faer::linalg::triangular_inverse::invert_lower_triangular(
                MatMut::from_column_major_slice_mut(&mut l, n, n),
                MatRef::from_column_major_slice(&a32, n, n),
                par,
            );
            println!(
                "f32 triangular inverse {par:?}: {:.3}s",
                t.elapsed().as_secs_f64()
            );
        }
    }

    fn naive_cholesky(a: &mut [f64], n: usize) {
        // Left-looking by rows: L[i][j] = (A[i][j] - L[i][..j]·L[j][..j]) / L[j][j].
        for i in 0..n {
            let (done, rest) = a.split_at_mut(i * n);
            let row = &mut rest[..n];
            for j in 0..i {
                let lj = &done[j * n..j * n + j];
                let s: f64 = row[..j].iter().zip(lj).map(|(x, y)| x * y).sum();
                row[j] = (row[j] - s) / done[j * n + j];
            }
            let s: f64 = row[..i].iter().map(|x| x * x).sum();
            row[i] = (row[i] - s).sqrt();
        }
    }
}
