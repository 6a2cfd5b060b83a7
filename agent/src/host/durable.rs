//! Replacing a small file so that a reader, or a crash, sees the old
//! content or the new, never half of it — and the new one survives a power
//! cut once written: the cluster id, the ledger, the endpoints file.

use std::io::Write;
use std::path::Path;

/// Replaces `path` with `bytes`: a temporary file beside it (`.tmp`),
/// synced, renamed over it, then the directory synced.
pub fn replace(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    replace_private(path, bytes, None)
}

/// The same for a file that holds a secret: mode 0640, in group `gid` if
/// given (so that a service's group may read it), set before the content
/// is written, so that it is never readable by others.
pub fn replace_private(path: &Path, bytes: &[u8], gid: Option<u32>) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(if gid.is_some() { 0o640 } else { 0o644 })
            .open(&tmp)?;
        if let Some(gid) = gid {
            std::os::unix::fs::fchown(&f, None, Some(gid))?;
            // The mode given at creation is masked by the umask; set it.
            std::fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(0o640))?;
        }
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    #[test]
    fn replaces_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        super::replace(&path, b"one").unwrap();
        super::replace(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        assert!(!path.with_extension("tmp").exists());
    }

    #[test]
    fn a_private_file_is_not_readable_by_others() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret.conf");
        let gid = std::fs::metadata(dir.path()).unwrap().gid();
        super::replace_private(&path, b"sync_password: x", Some(gid)).unwrap();
        let m = std::fs::metadata(&path).unwrap();
        assert_eq!(m.permissions().mode() & 0o777, 0o640);
        assert_eq!(m.gid(), gid);
    }
}
