//! Linear (affine) and linear-symmetric weight quantization, bit-exact with coremltools 9.0
//! (`optimize._utils.compute_qparams_by_dtype` / `quantize_weight_by_dtype`), and the two
//! dequantization ops (`constexpr_affine_dequantize`, iOS16; `constexpr_blockwise_shift_scale`,
//! iOS18) exactly as coremltools' value inference computes them.
//!
//! Numerics: numpy evaluates every elementwise op on an fp16 array in f32 and rounds the result
//! back to fp16 (round half to even), and Python scalars (`0.0`, `qmax - qmin`, `qmin`) are cast to
//! the array dtype first (NEP 50). [`WeightElement::op`] reproduces exactly that, one op at a time, so
//! codes, scales and zero points match bit for bit for fp16 and fp32 weights.
//!
//! Degenerate inputs, as coremltools behaves on x86-64 (where a NaN cast to an integer gives 0):
//! - an all-zero block has scale `+0.0`, codes 0 and zero point 0 (`qmax/2` for symmetric
//!   unsigned, whose dequantization then gives `-0.0`);
//! - a block whose scale underflows to 0 (tiny subnormal values) quantizes nonzero values to the
//!   clip bounds and zeros to 0;
//! - a block containing NaN has a NaN scale, codes 0 and zero point 0 (`qmax/2` for symmetric
//!   unsigned). The NaN's payload bits are those of x86 propagation, not guaranteed elsewhere;
//! - ±inf is not rejected here (coremltools' pass skips such weights before calling the kernel;
//!   callers should do the same, as the passes do with `lut::all_finite`); the arithmetic is still followed
//!   exactly.
//!
//! The sign of a zero `vmin`/`vmax` is the one place numpy is platform-dependent (its SIMD
//! `minimum`/`maximum` pick either zero); we canonicalize both to `+0.0`, which is what coremltools
//! produces on x86-64 and only affects the sign of the scale of an all-zero block.

use std::fmt::Debug;

use half::f16;
use rayon::prelude::*;

use crate::error::Result;
use crate::{config_err, format_err};

use std::array::from_fn;

use crate::kernels::fp16::{
    dispatch, narrow_into, widen_into, HalfLanes, LaneKernel, WeightElement, TILE,
};
use crate::kernels::numel;
use crate::kernels::pack::{self, PackElem, Packed};

/// The integer storage type of the codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum QuantDtype {
    Int8,
    UInt8,
    Int4,
    UInt4,
}

impl QuantDtype {
    pub fn from_bits(nbits: u32, signed: bool) -> Result<Self> {
        match (nbits, signed) {
            (8, true) => Ok(Self::Int8),
            (8, false) => Ok(Self::UInt8),
            (4, true) => Ok(Self::Int4),
            (4, false) => Ok(Self::UInt4),
            _ => Err(config_err!(
                "Invalid dtype. Should be int4/8 or uint4/8, but got {}int{nbits}",
                if signed { "" } else { "u" }
            )),
        }
    }
    pub fn nbits(self) -> u32 {
        match self {
            Self::Int8 | Self::UInt8 => 8,
            Self::Int4 | Self::UInt4 => 4,
        }
    }
    pub fn signed(self) -> bool {
        matches!(self, Self::Int8 | Self::Int4)
    }
    /// The MIL type name ("int8", "uint4", ...).
    pub fn name(self) -> &'static str {
        match self {
            Self::Int8 => "int8",
            Self::UInt8 => "uint8",
            Self::Int4 => "int4",
            Self::UInt4 => "uint4",
        }
    }
}

/// `LINEAR` (affine, range always contains 0) or `LINEAR_SYMMETRIC`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum QuantMode {
    Linear,
    LinearSymmetric,
}

/// `(qmin, qmax)` as coremltools' `get_quant_range`: symmetric drops the most negative signed
/// code, or the top unsigned code.
pub fn quant_range(dtype: QuantDtype, mode: QuantMode) -> (i32, i32) {
    let n = dtype.nbits();
    let (mut lo, mut hi) = if dtype.signed() {
        (-(1i32 << (n - 1)), (1i32 << (n - 1)) - 1)
    } else {
        (0, (1i32 << n) - 1)
    };
    if mode == QuantMode::LinearSymmetric {
        if dtype.signed() {
            lo += 1;
        } else {
            hi -= 1;
        }
    }
    (lo, hi)
}

/// Integer codes in their storage form, as weight.bin holds them: one byte per code for 8-bit
/// types (two's complement when signed), `nbits`-wide fields (see [`super::pack`]) for 4-bit
/// ones.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Codes {
    dtype: QuantDtype,
    fields: Packed,
}

impl Codes {
    /// Codes of `dtype` from their values; an error when one does not fit the type.
    pub fn pack<V: PackElem>(dtype: QuantDtype, values: &[V]) -> Result<Self> {
        Ok(Codes {
            dtype,
            fields: Packed::pack(values, dtype.nbits())?,
        })
    }
    /// No codes.
    pub fn empty(dtype: QuantDtype) -> Self {
        Codes::pack::<u8>(dtype, &[]).expect("no values")
    }
    pub fn dtype(&self) -> QuantDtype {
        self.dtype
    }
    pub fn len(&self) -> usize {
        self.fields.len()
    }
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }
    /// Element `i` widened.
    pub fn get(&self, i: usize) -> i32 {
        let field = self.fields.field(i);
        if self.dtype.signed() {
            i8::from_field(field, self.dtype.nbits()) as i32
        } else {
            field as i32
        }
    }
    /// The stored bytes.
    pub fn bytes(&self) -> &[u8] {
        self.fields.bytes()
    }
    pub fn into_bytes(self) -> Vec<u8> {
        self.fields.into_bytes()
    }
    /// Signed codes, one byte each (no copy for 8-bit codes).
    pub fn into_signed(self) -> Vec<i8> {
        match self.dtype.nbits() {
            8 => bytemuck::allocation::cast_vec(self.fields.into_bytes()),
            _ => self.fields.unpack(),
        }
    }
    /// Unsigned codes, one byte each (no copy for 8-bit codes).
    pub fn into_unsigned(self) -> Vec<u8> {
        match self.dtype.nbits() {
            8 => self.fields.into_bytes(),
            _ => self.fields.unpack(),
        }
    }
}

/// The result of quantizing one weight.
#[derive(Clone, Debug, PartialEq)]
pub struct Quantized<T> {
    pub dtype: QuantDtype,
    pub mode: QuantMode,
    /// One code per weight element, row-major, shape of the weight.
    pub codes: Codes,
    /// One scale per block, in the weight dtype, row-major over `scale_shape`.
    pub scale: Vec<T>,
    /// Same rank as the weight: `dim / block` on blocked axes, 1 elsewhere.
    pub scale_shape: Vec<usize>,
    /// Same shape and storage type as `scale`'s blocks; `None` for symmetric signed.
    pub zero_point: Option<Codes>,
    /// Signal and noise energy `(Σw², Σ(w−ŵ)²)` in f64, ŵ being the weight as
    /// `constexpr_blockwise_shift_scale` restores it; summed in fixed pieces, so it does not
    /// depend on the thread count.
    pub energy: (f64, f64),
}

/// Quantization either succeeds or is skipped with coremltools' warning text.
#[derive(Clone, Debug, PartialEq)]
pub enum QuantizeOutcome<T> {
    Quantized(Quantized<T>),
    Skipped(String),
}

/// How a tensor of `shape` is tiled into blocks of `block` (effective, nonzero) sizes.
struct Tiling {
    shape: Vec<usize>,
    block: Vec<usize>,
    nblocks: Vec<usize>,
    /// Length of the last axis (one "row").
    row_len: usize,
    /// Number of rows (product of all but the last dim).
    rows: usize,
    /// Blocks along the last axis.
    last_blocks: usize,
    /// Number of block rows (product of `nblocks` over all but the last axis).
    block_rows: usize,
}

impl Tiling {
    /// `block_sizes[i] == 0` means the whole axis. All dims must be divisible (checked by caller).
    fn new(shape: &[usize], block_sizes: &[usize]) -> Self {
        let block: Vec<usize> = shape
            .iter()
            .zip(block_sizes)
            .map(|(&d, &b)| if b == 0 { d } else { b })
            .collect();
        let nblocks: Vec<usize> = shape
            .iter()
            .zip(&block)
            .map(|(&d, &b)| d.checked_div(b).unwrap_or(1))
            .collect();
        let r = shape.len();
        let (row_len, last_blocks) = if r == 0 {
            (1, 1)
        } else {
            (shape[r - 1], nblocks[r - 1])
        };
        let rows = if r == 0 {
            1
        } else {
            shape[..r - 1].iter().product()
        };
        let block_rows = if r == 0 {
            1
        } else {
            nblocks[..r - 1].iter().product()
        };
        Tiling {
            shape: shape.to_vec(),
            block,
            nblocks,
            row_len,
            rows,
            last_blocks,
            block_rows,
        }
    }

    fn last_block_len(&self) -> usize {
        self.block.last().copied().unwrap_or(1)
    }

    /// The block row of a row (ravel of `outer_index / block` over all but the last axis).
    fn block_row_of(&self, mut row: usize) -> usize {
        let r = self.shape.len();
        if r <= 1 {
            return 0;
        }
        let mut g = 0usize;
        let mut mul = 1usize;
        for k in (0..r - 1).rev() {
            let i = row % self.shape[k];
            row /= self.shape[k];
            g += (i / self.block[k].max(1)) * mul;
            mul *= self.nblocks[k];
        }
        g
    }

    /// Rows grouped by block row, each group in increasing row order (a counting sort).
    fn rows_by_block_row(&self) -> (Vec<usize>, Vec<usize>) {
        let of: Vec<usize> = (0..self.rows).map(|r| self.block_row_of(r)).collect();
        let mut start = vec![0usize; self.block_rows + 1];
        for &g in &of {
            start[g + 1] += 1;
        }
        for g in 0..self.block_rows {
            start[g + 1] += start[g];
        }
        let mut fill = start.clone();
        let mut order = vec![0usize; self.rows];
        for (r, &g) in of.iter().enumerate() {
            order[fill[g]] = r;
            fill[g] += 1;
        }
        (start, order)
    }
}

/// Checks the block sizes; `Some(warning)` when coremltools would skip the op.
fn check_blocks(shape: &[usize], block_sizes: &[usize]) -> Result<Option<String>> {
    if block_sizes.len() != shape.len() {
        return Err(config_err!(
            "Each axis should have a block size, which means len(block_sizes) must be equal to \
             weight's rank, but got {} vs {}",
            block_sizes.len(),
            shape.len()
        ));
    }
    for (axis, (&d, &b)) in shape.iter().zip(block_sizes).enumerate() {
        if b > 0 && d % b != 0 {
            return Ok(Some(format!(
                "Invalid block_sizes; On {axis}th axis, the dim size {d} is not divisible by \
                 block size {b}. Unable to perform structured quantization."
            )));
        }
    }
    Ok(None)
}

// ------------------------------------------------------------------------------------------------
// Quantization
//
// Three steps, each over eight lanes at a time (see `fp16::dispatch`): per-block min/max, per-block
// scale and zero point, per-element codes. When every block lies within one row (per-block and
// per-channel quantization of a linear weight) the three are fused row by row, so the weight is
// read once. Every step does exactly the scalar, op-by-op arithmetic described in the module notes.

/// Min, max and NaN presence of one block. NaN never enters min/max; which zero an extreme keeps
/// does not matter (it is canonicalized or its absolute value is taken).
#[derive(Clone, Copy)]
struct Stat {
    mn: f32,
    mx: f32,
    nan: bool,
}

const NO_STAT: Stat = Stat {
    mn: f32::INFINITY,
    mx: f32::NEG_INFINITY,
    nan: false,
};

#[inline(always)]
fn lt_min(v: f32, m: f32) -> f32 {
    if v < m {
        v
    } else {
        m
    }
}

#[inline(always)]
fn gt_max(v: f32, m: f32) -> f32 {
    if v > m {
        v
    } else {
        m
    }
}

/// Merges one widened row (exactly `stats.len() * bl` values) into the stats of its blocks.
#[inline(always)]
fn reduce_row(x: &[f32], bl: usize, stats: &mut [Stat]) {
    for (st, blk) in stats.iter_mut().zip(x.chunks_exact(bl)) {
        let (mut mn, mut mx, mut nan) = ([st.mn; 8], [st.mx; 8], [st.nan; 8]);
        let mut chunks = blk.chunks_exact(8);
        for c in &mut chunks {
            for l in 0..8 {
                mn[l] = lt_min(c[l], mn[l]);
                mx[l] = gt_max(c[l], mx[l]);
                nan[l] |= c[l].is_nan();
            }
        }
        for &v in chunks.remainder() {
            mn[0] = lt_min(v, mn[0]);
            mx[0] = gt_max(v, mx[0]);
            nan[0] |= v.is_nan();
        }
        *st = Stat {
            mn: mn.into_iter().fold(f32::INFINITY, lt_min),
            mx: mx.into_iter().fold(f32::NEG_INFINITY, gt_max),
            nan: nan.contains(&true),
        };
    }
}

/// The constants of one call, as f32 values of the weight dtype (Python scalars cast to it).
#[derive(Clone, Copy)]
struct QConsts {
    linear: bool,
    qlo: f32,
    qhi: f32,
    /// `qmax - qmin`.
    qrange: f32,
    /// The zero point of symmetric modes: `qmax // 2` unsigned, 0 (none) signed.
    sym_zp: f32,
    /// Width of a stored code.
    bits: u32,
}

impl QConsts {
    fn new<T: WeightElement>(dtype: QuantDtype, mode: QuantMode) -> Self {
        let (qmin, qmax) = quant_range(dtype, mode);
        let lit = |x: i32| T::lit(x as f64).to_f32();
        QConsts {
            linear: mode == QuantMode::Linear,
            qlo: lit(qmin),
            qhi: lit(qmax),
            qrange: lit(qmax - qmin),
            sym_zp: if dtype.signed() { 0.0 } else { lit(qmax / 2) },
            bits: dtype.nbits(),
        }
    }
}

/// Scale and zero point of one block, as f32 values of the weight dtype. The zero point is 0
/// where there is none: adding it changes no code.
#[derive(Clone, Copy, Default)]
struct Param {
    scale: f32,
    zp: f32,
}

/// numpy `clip(x, lo, hi)`: NaN stays NaN.
#[inline(always)]
fn clip(x: f32, lo: f32, hi: f32) -> f32 {
    if x < lo {
        lo
    } else if x > hi {
        hi
    } else {
        x
    }
}

/// A block's parameters where the weight dtype's arithmetic overflows (fp16 extremes near
/// ±65504: `hi − lo` or `qmax · lo` leave fp16's range, and coremltools gets an infinite scale or
/// a NaN zero point): the same formulas in f64, each result rounded once to the weight dtype.
#[cold]
fn wide_param<T: WeightElement>(k: &QConsts, lo: f32, hi: f32) -> Param {
    let (lo, hi) = (lo as f64, hi as f64);
    let range = hi - lo;
    let zp = if k.linear {
        let z = ((k.qlo as f64 * hi - k.qhi as f64 * lo) / range).round_ties_even();
        z.clamp(k.qlo as f64, k.qhi as f64) as f32
    } else {
        k.sym_zp
    };
    Param {
        scale: T::from_f64(range / k.qrange as f64).to_f32(),
        zp,
    }
}

/// One tile-wide stage: `f` of each of the first `n` elements, rounded to `T` (the rest 0).
#[inline(always)]
fn stage<T: WeightElement, H: HalfLanes>(h: H, n: usize, f: impl Fn(usize) -> f32) -> [f32; TILE] {
    let mut v = [0f32; TILE];
    for (i, v) in v[..n].iter_mut().enumerate() {
        *v = f(i);
    }
    T::round_slice(h, &mut v[..n]);
    v
}

/// coremltools' `compute_qparams_by_dtype` for any number of blocks, in tile-wide stages (each
/// numpy op one loop over up to [`TILE`] blocks, then one rounding to `T`).
#[inline(always)]
fn params_into<T: WeightElement, H: HalfLanes>(
    h: H,
    k: &QConsts,
    stats: &[Stat],
    out: &mut [Param],
) {
    for (s, out) in stats.chunks(TILE).zip(out.chunks_mut(TILE)) {
        let n = s.len();
        let or_nan = |l: usize, v: f32| if s[l].nan { f32::NAN } else { v };
        // The extremes are values of `T` (or NaN), as are their negations and ±0: no rounding.
        let (lo, hi): ([f32; TILE], [f32; TILE]) = if k.linear {
            // minimum(0.0, vmin), maximum(0.0, vmax); zeros canonicalized to +0.0.
            (
                from_fn(|l| {
                    if l < n {
                        or_nan(l, lt_min(s[l].mn, 0.0) + 0.0)
                    } else {
                        0.0
                    }
                }),
                from_fn(|l| {
                    if l < n {
                        or_nan(l, gt_max(s[l].mx, 0.0) + 0.0)
                    } else {
                        0.0
                    }
                }),
            )
        } else {
            let m: [f32; TILE] = from_fn(|l| {
                if l < n {
                    or_nan(l, gt_max(s[l].mn.abs(), s[l].mx.abs()))
                } else {
                    0.0
                }
            });
            (m.map(|v| -v), m)
        };
        let range = stage::<T, H>(h, n, |l| hi[l] - lo[l]);
        let scale = stage::<T, H>(h, n, |l| range[l] / k.qrange);
        // The zero point before rounding and clipping (0 for symmetric modes).
        let unclipped = if k.linear {
            let a = stage::<T, H>(h, n, |l| k.qlo * hi[l]);
            let b = stage::<T, H>(h, n, |l| k.qhi * lo[l]);
            let d = stage::<T, H>(h, n, |l| a[l] - b[l]);
            stage::<T, H>(h, n, |l| d[l] / range[l])
        } else {
            [0.0; TILE]
        };
        for (l, o) in out.iter_mut().enumerate() {
            // `rint` of a value of `T` is one too (below 2048 in magnitude an integer that f16
            // holds exactly, above it the value itself): no rounding.
            let zp = if k.linear {
                clip(rint(unclipped[l]), k.qlo, k.qhi)
            } else {
                k.sym_zp
            };
            let overflowed = !(scale[l].is_finite() && unclipped[l].is_finite());
            *o = if overflowed && lo[l].is_finite() && hi[l].is_finite() && hi[l] > lo[l] {
                wide_param::<T>(k, lo[l], hi[l])
            } else {
                Param {
                    scale: scale[l],
                    zp,
                }
            };
        }
    }
}

/// `np.rint` (round half to even). Written as a magic-number addition rather than
/// `f32::round_ties_even`, which LLVM turns into per-element library or f16 rounding calls where
/// the target has no rounding instruction. Adding 2^23 to |x| < 2^23 rounds to an integer (ties
/// to even, as 2^23 is even) exactly; larger values, infinities and NaN pass through unchanged,
/// as in `rint`.
#[inline(always)]
fn rint(x: f32) -> f32 {
    const TWO23: f32 = 8_388_608.0;
    let a = x.abs();
    if a < TWO23 {
        ((a + TWO23) - TWO23).copysign(x)
    } else {
        x
    }
}

/// `clip(q, qmin, qmax)` cast to an integer (NaN to 0), for `q` already rounded to an integer.
#[inline(always)]
fn code_of(k: &QConsts, q: f32) -> i32 {
    let v = clip(q, k.qlo, k.qhi);
    let v = if v.is_nan() { 0.0 } else { v };
    // An integer in [-2^22, 2^22) plus 1.5·2^23 is exact and its low mantissa bits are the
    // integer: a cast that vectorizes (`as i32` saturates element by element).
    (v + 12_582_912.0).to_bits() as i32 - 0x4B40_0000
}

/// Fills `s` and `z` with the per-element scale and zero point of a row of blocks of `bl`
/// (the padding after the row gets scale 1 and zero point 0).
fn expand_params(params: &[Param], bl: usize, s: &mut [f32], z: &mut [f32]) {
    let n = params.len() * bl;
    for (p, (sb, zb)) in params
        .iter()
        .zip(s[..n].chunks_exact_mut(bl).zip(z[..n].chunks_exact_mut(bl)))
    {
        sb.fill(p.scale);
        zb.fill(p.zp);
    }
    s[n..].fill(1.0);
    z[n..].fill(0.0);
}

/// Per-row scratch buffers, padded to whole lanes.
struct RowBufs {
    x: Vec<f32>,
    s: Vec<f32>,
    z: Vec<f32>,
}

impl RowBufs {
    fn new(row_len: usize) -> Self {
        let n = row_len.div_ceil(8) * 8;
        RowBufs {
            x: vec![0.0; n],
            s: vec![0.0; n],
            z: vec![0.0; n],
        }
    }
}

/// The codes of one widened row (`b.x`) with its blocks' parameters; adds the row's signal and
/// noise energy against the codes dequantized as `constexpr_blockwise_shift_scale` restores them
/// to `energy` (summed in f32 lanes within the row, plenty for a signal-to-noise report, then in
/// f64).
///
/// Tile by tile, each numpy op is one loop over the tile followed by one rounding of the tile to
/// `T`: `x / scale`, then the clipped codes of `rint(·) + zp` and their dequantized values.
#[inline(always)]
fn codes_row<T: WeightElement, C: Code, H: HalfLanes>(
    h: H,
    k: &QConsts,
    b: &mut RowBufs,
    bl: usize,
    params: &[Param],
    out: &mut [C],
    energy: &mut ([f64; 8], [f64; 8]),
) {
    let n = out.len();
    expand_params(params, bl, &mut b.s, &mut b.z);
    let mut noise = [0f32; 8];
    let mut tile = [0f32; TILE];
    for (((x, s), z), out) in b.x[..n]
        .chunks(TILE)
        .zip(b.s.chunks(TILE))
        .zip(b.z.chunks(TILE))
        .zip(out.chunks_mut(TILE))
    {
        let q = &mut tile[..x.len()];
        for (q, (x, s)) in q.iter_mut().zip(x.iter().zip(s)) {
            *q = x / s;
        }
        T::round_slice(h, q);
        // numpy rounds `rint(q) + zp` to T before clipping; both are integers (or NaN, inf), so
        // the f32 sum is exact and that rounding changes nothing the clip keeps: sums within
        // ±2048 are exact in f16, and f16 rounds larger ones to values still beyond every code
        // range (at most 8 bits), which clip to the same end.
        for (q, z) in q.iter_mut().zip(z) {
            *q = rint(*q) + z;
        }
        for (q, ((o, s), z)) in q.iter_mut().zip(out.iter_mut().zip(s).zip(z)) {
            let c = code_of(k, *q);
            *o = C::from_i32(c);
            // `constexpr_blockwise_shift_scale` rounds c, c − offset and scale·(c − offset) to
            // T, with the stored offset (the zero point, 0 where it is NaN, see `quantize`);
            // codes and offsets are integers below 2^8, so the first two are exact and one
            // rounding of the f32 expression gives the same value.
            let offset = if z.is_nan() { 0.0 } else { *z };
            *q = (c as f32 - offset) * s;
        }
        T::round_slice(h, q);
        let (mut xs, mut rs) = (x.chunks_exact(8), q.chunks_exact(8));
        for (x, r) in (&mut xs).zip(&mut rs) {
            for l in 0..8 {
                noise[l] += (x[l] - r[l]) * (x[l] - r[l]);
            }
        }
        for (l, (x, r)) in xs.remainder().iter().zip(rs.remainder()).enumerate() {
            noise[l] += (x - r) * (x - r);
        }
    }
    // The signal in a loop of its own (in one loop with the noise, the two sums would be
    // vectorized across each other instead of the lanes); padding lanes are 0.
    let mut signal = [0f32; 8];
    for x in b.x.chunks_exact(8) {
        for l in 0..8 {
            signal[l] += x[l] * x[l];
        }
    }
    for l in 0..8 {
        energy.0[l] += signal[l] as f64;
        energy.1[l] += noise[l] as f64;
    }
}

/// The lane sums of an energy accumulator.
fn energy_total(acc: &([f64; 8], [f64; 8])) -> (f64, f64) {
    (acc.0.iter().sum(), acc.1.iter().sum())
}

/// Adds per-task energies in task order (a fixed order, whatever the thread count).
fn sum_energies(parts: impl IntoIterator<Item = (f64, f64)>) -> (f64, f64) {
    parts
        .into_iter()
        .fold((0.0, 0.0), |(s, n), (a, b)| (s + a, n + b))
}

/// Rows per parallel task: about 32K elements (fixed, so results do not depend on threads), and
/// a multiple of eight elements, so that every task's packed codes start on a byte.
fn rows_per_task(row_len: usize) -> usize {
    let rows = ((1usize << 15) / row_len.max(1)).max(1);
    let mut whole = 8;
    while row_len % whole != 0 {
        whole /= 2;
    }
    rows.next_multiple_of(8 / whole)
}

/// Stores a row's codes as fields `first..` of a task's packed codes.
#[inline(always)]
fn store_codes<C: PackElem>(row: &[C], bits: u32, out: &mut [u8], first: usize) {
    pack::pack_at(row, bits, out, first).expect("codes are clipped to their type's range");
}

/// Stats, parameters and codes of whole rows whose blocks do not span rows.
struct RowLocalTask<'a, T, C> {
    weight: &'a [T],
    t: &'a Tiling,
    k: QConsts,
    params: &'a mut [Param],
    /// The task's codes, packed.
    codes: &'a mut [u8],
    _code: std::marker::PhantomData<C>,
}

impl<T: WeightElement, C: Code> LaneKernel for RowLocalTask<'_, T, C> {
    /// The energy.
    type Output = (f64, f64);
    #[inline(always)]
    fn run<H: HalfLanes>(self, h: H) -> Self::Output {
        let (row_len, nb, bl) = (self.t.row_len, self.t.last_blocks, self.t.last_block_len());
        let mut b = RowBufs::new(row_len);
        let mut row_codes = vec![C::default(); row_len];
        let mut stats = vec![NO_STAT; nb];
        let mut energy = ([0f64; 8], [0f64; 8]);
        for (i, (w, p)) in self
            .weight
            .chunks_exact(row_len)
            .zip(self.params.chunks_exact_mut(nb))
            .enumerate()
        {
            widen_into(h, w, &mut b.x);
            stats.fill(NO_STAT);
            reduce_row(&b.x[..row_len], bl, &mut stats);
            params_into::<T, H>(h, &self.k, &stats, p);
            codes_row::<T, C, H>(h, &self.k, &mut b, bl, p, &mut row_codes, &mut energy);
            store_codes(&row_codes, self.k.bits, self.codes, i * row_len);
        }
        energy_total(&energy)
    }
}

/// The stats of block rows `first_group..`, each reduced over its rows in increasing order.
struct StatsTask<'a, T> {
    weight: &'a [T],
    t: &'a Tiling,
    /// Rows grouped by block row (see [`Tiling::rows_by_block_row`]).
    start: &'a [usize],
    order: &'a [usize],
    first_group: usize,
    stats: &'a mut [Stat],
}

impl<T: WeightElement> LaneKernel for StatsTask<'_, T> {
    type Output = ();
    #[inline(always)]
    fn run<H: HalfLanes>(self, h: H) {
        let (row_len, nb, bl) = (self.t.row_len, self.t.last_blocks, self.t.last_block_len());
        let mut x = vec![0.0; row_len.div_ceil(8) * 8];
        for (i, out) in self.stats.chunks_exact_mut(nb).enumerate() {
            let g = self.first_group + i;
            out.fill(NO_STAT);
            for &row in &self.order[self.start[g]..self.start[g + 1]] {
                widen_into(h, &self.weight[row * row_len..][..row_len], &mut x);
                reduce_row(&x[..row_len], bl, out);
            }
        }
    }
}

struct ParamsTask<'a, T> {
    k: QConsts,
    stats: &'a [Stat],
    params: &'a mut [Param],
    _t: std::marker::PhantomData<T>,
}

impl<T: WeightElement> LaneKernel for ParamsTask<'_, T> {
    type Output = ();
    #[inline(always)]
    fn run<H: HalfLanes>(self, h: H) {
        params_into::<T, H>(h, &self.k, self.stats, self.params);
    }
}

/// The codes of rows `first_row..first_row + rows` given every block's parameters.
struct CodesTask<'a, T, C> {
    weight: &'a [T],
    t: &'a Tiling,
    k: QConsts,
    params: &'a [Param],
    first_row: usize,
    rows: usize,
    /// The task's codes, packed.
    codes: &'a mut [u8],
    _code: std::marker::PhantomData<C>,
}

impl<T: WeightElement, C: Code> LaneKernel for CodesTask<'_, T, C> {
    type Output = (f64, f64);
    #[inline(always)]
    fn run<H: HalfLanes>(self, h: H) -> (f64, f64) {
        let (row_len, nb, bl) = (self.t.row_len, self.t.last_blocks, self.t.last_block_len());
        let mut b = RowBufs::new(row_len);
        let mut row_codes = vec![C::default(); row_len];
        let mut energy = ([0f64; 8], [0f64; 8]);
        for i in 0..self.rows {
            let row = self.first_row + i;
            widen_into(h, &self.weight[row * row_len..][..row_len], &mut b.x);
            let p = &self.params[self.t.block_row_of(row) * nb..][..nb];
            codes_row::<T, C, H>(h, &self.k, &mut b, bl, p, &mut row_codes, &mut energy);
            store_codes(&row_codes, self.k.bits, self.codes, i * row_len);
        }
        energy_total(&energy)
    }
}

/// Whether work of `n` elements is worth splitting across threads.
fn parallel(n: usize) -> bool {
    n >= 1 << 16
}

/// Tasks a rayon job must take at least: all of them (one job, no splitting) for small work.
fn min_tasks(n: usize) -> usize {
    if parallel(n) {
        1
    } else {
        usize::MAX
    }
}

/// What [`quantize_blocks`] makes: packed codes, per-block parameters and energy.
type Blocks = (Vec<u8>, Vec<Param>, (f64, f64));

/// Codes, per-block parameters and energy of `weight` (nonempty, rows of nonzero length).
fn quantize_blocks<T: WeightElement, C: Code>(weight: &[T], t: &Tiling, k: QConsts) -> Blocks {
    let (row_len, nb) = (t.row_len, t.last_blocks);
    let mut codes = vec![0u8; pack::packed_len(weight.len(), k.bits)];
    let mut params = vec![Param::default(); t.block_rows * nb];
    let rpt = rows_per_task(row_len);
    let task_bytes = pack::packed_len(rpt * row_len, k.bits);
    if t.block_rows == t.rows {
        // Every non-last axis has block size 1: block row == row.
        let task = |((w, p), c): ((&[T], &mut [Param]), &mut [u8])| {
            dispatch(RowLocalTask::<T, C> {
                weight: w,
                t,
                k,
                params: p,
                codes: c,
                _code: std::marker::PhantomData,
            })
        };
        let (wc, pc, cc) = (rpt * row_len, rpt * nb, task_bytes);
        let energies: Vec<(f64, f64)> = weight
            .par_chunks(wc)
            .zip(params.par_chunks_mut(pc))
            .zip(codes.par_chunks_mut(cc))
            .with_min_len(min_tasks(weight.len()))
            .map(task)
            .collect();
        return (codes, params, sum_energies(energies));
    }
    let (start, order) = t.rows_by_block_row();
    let mut stats = vec![NO_STAT; params.len()];
    let groups_per_task = (rpt * t.block_rows / t.rows).max(1);
    let stats_task = |(i, s): (usize, &mut [Stat])| {
        dispatch(StatsTask {
            weight,
            t,
            start: &start,
            order: &order,
            first_group: i * groups_per_task,
            stats: s,
        })
    };
    let params_task = |(s, p): (&[Stat], &mut [Param])| {
        dispatch(ParamsTask::<T> {
            k,
            stats: s,
            params: p,
            _t: std::marker::PhantomData,
        })
    };
    let sc = groups_per_task * nb;
    if parallel(weight.len()) {
        stats.par_chunks_mut(sc).enumerate().for_each(stats_task);
        stats
            .par_chunks(1 << 12)
            .zip(params.par_chunks_mut(1 << 12))
            .for_each(params_task);
    } else {
        stats_task((0, &mut stats));
        params_task((&stats, &mut params));
    }
    let codes_task = |(i, c): (usize, &mut [u8])| {
        dispatch(CodesTask::<T, C> {
            weight,
            t,
            k,
            params: &params,
            first_row: i * rpt,
            rows: rpt.min(t.rows - i * rpt),
            codes: c,
            _code: std::marker::PhantomData,
        })
    };
    let energies: Vec<(f64, f64)> = codes
        .par_chunks_mut(task_bytes)
        .enumerate()
        .with_min_len(min_tasks(weight.len()))
        .map(codes_task)
        .collect();
    (codes, params, sum_energies(energies))
}

/// A code container element.
trait Code: PackElem + Default {
    fn from_i32(x: i32) -> Self;
}
impl Code for i8 {
    #[inline(always)]
    fn from_i32(x: i32) -> Self {
        x as i8
    }
}
impl Code for u8 {
    #[inline(always)]
    fn from_i32(x: i32) -> Self {
        x as u8
    }
}

/// Quantizes `weight` (row-major, `shape`) with per-axis `block_sizes` (0 = whole axis; per-tensor
/// is all zeros, per-channel is 1 on the channel axis, per-block is `[1, b]`-style), exactly as
/// coremltools' `compute_qparams_by_dtype`. Returns `Skipped` with coremltools' warning when a dim
/// is not divisible by its block size, and an error when `block_sizes` does not have one entry per
/// axis or `weight` does not match `shape`.
pub fn quantize<T: WeightElement>(
    weight: &[T],
    shape: &[usize],
    block_sizes: &[usize],
    dtype: QuantDtype,
    mode: QuantMode,
) -> Result<QuantizeOutcome<T>> {
    if numel(shape)? != weight.len() {
        return Err(format_err!(
            "weight has {} elements but its shape {shape:?} needs {}",
            weight.len(),
            numel(shape)?
        ));
    }
    if let Some(msg) = check_blocks(shape, block_sizes)? {
        return Ok(QuantizeOutcome::Skipped(msg));
    }
    let t = Tiling::new(shape, block_sizes);
    let k = QConsts::new::<T>(dtype, mode);
    let (codes, params, energy) = if weight.is_empty() {
        // numpy would raise on an empty reduction; define it as an all-zero block set.
        let zero = Stat {
            mn: 0.0,
            mx: 0.0,
            nan: false,
        };
        let mut params = vec![Param::default(); t.block_rows * t.last_blocks];
        dispatch(ParamsTask::<T> {
            k,
            stats: &vec![zero; params.len()],
            params: &mut params,
            _t: std::marker::PhantomData,
        });
        (Vec::new(), params, (0.0, 0.0))
    } else if dtype.signed() {
        quantize_blocks::<T, i8>(weight, &t, k)
    } else {
        quantize_blocks::<T, u8>(weight, &t, k)
    };
    let codes = Codes {
        dtype,
        fields: Packed::from_bytes(codes, dtype.nbits(), weight.len())?,
    };
    let scale = params.iter().map(|p| T::from_f32(p.scale)).collect();
    let zp_code = |p: &Param| if p.zp.is_nan() { 0 } else { p.zp as i32 };
    let zero_point = if mode == QuantMode::Linear || !dtype.signed() {
        Some(if dtype.signed() {
            Codes::pack(
                dtype,
                &params.iter().map(|p| zp_code(p) as i8).collect::<Vec<_>>(),
            )?
        } else {
            Codes::pack(
                dtype,
                &params.iter().map(|p| zp_code(p) as u8).collect::<Vec<_>>(),
            )?
        })
    } else {
        None
    };
    Ok(QuantizeOutcome::Quantized(Quantized {
        dtype,
        mode,
        codes,
        scale,
        scale_shape: t.nblocks.clone(),
        zero_point,
        energy,
    }))
}

// ------------------------------------------------------------------------------------------------
// Dequantization (decompression)

/// A value that a dequantization op reads: integer codes or float data.
pub trait DequantSource: Copy + Send + Sync {
    fn to_f32(self) -> f32;
    /// `src` widened into `dst` (same lengths).
    #[inline(always)]
    fn widen_slice<H: HalfLanes>(_: H, src: &[Self], dst: &mut [f32]) {
        for (d, s) in dst.iter_mut().zip(src) {
            *d = s.to_f32();
        }
    }
}
impl DequantSource for i8 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self as f32
    }
}
impl DequantSource for u8 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self as f32
    }
}
impl DequantSource for f16 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        f16::to_f32(self)
    }
    #[inline(always)]
    fn widen_slice<H: HalfLanes>(h: H, src: &[Self], dst: &mut [f32]) {
        <f16 as WeightElement>::widen_slice(h, src, dst);
    }
}
impl DequantSource for f32 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self
    }
    #[inline(always)]
    fn widen_slice<H: HalfLanes>(_: H, src: &[Self], dst: &mut [f32]) {
        dst.copy_from_slice(src);
    }
}

/// A zero point / offset tensor of a dequantization op.
#[derive(Clone, Copy, Debug)]
pub enum Offset<'a, T> {
    Int8(&'a [i8]),
    UInt8(&'a [u8]),
    /// A float offset in the scale dtype (iOS18 `OffsetT` fp16/fp32).
    Float(&'a [T]),
    /// An fp32 zero point (iOS16 `ZeroPointT` fp32), whatever the scale dtype.
    Float32(&'a [f32]),
}

impl<T: WeightElement> Offset<'_, T> {
    fn len(&self) -> usize {
        match self {
            Offset::Int8(v) => v.len(),
            Offset::UInt8(v) => v.len(),
            Offset::Float(v) => v.len(),
            Offset::Float32(v) => v.len(),
        }
    }
    #[inline(always)]
    fn get(&self, i: usize) -> f32 {
        match self {
            Offset::Int8(v) => v[i] as f32,
            Offset::UInt8(v) => v[i] as f32,
            Offset::Float(v) => v[i].to_f32(),
            Offset::Float32(v) => v[i],
        }
    }
}

/// One dequantization op's values for a tile, in place: `x` is the data widened to f32, `s` the
/// scale, `o` the offset (0 when there is none, which changes nothing).
#[inline(always)]
fn dequant_tile<T: WeightElement, H: HalfLanes, const AFFINE: bool>(
    h: H,
    x: &mut [f32],
    s: &[f32],
    o: &[f32],
) {
    if AFFINE {
        // `dequantize_by_scale_and_zp`: f32 arithmetic, one rounding.
        for (x, (s, o)) in x.iter_mut().zip(s.iter().zip(o)) {
            *x = (*x - o) * s;
        }
    } else {
        // `data.astype(T)`, `data - offset`, `scale * data`, each rounded to T.
        T::round_slice(h, x);
        for (x, o) in x.iter_mut().zip(o) {
            *x -= o;
        }
        T::round_slice(h, x);
        for (x, s) in x.iter_mut().zip(s) {
            *x *= s;
        }
    }
    T::round_slice(h, x);
}

/// Dequantizes rows `first_row..first_row + rows` of `data` into `out`.
struct DequantTask<'a, T, D, const AFFINE: bool> {
    data: &'a [D],
    t: &'a Tiling,
    /// Per block: scale and offset.
    params: &'a [Param],
    first_row: usize,
    /// Whole rows.
    out: &'a mut [T],
}

impl<T: WeightElement, D: DequantSource, const AFFINE: bool> LaneKernel
    for DequantTask<'_, T, D, AFFINE>
{
    type Output = ();
    #[inline(always)]
    fn run<H: HalfLanes>(self, h: H) {
        let (row_len, nb, bl) = (self.t.row_len, self.t.last_blocks, self.t.last_block_len());
        let mut b = RowBufs::new(row_len);
        for (i, out) in self.out.chunks_exact_mut(row_len).enumerate() {
            let row = self.first_row + i;
            let x = &mut b.x[..row_len];
            D::widen_slice(h, &self.data[row * row_len..][..row_len], x);
            let p = &self.params[self.t.block_row_of(row) * nb..][..nb];
            expand_params(p, bl, &mut b.s, &mut b.z);
            for ((x, s), z) in x
                .chunks_mut(TILE)
                .zip(b.s.chunks(TILE))
                .zip(b.z.chunks(TILE))
            {
                dequant_tile::<T, H, AFFINE>(h, x, s, z);
            }
            narrow_into(h, x, out);
        }
    }
}

/// Runs [`DequantTask`] over all rows into `out`, in parallel over fixed chunks of rows.
fn dequant_rows<T: WeightElement, D: DequantSource, const AFFINE: bool>(
    data: &[D],
    t: &Tiling,
    params: &[Param],
    out: &mut [T],
) {
    let rpt = rows_per_task(t.row_len);
    let task = |(i, out): (usize, &mut [T])| {
        dispatch(DequantTask::<T, D, AFFINE> {
            data,
            t,
            params,
            first_row: i * rpt,
            out,
        })
    };
    out.par_chunks_mut(rpt * t.row_len)
        .enumerate()
        .with_min_len(min_tasks(data.len()))
        .for_each(task);
}

/// The tiling and per-block parameters of a `constexpr_blockwise_shift_scale`, validated.
fn shift_scale_setup<T: WeightElement>(
    n_data: usize,
    shape: &[usize],
    scale: &[T],
    scale_shape: &[usize],
    offset: Option<Offset<'_, T>>,
) -> Result<(Tiling, Vec<Param>)> {
    let n = numel(shape)?;
    if n_data != n {
        return Err(format_err!(
            "data has {n_data} elements, shape {shape:?} needs {n}"
        ));
    }
    let ns = numel(scale_shape)?;
    if scale.len() != ns {
        return Err(format_err!(
            "scale has {} elements, shape {scale_shape:?} needs {ns}",
            scale.len()
        ));
    }
    if let Some(o) = &offset {
        if o.len() != ns {
            return Err(format_err!(
                "offset has {} elements, the scale has {ns}",
                o.len()
            ));
        }
        if matches!(o, Offset::Float32(_)) && T::NAME != "float32" {
            return Err(format_err!(
                "an fp32 offset with an fp16 scale is not supported by constexpr_blockwise_shift_scale"
            ));
        }
    }
    if shape.len() != scale_shape.len() {
        return Err(format_err!(
            "scale rank {} differs from data rank {}",
            scale_shape.len(),
            shape.len()
        ));
    }
    let mut block_sizes = Vec::with_capacity(shape.len());
    for (axis, (&d, &s)) in shape.iter().zip(scale_shape).enumerate() {
        if s == 0 || d % s != 0 {
            return Err(format_err!(
                "data dim {d} on axis {axis} is not divisible by the scale dim {s}"
            ));
        }
        block_sizes.push(d / s);
    }
    let params = (0..ns)
        .map(|b| Param {
            scale: scale[b].to_f32(),
            zp: offset.map_or(0.0, |o| o.get(b)),
        })
        .collect();
    Ok((Tiling::new(shape, &block_sizes), params))
}

/// `constexpr_blockwise_shift_scale` (iOS18) value: `scale * (T(data) - offset)` with scale and
/// offset repeated blockwise (`block = data_dim / scale_dim` per axis), each op in the scale dtype
/// `T` as coremltools' `decompress` does (`data.astype(T)`, `data - offset`, `scale * data`).
pub fn blockwise_shift_scale<T: WeightElement, D: DequantSource>(
    data: &[D],
    shape: &[usize],
    scale: &[T],
    scale_shape: &[usize],
    offset: Option<Offset<'_, T>>,
) -> Result<Vec<T>> {
    let (t, params) = shift_scale_setup(data.len(), shape, scale, scale_shape, offset)?;
    let mut out = vec![T::default(); data.len()];
    if !data.is_empty() {
        dequant_rows::<T, D, false>(data, &t, &params, &mut out);
    }
    Ok(out)
}

/// `constexpr_affine_dequantize` (iOS16) value: `T((f32(q) - f32(zero_point)) * f32(scale))`,
/// computed in f32 and rounded once to the scale dtype (coremltools'
/// `dequantize_by_scale_and_zp`). `scale` and `zero_point` are scalars (length 1) or vectors of
/// length `shape[axis]`; `axis` may be negative.
pub fn affine_dequantize<T: WeightElement, D: DequantSource>(
    quantized: &[D],
    shape: &[usize],
    scale: &[T],
    zero_point: Offset<'_, T>,
    axis: i64,
) -> Result<Vec<T>> {
    let rank = shape.len() as i64;
    if rank == 0 && (scale.len() != 1 || zero_point.len() != 1) {
        return Err(format_err!(
            "a rank-0 tensor needs a scalar scale and zero point"
        ));
    }
    if rank > 0 && (axis < -rank || axis >= rank) {
        return Err(format_err!(
            "Parameter axis needs to be in the range -quantized_data.rank <= axis < quantized_data.rank"
        ));
    }
    let ax = if rank == 0 {
        0
    } else {
        axis.rem_euclid(rank) as usize
    };
    let c = if rank == 0 { 1 } else { shape[ax] };
    for (name, len) in [("scale", scale.len()), ("zero_point", zero_point.len())] {
        if len != 1 && len != c {
            return Err(format_err!(
                "Parameter {name}, if vector, needs to have same size as the dimension size along \
                 the parameter quantized_data"
            ));
        }
    }
    let n = numel(shape)?;
    if quantized.len() != n {
        return Err(format_err!(
            "data has {} elements, shape {shape:?} needs {n}",
            quantized.len()
        ));
    }
    let mut out = vec![T::default(); n];
    if n == 0 {
        return Ok(out);
    }
    // One block per channel along `axis` (or a single block for scalar parameters).
    let (sv, zv) = (scale.len() > 1, zero_point.len() > 1);
    let channels = if sv || zv { c } else { 1 };
    let mut block_sizes = shape.to_vec();
    if channels > 1 {
        block_sizes[ax] = 1;
    }
    let params: Vec<Param> = (0..channels)
        .map(|ch| Param {
            scale: scale[if sv { ch } else { 0 }].to_f32(),
            zp: zero_point.get(if zv { ch } else { 0 }),
        })
        .collect();
    let t = Tiling::new(shape, &block_sizes);
    dequant_rows::<T, D, true>(quantized, &t, &params, &mut out);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    // Golden vectors produced by coremltools 9.0 (numpy 2.4, x86-64):
    // `linear_quantize_weights.blockwise_compress(w, nbits, mode, signed, block_sizes)` on a random
    // 6x8 fp16 matrix (W16) and fp32 matrix (W32), and `dequantize_by_scale_and_zp` for AFF_*.
    // Columns: weight, nbits, signed, LINEAR?, block sizes, codes, scale bits, scale shape, offset.
    const W16: &[u16] = &[
        0, 15513, 14956, 47475, 48077, 10757, 14547, 13748, 15634, 14388, 14122, 47128, 47668,
        15400, 10338, 14475, 48053, 46307, 47931, 47192, 14607, 48165, 46587, 12118, 46973, 45479,
        45304, 13487, 46292, 12825, 10519, 13505, 12554, 15524, 46959, 15031, 46210, 47453, 15048,
        46316, 46167, 48071, 48608, 14107, 47751, 14428, 15661, 44325,
    ];
    const W32: &[u32] = &[
        3223705206, 1063787199, 1071661244, 3206161510, 1025804172, 1078234438, 1077560904,
        1070662785, 3221164420, 3187463514, 1068597173, 3204021829, 3216217819, 3219215512,
        3216642107, 3217406063, 3213151908, 1076405449, 3219895681, 1073909071, 1064689589,
        1050972601, 3220411981, 3213259622, 1083261169, 1047089955, 1067348680, 1069757007,
        1075536884, 3205224834, 3216221285, 3188483872, 3206124041, 1072219765, 1054820612,
        1057808872, 1051378524, 1077203155, 3214917595, 3213677563, 1073891984, 3195706874,
        1062501418, 3218513210, 1029426230, 1065239430, 3225642511, 3217856174,
    ];
    #[allow(clippy::type_complexity)]
    const QCASES: &[(
        &str,
        u32,
        bool,
        bool,
        &[usize],
        &[i32],
        &[u32],
        &[usize],
        Option<&[i32]>,
    )] = &[
        (
            "f16",
            8,
            true,
            false,
            &[1, 0],
            &[
                0, 127, 89, -75, -108, 5, 67, 39, 127, 53, 45, -51, -78, 104, 3, 57, -118, -37,
                -111, -67, 78, -127, -46, 14, -127, -48, -42, 79, -82, 52, 11, 81, 17, 127, -51,
                92, -31, -73, 93, -34, -23, -84, -127, 38, -71, 47, 112, -7,
            ],
            &[8354, 8476, 8237, 7052, 8365, 8684],
            &[6, 1],
            None,
        ),
        (
            "f16",
            8,
            false,
            true,
            &[0, 0],
            &[
                136, 242, 210, 73, 46, 140, 192, 169, 253, 184, 177, 89, 64, 232, 139, 188, 47,
                108, 53, 86, 194, 40, 102, 147, 93, 120, 122, 163, 108, 154, 140, 163, 151, 243,
                93, 214, 110, 74, 214, 108, 111, 46, 0, 177, 61, 186, 255, 129,
            ],
            &[8588],
            &[1, 1],
            Some(&[136]),
        ),
        (
            "f16",
            4,
            true,
            true,
            &[1, 4],
            &[
                -2, 7, 5, -8, -8, 1, 7, 4, 7, 0, 0, -8, -8, 7, -2, 3, -8, 2, -7, -1, 7, -8, -2, 2,
                -8, -2, -2, 7, -8, 5, 1, 7, -3, 7, -8, 4, -4, -8, 7, -4, 2, -4, -8, 7, -8, 2, 7,
                -3,
            ],
            &[
                12239, 11964, 12183, 12222, 11292, 12062, 10878, 10524, 12015, 11898, 12309, 12416,
            ],
            &[6, 2],
            Some(&[-2, 1, -4, -2, 7, 1, 1, 0, -4, -1, 4, -2]),
        ),
        (
            "f16",
            4,
            false,
            false,
            &[2, 4],
            &[
                7, 13, 11, 3, 0, 7, 11, 9, 14, 10, 9, 4, 2, 14, 7, 11, 0, 5, 0, 3, 11, 0, 4, 8, 4,
                6, 6, 9, 5, 8, 7, 9, 8, 13, 5, 11, 5, 3, 12, 5, 6, 2, 0, 9, 3, 10, 14, 7,
            ],
            &[12747, 12480, 12391, 12477, 12983, 12778],
            &[3, 2],
            Some(&[7, 7, 7, 7, 7, 7]),
        ),
        (
            "f16",
            4,
            true,
            false,
            &[3, 2],
            &[
                0, 6, 6, -5, -7, 0, 7, 4, 7, 3, 3, -4, -5, 7, 0, 7, -5, -2, -7, -4, 4, -7, -4, 1,
                -3, -1, -1, 1, -3, 2, 0, 2, 1, 7, -2, 4, -2, -6, 5, -2, -2, -6, -7, 2, -7, 5, 7, 0,
            ],
            &[12747, 12322, 12480, 11651, 12622, 12983, 12150, 12778],
            &[2, 4],
            None,
        ),
        (
            "f16",
            8,
            false,
            false,
            &[0, 8],
            &[
                127, 226, 196, 68, 43, 131, 179, 158, 237, 172, 166, 83, 60, 217, 130, 176, 44,
                101, 49, 80, 182, 37, 95, 137, 87, 112, 114, 152, 101, 143, 130, 153, 141, 227, 87,
                200, 103, 69, 200, 100, 104, 43, 0, 165, 56, 174, 239, 120,
            ],
            &[8684],
            &[1, 1],
            Some(&[127]),
        ),
        (
            "f16",
            4,
            false,
            true,
            &[6, 1],
            &[
                6, 15, 15, 0, 0, 7, 8, 11, 15, 11, 13, 2, 2, 15, 3, 15, 0, 5, 4, 2, 15, 0, 0, 7, 3,
                6, 9, 10, 6, 8, 3, 10, 7, 15, 7, 15, 6, 2, 11, 0, 4, 0, 0, 11, 1, 11, 15, 4,
            ],
            &[12482, 12429, 12505, 11901, 11996, 12397, 12062, 11129],
            &[1, 8],
            Some(&[6, 7, 10, 7, 9, 7, 3, 5]),
        ),
        (
            "f16",
            8,
            true,
            true,
            &[1, 1],
            &[
                0, 127, 127, -128, -128, 127, 127, 127, 127, 127, 127, -128, -128, 127, 127, 127,
                -128, -128, -128, -128, 127, -128, -128, 127, -128, -128, -128, 127, -128, 127,
                127, 127, 127, 127, -128, 127, -128, -128, 127, -128, -128, -128, -128, 127, -128,
                127, 127, -128,
            ],
            &[
                0, 7326, 6770, 6520, 7125, 2571, 6360, 5562, 7447, 6200, 5937, 6172, 6714, 7212,
                2150, 6288, 7101, 5352, 6978, 6236, 6420, 7209, 5633, 3933, 6021, 4525, 4349, 5300,
                5337, 4639, 2332, 5318, 4367, 7337, 6006, 6846, 5255, 6498, 6863, 5361, 5211, 7119,
                7654, 5922, 6798, 6240, 7474, 3370,
            ],
            &[6, 8],
            Some(&[
                0, -128, -128, 127, 127, -128, -128, -128, -128, -128, -128, 127, 127, -128, -128,
                -128, 127, 127, 127, 127, -128, 127, 127, -128, 127, 127, 127, -128, 127, -128,
                -128, -128, -128, -128, 127, -128, 127, 127, -128, 127, 127, 127, 127, -128, 127,
                -128, -128, 127,
            ]),
        ),
        (
            "f32",
            8,
            true,
            false,
            &[1, 0],
            &[
                -107, 37, 72, -25, 2, 127, 120, 68, -127, -8, 88, -31, -89, -112, -93, -98, -50,
                127, -89, 98, 46, 15, -92, -51, 127, 6, 35, 43, 68, -15, -39, -4, -27, 82, 20, 25,
                15, 127, -56, -49, 85, -10, 35, -70, 2, 41, -127, -66,
            ],
            &[
                1019615609, 1015056854, 1017772218, 1024615868, 1018576206, 1019539439,
            ],
            &[6, 1],
            None,
        ),
        (
            "f32",
            8,
            false,
            true,
            &[0, 0],
            &[
                16, 133, 162, 83, 104, 206, 201, 158, 36, 99, 150, 87, 56, 44, 54, 51, 68, 192, 41,
                172, 135, 114, 39, 68, 255, 111, 145, 154, 185, 85, 56, 98, 83, 164, 118, 121, 114,
                198, 61, 66, 171, 95, 131, 47, 105, 136, 0, 49,
            ],
            &[1022617568],
            &[1, 1],
            Some(&[103]),
        ),
        (
            "f32",
            4,
            true,
            true,
            &[1, 4],
            &[
                -8, 4, 7, -1, -8, 7, 6, 0, -8, 0, 7, -1, -5, -8, -5, -6, -5, 7, -8, 5, 7, 4, -8,
                -4, 7, -7, -4, -3, 7, -5, -8, -4, -8, 7, -1, -1, -2, 7, -8, -7, 7, -2, 2, -8, 3, 7,
                -8, -3,
            ],
            &[
                1049902944, 1045538754, 1046918106, 1039161916, 1050201230, 1044609728, 1050341360,
                1048758156, 1042618706, 1049299183, 1048408112, 1049238861,
            ],
            &[6, 2],
            Some(&[1, -8, 1, 7, -2, 2, -8, -3, -4, -3, -1, 3]),
        ),
        (
            "f32",
            4,
            false,
            false,
            &[2, 4],
            &[
                0, 9, 12, 5, 7, 14, 14, 11, 2, 7, 11, 6, 4, 3, 4, 3, 5, 11, 4, 10, 10, 8, 2, 4, 14,
                7, 9, 9, 14, 5, 3, 7, 5, 13, 8, 9, 8, 13, 4, 4, 14, 6, 10, 1, 7, 9, 0, 3,
            ],
            &[
                1052608354, 1054908789, 1059455251, 1051825870, 1049945984, 1054822417,
            ],
            &[3, 2],
            Some(&[7, 7, 7, 7, 7, 7]),
        ),
        (
            "f32",
            4,
            true,
            false,
            &[3, 2],
            &[
                -7, 2, 6, -2, 0, 7, 7, 4, -5, 0, 5, -2, -3, -4, -3, -4, -3, 7, -6, 7, 2, 1, -5, -3,
                7, 0, 5, 6, 6, -1, -3, 0, -1, 3, 2, 2, 1, 7, -3, -3, 3, 0, 3, -7, 0, 2, -7, -4,
            ],
            &[
                1052818515, 1049965512, 1054908789, 1054139035, 1059455251, 1047873017, 1053730179,
                1054822417,
            ],
            &[2, 4],
            None,
        ),
        (
            "f32",
            8,
            false,
            false,
            &[0, 8],
            &[
                55, 152, 176, 110, 128, 213, 208, 173, 71, 124, 166, 113, 88, 78, 86, 84, 98, 201,
                75, 184, 154, 136, 74, 98, 254, 133, 162, 170, 195, 112, 88, 123, 110, 178, 139,
                142, 136, 206, 92, 96, 184, 120, 150, 80, 129, 155, 42, 82,
            ],
            &[1024615868],
            &[1, 1],
            Some(&[127]),
        ),
        (
            "f32",
            4,
            false,
            true,
            &[6, 1],
            &[
                0, 6, 15, 5, 5, 15, 15, 15, 1, 0, 14, 5, 0, 0, 4, 0, 3, 15, 0, 15, 9, 6, 3, 2, 15,
                2, 13, 13, 15, 3, 4, 6, 4, 10, 10, 9, 6, 14, 5, 2, 9, 0, 11, 0, 5, 8, 0, 0,
            ],
            &[
                1056137809, 1044682796, 1047875616, 1048426338, 1048757232, 1050995312, 1053527838,
                1046255369,
            ],
            &[1, 8],
            Some(&[5, 1, 8, 7, 5, 5, 8, 7]),
        ),
        (
            "f32",
            8,
            true,
            true,
            &[1, 1],
            &[
                -128, 127, 127, -128, 127, 127, 127, 127, -128, -128, 127, -128, -128, -128, -128,
                -128, -128, 127, -128, 127, 127, 127, -128, -128, 127, 127, 127, 127, 127, -128,
                -128, -128, -128, 127, 127, 127, 127, 127, -128, -128, 127, -128, 127, -128, 127,
                127, -128, -128,
            ],
            &[
                1009155315, 996737987, 1004610014, 991608613, 958737593, 1011176089, 1010499913,
                1003607639, 1006635211, 972935981, 1001533927, 989493438, 1001671462, 1004680911,
                1002097414, 1002864366, 998593528, 1009339927, 1005363747, 1006833759, 997643916,
                983906032, 1005882072, 998701664, 1016189636, 980041056, 1000280538, 1002698309,
                1008467956, 990668264, 1001674942, 973927444, 991570997, 1005170725, 987769133,
                990736215, 984313547, 1010140761, 1000366139, 999121244, 1006816605, 981178772,
                995447163, 1003975855, 962373855, 998195913, 1011100217, 1003316242,
            ],
            &[6, 8],
            Some(&[
                127, -128, -128, 127, -128, -128, -128, -128, 127, 127, -128, 127, 127, 127, 127,
                127, 127, -128, 127, -128, -128, -128, 127, 127, -128, -128, -128, -128, -128, 127,
                127, 127, 127, -128, -128, -128, -128, -128, 127, 127, -128, 127, -128, 127, -128,
                -128, 127, 127,
            ]),
        ),
    ];
    const AFF_Q: &[i8] = &[126, -106, 15, 30, -73, -75, 10, -32, 4, -75, -16, -56];
    const AFF_ZP: &[i8] = &[0, 1, -1, 0];
    const AFF_S: &[u16] = &[6149, 11742, 9810, 10808];
    const AFF_OUT: &[u16] = &[
        13290, 51432, 13906, 15828, 45206, 50936, 13400, 48696, 8197, 50936, 46573, 49521,
    ];

    fn f16s(bits: &[u16]) -> Vec<f16> {
        bits.iter().map(|&b| f16::from_bits(b)).collect()
    }
    fn f32s(bits: &[u32]) -> Vec<f32> {
        bits.iter().map(|&b| f32::from_bits(b)).collect()
    }
    fn q<T: WeightElement>(
        w: &[T],
        shape: &[usize],
        bs: &[usize],
        d: QuantDtype,
        m: QuantMode,
    ) -> Quantized<T> {
        match quantize(w, shape, bs, d, m).unwrap() {
            QuantizeOutcome::Quantized(q) => q,
            QuantizeOutcome::Skipped(s) => panic!("skipped: {s}"),
        }
    }
    fn codes(c: &Codes) -> Vec<i32> {
        (0..c.len()).map(|i| c.get(i)).collect()
    }
    fn dequant<T: WeightElement>(q: &Quantized<T>, shape: &[usize]) -> Vec<T> {
        let zp = q.zero_point.clone();
        if q.codes.dtype().signed() {
            let z = zp.map(Codes::into_signed);
            let c = q.codes.clone().into_signed();
            let off = z.as_deref().map(Offset::Int8);
            blockwise_shift_scale(&c, shape, &q.scale, &q.scale_shape, off)
        } else {
            let z = zp.map(Codes::into_unsigned);
            let c = q.codes.clone().into_unsigned();
            let off = z.as_deref().map(Offset::UInt8);
            blockwise_shift_scale(&c, shape, &q.scale, &q.scale_shape, off)
        }
        .unwrap()
    }

    fn check_case<T: WeightElement>(w: &[T], case: usize, to_bits: impl Fn(T) -> u32) {
        let (_, nbits, signed, linear, bs, want_codes, want_scale, want_shape, want_off) =
            QCASES[case];
        let mode = if linear {
            QuantMode::Linear
        } else {
            QuantMode::LinearSymmetric
        };
        let dtype = QuantDtype::from_bits(nbits, signed).unwrap();
        let r = q(w, &[6, 8], bs, dtype, mode);
        assert_eq!(codes(&r.codes), want_codes, "case {case}");
        assert_eq!(
            r.scale.iter().map(|&s| to_bits(s)).collect::<Vec<_>>(),
            want_scale,
            "case {case}"
        );
        assert_eq!(r.scale_shape, want_shape, "case {case}");
        assert_eq!(
            r.zero_point.as_ref().map(codes).as_deref(),
            want_off,
            "case {case}"
        );
    }

    #[test]
    fn golden_random_blockwise() {
        let (w16, w32) = (f16s(W16), f32s(W32));
        for (i, case) in QCASES.iter().enumerate() {
            if case.0 == "f16" {
                check_case(&w16, i, |x| x.to_bits() as u32);
            } else {
                check_case(&w32, i, |x| x.to_bits());
            }
        }
    }

    #[test]
    fn corner_case_int4_linear() {
        // coremltools' test: [-2, -10, 6, -3] int4 LINEAR -> [-1, -8, 7, -2], scale 16/15, zp 1.
        let w = [-2.0f32, -10.0, 6.0, -3.0];
        let r = q(&w, &[1, 4], &[0, 0], QuantDtype::Int4, QuantMode::Linear);
        assert_eq!(codes(&r.codes), vec![-1, -8, 7, -2]);
        assert_eq!(r.scale[0].to_bits(), 1065912457);
        assert_eq!(r.zero_point.as_ref().map(codes), Some(vec![1]));
        let w16: Vec<f16> = w.iter().map(|&x| f16::from_f32(x)).collect();
        let r = q(&w16, &[1, 4], &[0, 0], QuantDtype::Int4, QuantMode::Linear);
        assert_eq!(codes(&r.codes), vec![-1, -8, 7, -2]);
        assert_eq!(r.scale[0].to_bits(), 15428);
    }

    #[test]
    fn degenerate_blocks() {
        let s = QuantMode::LinearSymmetric;
        let l = QuantMode::Linear;
        // Constant 1.0 under LINEAR int8: scale 1/255, zp -128, codes 127.
        let ones = vec![f16::ONE; 4];
        let r = q(&ones, &[1, 4], &[0, 0], QuantDtype::Int8, l);
        assert_eq!(
            (r.scale[0].to_bits(), codes(&r.codes)),
            (7172, vec![127; 4])
        );
        assert_eq!(r.zero_point.as_ref().map(codes), Some(vec![-128]));
        // All zeros (either sign): scale +0, codes 0, zp 0 (127 for symmetric uint8).
        for z in [0.0f32, -0.0] {
            let w = vec![z; 4];
            for (d, m, zp) in [
                (QuantDtype::Int8, l, Some(0)),
                (QuantDtype::UInt8, l, Some(0)),
                (QuantDtype::Int8, s, None),
                (QuantDtype::UInt8, s, Some(127)),
            ] {
                let r = q(&w, &[1, 4], &[0, 0], d, m);
                assert_eq!(r.scale[0].to_bits(), 0);
                assert_eq!(codes(&r.codes), vec![0; 4]);
                assert_eq!(r.zero_point.map(|z| z.get(0)), zp);
            }
        }
        // fp16 scale underflow (values at the subnormal limit), golden from coremltools.
        let w: Vec<f16> = [6e-8f32, 0.0, -6e-8, 1e-7]
            .iter()
            .map(|&x| f16::from_f32(x))
            .collect();
        let r = q(&w, &[1, 4], &[0, 0], QuantDtype::Int8, l);
        assert_eq!(
            (r.scale[0].to_bits(), codes(&r.codes)),
            (0, vec![127, 0, -128, 127])
        );
        assert_eq!(r.zero_point.as_ref().map(codes), Some(vec![-43]));
        let r = q(&w, &[1, 4], &[0, 0], QuantDtype::UInt8, s);
        assert_eq!(codes(&r.codes), vec![254, 0, 0, 254]);
        // NaN block: NaN scale, codes 0, zp 0 / 127.
        let w = [1.0f32, f32::NAN, 2.0, 3.0];
        let r = q(&w, &[1, 4], &[0, 0], QuantDtype::Int8, l);
        assert!(r.scale[0].is_nan());
        assert_eq!(
            (codes(&r.codes), r.zero_point.map(|z| z.get(0))),
            (vec![0; 4], Some(0))
        );
        let r = q(&w, &[1, 4], &[0, 0], QuantDtype::UInt8, s);
        assert_eq!(
            (codes(&r.codes), r.zero_point.map(|z| z.get(0))),
            (vec![0; 4], Some(127))
        );
    }

    #[test]
    fn extremes_that_overflow_fp16_get_finite_parameters() {
        // coremltools: `hi − lo` and `qmax · lo` overflow fp16, so the scale is inf or the zero
        // point NaN and every restored value NaN.
        let w: Vec<f16> = [65504.0f32, -65504.0, 0.5, -1.0, 40000.0, -20000.0, 3.0, 7.0]
            .iter()
            .map(|&v| f16::from_f32(v))
            .collect();
        let one_sided: Vec<f16> = [40000.0f32, -20000.0, 1.0, 2.0]
            .iter()
            .map(|&v| f16::from_f32(v))
            .collect();
        for (w, shape) in [(&w, [1, 8]), (&one_sided, [1, 4])] {
            for d in [QuantDtype::Int8, QuantDtype::UInt8, QuantDtype::Int4] {
                let x = q(w, &shape, &[0, 0], d, QuantMode::Linear);
                let scale = x.scale[0].to_f32();
                assert!(scale.is_finite() && scale > 0.0, "{d:?}");
                let restored = dequant(&x, &shape);
                if d == QuantDtype::Int4 && shape == [1, 8] {
                    // -65504 / 8736 rounds to -7.5 in fp16, so code -8, and -8 · 8736 is beyond
                    // fp16: the energy tells the pass to refuse the weight.
                    assert!(!x.energy.1.is_finite());
                    assert_eq!(restored[1].to_f32(), f32::NEG_INFINITY);
                    continue;
                }
                for (a, b) in w.iter().zip(restored) {
                    assert!(
                        (a.to_f32() - b.to_f32()).abs() <= scale,
                        "{d:?}: {a} vs {b}"
                    );
                }
            }
        }
        // Symmetric int8: 65504 needs code 127 at a scale that fp16 rounds up to 516, and
        // 127 · 516 is beyond fp16: the restored value is infinite, which the pass refuses
        // (energy says so); the parameters themselves are finite.
        let x = q(
            &w,
            &[1, 8],
            &[0, 0],
            QuantDtype::Int8,
            QuantMode::LinearSymmetric,
        );
        assert_eq!(x.scale[0].to_f32(), 516.0);
        assert!(!x.energy.1.is_finite());
    }

    #[test]
    fn block_shapes_and_skip() {
        let w: Vec<f32> = (0..24).map(|i| i as f32 - 11.5).collect();
        for (bs, shape) in [
            ([1, 2], [4, 3]),
            ([1, 6], [4, 1]),
            ([2, 6], [2, 1]),
            ([0, 0], [1, 1]),
        ] {
            let r = q(
                &w,
                &[4, 6],
                &bs,
                QuantDtype::Int8,
                QuantMode::LinearSymmetric,
            );
            assert_eq!(r.scale_shape, shape);
            assert_eq!(r.scale.len(), shape[0] * shape[1]);
        }
        let r = quantize(&w, &[4, 6], &[1, 8], QuantDtype::Int8, QuantMode::Linear).unwrap();
        assert_eq!(
            r,
            QuantizeOutcome::Skipped(
                "Invalid block_sizes; On 1th axis, the dim size 6 is not divisible by block size \
                 8. Unable to perform structured quantization."
                    .into()
            )
        );
        assert!(quantize(&w, &[4, 6], &[1], QuantDtype::Int8, QuantMode::Linear).is_err());
        assert!(quantize(&w, &[4, 5], &[0, 0], QuantDtype::Int8, QuantMode::Linear).is_err());
        assert!(QuantDtype::from_bits(2, true).is_err());
        assert_eq!(
            quant_range(QuantDtype::UInt4, QuantMode::LinearSymmetric),
            (0, 14)
        );
        assert_eq!(
            quant_range(QuantDtype::Int8, QuantMode::LinearSymmetric),
            (-127, 127)
        );
    }

    #[test]
    fn affine_dequantize_golden() {
        let s = f16s(AFF_S);
        let out = affine_dequantize(AFF_Q, &[3, 4], &s, Offset::Int8(AFF_ZP), 1).unwrap();
        assert_eq!(out.iter().map(|x| x.to_bits()).collect::<Vec<_>>(), AFF_OUT);
        let out = affine_dequantize(AFF_Q, &[3, 4], &s, Offset::Int8(AFF_ZP), -1).unwrap();
        assert_eq!(out.iter().map(|x| x.to_bits()).collect::<Vec<_>>(), AFF_OUT);
        // Scalar parameters.
        let out = affine_dequantize(&[3u8, 5], &[2], &[0.5f32], Offset::UInt8(&[1]), 0).unwrap();
        assert_eq!(out, vec![1.0, 2.0]);
        assert!(
            affine_dequantize(&[3u8, 5], &[2], &[0.5f32, 1.0, 2.0], Offset::UInt8(&[1]), 0)
                .is_err()
        );
        assert!(affine_dequantize(&[3u8, 5], &[2], &[0.5f32], Offset::UInt8(&[1]), 1).is_err());
    }

    #[test]
    fn symmetric_uint_all_zero_dequantizes_to_negative_zero() {
        let w = vec![0.0f32; 4];
        let r = q(
            &w,
            &[1, 4],
            &[0, 0],
            QuantDtype::UInt8,
            QuantMode::LinearSymmetric,
        );
        let d = dequant(&r, &[1, 4]);
        assert!(d.iter().all(|x| x.to_bits() == (-0.0f32).to_bits()));
    }

    /// Relative closeness of a fused f32-lane energy sum to an f64 reference.
    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-4 * b.abs().max(1e-30)
    }

    #[test]
    fn energy_is_measured_against_the_restored_weight() {
        let w: Vec<f16> = (0..96 * 1000)
            .map(|i| f16::from_f32(((i * 7919) % 2003) as f32 / 997.0 - 1.0))
            .collect();
        // Blocks within rows (fused path), across rows (stats path), and a row that is not
        // whole lanes (1000 % 8 == 0 but 1000 % 16 != 0 with block 40).
        for (bs, d, m) in [
            (&[1usize, 40][..], QuantDtype::Int4, QuantMode::Linear),
            (&[0, 1][..], QuantDtype::UInt8, QuantMode::LinearSymmetric),
            (&[0, 0][..], QuantDtype::Int8, QuantMode::Linear),
        ] {
            let x = q(&w, &[96, 1000], bs, d, m);
            let restored = dequant(&x, &[96, 1000]);
            let (mut signal, mut noise) = (0.0, 0.0);
            for (a, b) in w.iter().zip(&restored) {
                let (a, b) = (a.to_f64(), b.to_f64());
                signal += a * a;
                noise += (a - b) * (a - b);
            }
            assert!(
                close(x.energy.0, signal) && close(x.energy.1, noise),
                "{bs:?}"
            );
        }
    }

    #[test]
    fn deterministic_across_thread_counts() {
        let n = 96 * 1024;
        let w: Vec<f16> = (0..n)
            .map(|i| f16::from_f32(((i * 7919) % 2003) as f32 / 997.0 - 1.0))
            .collect();
        let run = || {
            (
                q(
                    &w,
                    &[96, 1024],
                    &[1, 32],
                    QuantDtype::Int4,
                    QuantMode::Linear,
                ),
                q(
                    &w,
                    &[96, 1024],
                    &[0, 1],
                    QuantDtype::UInt8,
                    QuantMode::LinearSymmetric,
                ),
                q(
                    &w,
                    &[96, 1024],
                    &[0, 0],
                    QuantDtype::Int8,
                    QuantMode::Linear,
                ),
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
        let d1 = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap()
            .install(|| dequant(&one.0, &[96, 1024]));
        assert_eq!(d1, dequant(&many.0, &[96, 1024]));
    }

    proptest! {
        #[test]
        fn dequantize_within_half_scale(
            vals in prop::collection::vec(-100.0f32..100.0, 24),
            d in prop::sample::select(vec![QuantDtype::Int8, QuantDtype::UInt8, QuantDtype::Int4, QuantDtype::UInt4]),
            linear in any::<bool>(),
            bs in prop::sample::select(vec![[0usize, 0], [1, 0], [0, 1], [2, 3], [1, 6], [4, 2]]),
        ) {
            let mode = if linear { QuantMode::Linear } else { QuantMode::LinearSymmetric };
            let r = q(&vals, &[4, 6], &bs, d, mode);
            let deq = dequant(&r, &[4, 6]);
            let (bh, bw) = (if bs[0] == 0 { 4 } else { bs[0] }, if bs[1] == 0 { 6 } else { bs[1] });
            for i in 0..4 {
                for j in 0..6 {
                    let s = r.scale[(i / bh) * r.scale_shape[1] + j / bw];
                    let err = (deq[i * 6 + j] - vals[i * 6 + j]).abs();
                    prop_assert!(err <= s * 0.5 * (1.0 + 1e-4) + 1e-6, "err {} scale {}", err, s);
                }
            }
        }

        #[test]
        fn fp16_codes_in_range(bits in prop::collection::vec(0u16..0x7C00, 32), neg in prop::collection::vec(any::<bool>(), 32)) {
            let w: Vec<f16> = bits.iter().zip(&neg).map(|(&b, &n)| f16::from_bits(b | if n { 0x8000 } else { 0 })).collect();
            for d in [QuantDtype::Int8, QuantDtype::UInt4] {
                for m in [QuantMode::Linear, QuantMode::LinearSymmetric] {
                    let r = q(&w, &[4, 8], &[1, 0], d, m);
                    let (lo, hi) = quant_range(d, m);
                    prop_assert!(codes(&r.codes).iter().all(|&c| (lo..=hi).contains(&c)));
                    prop_assert_eq!(r.codes.bytes().len(), pack::packed_len(r.codes.len(), d.nbits()));
                }
            }
        }
    }
}
