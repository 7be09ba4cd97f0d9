//! Sub-byte bit packing, as Core ML stores `uint1..uint6`, `int4` and boolean masks.
//!
//! Layout (identical in weight.bin blobs, inline immediates, iOS16 packed `indices`/`mask`
//! `uint8[M]` attributes and iOS18 `uint1` masks): element `i` of width `b` occupies bits
//! `[i·b, i·b + b)` of a little-endian bit stream — byte `(i·b)/8`, starting at bit `(i·b)%8`
//! counted from the least significant bit, spilling into the next byte when it does not fit
//! (widths 3, 5, 6, 7). Signed values are stored as their two's-complement low `b` bits
//! (int4 `-6` → `0xA`). The byte length is `ceil(N·b/8)` and unused high bits of the last byte are
//! zero.
//!
//! Any width in `1..=8` is accepted (Core ML uses 1, 2, 3, 4, 6 and 8). Out-of-range values are an
//! error, never a silent truncation.
//!
//! The work is done eight elements at a time (eight `b`-bit fields are exactly `b` bytes), and large
//! inputs are split across rayon threads on 8-element boundaries, so the output is the same bytes
//! for every thread count.

use rayon::prelude::*;

use crate::error::Result;
use crate::format_err;

/// Elements per parallel work item (a multiple of 8, so every item starts on a byte boundary).
const PAR_CHUNK: usize = 1 << 16;

/// An element that can be packed into a `bits`-wide field: `u8` (unsigned), `i8` (signed, two's
/// complement) or `bool` (a mask bit; any width, stored as 0 or 1).
pub trait PackElem: Copy + Send + Sync + 'static {
    /// Whether the field is read back with sign extension.
    const SIGNED: bool;
    /// The element's byte (two's complement for `i8`); only its low `bits` bits are stored.
    fn raw(self) -> u8;
    /// Whether the value is representable in `bits` bits (`bits` in `1..=8`).
    fn fits(self, bits: u32) -> bool;
    /// The element encoded by the low `bits` bits of `field` (higher bits of `field` are zero).
    fn from_field(field: u8, bits: u32) -> Self;
    /// The value, widened, for error messages.
    fn value(self) -> i32;
}

impl PackElem for u8 {
    const SIGNED: bool = false;
    #[inline(always)]
    fn raw(self) -> u8 {
        self
    }
    #[inline(always)]
    fn fits(self, bits: u32) -> bool {
        (self as u32) >> bits == 0
    }
    #[inline(always)]
    fn from_field(field: u8, _bits: u32) -> Self {
        field
    }
    fn value(self) -> i32 {
        self as i32
    }
}

impl PackElem for i8 {
    const SIGNED: bool = true;
    #[inline(always)]
    fn raw(self) -> u8 {
        self as u8
    }
    #[inline(always)]
    fn fits(self, bits: u32) -> bool {
        // Representable iff every bit from the sign bit of the field upward is equal.
        let top = (self as i32) >> (bits - 1);
        top == 0 || top == -1
    }
    #[inline(always)]
    fn from_field(field: u8, bits: u32) -> Self {
        let shift = 8 - bits;
        ((field << shift) as i8) >> shift
    }
    fn value(self) -> i32 {
        self as i32
    }
}

impl PackElem for bool {
    const SIGNED: bool = false;
    #[inline(always)]
    fn raw(self) -> u8 {
        self as u8
    }
    #[inline(always)]
    fn fits(self, _bits: u32) -> bool {
        true
    }
    #[inline(always)]
    fn from_field(field: u8, _bits: u32) -> Self {
        field != 0
    }
    fn value(self) -> i32 {
        self as i32
    }
}

/// Bytes needed for `count` fields of `bits` bits: `ceil(count·bits/8)`.
#[inline]
pub fn packed_len(count: usize, bits: u32) -> usize {
    // Written to avoid overflowing `count * bits` for huge counts.
    (count / 8) * bits as usize + ((count % 8) * bits as usize).div_ceil(8)
}

fn check_bits(bits: u32) -> Result<()> {
    if (1..=8).contains(&bits) {
        Ok(())
    } else {
        Err(format_err!(
            "bit width {bits} is not supported for packing (expected 1 to 8)"
        ))
    }
}

/// The error for the first value of `values` (fields `first..`) that does not fit in `bits`.
fn range_error<T: PackElem>(values: &[T], bits: u32, first: usize) -> crate::error::Error {
    let (lo, hi) = if T::SIGNED {
        (-(1i32 << (bits - 1)), (1i32 << (bits - 1)) - 1)
    } else {
        (0, (1i32 << bits) - 1)
    };
    let kind = if T::SIGNED { "int" } else { "uint" };
    match values.iter().position(|v| !v.fits(bits)) {
        Some(i) => format_err!(
            "cannot pack value {} (element {}) as {kind}{bits}: the range is [{lo}, {hi}]",
            values[i].value(),
            first + i
        ),
        None => format_err!("internal error: no out-of-range value found for {kind}{bits}"),
    }
}

/// Packs up to 8 values into `out` (exactly `packed_len(vals.len(), bits)` bytes). Returns
/// whether every value was in range.
#[inline(always)]
fn pack_group<T: PackElem>(vals: &[T], bits: u32, out: &mut [u8]) -> bool {
    let mask = ((1u32 << bits) - 1) as u8;
    let mut acc = 0u64;
    let mut ok = true;
    for (i, v) in vals.iter().enumerate() {
        ok &= v.fits(bits);
        acc |= ((v.raw() & mask) as u64) << (i as u32 * bits);
    }
    let n = out.len();
    out.copy_from_slice(&acc.to_le_bytes()[..n]);
    ok
}

/// Sequential packing of `values` into `out` (`out.len() == packed_len(values.len(), bits)`).
fn pack_serial<T: PackElem>(values: &[T], bits: u32, out: &mut [u8]) -> bool {
    let b = bits as usize;
    let mut ok = true;
    if bits == 8 {
        for (o, v) in out.iter_mut().zip(values) {
            *o = v.raw();
            ok &= v.fits(8);
        }
        return ok;
    }
    let full = values.len() / 8;
    let (out_full, out_rest) = out.split_at_mut(full * b);
    let (vals_full, vals_rest) = values.split_at(full * 8);
    if bits == 1 {
        // Masks: one byte per eight values, without the 64-bit accumulator.
        for (g, o) in vals_full.chunks_exact(8).zip(out_full.iter_mut()) {
            let mut byte = 0u8;
            for (i, v) in g.iter().enumerate() {
                byte |= (v.raw() & 1) << i;
                ok &= v.fits(1);
            }
            *o = byte;
        }
    } else if bits == 4 {
        // The common width gets a loop over byte pairs that vectorizes.
        for (p, o) in vals_full.chunks_exact(2).zip(out_full.iter_mut()) {
            *o = (p[0].raw() & 0xF) | (p[1].raw() << 4);
            ok &= p[0].fits(4) & p[1].fits(4);
        }
    } else {
        for (g, o) in vals_full.chunks_exact(8).zip(out_full.chunks_exact_mut(b)) {
            ok &= pack_group(g, bits, o);
        }
    }
    if !vals_rest.is_empty() {
        ok &= pack_group(vals_rest, bits, out_rest);
    }
    ok
}

/// Packs `values` into `out`, which must be exactly `packed_len(values.len(), bits)` bytes long.
/// Fails (leaving `out` partially written) if a value does not fit in `bits` bits.
pub fn pack_into<T: PackElem>(values: &[T], bits: u32, out: &mut [u8]) -> Result<()> {
    check_bits(bits)?;
    let need = packed_len(values.len(), bits);
    if out.len() != need {
        return Err(format_err!(
            "packing {} values of {bits} bits needs {need} bytes, got a buffer of {}",
            values.len(),
            out.len()
        ));
    }
    let ok = if values.len() > PAR_CHUNK {
        let out_chunk = PAR_CHUNK / 8 * bits as usize;
        values
            .par_chunks(PAR_CHUNK)
            .zip(out.par_chunks_mut(out_chunk))
            .map(|(v, o)| pack_serial(v, bits, o))
            .reduce(|| true, |a, b| a && b)
    } else {
        pack_serial(values, bits, out)
    };
    if ok {
        Ok(())
    } else {
        Err(range_error(values, bits, 0))
    }
}

/// Packs `values` as fields `first..first + values.len()` of the stream that `out` holds from
/// field 0 (for writers that fill a stream piece by piece, in order). Fields before the next
/// multiple of eight are OR-ed into their bytes, which must hold only earlier fields so far; from
/// there on whole bytes are written.
pub fn pack_at<T: PackElem>(values: &[T], bits: u32, out: &mut [u8], first: usize) -> Result<()> {
    check_bits(bits)?;
    let lead = ((8 - first % 8) % 8).min(values.len());
    let mask = (1u16 << bits) - 1;
    for (j, v) in values[..lead].iter().enumerate() {
        if !v.fits(bits) {
            return Err(range_error(values, bits, 0));
        }
        let at = (first + j) * bits as usize;
        let field = (v.raw() as u16 & mask) << (at % 8);
        out[at / 8] |= field as u8;
        if at % 8 + bits as usize > 8 {
            out[at / 8 + 1] |= (field >> 8) as u8;
        }
    }
    let rest = &values[lead..];
    if rest.is_empty() {
        return Ok(());
    }
    let start = (first + lead) / 8 * bits as usize;
    pack_into(
        rest,
        bits,
        &mut out[start..start + packed_len(rest.len(), bits)],
    )
}

/// Packs `values` as `bits`-bit fields into `ceil(N·bits/8)` bytes (LSB first, unused high bits
/// zero). `u8` values must be in `[0, 2^bits)`, `i8` values in `[-2^(bits-1), 2^(bits-1))`;
/// anything else is an error.
pub fn pack<T: PackElem>(values: &[T], bits: u32) -> Result<Vec<u8>> {
    check_bits(bits)?;
    let mut out = vec![0u8; packed_len(values.len(), bits)];
    pack_into(values, bits, &mut out)?;
    Ok(out)
}

/// `len` fields of `bits` bits in their storage form (the bytes weight.bin holds): what kernels
/// hand the emitters, so that a weight's codes or indices never exist one byte per field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Packed {
    bits: u32,
    len: usize,
    bytes: Vec<u8>,
}

impl Packed {
    /// `values` packed (see [`pack`]); an error when one does not fit in `bits` bits.
    pub fn pack<T: PackElem>(values: &[T], bits: u32) -> Result<Self> {
        Ok(Packed {
            bits,
            len: values.len(),
            bytes: pack(values, bits)?,
        })
    }

    /// Fields written piece by piece: `fill(first, out)` sets fields `first..first + out.len()`
    /// (pieces of at most 65,536 fields, in parallel, each through a buffer its worker reuses),
    /// so the fields are never all unpacked at once.
    pub fn from_fn<T: PackElem + Default>(
        len: usize,
        bits: u32,
        fill: impl Fn(usize, &mut [T]) + Sync,
    ) -> Result<Self> {
        check_bits(bits)?;
        let mut bytes = vec![0u8; packed_len(len, bits)];
        let out_chunk = PAR_CHUNK / 8 * bits as usize;
        bytes
            .par_chunks_mut(out_chunk)
            .enumerate()
            .try_for_each_init(
                || vec![T::default(); PAR_CHUNK.min(len)],
                |buf, (c, out)| {
                    let first = c * PAR_CHUNK;
                    let fields = &mut buf[..PAR_CHUNK.min(len - first)];
                    fill(first, fields);
                    if pack_serial(fields, bits, out) {
                        Ok(())
                    } else {
                        Err(range_error(fields, bits, first))
                    }
                },
            )?;
        Ok(Packed { bits, len, bytes })
    }

    /// Stored bytes that hold `len` fields of `bits` bits (exactly `packed_len(len, bits)`).
    pub fn from_bytes(bytes: Vec<u8>, bits: u32, len: usize) -> Result<Self> {
        check_bits(bits)?;
        if bytes.len() != packed_len(len, bits) {
            return Err(format_err!(
                "{len} fields of {bits} bits take {} bytes, got {}",
                packed_len(len, bits),
                bytes.len()
            ));
        }
        Ok(Packed { bits, len, bytes })
    }

    pub fn bits(&self) -> u32 {
        self.bits
    }
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }

    /// Field `i`, unsigned (its low `bits` bits).
    #[inline]
    pub fn field(&self, i: usize) -> u8 {
        let at = i * self.bits as usize;
        let pair = self.bytes[at / 8] as u16
            | (self.bytes.get(at / 8 + 1).copied().unwrap_or(0) as u16) << 8;
        ((pair >> (at % 8)) & ((1u16 << self.bits) - 1)) as u8
    }

    /// Every field, one per element (see [`unpack`]).
    pub fn unpack<T: PackElem + Default>(&self) -> Vec<T> {
        unpack(&self.bytes, self.bits, self.len).expect("a Packed holds its fields")
    }

    /// Fields `first..first + count` unpacked; `first` must be a multiple of 8.
    pub fn unpack_range(&self, first: usize, count: usize) -> Vec<u8> {
        debug_assert_eq!(first % 8, 0);
        let start = first / 8 * self.bits as usize;
        unpack(&self.bytes[start..], self.bits, count).expect("a range of the fields")
    }
}

/// Reads up to 8 fields from `bytes` (exactly `packed_len(out.len(), bits)` bytes).
#[inline(always)]
fn unpack_group<T: PackElem>(bytes: &[u8], bits: u32, out: &mut [T]) {
    let mut buf = [0u8; 8];
    buf[..bytes.len()].copy_from_slice(bytes);
    let acc = u64::from_le_bytes(buf);
    let mask = (1u64 << bits) - 1;
    for (i, o) in out.iter_mut().enumerate() {
        *o = T::from_field(((acc >> (i as u32 * bits)) & mask) as u8, bits);
    }
}

fn unpack_serial<T: PackElem>(bytes: &[u8], bits: u32, out: &mut [T]) {
    let b = bits as usize;
    if bits == 8 {
        for (o, &x) in out.iter_mut().zip(bytes) {
            *o = T::from_field(x, 8);
        }
        return;
    }
    let full = out.len() / 8;
    let (out_full, out_rest) = out.split_at_mut(full * 8);
    let (in_full, in_rest) = bytes.split_at(full * b);
    if bits == 4 {
        for (o, &x) in out_full.chunks_exact_mut(2).zip(in_full) {
            o[0] = T::from_field(x & 0xF, 4);
            o[1] = T::from_field(x >> 4, 4);
        }
    } else {
        for (o, i) in out_full.chunks_exact_mut(8).zip(in_full.chunks_exact(b)) {
            unpack_group(i, bits, o);
        }
    }
    if !out_rest.is_empty() {
        let n = packed_len(out_rest.len(), bits);
        unpack_group(&in_rest[..n], bits, out_rest);
    }
}

/// Unpacks `count` fields of `bits` bits. `T = u8` gives the raw unsigned fields, `T = i8`
/// sign-extends them (int4), `T = bool` gives `field != 0`. `bytes` must hold at least
/// `packed_len(count, bits)` bytes; extra trailing bytes are ignored (like coremltools'
/// `restore_elements_from_packed_bits`), and padding bits are not inspected (see
/// [`padding_is_zero`]).
pub fn unpack<T: PackElem + Default>(bytes: &[u8], bits: u32, count: usize) -> Result<Vec<T>> {
    check_bits(bits)?;
    let need = packed_len(count, bits);
    if bytes.len() < need {
        return Err(format_err!(
            "{count} values of {bits} bits need {need} packed bytes, but only {} are present",
            bytes.len()
        ));
    }
    let bytes = &bytes[..need];
    let mut out = vec![T::default(); count];
    if count > PAR_CHUNK {
        let in_chunk = PAR_CHUNK / 8 * bits as usize;
        out.par_chunks_mut(PAR_CHUNK)
            .zip(bytes.par_chunks(in_chunk))
            .for_each(|(o, i)| unpack_serial(i, bits, o));
    } else {
        unpack_serial(bytes, bits, &mut out);
    }
    Ok(out)
}

/// Unsigned unpacking (`uint1..uint8`, LUT indices, uint4 data).
pub fn unpack_unsigned(bytes: &[u8], bits: u32, count: usize) -> Result<Vec<u8>> {
    unpack::<u8>(bytes, bits, count)
}

/// Signed unpacking with sign extension (int4 data/offsets; `bits = 8` reinterprets bytes).
pub fn unpack_signed(bytes: &[u8], bits: u32, count: usize) -> Result<Vec<i8>> {
    unpack::<i8>(bytes, bits, count)
}

/// Whether every bit after the first `count·bits` bits of `bytes` is zero (Core ML requires zero
/// padding in the last byte; this also checks any extra trailing bytes).
pub fn padding_is_zero(bytes: &[u8], bits: u32, count: usize) -> bool {
    let used_bits = count as u128 * bits as u128;
    let full = (used_bits / 8) as usize;
    let rem = (used_bits % 8) as u32;
    if full >= bytes.len() {
        return true;
    }
    let (first, rest) = (bytes[full], &bytes[full + 1..]);
    (first >> rem) == 0 && rest.iter().all(|&b| b == 0)
}

/// Packs a boolean mask (row-major flattened tensor) into `ceil(N/8)` bytes, bit `i` at byte
/// `i/8`, bit `i%8` from the LSB. This is both the iOS16 `mask: uint8[M]` and the iOS18 `uint1`
/// blob layout (`np.packbits(mask, bitorder="little")`).
pub fn pack_mask(mask: &[bool]) -> Vec<u8> {
    let mut out = vec![0u8; mask.len().div_ceil(8)];
    // Cannot fail: every bool fits in one bit and the buffer has the right length.
    let ok = if mask.len() > PAR_CHUNK {
        mask.par_chunks(PAR_CHUNK)
            .zip(out.par_chunks_mut(PAR_CHUNK / 8))
            .map(|(v, o)| pack_serial(v, 1, o))
            .reduce(|| true, |a, b| a && b)
    } else {
        pack_serial(mask, 1, &mut out)
    };
    debug_assert!(ok);
    out
}

/// Unpacks `count` mask bits (see [`pack_mask`]).
pub fn unpack_mask(bytes: &[u8], count: usize) -> Result<Vec<bool>> {
    unpack::<bool>(bytes, 1, count)
}

/// Number of set bits in `bytes` (all of them, padding included).
pub fn popcount(bytes: &[u8]) -> usize {
    fn serial(bytes: &[u8]) -> usize {
        let mut words = bytes.chunks_exact(8);
        let mut n: usize = (&mut words)
            .map(|w| u64::from_le_bytes(w.try_into().unwrap()).count_ones() as usize)
            .sum();
        n += words
            .remainder()
            .iter()
            .map(|b| b.count_ones() as usize)
            .sum::<usize>();
        n
    }
    if bytes.len() > PAR_CHUNK * 4 {
        bytes.par_chunks(PAR_CHUNK).map(serial).sum()
    } else {
        serial(bytes)
    }
}

/// Number of set bits among the first `count` mask bits (padding bits ignored). This is the
/// `D` of `nonzero_data: T[D]` for a mask of `count` elements.
pub fn mask_popcount(bytes: &[u8], count: usize) -> Result<usize> {
    let need = count.div_ceil(8);
    if bytes.len() < need {
        return Err(format_err!(
            "a mask of {count} elements needs {need} bytes, but only {} are present",
            bytes.len()
        ));
    }
    let full = count / 8;
    let mut n = popcount(&bytes[..full]);
    let rem = count % 8;
    if rem != 0 {
        n += (bytes[full] & ((1u8 << rem) - 1)).count_ones() as usize;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn lengths() {
        assert_eq!(packed_len(0, 4), 0);
        assert_eq!(packed_len(1, 4), 1);
        assert_eq!(packed_len(3, 4), 2);
        assert_eq!(packed_len(3, 3), 2);
        assert_eq!(packed_len(8, 3), 3);
        assert_eq!(packed_len(5, 6), 4);
        assert_eq!(packed_len(17, 1), 3);
        assert_eq!(packed_len(7, 8), 7);
    }

    // Expected bytes produced by coremltools' `pack_elements_into_bits` (numpy packbits, little).
    #[test]
    fn golden_coremltools() {
        // int4 [-6, 3, 7, -8, 0] -> low nibble first.
        assert_eq!(
            pack(&[-6i8, 3, 7, -8, 0], 4).unwrap(),
            vec![0x3A, 0x87, 0x00]
        );
        // uint3 0..8: pack_elements_into_bits(np.arange(8, dtype=np.uint8), 3)
        assert_eq!(
            pack(&[0u8, 1, 2, 3, 4, 5, 6, 7], 3).unwrap(),
            vec![136, 198, 250]
        );
        // uint6 [63, 1, 2, 40, 5]
        assert_eq!(
            pack(&[63u8, 1, 2, 40, 5], 6).unwrap(),
            vec![127, 32, 160, 5]
        );
        // uint2 [3, 0, 1, 2, 3]
        assert_eq!(
            pack(&[3u8, 0, 1, 2, 3], 2).unwrap(),
            vec![0b1001_0011, 0b11]
        );
        // uint1 / masks
        let m = [true, false, true, true, false, false, false, false, true];
        assert_eq!(pack_mask(&m), vec![0b0000_1101, 0b1]);
        assert_eq!(pack(&m, 1).unwrap(), vec![0b0000_1101, 0b1]);
        assert_eq!(unpack_mask(&[0b0000_1101, 0b1], 9).unwrap(), m.to_vec());
        assert_eq!(mask_popcount(&[0b0000_1101, 0xFF], 9).unwrap(), 4);
        assert_eq!(popcount(&[0b0000_1101, 0xFF]), 11);
        // unsigned / signed unpack
        assert_eq!(
            unpack_unsigned(&[136, 198, 250], 3, 8).unwrap(),
            (0..8).collect::<Vec<u8>>()
        );
        assert_eq!(
            unpack_signed(&[0x3A, 0x87, 0x00], 4, 5).unwrap(),
            vec![-6, 3, 7, -8, 0]
        );
        assert_eq!(unpack_unsigned(&[0x3A], 4, 2).unwrap(), vec![10, 3]);
    }

    #[test]
    fn range_errors() {
        let e = pack(&[1u8, 16], 4).unwrap_err().to_string();
        assert!(
            e.contains("value 16") && e.contains("element 1") && e.contains("[0, 15]"),
            "{e}"
        );
        let e = pack(&[-9i8], 4).unwrap_err().to_string();
        assert!(e.contains("[-8, 7]"), "{e}");
        assert!(pack(&[8i8], 4).is_err());
        assert!(pack(&[2u8], 1).is_err());
        assert!(pack(&[64u8], 6).is_err());
        assert!(pack(&[0u8], 0).is_err());
        assert!(pack(&[0u8], 9).is_err());
        assert!(unpack_unsigned(&[0], 4, 3).is_err());
        assert!(mask_popcount(&[0], 9).is_err());
        // An error deep inside a parallel chunk names the first offender.
        let mut big = vec![1u8; 3 * PAR_CHUNK + 5];
        big[2 * PAR_CHUNK + 3] = 200;
        big[3 * PAR_CHUNK + 1] = 99;
        let e = pack(&big, 4).unwrap_err().to_string();
        assert!(e.contains(&format!("element {}", 2 * PAR_CHUNK + 3)), "{e}");
    }

    #[test]
    fn padding() {
        assert!(padding_is_zero(&[0x0F], 4, 1));
        assert!(!padding_is_zero(&[0x1F], 4, 1));
        assert!(!padding_is_zero(&[0x0F, 0x01], 4, 1));
        assert!(padding_is_zero(&[0xFF], 4, 2));
        assert!(!padding_is_zero(&[0xFF, 0x02], 3, 3));
        assert!(padding_is_zero(&[0xFF, 0x01], 3, 3));
    }

    #[test]
    fn large_parallel_matches_serial() {
        for bits in [1u32, 2, 3, 4, 6, 8] {
            let n = 2 * PAR_CHUNK + 13;
            let vals: Vec<u8> = (0..n)
                .map(|i| ((i as u64 * 2654435761) >> 7) as u8 & ((1u16 << bits) - 1) as u8)
                .collect();
            let packed = pack(&vals, bits).unwrap();
            let mut serial = vec![0u8; packed_len(n, bits)];
            assert!(pack_serial(&vals, bits, &mut serial));
            assert_eq!(packed, serial);
            assert_eq!(unpack_unsigned(&packed, bits, n).unwrap(), vals);
            assert!(padding_is_zero(&packed, bits, n));
        }
        let mask: Vec<bool> = (0..3 * PAR_CHUNK + 3).map(|i| i % 7 == 0).collect();
        let p = pack_mask(&mask);
        assert_eq!(
            mask_popcount(&p, mask.len()).unwrap(),
            mask.iter().filter(|&&b| b).count()
        );
        assert_eq!(unpack_mask(&p, mask.len()).unwrap(), mask);
    }

    #[test]
    fn packed_from_fn_equals_packing_every_field() {
        for bits in [1u32, 2, 3, 4, 5, 6, 7, 8] {
            for n in [
                0,
                1,
                7,
                8,
                9,
                PAR_CHUNK - 1,
                PAR_CHUNK,
                PAR_CHUNK + 1,
                3 * PAR_CHUNK + 5,
            ] {
                let value =
                    |i: usize| ((i as u64 * 2654435761) >> 11) as u8 & ((1u16 << bits) - 1) as u8;
                let vals: Vec<u8> = (0..n).map(value).collect();
                let built = Packed::from_fn(n, bits, |first, out: &mut [u8]| {
                    for (j, o) in out.iter_mut().enumerate() {
                        *o = value(first + j);
                    }
                })
                .unwrap();
                let packed = Packed::pack(&vals, bits).unwrap();
                assert_eq!(built, packed, "{bits} bits, {n} fields");
                assert_eq!(built.unpack::<u8>(), vals);
                assert!(padding_is_zero(built.bytes(), bits, n));
                for i in [0, n / 3, n.saturating_sub(1)]
                    .into_iter()
                    .filter(|&i| i < n)
                {
                    assert_eq!(built.field(i), vals[i], "field {i}");
                }
                if n > 16 {
                    assert_eq!(built.unpack_range(8, n - 8), vals[8..].to_vec());
                }
            }
        }
        // A field that does not fit is an error naming it, from any piece.
        let err = Packed::from_fn(PAR_CHUNK + 10, 3, |first, out: &mut [u8]| {
            out.fill(0);
            if first > 0 {
                out[4] = 9;
            }
        })
        .unwrap_err();
        assert!(err.to_string().contains("value 9 (element 65540)"), "{err}");
        assert!(Packed::from_bytes(vec![0; 3], 4, 7).is_err());
        assert_eq!(Packed::from_bytes(vec![0; 4], 4, 7).unwrap().len(), 7);
    }

    proptest! {
        #[test]
        fn roundtrip_unsigned(bits in prop::sample::select(vec![1u32, 2, 3, 4, 5, 6, 7, 8]),
                              raw in prop::collection::vec(any::<u8>(), 0..200)) {
            let vals: Vec<u8> = raw.iter().map(|v| (*v as u32 & ((1 << bits) - 1)) as u8).collect();
            let p = pack(&vals, bits).unwrap();
            prop_assert_eq!(p.len(), (vals.len() * bits as usize).div_ceil(8));
            prop_assert!(padding_is_zero(&p, bits, vals.len()));
            prop_assert_eq!(unpack_unsigned(&p, bits, vals.len()).unwrap(), vals);
        }

        #[test]
        fn roundtrip_signed(bits in 1u32..=8, raw in prop::collection::vec(any::<i8>(), 0..200)) {
            let lo = -(1i32 << (bits - 1));
            let span = 1i32 << bits;
            let vals: Vec<i8> = raw.iter().map(|v| ((*v as i32 - lo).rem_euclid(span) + lo) as i8).collect();
            let p = pack(&vals, bits).unwrap();
            prop_assert!(padding_is_zero(&p, bits, vals.len()));
            prop_assert_eq!(unpack_signed(&p, bits, vals.len()).unwrap(), vals);
        }

        #[test]
        fn pieces_pack_as_one_stream(bits in 1u32..=8, raw in prop::collection::vec(any::<i8>(), 0..200),
                                     cuts in prop::collection::vec(0usize..200, 0..6)) {
            let lo = -(1i32 << (bits - 1));
            let span = 1i32 << bits;
            let vals: Vec<i8> = raw.iter().map(|v| ((*v as i32 - lo).rem_euclid(span) + lo) as i8).collect();
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(vals.len())).collect();
            cuts.push(0);
            cuts.push(vals.len());
            cuts.sort_unstable();
            let mut out = vec![0u8; packed_len(vals.len(), bits)];
            for piece in cuts.windows(2) {
                pack_at(&vals[piece[0]..piece[1]], bits, &mut out, piece[0]).unwrap();
            }
            prop_assert_eq!(out, pack(&vals, bits).unwrap());
        }

        #[test]
        fn mask_matches_bit_stream(mask in prop::collection::vec(any::<bool>(), 0..300)) {
            let p = pack_mask(&mask);
            prop_assert_eq!(&p, &pack(&mask, 1).unwrap());
            for (i, &m) in mask.iter().enumerate() {
                prop_assert_eq!((p[i / 8] >> (i % 8)) & 1 == 1, m);
            }
            prop_assert_eq!(mask_popcount(&p, mask.len()).unwrap(), mask.iter().filter(|&&b| b).count());
            prop_assert_eq!(popcount(&p), mask.iter().filter(|&&b| b).count());
        }
    }
}
