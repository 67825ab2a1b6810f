//! Key files in a data directory: `<name>.pem`, PKCS#8 PEM, mode 0600, never overwritten.
//!
//! A key may be kept encrypted under a passphrase (`ENCRYPTED PRIVATE KEY`: PBES2, scrypt and
//! AES-256-CBC). Its public half is then written beside it as `<name>.pub` (SubjectPublicKeyInfo
//! PEM), so that its address can be listed without the passphrase; the private key is only
//! opened to sign.

use std::io;
use std::path::{Path, PathBuf};

use crate::fsutil;
use crate::keys::{Address, KeyError, KeyPair};

/// The PEM label of an encrypted PKCS#8 key.
const ENCRYPTED_LABEL: &str = "-----BEGIN ENCRYPTED PRIVATE KEY-----";

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
    /// The key is encrypted: it takes a passphrase to open.
    #[error("{0}: the key is encrypted; it takes its passphrase")]
    Encrypted(PathBuf),
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

/// Where an encrypted key's public half is kept: `<dir>/<name>.pub`.
pub fn public_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.pub"))
}

/// Saves `key` as `<dir>/<name>.pem` with mode 0600; refuses an existing name. With a
/// `passphrase` the key is encrypted under it and its public half is written first as
/// `<name>.pub`.
pub fn save_new_key(
    dir: &Path,
    name: &str,
    key: &KeyPair,
    passphrase: Option<&str>,
) -> Result<PathBuf, KeyFileError> {
    check_key_name(name)?;
    let path = key_path(dir, name);
    let as_key_error = |source| KeyFileError::Key {
        path: path.clone(),
        source,
    };
    let pem = match passphrase {
        None => key.to_pkcs8_pem().map_err(as_key_error)?,
        Some(passphrase) => {
            let public = public_path(dir, name);
            let text = key.public_key_pem().map_err(as_key_error)?;
            // Replaced if left by an earlier try that failed before its key was saved: a key
            // file is never overwritten, and this names no key on its own.
            fsutil::write_atomic(&public, text.as_bytes()).map_err(|source| KeyFileError::Io {
                path: public.clone(),
                source,
            })?;
            key.to_pkcs8_encrypted_pem(passphrase)
                .map_err(as_key_error)?
        }
    };
    match fsutil::create_new_atomic(&path, pem.as_bytes(), 0o600) {
        Ok(()) => Ok(path),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            Err(KeyFileError::Exists(name.to_owned()))
        }
        Err(source) => Err(KeyFileError::Io { path, source }),
    }
}

/// Loads a key file that is not encrypted (an encrypted one is [`KeyFileError::Encrypted`]).
pub fn load_key(path: &Path) -> Result<KeyPair, KeyFileError> {
    let text = read_text(path)?;
    if text.contains(ENCRYPTED_LABEL) {
        return Err(KeyFileError::Encrypted(path.to_owned()));
    }
    KeyPair::from_pkcs8_pem(&text).map_err(|source| KeyFileError::Key {
        path: path.to_owned(),
        source,
    })
}

/// A key file's text, bounded in size.
fn read_text(path: &Path) -> Result<String, KeyFileError> {
    let bytes =
        fsutil::read_capped(path, MAX_KEY_FILE_BYTES).map_err(|source| KeyFileError::Io {
            path: path.to_owned(),
            source,
        })?;
    String::from_utf8(bytes).map_err(|_| KeyFileError::Key {
        path: path.to_owned(),
        source: KeyError::Pem("not UTF-8 text".into()),
    })
}

/// A key as a data directory holds it: open, or encrypted with only its address known.
pub enum Stored {
    /// A key kept in the clear.
    Open(Box<KeyPair>),
    /// An encrypted key: its address (from `<name>.pub`), and the file to open with a passphrase.
    Encrypted {
        /// Its address.
        address: Address,
        /// Its key file.
        path: PathBuf,
    },
}

impl Stored {
    /// Its address.
    pub fn address(&self) -> Address {
        match self {
            Stored::Open(key) => key.address(),
            Stored::Encrypted { address, .. } => *address,
        }
    }
}

/// Reads key `name` of `dir`: an encrypted one by its public half, without a passphrase.
pub fn read_key(dir: &Path, name: &str) -> Result<Stored, KeyFileError> {
    let path = key_path(dir, name);
    match load_key(&path) {
        Ok(key) => Ok(Stored::Open(Box::new(key))),
        Err(KeyFileError::Encrypted(path)) => {
            let public = public_path(dir, name);
            let text = read_text(&public)?;
            let der = pkcs8::Document::from_pem(&text)
                .map(|(_, doc)| doc)
                .map_err(|e| KeyFileError::Key {
                    path: public.clone(),
                    source: KeyError::Pem(e.to_string()),
                })?;
            Ok(Stored::Encrypted {
                address: Address::of_public_key_der(der.as_bytes()),
                path,
            })
        }
        Err(e) => Err(e),
    }
}

/// Opens encrypted key file `path` with `passphrase`; its address must be `address` (what its
/// `.pub` said), so a swapped file cannot sign for another address.
pub fn unlock(path: &Path, passphrase: &str, address: Address) -> Result<KeyPair, KeyFileError> {
    let text = read_text(path)?;
    let key = KeyPair::from_pkcs8_encrypted_pem(&text, passphrase).map_err(|source| {
        KeyFileError::Key {
            path: path.to_owned(),
            source,
        }
    })?;
    if key.address() != address {
        return Err(KeyFileError::Key {
            path: path.to_owned(),
            source: KeyError::Pem(format!(
                "its key is not the one of address {address} that its .pub names"
            )),
        });
    }
    Ok(key)
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
        let path = save_new_key(dir.path(), "alice", test_key(0), None).unwrap();
        assert_eq!(load_key(&path).unwrap().address(), test_key(0).address());
        assert!(matches!(
            save_new_key(dir.path(), "alice", test_key(1), None),
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

    /// Issue 22: a key at rest under a passphrase signs only with that passphrase; its address
    /// is known without it.
    #[test]
    fn an_encrypted_key_opens_only_with_its_passphrase_and_its_address_is_known_without() {
        let dir = tempfile::tempdir().unwrap();
        let key = test_key(2);
        let path = save_new_key(dir.path(), "safe", key, Some("correct horse")).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with(ENCRYPTED_LABEL), "{text}");
        assert!(matches!(load_key(&path), Err(KeyFileError::Encrypted(_))));
        let stored = read_key(dir.path(), "safe").unwrap();
        assert_eq!(stored.address(), key.address());
        assert!(matches!(stored, Stored::Encrypted { .. }));
        assert!(matches!(
            unlock(&path, "wrong horse", key.address()),
            Err(KeyFileError::Key {
                source: KeyError::Passphrase,
                ..
            })
        ));
        let opened = unlock(&path, "correct horse", key.address()).unwrap();
        assert_eq!(opened.address(), key.address());
        // A .pub that names another key: the key it opens does not sign for that address.
        assert!(unlock(&path, "correct horse", test_key(0).address()).is_err());
        assert_eq!(list_key_names(dir.path()).unwrap(), ["safe"]);
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
