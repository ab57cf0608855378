//! The subset of ONNX's protobuf messages (`onnx/onnx.proto`) that a convolutional backbone needs,
//! declared by hand with prost's derive: field numbers and types as in onnx.proto (proto2; repeated
//! scalars packed only where onnx.proto says `[packed = true]`). Fields we never use (sub-graphs,
//! sparse tensors, training information, functions) are left out; prost skips them when reading.
//! Written by hand rather than generated so that the build needs neither protoc nor a build script.

use crate::tensor::{CpuStorage, DType, Tensor};
use crate::{Error, Result};
use prost::Message;

#[derive(Clone, PartialEq, Message)]
pub struct ModelProto {
    #[prost(int64, tag = "1")]
    pub ir_version: i64,
    #[prost(message, repeated, tag = "8")]
    pub opset_import: Vec<OperatorSetIdProto>,
    #[prost(string, tag = "2")]
    pub producer_name: String,
    #[prost(string, tag = "3")]
    pub producer_version: String,
    #[prost(string, tag = "4")]
    pub domain: String,
    #[prost(int64, tag = "5")]
    pub model_version: i64,
    #[prost(string, tag = "6")]
    pub doc_string: String,
    #[prost(message, optional, tag = "7")]
    pub graph: Option<GraphProto>,
    #[prost(message, repeated, tag = "14")]
    pub metadata_props: Vec<StringStringEntryProto>,
}

#[derive(Clone, PartialEq, Message)]
pub struct OperatorSetIdProto {
    #[prost(string, tag = "1")]
    pub domain: String,
    #[prost(int64, tag = "2")]
    pub version: i64,
}

#[derive(Clone, PartialEq, Message)]
pub struct StringStringEntryProto {
    #[prost(string, tag = "1")]
    pub key: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

#[derive(Clone, PartialEq, Message)]
pub struct GraphProto {
    #[prost(message, repeated, tag = "1")]
    pub node: Vec<NodeProto>,
    #[prost(string, tag = "2")]
    pub name: String,
    #[prost(message, repeated, tag = "5")]
    pub initializer: Vec<TensorProto>,
    #[prost(string, tag = "10")]
    pub doc_string: String,
    #[prost(message, repeated, tag = "11")]
    pub input: Vec<ValueInfoProto>,
    #[prost(message, repeated, tag = "12")]
    pub output: Vec<ValueInfoProto>,
    #[prost(message, repeated, tag = "13")]
    pub value_info: Vec<ValueInfoProto>,
}

#[derive(Clone, PartialEq, Message)]
pub struct NodeProto {
    #[prost(string, repeated, tag = "1")]
    pub input: Vec<String>,
    #[prost(string, repeated, tag = "2")]
    pub output: Vec<String>,
    #[prost(string, tag = "3")]
    pub name: String,
    #[prost(string, tag = "4")]
    pub op_type: String,
    #[prost(string, tag = "7")]
    pub domain: String,
    #[prost(message, repeated, tag = "5")]
    pub attribute: Vec<AttributeProto>,
    #[prost(string, tag = "6")]
    pub doc_string: String,
}

/// `AttributeProto.AttributeType` values we write.
pub mod attr_type {
    pub const FLOAT: i32 = 1;
    pub const INT: i32 = 2;
    pub const TENSOR: i32 = 4;
    pub const INTS: i32 = 7;
}

#[derive(Clone, PartialEq, Message)]
pub struct AttributeProto {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(int32, tag = "20")]
    pub r#type: i32,
    #[prost(float, tag = "2")]
    pub f: f32,
    #[prost(int64, tag = "3")]
    pub i: i64,
    #[prost(bytes = "vec", tag = "4")]
    pub s: Vec<u8>,
    #[prost(message, optional, tag = "5")]
    pub t: Option<TensorProto>,
    #[prost(float, repeated, packed = "false", tag = "7")]
    pub floats: Vec<f32>,
    #[prost(int64, repeated, packed = "false", tag = "8")]
    pub ints: Vec<i64>,
}

/// `TensorProto.DataType` values.
pub mod data_type {
    pub const FLOAT: i32 = 1;
    pub const INT32: i32 = 6;
    pub const INT64: i32 = 7;
    pub const FLOAT16: i32 = 10;
    pub const DOUBLE: i32 = 11;
    pub const BFLOAT16: i32 = 16;
}

#[derive(Clone, PartialEq, Message)]
pub struct TensorProto {
    #[prost(int64, repeated, packed = "false", tag = "1")]
    pub dims: Vec<i64>,
    #[prost(int32, tag = "2")]
    pub data_type: i32,
    #[prost(float, repeated, tag = "4")]
    pub float_data: Vec<f32>,
    #[prost(int32, repeated, tag = "5")]
    pub int32_data: Vec<i32>,
    #[prost(int64, repeated, tag = "7")]
    pub int64_data: Vec<i64>,
    #[prost(string, tag = "8")]
    pub name: String,
    #[prost(bytes = "vec", tag = "9")]
    pub raw_data: Vec<u8>,
    #[prost(double, repeated, tag = "10")]
    pub double_data: Vec<f64>,
    #[prost(message, repeated, tag = "13")]
    pub external_data: Vec<StringStringEntryProto>,
    #[prost(int32, tag = "14")]
    pub data_location: i32,
}

#[derive(Clone, PartialEq, Message)]
pub struct ValueInfoProto {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(message, optional, tag = "2")]
    pub r#type: Option<TypeProto>,
    #[prost(string, tag = "3")]
    pub doc_string: String,
}

/// `TypeProto` with only the `tensor_type` member of its `value` oneof (on the wire a oneof member is
/// an ordinary optional field; the sequence and map members are skipped when read).
#[derive(Clone, PartialEq, Message)]
pub struct TypeProto {
    #[prost(message, optional, tag = "1")]
    pub tensor_type: Option<TypeProtoTensor>,
}

#[derive(Clone, PartialEq, Message)]
pub struct TypeProtoTensor {
    #[prost(int32, tag = "1")]
    pub elem_type: i32,
    #[prost(message, optional, tag = "2")]
    pub shape: Option<TensorShapeProto>,
}

#[derive(Clone, PartialEq, Message)]
pub struct TensorShapeProto {
    #[prost(message, repeated, tag = "1")]
    pub dim: Vec<Dimension>,
}

/// `TensorShapeProto.Dimension`: `dim_value` or `dim_param` (a oneof: at most one is set).
#[derive(Clone, PartialEq, Message)]
pub struct Dimension {
    #[prost(int64, optional, tag = "1")]
    pub dim_value: Option<i64>,
    #[prost(string, optional, tag = "2")]
    pub dim_param: Option<String>,
}

/// Reads an ONNX file.
pub fn read(path: &std::path::Path) -> Result<ModelProto> {
    let origin = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|e| Error::Io(format!("{origin}: cannot read: {e}")))?;
    ModelProto::decode(bytes.as_slice())
        .map_err(|e| Error::Io(format!("{origin}: not a readable ONNX model (protobuf: {e})")))
}

/// Writes an ONNX file atomically.
pub fn write(path: &std::path::Path, model: &ModelProto) -> Result<()> {
    super::atomic::write_atomic(path, &model.encode_to_vec())
}

/// A host tensor as an initializer named `name` (raw little-endian data).
pub fn tensor_proto(name: &str, t: &Tensor) -> Result<TensorProto> {
    let host = t.to_device(&crate::Device::Cpu)?;
    let data_type = match t.dtype() {
        DType::F32 => data_type::FLOAT,
        DType::F64 => data_type::DOUBLE,
        DType::F16 => data_type::FLOAT16,
        DType::BF16 => data_type::BFLOAT16,
        DType::I64 => data_type::INT64,
    };
    Ok(TensorProto {
        dims: t.dims().iter().map(|&d| d as i64).collect(),
        data_type,
        name: name.to_string(),
        raw_data: host.cpu_storage()?.to_le_bytes(),
        ..Default::default()
    })
}

/// An initializer or constant as a host tensor; `what` names it in errors.
pub fn to_tensor(p: &TensorProto, what: &str) -> Result<Tensor> {
    if p.data_location == 1 || !p.external_data.is_empty() {
        return Err(Error::Io(format!(
            "{what}: its data is stored outside the .onnx file (external data is not read; save the model \
             with its weights inside)"
        )));
    }
    let dims: Vec<usize> = p
        .dims
        .iter()
        .map(|&d| usize::try_from(d))
        .collect::<std::result::Result<_, _>>()
        .map_err(|_| Error::Io(format!("{what}: negative dimension in {:?}", p.dims)))?;
    let n = dims
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| Error::Io(format!("{what}: shape {dims:?} is too large")))?;
    let (dtype, storage) = match p.data_type {
        data_type::FLOAT if !p.raw_data.is_empty() || p.float_data.is_empty() => (DType::F32, None),
        data_type::FLOAT => (DType::F32, Some(CpuStorage::F32(p.float_data.clone()))),
        data_type::DOUBLE if !p.raw_data.is_empty() || p.double_data.is_empty() => (DType::F64, None),
        data_type::DOUBLE => (DType::F64, Some(CpuStorage::F64(p.double_data.clone()))),
        data_type::FLOAT16 if !p.raw_data.is_empty() => (DType::F16, None),
        data_type::FLOAT16 => {
            let v = p.int32_data.iter().map(|&b| half::f16::from_bits(b as u16)).collect();
            (DType::F16, Some(CpuStorage::F16(v)))
        }
        data_type::BFLOAT16 if !p.raw_data.is_empty() => (DType::BF16, None),
        data_type::INT64 if !p.raw_data.is_empty() || p.int64_data.is_empty() => (DType::I64, None),
        data_type::INT64 => (DType::I64, Some(CpuStorage::I64(p.int64_data.clone()))),
        data_type::INT32 => {
            let v: Vec<i64> = if p.raw_data.is_empty() {
                p.int32_data.iter().map(|&x| x as i64).collect()
            } else {
                p.raw_data
                    .chunks_exact(4)
                    .map(|c| i32::from_le_bytes(c.try_into().expect("4")) as i64)
                    .collect()
            };
            (DType::I64, Some(CpuStorage::I64(v)))
        }
        other => {
            return Err(Error::Io(format!(
                "{what}: element type {other} is not read (float, double, half, int)"
            )))
        }
    };
    let storage = match storage {
        Some(s) => s,
        None => CpuStorage::from_le_bytes(dtype, &p.raw_data).ok_or_else(|| {
            Error::Io(format!("{what}: {} data bytes do not fill whole {dtype} elements", p.raw_data.len()))
        })?,
    };
    if storage.len() != n {
        return Err(Error::Io(format!("{what}: {} values for shape {dims:?}", storage.len())));
    }
    Tensor::from_cpu(dims, storage)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tensors_round_trip_through_raw_and_typed_fields() {
        let t = Tensor::from_vec(vec![1.5f32, -2.0, 3.25, 0.0, 7.0, 8.0], [2, 3]).unwrap();
        let p = tensor_proto("w", &t).unwrap();
        let bytes = ModelProto {
            graph: Some(GraphProto { initializer: vec![p], ..Default::default() }),
            ..Default::default()
        }
        .encode_to_vec();
        let back = ModelProto::decode(bytes.as_slice()).unwrap();
        let p = &back.graph.unwrap().initializer[0];
        assert_eq!(p.name, "w");
        assert_eq!(to_tensor(p, "w").unwrap().to_f64_vec().unwrap(), t.to_f64_vec().unwrap());
        let typed = TensorProto {
            dims: vec![2],
            data_type: data_type::FLOAT,
            float_data: vec![1.0, 2.0],
            ..Default::default()
        };
        assert_eq!(to_tensor(&typed, "t").unwrap().to_f64_vec().unwrap(), vec![1.0, 2.0]);
        let short = TensorProto { dims: vec![3], ..typed.clone() };
        assert!(to_tensor(&short, "m.onnx: initializer 't'")
            .unwrap_err()
            .to_string()
            .contains("2 values for shape [3]"));
        let ext = TensorProto { data_location: 1, ..typed };
        assert!(to_tensor(&ext, "t").unwrap_err().to_string().contains("outside the .onnx file"));
    }
}
