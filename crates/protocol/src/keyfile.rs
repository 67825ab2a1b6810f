//! Key files in a data directory: `<name>.pem`, PKCS#8 PEM, mode 0600, never overwritten.

use std::io;
use std::path::{Path, PathBuf};

use crate::fsutil;
use crate::keys::{KeyError, KeyPair};

/// Longest key name accepted.
pub const MAX_KEY_NAME_LEN: usize = 64;
/// Cap on a key file's size (an 8192-bit PKCS#8 PEM key is about 6.5 KB).
pub const MAX_KEY_FILE_BYTES: u64 = 64 * 1024;

/// What went wrong with a key file.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// The name is not a plain file name.
    #[error(
        "invalid key name {0:?}: use 1 to {MAX_KEY_NAME_LEN} letters, digits, '-', '_' or '.', not starting with '.'"
    )]
    BadName(String),
    /// A key of that name exists.
    #[error("a key named {0:?} already exists; key files are never overwritten")]
    Exists(String),
    /// Reading or writing failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// The content is not a usable key.
    #[error("{path}: {source}")]
    Key {
        /// The file.
        path: PathBuf,
        /// The problem.
        source: KeyError,
    },
}

/// Checks that `name` is a plain, portable file name for a key.
pub fn check_key_name(name: &str) -> Result<(), KeyFileError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_KEY_NAME_LEN
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(KeyFileError::BadName(name.to_owned()))
    }
}

/// The path of key `name` in `dir`.
pub fn key_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.pem"))
}

/// Saves `key` as `<dir>/<name>.pem` with mode 0600; refuses an existing name.
pub fn save_new_key(dir: &Path, name: &str, key: &KeyPair) -> Result<PathBuf, KeyFileError> {
    check_key_name(name)?;
    let path = key_path(dir, name);
    let pem = key.to_pkcs8_pem().map_err(|source| KeyFileError::Key {
        path: path.clone(),
        source,
    })?;
    match fsutil::create_new_atomic(&path, pem.as_bytes(), 0o600) {
        Ok(()) => Ok(path),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            Err(KeyFileError::Exists(name.to_owned()))
        }
        Err(source) => Err(KeyFileError::Io { path, source }),
    }
}

/// Loads a key file.
pub fn load_key(path: &Path) -> Result<KeyPair, KeyFileError> {
    let io_err = |source| KeyFileError::Io {
        path: path.to_owned(),
        source,
    };
    let bytes = fsutil::read_capped(path, MAX_KEY_FILE_BYTES).map_err(io_err)?;
    let text = String::from_utf8(bytes).map_err(|_| KeyFileError::Key {
        path: path.to_owned(),
        source: KeyError::Pem("not UTF-8 text".into()),
    })?;
    KeyPair::from_pkcs8_pem(&text).map_err(|source| KeyFileError::Key {
        path: path.to_owned(),
        source,
    })
}

/// Names of the `*.pem` files in `dir` with valid key names, sorted.
pub fn list_key_names(dir: &Path) -> Result<Vec<String>, KeyFileError> {
    let io_err = |source| KeyFileError::Io {
        path: dir.to_owned(),
        source,
    };
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io_err)? {
        let entry = entry.map_err(io_err)?;
        let file_name = entry.file_name();
        let Some(name) = file_name.to_str().and_then(|n| n.strip_suffix(".pem")) else {
            continue;
        };
        if check_key_name(name).is_ok() && entry.file_type().map_err(io_err)?.is_file() {
            names.push(name.to_owned());
        }
    }
    names.sort();
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::tests::test_key;

    #[test]
    fn names_must_be_plain() {
        for good in ["robs-address", "mining_rewards", "a", "a.b", "A1"] {
            assert!(check_key_name(good).is_ok(), "{good}");
        }
        for bad in ["", ".hidden", "a/b", "../x", "a b", "é", &"x".repeat(65)] {
            assert!(
                matches!(check_key_name(bad), Err(KeyFileError::BadName(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn save_load_list_and_never_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let path = save_new_key(dir.path(), "alice", test_key(0)).unwrap();
        assert_eq!(load_key(&path).unwrap().address(), test_key(0).address());
        assert!(matches!(
            save_new_key(dir.path(), "alice", test_key(1)),
            Err(KeyFileError::Exists(_))
        ));
        assert_eq!(load_key(&path).unwrap().address(), test_key(0).address());
        std::fs::write(dir.path().join("notes.txt"), "x").unwrap();
        std::fs::write(dir.path().join("broken.pem"), "x").unwrap();
        assert_eq!(list_key_names(dir.path()).unwrap(), ["alice", "broken"]);
        assert!(matches!(
            load_key(&key_path(dir.path(), "broken")),
            Err(KeyFileError::Key { .. })
        ));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

        /// Whatever a key file holds, loading it is a clear error or a key, never a panic.
        #[test]
        fn any_key_file_loads_or_is_refused(
            body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600),
            armoured: bool,
        ) {
            let dir = tempfile::tempdir().unwrap();
            let path = key_path(dir.path(), "k");
            let mut bytes = Vec::new();
            if armoured {
                bytes.extend_from_slice(b"-----BEGIN PRIVATE KEY-----\n");
            }
            bytes.extend_from_slice(&body);
            if armoured {
                bytes.extend_from_slice(b"\n-----END PRIVATE KEY-----\n");
            }
            std::fs::write(&path, &bytes).unwrap();
            let _ = load_key(&path);
        }
    }
}
