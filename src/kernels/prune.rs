//! Weight pruning, bit-exact with coremltools 9.0 (`prune_weights.compress_by_threshold`,
//! `compress_by_magnitude` with and without `block_size`, `compress_by_nm_sparsity`), and
//! `sparse_to_dense` for decompression.
//!
//! Every pruner produces the pruned dense tensor and returns it as coremltools'
//! `SparseParams`: `mask = (value != 0)` and `nonzero = value[value != 0]` in row-major order.
//! Zeros already present (including `-0.0`) are therefore sparse too. Arithmetic on the weights
//! is done as numpy does on fp16/fp32 arrays (f32 compute, rounding to the weight dtype per op).
//!
//! Exactness notes:
//! - `np.percentile(x, q)` (method "linear") is reproduced exactly: rank `(N-1)·(q/100)` in f64,
//!   then numpy's `_lerp` in the weight dtype with the weight `t` cast to that dtype (NEP 50); any
//!   NaN gives a NaN threshold (nothing pruned).
//! - Block norms: `sqrt(sum(x·x))` with numpy's summation order, which depends on memory layout:
//!   when nothing follows the pruned axis in memory (`prod(shape[dim+1..]) == 1`) numpy reduces a
//!   contiguous run with its pairwise f32 sum (rounded once); otherwise it adds the block's rows one
//!   at a time, rounding to the weight dtype after each addition. Verified against numpy 2.4 on x86.
//! - n:m ties: numpy's `argsort` (quicksort kind) is insertion sort for rows shorter than 16 on
//!   this platform, i.e. stable. We always break ties stably (the earlier element, in the
//!   `[..., C]` row order, is pruned first; padding sorts after real zeros). For `m > 16` numpy's
//!   introsort/SIMD sort may break ties differently; only exact ties are affected.
//! - Pruned elements are written as coremltools writes them: an exact 0 for threshold and
//!   percentile pruning (`np.where`), `0 * val` for `target_sparsity == 1` and `val * (1 - mask)`
//!   for n:m, so there a pruned ±inf or NaN becomes NaN and stays in `nonzero`, as in coremltools.

use rayon::prelude::*;

use super::fp16::{dispatch, key_histogram, load8, HalfLanes, LaneKernel, WeightElement};
use super::numel;
use crate::config_err;
use crate::error::Result;
use crate::format_err;

/// The sparse representation: a boolean mask over the flattened tensor and the surviving values.
#[derive(Clone, Debug, PartialEq)]
pub struct Pruned<T> {
    /// `value != 0` per element, row-major, as the packed bits mask tensors store
    /// ([`super::pack::pack_mask`] layout: LSB first, padding bits zero).
    pub mask: Vec<u8>,
    /// Number of elements (of meaningful bits in `mask`).
    pub len: usize,
    /// The nonzero values in row-major order (`popcount(mask)` of them).
    pub nonzero: Vec<T>,
    /// Signal and noise energy `(Σw², Σ(w−ŵ)²)` in f64 of the weight against its pruned form,
    /// summed in fixed pieces (independent of the thread count).
    pub energy: (f64, f64),
}

impl<T> Pruned<T> {
    /// Fraction of zeros (`1 - nnz / N`).
    pub fn sparsity(&self) -> f64 {
        if self.len == 0 {
            return 0.0;
        }
        1.0 - self.nonzero.len() as f64 / self.len as f64
    }

    /// The mask, one bool per element.
    pub fn mask_bools(&self) -> Vec<bool> {
        super::pack::unpack_mask(&self.mask, self.len).expect("the mask holds len bits")
    }
}

/// Pruning either succeeds or is skipped with coremltools' warning text.
#[derive(Clone, Debug, PartialEq)]
pub enum PruneOutcome<T> {
    Pruned(Pruned<T>),
    Skipped(String),
}

/// A Python `repr` of a float (`0.5`, `1.0`, `1e-05`, `1e+16`), for warning texts.
pub fn py_float_repr(x: f64) -> String {
    if x.is_nan() {
        return "nan".into();
    }
    if x.is_infinite() {
        return if x > 0.0 { "inf".into() } else { "-inf".into() };
    }
    if x == 0.0 {
        return if x.is_sign_negative() {
            "-0.0".into()
        } else {
            "0.0".into()
        };
    }
    // Shortest round-trip digits and decimal exponent.
    let sci = format!("{:e}", x.abs());
    let (mant, exp) = sci.split_once('e').unwrap();
    let exp: i32 = exp.parse().unwrap();
    let digits: String = mant.chars().filter(|c| *c != '.').collect();
    let sign = if x < 0.0 { "-" } else { "" };
    if (-4..16).contains(&exp) {
        let n = digits.len() as i32;
        let s = if exp >= 0 {
            if n > exp + 1 {
                format!(
                    "{}.{}",
                    &digits[..(exp + 1) as usize],
                    &digits[(exp + 1) as usize..]
                )
            } else {
                format!("{}{}.0", digits, "0".repeat((exp + 1 - n) as usize))
            }
        } else {
            format!("0.{}{}", "0".repeat((-exp - 1) as usize), digits)
        };
        format!("{sign}{s}")
    } else {
        let m = if digits.len() > 1 {
            format!("{}.{}", &digits[..1], &digits[1..])
        } else {
            digits
        };
        let es = if exp < 0 { "-" } else { "+" };
        format!("{sign}{m}e{es}{:02}", exp.abs())
    }
}

/// For each 8-bit lane mask, the set lanes in increasing order (then zeros): where each kept
/// lane of a group of eight goes when the group is compacted.
const KEPT_LANES: [[u8; 8]; 256] = {
    let mut table = [[0u8; 8]; 256];
    let mut bits = 0;
    while bits < 256 {
        let (mut lane, mut at) = (0, 0);
        while lane < 8 {
            if bits & (1 << lane) != 0 {
                table[bits][at] = lane as u8;
                at += 1;
            }
            lane += 1;
        }
        bits += 1;
    }
    table
};

/// The eight elements at `i` (defaults past the end).
#[inline(always)]
fn load_lanes<T: WeightElement>(w: &[T], i: usize) -> [T; 8] {
    match w.get(i..i + 8) {
        Some(s) => s.try_into().expect("eight elements"),
        None => std::array::from_fn(|l| w.get(i + l).copied().unwrap_or_default()),
    }
}

/// Eight lane flags as the bits of a byte (lane 0 in the lowest).
#[inline(always)]
fn lane_bits(flags: [bool; 8]) -> u8 {
    (0..8).fold(0, |bits, l| bits | (u8::from(flags[l]) << l))
}

/// The value a pruned element becomes: `0 · v` (`by_multiply`, nonzero only for inf/NaN) or an
/// exact 0.
#[inline(always)]
fn pruned_value(x: f32, by_multiply: bool) -> f32 {
    if by_multiply {
        0.0 * x
    } else {
        0.0
    }
}

/// The first pass of [`collect`] over one chunk: its mask bytes, and what the second pass needs.
struct MaskTask<'a, T, F> {
    weight: &'a [T],
    /// Index of `weight[0]` in the whole tensor.
    base: usize,
    by_multiply: bool,
    pruned: &'a F,
    /// One byte per eight elements.
    mask: &'a mut [u8],
}

/// What the first pass learns about a chunk.
struct ChunkMask {
    /// Nonzero values in the chunk.
    kept: usize,
    /// Whether a pruned value stays nonzero (a pruned inf/NaN kept as `0 · v`, i.e. NaN).
    special: bool,
    /// Signal and noise energy of the chunk.
    energy: (f64, f64),
}

impl<T: WeightElement, F: Fn(usize, [f32; 8]) -> [bool; 8]> LaneKernel for MaskTask<'_, T, F> {
    type Output = ChunkMask;
    #[inline(always)]
    fn run<H: HalfLanes>(self, h: H) -> ChunkMask {
        // f32 lane sums within the chunk (plenty for a report), f64 across chunks.
        let (mut signal, mut noise) = ([0f32; 8], [0f32; 8]);
        let (mut kept, mut special) = (0usize, false);
        for i in (0..self.weight.len()).step_by(8) {
            let xs = load8(h, self.weight, i);
            let p = lane_bits((self.pruned)(self.base + i, xs));
            // One loop per quantity, so that each is a vector over the lanes.
            let mut v = [0f32; 8];
            for l in 0..8 {
                v[l] = if p >> l & 1 != 0 {
                    pruned_value(xs[l], self.by_multiply)
                } else {
                    xs[l]
                };
            }
            // Lanes past the end are 0: not kept (padding bits stay zero), no energy.
            let bits = lane_bits(v.map(|x| x != 0.0));
            let kept_pruned = p & bits;
            for l in 0..8 {
                signal[l] += xs[l] * xs[l];
            }
            for l in 0..8 {
                noise[l] += (xs[l] - v[l]) * (xs[l] - v[l]);
            }
            special |= kept_pruned != 0;
            self.mask[i / 8] = bits;
            kept += bits.count_ones() as usize;
        }
        let total = |a: [f32; 8]| a.iter().map(|&v| v as f64).sum::<f64>();
        ChunkMask {
            kept,
            special,
            energy: (total(signal), total(noise)),
        }
    }
}

/// The second pass of [`collect`] over one chunk: its kept values, in order, into `out`. Branch
/// free, eight lanes at a time: the kept lanes (in order, by a table) go to `out[k..k + 8]`,
/// then `k` advances by their count; the last group is written lane by lane.
fn compact_chunk<T: WeightElement>(weight: &[T], mask: &[u8], out: &mut [T]) {
    let mut k = 0;
    for (i, &bits) in (0..weight.len()).step_by(8).zip(mask) {
        let lanes = load_lanes(weight, i);
        let order = &KEPT_LANES[bits as usize];
        match out.get_mut(k..k + 8) {
            Some(o) => {
                for j in 0..8 {
                    o[j] = lanes[order[j] as usize];
                }
            }
            None => {
                for (o, &lane) in out[k..].iter_mut().zip(order) {
                    *o = lanes[lane as usize];
                }
            }
        }
        k += bits.count_ones() as usize;
    }
}

/// [`compact_chunk`] for a chunk where some pruned values stay nonzero: each kept lane is the
/// value itself, or `0 · v` where it was pruned.
fn compact_chunk_special<T: WeightElement>(
    weight: &[T],
    base: usize,
    mask: &[u8],
    pruned: impl Fn(usize, [f32; 8]) -> [bool; 8],
    out: &mut [T],
) {
    let mut k = 0;
    for (i, &bits) in (0..weight.len()).step_by(8).zip(mask) {
        let xs = std::array::from_fn(|l| weight.get(i + l).map_or(0.0, |v| v.to_f32()));
        let p = pruned(base + i, xs);
        for l in (0..8).filter(|l| bits & (1 << l) != 0) {
            out[k] = if p[l] {
                T::from_f32(pruned_value(xs[l], true))
            } else {
                weight[i + l]
            };
            k += 1;
        }
    }
}

/// Builds the sparse representation from per-element decisions, `pruned(i, x)` giving eight
/// of them for elements `i..i + 8` widened to `x` (lanes past the end are ignored): pruned
/// elements become `T(0 · v)` (`by_multiply`, as `0 * val` / `val * (1 - mask)` in coremltools)
/// or an exact 0 (`np.where(..., 0, val)`), kept ones stay `v`; `mask = result != 0`.
///
/// Two passes over the weight: the mask (with each chunk's count of kept values), then each
/// chunk's values straight into their place in `nonzero`, with no buffer in between.
fn collect<T: WeightElement>(
    weight: &[T],
    by_multiply: bool,
    pruned: impl Fn(usize, [f32; 8]) -> [bool; 8] + Sync,
) -> Pruned<T> {
    const CHUNK: usize = 1 << 14;
    let mut mask = vec![0u8; weight.len().div_ceil(8)];
    let chunks: Vec<ChunkMask> = weight
        .par_chunks(CHUNK)
        .zip(mask.par_chunks_mut(CHUNK / 8))
        .enumerate()
        .map(|(c, (w, m))| {
            dispatch(MaskTask {
                weight: w,
                base: c * CHUNK,
                by_multiply,
                pruned: &pruned,
                mask: m,
            })
        })
        .collect();
    let energy = chunks
        .iter()
        .fold((0.0, 0.0), |(s, n), c| (s + c.energy.0, n + c.energy.1));
    let mut nonzero: Vec<T> = bytemuck::zeroed_vec(chunks.iter().map(|c| c.kept).sum());
    let mut places = Vec::with_capacity(chunks.len());
    let mut rest = nonzero.as_mut_slice();
    for c in &chunks {
        let (place, tail) = std::mem::take(&mut rest).split_at_mut(c.kept);
        places.push(place);
        rest = tail;
    }
    places
        .into_par_iter()
        .zip(weight.par_chunks(CHUNK).zip(mask.par_chunks(CHUNK / 8)))
        .zip(&chunks)
        .enumerate()
        .for_each(|(c, ((out, (w, m)), info))| {
            if info.special {
                compact_chunk_special(w, c * CHUNK, m, &pruned, out);
            } else {
                compact_chunk(w, m, out);
            }
        });
    Pruned {
        mask,
        len: weight.len(),
        nonzero,
        energy,
    }
}

/// Threshold pruning: zero every `|w| <= threshold` (the threshold first cast to the weight dtype,
/// so fp16 turns the default `1e-12` into 0). Skipped, with coremltools' warning, when the
/// resulting fraction of zeros is below `minimum_sparsity_percentile`.
pub fn prune_threshold<T: WeightElement>(
    weight: &[T],
    threshold: f64,
    minimum_sparsity_percentile: f64,
) -> PruneOutcome<T> {
    let thr = T::lit(threshold).to_f32();
    let p = collect(weight, false, |_, x| x.map(|v| v.abs() <= thr));
    let zeros = p.len - p.nonzero.len();
    let sparsity = if weight.is_empty() {
        f64::NAN
    } else {
        zeros as f64 / weight.len() as f64
    };
    // `sparsity < msp` is False for NaN (empty weight): not skipped.
    if sparsity < minimum_sparsity_percentile {
        return PruneOutcome::Skipped(format!(
            "weight value has sparsity of {} < minimum_sparsity_percentile {}. Skipped.",
            py_float_repr(sparsity),
            py_float_repr(minimum_sparsity_percentile)
        ));
    }
    PruneOutcome::Pruned(p)
}

/// Sort key of `|x|`: its bit pattern in `T` (monotone for non-negative floats), NaN greatest.
#[inline(always)]
fn mag_key<T: WeightElement>(x: T) -> u32 {
    let (abs, inf) = if T::IS_HALF {
        (0x7FFF, 0x7C00)
    } else {
        (0x7FFF_FFFF, 0x7F80_0000)
    };
    let a = x.to_bits_u32() & abs;
    if a > inf {
        u32::MAX
    } else {
        a
    }
}

/// The `k`-th and `(k+1)`-th smallest magnitude keys (0-based; the second is the first when `k`
/// is the last), or None when any value is NaN. fp16 counts the 32,768 magnitudes in one pass
/// (O(n), no sort); f32 selects.
fn order_stats<T: WeightElement>(values: &[T], k: usize) -> Option<(u32, u32)> {
    let k1 = (k + 1).min(values.len() - 1);
    if T::IS_HALF {
        // Magnitude patterns only: a quarter of the table a histogram of all patterns needs.
        let h = key_histogram(values, 1 << 15, |&v| (v.to_bits_u32() & 0x7FFF) as usize);
        if h[0x7C01..].iter().any(|&n| n > 0) {
            return None;
        }
        // The smallest key whose cumulative count exceeds `rank`.
        let mut cum = 0u64;
        let (mut a, mut b) = (None, None);
        for (key, &n) in h[..=0x7C00].iter().enumerate() {
            cum += n;
            if a.is_none() && cum > k as u64 {
                a = Some(key as u32);
            }
            if cum > k1 as u64 {
                b = Some(key as u32);
                break;
            }
        }
        return a.zip(b);
    }
    let mut keys: Vec<u32> = values.par_iter().map(|&v| mag_key(v)).collect();
    if keys.par_iter().any(|&k| k == u32::MAX) {
        return None;
    }
    let (_, &mut a, right) = keys.select_nth_unstable(k);
    let b = right.iter().copied().min().unwrap_or(a);
    Some((a, b))
}

/// `np.percentile(values, 100·target)` with method "linear", computed exactly as numpy 2.x does
/// for a Python-float `q` on an array of dtype `T` (`q` itself is `target_sparsity * 100`).
/// `values` must be non-negative or NaN (magnitudes); returns NaN when any value is NaN.
pub fn percentile_linear<T: WeightElement>(values: &[T], q: f64) -> Result<T> {
    let n = values.len();
    if n == 0 {
        return Err(format_err!("percentile of an empty tensor"));
    }
    if !(0.0..=100.0).contains(&q) {
        return Err(config_err!("Percentiles must be in the range [0, 100]"));
    }
    let vi = (n as f64 - 1.0) * (q / 100.0);
    // The last rank when `vi` reaches it (numpy then takes the maximum).
    let prev = vi.floor().min((n - 1) as f64);
    let Some((a, b)) = order_stats(values, prev as usize) else {
        return Ok(T::from_f32(f32::NAN));
    };
    let (a, b) = (T::from_bits_u32(a), T::from_bits_u32(b));
    if vi >= (n - 1) as f64 {
        return Ok(a);
    }
    let t = vi - prev;
    // numpy `_lerp(a, b, t)` with `t` a Python float (weak): cast to the dtype.
    let d = b.op(a, |x, y| x - y);
    let mut r = a.op(d.op(T::lit(t), |x, y| x * y), |x, y| x + y);
    if t >= 0.5 {
        r = b.op(d.op(T::lit(1.0 - t), |x, y| x * y), |x, y| x - y);
    }
    Ok(r)
}

/// Prunes where `map <= percentile(map, q)`, with coremltools' q == 0 / q == 100 special cases.
fn prune_by_map<T: WeightElement>(
    weight: &[T],
    map: &[T],
    target_sparsity: f64,
) -> Result<Pruned<T>> {
    let q = target_sparsity * 100.0;
    if q == 100.0 {
        return Ok(collect(weight, true, |_, _| [true; 8]));
    }
    if q == 0.0 || weight.is_empty() {
        return Ok(collect(weight, true, |_, _| [false; 8]));
    }
    let thr = percentile_linear(map, q)?.to_f32();
    if std::ptr::eq(map, weight) {
        // The map is `|w|` itself (unstructured magnitude pruning).
        return Ok(collect(weight, false, |_, x| x.map(|v| v.abs() <= thr)));
    }
    Ok(collect(weight, false, |i, _| {
        std::array::from_fn(|l| map.get(i + l).is_some_and(|m| m.to_f32() <= thr))
    }))
}

fn check_sparsity(target_sparsity: f64) -> Result<()> {
    if !(0.0..=1.0).contains(&target_sparsity) {
        return Err(config_err!(
            "Invalid value of \"target_sparsity\": {}. Needs to be in [0, 1].",
            py_float_repr(target_sparsity)
        ));
    }
    Ok(())
}

/// Unstructured magnitude pruning: zero every element with `|w| <= percentile(|w|, 100·target)`
/// (ties at the threshold are all pruned, so the sparsity can exceed the target slightly).
pub fn prune_magnitude<T: WeightElement>(weight: &[T], target_sparsity: f64) -> Result<Pruned<T>> {
    check_sparsity(target_sparsity)?;
    // The percentile and the comparison both take |w|: the weight is its own map.
    prune_by_map(weight, weight, target_sparsity)
}

fn check_structured(shape: &[usize], n_elems: usize, dim: usize, what: &str) -> Result<()> {
    if dim > 1 {
        return Err(config_err!(
            "{what} pruning only supports dim [0, 1], got {dim}."
        ));
    }
    if !(2..=5).contains(&shape.len()) {
        return Err(config_err!(
            "{what} pruning only supports weights of rank [2, 3, 4, 5], got rank {}",
            shape.len()
        ));
    }
    let needed = numel(shape)?;
    if needed != n_elems {
        return Err(format_err!(
            "weight has {n_elems} elements but its shape {shape:?} needs {needed}"
        ));
    }
    Ok(())
}

/// numpy's `pairwise_sum` for float16/float32 (accumulating in f32), over `n` values `x(i)`.
fn pairwise_sum(n: usize, x: &impl Fn(usize) -> f32, offset: usize) -> f32 {
    if n < 8 {
        let mut r = -0.0f32;
        for i in 0..n {
            r += x(offset + i);
        }
        r
    } else if n <= 128 {
        let mut acc = [0f32; 8];
        for (j, a) in acc.iter_mut().enumerate() {
            *a = x(offset + j);
        }
        let mut i = 8;
        while i < n - n % 8 {
            for (j, a) in acc.iter_mut().enumerate() {
                *a += x(offset + i + j);
            }
            i += 8;
        }
        let mut r =
            ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
        while i < n {
            r += x(offset + i);
            i += 1;
        }
        r
    } else {
        let mut n2 = n / 2;
        n2 -= n2 % 8;
        pairwise_sum(n2, x, offset) + pairwise_sum(n - n2, x, offset + n2)
    }
}

/// Block-sparsity magnitude pruning (coremltools `compress_by_magnitude` with `block_size`):
/// blocks of `block_size` consecutive channels along `dim` (0 or 1; the axis zero-padded to a
/// multiple of the block) are scored by their L2 norm, and every element whose block norm is
/// `<= percentile(norm map, 100·target)` is pruned. Skipped when `block_size > C/2`.
pub fn prune_block<T: WeightElement>(
    weight: &[T],
    shape: &[usize],
    target_sparsity: f64,
    block_size: usize,
    dim: usize,
) -> Result<PruneOutcome<T>> {
    check_sparsity(target_sparsity)?;
    check_structured(shape, weight.len(), dim, "block sparsity")?;
    if block_size < 2 {
        return Err(config_err!(
            "\"block_size\" must be an integer > 1. Got {block_size}."
        ));
    }
    let c = shape[dim];
    if 2 * block_size > c {
        return Ok(PruneOutcome::Skipped(format!(
            "block_size > channel / 2 is not applicable for block sparsity. Got block_size = \
             {block_size}, channel = {c}. Skipped."
        )));
    }
    // View as [A, C, R]: A = dims before `dim`, R = dims after it.
    let a_len: usize = shape[..dim].iter().product();
    let r_len: usize = shape[dim + 1..].iter().product();
    let nb = c.div_ceil(block_size);
    // Squares in the weight dtype (`val * val` on the magnitude map); padding is 0.
    let sq = |a: usize, ch: usize, r: usize| -> f32 {
        if ch >= c {
            return 0.0;
        }
        let v = T::from_f32(weight[(a * c + ch) * r_len + r].to_f32().abs());
        v.op(v, |x, y| x * y).to_f32()
    };
    // One norm per (a, block, r), in that row-major order.
    let contiguous_reduce = r_len == 1;
    let norms: Vec<T> = (0..a_len * nb * r_len)
        .into_par_iter()
        .map(|idx| {
            let r = idx % r_len;
            let g = (idx / r_len) % nb;
            let a = idx / (r_len * nb);
            let base = g * block_size;
            let s = if contiguous_reduce {
                let x = |b: usize| sq(a, base + b, r);
                T::from_f32(pairwise_sum(block_size, &x, 0))
            } else {
                let mut s = T::from_f32(sq(a, base, r));
                for b in 1..block_size {
                    s = T::from_f32(s.to_f32() + sq(a, base + b, r));
                }
                s
            };
            T::from_f32(s.to_f32().sqrt())
        })
        .collect();
    let map: Vec<T> = (0..weight.len())
        .into_par_iter()
        .map(|i| {
            let r = i % r_len;
            let ch = (i / r_len) % c;
            let a = i / (r_len * c);
            norms[(a * nb + ch / block_size) * r_len + r]
        })
        .collect();
    Ok(PruneOutcome::Pruned(prune_by_map(
        weight,
        &map,
        target_sparsity,
    )?))
}

/// Largest `m` for which n:m ranks are counted (O(m) per element) rather than sorted.
const RANK_MAX_M: usize = 16;

/// n:m pruning (coremltools `compress_by_nm_sparsity`): along axis `dim` (0 or 1), every group of
/// `m` consecutive elements (the last group zero-padded) loses its `n` smallest-magnitude entries;
/// padding counts as the smallest. Skipped when `m > C/2`. Ties are broken stably (see the module
/// notes).
pub fn prune_n_m<T: WeightElement>(
    weight: &[T],
    shape: &[usize],
    n: usize,
    m: usize,
    dim: usize,
) -> Result<PruneOutcome<T>> {
    check_structured(shape, weight.len(), dim, "n:m")?;
    if n > m || m == 0 {
        return Err(config_err!(
            "n_m_ratio must satisfy 0 < m and n <= m, got {n}:{m}"
        ));
    }
    let c = shape[dim];
    if 2 * m > c {
        return Ok(PruneOutcome::Skipped(format!(
            "m > channel / 2 is not applicable for n:m pruning. Got m = {m}, channel = {c}. Skipped."
        )));
    }
    let r_len: usize = shape[dim + 1..].iter().product();
    if r_len == 1 && 8 % m == 0 && c % m == 0 {
        // Groups are runs of `m` consecutive elements that never straddle eight lanes: rank them
        // on the lanes themselves, in the one pass that builds the result.
        return Ok(PruneOutcome::Pruned(match m {
            1 => collect(weight, true, |_, x| kept_by_rank::<1>(x, n)),
            2 => collect(weight, true, |_, x| kept_by_rank::<2>(x, n)),
            4 => collect(weight, true, |_, x| kept_by_rank::<4>(x, n)),
            _ => collect(weight, true, |_, x| kept_by_rank::<8>(x, n)),
        }));
    }
    let slab = c * r_len;
    let mut pruned = vec![false; weight.len()];
    pruned
        .par_chunks_mut(slab.max(1))
        .zip(weight.par_chunks(slab.max(1)))
        .for_each(|(out, w)| {
            // Group `g` of column `r`: elements `(g + j) * r_len + r`, j < m; padding has key 0
            // and sorts after the real elements of equal magnitude.
            let key = |ch: usize, r: usize| {
                if ch < c {
                    mag_key(w[ch * r_len + r])
                } else {
                    0
                }
            };
            let mut keys = vec![0u32; m.max(RANK_MAX_M)];
            let mut order: Vec<(u32, usize)> = Vec::with_capacity(m);
            for g in (0..c).step_by(m) {
                for r in 0..r_len {
                    for (j, k) in keys[..m].iter_mut().enumerate() {
                        *k = key(g + j, r);
                    }
                    if m <= RANK_MAX_M {
                        // Stable rank by counting: an element is pruned when fewer than `n`
                        // elements sort before it by (magnitude, position).
                        let keys: &[u32; RANK_MAX_M] = keys[..RANK_MAX_M].try_into().unwrap();
                        for j in 0..m.min(c - g) {
                            let kj = keys[j];
                            let mut rank = 0;
                            for (i, &ki) in keys[..m].iter().enumerate() {
                                rank += ((ki < kj) | ((ki == kj) & (i < j))) as usize;
                            }
                            out[(g + j) * r_len + r] = rank < n;
                        }
                    } else {
                        order.clear();
                        order.extend(keys[..m].iter().copied().zip(0..m));
                        order.sort_unstable();
                        for &(_, j) in &order[..n] {
                            if g + j < c {
                                out[(g + j) * r_len + r] = true;
                            }
                        }
                    }
                }
            }
        });
    Ok(PruneOutcome::Pruned(collect(weight, true, |i, _| {
        std::array::from_fn(|l| pruned.get(i + l).copied().unwrap_or(false))
    })))
}

/// Which of eight lanes, in aligned groups of `M`, are pruned: those with fewer than `n` lanes of
/// their group before them in (magnitude, position) order, `mag_key` order taken on the widened
/// values (widening keeps the order; NaN sorts last).
#[inline(always)]
fn kept_by_rank<const M: usize>(x: [f32; 8], n: usize) -> [bool; 8] {
    let key = x.map(|v| {
        let a = v.to_bits() & 0x7FFF_FFFF;
        if a > 0x7F80_0000 {
            u32::MAX
        } else {
            a
        }
    });
    std::array::from_fn(|j| {
        let first = j / M * M;
        let mut rank = 0;
        for i in first..first + M {
            rank += ((key[i] < key[j]) | ((key[i] == key[j]) & (i < j))) as usize;
        }
        rank < n
    })
}

/// `constexpr_sparse_to_dense`: scatters `nonzero` into a zero tensor of `count` elements at the
/// set bits of `mask` (packed LSB-first, [`super::pack::pack_mask`] layout). The number of set bits
/// among the first `count` must equal `nonzero.len()`; padding bits are ignored.
pub fn sparse_to_dense<T: Copy + Default + Send + Sync>(
    nonzero: &[T],
    mask: &[u8],
    count: usize,
) -> Result<Vec<T>> {
    let set = super::pack::mask_popcount(mask, count)?;
    if set != nonzero.len() {
        return Err(format_err!(
            "the mask has {set} set bits but there are {} nonzero values",
            nonzero.len()
        ));
    }
    // Chunks of whole mask bytes, each starting at the nonzero value that the set bits before
    // it have used up (padding bits only ever sit in the last byte).
    const CHUNK: usize = 1 << 14;
    let bytes = &mask[..count.div_ceil(8)];
    let starts: Vec<usize> = bytes
        .chunks(CHUNK / 8)
        .scan(0, |used, c| {
            let start = *used;
            *used += super::pack::popcount(c);
            Some(start)
        })
        .collect();
    let mut out = vec![T::default(); count];
    out.par_chunks_mut(CHUNK)
        .zip(bytes.par_chunks(CHUNK / 8))
        .zip(starts)
        .for_each(|((out, mask), start)| {
            let mut k = start;
            for (chunk, &byte) in out.chunks_mut(8).zip(mask) {
                let mut bits = byte;
                while bits != 0 {
                    let j = bits.trailing_zeros() as usize;
                    if j >= chunk.len() {
                        break;
                    }
                    chunk[j] = nonzero[k];
                    k += 1;
                    bits &= bits - 1;
                }
            }
        });
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use half::f16;
    use proptest::prelude::*;

    // Golden vectors produced by coremltools 9.0 (numpy 2.4, x86-64): `prune_weights.
    // compress_by_threshold / compress_by_magnitude / compress_by_nm_sparsity` on a random 8x9 fp16
    // (P16, with a zero and a +-tie) and fp32 (P32) matrix; the expected column is the packed mask.
    // Columns: weight, algorithm, (threshold | sparsity | n), (msp*10 | block | m), dim, mask.
    // For "thr" the second column is minimum_sparsity_percentile = 0.1 (as generated).
    const P16: &[u16] = &[
        42420, 11370, 14202, 48744, 46967, 48635, 45077, 12869, 12611, 45654, 0, 12717, 13947,
        9845, 48930, 47749, 13703, 47944, 47715, 12097, 43476, 47128, 14360, 46838, 12112, 49592,
        47713, 45240, 49350, 46377, 13319, 15396, 13938, 16265, 15901, 48778, 45884, 45311, 11742,
        47253, 14562, 14838, 48665, 15248, 47406, 15418, 14468, 45101, 16372, 15135, 10275, 13303,
        16597, 15787, 15257, 13027, 14465, 12480, 48666, 15126, 13987, 48487, 47395, 46063, 13622,
        16106, 9354, 49092, 14643, 45409, 48889, 49296,
    ];
    const P32: &[u32] = &[
        3226229315, 1066484624, 3222379152, 1072056771, 3210208004, 1057821603, 1074197903,
        1071533541, 3226080169, 1085872297, 3233665606, 3205520954, 3225691450, 1080329019,
        3229327065, 3225849240, 3227168944, 3229896773, 3218863931, 1057645802, 3225037498,
        3231883289, 3210209000, 3188487067, 1074119695, 3223212951, 3206246715, 1076580337,
        3225515420, 3198830015, 3213873454, 3230383119, 3200768722, 1079310300, 1087777312,
        3230392592, 1076924519, 1079229496, 1080532348, 3215648841, 1063985237, 3220041617,
        1070860973, 1080330084, 3208951477, 1059301864, 1076064091, 1074279094, 3221263632,
        1082312892, 1068962060, 1054944451, 1036621591, 1074054209, 1078219531, 3228867986,
        3223826435, 3232105997, 1068033115, 1066585902, 3213300339, 3226662659, 1081806648,
        1083798024, 1083665525, 1041614537, 1054222422, 1053995105, 3201363651, 3228293397,
        3219716188, 1075611692,
    ];
    #[allow(clippy::type_complexity)]
    const PCASES: &[(&str, &str, f64, usize, usize, &[u8])] = &[
        (
            "f16",
            "thr",
            1.0,
            0,
            0,
            &[40, 64, 0, 146, 14, 36, 49, 36, 202],
        ),
        (
            "f16",
            "mag",
            0.57,
            0,
            0,
            &[40, 192, 6, 150, 14, 62, 115, 44, 218],
        ),
        (
            "f16",
            "mag",
            0.33,
            0,
            0,
            &[60, 208, 231, 246, 143, 127, 115, 125, 219],
        ),
        (
            "f16",
            "block",
            0.5,
            2,
            1,
            &[60, 96, 0, 155, 15, 236, 57, 60, 254],
        ),
        (
            "f16",
            "block",
            0.4,
            3,
            0,
            &[168, 81, 163, 222, 190, 125, 59, 109, 218],
        ),
        (
            "f16",
            "nm",
            2.0,
            4,
            1,
            &[60, 211, 102, 54, 158, 60, 115, 101, 203],
        ),
        (
            "f16",
            "nm",
            1.0,
            3,
            0,
            &[126, 202, 111, 182, 159, 230, 243, 255, 255],
        ),
        (
            "f16",
            "nm",
            3.0,
            4,
            0,
            &[12, 64, 4, 146, 10, 100, 17, 8, 138],
        ),
        (
            "f32",
            "thr",
            1.0,
            0,
            0,
            &[207, 247, 55, 219, 254, 206, 231, 255, 225],
        ),
        (
            "f32",
            "mag",
            0.57,
            0,
            0,
            &[1, 247, 51, 152, 126, 8, 194, 226, 33],
        ),
        (
            "f32",
            "mag",
            0.33,
            0,
            0,
            &[205, 247, 55, 155, 126, 206, 231, 227, 225],
        ),
        (
            "f32",
            "block",
            0.5,
            2,
            1,
            &[0, 230, 51, 152, 255, 12, 198, 243, 97],
        ),
        (
            "f32",
            "block",
            0.4,
            3,
            0,
            &[203, 151, 47, 183, 108, 217, 242, 194, 133],
        ),
        (
            "f32",
            "nm",
            2.0,
            4,
            1,
            &[197, 103, 50, 159, 108, 218, 166, 230, 225],
        ),
        (
            "f32",
            "nm",
            1.0,
            3,
            0,
            &[103, 247, 115, 154, 254, 142, 231, 255, 255],
        ),
        (
            "f32",
            "nm",
            3.0,
            4,
            0,
            &[0, 70, 48, 128, 78, 10, 2, 194, 33],
        ),
    ];
    const PCT16: &[u16] = &[
        6704, 14241, 13320, 16127, 15859, 15465, 12710, 15575, 12854, 13609, 14581, 15384, 14710,
        15686, 11112, 11714, 14455, 12788, 11772, 12900, 13585, 13903, 16403, 12948, 14860, 11508,
        16855, 16958, 5594, 14442, 15683, 15856, 14480, 15016, 15128, 13721, 12601,
    ];
    const PCT16_OUT: &[(f64, u16)] = &[
        (0.0, 5594),
        (1.0, 6170),
        (33.3, 13318),
        (50.0, 14442),
        (57.00000000000001, 14533),
        (99.0, 16921),
        (100.0, 16958),
    ];

    fn f16s(bits: &[u16]) -> Vec<f16> {
        bits.iter().map(|&b| f16::from_bits(b)).collect()
    }
    fn f32s(bits: &[u32]) -> Vec<f32> {
        bits.iter().map(|&b| f32::from_bits(b)).collect()
    }
    fn pruned<T>(o: PruneOutcome<T>) -> Pruned<T> {
        match o {
            PruneOutcome::Pruned(p) => p,
            PruneOutcome::Skipped(s) => panic!("skipped: {s}"),
        }
    }
    fn dense(p: &Pruned<f32>) -> Vec<f32> {
        sparse_to_dense(&p.nonzero, &p.mask, p.len).unwrap()
    }

    fn check<T: WeightElement>(w: &[T], case: usize) {
        let (_, algo, a, b, dim, want) = PCASES[case];
        let p = match algo {
            "thr" => pruned(prune_threshold(w, a, 0.1)),
            "mag" => prune_magnitude(w, a).unwrap(),
            "block" => pruned(prune_block(w, &[8, 9], a, b, dim).unwrap()),
            _ => pruned(prune_n_m(w, &[8, 9], a as usize, b, dim).unwrap()),
        };
        assert_eq!(p.mask, want, "case {case} {algo}");
        let kept: Vec<T> = w
            .iter()
            .zip(&p.mask_bools())
            .filter(|(_, &m)| m)
            .map(|(v, _)| *v)
            .collect();
        assert_eq!(p.nonzero, kept, "case {case}");
    }

    #[test]
    fn golden_random() {
        let (w16, w32) = (f16s(P16), f32s(P32));
        for (i, c) in PCASES.iter().enumerate() {
            if c.0 == "f16" {
                check(&w16, i);
            } else {
                check(&w32, i);
            }
        }
    }

    #[test]
    fn percentile_matches_numpy() {
        let v = f16s(PCT16);
        for &(q, want) in PCT16_OUT {
            assert_eq!(percentile_linear(&v, q).unwrap().to_bits(), want, "q={q}");
        }
        assert!(percentile_linear(&[1.0f32, f32::NAN], 50.0)
            .unwrap()
            .is_nan());
        assert!(percentile_linear::<f32>(&[], 50.0).is_err());
    }

    #[test]
    fn coremltools_block_smoke() {
        let w = [1., 3., 4., -6., -7., 2., 0., 3., 4., -9., 2., -1.];
        let p = pruned(prune_block(&w, &[4, 3], 0.5, 2, 0).unwrap());
        assert_eq!(
            dense(&p),
            [1., 3., 0., -6., -7., 0., 0., 0., 0., -9., 0., 0.]
        );
        // dim = 1 with padding
        let w = [
            1., 3., 4., 18., 1., -6., -7., 2., 2., 9., 0., 3., 4., 8., 9.,
        ];
        let p = pruned(prune_block(&w, &[3, 5], 0.5, 2, 1).unwrap());
        assert_eq!(
            dense(&p),
            [0., 0., 4., 18., 0., -6., -7., 0., 0., 9., 0., 0., 0., 0., 9.]
        );
        let s = prune_block(&w, &[3, 5], 0.5, 3, 1).unwrap();
        assert_eq!(
            s,
            PruneOutcome::Skipped(
                "block_size > channel / 2 is not applicable for block sparsity. Got block_size = \
                 3, channel = 5. Skipped."
                    .into()
            )
        );
        assert!(prune_block(&w, &[15], 0.5, 2, 0).is_err());
        assert!(prune_block(&w, &[3, 5], 0.5, 2, 2).is_err());
    }

    #[test]
    fn coremltools_n_m_smoke() {
        let w = [
            1., 3., 4., -3., -6., -7., 2., 4., 0., 3., 4., 1., -9., 2., -1., 8.,
        ];
        let p = pruned(prune_n_m(&w, &[4, 4], 1, 2, 1).unwrap());
        assert_eq!(
            dense(&p),
            [0., 3., 4., 0., 0., -7., 0., 4., 0., 3., 4., 0., -9., 0., 0., 8.]
        );
        #[rustfmt::skip]
        let w = [
            1., 3., 4., -3., 2., 4., -6., -7., 2., 4., 6., 8., 0., 4., 4., 1., -9., -4.,
            -9., 2., -1., 8., 3., 9., -1., 5., 0., 8., 9., -3., -3., 3., 6., 3., 6., -1.,
            2., 1., -2., 8., 2., -6.,
        ];
        #[rustfmt::skip]
        let want = [
            0., 0., 0., 0., 0., 0., -6., -7., 0., 4., 0., 8., 0., 0., 4., 0., -9., 0.,
            -9., 0., 0., 0., 0., 9., 0., 5., 0., 8., 9., 0., 0., 0., 6., 0., 0., 0.,
            2., 1., -2., 8., 2., -6.,
        ];
        let p = pruned(prune_n_m(&w, &[7, 6], 2, 3, 0).unwrap());
        assert_eq!(dense(&p), want);
        assert_eq!(
            prune_n_m(&w, &[7, 6], 1, 4, 1).unwrap(),
            PruneOutcome::Skipped(
                "m > channel / 2 is not applicable for n:m pruning. Got m = 4, channel = 6. \
                 Skipped."
                    .into()
            )
        );
        assert!(prune_n_m(&w, &[7, 6], 3, 2, 1).is_err());
    }

    #[test]
    fn threshold_and_special_cases() {
        let w = [0.1f32, 0.2, 0.3, 0.4, 0.5];
        assert_eq!(
            prune_threshold(&w, 0.25, 0.5),
            PruneOutcome::Skipped(
                "weight value has sparsity of 0.4 < minimum_sparsity_percentile 0.5. Skipped."
                    .into()
            )
        );
        let p = pruned(prune_threshold(&w, 0.25, 0.4));
        assert_eq!(p.nonzero, vec![0.3, 0.4, 0.5]);
        // fp16: the default 1e-12 threshold becomes 0.0 (only exact zeros are pruned).
        let w16 = f16s(&[0x0001, 0x0000, 0x8000, 0x3C00]);
        let p = pruned(prune_threshold(&w16, 1e-12, 0.0));
        assert_eq!(p.mask_bools(), vec![true, false, false, true]);
        // q == 100 multiplies by 0 (inf becomes NaN and stays); q == 0 keeps everything.
        let w = [1.0f32, -2.0, f32::INFINITY, 0.0];
        let p = prune_magnitude(&w, 1.0).unwrap();
        assert_eq!(p.mask_bools(), vec![false, false, true, false]);
        assert!(p.nonzero[0].is_nan());
        let p = prune_magnitude(&w, 0.0).unwrap();
        assert_eq!(p.nonzero, vec![1.0, -2.0, f32::INFINITY]);
        assert!(prune_magnitude(&w, 1.2).is_err());
        assert_eq!(py_float_repr(1e-5), "1e-05");
        assert_eq!(py_float_repr(1.0), "1.0");
        assert_eq!(py_float_repr(0.3125), "0.3125");
        assert_eq!(py_float_repr(1e16), "1e+16");
        assert_eq!(py_float_repr(123.5), "123.5");
        assert_eq!(py_float_repr(0.0001), "0.0001");
    }

    #[test]
    fn sparse_to_dense_checks() {
        let d = sparse_to_dense(&[5u8, 6, 7], &[0b1010_0001, 0], 12).unwrap();
        assert_eq!(d, vec![5, 0, 0, 0, 0, 6, 0, 7, 0, 0, 0, 0]);
        assert!(sparse_to_dense(&[5u8, 6], &[0b1010_0001], 8).is_err());
        // Padding bits beyond `count` are ignored.
        assert_eq!(
            sparse_to_dense(&[1u8], &[0b1111_0001], 3).unwrap(),
            vec![1, 0, 0]
        );
    }

    #[test]
    fn sparse_to_dense_across_chunks() {
        // Several parallel chunks, an uneven count, every other pattern of set bits.
        let count = 3 * (1 << 14) + 77;
        let keep: Vec<bool> = (0..count).map(|i| (i * 7919) % 5 < 2).collect();
        let nonzero: Vec<u32> = (0..count as u32).filter(|&i| keep[i as usize]).collect();
        let dense = sparse_to_dense(&nonzero, &crate::kernels::pack::pack_mask(&keep), count);
        let want: Vec<u32> = (0..count as u32)
            .map(|i| if keep[i as usize] { i } else { 0 })
            .collect();
        assert_eq!(dense.unwrap(), want);
    }

    #[test]
    fn energy_counts_the_pruned_values() {
        let w: Vec<f16> = (0..64 * 2048)
            .map(|i| f16::from_f32(((i * 7919) % 4001) as f32 / 1999.0 - 1.0))
            .collect();
        for p in [
            prune_magnitude(&w, 0.5).unwrap(),
            pruned(prune_n_m(&w, &[64, 2048], 2, 4, 1).unwrap()),
            pruned(prune_n_m(&w, &[64, 2048], 1, 3, 0).unwrap()),
        ] {
            let (mut signal, mut noise) = (0.0, 0.0);
            for (v, &kept) in w.iter().zip(&p.mask_bools()) {
                let v = v.to_f64();
                signal += v * v;
                noise += if kept { 0.0 } else { v * v };
            }
            let close = |a: f64, b: f64| (a - b).abs() <= 1e-4 * b;
            assert!(close(p.energy.0, signal) && close(p.energy.1, noise));
        }
    }

    #[test]
    fn deterministic_across_thread_counts() {
        let n = 64 * 2048;
        let w: Vec<f16> = (0..n)
            .map(|i| f16::from_f32(((i * 7919) % 4001) as f32 / 1999.0 - 1.0))
            .collect();
        let run = || {
            (
                prune_magnitude(&w, 0.5).unwrap(),
                prune_block(&w, &[64, 2048], 0.5, 4, 1).unwrap(),
                prune_n_m(&w, &[64, 2048], 2, 4, 0).unwrap(),
            )
        };
        let one = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap()
            .install(run);
        let many = rayon::ThreadPoolBuilder::new()
            .num_threads(4)
            .build()
            .unwrap()
            .install(run);
        assert_eq!(one, many);
    }

    /// The percentile by sorting every magnitude, as numpy does.
    fn percentile_by_sort<T: WeightElement>(values: &[T], q: f64) -> T {
        let mut keys: Vec<u32> = values.iter().map(|&v| mag_key(v)).collect();
        if keys.contains(&u32::MAX) {
            return T::from_f32(f32::NAN);
        }
        keys.sort_unstable();
        let n = keys.len();
        let vi = (n as f64 - 1.0) * (q / 100.0);
        let k = (vi.floor() as usize).min(n - 1);
        let (a, b) = (
            T::from_bits_u32(keys[k]),
            T::from_bits_u32(keys[(k + 1).min(n - 1)]),
        );
        if vi >= (n - 1) as f64 {
            return a;
        }
        let t = vi - vi.floor();
        let d = b.op(a, |x, y| x - y);
        if t >= 0.5 {
            b.op(d.op(T::lit(1.0 - t), |x, y| x * y), |x, y| x - y)
        } else {
            a.op(d.op(T::lit(t), |x, y| x * y), |x, y| x + y)
        }
    }

    proptest! {
        #[test]
        fn histogram_percentile_equals_sort(bits in prop::collection::vec(any::<u16>(), 1..300),
                                            small in any::<bool>(), q in 0.0f64..=100.0) {
            // `small` draws from few magnitudes, so ties are common.
            let w: Vec<f16> = bits.iter().map(|&b| f16::from_bits(if small { b & 0x800F } else { b })).collect();
            let got = percentile_linear(&w, q).unwrap();
            let want = percentile_by_sort(&w, q);
            prop_assert_eq!(got.to_bits() , want.to_bits());
            let w32: Vec<f32> = w.iter().map(|v| v.to_f32()).collect();
            let got = percentile_linear(&w32, q).unwrap();
            prop_assert_eq!(got.to_bits(), percentile_by_sort(&w32, q).to_bits());
        }

        #[test]
        fn n_m_rank_equals_stable_sort(n in 0usize..=6, m in 2usize..=6, rows in 1usize..4, cols in 12usize..30,
                                       dim in 0usize..2, raw in prop::collection::vec(0u16..6, 120)) {
            // Few distinct magnitudes (and signs): ties everywhere.
            prop_assume!(n <= m);
            let shape = [rows * 4, cols];
            let w: Vec<f32> = (0..shape[0] * shape[1]).map(|i| raw[i % raw.len()] as f32 * if i % 3 == 0 { -1.0 } else { 1.0 }).collect();
            let PruneOutcome::Pruned(got) = prune_n_m(&w, &shape, n, m, dim).unwrap() else {
                return Ok(()); // m > C/2
            };
            // Reference: numpy's permute / pad / stable argsort, written directly.
            let (c, r_len) = if dim == 1 { (cols, 1) } else { (shape[0], cols) };
            let a_len = w.len() / (c * r_len);
            let mut want = vec![false; w.len()];
            for a in 0..a_len {
                for r in 0..r_len {
                    for g in (0..c).step_by(m) {
                        let mut idx: Vec<(u32, usize)> = (0..m).map(|j| (if g + j < c { mag_key(w[(a * c + g + j) * r_len + r]) } else { 0 }, j)).collect();
                        idx.sort();
                        for &(_, j) in &idx[..n] {
                            if g + j < c { want[(a * c + g + j) * r_len + r] = true; }
                        }
                    }
                }
            }
            let want_mask: Vec<bool> = w.iter().zip(&want).map(|(&v, &p)| !p && v != 0.0).collect();
            prop_assert_eq!(got.mask_bools(), want_mask);
        }

        #[test]
        fn n_m_sparsity_exact(n in 0usize..=4, dim in 0usize..2, rows in 1usize..5, k in 1usize..4,
                              seed in any::<u64>()) {
            let m = 4;
            let shape = if dim == 1 { [rows, 2 * m * k] } else { [2 * m * k, rows] };
            let len = shape[0] * shape[1];
            let w: Vec<f32> = (0..len).map(|i| {
                let x = (seed.wrapping_add(i as u64).wrapping_mul(0x9E3779B97F4A7C15) >> 40) as f32;
                x + 1.0
            }).collect();
            let p = pruned(prune_n_m(&w, &shape, n, m, dim).unwrap());
            prop_assert_eq!(p.len - p.nonzero.len(), len / m * n);
        }

        #[test]
        fn block_sparsity_exact(blocks in 2usize..6, b in 2usize..4, cols in 1usize..4, dim in 0usize..2,
                                 seed in any::<u64>()) {
            // Distinct block norms, divisible channel count: sparsity equals the target exactly.
            let c = blocks * b;
            let shape = if dim == 0 { [c, cols] } else { [cols, c] };
            let len = c * cols;
            let w: Vec<f32> = (0..len).map(|i| {
                let x = (seed.wrapping_add(i as u64).wrapping_mul(0x9E3779B97F4A7C15) >> 44) as f32;
                x + 1.0
            }).collect();
            let target = 0.5;
            let p = pruned(prune_block(&w, &shape, target, b, dim).unwrap());
            // The map has `blocks*cols` distinct norms, each repeated b times.
            let zeros = p.len - p.nonzero.len();
            let groups = blocks * cols;
            if groups % 2 == 1 {
                prop_assert!(zeros >= len / 2);
            } else {
                prop_assert_eq!(zeros, len / 2);
            }
        }

        #[test]
        fn magnitude_kept_values_unchanged(vals in prop::collection::vec(-10.0f32..10.0, 1..200),
                                            t in 0.0f64..=1.0) {
            let p = prune_magnitude(&vals, t).unwrap();
            let d = sparse_to_dense(&p.nonzero, &p.mask, vals.len()).unwrap();
            for (x, y) in vals.iter().zip(&d) {
                prop_assert!(*y == 0.0 || x == y);
            }
            // At least the target fraction is pruned (ties can only add).
            let zeros = (p.len - p.nonzero.len()) as f64;
            prop_assert!(zeros + 1.0 >= t * (vals.len() as f64 - 1.0));
        }
    }
}
