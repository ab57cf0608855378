//! Reads the `key value...` block files written by tests/parity/eval_ref.py and qmagface_ref.py:
//! `case NAME`, then one line per key with whitespace-separated values, then `end`.

use std::collections::HashMap;
use std::path::PathBuf;

pub fn fixtures_dir() -> PathBuf {
    match std::env::var_os("FACETRAIN_FIXTURES") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures"),
    }
}

/// One `case` block: key -> whitespace-separated values.
pub struct Case {
    pub name: String,
    pub fields: HashMap<String, Vec<String>>,
}

impl Case {
    pub fn raw(&self, key: &str) -> &[String] {
        self.fields.get(key).unwrap_or_else(|| panic!("eval fixture case {}: no `{key}` line", self.name))
    }
    pub fn floats(&self, key: &str) -> Vec<f64> {
        self.raw(key)
            .iter()
            .enumerate()
            .map(|(i, v)| {
                v.parse().unwrap_or_else(|_| {
                    panic!("case {}: `{key}` value {i} is not a number: {v:?}", self.name)
                })
            })
            .collect()
    }
    pub fn float(&self, key: &str) -> f64 {
        let v = self.floats(key);
        assert_eq!(v.len(), 1, "case {}: `{key}` should hold one value", self.name);
        v[0]
    }
}

/// The cases of fixture `file`; panics with how to generate it when it is missing.
pub fn load_cases(file: &str, script: &str) -> Vec<Case> {
    let path = fixtures_dir().join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "missing fixture {} ({e}): generate it with `python tests/parity/{script} <dir>` \
             (tests/run.sh does this) and point FACETRAIN_FIXTURES at <dir>",
            path.display()
        )
    });
    let mut cases = Vec::new();
    let mut current: Option<Case> = None;
    for (lineno, line) in text.lines().enumerate() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let mut words = line.split_whitespace();
        let key = words.next().unwrap();
        let values: Vec<String> = words.map(str::to_string).collect();
        match key {
            "case" => {
                assert!(current.is_none(), "{}:{}: `case` inside a case", path.display(), lineno + 1);
                current = Some(Case { name: values.join(" "), fields: HashMap::new() });
            }
            "end" => cases.push(
                current
                    .take()
                    .unwrap_or_else(|| panic!("{}:{}: `end` outside a case", path.display(), lineno + 1)),
            ),
            _ => {
                let c = current
                    .as_mut()
                    .unwrap_or_else(|| panic!("{}:{}: `{key}` outside a case", path.display(), lineno + 1));
                c.fields.insert(key.to_string(), values);
            }
        }
    }
    assert!(current.is_none(), "{}: last case has no `end`", path.display());
    assert!(!cases.is_empty(), "{}: no cases", path.display());
    cases
}
