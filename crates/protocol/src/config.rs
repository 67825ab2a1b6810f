//! Configuration: built-in defaults, then `mvbc.toml` (in the data directory, or `--config`),
//! then `-s KEY=VALUE` overrides. Every key is checked by name; an unknown key or a bad value is
//! an error that names the key.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::amount::Amount;
use crate::block::MAX_BLOCK_TXS;
use crate::fsutil;
use crate::keys::{MAX_KEY_BITS, MIN_KEY_BITS};
use crate::rules::ConsensusParams;

/// The config file looked for in the data directory.
pub const CONFIG_FILE_NAME: &str = "mvbc.toml";
/// Cap on a config file's size.
pub const MAX_CONFIG_BYTES: u64 = 64 * 1024;
/// Highest difficulty accepted: beyond 64 bits a 64-bit nonce space runs out.
pub const MAX_DIFFICULTY: u32 = 64;

/// The arguments every mvbc program takes to find its data and settings.
#[cfg(feature = "clap")]
#[derive(clap::Args, Debug, Clone)]
pub struct DataDirArgs {
    /// Directory holding keys (*.pem), the chain store and mvbc.toml.
    #[arg(long, default_value = ".", global = true)]
    pub data_dir: PathBuf,
    /// Config file to read instead of `<data-dir>/mvbc.toml`.
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    /// Override one config key, e.g. -s difficulty=16 (repeatable).
    #[arg(short = 's', long = "set", value_name = "KEY=VALUE", global = true)]
    pub settings: Vec<String>,
    /// A node to talk to over TCP, wherever it is (its block server's host:port), besides any
    /// heard by broadcast; adds to the `peers` config key (repeatable).
    #[arg(long = "peer", value_name = "HOST:PORT", global = true, value_parser = check_peer)]
    pub peers: Vec<String>,
}

#[cfg(feature = "clap")]
impl DataDirArgs {
    /// Loads the configuration these arguments name.
    pub fn load_config(&self) -> Result<Config, ConfigError> {
        let mut config = Config::load(&self.data_dir, self.config.as_deref(), &self.settings)?;
        for peer in &self.peers {
            if !config.peers.contains(peer) {
                config.peers.push(peer.clone());
            }
        }
        if config.peers.len() > MAX_NAMED_PEERS {
            return Err(ConfigError::BadValue {
                key: "peers".into(),
                reason: format!("{} peers; at most {MAX_NAMED_PEERS}", config.peers.len()),
            });
        }
        Ok(config)
    }
}

/// Every setting of a node or wallet.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// Leading zero bits every block hash must have.
    pub difficulty: u32,
    /// Transactions per block, the reward included.
    pub block_size: usize,
    /// Coins paid to each block's miner.
    pub block_reward: Amount,
    /// RSA key size for new addresses.
    pub key_size: usize,
    /// Time between a miner's status broadcasts (`status_broadcast_interval_seconds`).
    pub status_broadcast_interval: Duration,
    /// Time between a wallet's re-broadcasts of pending payments
    /// (`transaction_broadcast_interval_seconds`).
    pub transaction_broadcast_interval: Duration,
    /// UDP port of status broadcasts.
    pub status_broadcast_port: u16,
    /// TCP port of a miner's block server (0: any free port, announced in status broadcasts).
    pub block_server_port: u16,
    /// UDP port of transaction broadcasts.
    pub transaction_port: u16,
    /// Where broadcasts are sent (`None`: nowhere; the node talks to named and gossiped peers
    /// only).
    pub broadcast_address: Option<Ipv4Addr>,
    /// Nodes to keep links to, as `host:port` (the port of their block server).
    pub peers: Vec<String>,
    /// Where a miner serves its JSON API and explorer page (`None`: not at all).
    pub api_listen: Option<SocketAddr>,
    /// The one web origin whose pages may read the API (`Access-Control-Allow-Origin`);
    /// `None`: only pages the node serves itself.
    pub api_allow_origin: Option<String>,
    /// Where a miner's pool port listens for workers that only hash (`None`: nowhere).
    pub pool_listen: Option<SocketAddr>,
    /// The token workers must present on the pool port (`None`: any worker may mine).
    pub pool_token: Option<String>,
}

/// Where the API listens unless told otherwise: this host only.
pub const DEFAULT_API_LISTEN: SocketAddr =
    SocketAddr::V4(std::net::SocketAddrV4::new(Ipv4Addr::LOCALHOST, 2609));
/// Cap on the number of named peers.
pub const MAX_NAMED_PEERS: usize = 64;
/// Cap on `api_allow_origin`'s length.
const MAX_ORIGIN_LEN: usize = 200;

impl Default for Config {
    fn default() -> Self {
        Config {
            difficulty: 28,
            block_size: 2,
            block_reward: Amount::from_units(10_000_000),
            key_size: 2048,
            status_broadcast_interval: Duration::from_secs(5),
            transaction_broadcast_interval: Duration::from_secs(10),
            status_broadcast_port: 2606,
            block_server_port: 2607,
            transaction_port: 2608,
            broadcast_address: Some(Ipv4Addr::new(127, 255, 255, 255)),
            peers: Vec::new(),
            api_listen: Some(DEFAULT_API_LISTEN),
            api_allow_origin: None,
            pool_listen: None,
            pool_token: None,
        }
    }
}

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A key mvbc does not know.
    #[error("unknown config key `{0}`")]
    UnknownKey(String),
    /// A value of the wrong type or out of range.
    #[error("bad value for `{key}`: {reason}")]
    BadValue {
        /// The key.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// A `-s` argument without `=`.
    #[error("bad setting {0:?}: expected KEY=VALUE")]
    BadSetting(String),
    /// The file could not be read.
    #[error("cannot read config {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The file is not TOML.
    #[error("config {path} is not valid TOML: {message}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
}

/// Every key, in the order documented in `mvbc.toml`.
pub const KEYS: [&str; 15] = [
    "difficulty",
    "block_size",
    "block_reward",
    "key_size",
    "status_broadcast_interval_seconds",
    "transaction_broadcast_interval_seconds",
    "status_broadcast_port",
    "block_server_port",
    "transaction_port",
    "broadcast_address",
    "peers",
    "api_listen",
    "api_allow_origin",
    "pool_listen",
    "pool_token",
];

/// Where to listen: `ADDRESS:PORT`, or `""` for nowhere (`none` says what that means).
fn listen_address(s: &str, example: &str, none: &str) -> Result<Option<SocketAddr>, String> {
    if s.is_empty() {
        return Ok(None);
    }
    s.parse()
        .map(Some)
        .map_err(|_| format!("{s:?} is not ADDRESS:PORT (such as {example}), nor \"\" for {none}"))
}

/// The TOML parser's message with the line and column it points at, and a hint for the
/// mistake most often made: a text value, such as an address, left unquoted.
fn located(text: &str, e: &toml::de::Error) -> String {
    let Some(span) = e.span() else {
        return e.message().to_owned();
    };
    let before = &text[..span.start.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.chars().rev().take_while(|&c| c != '\n').count() + 1;
    let source = text.lines().nth(line - 1).unwrap_or_default();
    let unquoted = source.split_once('=').is_some_and(|(_, value)| {
        let value = value.trim();
        value.starts_with(|c: char| c.is_ascii_alphanumeric())
            && value.parse::<f64>().is_err()
            && value != "true"
            && value != "false"
    });
    let hint = if unquoted {
        "; a text value such as an address goes in double quotes (key = \"192.168.1.255\")"
    } else {
        ""
    };
    format!("line {line}, column {column}: {}{hint}", e.message())
}

impl Config {
    /// Loads the configuration: defaults, then the file (`config_file`, which must exist, or
    /// else `mvbc.toml` in `data_dir` if present), then each `KEY=VALUE` of `settings`.
    pub fn load(
        data_dir: &Path,
        config_file: Option<&Path>,
        settings: &[String],
    ) -> Result<Config, ConfigError> {
        let mut config = Config::default();
        let default_file = data_dir.join(CONFIG_FILE_NAME);
        let file = match config_file {
            Some(f) => Some(f.to_owned()),
            None => default_file.exists().then_some(default_file),
        };
        if let Some(path) = file {
            let bytes =
                fsutil::read_capped(&path, MAX_CONFIG_BYTES).map_err(|source| ConfigError::Io {
                    path: path.clone(),
                    source,
                })?;
            let text = String::from_utf8(bytes).map_err(|_| ConfigError::Syntax {
                path: path.clone(),
                message: "not UTF-8".into(),
            })?;
            config.apply_toml(&text).map_err(|e| match e {
                ConfigError::Syntax { message, .. } => ConfigError::Syntax { path, message },
                other => other,
            })?;
        }
        for setting in settings {
            config.apply_setting(setting)?;
        }
        Ok(config)
    }

    /// Applies every key of a TOML document.
    pub fn apply_toml(&mut self, text: &str) -> Result<(), ConfigError> {
        let table: toml::Table =
            text.parse()
                .map_err(|e: toml::de::Error| ConfigError::Syntax {
                    path: PathBuf::new(),
                    message: located(text, &e),
                })?;
        for (key, value) in &table {
            self.set(key, value)?;
        }
        Ok(())
    }

    /// Applies one `KEY=VALUE`. The value is read as TOML (`24`, `"x"`, `0.5`), or as a plain
    /// string when it is not TOML (`127.255.255.255`).
    pub fn apply_setting(&mut self, setting: &str) -> Result<(), ConfigError> {
        let Some((key, raw)) = setting.split_once('=') else {
            return Err(ConfigError::BadSetting(setting.to_owned()));
        };
        let (key, raw) = (key.trim(), raw.trim());
        if key == "block_reward" {
            // Amounts never pass through a float: keep the decimal text as typed.
            let text = raw.trim_matches('"');
            return self.set(key, &toml::Value::String(text.to_owned()));
        }
        let value = format!("v = {raw}")
            .parse::<toml::Table>()
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or_else(|| toml::Value::String(raw.to_owned()));
        self.set(key, &value)
    }

    /// Sets one key from a TOML value.
    pub fn set(&mut self, key: &str, value: &toml::Value) -> Result<(), ConfigError> {
        let bad = |reason: String| ConfigError::BadValue {
            key: key.to_owned(),
            reason,
        };
        let int = |min: i64, max: i64| -> Result<i64, ConfigError> {
            match value {
                toml::Value::Integer(i) if (min..=max).contains(i) => Ok(*i),
                toml::Value::Integer(i) => Err(bad(format!("{i} is outside {min}..={max}"))),
                other => Err(bad(format!(
                    "expected an integer, got {}",
                    other.type_str()
                ))),
            }
        };
        let seconds = || -> Result<f64, ConfigError> {
            let s = match value {
                toml::Value::Integer(i) => *i as f64,
                toml::Value::Float(f) => *f,
                other => return Err(bad(format!("expected seconds, got {}", other.type_str()))),
            };
            if s.is_finite() && (0.01..=86_400.0).contains(&s) {
                Ok(s)
            } else {
                Err(bad(format!("{s} is outside 0.01..=86400 seconds")))
            }
        };
        // A string value, trimmed; `expected` says what it should hold.
        let text = |expected: &str| -> Result<&str, ConfigError> {
            match value {
                toml::Value::String(s) => Ok(s.trim()),
                other => Err(bad(format!(
                    "expected {expected}, got {}",
                    other.type_str()
                ))),
            }
        };
        match key {
            "difficulty" => self.difficulty = int(1, MAX_DIFFICULTY.into())? as u32,
            "block_size" => self.block_size = int(1, MAX_BLOCK_TXS as i64)? as usize,
            "block_reward" => {
                let amount = match value {
                    toml::Value::Integer(i) if *i >= 0 => Amount::from_coins(*i as u64)
                        .ok_or_else(|| bad(format!("{i} coins is too large")))?,
                    toml::Value::String(s) => s.parse().map_err(|e| bad(format!("{e}")))?,
                    other => {
                        return Err(bad(format!(
                            "expected coins as an integer or a decimal string such as \"2.5\", got {other}"
                        )));
                    }
                };
                if amount.is_zero() {
                    return Err(bad("the reward must be positive".into()));
                }
                self.block_reward = amount;
            }
            "key_size" => self.key_size = int(MIN_KEY_BITS as i64, MAX_KEY_BITS as i64)? as usize,
            "status_broadcast_interval_seconds" => {
                self.status_broadcast_interval = Duration::from_secs_f64(seconds()?)
            }
            "transaction_broadcast_interval_seconds" => {
                self.transaction_broadcast_interval = Duration::from_secs_f64(seconds()?)
            }
            "status_broadcast_port" => self.status_broadcast_port = int(1, 65535)? as u16,
            "block_server_port" => self.block_server_port = int(0, 65535)? as u16,
            "transaction_port" => self.transaction_port = int(1, 65535)? as u16,
            "broadcast_address" => {
                self.broadcast_address = match text("an IPv4 address")? {
                    "" => None,
                    s => Some(s.parse().map_err(|_| {
                        bad(format!(
                            "{s:?} is not an IPv4 address (\"\" turns broadcasting off)"
                        ))
                    })?),
                };
            }
            "peers" => {
                let list = match value {
                    toml::Value::Array(items) => items.clone(),
                    // `-s peers=host:port` names one.
                    toml::Value::String(s) if s.trim().is_empty() => Vec::new(),
                    toml::Value::String(_) => vec![value.clone()],
                    other => {
                        return Err(bad(format!(
                            "expected a list such as [\"10.0.0.5:2607\"], got {}",
                            other.type_str()
                        )));
                    }
                };
                if list.len() > MAX_NAMED_PEERS {
                    return Err(bad(format!(
                        "{} peers; at most {MAX_NAMED_PEERS}",
                        list.len()
                    )));
                }
                let mut peers = Vec::with_capacity(list.len());
                for item in &list {
                    let toml::Value::String(s) = item else {
                        return Err(bad(format!(
                            "expected \"host:port\" strings, got {}",
                            item.type_str()
                        )));
                    };
                    peers.push(check_peer(s).map_err(bad)?);
                }
                self.peers = peers;
            }
            "api_listen" => {
                let s = text("\"ADDRESS:PORT\" or \"\"")?;
                self.api_listen = listen_address(s, "127.0.0.1:2609", "no API").map_err(bad)?;
            }
            "api_allow_origin" => {
                self.api_allow_origin = match text("an origin such as \"http://localhost:8080\"")? {
                    "" => None,
                    s if is_origin(s) => Some(s.to_owned()),
                    s => {
                        return Err(bad(format!(
                            "{s:?} is not an origin: http:// or https://, a host and an optional port, \
                             nothing else (at most {MAX_ORIGIN_LEN} characters)"
                        )));
                    }
                };
            }
            "pool_listen" => {
                let s = text("\"ADDRESS:PORT\" or \"\"")?;
                self.pool_listen =
                    listen_address(s, "127.0.0.1:2610", "no pool port").map_err(bad)?;
            }
            "pool_token" => {
                self.pool_token = match text("a token of printable ASCII")? {
                    "" => None,
                    s if s.len() <= crate::stratum::MAX_TOKEN_LEN
                        && s.bytes().all(|b| b.is_ascii_graphic()) =>
                    {
                        Some(s.to_owned())
                    }
                    _ => {
                        return Err(bad(format!(
                            "a token is 1 to {} printable ASCII characters, no spaces",
                            crate::stratum::MAX_TOKEN_LEN
                        )));
                    }
                };
            }
            _ => return Err(ConfigError::UnknownKey(key.to_owned())),
        }
        Ok(())
    }

    /// The parameters every node of the network must share.
    pub fn consensus(&self) -> ConsensusParams {
        ConsensusParams {
            difficulty: self.difficulty,
            block_size: self.block_size,
            block_reward: self.block_reward,
        }
    }
}

/// A `host:port` as `peers` and `--peer` take it: a host name or address and a port, checked
/// for form only (names are resolved when dialled).
pub fn check_peer(s: &str) -> Result<String, String> {
    let s = s.trim();
    let bad = || {
        format!(
            "{:?} is not host:port (such as 10.0.0.5:2607, node.example:2607 or [fd00::5]:2607)",
            s.chars().take(80).collect::<String>()
        )
    };
    let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let host_ok = !host.is_empty()
        && host.len() <= 253
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '_'));
    match port.parse::<u16>() {
        Ok(p) if p > 0 && host_ok => Ok(s.to_owned()),
        _ => Err(bad()),
    }
}

/// Resolves a named peer (`host:port`) to an address, IPv4 first.
pub fn resolve_peer(peer: &str) -> std::io::Result<SocketAddr> {
    use std::net::ToSocketAddrs;
    let addrs: Vec<SocketAddr> = peer.to_socket_addrs()?.collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .copied()
        .ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("{peer} resolves to no address"),
            )
        })
}

/// An origin as browsers send it: scheme, host and optional port, no path. Anything else could
/// not match a browser's `Origin` and, echoed into a header, could break the response.
fn is_origin(s: &str) -> bool {
    let Some(rest) = s
        .strip_prefix("http://")
        .or_else(|| s.strip_prefix("https://"))
    else {
        return false;
    };
    s.len() <= MAX_ORIGIN_LEN
        && !rest.is_empty()
        && rest
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'))
}

/// A number of seconds from a command line, within `range` (both ends included), or a message
/// naming the range.
pub fn parse_seconds(s: &str, range: std::ops::RangeInclusive<f64>) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if range.contains(&v) => Ok(v),
        _ => Err(format!(
            "`{s}` is not a number of seconds from {} to {}",
            range.start(),
            range.end()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_mvbc_toml_is_the_defaults() {
        let text = include_str!("../../../mvbc.toml");
        let mut c = Config::default();
        c.apply_toml(text).unwrap();
        assert_eq!(c, Config::default());
        for key in KEYS {
            assert!(
                text.contains(&format!("\n{key} = ")),
                "mvbc.toml documents {key}"
            );
        }
    }

    #[test]
    fn the_pool_port_is_off_unless_named_and_its_token_is_checked() {
        let mut c = Config::default();
        assert_eq!((c.pool_listen, c.pool_token.as_deref()), (None, None));
        c.apply_setting("pool_listen=127.0.0.1:2610").unwrap();
        c.apply_setting("pool_token=s3cret-token").unwrap();
        assert_eq!(c.pool_listen, Some("127.0.0.1:2610".parse().unwrap()));
        assert_eq!(c.pool_token.as_deref(), Some("s3cret-token"));
        let msg = |r: Result<(), ConfigError>| r.unwrap_err().to_string();
        assert!(msg(c.apply_setting("pool_listen=somewhere")).contains("`pool_listen`"));
        assert!(msg(c.apply_setting("pool_token=two words")).contains("printable"));
        let long = format!("pool_token={}", "x".repeat(129));
        assert!(msg(c.apply_setting(&long)).contains("`pool_token`"));
        c.apply_setting("pool_listen=").unwrap();
        c.apply_setting("pool_token=").unwrap();
        assert_eq!((c.pool_listen, c.pool_token), (None, None));
    }

    #[test]
    fn precedence_defaults_file_settings() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("mvbc.toml"),
            "difficulty = 10\nblock_size = 5\n",
        )
        .unwrap();
        let c = Config::load(dir.path(), None, &["block_size=7".into()]).unwrap();
        assert_eq!((c.difficulty, c.block_size, c.key_size), (10, 7, 2048));
        let other = dir.path().join("other.toml");
        std::fs::write(&other, "difficulty = 12\n").unwrap();
        let c = Config::load(dir.path(), Some(&other), &[]).unwrap();
        assert_eq!((c.difficulty, c.block_size), (12, 2));
        assert!(matches!(
            Config::load(dir.path(), Some(&dir.path().join("missing.toml")), &[]),
            Err(ConfigError::Io { .. })
        ));
    }

    #[test]
    fn settings_parse_each_type() {
        let mut c = Config::default();
        c.apply_setting("broadcast_address=127.0.0.1").unwrap();
        c.apply_setting("block_reward=2.5").unwrap();
        c.apply_setting("status_broadcast_interval_seconds=0.5")
            .unwrap();
        c.apply_setting("block_server_port=0").unwrap();
        c.apply_setting("api_allow_origin=http://localhost:8080")
            .unwrap();
        assert_eq!(c.api_listen, Some(DEFAULT_API_LISTEN));
        c.apply_setting("api_listen=0.0.0.0:0").unwrap();
        assert_eq!(c.api_listen, Some("0.0.0.0:0".parse().unwrap()));
        c.apply_setting("api_listen=").unwrap();
        assert_eq!(c.api_listen, None);
        assert_eq!(c.api_allow_origin.as_deref(), Some("http://localhost:8080"));
        assert_eq!(c.broadcast_address, Some(Ipv4Addr::LOCALHOST));
        c.apply_setting("broadcast_address=").unwrap();
        assert_eq!(c.broadcast_address, None);
        c.apply_toml("peers = [\"10.0.0.5:2607\", \"node.example:2607\", \"[fd00::5]:1\"]")
            .unwrap();
        assert_eq!(c.peers.len(), 3);
        c.apply_setting("peers=127.0.0.1:2607").unwrap();
        assert_eq!(c.peers, ["127.0.0.1:2607"]);
        c.apply_setting("peers=").unwrap();
        assert!(c.peers.is_empty());
        assert_eq!(c.block_reward, Amount::from_units(2_500_000));
        assert_eq!(c.status_broadcast_interval, Duration::from_millis(500));
        assert_eq!(c.block_server_port, 0);
    }

    #[test]
    fn seconds_are_bounded_and_the_message_names_the_range() {
        assert_eq!(parse_seconds("2.5", 0.5..=3600.0), Ok(2.5));
        assert_eq!(parse_seconds("0.5", 0.5..=3600.0), Ok(0.5));
        for bad in ["0.4", "3601", "NaN", "inf", "-1", "ten", ""] {
            let err = parse_seconds(bad, 0.5..=3600.0).unwrap_err();
            assert_eq!(
                err,
                format!("`{bad}` is not a number of seconds from 0.5 to 3600")
            );
        }
    }

    /// Issue 22: `invalid float, expected nothing` said neither where nor why.
    #[test]
    fn a_toml_error_names_its_line_and_an_unquoted_address_gets_a_hint() {
        let mut c = Config::default();
        let text = "difficulty = 20\nbroadcast_address = 192.168.1.255\n";
        let err = c.apply_toml(text).unwrap_err().to_string();
        assert!(err.contains("line 2, column"), "{err}");
        assert!(err.contains("goes in double quotes"), "{err}");
        let err = c.apply_toml("difficulty = = 3").unwrap_err().to_string();
        assert!(err.contains("line 1, column"), "{err}");
        assert!(!err.contains("double quotes"), "{err}");
    }

    #[test]
    fn errors_name_the_key() {
        let mut c = Config::default();
        let msg = |r: Result<(), ConfigError>| r.unwrap_err().to_string();
        assert_eq!(
            msg(c.apply_setting("dificulty=3")),
            "unknown config key `dificulty`"
        );
        assert!(msg(c.apply_setting("key_size=512")).starts_with("bad value for `key_size`"));
        assert!(msg(c.apply_setting("difficulty=abc")).starts_with("bad value for `difficulty`"));
        assert!(msg(c.apply_setting("difficulty=65")).starts_with("bad value for `difficulty`"));
        assert!(msg(c.apply_setting("block_reward=0")).starts_with("bad value for `block_reward`"));
        assert!(
            msg(c.apply_setting("block_reward=-1")).starts_with("bad value for `block_reward`")
        );
        assert!(msg(c.apply_setting("transaction_port=0")).contains("`transaction_port`"));
        assert!(msg(c.apply_setting("broadcast_address=nowhere")).contains("`broadcast_address`"));
        assert!(msg(c.apply_toml("block_size = \"many\"")).contains("`block_size`"));
        assert!(msg(c.apply_setting("block_size=0")).starts_with("bad value for `block_size`"));
        assert!(msg(c.apply_toml("colour = 1")).contains("`colour`"));
        assert!(msg(c.apply_setting("api_listen=localhost")).contains("`api_listen`"));
        for peers in [
            "peers = [\"nohost\"]",
            "peers = [\":2607\"]",
            "peers = [\"a:0\"]",
            "peers = [\"a:65536\"]",
            "peers = [\"a b:1\"]",
            "peers = [1]",
            "peers = 5",
        ] {
            assert!(msg(c.apply_toml(peers)).contains("`peers`"), "{peers}");
        }
        let many = (0..65)
            .map(|i| format!("\"h{i}:1\""))
            .collect::<Vec<_>>()
            .join(",");
        assert!(msg(c.apply_toml(&format!("peers = [{many}]"))).contains("at most 64"));
        assert!(msg(c.apply_toml("api_listen = 2609")).contains("`api_listen`"));
        for origin in [
            "*",
            "null",
            "http://a/b",
            "http://a\r\nX: y",
            "ftp://a",
            "http://",
        ] {
            assert!(
                msg(c.apply_toml(&format!("api_allow_origin = {origin:?}")))
                    .contains("`api_allow_origin`"),
                "{origin:?}"
            );
        }
        assert!(matches!(
            c.apply_toml("= ="),
            Err(ConfigError::Syntax { .. })
        ));
        assert!(matches!(
            c.apply_setting("novalue"),
            Err(ConfigError::BadSetting(_))
        ));
        assert_eq!(c, Config::default(), "refused settings change nothing");
        // As in the original: blocks of the reward alone.
        c.apply_setting("block_size=1").unwrap();
        assert_eq!(c.block_size, 1);
    }

    proptest::proptest! {
        /// Any config text and any `-s` argument is applied or refused with a message, never
        /// a panic.
        #[test]
        fn arbitrary_config_text_never_panics(text in "\\PC{0,200}", setting in "\\PC{0,60}") {
            let mut c = Config::default();
            let _ = c.apply_toml(&text);
            let _ = c.apply_setting(&setting);
        }

        #[test]
        fn arbitrary_key_value_lines_never_panic(
            key in proptest::sample::select(KEYS.to_vec()),
            value in "[-+0-9a-z.\"\\[\\]{}= ]{0,30}",
        ) {
            let mut c = Config::default();
            let _ = c.apply_toml(&format!("{key} = {value}"));
            let _ = c.apply_setting(&format!("{key}={value}"));
        }
    }
}
