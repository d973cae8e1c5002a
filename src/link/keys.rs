//! The peer link's key files: `supervisor keygen` writes a host's key pair,
//! `up` reads it back.
//!
//! Owns the file format and its permissions: `link.key` holds two lines,
//! `public=<Z85>` and `secret=<Z85>`, mode 0600 (refused when readable by
//! group or others); the public key alone goes into the other hosts'
//! manifests (`hosts.NAME.public_key`). Does not own key generation (libzmq,
//! `crate::transport::peer`).

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::transport::peer::{PeerKeys, decode_key};

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
    #[error("{path} already exists (remove it first to make a new key pair)")]
    Exists { path: PathBuf },
    #[error(transparent)]
    Transport(#[from] crate::transport::TransportError),
}

/// Generates a key pair and writes it to `path` (mode 0600, never over an
/// existing file).
pub fn generate(path: &Path) -> Result<PeerKeys, KeyError> {
    let keys = PeerKeys::generate()?;
    if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| KeyError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|source| match source.kind() {
            std::io::ErrorKind::AlreadyExists => KeyError::Exists {
                path: path.to_path_buf(),
            },
            _ => KeyError::Io {
                path: path.to_path_buf(),
                source,
            },
        })?;
    writeln!(file, "public={}\nsecret={}", keys.public, keys.secret).map_err(|source| {
        KeyError::Io {
            path: path.to_path_buf(),
            source,
        }
    })?;
    Ok(keys)
}

/// Reads a key file written by [`generate`].
pub fn read(path: &Path) -> Result<PeerKeys, KeyError> {
    let invalid = |reason: String| KeyError::Invalid {
        path: path.to_path_buf(),
        reason,
    };
    let metadata = std::fs::metadata(path).map_err(|source| KeyError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    if metadata.permissions().mode() & 0o077 != 0 {
        return Err(invalid(format!(
            "holds a secret key but is readable by others (mode {:o}); run `chmod 600 {}`",
            metadata.permissions().mode() & 0o777,
            path.display()
        )));
    }
    let text = std::fs::read_to_string(path).map_err(|source| KeyError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut public = None;
    let mut secret = None;
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match line.split_once('=') {
            Some(("public", value)) => public = Some(value.trim().to_string()),
            Some(("secret", value)) => secret = Some(value.trim().to_string()),
            _ => {
                return Err(invalid(format!(
                    "line {}: expected `public=KEY` or `secret=KEY`",
                    number + 1
                )));
            }
        }
    }
    let (Some(public), Some(secret)) = (public, secret) else {
        return Err(invalid("needs both `public=` and `secret=` lines".into()));
    };
    for (field, key) in [("public", &public), ("secret", &secret)] {
        if decode_key(key).is_none() {
            return Err(invalid(format!(
                "`{field}=` is not a Z85 CURVE key (40 characters)"
            )));
        }
    }
    Ok(PeerKeys { public, secret })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_key_file_reads_back_and_is_private() {
        if !crate::transport::peer::curve_available() {
            eprintln!("SKIPPED: libzmq built without CURVE (libsodium-dev missing at build time)");
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("keys/link.key");
        let keys = generate(&path).expect("generate");
        assert_eq!(keys.public.len(), 40);
        assert_eq!(read(&path).expect("read"), keys);
        assert!(matches!(generate(&path), Err(KeyError::Exists { .. })));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let error = read(&path).expect_err("world-readable secret");
        assert!(error.to_string().contains("chmod 600"), "{error}");
    }
}
