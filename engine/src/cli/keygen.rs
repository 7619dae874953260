//! `portcullis keygen`: a token key pair on disk.

use crate::error::{Error, Result};
use std::path::Path;

/// Writes `PREFIX.key` (0600) and `PREFIX.pub`. Refuses to overwrite either.
pub fn keygen(prefix: &Path) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let (private, public) = portcullis_core::keys::generate()?;
    let key_path = prefix.with_extension("key");
    let pub_path = prefix.with_extension("pub");
    for p in [&key_path, &pub_path] {
        if p.exists() {
            return Err(Error::file(
                "not overwriting a key:",
                p.as_path(),
                std::io::ErrorKind::AlreadyExists.into(),
            ));
        }
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&key_path)
        .map_err(|e| Error::file("cannot create", &key_path, e))?;
    f.write_all(private.as_bytes())
        .map_err(|e| Error::file("cannot write", &key_path, e))?;
    std::fs::write(&pub_path, public).map_err(|e| Error::file("cannot write", &pub_path, e))?;
    eprintln!(
        "wrote {} (private, keep secret) and {} (public, for the gateway's auth.token_public_key)",
        key_path.display(),
        pub_path.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keygen_writes_private_key_0600_and_refuses_overwrite() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let prefix = dir.path().join("token");
        keygen(&prefix).unwrap();
        let mode = std::fs::metadata(prefix.with_extension("key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(keygen(&prefix).is_err());
    }
}
