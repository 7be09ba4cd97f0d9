//! IEEE binary16 helpers shared by the kernels.
//!
//! coremltools does its arithmetic with numpy on arrays of the weight's own dtype. For float16
//! arrays numpy computes every single operation in float32 and rounds the result back to float16
//! (round-half-to-even). Reproducing that op by op is what makes our LUTs, scales and codes equal
//! to coremltools' bit for bit, so every kernel does its element arithmetic through
//! [`WeightElement`], whose methods round in the element's own dtype (for f32 that rounding is the
//! identity).
//!
//! Also here: a correctly rounded f64 → f16 conversion (numpy's `astype(float16)` on float64; the
//! `half` crate's own `from_f64` may round twice), a 65,536-bin histogram of f16 bit patterns, an
//! order-preserving integer key for floats, and numpy's x86 float → integer cast.

use half::f16;
use rayon::prelude::*;

/// A floating-point weight element (f16 or f32), with numpy's per-dtype arithmetic.
///
/// Binary operations compute in f32 and round the result to `Self` with round-half-to-even,
/// exactly like a numpy ufunc on an array of that dtype (with a Python scalar operand, which
/// numpy first casts to the array dtype: use [`WeightElement::from_f32`] for it).
pub trait WeightElement:
    bytemuck::Pod + Send + Sync + PartialEq + PartialOrd + Default + std::fmt::Debug + 'static
{
    /// True for f16: lets kernels pick bit-pattern algorithms (histograms) without a second trait.
    const IS_HALF: bool;
    /// Name of the dtype as numpy spells it, for messages.
    const NAME: &'static str;

    /// Exact widening to f32.
    fn to_f32(self) -> f32;
    /// Rounds an f32 to this dtype (round-half-to-even); the identity for f32.
    fn from_f32(x: f32) -> Self;
    /// Correctly rounded narrowing from f64 (numpy `astype` semantics, no double rounding).
    fn from_f64(x: f64) -> Self;
    /// Raw bit pattern, zero-extended.
    fn to_bits_u32(self) -> u32;
    /// The value of a bit pattern (the low 16 bits for f16).
    fn from_bits_u32(bits: u32) -> Self;

    /// Exact widening to f64.
    #[inline]
    fn to_f64(self) -> f64 {
        self.to_f32() as f64
    }
    /// `a + b` rounded to this dtype.
    #[inline]
    fn add(self, rhs: Self) -> Self {
        Self::from_f32(self.to_f32() + rhs.to_f32())
    }
    /// `a - b` rounded to this dtype.
    #[inline]
    fn sub(self, rhs: Self) -> Self {
        Self::from_f32(self.to_f32() - rhs.to_f32())
    }
    /// `a * b` rounded to this dtype.
    #[inline]
    fn mul(self, rhs: Self) -> Self {
        Self::from_f32(self.to_f32() * rhs.to_f32())
    }
    /// `a / b` rounded to this dtype.
    #[inline]
    fn div(self, rhs: Self) -> Self {
        Self::from_f32(self.to_f32() / rhs.to_f32())
    }
    /// `np.abs` (exact).
    #[inline]
    fn abs(self) -> Self {
        Self::from_f32(self.to_f32().abs())
    }
    /// `np.round` / `np.rint`: nearest integer, ties to even (exact in any dtype).
    #[inline]
    fn round_ties_even(self) -> Self {
        Self::from_f32(self.to_f32().round_ties_even())
    }
    /// Neither NaN nor infinite.
    #[inline]
    fn is_finite(self) -> bool {
        self.to_f32().is_finite()
    }
    /// Positive zero.
    #[inline]
    fn zero() -> Self {
        Self::from_f32(0.0)
    }
    /// `Self(f(a, b))` with f evaluated in f32: one numpy binary op on arrays of this dtype.
    #[inline(always)]
    fn op(self, other: Self, f: impl Fn(f32, f32) -> f32) -> Self {
        Self::from_f32(f(self.to_f32(), other.to_f32()))
    }
    /// A Python scalar converted to this dtype (NEP 50 weak promotion: one correct rounding).
    #[inline(always)]
    fn lit(x: f64) -> Self {
        Self::from_f64(x)
    }
    /// Little-endian bytes of a slice of elements (blob layout; the host is little-endian).
    fn slice_to_le_bytes(values: &[Self]) -> Vec<u8> {
        bytemuck::cast_slice(values).to_vec()
    }
    /// Whether the value is ±inf, from the bit pattern (vectorizes, unlike a table lookup).
    fn is_inf_bits(self) -> bool;

    /// Eight elements widened to f32.
    fn widen8<H: HalfLanes>(h: H, x: &[Self; 8]) -> [f32; 8];
    /// `src` widened to f32 into `dst` (same lengths).
    fn widen_slice<H: HalfLanes>(h: H, src: &[Self], dst: &mut [f32]);
    /// `src` (f32 values) rounded to this dtype into `dst` (same lengths).
    fn narrow_slice<H: HalfLanes>(h: H, src: &[f32], dst: &mut [Self]);
    /// Every value of `x` rounded to this dtype in place (one numpy op's rounding).
    fn round_slice<H: HalfLanes>(h: H, x: &mut [f32]);
}

/// Every f16 bit pattern widened to f32: a 256 KB table that keeps the widening inlinable (the
/// `half` crate checks for F16C at run time on every call).
static F16_TO_F32: std::sync::LazyLock<Box<[f32]>> =
    std::sync::LazyLock::new(|| (0..=u16::MAX).map(|b| f16::from_bits(b).to_f32()).collect());

impl WeightElement for f16 {
    const IS_HALF: bool = true;
    const NAME: &'static str = "float16";
    #[inline]
    fn to_f32(self) -> f32 {
        F16_TO_F32[self.to_bits() as usize]
    }
    #[inline]
    fn from_f32(x: f32) -> Self {
        f16::from_f32(x)
    }
    #[inline]
    fn from_f64(x: f64) -> Self {
        f16_from_f64(x)
    }
    #[inline]
    fn to_bits_u32(self) -> u32 {
        self.to_bits() as u32
    }
    #[inline]
    fn from_bits_u32(bits: u32) -> Self {
        f16::from_bits(bits as u16)
    }
    #[inline(always)]
    fn is_inf_bits(self) -> bool {
        self.to_bits() & 0x7FFF == 0x7C00
    }
    #[inline(always)]
    fn widen8<H: HalfLanes>(h: H, x: &[Self; 8]) -> [f32; 8] {
        h.widen(x.map(f16::to_bits))
    }
    #[inline(always)]
    fn widen_slice<H: HalfLanes>(h: H, src: &[Self], dst: &mut [f32]) {
        h.widen_slice(src, dst);
    }
    #[inline(always)]
    fn narrow_slice<H: HalfLanes>(h: H, src: &[f32], dst: &mut [Self]) {
        h.narrow_slice(src, dst);
    }
    #[inline(always)]
    fn round_slice<H: HalfLanes>(h: H, x: &mut [f32]) {
        h.round_slice(x);
    }
}

impl WeightElement for f32 {
    const IS_HALF: bool = false;
    const NAME: &'static str = "float32";
    #[inline]
    fn to_f32(self) -> f32 {
        self
    }
    #[inline]
    fn from_f32(x: f32) -> Self {
        x
    }
    #[inline]
    fn from_f64(x: f64) -> Self {
        x as f32
    }
    #[inline]
    fn to_bits_u32(self) -> u32 {
        self.to_bits()
    }
    #[inline]
    fn from_bits_u32(bits: u32) -> Self {
        f32::from_bits(bits)
    }
    #[inline(always)]
    fn is_inf_bits(self) -> bool {
        self.to_bits() & 0x7FFF_FFFF == 0x7F80_0000
    }
    #[inline(always)]
    fn widen8<H: HalfLanes>(_: H, x: &[Self; 8]) -> [f32; 8] {
        *x
    }
    #[inline(always)]
    fn widen_slice<H: HalfLanes>(_: H, src: &[Self], dst: &mut [f32]) {
        dst.copy_from_slice(src);
    }
    #[inline(always)]
    fn narrow_slice<H: HalfLanes>(_: H, src: &[f32], dst: &mut [Self]) {
        dst.copy_from_slice(src);
    }
    #[inline(always)]
    fn round_slice<H: HalfLanes>(_: H, _: &mut [f32]) {}
}

// ------------------------------------------------------------------------------------------------
// Eight-lane kernels
//
// The hot kernels process `[f32; 8]` arrays with plain loops that the compiler turns into SIMD.
// Only the f16 <-> f32 conversions need dedicated instructions: [`dispatch`] runs a kernel body
// with [`F16c`] (this project's own AVX2 + F16C code) when the CPU has them, otherwise with
// [`HalfSlices`] (the `half` crate's slice conversions, which use F16C on x86-64 and FCVT on
// aarch64 when the CPU has them, software otherwise). [`SoftHalf`], the `half` crate's const
// software functions, is kept to measure and test against. All three round to nearest even and
// give identical bits for every input, NaN included.
//
// The `portable` cargo feature compiles [`F16c`] out, so x86-64 runs what other platforms run.
// `COREML_COMPRESS_HALF_LANES=f16c|half|software` (read once) picks a variant for measurement;
// unset, or naming one this build or CPU lacks, the default above applies.

/// Conversion of f16 values to and from f32: eight lanes at a time, and whole slices (which
/// kernels use for row-wide stages; the defaults go eight lanes at a time).
pub trait HalfLanes: Copy {
    fn widen(self, x: [u16; 8]) -> [f32; 8];
    fn narrow(self, x: [f32; 8]) -> [u16; 8];

    /// `src` widened into `dst` (same lengths).
    #[inline(always)]
    fn widen_slice(self, src: &[f16], dst: &mut [f32]) {
        map_lanes(bytemuck::cast_slice(src), dst, |x| self.widen(x));
    }
    /// `src` rounded into `dst` (same lengths).
    #[inline(always)]
    fn narrow_slice(self, src: &[f32], dst: &mut [f16]) {
        map_lanes(src, bytemuck::cast_slice_mut(dst), |x| self.narrow(x));
    }
    /// Every value of `x` rounded to f16 and widened back, in place.
    #[inline(always)]
    fn round_slice(self, x: &mut [f32]) {
        let mut chunks = x.chunks_exact_mut(8);
        for c in &mut chunks {
            let v: [f32; 8] = (*c).try_into().expect("eight");
            c.copy_from_slice(&self.widen(self.narrow(v)));
        }
        let rest = chunks.into_remainder();
        let mut v = [0f32; 8];
        v[..rest.len()].copy_from_slice(rest);
        rest.copy_from_slice(&self.widen(self.narrow(v))[..rest.len()]);
    }
}

/// `dst = f(src)` eight elements at a time (same lengths; a partial last group is padded with
/// defaults). Fixed-size groups, so that the copies compile to vector moves.
#[inline(always)]
fn map_lanes<A: Copy + Default, B: Copy + Default>(
    src: &[A],
    dst: &mut [B],
    f: impl Fn([A; 8]) -> [B; 8],
) {
    assert_eq!(src.len(), dst.len());
    let mut d = dst.chunks_exact_mut(8);
    let mut s = src.chunks_exact(8);
    for (d, s) in (&mut d).zip(&mut s) {
        d.copy_from_slice(&f(s.try_into().expect("eight")));
    }
    let (d, s) = (d.into_remainder(), s.remainder());
    let mut x = [A::default(); 8];
    x[..s.len()].copy_from_slice(s);
    d.copy_from_slice(&f(x)[..d.len()]);
}

/// The `half` crate's slice conversions: its own runtime dispatch to the CPU's conversion
/// instructions, element-wise software where there are none.
#[derive(Clone, Copy, Debug)]
pub struct HalfSlices;

// Each conversion call pays the crate's feature check and an out-of-line call: the slice methods
// convert a whole slice per call, so that kernels written in row-wide stages pay it per slice
// rather than per eight elements.
impl HalfLanes for HalfSlices {
    #[inline(always)]
    fn widen(self, x: [u16; 8]) -> [f32; 8] {
        let mut out = [0.0f32; 8];
        self.widen_slice(&x.map(f16::from_bits), &mut out);
        out
    }
    #[inline(always)]
    fn narrow(self, x: [f32; 8]) -> [u16; 8] {
        let mut out = [f16::ZERO; 8];
        self.narrow_slice(&x, &mut out);
        out.map(f16::to_bits)
    }
    #[inline(always)]
    fn widen_slice(self, src: &[f16], dst: &mut [f32]) {
        use half::slice::HalfFloatSliceExt;
        src.convert_to_f32_slice(dst);
    }
    #[inline(always)]
    fn narrow_slice(self, src: &[f32], dst: &mut [f16]) {
        use half::slice::HalfFloatSliceExt;
        dst.convert_from_f32_slice(src);
    }
    #[inline(always)]
    fn round_slice(self, x: &mut [f32]) {
        // Tiles of [`TILE`]: a tile-wide stage rounds with one pair of calls.
        let mut h = [f16::ZERO; TILE];
        for c in x.chunks_mut(TILE) {
            let h = &mut h[..c.len()];
            self.narrow_slice(c, h);
            self.widen_slice(h, c);
        }
    }
}

/// Elements per stage of kernels written in tile-wide stages (each numpy op one loop over a tile,
/// then one rounding of the tile): the tile stays in L1, and [`HalfSlices`] pays its per-call
/// cost (the crate's feature check and an out-of-line conversion) once per stage rather than per
/// eight elements. A multiple of 8, so that lane sums can go by element index mod 8.
pub const TILE: usize = 256;

/// Software conversion (the `half` crate's const functions): what platforms without a dispatched
/// conversion would run; the reference the others are tested against.
#[derive(Clone, Copy, Debug)]
pub struct SoftHalf;

impl HalfLanes for SoftHalf {
    #[inline(always)]
    fn widen(self, x: [u16; 8]) -> [f32; 8] {
        x.map(|b| f16::from_bits(b).to_f32_const())
    }
    #[inline(always)]
    fn narrow(self, x: [f32; 8]) -> [u16; 8] {
        x.map(|v| f16::from_f32_const(v).to_bits())
    }
}

/// The x86 F16C instructions. Only [`dispatch`] creates one, after checking the CPU.
#[cfg(x86_f16c)]
#[derive(Clone, Copy, Debug)]
pub struct F16c(());

#[cfg(x86_f16c)]
impl HalfLanes for F16c {
    #[inline(always)]
    fn widen(self, x: [u16; 8]) -> [f32; 8] {
        use std::arch::x86_64::*;
        // SAFETY: an `F16c` exists only when the CPU supports F16C and AVX; the array types have
        // the sizes of the vector types.
        unsafe {
            std::mem::transmute::<__m256, [f32; 8]>(_mm256_cvtph_ps(std::mem::transmute::<
                [u16; 8],
                __m128i,
            >(x)))
        }
    }
    #[inline(always)]
    fn narrow(self, x: [f32; 8]) -> [u16; 8] {
        use std::arch::x86_64::*;
        // SAFETY: as in `widen`.
        unsafe {
            std::mem::transmute::<__m128i, [u16; 8]>(_mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(
                std::mem::transmute::<[f32; 8], __m256>(x),
            ))
        }
    }
}

/// A kernel body generic over the f16 lane conversion, run by [`dispatch`]. `run` should be
/// `#[inline(always)]` (as should what it calls) so that it is compiled for the chosen CPU.
pub trait LaneKernel {
    type Output;
    fn run<H: HalfLanes>(self, h: H) -> Self::Output;
}

/// The lane conversions [`dispatch`] can run a kernel with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LaneVariant {
    /// [`F16c`]; never chosen by a `portable` build or on a CPU without AVX2 and F16C.
    F16c,
    /// [`HalfSlices`].
    HalfSlices,
    /// [`SoftHalf`].
    Software,
}

impl LaneVariant {
    const ALL: [LaneVariant; 3] = [
        LaneVariant::F16c,
        LaneVariant::HalfSlices,
        LaneVariant::Software,
    ];

    /// The name `COREML_COMPRESS_HALF_LANES` uses.
    pub fn name(self) -> &'static str {
        match self {
            LaneVariant::F16c => "f16c",
            LaneVariant::HalfSlices => "half",
            LaneVariant::Software => "software",
        }
    }

    /// Whether this build can run the variant on this CPU.
    fn available(self) -> bool {
        match self {
            #[cfg(x86_f16c)]
            LaneVariant::F16c => {
                std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("f16c")
            }
            #[cfg(not(x86_f16c))]
            LaneVariant::F16c => false,
            LaneVariant::HalfSlices | LaneVariant::Software => true,
        }
    }

    /// The variant named by `COREML_COMPRESS_HALF_LANES` if this build and CPU have it, else
    /// F16C where available and the `half` crate's conversions otherwise. Chosen once.
    pub fn current() -> LaneVariant {
        static CHOSEN: std::sync::OnceLock<LaneVariant> = std::sync::OnceLock::new();
        *CHOSEN.get_or_init(|| {
            let asked = std::env::var("COREML_COMPRESS_HALF_LANES").unwrap_or_default();
            LaneVariant::ALL
                .into_iter()
                .find(|v| v.name() == asked && v.available())
                .unwrap_or(if LaneVariant::F16c.available() {
                    LaneVariant::F16c
                } else {
                    LaneVariant::HalfSlices
                })
        })
    }
}

/// Runs `k` with the lane conversions of [`LaneVariant::current`]; the results are identical
/// whichever it is.
pub fn dispatch<K: LaneKernel>(k: K) -> K::Output {
    match LaneVariant::current() {
        #[cfg(x86_f16c)]
        LaneVariant::F16c => {
            #[target_feature(enable = "avx2,f16c")]
            fn fast<K: LaneKernel>(k: K) -> K::Output {
                k.run(F16c(()))
            }
            // SAFETY: `current` chooses F16c only where the CPU has both features.
            unsafe { fast(k) }
        }
        LaneVariant::Software => k.run(SoftHalf),
        _ => k.run(HalfSlices),
    }
}

/// `src` widened to f32 into `dst` (`dst.len() >= src.len()`, rounded up to 8); the padding
/// after `src.len()` is set to 0.
#[inline(always)]
pub fn widen_into<T: WeightElement, H: HalfLanes>(h: H, src: &[T], dst: &mut [f32]) {
    T::widen_slice(h, src, &mut dst[..src.len()]);
    dst[src.len()..src.len().div_ceil(8) * 8].fill(0.0);
}

/// Elements `i..i + 8` of `src` widened to f32 (zeros past the end).
#[inline(always)]
pub fn load8<T: WeightElement, H: HalfLanes>(h: H, src: &[T], i: usize) -> [f32; 8] {
    match src.get(i..i + 8) {
        Some(s) => T::widen8(h, s.try_into().unwrap()),
        None => std::array::from_fn(|l| src.get(i + l).map_or(0.0, |v| v.to_f32())),
    }
}

/// `src` (f32 values of `T`, at least `dst.len()`) narrowed into `dst`.
#[inline(always)]
pub fn narrow_into<T: WeightElement, H: HalfLanes>(h: H, src: &[f32], dst: &mut [T]) {
    T::narrow_slice(h, &src[..dst.len()], dst);
}

/// Adds `x²` and `(x − y)²`, in f64, lane-wise to `acc` (signal and noise energy).
#[inline(always)]
pub fn add_energy8(acc: &mut ([f64; 8], [f64; 8]), x: [f32; 8], y: [f32; 8]) {
    let x: [f64; 8] = x.map(f64::from);
    let y: [f64; 8] = y.map(f64::from);
    for l in 0..8 {
        let d = x[l] - y[l];
        acc.0[l] += x[l] * x[l];
        acc.1[l] += d * d;
    }
}

/// The eight lanes of `x` starting at `i` (`x.len() >= i + 8`).
#[inline(always)]
pub fn lanes(x: &[f32], i: usize) -> [f32; 8] {
    x[i..i + 8].try_into().unwrap()
}

/// Correctly rounded (round-half-to-even) f64 → f16, as numpy's `astype(np.float16)`.
///
/// Goes through f32 with round-to-odd: with 13 spare bits between the two formats, rounding to
/// odd first and then to nearest-even gives the same result as one direct rounding.
pub fn f16_from_f64(x: f64) -> f16 {
    let y = x as f32;
    if !y.is_finite() || y as f64 == x {
        return f16::from_f32(y);
    }
    let mut bits = y.to_bits();
    if (y as f64).abs() > x.abs() {
        // `as` rounded away from zero: step one ulp back toward zero (same sign, |y| > 0).
        bits -= 1;
    }
    f16::from_f32(f32::from_bits(bits | 1))
}

/// Counts of every f16 bit pattern in `data` (index = the bit pattern), O(n) and parallel.
///
/// The basis of k-means on f16 weights: at most 65,536 distinct values exist, whatever the size
/// of the tensor. Generic so that code generic over [`WeightElement`] can call it; only for f16
/// (panics on f32).
pub fn bit_histogram<T: WeightElement>(data: &[T]) -> Vec<u64> {
    assert!(T::IS_HALF, "bit_histogram is for float16 data");
    key_histogram(data, 1 << 16, |v| (v.to_bits_u32() & 0xFFFF) as usize)
}

/// Counts of each `key(x)` (all below `bins`) over `data`, O(n) and parallel. Integer counts make
/// the parallel sum independent of the thread count.
pub fn key_histogram<T: Sync>(
    data: &[T],
    bins: usize,
    key: impl Fn(&T) -> usize + Sync + Copy,
) -> Vec<u64> {
    const MIN_PIECE: usize = 1 << 18;
    if data.len() > u32::MAX as usize {
        // Counted in u32 below: at most that many elements at a time.
        return data
            .chunks(u32::MAX as usize)
            .map(|part| key_histogram(part, bins, key))
            .reduce(add_counts)
            .unwrap_or_else(|| vec![0; bins]);
    }
    // One u32 table (half the cache footprint of u64) per thread's piece: fresh tables cost page
    // faults, and counts add up to the same integers however the data is split.
    let count = |piece: &[T]| {
        let mut table = vec![0u32; bins];
        for v in piece {
            table[key(v)] += 1;
        }
        table
    };
    let piece = data
        .len()
        .div_ceil(rayon::current_num_threads())
        .max(MIN_PIECE);
    data.par_chunks(piece)
        .map(count)
        .reduce_with(add_counts)
        .unwrap_or_else(|| vec![0; bins])
        .into_iter()
        .map(u64::from)
        .collect()
}

/// Element-wise sum of two count tables.
fn add_counts<C: std::ops::AddAssign + Copy>(mut a: Vec<C>, b: Vec<C>) -> Vec<C> {
    for (x, y) in a.iter_mut().zip(b) {
        *x += y;
    }
    a
}

/// Monotone u32 key of an f32: `a < b` ⇔ `key(a) < key(b)` for non-NaN values. -0.0 and 0.0 get
/// the same key, as numpy's comparisons (and `np.unique`) treat them as equal.
#[inline]
pub fn f32_order_key(x: f32) -> u32 {
    let x = if x == 0.0 { 0.0 } else { x };
    let b = x.to_bits();
    if b & 0x8000_0000 != 0 {
        !b
    } else {
        b | 0x8000_0000
    }
}

/// Inverse of [`f32_order_key`] (zero comes back as +0.0).
#[inline]
pub fn f32_from_order_key(k: u32) -> f32 {
    if k & 0x8000_0000 != 0 {
        f32::from_bits(k & 0x7FFF_FFFF)
    } else {
        f32::from_bits(!k)
    }
}

/// numpy's float → integer `astype` on x86-64 (`cvttss2si`): truncation toward zero, and NaN or
/// out-of-range values give `i32::MIN`. Casting the result `as u8` / `as i8` reproduces
/// `astype(np.uint8)` / `astype(np.int8)` (which keep the low byte), e.g. NaN → 0.
#[inline]
pub fn trunc_to_i32_x86(x: f32) -> i32 {
    if x.is_nan() || !(-2_147_483_648.0..2_147_483_648.0).contains(&x) {
        i32::MIN
    } else {
        x as i32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use proptest::prelude::*;

    #[test]
    fn f64_to_f16_matches_numpy() {
        // (input f64 bits, numpy float64 -> float16 bits), from numpy 2.4. The inputs sit just
        // above/below f16 midpoints, where rounding through f32 first gives the wrong answer.
        let golden: &[(u64, u16)] = &[
            (0x3ff0_0200_0000_0001, 0x3c01),
            (0x3ff0_0200_0000_0000, 0x3c00),
            (0x3ff0_05ff_ffff_ffff, 0x3c01),
            (0x3ff0_0600_0000_0000, 0x3c02),
            (0xbff0_0200_0000_0001, 0xbc01),
            (0x3e70_0000_0000_0001, 0x0001),
            (0x3e60_0000_0000_0000, 0x0000),
            (0x3e60_0000_0000_0001, 0x0001),
            (0x40ef_fdff_ffff_ffff, 0x7bff),
            (0x40ef_fe00_0000_0000, 0x7c00),
        ];
        for &(x, want) in golden {
            let got = f16_from_f64(f64::from_bits(x));
            assert_eq!(got.to_bits(), want, "input {:e}", f64::from_bits(x));
        }
    }

    proptest! {
        #[test]
        fn f64_to_f16_is_nearest(bits in any::<u64>()) {
            let x = f64::from_bits(bits);
            prop_assume!(x.is_finite() && x.abs() < 65504.0);
            let h = f16_from_f64(x);
            let e = (h.to_f64() - x).abs();
            // Neighbours must not be strictly closer.
            let up = f16::from_bits(h.to_bits().wrapping_add(1));
            let dn = f16::from_bits(h.to_bits().wrapping_sub(1));
            for n in [up, dn] {
                if n.is_finite() && n.to_f64().signum() == h.to_f64().signum() {
                    prop_assert!((n.to_f64() - x).abs() >= e);
                }
            }
        }

        #[test]
        fn order_key_is_monotone(a in any::<f32>(), b in any::<f32>()) {
            prop_assume!(!a.is_nan() && !b.is_nan());
            prop_assert_eq!(a < b, f32_order_key(a) < f32_order_key(b));
            prop_assert_eq!(a == b, f32_order_key(a) == f32_order_key(b));
            prop_assert_eq!(f32_from_order_key(f32_order_key(a)), a);
        }
    }

    #[test]
    fn half_ops_round_per_operation() {
        // numpy: np.float16(0.1) + np.float16(0.2) == np.float16(0.2998) (bits 0x34cc).
        let a = f16::from_f32(0.1);
        let b = f16::from_f32(0.2);
        assert_eq!(WeightElement::add(a, b).to_bits(), 0x34cc);
        assert_eq!(WeightElement::div(a, b).to_bits(), 0x3800);
        assert_eq!(<f32 as WeightElement>::add(0.1, 0.2), 0.1f32 + 0.2f32);
    }

    #[test]
    fn histogram_counts_patterns() {
        let data: Vec<f16> = (0..700_000u32)
            .map(|i| f16::from_bits((i % 1000) as u16))
            .collect();
        let h = bit_histogram(&data);
        assert_eq!(h[0], 700);
        assert_eq!(h[999], 700);
        assert_eq!(h[1000], 0);
        assert_eq!(h.iter().sum::<u64>(), 700_000);
        // Any length, any thread count.
        let odd: Vec<f16> = (0..700_003u64)
            .map(|i| f16::from_bits((i * 7919 % 65536) as u16))
            .collect();
        let mut want = vec![0u64; 1 << 16];
        odd.iter().for_each(|v| want[v.to_bits() as usize] += 1);
        for threads in [1, 3] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            assert_eq!(pool.install(|| bit_histogram(&odd)), want);
        }
    }

    /// Every lane variant this build and CPU have gives the software conversion's bits.
    fn lanes_match_software<H: HalfLanes>(h: H) {
        for b in (0..=u16::MAX).step_by(8) {
            let x: [u16; 8] = std::array::from_fn(|l| b + l as u16);
            let (hw, sw) = (h.widen(x), SoftHalf.widen(x));
            assert_eq!(hw.map(f32::to_bits), sw.map(f32::to_bits));
            assert_eq!(h.narrow(hw), SoftHalf.narrow(sw));
        }
        let mut r = testgen::SplitMix(7);
        for i in 0..1_000_000u32 {
            // Random patterns, and every f16 midpoint and its neighbours.
            let x: [f32; 8] = std::array::from_fn(|l| {
                let v = r.next_u64() as u32;
                match l {
                    0 => f32::from_bits(v),
                    1..=3 => f32::from_bits(
                        ((v & 0x8FFF_E000) + 0x3000_0000).wrapping_add((l as u32).wrapping_sub(2)),
                    ),
                    _ => f32::from_bits(
                        (((i & 0xFFFF) << 13) + 0x1000).wrapping_add((l as u32).wrapping_sub(5)),
                    ),
                }
            });
            assert_eq!(h.narrow(x), SoftHalf.narrow(x), "{x:?}");
        }
        // The slice conversions, across tiles and with partial lane groups: every f16 pattern,
        // and f32 values around every f16 midpoint.
        let all: Vec<f16> = (0..=u16::MAX).map(f16::from_bits).collect();
        let near_mid: Vec<f32> = (0..1u32 << 17)
            .map(|i| f32::from_bits(((i >> 1) << 13) + 0x1000 + (i & 1)))
            .chain((0..1000).map(|_| f32::from_bits(r.next_u64() as u32)))
            .collect();
        let f32_bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        for len in [0, 5, 8, 13, TILE + 3, all.len() - 7] {
            let (mut a, mut b) = (vec![0f32; len], vec![0f32; len]);
            h.widen_slice(&all[..len], &mut a);
            SoftHalf.widen_slice(&all[..len], &mut b);
            assert_eq!(f32_bits(&a), f32_bits(&b));
            let (mut c, mut d) = (vec![f16::ZERO; len], vec![f16::ZERO; len]);
            h.narrow_slice(&near_mid[..len], &mut c);
            SoftHalf.narrow_slice(&near_mid[..len], &mut d);
            assert!(c.iter().zip(&d).all(|(c, d)| c.to_bits() == d.to_bits()));
            let (mut e, mut f) = (near_mid[..len].to_vec(), near_mid[..len].to_vec());
            h.round_slice(&mut e);
            SoftHalf.round_slice(&mut f);
            assert_eq!(f32_bits(&e), f32_bits(&f));
        }
    }

    #[test]
    fn half_slice_lanes_match_software() {
        lanes_match_software(HalfSlices);
    }

    #[test]
    #[cfg(x86_f16c)]
    fn f16c_lanes_match_software() {
        if LaneVariant::F16c.available() {
            lanes_match_software(F16c(()));
        }
    }

    #[test]
    fn x86_cast() {
        assert_eq!(trunc_to_i32_x86(f32::NAN) as u8, 0);
        assert_eq!(trunc_to_i32_x86(15.0) as u8, 15);
        assert_eq!(trunc_to_i32_x86(-1.5) as u8, 255);
        assert_eq!(trunc_to_i32_x86(3e9), i32::MIN);
    }
}

/// Deterministic test data shared by the kernel tests; the same generator exists in Python
/// (splitmix64) to produce the golden values from coremltools.
#[cfg(test)]
pub(crate) mod testgen {
    /// splitmix64.
    pub struct SplitMix(pub u64);
    impl SplitMix {
        pub fn next_u64(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }
    }
    /// `n` bell-shaped values, each the sum of four 16-bit draws times 2^-e (exact in f64).
    pub fn normalish(seed: u64, n: usize, e: i32) -> Vec<f64> {
        let mut r = SplitMix(seed);
        (0..n)
            .map(|_| {
                let s: i64 = (0..4).map(|_| (r.next_u64() >> 48) as i64 - 32768).sum();
                s as f64 * 2f64.powi(-e)
            })
            .collect()
    }
}
