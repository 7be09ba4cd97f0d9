//! A weight's values as the passes read them from a package (borrowed from the memory map
//! where they can be), and the error energy of a reconstruction of them.

use std::borrow::Cow;

use half::f16;
use rayon::prelude::*;

use crate::compress::select::Candidate;
use crate::compress::skip::{Outcome, SkipReason};
use crate::error::Result;
use crate::format::dtype::DType;
use crate::format::package::Package;
use crate::format::spec::proto::mil_spec::value;
use crate::kernels::fp16::WeightElement;
use crate::mil::tensor::read_tensor;

/// A weight's values in its own float type, for kernels generic over fp16/fp32: borrowed from
/// the input's memory map where the bytes are aligned for the type (weight.bin data is), so a
/// pass reads each weight without copying it first.
pub enum Weights<'a> {
    F16(Cow<'a, [f16]>),
    F32(Cow<'a, [f32]>),
}

/// Reads a candidate's values; integer and bool weights are skipped (these passes compress
/// float weights).
pub fn read_weights<'a>(package: &'a Package, c: &'a Candidate) -> Result<Outcome<Weights<'a>>> {
    let what = format!("function {}, const {}", c.function, c.name);
    if let Some(value::Value::BlobFileValue(b)) = &c.value.value {
        if let Ok((file, blob)) = package.blob_in_file(b) {
            file.prefault(blob.data);
        }
    }
    let t = read_tensor(&c.value, package, &what)?;
    Ok(match t.info.dtype {
        DType::F16 => Ok(Weights::F16(cast_values(t.bytes))),
        DType::F32 => Ok(Weights::F32(cast_values(t.bytes))),
        other => Err(SkipReason::Unsupported(format!(
            "its dtype {} is not a float type",
            other.name()
        ))),
    })
}

/// Little-endian bytes as values of `T`: borrowed when aligned, copied otherwise.
fn cast_values<T: bytemuck::Pod>(bytes: Cow<'_, [u8]>) -> Cow<'_, [T]> {
    match bytes {
        Cow::Borrowed(b) => match bytemuck::try_cast_slice(b) {
            Ok(values) => Cow::Borrowed(values),
            Err(_) => Cow::Owned(bytemuck::pod_collect_to_vec(b)),
        },
        Cow::Owned(b) => Cow::Owned(bytemuck::pod_collect_to_vec(&b)),
    }
}

/// Signal and noise energy of a reconstruction `approx` of `w`: (Σw², Σ(w−ŵ)²) in f64. Summed
/// in parallel over fixed-size pieces, added in order, so the result does not depend on the
/// thread count.
pub fn error_energy<T: WeightElement>(w: &[T], approx: &[T]) -> (f64, f64) {
    const PIECE: usize = 1 << 14;
    let pieces: Vec<(f64, f64)> = w
        .par_chunks(PIECE)
        .zip(approx.par_chunks(PIECE))
        .map(|(w, approx)| {
            // Eight running sums per piece, so the additions do not wait on each other.
            let (mut signal, mut noise) = ([0.0f64; 8], [0.0f64; 8]);
            for (w, approx) in w.chunks(8).zip(approx.chunks(8)) {
                for (lane, (&a, &b)) in w.iter().zip(approx).enumerate() {
                    let (a, b) = (a.to_f64(), b.to_f64());
                    signal[lane] += a * a;
                    noise[lane] += (a - b) * (a - b);
                }
            }
            (signal.iter().sum(), noise.iter().sum())
        })
        .collect();
    pieces
        .into_iter()
        .fold((0.0, 0.0), |(s, n), (ps, pn)| (s + ps, n + pn))
}
