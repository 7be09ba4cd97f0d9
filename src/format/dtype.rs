//! Element types of ML Program tensors, with their two numberings (the protobuf `DataType` and the
//! weight.bin blob code) and their storage widths.

use crate::format::spec::proto::mil_spec::DataType as ProtoType;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    Bool,
    Str,
    F16,
    F32,
    F64,
    BF16,
    F8E4M3,
    F8E5M2,
    I4,
    I8,
    I16,
    I32,
    I64,
    U1,
    U2,
    U3,
    U4,
    U6,
    U8,
    U16,
    U32,
    U64,
}

impl DType {
    pub fn from_proto(code: i32) -> Option<Self> {
        use DType::*;
        Some(match ProtoType::try_from(code).ok()? {
            ProtoType::UnusedType => return None,
            ProtoType::Bool => Bool,
            ProtoType::String => Str,
            ProtoType::Float16 => F16,
            ProtoType::Float32 => F32,
            ProtoType::Float64 => F64,
            ProtoType::Bfloat16 => BF16,
            ProtoType::Float8e4m3fn => F8E4M3,
            ProtoType::Float8e5m2 => F8E5M2,
            ProtoType::Int4 => I4,
            ProtoType::Int8 => I8,
            ProtoType::Int16 => I16,
            ProtoType::Int32 => I32,
            ProtoType::Int64 => I64,
            ProtoType::Uint1 => U1,
            ProtoType::Uint2 => U2,
            ProtoType::Uint3 => U3,
            ProtoType::Uint4 => U4,
            ProtoType::Uint6 => U6,
            ProtoType::Uint8 => U8,
            ProtoType::Uint16 => U16,
            ProtoType::Uint32 => U32,
            ProtoType::Uint64 => U64,
        })
    }

    pub fn to_proto(self) -> i32 {
        use DType::*;
        (match self {
            Bool => ProtoType::Bool,
            Str => ProtoType::String,
            F16 => ProtoType::Float16,
            F32 => ProtoType::Float32,
            F64 => ProtoType::Float64,
            BF16 => ProtoType::Bfloat16,
            F8E4M3 => ProtoType::Float8e4m3fn,
            F8E5M2 => ProtoType::Float8e5m2,
            I4 => ProtoType::Int4,
            I8 => ProtoType::Int8,
            I16 => ProtoType::Int16,
            I32 => ProtoType::Int32,
            I64 => ProtoType::Int64,
            U1 => ProtoType::Uint1,
            U2 => ProtoType::Uint2,
            U3 => ProtoType::Uint3,
            U4 => ProtoType::Uint4,
            U6 => ProtoType::Uint6,
            U8 => ProtoType::Uint8,
            U16 => ProtoType::Uint16,
            U32 => ProtoType::Uint32,
            U64 => ProtoType::Uint64,
        }) as i32
    }

    /// The MILBlob v2 `BlobDataType` code (append-only enum; note UInt4=11 precedes UInt3=12).
    pub fn blob_code(self) -> Option<u32> {
        use DType::*;
        Some(match self {
            F16 => 1,
            F32 => 2,
            U8 => 3,
            I8 => 4,
            BF16 => 5,
            I16 => 6,
            U16 => 7,
            I4 => 8,
            U1 => 9,
            U2 => 10,
            U4 => 11,
            U3 => 12,
            U6 => 13,
            I32 => 14,
            U32 => 15,
            F8E4M3 => 16,
            F8E5M2 => 17,
            _ => return None,
        })
    }

    pub fn from_blob_code(code: u32) -> Option<Self> {
        use DType::*;
        Some(match code {
            1 => F16,
            2 => F32,
            3 => U8,
            4 => I8,
            5 => BF16,
            6 => I16,
            7 => U16,
            8 => I4,
            9 => U1,
            10 => U2,
            11 => U4,
            12 => U3,
            13 => U6,
            14 => I32,
            15 => U32,
            16 => F8E4M3,
            17 => F8E5M2,
            _ => return None,
        })
    }

    /// Storage width in bits (strings have none).
    pub fn bits(self) -> Option<u32> {
        use DType::*;
        Some(match self {
            Str => return None,
            U1 => 1,
            U2 => 2,
            U3 => 3,
            I4 | U4 => 4,
            U6 => 6,
            Bool | I8 | U8 | F8E4M3 | F8E5M2 => 8,
            F16 | BF16 | I16 | U16 => 16,
            F32 | I32 | U32 => 32,
            F64 | I64 | U64 => 64,
        })
    }

    pub fn is_sub_byte(self) -> bool {
        matches!(self.bits(), Some(b) if b < 8)
    }

    pub fn is_float(self) -> bool {
        use DType::*;
        matches!(self, F16 | F32 | F64 | BF16 | F8E4M3 | F8E5M2)
    }

    /// Bytes needed to store `count` elements packed (sub-byte types LSB-first).
    pub fn storage_bytes(self, count: usize) -> Option<usize> {
        let bits = self.bits()? as usize;
        Some((count.checked_mul(bits)?).div_ceil(8))
    }

    /// coremltools' short name (`fp16`, `int4`, `uint1`, …), used in messages and inspection.
    pub fn name(self) -> &'static str {
        use DType::*;
        match self {
            Bool => "bool",
            Str => "string",
            F16 => "fp16",
            F32 => "fp32",
            F64 => "fp64",
            BF16 => "bf16",
            F8E4M3 => "fp8e4m3fn",
            F8E5M2 => "fp8e5m2",
            I4 => "int4",
            I8 => "int8",
            I16 => "int16",
            I32 => "int32",
            I64 => "int64",
            U1 => "uint1",
            U2 => "uint2",
            U3 => "uint3",
            U4 => "uint4",
            U6 => "uint6",
            U8 => "uint8",
            U16 => "uint16",
            U32 => "uint32",
            U64 => "uint64",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_codes_round_trip() {
        for code in 1..=17 {
            let dt = DType::from_blob_code(code).unwrap();
            assert_eq!(dt.blob_code(), Some(code));
            assert_eq!(DType::from_proto(dt.to_proto()), Some(dt));
        }
        assert_eq!(DType::from_blob_code(0), None);
        assert_eq!(DType::from_blob_code(18), None);
    }

    #[test]
    fn storage_bytes_rounds_up() {
        assert_eq!(DType::I4.storage_bytes(4083), Some(2042));
        assert_eq!(DType::U3.storage_bytes(3), Some(2));
        assert_eq!(DType::F16.storage_bytes(5), Some(10));
        assert_eq!(DType::I4.storage_bytes(usize::MAX), None);
    }
}
