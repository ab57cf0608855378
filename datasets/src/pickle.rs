//! A pickle reader that builds data and never runs code: the object graph of a pickle (protocols 2 to
//! 5, binary opcodes) as an arena of plain values. Globals, `REDUCE`, `NEWOBJ` and `BUILD` are recorded as
//! data (which callable, which arguments, which state), so a pickle naming `os.system` yields a value
//! naming it and nothing more; the caller decides which few constructors it understands (numpy arrays
//! in `.bin` sets, torch tensors in `.pth` files). Shared references (memo) are the same arena entry,
//! so a dict filled after it was memoized reads the same from every reference.
//!
//! Each file kind allows only the opcodes its writers use ([`Dialect`]); anything else is refused with
//! the opcode and its byte offset.

use std::collections::HashMap;

/// Index of an object in [`Pickle::objects`].
pub type Id = usize;

#[derive(Debug, Clone, PartialEq)]
pub enum Obj {
    None,
    Bool(bool),
    Int(i64),
    /// An integer beyond i64 (LONG1/LONG4): its little-endian two's-complement bytes.
    BigInt(Vec<u8>),
    Float(f64),
    /// A byte range of the input: `bytes`, `bytearray` or a Python 2 `str`.
    Bytes(usize, usize),
    Str(String),
    List(Vec<Id>),
    Tuple(Vec<Id>),
    Dict(Vec<(Id, Id)>),
    Set(Vec<Id>),
    /// `module.name`, as GLOBAL / STACK_GLOBAL name it; never imported.
    Global(String, String),
    /// REDUCE or NEWOBJ: `func` applied to the tuple `args`, plus what SETITEM(S), APPEND(S) and BUILD
    /// later gave it (an OrderedDict's items, an object's state). Nothing is called.
    Object {
        func: Id,
        args: Id,
        items: Vec<(Id, Id)>,
        appended: Vec<Id>,
        state: Option<Id>,
    },
    /// BINPERSID: a reference the pickler kept outside the stream (a torch storage), its id object.
    Persistent(Id),
}

/// Which opcodes a kind of file may use; all others are refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// insightface `.bin` verification sets: lists, tuples, bytes, bools, ints and numpy's array
    /// constructors.
    BinSet,
    /// `torch.save` (zip or legacy) and PyTorch Lightning checkpoints: dicts, floats, sets and
    /// persistent storage references too.
    Torch,
}

impl Dialect {
    fn describe(self) -> &'static str {
        match self {
            Dialect::BinSet => "a .bin verification set",
            Dialect::Torch => "a PyTorch checkpoint",
        }
    }

    fn allows(self, op: u8) -> bool {
        const BIN: &[u8] = b"\x80\x95.(N\x88\x89KMJCUBT\x8e\x96\x8cX\x8d])lt\x85\x86\x87aeqr\x94hjc\x93Rb";
        const TORCH_ONLY: &[u8] = b"}dsu\x8f\x90\x91\x8a\x8bG\x81\x92Q012";
        BIN.contains(&op) || (self == Dialect::Torch && TORCH_ONLY.contains(&op))
    }
}

/// The objects of one pickle and its top object.
#[derive(Debug)]
pub struct Pickle<'a> {
    pub data: &'a [u8],
    pub objects: Vec<Obj>,
    pub root: Id,
    /// Offset just past the STOP opcode (the legacy torch format writes several pickles back to back).
    pub end: usize,
}

/// A parse failure: byte offset and what was wrong there.
pub type ParseError = (usize, String);

/// Containers nest a few levels in the files read here (a `.bin` about six, a Lightning checkpoint about
/// ten); far deeper input is refused so that hostile nesting cannot exhaust anyone's recursion.
pub const MAX_DEPTH: u32 = 32;

#[derive(Clone, Copy)]
enum Slot {
    Mark,
    Obj(Id),
}

struct Machine<'a> {
    data: &'a [u8],
    pos: usize,
    dialect: Dialect,
    stack: Vec<Slot>,
    memo: HashMap<u32, Id>,
    objects: Vec<Obj>,
    /// Nesting depth of each object, kept as containers grow.
    depth: Vec<u32>,
}

type R<T> = std::result::Result<T, ParseError>;

/// Parses the pickle starting at `start` in `data`.
pub fn parse(data: &[u8], start: usize, dialect: Dialect) -> R<Pickle<'_>> {
    let mut m = Machine {
        data,
        pos: start.min(data.len()),
        dialect,
        stack: Vec::new(),
        memo: HashMap::new(),
        objects: Vec::new(),
        depth: Vec::new(),
    };
    let root = m.run()?;
    Ok(Pickle { data, end: m.pos, root, objects: m.objects })
}

impl<'a> Machine<'a> {
    fn take(&mut self, n: usize) -> R<&'a [u8]> {
        if self.data.len() - self.pos < n {
            return Err((
                self.pos,
                format!("needs {n} bytes, file ends after {}", self.data.len() - self.pos),
            ));
        }
        let s = &self.data[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn uint(&mut self, n: usize) -> R<u64> {
        let b = self.take(n)?;
        Ok(b.iter().rev().fold(0u64, |acc, &x| (acc << 8) | x as u64))
    }

    fn new_obj(&mut self, o: Obj, at: usize) -> R<Id> {
        let children: Vec<Id> = match &o {
            Obj::List(v) | Obj::Tuple(v) | Obj::Set(v) => v.clone(),
            Obj::Dict(kv) => kv.iter().flat_map(|&(k, v)| [k, v]).collect(),
            Obj::Object { func, args, .. } => vec![*func, *args],
            Obj::Persistent(p) => vec![*p],
            _ => Vec::new(),
        };
        let d = children.iter().map(|&c| self.depth[c] + 1).max().unwrap_or(0);
        if d >= MAX_DEPTH {
            return Err((at, format!("objects nested more than {MAX_DEPTH} deep")));
        }
        self.objects.push(o);
        self.depth.push(d);
        Ok(self.objects.len() - 1)
    }

    fn push(&mut self, o: Obj, at: usize) -> R<()> {
        let id = self.new_obj(o, at)?;
        self.stack.push(Slot::Obj(id));
        Ok(())
    }

    /// Records that `child` now sits inside `parent`.
    fn deepen(&mut self, parent: Id, child: Id, at: usize) -> R<()> {
        let d = self.depth[parent].max(self.depth[child] + 1);
        if d >= MAX_DEPTH {
            return Err((at, format!("objects nested more than {MAX_DEPTH} deep")));
        }
        self.depth[parent] = d;
        Ok(())
    }

    fn bytes(&mut self, n: u64) -> R<()> {
        let at = self.pos;
        let n = usize::try_from(n).map_err(|_| (at, "length too large".to_string()))?;
        self.take(n)?;
        self.push(Obj::Bytes(at, at + n), at)
    }

    fn utf8(&mut self, n: u64) -> R<()> {
        let at = self.pos;
        let n = usize::try_from(n).map_err(|_| (at, "length too large".to_string()))?;
        let b = self.take(n)?;
        let s = std::str::from_utf8(b).map_err(|_| (at, "invalid UTF-8 in a string".to_string()))?;
        self.push(Obj::Str(s.to_string()), at)
    }

    fn line(&mut self) -> R<String> {
        let at = self.pos;
        let end = self.data[self.pos..]
            .iter()
            .position(|&b| b == b'\n')
            .ok_or((at, "unterminated text line".to_string()))?;
        let s = std::str::from_utf8(&self.data[self.pos..self.pos + end])
            .map_err(|_| (at, "non-UTF-8 name".to_string()))?;
        self.pos += end + 1;
        Ok(s.to_string())
    }

    fn pop(&mut self, at: usize) -> R<Id> {
        match self.stack.pop() {
            Some(Slot::Obj(id)) => Ok(id),
            _ => Err((at, "stack underflow".into())),
        }
    }

    fn top(&self, at: usize) -> R<Id> {
        match self.stack.last() {
            Some(Slot::Obj(id)) => Ok(*id),
            _ => Err((at, "no object on the stack".into())),
        }
    }

    fn pop_to_mark(&mut self, at: usize) -> R<Vec<Id>> {
        let m = self
            .stack
            .iter()
            .rposition(|s| matches!(s, Slot::Mark))
            .ok_or((at, "no MARK on the stack".to_string()))?;
        let items = self.stack.split_off(m + 1);
        self.stack.pop();
        Ok(items.into_iter().map(|s| if let Slot::Obj(id) = s { id } else { unreachable!() }).collect())
    }

    fn pairs(items: Vec<Id>, at: usize) -> R<Vec<(Id, Id)>> {
        if !items.len().is_multiple_of(2) {
            return Err((at, "odd number of items for key/value pairs".into()));
        }
        Ok(items.chunks_exact(2).map(|c| (c[0], c[1])).collect())
    }

    fn append(&mut self, target: Id, items: Vec<Id>, at: usize) -> R<()> {
        for &c in &items {
            self.deepen(target, c, at)?;
        }
        match &mut self.objects[target] {
            Obj::List(l) => l.extend(items),
            Obj::Object { appended, .. } => appended.extend(items),
            _ => return Err((at, "APPEND to something that is not a list".into())),
        }
        Ok(())
    }

    fn set_items(&mut self, target: Id, kv: Vec<(Id, Id)>, at: usize) -> R<()> {
        for &(k, v) in &kv {
            self.deepen(target, k, at)?;
            self.deepen(target, v, at)?;
        }
        match &mut self.objects[target] {
            Obj::Dict(d) => d.extend(kv),
            Obj::Object { items, .. } => items.extend(kv),
            _ => return Err((at, "SETITEM on something that is not a dict".into())),
        }
        Ok(())
    }

    fn int(&mut self, v: i64, at: usize) -> R<()> {
        self.push(Obj::Int(v), at)
    }

    /// LONG1/LONG4: little-endian two's complement of `n` bytes.
    fn long(&mut self, n: u64, at: usize) -> R<()> {
        let n = usize::try_from(n).map_err(|_| (at, "length too large".to_string()))?;
        let b = self.take(n)?;
        if b.len() <= 8 {
            let fill = if b.last().is_some_and(|&x| x & 0x80 != 0) { 0xff } else { 0 };
            let mut w = [fill; 8];
            w[..b.len()].copy_from_slice(b);
            return self.int(i64::from_le_bytes(w), at);
        }
        self.push(Obj::BigInt(b.to_vec()), at)
    }

    fn run(&mut self) -> R<Id> {
        loop {
            let at = self.pos;
            let op = self.take(1)?[0];
            if !self.dialect.allows(op) {
                return Err((
                    at,
                    format!(
                        "opcode 0x{op:02x} ({:?}) is not part of {}",
                        op as char,
                        self.dialect.describe()
                    ),
                ));
            }
            match op {
                0x80 => {
                    let proto = self.take(1)?[0];
                    if !(2..=5).contains(&proto) {
                        return Err((at, format!("pickle protocol {proto} (only 2 to 5 are read)")));
                    }
                }
                0x95 => {
                    self.uint(8)?; // FRAME: a length hint only
                }
                b'.' => {
                    let root = self.pop(at)?;
                    return Ok(root);
                }
                b'(' => self.stack.push(Slot::Mark),
                b'0' => {
                    self.stack.pop().ok_or((at, "POP on an empty stack".to_string()))?;
                }
                b'1' => {
                    self.pop_to_mark(at)?;
                }
                b'2' => {
                    let t = self.top(at)?;
                    self.stack.push(Slot::Obj(t));
                }
                b'N' => self.push(Obj::None, at)?,
                0x88 => self.push(Obj::Bool(true), at)?,
                0x89 => self.push(Obj::Bool(false), at)?,
                b'K' => {
                    let v = self.uint(1)? as i64;
                    self.int(v, at)?
                }
                b'M' => {
                    let v = self.uint(2)? as i64;
                    self.int(v, at)?
                }
                b'J' => {
                    let v = self.uint(4)? as u32 as i32 as i64;
                    self.int(v, at)?
                }
                0x8a => {
                    let n = self.uint(1)?;
                    self.long(n, at)?
                }
                0x8b => {
                    let n = self.uint(4)?;
                    self.long(n, at)?
                }
                b'G' => {
                    let b = self.take(8)?;
                    let v = f64::from_be_bytes(b.try_into().expect("8 bytes"));
                    self.push(Obj::Float(v), at)?
                }
                b'C' | b'U' => {
                    let n = self.uint(1)?;
                    self.bytes(n)?
                }
                b'B' | b'T' => {
                    let n = self.uint(4)?;
                    self.bytes(n)?
                }
                0x8e | 0x96 => {
                    let n = self.uint(8)?;
                    self.bytes(n)?
                }
                0x8c => {
                    let n = self.uint(1)?;
                    self.utf8(n)?
                }
                b'X' => {
                    let n = self.uint(4)?;
                    self.utf8(n)?
                }
                0x8d => {
                    let n = self.uint(8)?;
                    self.utf8(n)?
                }
                b']' => self.push(Obj::List(Vec::new()), at)?,
                b')' => self.push(Obj::Tuple(Vec::new()), at)?,
                b'}' => self.push(Obj::Dict(Vec::new()), at)?,
                0x8f => self.push(Obj::Set(Vec::new()), at)?,
                b'l' => {
                    let items = self.pop_to_mark(at)?;
                    self.push(Obj::List(items), at)?
                }
                b't' => {
                    let items = self.pop_to_mark(at)?;
                    self.push(Obj::Tuple(items), at)?
                }
                0x91 => {
                    let items = self.pop_to_mark(at)?;
                    self.push(Obj::Set(items), at)?
                }
                b'd' => {
                    let items = self.pop_to_mark(at)?;
                    let kv = Self::pairs(items, at)?;
                    self.push(Obj::Dict(kv), at)?
                }
                0x85..=0x87 => {
                    let n = (op - 0x84) as usize;
                    let mut items = Vec::with_capacity(n);
                    for _ in 0..n {
                        items.push(self.pop(at)?);
                    }
                    items.reverse();
                    self.push(Obj::Tuple(items), at)?
                }
                b'a' => {
                    let v = self.pop(at)?;
                    let target = self.top(at)?;
                    self.append(target, vec![v], at)?
                }
                b'e' | 0x90 => {
                    let items = self.pop_to_mark(at)?;
                    let target = self.top(at)?;
                    if op == 0x90 {
                        for &c in &items {
                            self.deepen(target, c, at)?;
                        }
                        match &mut self.objects[target] {
                            Obj::Set(s) => s.extend(items),
                            _ => return Err((at, "ADDITEMS to something that is not a set".into())),
                        }
                    } else {
                        self.append(target, items, at)?
                    }
                }
                b's' => {
                    let v = self.pop(at)?;
                    let k = self.pop(at)?;
                    let target = self.top(at)?;
                    self.set_items(target, vec![(k, v)], at)?
                }
                b'u' => {
                    let items = self.pop_to_mark(at)?;
                    let kv = Self::pairs(items, at)?;
                    let target = self.top(at)?;
                    self.set_items(target, kv, at)?
                }
                b'q' | b'r' | 0x94 => {
                    let key = match op {
                        b'q' => self.uint(1)? as u32,
                        b'r' => self.uint(4)? as u32,
                        _ => self.memo.len() as u32,
                    };
                    let v = self.top(at).map_err(|_| (at, "memo put on an empty stack".to_string()))?;
                    self.memo.insert(key, v);
                }
                b'h' | b'j' => {
                    let key = if op == b'h' { self.uint(1)? as u32 } else { self.uint(4)? as u32 };
                    let id = *self.memo.get(&key).ok_or((at, format!("memo key {key} was never stored")))?;
                    self.stack.push(Slot::Obj(id))
                }
                b'c' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    self.push(Obj::Global(module, name), at)?
                }
                0x93 => {
                    let name = self.pop(at)?;
                    let module = self.pop(at)?;
                    let (Obj::Str(module), Obj::Str(name)) = (&self.objects[module], &self.objects[name])
                    else {
                        return Err((at, "STACK_GLOBAL without two strings".into()));
                    };
                    let g = Obj::Global(module.clone(), name.clone());
                    self.push(g, at)?
                }
                b'R' | 0x81 => {
                    let args = self.pop(at)?;
                    let func = self.pop(at)?;
                    let o = Obj::Object { func, args, items: Vec::new(), appended: Vec::new(), state: None };
                    self.push(o, at)?
                }
                0x92 => {
                    // NEWOBJ_EX: cls, args, kwargs; the keyword arguments are kept out of reach.
                    let _kwargs = self.pop(at)?;
                    let args = self.pop(at)?;
                    let func = self.pop(at)?;
                    let o = Obj::Object { func, args, items: Vec::new(), appended: Vec::new(), state: None };
                    self.push(o, at)?
                }
                b'b' => {
                    let st = self.pop(at)?;
                    let target = self.top(at)?;
                    self.deepen(target, st, at)?;
                    match &mut self.objects[target] {
                        Obj::Object { state, .. } => *state = Some(st),
                        _ => return Err((at, "BUILD on something that is not an object".into())),
                    }
                }
                b'Q' => {
                    let pid = self.pop(at)?;
                    self.push(Obj::Persistent(pid), at)?
                }
                other => {
                    return Err((at, format!("opcode 0x{other:02x} ({:?}) is not supported", other as char)))
                }
            }
        }
    }
}

impl Pickle<'_> {
    pub fn get(&self, id: Id) -> &Obj {
        &self.objects[id]
    }

    /// The text of a `str` (or of UTF-8 bytes, as Python 2 pickles store names).
    pub fn text(&self, id: Id) -> Option<&str> {
        match self.get(id) {
            Obj::Str(s) => Some(s),
            Obj::Bytes(s, e) => std::str::from_utf8(&self.data[*s..*e]).ok(),
            _ => None,
        }
    }

    pub fn int(&self, id: Id) -> Option<i64> {
        match self.get(id) {
            Obj::Int(v) => Some(*v),
            Obj::Bool(b) => Some(*b as i64),
            _ => None,
        }
    }

    pub fn tuple(&self, id: Id) -> Option<&[Id]> {
        match self.get(id) {
            Obj::Tuple(v) => Some(v),
            _ => None,
        }
    }

    /// Whether `id` is the global `module.name` (any of `modules`).
    pub fn is_global(&self, id: Id, modules: &[&str], name: &str) -> bool {
        matches!(self.get(id), Obj::Global(m, n) if modules.contains(&m.as_str()) && n == name)
    }

    /// The key/value pairs of a dict, or of an object that received items (an `OrderedDict`, a dict
    /// subclass rebuilt through `copyreg._reconstructor`).
    pub fn dict_items(&self, id: Id) -> Option<&[(Id, Id)]> {
        match self.get(id) {
            Obj::Dict(kv) => Some(kv),
            Obj::Object { func, items, .. } if !items.is_empty() || self.is_dict_type(*func) => Some(items),
            _ => None,
        }
    }

    fn is_dict_type(&self, func: Id) -> bool {
        self.is_global(func, &["collections"], "OrderedDict")
            || self.is_global(func, &["builtins", "__builtin__"], "dict")
    }

    /// The value of key `key` in the dict `id`.
    pub fn dict_get(&self, id: Id, key: &str) -> Option<Id> {
        self.dict_items(id)?.iter().find(|(k, _)| self.text(*k) == Some(key)).map(|&(_, v)| v)
    }

    /// A short description of an object for error messages.
    pub fn kind(&self, id: Id) -> String {
        match self.get(id) {
            Obj::None => "None".into(),
            Obj::Bool(_) => "a bool".into(),
            Obj::Int(_) | Obj::BigInt(_) => "an int".into(),
            Obj::Float(_) => "a float".into(),
            Obj::Bytes(..) => "bytes".into(),
            Obj::Str(_) => "a str".into(),
            Obj::List(_) => "a list".into(),
            Obj::Tuple(_) => "a tuple".into(),
            Obj::Dict(_) => "a dict".into(),
            Obj::Set(_) => "a set".into(),
            Obj::Global(m, n) => format!("the global {m}.{n}"),
            Obj::Object { func, .. } => match self.get(*func) {
                Obj::Global(m, n) => format!("an object built by {m}.{n}"),
                _ => "an object".into(),
            },
            Obj::Persistent(_) => "a persistent reference".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_references_see_later_mutation() {
        // d = {}; l = [d, d]; then d['a'] = 1 through the memo; the pickle's value is l.
        let p = b"\x80\x02}q\x00]q\x01(h\x00h\x00eh\x00X\x01\x00\x00\x00aK\x01s0h\x01.";
        let pk = parse(p, 0, Dialect::Torch).unwrap();
        let Obj::List(items) = pk.get(pk.root) else { panic!("{:?}", pk.get(pk.root)) };
        assert_eq!(items.len(), 2);
        assert_eq!(items[0], items[1]);
        assert_eq!(pk.int(pk.dict_get(items[0], "a").unwrap()), Some(1));
    }

    #[test]
    fn globals_and_reduce_are_data_only() {
        let evil = b"\x80\x02cos\nsystem\nq\x00X\x02\x00\x00\x00lsq\x01\x85q\x02Rq\x03.";
        let pk = parse(evil, 0, Dialect::Torch).unwrap();
        assert_eq!(pk.kind(pk.root), "an object built by os.system");
    }

    #[test]
    fn numbers_floats_and_long_ints() {
        // (LONG1 -2, LONG1 2^70, BINFLOAT 1.5, BININT -7)
        let mut p = vec![0x80, 2, b'(', 0x8a, 1, 0xfe, 0x8a, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0x40, b'G'];
        p.extend_from_slice(&1.5f64.to_be_bytes());
        p.push(b'J');
        p.extend_from_slice(&(-7i32).to_le_bytes());
        p.extend_from_slice(b"t.");
        let pk = parse(&p, 0, Dialect::Torch).unwrap();
        let t = pk.tuple(pk.root).unwrap();
        assert_eq!(pk.int(t[0]), Some(-2));
        assert!(matches!(pk.get(t[1]), Obj::BigInt(b) if b.len() == 9));
        assert_eq!(pk.get(t[2]), &Obj::Float(1.5));
        assert_eq!(pk.int(t[3]), Some(-7));
    }

    #[test]
    fn dialects_refuse_what_their_files_never_hold() {
        let dict = b"\x80\x02}.";
        assert!(parse(dict, 0, Dialect::Torch).is_ok());
        let (at, msg) = parse(dict, 0, Dialect::BinSet).unwrap_err();
        assert_eq!(at, 2);
        assert!(msg.contains("0x7d") && msg.contains(".bin"), "{msg}");
        // INST (protocol 0 object creation by name) is in neither.
        let (at, msg) = parse(b"\x80\x02(ios\nsystem\n.", 0, Dialect::Torch).unwrap_err();
        assert_eq!(at, 3);
        assert!(msg.contains("0x69") && msg.contains("PyTorch"), "{msg}");
    }

    #[test]
    fn back_to_back_pickles_and_truncation() {
        let two = b"\x80\x02K\x07.\x80\x02K\x08.";
        let a = parse(two, 0, Dialect::Torch).unwrap();
        let b = parse(two, a.end, Dialect::Torch).unwrap();
        assert_eq!((a.int(a.root), b.int(b.root)), (Some(7), Some(8)));
        let (at, msg) = parse(&two[..3], 0, Dialect::Torch).unwrap_err();
        assert_eq!(at, 3);
        assert!(msg.contains("file ends"), "{msg}");
    }

    #[test]
    fn self_reference_is_refused_as_too_deep() {
        // l = []; l.append(l) repeated: depth keeps growing through the memo, never a loop at parse time.
        let mut p = b"\x80\x02]q\x00".to_vec();
        for _ in 0..40 {
            p.extend_from_slice(b"h\x00a");
        }
        p.push(b'.');
        let (_, msg) = parse(&p, 0, Dialect::Torch).unwrap_err();
        assert!(msg.contains("nested more than 32"), "{msg}");
    }
}
