//! GPTQ (Frantar et al. 2022) on a weight matrix `W [rows, cols]` and the Hessian of its layer's
//! reconstruction loss `H [cols, cols]`, with the conventions of coremltools 9.0
//! (`optimize.torch.layerwise_compression`):
//!
//! - dead inputs (`H[i, i] == 0`) get `H[i, i] = 1` and a zero weight column;
//! - dampening `λ·mean(diag H)` is added to the diagonal;
//! - the error feedback uses `U`, the upper Cholesky factor of `H⁻¹`;
//! - columns are processed in groups of `group` (lazy block updates: inside a group the error is
//!   fed forward column by column, to the right of the group by one GEMM per group);
//! - the scalar quantizer is coremltools' GPTQ quantizer: range always containing 0, symmetric
//!   grids on the full unsigned range with the zero point at `2^(n-1)`, round half to even, and
//!   the normal-float (NF3/NF4) palettes with an abs-max scale;
//! - per-block scales (`block_size`) are found when the column loop reaches a block, on the
//!   weights updated by every earlier group; with act-order they are found up front on the
//!   original weights ("static blocking").
//!
//! `U` is computed without forming `H⁻¹`: with `J` the reversal permutation, `J·H·J = L·Lᵀ`
//! gives `U = J·L⁻¹·J`, one Cholesky and one triangular inverse (in f32, as coremltools) instead of coremltools'
//! Cholesky, `cholesky_inverse` and second Cholesky.

use faer::linalg::matmul::matmul;
use faer::{Accum, MatMut, MatRef, Par};
use rayon::prelude::*;

use crate::error::{Error, Result};

/// The QLoRA NF4 palette.
pub const NF4: [f32; 16] = [
    -1.0,
    -0.696_192_8,
    -0.525_073_05,
    -0.394_917_5,
    -0.284_441_38,
    -0.184_773_43,
    -0.091_050_036,
    0.0,
    0.079_580_3,
    0.160_930_2,
    0.246_112_3,
    0.337_915_24,
    0.440_709_83,
    0.562_617,
    0.722_956_84,
    1.0,
];
/// The bitsandbytes NF3 palette.
pub const NF3: [f32; 8] = [
    -1.0,
    -0.478_629_2,
    -0.217_141_79,
    0.0,
    0.160_930_2,
    0.337_915_24,
    0.562_617,
    1.0,
];

/// How weights are quantized inside GPTQ and SparseGPT.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QuantSpec {
    /// Bits per weight, 1..=8.
    pub n_bits: u32,
    /// Symmetric grid (zero point `2^(n-1)`); otherwise affine (zero point `round(-min/scale)`).
    pub symmetric: bool,
    /// One scale per output row; otherwise one scale shared by all rows (per block if blocked).
    pub per_channel: bool,
    /// Normal-float palette (3 or 4 bits) times an abs-max scale, instead of a uniform grid.
    pub normal_float: bool,
}

impl QuantSpec {
    pub fn validate(&self) -> Result<()> {
        if !(1..=8).contains(&self.n_bits) {
            return Err(Error::Config(format!(
                "quantization needs 1 to 8 bits, got {}",
                self.n_bits
            )));
        }
        if self.normal_float && !matches!(self.n_bits, 3 | 4) {
            return Err(Error::Config(format!(
                "normal float is defined for 3 and 4 bits only, got {}",
                self.n_bits
            )));
        }
        Ok(())
    }

    fn max_q(&self) -> f32 {
        ((1u32 << self.n_bits) - 1) as f32
    }

    /// The normal-float palette for these bits (empty for a uniform grid).
    pub fn palette(&self) -> &'static [f32] {
        match (self.normal_float, self.n_bits) {
            (true, 4) => &NF4,
            (true, 3) => &NF3,
            _ => &[],
        }
    }

    /// Scale and zero point of one set of values (coremltools' `find_params`).
    pub fn params_of(&self, values: impl Iterator<Item = f32>) -> (f32, f32) {
        let (mut lo, mut hi) = (f32::INFINITY, f32::NEG_INFINITY);
        for v in values {
            lo = lo.min(v);
            hi = hi.max(v);
        }
        let mut xmin = lo.min(0.0);
        let mut xmax = hi.max(0.0);
        if self.symmetric {
            xmax = xmax.max(xmin.abs());
            if xmin < 0.0 {
                xmin = -xmax;
            }
        }
        if xmin == 0.0 && xmax == 0.0 {
            xmin = -1.0;
            xmax = 1.0;
        }
        let max_q = self.max_q();
        let scale = if self.normal_float {
            xmax.max(xmin.abs())
        } else {
            (xmax - xmin) / max_q
        };
        let zero = if self.symmetric {
            (max_q + 1.0) / 2.0
        } else {
            (-xmin / scale).round_ties_even()
        };
        (scale, zero)
    }

    /// The value `x` is replaced by (coremltools' `quantize`).
    #[inline]
    pub fn quantize(&self, x: f32, scale: f32, zero: f32) -> f32 {
        if self.normal_float {
            let v = x / scale;
            let pal = self.palette();
            let mut best = 0usize;
            let mut best_d = f32::INFINITY;
            for (i, &p) in pal.iter().enumerate() {
                let d = (v - p).abs();
                if d < best_d {
                    best_d = d;
                    best = i;
                }
            }
            scale * pal[best]
        } else {
            let q = ((x / scale).round_ties_even() + zero).clamp(0.0, self.max_q());
            scale * (q - zero)
        }
    }
}

/// Per-row quantizer parameters for one block of columns.
#[derive(Debug, Clone)]
pub(crate) struct RowParams {
    pub scale: Vec<f32>,
    pub zero: Vec<f32>,
}

/// Parameters of columns `c0..c1` of the row-major `w [rows, cols]`.
pub(crate) fn find_params(
    spec: &QuantSpec,
    w: &[f32],
    rows: usize,
    cols: usize,
    c0: usize,
    c1: usize,
) -> RowParams {
    if spec.per_channel {
        let (scale, zero): (Vec<f32>, Vec<f32>) = (0..rows)
            .into_par_iter()
            .map(|r| spec.params_of(w[r * cols + c0..r * cols + c1].iter().copied()))
            .unzip();
        RowParams { scale, zero }
    } else {
        let (s, z) =
            spec.params_of((0..rows).flat_map(|r| w[r * cols + c0..r * cols + c1].iter().copied()));
        RowParams {
            scale: vec![s; rows],
            zero: vec![z; rows],
        }
    }
}

/// GPTQ options (coremltools' `ModuleGPTQConfig`, minus the dtype parsing).
#[derive(Debug, Clone, Copy)]
pub struct GptqOptions {
    pub quant: QuantSpec,
    /// Columns sharing one scale (per-block quantization); `None` for one block per row.
    pub block_size: Option<usize>,
    /// Process columns in descending order of `diag(H)`.
    pub act_order: bool,
    /// Relative dampening of the Hessian diagonal.
    pub damp: f64,
    /// Lazy-update width (coremltools' `processing_group_size`).
    pub group: usize,
}

/// The result of GPTQ or SparseGPT on one layer.
#[derive(Debug, Clone)]
pub struct ObsResult {
    /// The compressed weight, row-major `[rows, cols]`, every value on the grid.
    pub weight: Vec<f32>,
    /// `[rows, n_blocks]` row-major scales (empty without quantization).
    pub scale: Vec<f32>,
    /// `[rows, n_blocks]` zero points, on the unsigned grid (empty without quantization).
    pub zero_point: Vec<f32>,
    pub n_blocks: usize,
    /// Σ (w − q)² / U[i,i]² / 2 over all weights: the OBS estimate of the added loss.
    pub loss: f64,
}

/// faer's in-place Cholesky factorization: the lower triangle of the `n`×`n` column-major
/// matrix `a` becomes L; an error when `a` is not positive definite.
pub(crate) fn cholesky_in_place<T: faer::traits::ComplexField>(
    a: &mut [T],
    n: usize,
    par: Par,
) -> std::result::Result<(), faer::linalg::cholesky::llt::factor::LltError> {
    use faer::linalg::cholesky::llt::factor;
    let mut mem = faer::dyn_stack::MemBuffer::new(factor::cholesky_in_place_scratch::<T>(
        n,
        par,
        Default::default(),
    ));
    factor::cholesky_in_place(
        MatMut::from_column_major_slice_mut(a, n, n),
        Default::default(),
        par,
        faer::dyn_stack::MemStack::new(&mut mem),
        Default::default(),
    )
    .map(|_| ())
}

/// Dead-input handling, dampening and `U = chol(H⁻¹)ᵀ` (upper), as a row-major f32 matrix.
///
/// `h` is the symmetric `[n, n]` Hessian (only the lower triangle is read); dead columns of `w`
/// (`[rows, n]`) are zeroed.
pub(crate) fn inverse_hessian_factor(
    h: &[f32],
    n: usize,
    damp: f64,
    w: &mut [f32],
    rows: usize,
) -> Result<Vec<f32>> {
    if h.len() != n * n {
        return Err(Error::Config(format!(
            "the Hessian has {} values, expected {n}×{n}",
            h.len()
        )));
    }
    if h.iter().any(|v| !v.is_finite()) {
        return Err(Error::Config(
            "the Hessian holds NaN or infinite values".into(),
        ));
    }
    let mut diag: Vec<f64> = (0..n).map(|i| h[i * n + i] as f64).collect();
    for (i, d) in diag.iter_mut().enumerate() {
        if *d == 0.0 {
            *d = 1.0;
            for r in 0..rows {
                w[r * n + i] = 0.0;
            }
        }
    }
    let mean = diag.iter().sum::<f64>() / n.max(1) as f64;
    let add = damp * mean;
    // R = J·(H + damp·I)·J, column-major, lower triangle filled: R[i][j] = H[n-1-i][n-1-j].
    let mut r = vec![0.0f32; n * n];
    r.par_chunks_mut(n).enumerate().for_each(|(j, col)| {
        // column j of R, rows i ≥ j
        let hj = n - 1 - j;
        for (i, v) in col.iter_mut().enumerate().skip(j) {
            let hi = n - 1 - i; // hi ≤ hj: read the lower triangle H[hj][hi]
            *v = if i == j {
                (diag[hj] + add) as f32
            } else {
                h[hj * n + hi]
            };
        }
    });
    let par = Par::rayon(0);
    cholesky_in_place(&mut r, n, par).map_err(|_| {
        Error::Config(
            "the dampened Hessian is not positive definite (increase hessian_dampening)".into(),
        )
    })?;
    let mut linv = vec![0.0f32; n * n];
    faer::linalg::triangular_inverse::invert_lower_triangular(
        MatMut::from_column_major_slice_mut(&mut linv, n, n),
        MatRef::from_column_major_slice(&r, n, n),
        par,
    );
    drop(r);
    // U[i][j] = Linv[n-1-i][n-1-j] for j ≥ i; Linv is column-major.
    let mut u = vec![0.0f32; n * n];
    u.par_chunks_mut(n).enumerate().for_each(|(i, row)| {
        let li = n - 1 - i;
        for (j, v) in row.iter_mut().enumerate().skip(i) {
            let lj = n - 1 - j; // lj ≤ li
            *v = linv[lj * n + li];
        }
    });
    if u.iter()
        .step_by(n + 1)
        .any(|d| !(d.is_finite() && *d > 0.0))
    {
        return Err(Error::Config(
            "the inverse Hessian factor is singular (increase hessian_dampening)".into(),
        ));
    }
    Ok(u)
}

/// `w[:, i2..] -= e · u[i1..i2, i2..]` for the row-major `w [rows, n]`, `e [rows, count]`.
pub(crate) fn lazy_update(
    w: &mut [f32],
    rows: usize,
    n: usize,
    e: &[f32],
    u: &[f32],
    i1: usize,
    i2: usize,
) {
    if i2 >= n {
        return;
    }
    let count = i2 - i1;
    // In column-major terms: Wᵀ[i2.., :] -= U[i1..i2, i2..]ᵀ · Eᵀ.
    let dst = MatMut::from_column_major_slice_with_stride_mut(&mut w[i2..], n - i2, rows, n);
    let lhs = MatRef::from_column_major_slice_with_stride(&u[i1 * n + i2..], n - i2, count, n);
    let rhs = MatRef::from_column_major_slice(e, count, rows);
    matmul(dst, Accum::Add, lhs, rhs, -1.0f32, Par::rayon(0));
}

fn check_shapes(w: &[f32], rows: usize, cols: usize, group: usize) -> Result<()> {
    if rows == 0 || cols == 0 || w.len() != rows * cols {
        return Err(Error::Config(format!(
            "weight has {} values, expected a non-empty {rows}×{cols} matrix",
            w.len()
        )));
    }
    if group == 0 {
        return Err(Error::Config(
            "processing_group_size must be positive".into(),
        ));
    }
    if w.iter().any(|v| !v.is_finite()) {
        return Err(Error::Config(
            "the weight holds NaN or infinite values".into(),
        ));
    }
    Ok(())
}

fn check_hessian(h: &[f32], cols: usize) -> Result<()> {
    if h.len() != cols * cols {
        return Err(Error::Config(format!(
            "the Hessian has {} values, expected {cols}×{cols}",
            h.len()
        )));
    }
    Ok(())
}

/// Runs GPTQ on the row-major `w [rows, cols]` with Hessian `h [cols, cols]`.
pub fn gptq(
    w: &[f32],
    rows: usize,
    cols: usize,
    h: &[f32],
    opts: &GptqOptions,
) -> Result<ObsResult> {
    check_shapes(w, rows, cols, opts.group)?;
    check_hessian(h, cols)?;
    let spec = opts.quant;
    spec.validate()?;
    if let Some(b) = opts.block_size {
        if b == 0 || cols % b != 0 {
            return Err(Error::Config(format!(
                "Block size must completely divide the axis along which blocking is done: {cols} % {b} != 0"
            )));
        }
    }
    let mut w = w.to_vec();

    // Parameters of the unblocked case come from the original weight (before dead columns).
    let mut blocks: Vec<RowParams> = Vec::new();
    if opts.block_size.is_none() {
        blocks.push(find_params(&spec, &w, rows, cols, 0, cols));
    }

    // Dead columns are zeroed by the factorization, which needs the un-permuted Hessian; compute
    // it on a permuted copy instead when act-order is on.
    let perm: Option<Vec<usize>> = if opts.act_order {
        let mut idx: Vec<usize> = (0..cols).collect();
        let d: Vec<f32> = (0..cols)
            .map(|i| {
                if h[i * cols + i] == 0.0 {
                    1.0
                } else {
                    h[i * cols + i]
                }
            })
            .collect();
        idx.sort_by(|&a, &b| d[b].total_cmp(&d[a]));
        Some(idx)
    } else {
        None
    };
    // Zero dead columns on the un-permuted weight first (static blocks see them as zeros).
    for i in 0..cols {
        if h[i * cols + i] == 0.0 {
            for r in 0..rows {
                w[r * cols + i] = 0.0;
            }
        }
    }
    let static_blocks = opts.act_order && opts.block_size.is_some();
    if static_blocks {
        let b = opts.block_size.unwrap();
        for c in (0..cols).step_by(b) {
            blocks.push(find_params(&spec, &w, rows, cols, c, c + b));
        }
    }
    let u = match &perm {
        Some(p) => {
            let mut hp = vec![0.0f32; cols * cols];
            hp.par_chunks_mut(cols).enumerate().for_each(|(i, row)| {
                for (j, v) in row.iter_mut().enumerate() {
                    *v = h[p[i] * cols + p[j]];
                }
            });
            let mut wp = vec![0.0f32; rows * cols];
            wp.par_chunks_mut(cols).enumerate().for_each(|(r, row)| {
                for (j, v) in row.iter_mut().enumerate() {
                    *v = w[r * cols + p[j]];
                }
            });
            w = wp;
            inverse_hessian_factor(&hp, cols, opts.damp, &mut w, rows)?
        }
        None => inverse_hessian_factor(h, cols, opts.damp, &mut w, rows)?,
    };

    let mut loss = 0.0f64;
    let mut qout = vec![0.0f32; rows * cols];
    let mut i1 = 0;
    while i1 < cols {
        let i2 = (i1 + opts.group).min(cols);
        let count = i2 - i1;
        // The parameters each column of this group uses: (column offset in group, params index).
        let mut col_params: Vec<usize> = Vec::with_capacity(count);
        for c in i1..i2 {
            let idx = match (opts.block_size, &perm) {
                (None, _) => 0,
                (Some(b), Some(p)) if static_blocks => p[c] / b,
                (Some(b), _) => {
                    if c % b == 0 {
                        blocks.push(find_params(&spec, &w, rows, cols, c, (c + b).min(cols)));
                    }
                    blocks.len() - 1
                }
            };
            col_params.push(idx);
        }
        let mut e = vec![0.0f32; rows * count];
        let ub: Vec<&[f32]> = (i1..i2).map(|c| &u[c * cols + i1..c * cols + i2]).collect();
        let blocks_ref = &blocks;
        let w_ref = &w;
        let group_loss: f64 = qout
            .par_chunks_mut(cols)
            .zip(e.par_chunks_mut(count))
            .enumerate()
            .map(|(r, (qrow, erow))| {
                let mut wb: Vec<f32> = w_ref[r * cols + i1..r * cols + i2].to_vec();
                let mut l = 0.0f64;
                for i in 0..count {
                    let p = &blocks_ref[col_params[i]];
                    let x = wb[i];
                    let q = spec.quantize(x, p.scale[r], p.zero[r]);
                    let d = ub[i][i];
                    let err = (x - q) / d;
                    l += (err as f64) * (err as f64);
                    let urow = &ub[i][i + 1..];
                    for (wv, &uv) in wb[i + 1..].iter_mut().zip(urow) {
                        *wv -= err * uv;
                    }
                    qrow[i1 + i] = q;
                    erow[i] = err;
                }
                l
            })
            .sum();
        loss += group_loss / 2.0;
        lazy_update(&mut w, rows, cols, &e, &u, i1, i2);
        i1 = i2;
    }

    if let Some(p) = &perm {
        let mut out = vec![0.0f32; rows * cols];
        out.par_chunks_mut(cols).enumerate().for_each(|(r, row)| {
            for (j, &pj) in p.iter().enumerate() {
                row[pj] = qout[r * cols + j];
            }
        });
        qout = out;
    }
    let n_blocks = blocks.len();
    let mut scale = vec![0.0f32; rows * n_blocks];
    let mut zero_point = vec![0.0f32; rows * n_blocks];
    for (b, p) in blocks.iter().enumerate() {
        for r in 0..rows {
            scale[r * n_blocks + b] = p.scale[r];
            zero_point[r * n_blocks + b] = p.zero[r];
        }
    }
    Ok(ObsResult {
        weight: qout,
        scale,
        zero_point,
        n_blocks,
        loss,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn lcg(seed: u64) -> impl FnMut() -> f32 {
        let mut s = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        move || {
            // sum of uniforms ≈ normal
            let mut acc = 0.0f32;
            for _ in 0..4 {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                acc += ((s >> 40) as f32 / (1u64 << 24) as f32) - 0.5;
            }
            acc
        }
    }

    /// Correlated activations `x [tokens, cols]` and `H = 2/1 · XᵀX`.
    pub fn problem(rows: usize, cols: usize, tokens: usize) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let mut g = lcg(7);
        let w: Vec<f32> = (0..rows * cols).map(|_| g() * 0.1).collect();
        let basis: Vec<f32> = (0..4 * cols).map(|_| g()).collect();
        let mut x = vec![0.0f32; tokens * cols];
        for t in 0..tokens {
            let coef: Vec<f32> = (0..4).map(|_| g() * 2.0).collect();
            for c in 0..cols {
                let mut v = g() * 0.3;
                for k in 0..4 {
                    v += coef[k] * basis[k * cols + c];
                }
                x[t * cols + c] = v;
            }
        }
        let mut h = vec![0.0f32; cols * cols];
        for i in 0..cols {
            for j in 0..cols {
                let mut s = 0.0f64;
                for t in 0..tokens {
                    s += x[t * cols + i] as f64 * x[t * cols + j] as f64;
                }
                h[i * cols + j] = (2.0 * s) as f32;
            }
        }
        (w, x, h)
    }

    pub fn recon_error(w: &[f32], q: &[f32], x: &[f32], rows: usize, cols: usize) -> f64 {
        let tokens = x.len() / cols;
        let mut e = 0.0f64;
        for t in 0..tokens {
            for r in 0..rows {
                let mut s = 0.0f64;
                for c in 0..cols {
                    s += (w[r * cols + c] - q[r * cols + c]) as f64 * x[t * cols + c] as f64;
                }
                e += s * s;
            }
        }
        e
    }

    fn rtn(w: &[f32], rows: usize, cols: usize, spec: &QuantSpec) -> Vec<f32> {
        let p = find_params(spec, w, rows, cols, 0, cols);
        (0..rows * cols)
            .map(|i| spec.quantize(w[i], p.scale[i / cols], p.zero[i / cols]))
            .collect()
    }

    fn spec4() -> QuantSpec {
        QuantSpec {
            n_bits: 4,
            symmetric: true,
            per_channel: true,
            normal_float: false,
        }
    }

    #[test]
    fn factor_is_upper_cholesky_of_inverse() {
        let n = 37;
        let (_, _, h) = problem(1, n, 80);
        let mut w = vec![0.0f32; n];
        let u = inverse_hessian_factor(&h, n, 0.01, &mut w, 1).unwrap();
        // (H + damp I) · Uᵀ U ≈ I
        let mean: f64 = (0..n).map(|i| h[i * n + i] as f64).sum::<f64>() / n as f64;
        for i in 0..n {
            for j in 0..n {
                let mut s = 0.0f64;
                for k in 0..n {
                    let hik = h[i * n + k] as f64 + if i == k { 0.01 * mean } else { 0.0 };
                    let mut uu = 0.0f64;
                    for m in 0..n {
                        uu += u[m * n + k] as f64 * u[m * n + j] as f64;
                    }
                    s += hik * uu;
                }
                let want = if i == j { 1.0 } else { 0.0 };
                assert!((s - want).abs() < 2e-3, "{i},{j}: {s}");
            }
            for j in 0..i {
                assert_eq!(u[i * n + j], 0.0);
            }
        }
    }

    #[test]
    fn gptq_beats_rtn_and_stays_on_grid() {
        let (rows, cols) = (24, 64);
        let (w, x, h) = problem(rows, cols, 300);
        for act_order in [false, true] {
            for block in [None, Some(16)] {
                let opts = GptqOptions {
                    quant: spec4(),
                    block_size: block,
                    act_order,
                    damp: 0.01,
                    group: 32,
                };
                let res = gptq(&w, rows, cols, &h, &opts).unwrap();
                let nb = res.n_blocks;
                assert_eq!(nb, block.map_or(1, |b| cols / b));
                for r in 0..rows {
                    for c in 0..cols {
                        let b = block.map_or(0, |b| c / b);
                        let s = res.scale[r * nb + b];
                        let z = res.zero_point[r * nb + b];
                        let q = res.weight[r * cols + c] / s + z;
                        assert!((q - q.round()).abs() < 1e-3 && (0.0..=15.0).contains(&q.round()));
                    }
                }
                let e = recon_error(&w, &res.weight, &x, rows, cols);
                let e_rtn = recon_error(&w, &rtn(&w, rows, cols, &spec4()), &x, rows, cols);
                assert!(
                    e < e_rtn * 0.8,
                    "act_order {act_order} block {block:?}: {e} vs {e_rtn}"
                );
            }
        }
    }

    #[test]
    fn normal_float_values_on_palette() {
        let (rows, cols) = (8, 32);
        let (w, _, h) = problem(rows, cols, 100);
        let quant = QuantSpec {
            normal_float: true,
            ..spec4()
        };
        let opts = GptqOptions {
            quant,
            block_size: None,
            act_order: false,
            damp: 0.01,
            group: 128,
        };
        let res = gptq(&w, rows, cols, &h, &opts).unwrap();
        for r in 0..rows {
            for c in 0..cols {
                let v = res.weight[r * cols + c] / res.scale[r];
                assert!(NF4.iter().any(|p| (p - v).abs() < 1e-5));
            }
        }
    }

    #[test]
    fn dead_columns_and_bad_input() {
        let (rows, cols) = (4, 8);
        let (w, _, mut h) = problem(rows, cols, 50);
        for j in 0..cols {
            h[3 * cols + j] = 0.0;
            h[j * cols + 3] = 0.0;
        }
        let opts = GptqOptions {
            quant: spec4(),
            block_size: None,
            act_order: true,
            damp: 0.01,
            group: 4,
        };
        let res = gptq(&w, rows, cols, &h, &opts).unwrap();
        for r in 0..rows {
            assert_eq!(res.weight[r * cols + 3], 0.0);
        }
        assert!(gptq(&w, rows, cols, &h[1..], &opts).is_err());
        let bad = GptqOptions {
            block_size: Some(3),
            ..opts
        };
        assert!(gptq(&w, rows, cols, &h, &bad).is_err());
    }
}

#[cfg(test)]
mod lazy_tests {
    use super::*;

    #[test]
    fn lazy_update_matches_naive() {
        for &(rows, n, i1, i2) in &[
            (24usize, 64usize, 0usize, 32usize),
            (5, 40, 8, 16),
            (300, 300, 0, 128),
            (3, 9, 0, 4),
        ] {
            let count = i2 - i1;
            let mut g = tests::lcg(1);
            let w0: Vec<f32> = (0..rows * n).map(|_| g()).collect();
            let e: Vec<f32> = (0..rows * count).map(|_| g()).collect();
            let u: Vec<f32> = (0..n * n).map(|_| g()).collect();
            let mut w = w0.clone();
            lazy_update(&mut w, rows, n, &e, &u, i1, i2);
            for r in 0..rows {
                for c in 0..n {
                    let mut want = w0[r * n + c];
                    if c >= i2 {
                        for k in 0..count {
                            want -= e[r * count + k] * u[(i1 + k) * n + c];
                        }
                    }
                    assert!((w[r * n + c] - want).abs() < 1e-3, "{rows} {n} {r} {c}");
                }
            }
        }
    }
}
