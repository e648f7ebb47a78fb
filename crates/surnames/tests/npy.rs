//! `.npy` writer/reader: exact header layout as NumPy writes it, round trips, error handling and
//! (when NumPy is importable) loading with `np.load`.

use std::fs;
use std::process::Command;

use surnames::npy::{
    npy_bytes_f32, npy_bytes_f64, npy_bytes_i64, read_npy_f32, read_npy_f64, read_npy_i64,
    write_npy_f32, write_npy_f64, write_npy_i64,
};

/// Header length field, header text and data offset of a v1.0 file.
fn header(bytes: &[u8]) -> (usize, String) {
    assert_eq!(&bytes[..6], b"\x93NUMPY");
    assert_eq!(&bytes[6..8], &[1, 0], "version 1.0");
    let len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    (
        10 + len,
        String::from_utf8(bytes[10..10 + len].to_vec()).unwrap(),
    )
}

#[test]
fn one_dimensional_header_matches_numpy() {
    let bytes = npy_bytes_f32(&[3], &[1.0, 2.0, 3.0]);
    let (offset, text) = header(&bytes);
    // np.save(f, np.array([1, 2, 3], dtype=np.float32)) with NumPy >= 1.14.
    let dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }";
    assert!(text.starts_with(dict), "{text:?}");
    assert!(text[dict.len()..text.len() - 1].bytes().all(|b| b == b' '));
    assert!(text.ends_with('\n'));
    assert_eq!(offset, 128);
    assert_eq!(bytes.len(), 128 + 12);
    assert_eq!(&bytes[128..132], &1.0f32.to_le_bytes());
}

#[test]
fn two_dimensional_shape_and_other_dtypes() {
    let m: Vec<f32> = (0..324).map(|i| i as f32 / 324.0).collect();
    let (_, text) = header(&npy_bytes_f32(&[18, 18], &m));
    assert!(text.contains("'shape': (18, 18), }"), "{text:?}");

    let (_, text) = header(&npy_bytes_f64(&[2, 3, 4], &[0.0; 24]));
    assert!(text.starts_with("{'descr': '<f8', 'fortran_order': False, 'shape': (2, 3, 4), }"));
    let (_, text) = header(&npy_bytes_i64(&[0], &[]));
    assert!(text.starts_with("{'descr': '<i8', 'fortran_order': False, 'shape': (0,), }"));
    let (_, text) = header(&npy_bytes_f32(&[], &[5.0]));
    assert!(text.contains("'shape': (), }"), "{text:?}");
}

#[test]
fn header_is_64_byte_aligned_for_many_shapes() {
    let shapes: Vec<Vec<usize>> = vec![
        vec![0],
        vec![1],
        vec![1000],
        vec![0, 123_456_789],
        vec![18, 18],
        vec![
            1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
        ],
    ];
    for shape in shapes {
        let n: usize = shape.iter().product();
        let bytes = npy_bytes_f32(&shape, &vec![0.5; n]);
        let (offset, text) = header(&bytes);
        assert_eq!(offset % 64, 0, "shape {shape:?}");
        assert!(text.ends_with('\n'));
        assert_eq!(text.matches('\n').count(), 1);
        assert_eq!(bytes.len(), offset + 4 * n);
    }
}

#[test]
fn huge_headers_use_version_2() {
    // 30,000 dimensions do not fit a 16-bit header length (NumPy itself would refuse to load
    // this many dimensions, but the format allows it).
    let shape = vec![1usize; 30_000];
    let bytes = npy_bytes_f32(&shape, &[2.5]);
    assert_eq!(&bytes[6..8], &[2, 0]);
    let len = u32::from_le_bytes(bytes[8..12].try_into().unwrap()) as usize;
    assert_eq!((12 + len) % 64, 0);
    assert_eq!(read_npy_f32(&bytes).unwrap(), (shape, vec![2.5]));
}

#[test]
fn round_trips_preserve_bits() {
    let data = [
        0.0f32,
        -0.0,
        1.5,
        -2.25e-8,
        f32::MAX,
        f32::MIN_POSITIVE,
        f32::INFINITY,
        f32::NAN,
    ];
    let (shape, back) = read_npy_f32(&npy_bytes_f32(&[2, 4], &data)).unwrap();
    assert_eq!(shape, vec![2, 4]);
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&back), bits(&data));

    let d64 = [std::f64::consts::PI, -1e300, 0.0];
    assert_eq!(
        read_npy_f64(&npy_bytes_f64(&[3], &d64)).unwrap(),
        (vec![3], d64.to_vec())
    );
    let i = [i64::MIN, -1, 0, 1, i64::MAX];
    assert_eq!(
        read_npy_i64(&npy_bytes_i64(&[5], &i)).unwrap(),
        (vec![5], i.to_vec())
    );
    assert_eq!(
        read_npy_f32(&npy_bytes_f32(&[0], &[])).unwrap(),
        (vec![0], vec![])
    );
}

#[test]
fn reader_accepts_other_valid_headers() {
    // Different key order, double quotes, no trailing comma, version 2.0 length field.
    let dict = b"{\"shape\": (2,1), 'descr': '<f4', 'fortran_order': False}";
    let mut bytes = b"\x93NUMPY\x02\x00".to_vec();
    let len = 128 - 12;
    bytes.extend_from_slice(&(len as u32).to_le_bytes());
    bytes.extend_from_slice(dict);
    bytes.resize(128 - 1, b' ');
    bytes.push(b'\n');
    bytes.extend_from_slice(&3.0f32.to_le_bytes());
    bytes.extend_from_slice(&4.0f32.to_le_bytes());
    assert_eq!(read_npy_f32(&bytes).unwrap(), (vec![2, 1], vec![3.0, 4.0]));
}

#[test]
fn reader_rejects_bad_input() {
    let good = npy_bytes_f32(&[3], &[1.0, 2.0, 3.0]);
    assert!(read_npy_f32(b"").unwrap_err().contains("magic"));
    assert!(read_npy_f32(b"PK\x03\x04 zip")
        .unwrap_err()
        .contains("magic"));
    assert!(read_npy_f32(&good[..20]).is_err());
    assert!(read_npy_f32(&good[..good.len() - 1])
        .unwrap_err()
        .contains("bytes"));
    let mut extra = good.clone();
    extra.push(0);
    assert!(read_npy_f32(&extra).is_err());
    assert!(read_npy_f64(&good).unwrap_err().contains("'<f4'"));
    assert!(read_npy_i64(&good).is_err());

    let mut bad_version = good.clone();
    bad_version[6] = 9;
    assert!(read_npy_f32(&bad_version).unwrap_err().contains("version"));

    let mut garbled = good.clone();
    garbled[20] = b'#';
    assert!(read_npy_f32(&garbled).is_err());

    let mut f = npy_bytes_f32(&[2, 2], &[0.0; 4]);
    let pos = f.windows(5).position(|w| w == b"False").unwrap();
    f.splice(pos..pos + 5, b"True ".iter().copied());
    assert!(read_npy_f32(&f).unwrap_err().contains("Fortran"));
}

#[test]
fn write_npy_writes_files_atomically() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("accuracy_rec.npy");
    let data: Vec<f32> = (0..1000).map(|i| i as f32 / 1000.0).collect();
    write_npy_f32(&p, &[1000], &data).unwrap();
    assert_eq!(
        read_npy_f32(&fs::read(&p).unwrap()).unwrap(),
        (vec![1000], data)
    );

    write_npy_f64(&dir.path().join("a.npy"), &[2], &[1.0, 2.0]).unwrap();
    write_npy_i64(&dir.path().join("b.npy"), &[1, 2], &[1, 2]).unwrap();

    // A shape mismatch is an error naming the file, and the old file stays.
    let e = write_npy_f32(&p, &[3], &[1.0]).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput);
    assert!(e.to_string().contains(&p.display().to_string()), "{e}");
    assert_eq!(read_npy_f32(&fs::read(&p).unwrap()).unwrap().0, vec![1000]);

    let missing = dir.path().join("nope").join("x.npy");
    let e = write_npy_f32(&missing, &[1], &[1.0]).unwrap_err();
    assert!(
        e.to_string().contains(&missing.display().to_string()),
        "{e}"
    );
}

#[test]
#[should_panic(expected = "does not match")]
fn bytes_with_wrong_length_panic() {
    npy_bytes_f32(&[2, 2], &[1.0]);
}

/// Loads our files with the real NumPy when it is available; CI may not have it.
#[test]
fn numpy_can_load_our_files() {
    let has_numpy = Command::new("python3")
        .args(["-c", "import numpy"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !has_numpy {
        println!("note: python3 with numpy not available; np.load compatibility not checked");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let m: Vec<f32> = (0..324).map(|i| i as f32 * 0.5).collect();
    write_npy_f32(&dir.path().join("m.npy"), &[18, 18], &m).unwrap();
    write_npy_f32(&dir.path().join("v.npy"), &[3], &[1.0, 2.5, -3.0]).unwrap();
    write_npy_f64(&dir.path().join("d.npy"), &[2], &[0.25, 1e300]).unwrap();
    write_npy_i64(&dir.path().join("i.npy"), &[2, 1], &[-5, 7]).unwrap();
    let script = r#"
import sys, numpy as np
d = sys.argv[1]
m = np.load(d + '/m.npy'); assert m.dtype == np.float32 and m.shape == (18, 18), (m.dtype, m.shape)
assert m[17, 17] == 323 * 0.5 and m[1, 0] == 9.0
v = np.load(d + '/v.npy'); assert v.tolist() == [1.0, 2.5, -3.0]
x = np.load(d + '/d.npy'); assert x.dtype == np.float64 and x.tolist() == [0.25, 1e300]
i = np.load(d + '/i.npy'); assert i.dtype == np.int64 and i.shape == (2, 1) and i[0, 0] == -5
np.save(d + '/py.npy', np.arange(6, dtype=np.float32).reshape(2, 3))
"#;
    let out = Command::new("python3")
        .args(["-c", script, dir.path().to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let py = fs::read(dir.path().join("py.npy")).unwrap();
    assert_eq!(
        read_npy_f32(&py).unwrap(),
        (vec![2, 3], vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0])
    );
    // Byte-identical to what NumPy itself writes.
    assert_eq!(py, npy_bytes_f32(&[2, 3], &[0.0, 1.0, 2.0, 3.0, 4.0, 5.0]));
}
