//! Pure numeric kernels over slices: no files, no protobuf, no Python.

pub mod fp16;
pub mod gptq;
pub mod hessian;
pub mod kmeans1d;
pub mod kmeans_vector;
pub mod lut;
pub mod pack;
pub mod prune;
pub mod quantize;
pub mod skm;
pub mod sparsegpt;

use crate::error::Result;

/// The element count of a tensor of `shape`, refusing shapes whose product, or the product of
/// any of their nonzero dimensions, does not fit in memory's address range (so that every
/// partial product a kernel takes of the shape fits too, even when another dimension is 0).
pub fn numel(shape: &[usize]) -> Result<usize> {
    let fits = shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d.max(1)))
        .is_some_and(|n| n <= isize::MAX as usize);
    if fits {
        Ok(shape.iter().product())
    } else {
        Err(crate::format_err!("tensor shape {shape:?} is too large"))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn numel_refuses_overflowing_shapes() {
        assert_eq!(super::numel(&[2, 3, 4]).unwrap(), 24);
        assert_eq!(super::numel(&[]).unwrap(), 1);
        assert_eq!(super::numel(&[0, 5]).unwrap(), 0);
        for shape in [
            vec![2, (1usize << 63) + 32768],
            vec![(1usize << 63) + 32768, 2],
            vec![0, usize::MAX, 2],
            vec![1 << 32, 1 << 31],
        ] {
            let err = super::numel(&shape).unwrap_err().to_string();
            assert!(err.contains("is too large"), "{shape:?}: {err}");
        }
    }
}
