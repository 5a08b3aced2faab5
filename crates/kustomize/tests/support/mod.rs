//! PyYAML, a YAML 1.1 reader (the YAML version Kubernetes' own readers
//! follow), for checking what YAML text means to such a reader.

#![allow(dead_code)]

use std::io::Write as _;
use std::process::{Command, Stdio};

use serde_json::Value;

/// The documents PyYAML reads from each text (one `python3` run for all).
pub fn pyyaml_all(texts: &[String]) -> Vec<Vec<Value>> {
    let mut child = Command::new("python3")
        .args([
            "-c",
            "import sys, json, yaml\n\
             texts = json.loads(sys.stdin.buffer.read().decode('utf-8'))\n\
             sys.stdout.write(json.dumps([list(yaml.safe_load_all(t)) for t in texts]))",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 runs");
    let input = serde_json::to_vec(texts).unwrap();
    child.stdin.take().unwrap().write_all(&input).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "PyYAML could not read the YAML (PyYAML is required: python3 -m pip install pyyaml; \
         scripts/test.sh installs it): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON from python")
}

/// The documents PyYAML reads from `text`.
pub fn pyyaml(text: &str) -> Vec<Value> {
    pyyaml_all(&[text.to_owned()]).pop().unwrap_or_default()
}
