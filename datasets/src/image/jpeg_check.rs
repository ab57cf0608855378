//! A strict check of a JPEG's entropy-coded data: what libjpeg-turbo (OpenCV's and MXNet's decoder)
//! warns about as "Corrupt JPEG data" while it still returns an image. The fast decoder (zune-jpeg)
//! decodes such files silently, even in its strict mode, so a flipped bit inside the scan data went
//! unnoticed by `data inspect --decode` and `--skip-corrupt`.
//!
//! The check walks the markers and Huffman-decodes every block of every scan of a sequential JPEG
//! (SOF0/SOF1, the kind face sets hold) without the inverse DCT, and reports the first of:
//! - a code that no Huffman table holds ("bad Huffman code");
//! - a scan whose data ends (a marker) before its last block ("premature end of data segment");
//! - bytes left between a scan's last block and the next marker ("extraneous bytes before marker");
//! - a restart marker missing or out of sequence ("found marker ... instead of RSTn");
//! - a marker libjpeg refuses after a scan, or the file ending before EOI.
//!
//! These follow libjpeg-turbo's jdhuff.c and jdmarker.c (the same conditions, not its code). Progressive,
//! arithmetic-coded and lossless files are not checked (`Ok`): their decoding is left to the decoder.

/// The two complaints of the block decoder (a small Copy type: the hot loop returns one per symbol).
#[derive(Clone, Copy, Debug)]
enum Corrupt {
    PrematureEnd,
    BadCode,
}

impl Corrupt {
    fn says(self) -> &'static str {
        match self {
            Corrupt::PrematureEnd => "premature end of data segment",
            Corrupt::BadCode => "bad Huffman code",
        }
    }
}

/// Code lengths up to this many bits are decoded by one table lookup.
const LOOKAHEAD: u32 = 9;

/// A Huffman table as canonical codes: per length, the largest code and where its symbols start, and
/// a table giving (length, symbol) for the codes of up to `LOOKAHEAD` bits by their leading bits.
struct Huffman {
    /// maxcode[l]: the largest code of length l (-1 when none), l in 1..=16; maxcode[17] ends the search.
    maxcode: [i32; 18],
    /// valoffset[l]: symbols[code + valoffset[l]] is the symbol of a code of length l.
    valoffset: [i32; 17],
    symbols: Vec<u8>,
    /// By the next `LOOKAHEAD` bits: (code length, symbol), length 0 for a longer code (or none).
    fast: Vec<(u8, u8)>,
}

impl Huffman {
    fn new(counts: &[u8; 16], symbols: Vec<u8>) -> Result<Huffman, String> {
        let total: usize = counts.iter().map(|&c| c as usize).sum();
        if total > 256 || total != symbols.len() {
            return Err("bad Huffman table".into());
        }
        let (mut maxcode, mut valoffset) = ([-1i32; 18], [0i32; 17]);
        let mut fast = vec![(0u8, 0u8); 1 << LOOKAHEAD];
        let (mut code, mut k) = (0i32, 0i32);
        for l in 1..=16 {
            let n = counts[l - 1] as i32;
            if n > 0 {
                valoffset[l] = k - code;
                for c in code..code + n {
                    if l as u32 <= LOOKAHEAD {
                        let shift = LOOKAHEAD - l as u32;
                        let sym = symbols[(c + valoffset[l]) as usize];
                        let first = (c as usize) << shift;
                        fast[first..first + (1 << shift)].fill((l as u8, sym));
                    }
                }
                code += n;
                k += n;
                maxcode[l] = code - 1;
            }
            if code > (1 << l) {
                return Err("bad Huffman table (codes overflow their length)".into());
            }
            code <<= 1;
        }
        maxcode[17] = i32::MAX;
        Ok(Huffman { maxcode, valoffset, symbols, fast })
    }
}

/// The bits of one entropy-coded segment, MSB first in a 64-bit buffer filled ahead from the raw bytes:
/// FF 00 is a data byte FF, FF FF.. is fill, FF followed by anything else is a marker, where the data
/// ends. Bits past the end read as zeros; using one of them is libjpeg's "premature end of data
/// segment".
struct Bits<'a> {
    data: &'a [u8],
    /// Next raw byte to load.
    pos: usize,
    /// Valid bits at the top of `acc` (the rest is zero).
    acc: u64,
    n: u32,
    /// The segment's data ended (a marker at `pos`, or the end of the file).
    ended: bool,
}

impl Bits<'_> {
    fn new(data: &[u8], pos: usize) -> Bits<'_> {
        Bits { data, pos, acc: 0, n: 0, ended: false }
    }

    fn fill(&mut self) {
        let d = self.data;
        while self.n <= 56 && !self.ended {
            let Some(&b) = d.get(self.pos) else {
                self.ended = true;
                break;
            };
            if b == 0xFF {
                let mut q = self.pos + 1;
                while q < d.len() && d[q] == 0xFF {
                    q += 1;
                }
                if q >= d.len() || d[q] != 0 {
                    self.ended = true;
                    break;
                }
                self.pos = q + 1;
            } else {
                self.pos += 1;
            }
            self.acc |= u64::from(b) << (56 - self.n);
            self.n += 8;
        }
    }

    /// The next `k` bits (1..=16), zeros past the end of the data.
    #[inline]
    fn peek(&mut self, k: u32) -> u32 {
        if self.n < k {
            self.fill();
        }
        (self.acc >> (64 - k)) as u32
    }

    #[inline]
    fn consume(&mut self, k: u32) -> Result<(), Corrupt> {
        if self.n < k {
            self.fill();
            if self.n < k {
                return Err(Corrupt::PrematureEnd);
            }
        }
        self.acc <<= k;
        self.n -= k;
        Ok(())
    }

    #[inline]
    fn bits(&mut self, k: u32) -> Result<u32, Corrupt> {
        if k == 0 {
            return Ok(0);
        }
        let v = self.peek(k);
        self.consume(k)?;
        Ok(v)
    }

    #[inline]
    fn decode(&mut self, h: &Huffman) -> Result<u8, Corrupt> {
        let (len, sym) = h.fast[self.peek(LOOKAHEAD) as usize];
        if len > 0 {
            self.consume(u32::from(len))?;
            return Ok(sym);
        }
        let mut l = LOOKAHEAD as usize + 1;
        let mut code = self.peek(l as u32) as i32;
        while code > h.maxcode[l] {
            l += 1;
            if l > 16 {
                // libjpeg reads the 16 bits first: past the data's end that is the complaint it makes.
                self.consume(16)?;
                return Err(Corrupt::BadCode);
            }
            code = self.peek(l as u32) as i32;
        }
        self.consume(l as u32)?;
        h.symbols.get((code + h.valoffset[l]) as usize).copied().ok_or(Corrupt::BadCode)
    }

    /// Skips to the next marker: returns it and whether whole data bytes were left unread before it
    /// (libjpeg's "extraneous bytes"; the bits left of a partly read byte are padding).
    fn skip_to_marker(&mut self) -> Result<(u8, bool), String> {
        let d = self.data;
        let mut skipped = self.n >= 8;
        let mut p = self.pos;
        loop {
            while p < d.len() && d[p] != 0xFF {
                p += 1;
                skipped = true;
            }
            while p < d.len() && d[p] == 0xFF {
                p += 1;
            }
            if p >= d.len() {
                return Err("premature end of JPEG file".into());
            }
            if d[p] != 0 {
                self.pos = p + 1;
                (self.acc, self.n, self.ended) = (0, 0, false);
                return Ok((d[p], skipped));
            }
            p += 1;
            skipped = true;
        }
    }
}

#[derive(Clone, Copy)]
struct Component {
    id: u8,
    h: usize,
    v: usize,
}

struct Frame {
    width: usize,
    height: usize,
    components: Vec<Component>,
}

/// What the marker walk keeps between segments.
#[derive(Default)]
struct State {
    frame: Option<Frame>,
    dc: [Option<Huffman>; 4],
    ac: [Option<Huffman>; 4],
    restart_interval: usize,
}

fn segment(d: &[u8], p: usize) -> Result<&[u8], String> {
    if p + 2 > d.len() {
        return Err("premature end of JPEG file".into());
    }
    let len = usize::from(u16::from_be_bytes([d[p], d[p + 1]]));
    if len < 2 || p + len > d.len() {
        return Err("premature end of JPEG file (a marker segment runs past the end)".into());
    }
    Ok(&d[p + 2..p + len])
}

fn read_dht(mut s: &[u8], st: &mut State) -> Result<(), String> {
    while !s.is_empty() {
        if s.len() < 17 {
            return Err("bogus Huffman table definition".into());
        }
        let (class, id) = (s[0] >> 4, usize::from(s[0] & 15));
        let counts: [u8; 16] = s[1..17].try_into().unwrap();
        let n: usize = counts.iter().map(|&c| c as usize).sum();
        if id > 3 || class > 1 || s.len() < 17 + n {
            return Err("bogus Huffman table definition".into());
        }
        let table = Some(Huffman::new(&counts, s[17..17 + n].to_vec())?);
        if class == 0 {
            st.dc[id] = table;
        } else {
            st.ac[id] = table;
        }
        s = &s[17 + n..];
    }
    Ok(())
}

fn read_sof(s: &[u8]) -> Result<Frame, String> {
    if s.len() < 6 || s.len() < 6 + 3 * usize::from(s[5]) || s[5] == 0 {
        return Err("bogus frame header".into());
    }
    let height = usize::from(u16::from_be_bytes([s[1], s[2]]));
    let width = usize::from(u16::from_be_bytes([s[3], s[4]]));
    let components = (0..usize::from(s[5]))
        .map(|i| {
            let c = &s[6 + 3 * i..9 + 3 * i];
            Component { id: c[0], h: usize::from(c[1] >> 4), v: usize::from(c[1] & 15) }
        })
        .collect::<Vec<_>>();
    if width == 0
        || height == 0
        || components.iter().any(|c| !(1..=4).contains(&c.h) || !(1..=4).contains(&c.v))
    {
        return Err("bogus frame header".into());
    }
    Ok(Frame { width, height, components })
}

/// One scan's blocks: `d` from just after its SOS segment; returns the position of the marker after it.
fn read_scan(d: &[u8], start: usize, sos: &[u8], st: &State) -> Result<(usize, u8), String> {
    let frame = st.frame.as_ref().ok_or("scan before the frame header")?;
    let ns = usize::from(*sos.first().ok_or("bogus scan header")?);
    if ns == 0 || sos.len() < 1 + 2 * ns {
        return Err("bogus scan header".into());
    }
    // Per scan component: (frame component, DC table, AC table).
    let mut comps = Vec::with_capacity(ns);
    for i in 0..ns {
        let (id, tables) = (sos[1 + 2 * i], sos[2 + 2 * i]);
        let c = *frame.components.iter().find(|c| c.id == id).ok_or("scan names an unknown component")?;
        let dc = st.dc[usize::from(tables >> 4) & 3].as_ref().ok_or("Huffman table missing")?;
        let ac = st.ac[usize::from(tables & 15) & 3].as_ref().ok_or("Huffman table missing")?;
        comps.push((c, dc, ac));
    }
    let hmax = frame.components.iter().map(|c| c.h).max().unwrap();
    let vmax = frame.components.iter().map(|c| c.v).max().unwrap();
    // Blocks per MCU of each scan component, and the MCU count.
    let (blocks, mcus): (Vec<usize>, usize) = if ns == 1 {
        let c = comps[0].0;
        let w = (frame.width * c.h).div_ceil(hmax).div_ceil(8);
        let h = (frame.height * c.v).div_ceil(vmax).div_ceil(8);
        (vec![1], w * h)
    } else {
        let mx = frame.width.div_ceil(8 * hmax);
        let my = frame.height.div_ceil(8 * vmax);
        (comps.iter().map(|(c, _, _)| c.h * c.v).collect(), mx * my)
    };
    let mut bits = Bits::new(d, start);
    let ri = st.restart_interval;
    let mut rst = 0u8;
    for m in 0..mcus {
        if ri > 0 && m > 0 && m % ri == 0 {
            let (marker, skipped) = bits.skip_to_marker()?;
            if skipped {
                return Err(format!(
                    "extraneous bytes before marker 0x{marker:02x} (restart {m} of {mcus} MCUs)"
                ));
            }
            if marker != 0xD0 + rst {
                return Err(format!("found marker 0x{marker:02x} instead of RST{rst}"));
            }
            rst = (rst + 1) % 8;
        }
        for (k, (_, dc, ac)) in comps.iter().enumerate() {
            for _ in 0..blocks[k] {
                block(&mut bits, dc, ac).map_err(|e| format!("{} (MCU {m} of {mcus})", e.says()))?;
            }
        }
    }
    let (marker, skipped) = bits.skip_to_marker()?;
    if skipped {
        return Err(format!("extraneous bytes before marker 0x{marker:02x}"));
    }
    Ok((bits.pos, marker))
}

/// One 8x8 block: the DC difference, then the AC run-lengths up to the end-of-block code.
fn block(bits: &mut Bits, dc: &Huffman, ac: &Huffman) -> Result<(), Corrupt> {
    let s = bits.decode(dc)?;
    bits.bits(u32::from(s & 15))?;
    let mut k = 1;
    while k < 64 {
        let rs = bits.decode(ac)?;
        let (r, s) = (usize::from(rs >> 4), rs & 15);
        if s != 0 {
            k += r;
            bits.bits(u32::from(s))?;
        } else if r != 15 {
            break;
        } else {
            k += 15;
        }
        k += 1;
    }
    Ok(())
}

/// `Err` with libjpeg-turbo's complaint (in its words) when the file is not clean; `Ok` for clean
/// sequential files and for kinds this check does not read.
pub fn check_jpeg(d: &[u8]) -> Result<(), String> {
    if !d.starts_with(&[0xFF, 0xD8]) {
        return Err("not a JPEG file".into());
    }
    let mut st = State::default();
    let mut p = 2;
    let mut scans = 0;
    loop {
        // Markers: FF, fill FFs, then the code (bytes before an FF are "extraneous": libjpeg warns).
        if p >= d.len() {
            return Err("premature end of JPEG file".into());
        }
        if d[p] != 0xFF {
            return Err(format!("extraneous bytes before a marker at byte {p}"));
        }
        while p < d.len() && d[p] == 0xFF {
            p += 1;
        }
        let Some(&m) = d.get(p) else { return Err("premature end of JPEG file".into()) };
        p += 1;
        match m {
            0xD9 => return if scans > 0 { Ok(()) } else { Err("no image data before EOI".into()) },
            0xC0 | 0xC1 => {
                if st.frame.is_some() {
                    return Err("two frame headers".into());
                }
                let s = segment(d, p)?;
                st.frame = Some(read_sof(s)?);
                p += 2 + s.len();
            }
            // Progressive, lossless, hierarchical and arithmetic-coded frames: not checked here.
            0xC2 | 0xC3 | 0xC5..=0xC7 | 0xC9..=0xCB | 0xCD..=0xCF => return Ok(()),
            0xC4 => {
                let s = segment(d, p)?;
                read_dht(s, &mut st)?;
                p += 2 + s.len();
            }
            0xDD => {
                let s = segment(d, p)?;
                if s.len() != 2 {
                    return Err("bogus DRI marker length".into());
                }
                st.restart_interval = usize::from(u16::from_be_bytes([s[0], s[1]]));
                p += 4;
            }
            0xDA => {
                let s = segment(d, p)?;
                let (next, marker) = read_scan(d, p + 2 + s.len(), s, &st)?;
                scans += 1;
                // Continue at the marker after the scan (its FF is just before `next`).
                p = next - 2;
                debug_assert!(d[p + 1] == marker);
            }
            // Standalone markers libjpeg passes over outside a scan.
            0x01 | 0xD0..=0xD7 => {}
            0xD8 => return Err("a second SOI marker".into()),
            // DQT, DNL, APPn, COM: segments with a length.
            0xDB | 0xDC | 0xE0..=0xEF | 0xFE => p += 2 + segment(d, p)?.len(),
            other => return Err(format!("unsupported marker type 0x{other:02x}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::{decode, encode_jpeg, Image};

    fn picture(h: usize, w: usize, seed: usize) -> Image {
        let mut img = Image::new(h, w);
        img.data.iter_mut().enumerate().for_each(|(p, v)| *v = ((p * 13 + seed * 37 + p / 7) % 256) as u8);
        img
    }

    #[test]
    fn clean_files_of_every_size_pass() {
        for (h, w) in [(1, 1), (7, 9), (16, 16), (17, 33), (112, 112), (112, 96)] {
            for q in [50, 90, 100] {
                let jpg = encode_jpeg(&picture(h, w, h + q as usize), q).unwrap();
                check_jpeg(&jpg).unwrap_or_else(|e| panic!("{h}x{w} q{q}: {e}"));
            }
        }
    }

    #[test]
    fn damage_the_fast_decoder_accepts_is_named() {
        let jpg = encode_jpeg(&picture(48, 40, 3), 92).unwrap();
        let bad = crate::testutil::damage_scan_data(&jpg);
        assert!(decode(&bad).is_ok());
        let e = check_jpeg(&bad).unwrap_err();
        assert!(
            ["bad Huffman code", "premature end", "extraneous bytes"].iter().any(|w| e.contains(w)),
            "{e}"
        );
        // Cut inside the scan: the fast decoder returns an image, libjpeg-turbo says "premature end".
        let cut = &jpg[..jpg.len() - 40];
        assert!(decode(cut).is_ok());
        assert!(check_jpeg(cut).is_err());
        assert!(check_jpeg(b"GIF8").unwrap_err().contains("not a JPEG"));
        assert!(check_jpeg(&jpg[..3]).is_err());
    }
}
