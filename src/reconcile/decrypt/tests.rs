//! Unit tests of the decryption module without external tools (the oracle
//! tests against the real `sops` are in `tests/sops.rs`).

use std::collections::BTreeMap;

use super::*;

#[test]
fn decrypt_error_display_is_sanitised() {
    let e =
        DecryptError::new(DecryptErrorKind::MacMismatch, "MAC mismatch").in_file("secrets/db.yaml");
    assert_eq!(e.to_string(), "decryption failed for \"secrets/db.yaml\"");
    assert!(e.detail().contains("MAC mismatch"));
    let e = DecryptError::new(DecryptErrorKind::BadKey, "x");
    assert_eq!(e.to_string(), "decryption failed");
}

#[test]
fn decrypt_keys_parse_and_reject() {
    let mut data = BTreeMap::new();
    data.insert("notes.txt".to_string(), b"ignored".to_vec());
    let keys = Keys::from_secret_data(&data).unwrap();
    assert!(keys.is_empty());
    data.insert(
        "a.agekey".to_string(),
        b"# created: 2024\n# public key: age1...\nAGE-SECRET-KEY-1QQQ\n".to_vec(),
    );
    let e = Keys::from_secret_data(&data).unwrap_err();
    assert_eq!(e.kind, DecryptErrorKind::BadKey);
    assert!(!e.detail().contains("AGE-SECRET-KEY"), "{}", e.detail());
    data.insert("a.agekey".to_string(), b"# only comments\n".to_vec());
    assert_eq!(
        Keys::from_secret_data(&data).unwrap_err().kind,
        DecryptErrorKind::BadKey
    );
    data.remove("a.agekey");
    data.insert(
        "k.asc".to_string(),
        b"-----BEGIN PGP PRIVATE KEY BLOCK-----\n\ngarbage\n".to_vec(),
    );
    assert_eq!(
        Keys::from_secret_data(&data).unwrap_err().kind,
        DecryptErrorKind::BadKey
    );
}

#[test]
fn decrypt_plain_files_pass_through() {
    let mut files = BTreeMap::new();
    files.insert(
        "a.yaml".to_string(),
        b"sops: is a word here\nkind: x\n".to_vec(),
    );
    files.insert("b.json".to_string(), b"{\"x\": 1}".to_vec());
    files.insert("c.env".to_string(), b"A=sops\n".to_vec());
    files.insert("d.ini".to_string(), b"[s]\nk = sops\n".to_vec());
    files.insert("e.txt".to_string(), b"ENC[AES256_GCM,data:".to_vec());
    files.insert("f.yaml".to_string(), b"{{ not yaml sops".to_vec());
    let before = files.clone();
    let keys = Keys::from_secret_data(&BTreeMap::new()).unwrap();
    assert_eq!(
        decrypt_files(&mut files, &keys).unwrap(),
        Vec::<String>::new()
    );
    assert_eq!(files, before);
    for (path, content) in &before {
        assert!(!is_encrypted(path, content), "{path}");
    }
}

#[test]
fn decrypt_garbled_sops_files_are_malformed() {
    let keys = Keys::from_secret_data(&BTreeMap::new()).unwrap();
    let cases: &[(&str, &str)] = &[
        (
            "a.yaml",
            "a: ENC[AES256_GCM,data:AA==,iv:AA==,tag:AA==,type:str]\n",
        ),
        ("b.yaml", "a: x\nsops:\n  mac: m\n  lastmodified: now\n"),
        ("c.yaml", "a: x\nsops:\n  age: 3\n"),
        (
            "d.json",
            "{\"a\": \"ENC[AES256_GCM,data:AA==\", \"sops\": {\"mac\"",
        ),
        (
            "e.env",
            "A=ENC[AES256_GCM,data:AA==,iv:AA==,tag:AA==,type:str]\nsops_mac=x\n",
        ),
        ("f.ini", "[s]\na = ENC[AES256_GCM,data:\n[sops]\nmac = x\n"),
        (
            "g.yaml",
            "a: x\nsops:\n  kms:\n  - arn: aws\n    enc: zzz\n  mac: m\n  lastmodified: '2024-01-01T00:00:00Z'\n",
        ),
    ];
    for (path, content) in cases {
        assert!(is_encrypted(path, content.as_bytes()), "{path}");
        let mut files = BTreeMap::new();
        files.insert(path.to_string(), content.as_bytes().to_vec());
        let e = decrypt_files(&mut files, &keys).unwrap_err();
        assert_eq!(e.file.as_deref(), Some(*path));
        assert!(
            matches!(
                e.kind,
                DecryptErrorKind::Malformed
                    | DecryptErrorKind::NoMatchingKey
                    | DecryptErrorKind::UnsupportedKeyType
            ),
            "{path}: {e:?}"
        );
    }
    let mut files = BTreeMap::new();
    files.insert("g.yaml".to_string(), cases[6].1.as_bytes().to_vec());
    let e = decrypt_files(&mut files, &keys).unwrap_err();
    assert_eq!(e.kind, DecryptErrorKind::UnsupportedKeyType, "{e:?}");
    assert!(e.detail().contains("kms"));
}

/// Truncations and byte flips of a SOPS file never panic.
#[test]
fn decrypt_hostile_inputs_do_not_panic() {
    let text = "a: ENC[AES256_GCM,data:AA==,iv:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=,tag:AAAAAAAAAAAAAAAAAAAAAA==,type:str]\nb: &x [1, *x]\nsops:\n  age:\n  - recipient: age1\n    enc: |\n      -----BEGIN AGE ENCRYPTED FILE-----\n      YWdl\n      -----END AGE ENCRYPTED FILE-----\n  mac: ENC[AES256_GCM,data:AA==,iv:AA==,tag:AA==,type:str]\n  lastmodified: '2024-01-01T00:00:00Z'\n  version: 3.11.0\n";
    let keys = Keys::from_secret_data(&BTreeMap::new()).unwrap();
    for ext in ["yaml", "json", "env", "ini"] {
        for cut in (0..text.len()).step_by(7) {
            let mut files = BTreeMap::new();
            files.insert(format!("f.{ext}"), text.as_bytes()[..cut].to_vec());
            let _ = decrypt_files(&mut files, &keys);
        }
    }
}
