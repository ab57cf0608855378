//! PyTorch's `torch.save` files read without Python: the zip format (PyTorch 1.6 and later: an archive
//! holding `<name>/data.pkl`, one entry `<name>/data/<key>` per storage, `<name>/byteorder`) and the
//! legacy format (five pickles back to back: magic number, protocol version 1001, system information,
//! the object, the list of storage keys; then each storage as an 8-byte element count and its bytes).
//! PyTorch Lightning's `.ckpt` files are the same container holding a dict with a `state_dict` entry.
//!
//! The pickle is read with `datasets::pickle` (data only, nothing called); of its objects only tensors
//! (`torch._utils._rebuild_tensor_v2`, `_rebuild_parameter`) are interpreted, from their storage,
//! offset, size and stride. Everything else in the file (optimizer state, hyper-parameters, Lightning's
//! loop state) is left unread.

use crate::tensor::{CpuStorage, Tensor};
use crate::{Error, Result};
use datasets::pickle::{self, Dialect, Id, Obj, Pickle};
use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

/// The tensors of a state dict, in file order.
pub struct StateDict {
    pub tensors: Vec<(String, Tensor)>,
    /// Where the state dict sat in the file: "" for the top object, else the key (e.g. `state_dict`).
    pub found_at: String,
}

/// The legacy format's first pickle: `torch.serialization.MAGIC_NUMBER`.
const LEGACY_MAGIC: &[u8] = &[0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19];

/// Keys under which checkpoints of the projects we read keep the model's weights, tried in order when
/// the top object is not itself a name -> tensor mapping (Lightning and MagFace: `state_dict`).
const STATE_DICT_KEYS: &[&str] = &["state_dict", "model", "model_state_dict", "backbone"];

/// Reads the state dict of a `.pth`/`.pt`/`.ckpt` file.
pub fn read_state_dict(path: &Path) -> Result<StateDict> {
    let origin = path.display().to_string();
    let data = std::fs::read(path).map_err(|e| Error::Io(format!("{origin}: cannot read: {e}")))?;
    parse_state_dict(&data, &origin)
}

/// Parses file contents already in memory; `origin` names the file in errors.
pub fn parse_state_dict(data: &[u8], origin: &str) -> Result<StateDict> {
    if data.starts_with(b"PK\x03\x04") {
        let mut zip = ZipFile::open(data, origin)?;
        let pkl = zip.entry("data.pkl", "the pickled object")?;
        let pk = pickle::parse(&pkl, 0, Dialect::Torch).map_err(pickle_error(origin, "data.pkl"))?;
        return collect(&pk, origin, &mut |key| zip.entry(&format!("data/{key}"), "a storage"));
    }
    if data.starts_with(&[0x80, 0x02, 0x8a, 0x0a]) && data.get(4..14) == Some(LEGACY_MAGIC) {
        return legacy(data, origin);
    }
    Err(Error::Io(format!(
        "{origin}: not a PyTorch file: neither a zip archive (torch.save since 1.6) nor a legacy pickle \
         (first bytes {:02x?})",
        &data[..data.len().min(8)]
    )))
}

fn pickle_error<'a>(origin: &'a str, what: &'a str) -> impl Fn((usize, String)) -> Error + 'a {
    move |(at, m)| Error::Io(format!("{origin}: {what}, pickle byte {at}: {m}"))
}

/// The archive of a zip-format file; entry names are relative to its one top folder.
struct ZipFile<'a> {
    archive: zip::ZipArchive<std::io::Cursor<&'a [u8]>>,
    prefix: String,
    origin: &'a str,
}

impl<'a> ZipFile<'a> {
    fn open(data: &'a [u8], origin: &'a str) -> Result<ZipFile<'a>> {
        let archive = zip::ZipArchive::new(std::io::Cursor::new(data)).map_err(|e| {
            Error::Io(format!("{origin}: not a readable zip archive (truncated or damaged?): {e}"))
        })?;
        let pkl = archive
            .file_names()
            .filter_map(|n| n.ok().map(|n| n.into_owned()))
            .find(|n| n == "data.pkl" || n.ends_with("/data.pkl"))
            .ok_or_else(|| {
                Error::Io(format!("{origin}: zip archive without data.pkl: not a torch.save file"))
            })?;
        let prefix = pkl.trim_end_matches("data.pkl").to_string();
        let mut z = ZipFile { archive, prefix, origin };
        if let Ok(order) = z.entry("byteorder", "the byte order") {
            if order != b"little" {
                return Err(Error::Io(format!(
                    "{origin}: written with byte order '{}'; only little-endian files are read",
                    String::from_utf8_lossy(&order)
                )));
            }
        }
        Ok(z)
    }

    fn entry(&mut self, name: &str, what: &str) -> Result<Vec<u8>> {
        let full = format!("{}{name}", self.prefix);
        let origin = self.origin;
        let mut f = self
            .archive
            .by_name(&full)
            .map_err(|e| Error::Io(format!("{origin}: {what} '{full}' cannot be opened: {e}")))?;
        let mut out = Vec::with_capacity(f.size() as usize);
        f.read_to_end(&mut out).map_err(|e| Error::Io(format!("{origin}: {what} '{full}': {e}")))?;
        Ok(out)
    }
}

/// The legacy format: the object's pickle, then the storages in the order its last pickle lists them.
fn legacy(data: &[u8], origin: &str) -> Result<StateDict> {
    let mut at = 0;
    let mut next = |what: &str| -> Result<Pickle<'_>> {
        let pk = pickle::parse(data, at, Dialect::Torch).map_err(pickle_error(origin, what))?;
        at = pk.end;
        Ok(pk)
    };
    next("the magic number")?;
    let version = next("the protocol version")?;
    if version.int(version.root) != Some(1001) {
        return Err(Error::Io(format!(
            "{origin}: legacy format protocol {:?}, only 1001 is read",
            version.int(version.root)
        )));
    }
    let info = next("the system information")?;
    if info.dict_get(info.root, "little_endian").and_then(|v| info.int(v)) == Some(0) {
        return Err(Error::Io(format!("{origin}: written on a big-endian machine; not read")));
    }
    let object = next("the object")?;
    let keys_pk = next("the storage keys")?;
    let Obj::List(keys) = keys_pk.get(keys_pk.root) else {
        return Err(Error::Io(format!("{origin}: the storage key list is {}", keys_pk.kind(keys_pk.root))));
    };
    // Element sizes of every storage the object refers to, by key.
    let mut sizes = HashMap::new();
    for o in &object.objects {
        if let Obj::Persistent(pid) = o {
            if let Ok(s) = StorageRef::from_pid(&object, *pid, origin) {
                sizes.insert(s.key, s.dtype.size());
            }
        }
    }
    let mut blobs: HashMap<String, (usize, usize)> = HashMap::new();
    let mut pos = keys_pk.end;
    for &k in keys {
        let key = keys_pk.text(k).ok_or_else(|| Error::Io(format!("{origin}: a storage key is not text")))?;
        let trunc = || Error::Io(format!("{origin}: storage '{key}' at byte {pos}: the file ends inside it"));
        let count = data.get(pos..pos + 8).ok_or_else(trunc)?;
        let count = u64::from_le_bytes(count.try_into().expect("8 bytes")) as usize;
        let size = *sizes.get(key).unwrap_or(&1);
        let bytes = count.checked_mul(size).ok_or_else(trunc)?;
        if data.len() - (pos + 8) < bytes {
            return Err(trunc());
        }
        blobs.insert(key.to_string(), (pos + 8, bytes));
        pos += 8 + bytes;
    }
    collect(&object, origin, &mut |key| {
        let (s, n) = blobs.get(key).ok_or_else(|| {
            Error::Io(format!("{origin}: storage '{key}' is not among the file's storages"))
        })?;
        Ok(data[*s..*s + n].to_vec())
    })
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum StorageType {
    F32,
    F64,
    F16,
    BF16,
    I64,
    I32,
    I16,
    I8,
    U8,
    Bool,
}

impl StorageType {
    fn from_name(name: &str) -> Option<StorageType> {
        use StorageType::*;
        Some(match name {
            "FloatStorage" => F32,
            "DoubleStorage" => F64,
            "HalfStorage" => F16,
            "BFloat16Storage" => BF16,
            "LongStorage" => I64,
            "IntStorage" => I32,
            "ShortStorage" => I16,
            "CharStorage" => I8,
            "ByteStorage" => U8,
            "BoolStorage" => Bool,
            _ => return None,
        })
    }

    fn size(self) -> usize {
        use StorageType::*;
        match self {
            F64 | I64 => 8,
            F32 | I32 => 4,
            F16 | BF16 | I16 => 2,
            I8 | U8 | Bool => 1,
        }
    }

    /// The elements `idx` of little-endian `bytes` as our storage (integers widen to i64).
    fn gather(self, bytes: &[u8], idx: &[usize]) -> CpuStorage {
        use StorageType::*;
        fn pick<const N: usize, T>(b: &[u8], idx: &[usize], f: impl Fn([u8; N]) -> T) -> Vec<T> {
            idx.iter().map(|&i| f(b[i * N..i * N + N].try_into().expect("N bytes"))).collect()
        }
        match self {
            F32 => CpuStorage::F32(pick(bytes, idx, f32::from_le_bytes)),
            F64 => CpuStorage::F64(pick(bytes, idx, f64::from_le_bytes)),
            F16 => CpuStorage::F16(pick(bytes, idx, half::f16::from_le_bytes)),
            BF16 => CpuStorage::BF16(pick(bytes, idx, half::bf16::from_le_bytes)),
            I64 => CpuStorage::I64(pick(bytes, idx, i64::from_le_bytes)),
            I32 => CpuStorage::I64(pick(bytes, idx, |b| i32::from_le_bytes(b) as i64)),
            I16 => CpuStorage::I64(pick(bytes, idx, |b| i16::from_le_bytes(b) as i64)),
            I8 => CpuStorage::I64(pick(bytes, idx, |b: [u8; 1]| b[0] as i8 as i64)),
            U8 | Bool => CpuStorage::I64(pick(bytes, idx, |b: [u8; 1]| b[0] as i64)),
        }
    }
}

/// A persistent id `('storage', storage_type, key, location, numel[, view_metadata])`.
struct StorageRef {
    key: String,
    dtype: StorageType,
    numel: usize,
}

impl StorageRef {
    fn from_pid(pk: &Pickle, pid: Id, origin: &str) -> Result<StorageRef> {
        let bad = |m: &str| Error::Io(format!("{origin}: a storage reference {m}"));
        let t = pk.tuple(pid).ok_or_else(|| bad("is not a tuple"))?;
        if t.len() < 5 || pk.text(t[0]) != Some("storage") {
            return Err(bad("is not ('storage', type, key, location, size)"));
        }
        let Obj::Global(module, name) = pk.get(t[1]) else { return Err(bad("has no storage type")) };
        let dtype = (module == "torch").then(|| StorageType::from_name(name)).flatten().ok_or_else(|| {
            Error::Io(format!("{origin}: storage type {module}.{name} is not one of torch's typed storages"))
        })?;
        let key = pk.text(t[2]).ok_or_else(|| bad("has a key that is not text"))?.to_string();
        let numel = pk.int(t[4]).and_then(|n| usize::try_from(n).ok()).ok_or_else(|| bad("has no size"))?;
        if t.len() > 5 && !matches!(pk.get(t[5]), Obj::None) {
            return Err(bad(&format!("'{key}' is a view of another storage (legacy views are not read)")));
        }
        Ok(StorageRef { key, dtype, numel })
    }
}

/// Finds the state dict in the object and builds its tensors, fetching each storage once.
fn collect(pk: &Pickle, origin: &str, storage: &mut dyn FnMut(&str) -> Result<Vec<u8>>) -> Result<StateDict> {
    let (dict, found_at) = find_state_dict(pk, origin)?;
    let mut cache: HashMap<String, Vec<u8>> = HashMap::new();
    let mut tensors = Vec::new();
    for &(k, v) in pk.dict_items(dict).expect("checked by find_state_dict") {
        let Some(name) = pk.text(k) else { continue };
        let Some(view) = tensor_view(pk, v) else { continue };
        let what = format!("{origin}: tensor '{name}'");
        let view = view.map_err(|m| Error::Io(format!("{what}: {m}")))?;
        let s = StorageRef::from_pid(pk, view.pid, origin).map_err(|e| Error::Io(format!("{what}: {e}")))?;
        if !cache.contains_key(&s.key) {
            let bytes = storage(&s.key).map_err(|e| Error::Io(format!("{what}: {e}")))?;
            if bytes.len() != s.numel * s.dtype.size() {
                return Err(Error::Io(format!(
                    "{what}: storage '{}' holds {} bytes, its reference says {} elements of {} bytes",
                    s.key,
                    bytes.len(),
                    s.numel,
                    s.dtype.size()
                )));
            }
            cache.insert(s.key.clone(), bytes);
        }
        let idx = view.indices(s.numel).map_err(|m| Error::Io(format!("{what}: {m}")))?;
        let t = Tensor::from_cpu(view.size.clone(), s.dtype.gather(&cache[&s.key], &idx))?;
        tensors.push((name.to_string(), t));
    }
    Ok(StateDict { tensors, found_at })
}

/// The top object when it maps names to tensors, else the first of `STATE_DICT_KEYS` that does.
fn find_state_dict(pk: &Pickle, origin: &str) -> Result<(Id, String)> {
    let is_state_dict = |id: Id| {
        pk.dict_items(id)
            .is_some_and(|kv| kv.iter().any(|&(k, v)| pk.text(k).is_some() && tensor_view(pk, v).is_some()))
    };
    if is_state_dict(pk.root) {
        return Ok((pk.root, String::new()));
    }
    for key in STATE_DICT_KEYS {
        if let Some(v) = pk.dict_get(pk.root, key).filter(|&v| is_state_dict(v)) {
            return Ok((v, key.to_string()));
        }
    }
    let keys: Vec<&str> =
        pk.dict_items(pk.root).unwrap_or(&[]).iter().filter_map(|&(k, _)| pk.text(k)).take(12).collect();
    Err(Error::Io(format!(
        "{origin}: holds no state dict: the top object is {}{} and none of {STATE_DICT_KEYS:?} maps names to tensors",
        pk.kind(pk.root),
        if keys.is_empty() { String::new() } else { format!(" with keys {keys:?}") }
    )))
}

/// A tensor as pickled: its storage's persistent id and the view into it (in elements).
struct View {
    pid: Id,
    offset: usize,
    size: Vec<usize>,
    stride: Vec<usize>,
}

impl View {
    /// Storage element of each tensor element in row-major order; checks the view fits the storage.
    fn indices(&self, numel: usize) -> std::result::Result<Vec<usize>, String> {
        let n = self.size.iter().try_fold(1usize, |a, &s| a.checked_mul(s));
        let n = n.filter(|&n| n <= numel.max(1)).ok_or_else(|| {
            format!(
                "size {:?} holds more elements than its storage of {numel} (an expanded view is not read)",
                self.size
            )
        })?;
        if n == 0 {
            return Ok(Vec::new());
        }
        let reach = self
            .size
            .iter()
            .zip(&self.stride)
            .try_fold(self.offset, |a, (&s, &st)| (s - 1).checked_mul(st).and_then(|d| a.checked_add(d)));
        let last = reach.unwrap_or(usize::MAX);
        if last >= numel {
            return Err(format!(
                "size {:?} stride {:?} offset {} reaches element {last} of a storage of {numel}",
                self.size, self.stride, self.offset
            ));
        }
        let mut out = Vec::with_capacity(n);
        let mut idx = vec![0usize; self.size.len()];
        for _ in 0..n {
            out.push(self.offset + idx.iter().zip(&self.stride).map(|(&i, &s)| i * s).sum::<usize>());
            for ax in (0..idx.len()).rev() {
                idx[ax] += 1;
                if idx[ax] < self.size[ax] {
                    break;
                }
                idx[ax] = 0;
            }
        }
        Ok(out)
    }
}

/// `Some` when `id` is a tensor (or a Parameter wrapping one): its view, or why it cannot be read.
fn tensor_view(pk: &Pickle, id: Id) -> Option<std::result::Result<View, String>> {
    let Obj::Object { func, args, .. } = pk.get(id) else { return None };
    let args = pk.tuple(*args)?;
    const UTILS: &[&str] = &["torch._utils"];
    if pk.is_global(*func, UTILS, "_rebuild_parameter")
        || pk.is_global(*func, UTILS, "_rebuild_parameter_with_state")
    {
        return tensor_view(pk, *args.first()?);
    }
    // A tensor subclass: _rebuild_from_type_v2(func, type, args, state).
    if pk.is_global(*func, &["torch._tensor"], "_rebuild_from_type_v2") {
        let inner = pk.tuple(*args.get(2)?)?;
        if pk.is_global(*args.first()?, UTILS, "_rebuild_tensor_v2") {
            return Some(view_of(pk, inner));
        }
        return None;
    }
    if pk.is_global(*func, UTILS, "_rebuild_tensor_v2") || pk.is_global(*func, UTILS, "_rebuild_tensor") {
        return Some(view_of(pk, args));
    }
    None
}

/// `(storage, storage_offset, size, stride, ...)`.
fn view_of(pk: &Pickle, args: &[Id]) -> std::result::Result<View, String> {
    let [storage, offset, size, stride, ..] = args else {
        return Err("a tensor without (storage, offset, size, stride)".into());
    };
    let Obj::Persistent(pid) = pk.get(*storage) else {
        return Err(format!("tensor data is {}, not a storage reference", pk.kind(*storage)));
    };
    let dims = |id: Id, what: &str| -> std::result::Result<Vec<usize>, String> {
        pk.tuple(id)
            .and_then(|t| t.iter().map(|&d| pk.int(d).and_then(|v| usize::try_from(v).ok())).collect())
            .ok_or_else(|| format!("the tensor's {what} is not a tuple of non-negative integers"))
    };
    let (size, stride) = (dims(*size, "size")?, dims(*stride, "stride")?);
    if size.len() != stride.len() {
        return Err(format!("size {size:?} and stride {stride:?} differ in rank"));
    }
    let offset = pk.int(*offset).and_then(|v| usize::try_from(v).ok()).ok_or("negative storage offset")?;
    Ok(View { pid: *pid, offset, size, stride })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A zip-format file as torch.save writes it for {'w': tensor [2, 2] f32 stored transposed}.
    fn tiny_zip(pkl: &[u8], storages: &[(&str, Vec<u8>)]) -> Vec<u8> {
        use std::io::Write;
        let mut buf = std::io::Cursor::new(Vec::new());
        let mut w = zip::ZipWriter::new(&mut buf);
        let opt = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
        w.start_file("archive/data.pkl", opt).unwrap();
        w.write_all(pkl).unwrap();
        w.start_file("archive/byteorder", opt).unwrap();
        w.write_all(b"little").unwrap();
        for (k, b) in storages {
            w.start_file(format!("archive/data/{k}"), opt).unwrap();
            w.write_all(b).unwrap();
        }
        w.finish().unwrap();
        buf.into_inner()
    }

    /// OrderedDict({'w': _rebuild_tensor_v2(storage('0', FloatStorage, n), 0, (2, 2), strides)}).
    fn pickle_of(strides: (u8, u8), numel: u8, storage_type: &str) -> Vec<u8> {
        let mut p = b"\x80\x02ccollections\nOrderedDict\nq\x00)Rq\x01(X\x01\x00\x00\x00wq\x02ctorch._utils\n_rebuild_tensor_v2\nq\x03((X\x07\x00\x00\x00storageq\x04ctorch\n".to_vec();
        p.extend_from_slice(storage_type.as_bytes());
        p.extend_from_slice(b"\nq\x05X\x01\x00\x00\x000q\x06X\x03\x00\x00\x00cpuq\x07K");
        p.push(numel);
        p.extend_from_slice(b"tq\x08QK\x00K\x02K\x02\x86q\x09K");
        p.extend_from_slice(&[strides.0, b'K', strides.1]);
        p.extend_from_slice(b"\x86q\x0a\x89h\x00)Rq\x0btq\x0cRq\x0du.");
        p
    }

    fn floats(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    #[test]
    fn strided_views_are_gathered() {
        let file = tiny_zip(&pickle_of((1, 2), 4, "FloatStorage"), &[("0", floats(&[1., 2., 3., 4.]))]);
        let sd = parse_state_dict(&file, "t.pth").unwrap();
        assert_eq!(sd.found_at, "");
        let (n, t) = &sd.tensors[0];
        assert_eq!((n.as_str(), t.dims()), ("w", &[2usize, 2][..]));
        assert_eq!(t.to_f64_vec().unwrap(), vec![1., 3., 2., 4.]);
    }

    #[test]
    fn damaged_files_name_the_file_and_the_tensor() {
        let good = tiny_zip(&pickle_of((2, 1), 4, "FloatStorage"), &[("0", floats(&[1., 2., 3., 4.]))]);
        let e = parse_state_dict(&good[..good.len() - 30], "cut.pth").err().unwrap().to_string();
        assert!(e.contains("cut.pth") && e.contains("zip archive"), "{e}");
        // The storage holds fewer bytes than its reference claims.
        let short = tiny_zip(&pickle_of((2, 1), 4, "FloatStorage"), &[("0", floats(&[1., 2., 3.]))]);
        let e = parse_state_dict(&short, "short.pth").err().unwrap().to_string();
        assert!(e.contains("short.pth: tensor 'w'") && e.contains("12 bytes"), "{e}");
        // A view reaching past its storage.
        let past = tiny_zip(&pickle_of((3, 1), 4, "FloatStorage"), &[("0", floats(&[1., 2., 3., 4.]))]);
        let e = parse_state_dict(&past, "past.pth").err().unwrap().to_string();
        assert!(e.contains("past.pth: tensor 'w'") && e.contains("reaches element 4"), "{e}");
        // A storage entry missing from the archive.
        let missing = tiny_zip(&pickle_of((2, 1), 4, "FloatStorage"), &[]);
        let e = parse_state_dict(&missing, "m.pth").err().unwrap().to_string();
        assert!(e.contains("m.pth: tensor 'w'") && e.contains("archive/data/0"), "{e}");
        // An unknown storage class.
        let odd = tiny_zip(&pickle_of((2, 1), 4, "QInt8Storage"), &[("0", vec![0; 4])]);
        let e = parse_state_dict(&odd, "q.pth").err().unwrap().to_string();
        assert!(e.contains("q.pth") && e.contains("torch.QInt8Storage"), "{e}");
        // An opcode outside the subset (INST) in data.pkl.
        let inst = tiny_zip(b"\x80\x02(ios\nsystem\n.", &[]);
        let e = parse_state_dict(&inst, "i.pth").err().unwrap().to_string();
        assert!(e.contains("i.pth: data.pkl, pickle byte 3") && e.contains("0x69"), "{e}");
        let e = parse_state_dict(b"hello world", "x.onnx").err().unwrap().to_string();
        assert!(e.contains("x.onnx: not a PyTorch file"), "{e}");
    }

    #[test]
    fn mutated_pickles_give_errors_not_panics() {
        let valid = pickle_of((1, 2), 4, "FloatStorage");
        let storage = floats(&[1., 2., 3., 4.]);
        let mut rng = crate::rng::Rng::new(9);
        let mut ok = 0;
        for _ in 0..3000 {
            let mut b = valid.clone();
            for _ in 0..1 + rng.below(3) {
                let p = rng.below(b.len() as u64) as usize;
                match rng.below(3) {
                    0 => b[p] ^= 1 << rng.below(8),
                    1 => b[p] = rng.next_u64() as u8,
                    _ => b.truncate(p.max(1)),
                }
            }
            ok += parse_state_dict(&tiny_zip(&b, &[("0", storage.clone())]), "m.pth").is_ok() as u32;
        }
        assert!(ok < 3000, "some mutations must be refused");
    }

    #[test]
    fn a_dict_without_tensors_is_explained() {
        let p = b"\x80\x02}q\x00(X\x05\x00\x00\x00epochK\x03X\x04\x00\x00\x00archX\x03\x00\x00\x00r50u.";
        let e = parse_state_dict(&tiny_zip(p, &[]), "e.pth").err().unwrap().to_string();
        assert!(e.contains("e.pth: holds no state dict") && e.contains("\"epoch\""), "{e}");
    }
}
