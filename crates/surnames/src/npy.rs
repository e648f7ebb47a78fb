//! NumPy `.npy` files (format version 1.0, little-endian, C order).
//!
//! The tutorial saves its training records (`avg_losses.npy`, …) and the confusion matrix with
//! `np.save`; we write byte-compatible files so they load with `np.load` and compare directly with
//! the Python outputs. The header layout follows current NumPy: the dict literal is padded with
//! spaces and a final `\n` so that the data starts at a multiple of 64 bytes.
//!
//! A minimal reader for the same subset is included so the tool (and its tests) can read back
//! its own files.

use std::io;
use std::path::Path;

use crate::fsutil::write_atomic;

const MAGIC: &[u8; 6] = b"\x93NUMPY";
/// NumPy aligns the start of the data to this many bytes.
const ALIGN: usize = 64;

/// Element types we can store: NumPy type descriptor plus little-endian encoding.
trait Element: Copy {
    const DESCR: &'static str;
    const SIZE: usize;
    fn put_le(self, out: &mut Vec<u8>);
    fn from_le(bytes: &[u8]) -> Self;
}

macro_rules! element {
    ($t:ty, $descr:literal) => {
        impl Element for $t {
            const DESCR: &'static str = $descr;
            const SIZE: usize = std::mem::size_of::<$t>();
            fn put_le(self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
            fn from_le(bytes: &[u8]) -> Self {
                let mut a = [0u8; std::mem::size_of::<$t>()];
                a.copy_from_slice(bytes);
                <$t>::from_le_bytes(a)
            }
        }
    };
}
element!(f32, "<f4");
element!(f64, "<f8");
element!(i64, "<i8");

/// Serialises an `f32` array of the given shape (C order) as a complete `.npy` file.
///
/// # Panics
/// If `data.len()` differs from the product of `shape` (a caller bug; [`write_npy_f32`] reports
/// it as an error instead), or if the header text would exceed 4 GiB.
pub fn npy_bytes_f32(shape: &[usize], data: &[f32]) -> Vec<u8> {
    npy_bytes(shape, data)
}

/// Serialises an `f64` array as a complete `.npy` file. Panics like [`npy_bytes_f32`].
pub fn npy_bytes_f64(shape: &[usize], data: &[f64]) -> Vec<u8> {
    npy_bytes(shape, data)
}

/// Serialises an `i64` array as a complete `.npy` file. Panics like [`npy_bytes_f32`].
pub fn npy_bytes_i64(shape: &[usize], data: &[i64]) -> Vec<u8> {
    npy_bytes(shape, data)
}

/// Writes an `f32` array to `path` atomically (see [`crate::fsutil::write_atomic`]).
pub fn write_npy_f32(path: &Path, shape: &[usize], data: &[f32]) -> io::Result<()> {
    write_npy(path, shape, data)
}

/// Writes an `f64` array to `path` atomically.
pub fn write_npy_f64(path: &Path, shape: &[usize], data: &[f64]) -> io::Result<()> {
    write_npy(path, shape, data)
}

/// Writes an `i64` array to `path` atomically.
pub fn write_npy_i64(path: &Path, shape: &[usize], data: &[i64]) -> io::Result<()> {
    write_npy(path, shape, data)
}

/// Parses a `.npy` file holding little-endian `float32` data; returns the shape and the data in
/// C order.
pub fn read_npy_f32(bytes: &[u8]) -> Result<(Vec<usize>, Vec<f32>), String> {
    read_npy(bytes)
}

/// Parses a `.npy` file holding little-endian `float64` data.
pub fn read_npy_f64(bytes: &[u8]) -> Result<(Vec<usize>, Vec<f64>), String> {
    read_npy(bytes)
}

/// Parses a `.npy` file holding little-endian `int64` data.
pub fn read_npy_i64(bytes: &[u8]) -> Result<(Vec<usize>, Vec<i64>), String> {
    read_npy(bytes)
}

fn write_npy<T: Element>(path: &Path, shape: &[usize], data: &[T]) -> io::Result<()> {
    let expected = element_count(shape);
    if expected != Some(data.len()) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "cannot write {}: shape {shape:?} does not match {} values",
                path.display(),
                data.len()
            ),
        ));
    }
    write_atomic(path, &npy_bytes(shape, data))
}

fn element_count(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))
}

fn npy_bytes<T: Element>(shape: &[usize], data: &[T]) -> Vec<u8> {
    assert_eq!(
        element_count(shape),
        Some(data.len()),
        "npy: shape {shape:?} does not match {} values",
        data.len()
    );
    let header = header_text(T::DESCR, shape);
    let mut out = Vec::with_capacity(2 * ALIGN + data.len() * T::SIZE);
    out.extend_from_slice(MAGIC);
    // Version 1.0 stores the header length in 16 bits; like NumPy, fall back to 2.0 (32 bits)
    // only when that does not fit (thousands of dimensions).
    let v1_prefix = MAGIC.len() + 4;
    if let Ok(len) = u16::try_from(padded_len(v1_prefix, header.len()) - v1_prefix) {
        out.extend_from_slice(&[1, 0]);
        out.extend_from_slice(&len.to_le_bytes());
    } else {
        let v2_prefix = MAGIC.len() + 6;
        let len = padded_len(v2_prefix, header.len()) - v2_prefix;
        // A header over 4 GiB would need a shape string larger than any real array's metadata.
        let len = u32::try_from(len).expect("npy header larger than 4 GiB");
        out.extend_from_slice(&[2, 0]);
        out.extend_from_slice(&len.to_le_bytes());
    }
    let data_start = padded_len(out.len(), header.len());
    out.extend_from_slice(header.as_bytes());
    out.resize(data_start - 1, b' ');
    out.push(b'\n');
    for &v in data {
        v.put_le(&mut out);
    }
    out
}

/// Length of prefix + header + at least the terminating newline, rounded up to [`ALIGN`].
fn padded_len(prefix: usize, header: usize) -> usize {
    (prefix + header + 1).div_ceil(ALIGN) * ALIGN
}

/// The Python dict literal NumPy writes, e.g. `{'descr': '<f4', 'fortran_order': False, 'shape':
/// (3,), }` (note the 1-tuple comma and the trailing `, `).
fn header_text(descr: &str, shape: &[usize]) -> String {
    let dims: Vec<String> = shape.iter().map(ToString::to_string).collect();
    let tuple = match dims.len() {
        1 => format!("({},)", dims[0]),
        _ => format!("({})", dims.join(", ")),
    };
    format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {tuple}, }}")
}

fn read_npy<T: Element>(bytes: &[u8]) -> Result<(Vec<usize>, Vec<T>), String> {
    let rest = bytes
        .strip_prefix(MAGIC.as_slice())
        .ok_or("not a .npy file (bad magic)")?;
    let (major, rest) = match rest {
        [major, _minor, rest @ ..] => (*major, rest),
        _ => return Err("truncated .npy header".into()),
    };
    let (header_len, rest) = match (major, rest) {
        (1, [a, b, rest @ ..]) => (usize::from(u16::from_le_bytes([*a, *b])), rest),
        (2 | 3, [a, b, c, d, rest @ ..]) => {
            let n = u32::from_le_bytes([*a, *b, *c, *d]);
            (usize::try_from(n).map_err(|e| e.to_string())?, rest)
        }
        (1..=3, _) => return Err("truncated .npy header".into()),
        _ => return Err(format!("unsupported .npy version {major}")),
    };
    if rest.len() < header_len {
        return Err("truncated .npy header".into());
    }
    let (header, payload) = rest.split_at(header_len);
    let header = std::str::from_utf8(header).map_err(|_| "npy header is not text")?;
    let dict = parse_header(header)?;

    if dict.descr != T::DESCR {
        return Err(format!(
            "npy dtype is '{}', expected '{}'",
            dict.descr,
            T::DESCR
        ));
    }
    if dict.fortran_order && dict.shape.iter().filter(|&&d| d > 1).count() > 1 {
        return Err("Fortran-ordered .npy arrays are not supported".into());
    }
    let count = element_count(&dict.shape).ok_or("npy shape overflows")?;
    let nbytes = count.checked_mul(T::SIZE).ok_or("npy shape overflows")?;
    if payload.len() != nbytes {
        return Err(format!(
            "npy data has {} bytes, shape {:?} needs {nbytes}",
            payload.len(),
            dict.shape
        ));
    }
    let data = payload.chunks_exact(T::SIZE).map(T::from_le).collect();
    Ok((dict.shape, data))
}

struct Header {
    descr: String,
    fortran_order: bool,
    shape: Vec<usize>,
}

/// Parses the header dict: the subset of Python literals that `.npy` headers use (strings,
/// booleans, non-negative integers, tuples), in any key order and spacing.
fn parse_header(text: &str) -> Result<Header, String> {
    let mut p = Parser {
        s: text.trim_end().as_bytes(),
        i: 0,
    };
    let (mut descr, mut fortran, mut shape) = (None, None, None);
    p.expect(b'{')?;
    loop {
        p.skip_ws();
        if p.eat(b'}') {
            break;
        }
        let key = p.string()?;
        p.expect(b':')?;
        match key.as_str() {
            "descr" => descr = Some(p.string()?),
            "fortran_order" => fortran = Some(p.boolean()?),
            "shape" => shape = Some(p.tuple()?),
            other => return Err(format!("unexpected key '{other}' in npy header")),
        }
        p.skip_ws();
        if !p.eat(b',') {
            p.expect(b'}')?;
            break;
        }
    }
    p.skip_ws();
    if p.i != p.s.len() {
        return Err("trailing characters after npy header dict".into());
    }
    Ok(Header {
        descr: descr.ok_or("npy header lacks 'descr'")?,
        fortran_order: fortran.ok_or("npy header lacks 'fortran_order'")?,
        shape: shape.ok_or("npy header lacks 'shape'")?,
    })
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn skip_ws(&mut self) {
        while self.s.get(self.i).is_some_and(u8::is_ascii_whitespace) {
            self.i += 1;
        }
    }

    fn eat(&mut self, c: u8) -> bool {
        if self.s.get(self.i) == Some(&c) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, c: u8) -> Result<(), String> {
        self.skip_ws();
        if self.eat(c) {
            Ok(())
        } else {
            Err(format!(
                "malformed npy header: expected '{}' at offset {}",
                c as char, self.i
            ))
        }
    }

    fn string(&mut self) -> Result<String, String> {
        self.skip_ws();
        let quote = match self.s.get(self.i) {
            Some(&q @ (b'\'' | b'"')) => q,
            _ => {
                return Err(format!(
                    "malformed npy header: expected a string at offset {}",
                    self.i
                ))
            }
        };
        let start = self.i + 1;
        let len = self.s[start..]
            .iter()
            .position(|&c| c == quote)
            .ok_or("malformed npy header: unterminated string")?;
        self.i = start + len + 1;
        String::from_utf8(self.s[start..start + len].to_vec())
            .map_err(|_| "malformed npy header: string is not UTF-8".into())
    }

    fn boolean(&mut self) -> Result<bool, String> {
        self.skip_ws();
        for (word, value) in [("True", true), ("False", false)] {
            if self.s[self.i..].starts_with(word.as_bytes()) {
                self.i += word.len();
                return Ok(value);
            }
        }
        Err(format!(
            "malformed npy header: expected True/False at offset {}",
            self.i
        ))
    }

    fn tuple(&mut self) -> Result<Vec<usize>, String> {
        self.expect(b'(')?;
        let mut dims = Vec::new();
        loop {
            self.skip_ws();
            if self.eat(b')') {
                return Ok(dims);
            }
            let start = self.i;
            while self.s.get(self.i).is_some_and(u8::is_ascii_digit) {
                self.i += 1;
            }
            let digits = std::str::from_utf8(&self.s[start..self.i]).unwrap_or("");
            let dim = digits
                .parse::<usize>()
                .map_err(|_| format!("malformed npy header: bad dimension at offset {start}"))?;
            dims.push(dim);
            self.skip_ws();
            if !self.eat(b',') {
                self.expect(b')')?;
                return Ok(dims);
            }
        }
    }
}
