//! The pool port's messages: how a worker that only hashes talks to a node (ADR 0016).
//!
//! Stratum-shaped, as cgminer, xmrig and NiceHash's EthereumStratum/1.0.0 speak it: one JSON
//! object per line over TCP, requests with an `id` and a `method`, replies with `result` and
//! `error`, and notifications (`id` null) from the node. Our header is 96 bytes with the 8-byte
//! nonce last, so, as in EthereumStratum, the node sends the whole header and gives each
//! connection the nonce's first [`EXTRANONCE_BYTES`]; the worker searches the other
//! [`WORKER_NONCE_BYTES`] and submits them. Difficulties are leading zero bits, as everywhere in
//! mvbc. docs/PROGRAMS.md documents each message.
//!
//! Every line is untrusted: at most [`MAX_LINE_BYTES`], every string capped, every number
//! range-checked; what does not parse is an error naming what was wrong, never a panic.

use serde_json::{Value, json};

use crate::header::{BlockHeader, HEADER_LEN};
use crate::keys::Address;

/// Cap on one line, its newline included; a longer one ends the connection.
pub const MAX_LINE_BYTES: usize = 4096;
/// The nonce's leading bytes the node gives each connection: no two connections search the
/// same nonces of the same header.
pub const EXTRANONCE_BYTES: usize = 2;
/// The nonce's bytes a worker searches and submits.
pub const WORKER_NONCE_BYTES: usize = 8 - EXTRANONCE_BYTES;
/// Nonces a worker may search under one job: 2^48.
pub const WORKER_NONCES: u64 = 1 << (8 * WORKER_NONCE_BYTES);
/// Cap on a worker's name (after the address and a dot): letters, digits, `-` and `_`.
pub const MAX_WORKER_NAME: usize = 32;
/// The name of a worker that gave none.
pub const DEFAULT_WORKER_NAME: &str = "default";
/// Cap on the pool token a worker presents, and on the one a node is configured with.
pub const MAX_TOKEN_LEN: usize = 128;
/// Cap on the software name a worker subscribes with.
pub const MAX_AGENT_LEN: usize = 64;
/// Cap on a request id given as a string.
pub const MAX_ID_LEN: usize = 64;
/// Cap on a job id's hex digits (a `u64`).
const MAX_JOB_HEX: usize = 16;

/// Stratum's error codes, as pools answer them.
pub mod code {
    /// Anything else (a malformed request, too many shares).
    pub const OTHER: i64 = 20;
    /// The job is unknown or no longer current: a stale share.
    pub const JOB_NOT_FOUND: i64 = 21;
    /// The share was submitted before.
    pub const DUPLICATE: i64 = 22;
    /// The share's hash does not meet the share difficulty.
    pub const LOW_DIFFICULTY: i64 = 23;
    /// The worker did not authorize, or was refused.
    pub const UNAUTHORIZED: i64 = 24;
    /// The worker did not subscribe first.
    pub const NOT_SUBSCRIBED: i64 = 25;
}

/// A worker's request.
#[derive(Clone, Debug, PartialEq)]
pub struct Request {
    /// Echoed in the reply: a number or a short string.
    pub id: Value,
    /// What it asks.
    pub call: Call,
}

/// The methods a node answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Call {
    /// `mining.subscribe [agent]`: asks for an extranonce ([`Subscribed`]).
    Subscribe {
        /// The worker's software, for the node's log.
        agent: String,
    },
    /// `mining.authorize ["ADDRESS.worker", token]`: who the worker is, where its blocks pay.
    Authorize {
        /// Where the rewards of blocks it finds go.
        address: Address,
        /// Its name ([`DEFAULT_WORKER_NAME`] when it gave none).
        worker: String,
        /// The pool token, or "" for none.
        token: String,
    },
    /// `mining.submit ["ADDRESS.worker", job, nonce]`: a share.
    Submit {
        /// The job it was found for.
        job: u64,
        /// The worker's [`WORKER_NONCE_BYTES`] of the nonce.
        nonce: u64,
    },
}

/// Why a line is not a request the node answers.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// Not a JSON object.
    #[error("not a JSON object: {0}")]
    NotJson(String),
    /// The line was longer than [`MAX_LINE_BYTES`]: the connection ends.
    #[error("a line over {MAX_LINE_BYTES} bytes")]
    TooLong,
    /// No `method`, or a method this node does not answer.
    #[error("unknown method {0:?}")]
    UnknownMethod(String),
    /// The id is not a number or a short string.
    #[error("the id must be a number or a string of at most {MAX_ID_LEN} characters")]
    BadId,
    /// The parameters are not what the method takes.
    #[error("bad parameters for {method}: {reason}")]
    BadParams {
        /// The method.
        method: &'static str,
        /// What is wrong.
        reason: String,
    },
}

/// A line that did not parse, with the id to answer it under when it had one.
#[derive(Clone, Debug, PartialEq)]
pub struct Refused {
    /// The request's id, when it could be read.
    pub id: Value,
    /// What was wrong.
    pub error: RequestError,
}

impl Request {
    /// Parses one line (without its newline).
    pub fn parse(line: &[u8]) -> Result<Request, Refused> {
        let refused = |id: &Value, error| Refused {
            id: id.clone(),
            error,
        };
        let object = match serde_json::from_slice::<Value>(line) {
            Ok(Value::Object(o)) => o,
            Ok(other) => {
                return Err(refused(
                    &Value::Null,
                    RequestError::NotJson(format!("a JSON {}", kind(&other))),
                ));
            }
            Err(e) => return Err(refused(&Value::Null, RequestError::NotJson(e.to_string()))),
        };
        let id = object.get("id").cloned().unwrap_or(Value::Null);
        let id_ok = match &id {
            Value::Number(_) => true,
            Value::String(s) => s.len() <= MAX_ID_LEN,
            _ => false,
        };
        if !id_ok {
            return Err(refused(&Value::Null, RequestError::BadId));
        }
        let method = object.get("method").and_then(Value::as_str).unwrap_or("");
        let empty = Vec::new();
        let params = object
            .get("params")
            .and_then(Value::as_array)
            .unwrap_or(&empty);
        let call = match method {
            "mining.subscribe" => parse_subscribe(params),
            "mining.authorize" => parse_authorize(params),
            "mining.submit" => parse_submit(params),
            other => Err(RequestError::UnknownMethod(truncated(other))),
        };
        match call {
            Ok(call) => Ok(Request { id, call }),
            Err(error) => Err(Refused { id, error }),
        }
    }

    /// The request as one line, newline included: what a worker sends. `user` is the
    /// `ADDRESS.worker` a submit names.
    pub fn to_line(&self, user: &str) -> String {
        let (method, params) = match &self.call {
            Call::Subscribe { agent } => ("mining.subscribe", json!([agent])),
            Call::Authorize {
                address,
                worker,
                token,
            } => (
                "mining.authorize",
                json!([format!("{address}.{worker}"), token]),
            ),
            Call::Submit { job, nonce } => (
                "mining.submit",
                json!([user, format!("{job:x}"), nonce_hex(*nonce)]),
            ),
        };
        line(json!({"id": self.id, "method": method, "params": params}))
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// A string from the wire, cut short for a message.
fn truncated(s: &str) -> String {
    s.chars().take(40).collect()
}

fn bad(method: &'static str, reason: impl Into<String>) -> RequestError {
    RequestError::BadParams {
        method,
        reason: reason.into(),
    }
}

fn string_param<'a>(
    params: &'a [Value],
    at: usize,
    method: &'static str,
    what: &str,
    cap: usize,
) -> Result<&'a str, RequestError> {
    match params.get(at) {
        Some(Value::String(s)) if s.len() <= cap => Ok(s),
        Some(Value::String(_)) => Err(bad(method, format!("{what} is over {cap} bytes"))),
        Some(_) => Err(bad(method, format!("{what} must be a string"))),
        None => Err(bad(method, format!("{what} is missing"))),
    }
}

fn parse_subscribe(params: &[Value]) -> Result<Call, RequestError> {
    let agent = match params.first() {
        None | Some(Value::Null) => "",
        Some(_) => string_param(params, 0, "mining.subscribe", "the agent", MAX_AGENT_LEN)?,
    };
    Ok(Call::Subscribe {
        agent: agent.to_owned(),
    })
}

/// `ADDRESS` or `ADDRESS.worker`.
pub fn parse_user(user: &str) -> Result<(Address, String), String> {
    let (address, worker) = match user.split_once('.') {
        Some((address, worker)) => (address, worker),
        None => (user, DEFAULT_WORKER_NAME),
    };
    let address: Address = address
        .parse()
        .map_err(|e| format!("{:?} is not an address: {e}", truncated(address)))?;
    check_worker_name(worker)?;
    Ok((address, worker.to_owned()))
}

/// A worker's name: 1 to [`MAX_WORKER_NAME`] letters, digits, `-` or `_`.
pub fn check_worker_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= MAX_WORKER_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "the worker name {:?} is not 1 to {MAX_WORKER_NAME} letters, digits, - or _",
            truncated(name)
        ))
    }
}

fn parse_authorize(params: &[Value]) -> Result<Call, RequestError> {
    const M: &str = "mining.authorize";
    let user = string_param(params, 0, M, "the user (ADDRESS.worker)", 200)?;
    let token = match params.get(1) {
        None | Some(Value::Null) => "",
        Some(_) => string_param(params, 1, M, "the token", MAX_TOKEN_LEN)?,
    };
    let (address, worker) = parse_user(user).map_err(|e| bad(M, e))?;
    Ok(Call::Authorize {
        address,
        worker,
        token: token.to_owned(),
    })
}

fn parse_submit(params: &[Value]) -> Result<Call, RequestError> {
    const M: &str = "mining.submit";
    // The user (params[0]) is the connection's: the node goes by what it authorized.
    let job = string_param(params, 1, M, "the job id", MAX_JOB_HEX)?;
    let job = u64::from_str_radix(job, 16)
        .ok()
        .filter(|_| !job.starts_with('+'))
        .ok_or_else(|| bad(M, "the job id is not hex"))?;
    let nonce = string_param(params, 2, M, "the nonce", 2 * WORKER_NONCE_BYTES)?;
    if nonce.len() != 2 * WORKER_NONCE_BYTES {
        return Err(bad(
            M,
            format!("the nonce must be {} hex digits", 2 * WORKER_NONCE_BYTES),
        ));
    }
    let nonce = u64::from_str_radix(nonce, 16)
        .ok()
        .filter(|_| nonce.bytes().all(|b| b.is_ascii_hexdigit()))
        .ok_or_else(|| bad(M, "the nonce is not hex"))?;
    Ok(Call::Submit { job, nonce })
}

/// A worker's part of a nonce as it is submitted: [`WORKER_NONCE_BYTES`] in hex.
pub fn nonce_hex(nonce: u64) -> String {
    format!("{:0width$x}", nonce, width = 2 * WORKER_NONCE_BYTES)
}

/// The whole nonce of a connection's `extranonce` and a worker's part.
pub fn full_nonce(extranonce: u16, worker_part: u64) -> u64 {
    (u64::from(extranonce) << (8 * WORKER_NONCE_BYTES)) | (worker_part & (WORKER_NONCES - 1))
}

/// The leading zero bits of `header` with the nonce of `extranonce` and a worker's `part`:
/// what a share is judged by.
pub fn share_bits(header: &BlockHeader, extranonce: u16, part: u64) -> u32 {
    BlockHeader {
        nonce: full_nonce(extranonce, part),
        ..*header
    }
    .hash()
    .leading_zero_bits()
}

/// What `mining.subscribe` answers: `[session, extranonce, worker nonce bytes]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Subscribed {
    /// The connection's session id, for the node's log and the worker's.
    pub session: u64,
    /// The nonce's first [`EXTRANONCE_BYTES`], this connection's alone.
    pub extranonce: u16,
}

impl Subscribed {
    /// The reply's `result`.
    pub fn to_value(self) -> Value {
        json!([
            format!("{:016x}", self.session),
            format!("{:04x}", self.extranonce),
            WORKER_NONCE_BYTES
        ])
    }

    /// Reads a reply's `result`.
    pub fn from_value(value: &Value) -> Option<Subscribed> {
        let [session, extranonce, bytes] = value.as_array()?.as_slice() else {
            return None;
        };
        if bytes.as_u64()? != WORKER_NONCE_BYTES as u64 {
            return None;
        }
        let extranonce = extranonce.as_str().filter(|s| s.len() == 4)?;
        Some(Subscribed {
            session: u64::from_str_radix(session.as_str().filter(|s| s.len() <= 16)?, 16).ok()?,
            extranonce: u16::from_str_radix(extranonce, 16).ok()?,
        })
    }
}

/// What a node sends a worker.
#[derive(Clone, Debug, PartialEq)]
pub enum ToWorker {
    /// The answer to request `id`: a result, or an error code and message.
    Reply {
        /// The request's id.
        id: Value,
        /// What it answers.
        result: Result<Value, (i64, String)>,
    },
    /// `mining.set_difficulty [bits]`: shares of the jobs that follow must have this many
    /// leading zero bits.
    SetDifficulty(u32),
    /// `mining.notify [job, header, clean]`: a header to search (its nonce zero), and whether
    /// every earlier job is stale.
    Notify {
        /// The job's id.
        job: u64,
        /// The header; its difficulty is the network's.
        header: BlockHeader,
        /// Earlier jobs are stale: drop them now.
        clean: bool,
    },
    /// `mining.idle [reason]`: no job now (the node waits for payments, or catches up):
    /// stop hashing until the next notify.
    Idle(String),
}

/// Why a line from a node is not one a worker understands.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("not a message from a pool: {0}")]
pub struct NotAMessage(String);

impl ToWorker {
    /// The message as one line, newline included.
    pub fn to_line(&self) -> String {
        let value = match self {
            // The one message sent to every worker at each new tip: written directly, without
            // building a JSON value (hex digits and a boolean need no escaping).
            ToWorker::Notify { job, header, clean } => {
                return format!(
                    "{{\"id\":null,\"method\":\"mining.notify\",\"params\":[\"{job:x}\",\"{}\",{clean}]}}\n",
                    hex::encode(header.to_bytes())
                );
            }
            ToWorker::Reply { id, result } => match result {
                Ok(value) => json!({"id": id, "result": value, "error": null}),
                Err((code, message)) => {
                    json!({"id": id, "result": null, "error": [code, message, null]})
                }
            },
            ToWorker::SetDifficulty(bits) => {
                json!({"id": null, "method": "mining.set_difficulty", "params": [bits]})
            }
            ToWorker::Idle(reason) => {
                json!({"id": null, "method": "mining.idle", "params": [reason]})
            }
        };
        line(value)
    }

    /// Parses one line (without its newline).
    pub fn parse(line: &[u8]) -> Result<ToWorker, NotAMessage> {
        let no = |why: &str| NotAMessage(why.to_owned());
        let Ok(Value::Object(object)) = serde_json::from_slice::<Value>(line) else {
            return Err(no("not a JSON object"));
        };
        let id = object.get("id").cloned().unwrap_or(Value::Null);
        let params = object.get("params").and_then(Value::as_array);
        let param = |i: usize| params.and_then(|p| p.get(i));
        match object.get("method").and_then(Value::as_str) {
            Some("mining.set_difficulty") => {
                let bits = param(0)
                    .and_then(Value::as_u64)
                    .filter(|&b| b <= 256)
                    .ok_or_else(|| no("set_difficulty without a difficulty of 0..=256 bits"))?;
                Ok(ToWorker::SetDifficulty(bits as u32))
            }
            Some("mining.notify") => {
                let job = param(0)
                    .and_then(Value::as_str)
                    .filter(|s| s.len() <= MAX_JOB_HEX)
                    .and_then(|s| u64::from_str_radix(s, 16).ok())
                    .ok_or_else(|| no("notify without a hex job id"))?;
                let header = param(1)
                    .and_then(Value::as_str)
                    .and_then(|s| hex::decode(s).ok())
                    .and_then(|b| <[u8; HEADER_LEN]>::try_from(b).ok())
                    .ok_or_else(|| no("notify without a 96-byte header in hex"))?;
                let clean = param(2)
                    .and_then(Value::as_bool)
                    .ok_or_else(|| no("notify without clean_jobs"))?;
                Ok(ToWorker::Notify {
                    job,
                    header: BlockHeader::from_bytes(&header),
                    clean,
                })
            }
            Some("mining.idle") => Ok(ToWorker::Idle(
                param(0)
                    .and_then(Value::as_str)
                    .map(truncated)
                    .unwrap_or_default(),
            )),
            Some(other) => Err(no(&format!("unknown method {:?}", truncated(other)))),
            None => {
                let result = match object.get("error") {
                    None | Some(Value::Null) => {
                        Ok(object.get("result").cloned().unwrap_or(Value::Null))
                    }
                    Some(error) => {
                        let code = error.get(0).and_then(Value::as_i64).unwrap_or(code::OTHER);
                        let message = error.get(1).and_then(Value::as_str).unwrap_or("");
                        Err((code, truncated(message)))
                    }
                };
                Ok(ToWorker::Reply { id, result })
            }
        }
    }
}

fn line(value: Value) -> String {
    let mut line = value.to_string();
    line.push('\n');
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::KeyPair;

    fn address() -> Address {
        Address::of_public_key_der(b"a worker's key")
    }

    fn parse(line: &str) -> Result<Request, Refused> {
        Request::parse(line.as_bytes())
    }

    #[test]
    fn requests_round_trip_through_lines() {
        let user = format!("{}.rig-1", address());
        for call in [
            Call::Subscribe {
                agent: "mvbc-miner/0.1.0".into(),
            },
            Call::Authorize {
                address: address(),
                worker: "rig-1".into(),
                token: "s3cret".into(),
            },
            Call::Submit {
                job: 0x1f,
                nonce: 0xab_cdef_0123,
            },
        ] {
            let request = Request { id: json!(7), call };
            let line = request.to_line(&user);
            assert!(line.ends_with('\n') && line.len() < MAX_LINE_BYTES);
            assert_eq!(parse(line.trim_end()), Ok(request));
        }
    }

    #[test]
    fn node_messages_round_trip_through_lines() {
        let header = BlockHeader {
            height: 9,
            difficulty: 20,
            ..crate::genesis_block().header
        };
        for message in [
            ToWorker::Reply {
                id: json!("a"),
                result: Ok(json!(true)),
            },
            ToWorker::Reply {
                id: json!(3),
                result: Err((code::JOB_NOT_FOUND, "stale".into())),
            },
            ToWorker::SetDifficulty(24),
            ToWorker::Notify {
                job: 0xffff_ffff_ffff_ffff,
                header,
                clean: true,
            },
            ToWorker::Idle("waiting for payments".into()),
        ] {
            let line = message.to_line();
            assert_eq!(ToWorker::parse(line.trim_end().as_bytes()), Ok(message));
        }
        let s = Subscribed {
            session: 42,
            extranonce: 0xbeef,
        };
        assert_eq!(Subscribed::from_value(&s.to_value()), Some(s));
    }

    #[test]
    fn malformed_requests_are_refused_naming_what_is_wrong() {
        let error = |line: &str| parse(line).unwrap_err().error.to_string();
        assert!(error("garbage").contains("not a JSON object"));
        assert!(error("[1,2]").contains("a JSON array"));
        assert!(error(r#"{"id":1,"method":"mining.extranonce"}"#).contains("unknown method"));
        assert!(error(r#"{"id":[1],"method":"mining.subscribe"}"#).contains("the id"));
        let submit = |params: &str| {
            error(&format!(
                r#"{{"id":1,"method":"mining.submit","params":{params}}}"#
            ))
        };
        assert!(submit(r#"["u","zz","000000000001"]"#).contains("job id is not hex"));
        assert!(submit(r#"["u","1","0001"]"#).contains("12 hex digits"));
        assert!(submit(r#"["u","1","+0000000000a"]"#).contains("not hex"));
        assert!(submit(r#"["u","1"]"#).contains("nonce is missing"));
        let authorize = |user: &str| {
            error(&format!(
                r#"{{"id":1,"method":"mining.authorize","params":["{user}",""]}}"#
            ))
        };
        assert!(authorize("nope.rig").contains("is not an address"));
        assert!(authorize(&format!("{}.bad name", address())).contains("worker name"));
        assert!(authorize(&format!("{}.{}", address(), "x".repeat(33))).contains("worker name"));
        // The id is kept for the answer when it could be read.
        let refused = parse(r#"{"id":5,"method":"mining.submit","params":[]}"#).unwrap_err();
        assert_eq!(refused.id, json!(5));
    }

    #[test]
    fn a_user_without_a_worker_name_is_the_default_worker() {
        let key = KeyPair::generate(1024).unwrap();
        let (address, worker) = parse_user(&key.address().to_string()).unwrap();
        assert_eq!(
            (address, worker.as_str()),
            (key.address(), DEFAULT_WORKER_NAME)
        );
    }

    proptest::proptest! {
        #[test]
        fn any_line_is_parsed_or_refused_and_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600)) {
            let _ = Request::parse(&bytes);
            let _ = ToWorker::parse(&bytes);
        }

        #[test]
        fn json_shaped_lines_round_trip_when_they_parse(
            method in "(mining\\.(subscribe|authorize|submit|notify|set_difficulty|idle)|x)",
            params in proptest::collection::vec("(\"[0-9a-fA-F.+mvbc]{0,20}\"|[0-9]{1,4}|true|null|\\[\\])", 0..4),
            id in "(1|\"a\"|null|\\[1\\]|1.5)",
        ) {
            let line = format!(r#"{{"id":{id},"method":"{method}","params":[{}]}}"#, params.join(","));
            if let Ok(request) = Request::parse(line.as_bytes()) {
                let again = request.to_line("x");
                proptest::prop_assert_eq!(Request::parse(again.trim_end().as_bytes()), Ok(request));
            }
            if let Ok(message) = ToWorker::parse(line.as_bytes()) {
                let again = message.to_line();
                proptest::prop_assert_eq!(ToWorker::parse(again.trim_end().as_bytes()), Ok(message));
            }
        }

        #[test]
        fn submits_round_trip(job: u64, nonce in 0..WORKER_NONCES, id: u32) {
            let request = Request { id: json!(id), call: Call::Submit { job, nonce } };
            let line = request.to_line("anyone");
            proptest::prop_assert_eq!(Request::parse(line.trim_end().as_bytes()), Ok(request));
        }
    }

    #[test]
    fn the_extranonce_leads_the_nonce() {
        assert_eq!(full_nonce(0x0102, 0x0304_0506_0708), 0x0102_0304_0506_0708);
        // A worker's part past its bytes cannot reach into the extranonce.
        assert_eq!(full_nonce(0x0001, u64::MAX), 0x0001_ffff_ffff_ffff);
        assert_eq!(nonce_hex(1), "000000000001");
    }
}
