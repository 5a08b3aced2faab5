//! Writing the serving certificate and key into `--webhook-cert-dir`. Each
//! file is written to a temporary name and renamed into place, key first, so
//! anything loading the pair from disk (e.g. [`CertSlot::load_dir`](super::CertSlot::load_dir))
//! never reads half a file, and a new certificate is never paired with the
//! key of the one it replaced.

use std::path::Path;

use super::pki::Material;
use super::slot::{CERT_FILE, KEY_FILE};

/// Creates the cert dir (mode 0750) if it is absent.
pub fn ensure_dir(dir: &Path) -> Result<(), String> {
    if dir.is_dir() {
        return Ok(());
    }
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o750)
        .create(dir)
        .map_err(|e| format!("creating the webhook cert dir {}: {e}", dir.display()))
}

/// Writes `tls.key`, then `tls.crt` (mode 0600), each replaced atomically so
/// a reader never sees half a file, and a watcher woken by the certificate
/// never pairs it with the previous key.
pub fn write_files(dir: &Path, material: &Material) -> Result<(), String> {
    ensure_dir(dir)?;
    write_private(&dir.join(KEY_FILE), material.key_pem.as_bytes())?;
    write_private(&dir.join(CERT_FILE), material.cert_pem.as_bytes())
}

fn write_private(path: &Path, data: &[u8]) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    let result = (|| -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        f.write_all(data)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    result.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        format!("writing {}: {e}", path.display())
    })
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn material(tag: &str) -> Material {
        Material {
            ca_pem: format!("ca {tag}"),
            cert_pem: format!("cert {tag}"),
            key_pem: format!("key {tag}"),
        }
    }

    #[test]
    fn the_pair_is_replaced_whole_and_stays_private() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("nested/certs");
        write_files(&dir, &material("1")).unwrap();
        write_files(&dir, &material("2")).unwrap();
        let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap();
        assert_eq!(read(CERT_FILE), "cert 2");
        assert_eq!(read(KEY_FILE), "key 2");
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, [CERT_FILE, KEY_FILE], "no temporary files left");
        for f in [CERT_FILE, KEY_FILE] {
            let mode = std::fs::metadata(dir.join(f)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{f}");
        }
        // An existing directory is left as it is.
        ensure_dir(&dir).unwrap();
    }

    #[test]
    fn a_failed_write_names_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("not-a-dir");
        std::fs::write(&file, "x").unwrap();
        let err = write_files(&file, &material("1")).unwrap_err();
        assert!(err.contains("not-a-dir"), "{err}");
    }
}
