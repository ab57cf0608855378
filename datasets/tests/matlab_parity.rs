//! The MAT-file reader against files written by scipy.io.savemat, compressed and not (fixtures from
//! tests/parity/tinyface_ref.py, with what scipy.io.loadmat reads back as JSON): numeric classes
//! (double, single, int8, int32, uint16, logical), char arrays of one and several rows, non-ASCII text,
//! cell arrays of strings, nested cells and an empty array.

use datasets::matlab::{read_mat, MatValue};
use serde_json::Value;
use std::path::{Path, PathBuf};

fn fixtures() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf();
    std::env::var_os("FACETRAIN_FIXTURES").map(PathBuf::from).unwrap_or_else(|| root.join("tests/fixtures"))
}

#[test]
fn reads_what_scipy_writes() {
    let dir = fixtures().join("matlab");
    let json = std::fs::read_to_string(dir.join("various.json")).unwrap_or_else(|e| {
        panic!("{}: {e} (run tests/parity/tinyface_ref.py OUTDIR, as tests/run.sh does)", dir.display())
    });
    let want: Value = serde_json::from_str(&json).unwrap();
    for file in ["various.mat", "various_c.mat"] {
        let vars = read_mat(&dir.join(file)).unwrap();
        let get = |name: &str| {
            &vars.iter().find(|(n, _)| n == name).unwrap_or_else(|| panic!("{file}: no {name}")).1
        };
        for (name, w) in want.as_object().unwrap() {
            let v = get(name);
            if let Some(vals) = w.get("values") {
                let MatValue::Numeric { dims, data } = v else { panic!("{file}: {name} is {v:?}") };
                let want_vals: Vec<f64> =
                    vals.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
                assert_eq!(data, &want_vals, "{file}: {name}");
                let shape: Vec<usize> =
                    w["shape"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as usize).collect();
                assert_eq!(dims, &shape, "{file}: {name} dims");
            } else if name == "names" {
                let MatValue::Cell { dims, items } = v else { panic!("{file}: {name} is {v:?}") };
                assert_eq!(dims, &vec![3, 1]);
                let got: Vec<String> = items.iter().map(|i| i.strings().unwrap().join("")).collect();
                let exp: Vec<String> =
                    w["strings"].as_array().unwrap().iter().map(|x| x.as_str().unwrap().into()).collect();
                assert_eq!(got, exp, "{file}: names");
            } else if let Some(strings) = w.get("strings") {
                let exp: Vec<String> =
                    strings.as_array().unwrap().iter().map(|x| x.as_str().unwrap().into()).collect();
                assert_eq!(
                    v.strings().unwrap_or_else(|| panic!("{file}: {name} is {v:?}")),
                    exp,
                    "{file}: {name}"
                );
            } else {
                let MatValue::Cell { dims, items } = v else { panic!("{file}: {name} is {v:?}") };
                assert_eq!(dims, &vec![1, 2], "{file}: nested dims");
                assert_eq!(items[0], MatValue::Cell { dims: vec![1, 1], items: vec![items_str("inner")] });
                assert_eq!(items[1], MatValue::Numeric { dims: vec![1, 2], data: vec![1.0, 2.0] });
            }
        }
    }
}

fn items_str(s: &str) -> MatValue {
    MatValue::Char { dims: vec![1, s.len()], units: s.encode_utf16().collect() }
}

#[test]
fn bad_files_are_errors_naming_the_file() {
    let dir = std::env::temp_dir().join(format!("facetrain-mat-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let short = dir.join("short.mat");
    std::fs::write(&short, b"MATLAB 5.0 MAT-file").unwrap();
    assert!(read_mat(&short).unwrap_err().to_string().contains("short.mat"));
    let mut hdf = b"MATLAB 7.3 MAT-file".to_vec();
    hdf.resize(200, 0);
    std::fs::write(dir.join("v73.mat"), &hdf).unwrap();
    assert!(read_mat(&dir.join("v73.mat")).unwrap_err().to_string().contains("7.3"));
    // A valid header followed by a tag that claims more bytes than the file holds.
    let mut trunc = vec![b' '; 116];
    trunc.extend([0u8; 8]);
    trunc.extend([0, 1, b'I', b'M']);
    trunc.extend(14u32.to_le_bytes());
    trunc.extend(1000u32.to_le_bytes());
    std::fs::write(dir.join("trunc.mat"), &trunc).unwrap();
    let e = read_mat(&dir.join("trunc.mat")).unwrap_err().to_string();
    assert!(e.contains("trunc.mat") && e.contains("byte 128"), "{e}");
    assert!(read_mat(&dir.join("missing.mat")).unwrap_err().to_string().contains("not found"));
}
