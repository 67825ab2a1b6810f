//! The miner's read-only JSON API under `/api/v1/`, and the explorer page at `/` that reads it.
//!
//! Chain queries read the chain the node shares with its block server; what only the node loop
//! knows (pending payments, peers, hash rates) it publishes into a [`NodeState`] about once a
//! second. No endpoint changes anything. Every list is bounded: pages of at most
//! [`MAX_LIMIT`] items, and series of at most [`rates::MAX_POINTS`] points.

pub mod http;
pub mod rates;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use mvbc_protocol::chain::read_chain;
use mvbc_protocol::chain::{STALE_WINDOW, StaleCount};
use mvbc_protocol::index::{Index, IndexError};
use mvbc_protocol::store::StoreError;
use mvbc_protocol::{Address, Block, Chain, Hash256, Payment, Transaction};
use serde_json::{Value, json};

use self::http::{Handler, Request, Response};
use self::rates::RateHistory;

/// The explorer: one page, its style and script inside, nothing fetched from elsewhere.
const PAGE: &str = include_str!("page.html");
/// Cap on `limit` in every paged list.
pub const MAX_LIMIT: usize = 100;
/// Items in a page when `limit` is not given.
const DEFAULT_LIMIT: usize = 20;
/// Pending payments the node publishes (the first ones its blocks would take).
pub const MAX_PENDING_LISTED: usize = 1_000;

/// A device the node mines on, as the API names it.
#[derive(Debug, Clone)]
pub struct Device {
    /// "cpu" or "gpu".
    pub kind: String,
    /// The kernel, or the adapter and backend.
    pub name: String,
}

/// A peer, as the node last heard it.
#[derive(Debug, Clone)]
pub struct PeerInfo {
    /// Its node id.
    pub node_id: u64,
    /// Its block server.
    pub block_server: SocketAddr,
    /// The height it announced.
    pub height: u64,
    /// The tip it announced.
    pub tip: Hash256,
    /// The work it announced.
    pub chain_work: u128,
    /// Seconds since it was heard.
    pub last_seen_seconds: f64,
    /// Seconds it is still passed over after a failed download, if it is.
    pub passed_over_seconds: Option<f64>,
}

/// What the node loop publishes for the API.
#[derive(Debug)]
pub struct NodeState {
    /// Whether a search runs now.
    pub mining: bool,
    /// Downloads running now.
    pub downloads: usize,
    /// The catch-up running, if any: a download from a peer far ahead, while not mining.
    pub catch_up: Option<mvbc_node::catchup::Progress>,
    /// Payments waiting for a block.
    pub pending_count: usize,
    /// The first of them, in the order blocks take them (at most [`MAX_PENDING_LISTED`]).
    pub pending: Vec<Payment>,
    /// Peers heard lately.
    pub peers: Vec<PeerInfo>,
    /// Links up: (peer's block server, dialled by this node).
    pub links: Vec<(SocketAddr, bool)>,
    /// Addresses of other nodes remembered.
    pub known_addresses: usize,
    /// Malformed datagrams and requests dropped so far.
    pub dropped: u64,
    /// Payments refused so far.
    pub refused: u64,
    /// Stale blocks among the last [`STALE_WINDOW`] heights, as the node counts them.
    pub stale: StaleCount,
    /// Blocks this node found since it started, on time or too late.
    pub blocks_mined: u64,
    /// Blocks its pool port's workers found since it started.
    pub blocks_by_workers: u64,
    /// Times its tip moved to another branch since it started.
    pub reorgs: u64,
    /// Statuses and link offers from nodes of other networks, ignored.
    pub other_network: u64,
    /// The devices, in the order of the rate history's counters.
    pub devices: Vec<Device>,
    /// Each device's nonces over time.
    pub rates: RateHistory,
    /// The pool port's workers, when it is open.
    pub pool: Option<PoolState>,
}

/// What the pool port publishes for the API.
#[derive(Debug, Clone, Default)]
pub struct PoolState {
    /// Every worker seen, by address and name.
    pub workers: Vec<mvbc_node::farm::WorkerInfo>,
    /// Connections open now.
    pub connections: usize,
}

impl NodeState {
    /// The state of a node that has not published yet.
    pub fn new(devices: Vec<Device>) -> NodeState {
        NodeState {
            mining: false,
            downloads: 0,
            catch_up: None,
            pending_count: 0,
            pending: Vec::new(),
            peers: Vec::new(),
            links: Vec::new(),
            known_addresses: 0,
            dropped: 0,
            refused: 0,
            stale: StaleCount::default(),
            blocks_mined: 0,
            blocks_by_workers: 0,
            reorgs: 0,
            other_network: 0,
            rates: RateHistory::new(devices.len()),
            devices,
            pool: None,
        }
    }
}

/// The request handler: the chain and its index, the published state, and when the node
/// started.
pub struct Api {
    chain: Arc<RwLock<Chain>>,
    index: Option<Arc<Index>>,
    state: Arc<Mutex<NodeState>>,
    started: Instant,
}

impl Api {
    /// A handler over the node's chain, the index that follows it (lookups scan the chain
    /// without one) and its published state.
    pub fn new(
        chain: Arc<RwLock<Chain>>,
        index: Option<Arc<Index>>,
        state: Arc<Mutex<NodeState>>,
    ) -> Api {
        Api {
            chain,
            index,
            state,
            started: Instant::now(),
        }
    }

    /// The index, while it follows the chain.
    fn index(&self) -> Option<&Index> {
        self.index.as_deref().filter(|i| i.is_current())
    }

    fn state(&self) -> std::sync::MutexGuard<'_, NodeState> {
        // A panic elsewhere while publishing leaves plain data behind: still worth showing.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn route(&self, path: &str, query: &Query) -> Result<Value, Response> {
        let path = path
            .strip_suffix('/')
            .filter(|p| !p.is_empty())
            .unwrap_or(path);
        let Some(rest) = path.strip_prefix("/api/v1/") else {
            return Err(not_found(path));
        };
        let (name, arg) = match rest.split_once('/') {
            Some((name, arg)) => (name, Some(arg)),
            None => (rest, None),
        };
        match (name, arg) {
            ("summary", None) => query.only(&[]).map(|()| self.summary()),
            ("block", Some(id)) => {
                query.only(&[])?;
                self.block(id)
            }
            ("blocks", None) => {
                query.only(&["before", "limit"])?;
                let before = query.number("before", 0..=u64::MAX)?;
                self.blocks(before, query.limit()?)
            }
            ("tx", Some(id)) => {
                query.only(&[])?;
                self.transaction(&parse_hash(id, "transaction id")?)
            }
            ("address", Some(address)) => {
                query.only(&["offset", "limit"])?;
                let address = Address::parse_lookup(address).map_err(|e| {
                    Response::error(400, format!("{:?} is not an address: {e}", shown(address)))
                })?;
                self.address(&address, query.offset()?, query.limit()?)
            }
            ("pending", None) => {
                query.only(&["offset", "limit"])?;
                Ok(self.pending(query.offset()?, query.limit()?))
            }
            ("peers", None) => query.only(&[]).map(|()| self.peers()),
            ("workers", None) => query.only(&[]).map(|()| self.workers()),
            ("hashrate", None) => {
                query.only(&["window"])?;
                let window = query
                    .number("window", 10..=rates::KEEP.as_secs())?
                    .unwrap_or(rates::KEEP.as_secs());
                Ok(self.hashrate(Duration::from_secs(window)))
            }
            _ => Err(not_found(path)),
        }
    }

    fn summary(&self) -> Value {
        let state = self.state();
        let chain = read_chain(&self.chain);
        // Over mining time, as the `Status:` line gives them: idle spells do not drag them down.
        let mining_rate = |i, window| state.rates.mining_rate(i, window).unwrap_or(0.0);
        let devices: Vec<Value> = state
            .devices
            .iter()
            .enumerate()
            .map(|(i, d)| {
                json!({
                    "kind": d.kind,
                    "name": d.name,
                    "hashes_per_second": {
                        "10s": mining_rate(i, Duration::from_secs(10)),
                        "60s": mining_rate(i, Duration::from_secs(60)),
                        "15m": mining_rate(i, rates::KEEP),
                    },
                })
            })
            .collect();
        let total: f64 = (0..state.devices.len())
            .map(|i| mining_rate(i, Duration::from_secs(10)))
            .sum();
        let mining = if state.mining {
            "mining"
        } else if state.downloads > 0 {
            "downloading"
        } else {
            "waiting for payments"
        };
        let stale = state.stale;
        json!({
            "version": env!("CARGO_PKG_VERSION"),
            "height": chain.height(),
            "tip": chain.tip_hash().to_string(),
            "chain_work": chain.chain_work().to_string(),
            "difficulty": chain.params().difficulty,
            "block_size": chain.params().block_size,
            "block_reward": chain.params().block_reward.to_string(),
            "network": chain.network_id().to_string(),
            "mining": mining,
            "hashes_per_second": total,
            "devices": devices,
            "pool": state.pool.as_ref().map(|p| json!({
                "connections": p.connections,
                "hashes_per_second": p.workers.iter().map(|w| w.rates[0]).sum::<f64>(),
            })),
            "pending": state.pending_count,
            "peers": state.peers.len(),
            "links": state.links.len(),
            "known_addresses": state.known_addresses,
            "downloads": state.downloads,
            "initial_download": state.catch_up.as_ref().map(|p| json!({
                "peer": p.peer.to_string(),
                "height": p.height,
                "target_height": p.target,
                "progress": p.fraction(),
                "blocks_per_second": p.blocks_per_second,
                "seconds_left": p.left.map(|d| d.as_secs()),
            })),
            "dropped_messages": state.dropped,
            "refused_payments": state.refused,
            "blocks_mined": state.blocks_mined,
            "blocks_by_workers": state.blocks_by_workers,
            "reorgs": state.reorgs,
            "other_network_messages": state.other_network,
            "stale_blocks": {
                "window": STALE_WINDOW,
                "stale": stale.stale,
                "best": stale.best,
                "rate": stale.rate(),
                "hint": stale.hint(),
            },
            "uptime_seconds": self.started.elapsed().as_secs(),
        })
    }

    fn block(&self, id: &str) -> Result<Value, Response> {
        let chain = read_chain(&self.chain);
        let block = if is_height(id) {
            let height = parse_height(id)?;
            read(chain.block_at(height))?.ok_or_else(|| {
                Response::error(
                    404,
                    format!(
                        "no block at height {height}: the tip is at {}",
                        chain.height()
                    ),
                )
            })?
        } else {
            let hash = parse_hash(id, "block hash or height")?;
            read(chain.block(&hash))?
                .ok_or_else(|| Response::error(404, format!("no block {hash}")))?
        };
        Ok(block_json(&chain, &block))
    }

    fn blocks(&self, before: Option<u64>, limit: usize) -> Result<Value, Response> {
        let chain = read_chain(&self.chain);
        let top = match before {
            Some(0) => None,
            Some(b) => Some((b - 1).min(chain.height())),
            None => Some(chain.height()),
        };
        let mut blocks = Vec::new();
        for height in top
            .map(|top| (0..=top).rev().take(limit))
            .into_iter()
            .flatten()
        {
            if let Some(block) = read(chain.block_at(height))? {
                blocks.push(block_summary(&chain, &block));
            }
        }
        let next = blocks
            .last()
            .and_then(|b| b["height"].as_u64())
            .filter(|h| *h > 0);
        Ok(json!({ "tip_height": chain.height(), "blocks": blocks, "next_before": next }))
    }

    fn transaction(&self, id: &Hash256) -> Result<Value, Response> {
        if let Some(found) = self.confirmed(id)? {
            return Ok(found);
        }
        let state = self.state();
        if let Some(p) = state.pending.iter().find(|p| p.id() == *id) {
            return Ok(json!({
                "status": "pending",
                "transaction": tx_json(&Transaction::Payment(p.clone())),
                "block": null,
                "confirmations": 0,
            }));
        }
        Err(Response::error(
            404,
            format!("no transaction {id} in the best chain or among the pending payments"),
        ))
    }

    /// Transaction `id` in the best chain: where the index says, or by a scan without one.
    fn confirmed(&self, id: &Hash256) -> Result<Option<Value>, Response> {
        let chain = read_chain(&self.chain);
        let found = |block: &Block, tx: &Transaction| {
            let height = block.header.height;
            json!({
                "status": "confirmed",
                "transaction": tx_json(tx),
                "block": { "hash": block.hash().to_string(), "height": height },
                "confirmations": chain.height() - height + 1,
            })
        };
        if let Some(index) = self.index() {
            let Some(place) = index.transaction(id).map_err(index_failed)? else {
                return Ok(None);
            };
            let Some(block) = read(chain.block_at(place.height))? else {
                return Ok(None);
            };
            // The index trails the chain by a moment: a block it names may have just left.
            return Ok(block
                .transactions
                .get(place.position as usize)
                .filter(|tx| tx.id() == *id)
                .map(|tx| found(&block, tx)));
        }
        for height in (0..=chain.height()).rev() {
            let Some(block) = read(chain.block_at(height))? else {
                continue;
            };
            if let Some(tx) = block.transactions.iter().find(|tx| tx.id() == *id) {
                return Ok(Some(found(&block, tx)));
            }
        }
        Ok(None)
    }

    fn address(&self, address: &Address, offset: usize, limit: usize) -> Result<Value, Response> {
        let (balance, height, (total, items)) = {
            let chain = read_chain(&self.chain);
            let history = match self.index() {
                Some(index) => indexed_history(&chain, index, address, offset, limit)?,
                None => scanned_history(&chain, address, offset, limit)?,
            };
            (chain.ledger().balance(address), chain.height(), history)
        };
        let state = self.state();
        let pending: Vec<Value> = state
            .pending
            .iter()
            .filter(|p| p.from == *address || p.to == *address)
            .take(MAX_LIMIT)
            .map(|p| {
                json!({
                    "id": p.id().to_string(),
                    "amount": format!("{:+}", p.effect_on(address)),
                    "counterparty": if p.from == *address { p.to } else { p.from }.to_string(),
                })
            })
            .collect();
        Ok(json!({
            "address": address.to_string(),
            "balance": balance.to_string(),
            "at_height": height,
            "history": { "total": total, "offset": offset, "limit": limit, "items": items },
            "pending": pending,
        }))
    }

    fn pending(&self, offset: usize, limit: usize) -> Value {
        let state = self.state();
        let payments: Vec<Value> = state
            .pending
            .iter()
            .skip(offset)
            .take(limit)
            .map(|p| tx_json(&Transaction::Payment(p.clone())))
            .collect();
        json!({
            "count": state.pending_count,
            "listed": state.pending.len(),
            "offset": offset,
            "limit": limit,
            "payments": payments,
        })
    }

    fn peers(&self) -> Value {
        let state = self.state();
        let peers: Vec<Value> = state
            .peers
            .iter()
            .map(|p| {
                json!({
                    "node_id": format!("{:016x}", p.node_id),
                    "block_server": p.block_server.to_string(),
                    "height": p.height,
                    "tip": p.tip.to_string(),
                    "chain_work": p.chain_work.to_string(),
                    "last_seen_seconds": p.last_seen_seconds,
                    "passed_over_seconds": p.passed_over_seconds,
                })
            })
            .collect();
        let links: Vec<Value> = state
            .links
            .iter()
            .map(|(addr, dialled)| json!({ "peer": addr.to_string(), "dialled": dialled }))
            .collect();
        json!({
            "count": peers.len(),
            "peers": peers,
            "links": links,
            "known_addresses": state.known_addresses,
        })
    }

    /// The pool port's workers: each one's rates from its shares, its share counts and its
    /// blocks. `enabled` is false when the node has no pool port.
    fn workers(&self) -> Value {
        let state = self.state();
        let Some(pool) = &state.pool else {
            return json!({ "enabled": false, "connections": 0, "workers": [] });
        };
        let workers: Vec<Value> = pool
            .workers
            .iter()
            .map(|w| {
                json!({
                    "name": w.key.name,
                    "address": w.key.address.to_string(),
                    "connections": w.connections,
                    "rate_1m": w.rates[0],
                    "rate_5m": w.rates[1],
                    "rate_1h": w.rates[2],
                    "accepted": w.accepted,
                    "rejected": w.rejected,
                    "stale": w.stale,
                    "best_share_bits": w.best_share,
                    "share_difficulty": w.difficulty,
                    "blocks": w.blocks,
                    "expected_blocks": w.expected_blocks,
                    "last_share_seconds": w.last_share_seconds,
                })
            })
            .collect();
        json!({
            "enabled": true,
            "connections": pool.connections,
            "workers": workers,
        })
    }

    fn hashrate(&self, window: Duration) -> Value {
        let state = self.state();
        let series = state.rates.series(window);
        let devices: Vec<Value> = state
            .devices
            .iter()
            .zip(&series.rates)
            .map(|(d, rates)| json!({ "kind": d.kind, "name": d.name, "rates": rates }))
            .collect();
        json!({
            "window_seconds": window.as_secs(),
            "step_seconds": series.step_seconds,
            "ages": series.ages,
            "devices": devices,
        })
    }
}

impl Handler for Api {
    fn handle(&self, request: Request<'_>) -> Response {
        if request.path == "/" || request.path == "/index.html" {
            // The page reads its search from the query (`/?q=5`), so any query is allowed.
            return Response {
                status: 200,
                content_type: "text/html; charset=utf-8",
                body: PAGE.as_bytes().to_vec(),
            };
        }
        let query = match Query::parse(request.query) {
            Ok(q) => q,
            Err(r) => return r,
        };
        match self.route(request.path, &query) {
            Ok(value) => Response::json(200, &value),
            Err(response) => response,
        }
    }
}

/// The query's `key=value` pairs, each key at most once.
struct Query<'a>(Vec<(&'a str, &'a str)>);

/// Cap on query parameters; no endpoint takes more than two.
const MAX_QUERY_PAIRS: usize = 8;

impl<'a> Query<'a> {
    fn parse(query: &'a str) -> Result<Query<'a>, Response> {
        let mut pairs = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            if pairs.iter().any(|(k, _)| *k == key) {
                return Err(Response::error(
                    400,
                    format!("`{}` given twice", shown(key)),
                ));
            }
            if pairs.len() == MAX_QUERY_PAIRS {
                return Err(Response::error(400, "too many query parameters"));
            }
            pairs.push((key, value));
        }
        Ok(Query(pairs))
    }

    /// Refuses any key not in `allowed`.
    fn only(&self, allowed: &[&str]) -> Result<(), Response> {
        match self.0.iter().find(|(k, _)| !allowed.contains(k)) {
            None => Ok(()),
            Some((k, _)) if allowed.is_empty() => Err(Response::error(
                400,
                format!(
                    "unknown query parameter `{}`: this endpoint takes none",
                    shown(k)
                ),
            )),
            Some((k, _)) => Err(Response::error(
                400,
                format!(
                    "unknown query parameter `{}`: this endpoint takes {}",
                    shown(k),
                    allowed.join(", ")
                ),
            )),
        }
    }

    fn number(
        &self,
        key: &str,
        range: std::ops::RangeInclusive<u64>,
    ) -> Result<Option<u64>, Response> {
        let Some((_, raw)) = self.0.iter().find(|(k, _)| *k == key) else {
            return Ok(None);
        };
        match raw.parse::<u64>() {
            Ok(n) if range.contains(&n) && raw.bytes().all(|b| b.is_ascii_digit()) => Ok(Some(n)),
            _ => Err(Response::error(
                400,
                format!(
                    "`{key}` must be a whole number from {} to {}, got {:?}",
                    range.start(),
                    range.end(),
                    shown(raw)
                ),
            )),
        }
    }

    fn limit(&self) -> Result<usize, Response> {
        Ok(self
            .number("limit", 1..=MAX_LIMIT as u64)?
            .map_or(DEFAULT_LIMIT, |n| n as usize))
    }

    fn offset(&self) -> Result<usize, Response> {
        Ok(self
            .number("offset", 0..=1_000_000_000)?
            .map_or(0, |n| n as usize))
    }
}

/// Client text as echoed in an error: at most 80 characters.
/// One row of an address's history: what `tx` in `block` did to `address`.
fn history_row(address: &Address, block: &Block, tx: &Transaction) -> Option<Value> {
    let (effect, other) = tx.touches(address)?;
    Some(json!({
        "id": tx.id().to_string(),
        "height": block.header.height,
        "block": block.hash().to_string(),
        "timestamp": block.header.timestamp,
        "amount": format!("{effect:+}"),
        "counterparty": other.map(|a| a.to_string()),
    }))
}

/// An address's history, newest first: how many rows in all, and one page of them, from the
/// index (a few blocks read).
fn indexed_history(
    chain: &Chain,
    index: &Index,
    address: &Address,
    offset: usize,
    limit: usize,
) -> Result<(u64, Vec<Value>), Response> {
    let (total, places) = index
        .history(address, offset as u64, limit as u64)
        .map_err(index_failed)?;
    let mut items = Vec::new();
    let mut block: Option<Arc<Block>> = None;
    for place in places {
        if block
            .as_ref()
            .is_none_or(|b| b.header.height != place.height)
        {
            block = read(chain.block_at(place.height))?;
        }
        // The index trails the chain by a moment: a row whose block just left is skipped.
        if let Some(b) = &block
            && let Some(row) = b
                .transactions
                .get(place.position as usize)
                .and_then(|tx| history_row(address, b, tx))
        {
            items.push(row);
        }
    }
    Ok((total, items))
}

/// An address's history, newest first, by reading the whole chain (a node without an index).
fn scanned_history(
    chain: &Chain,
    address: &Address,
    offset: usize,
    limit: usize,
) -> Result<(u64, Vec<Value>), Response> {
    let mut items = Vec::new();
    let mut total = 0u64;
    for height in (0..=chain.height()).rev() {
        let Some(block) = read(chain.block_at(height))? else {
            continue;
        };
        for tx in block.transactions.iter().rev() {
            let Some(row) = history_row(address, &block, tx) else {
                continue;
            };
            if total >= offset as u64 && items.len() < limit {
                items.push(row);
            }
            total += 1;
        }
    }
    Ok((total, items))
}

/// The API's answer when the index could not be read.
fn index_failed(e: IndexError) -> Response {
    Response::error(500, mvbc_protocol::error_line(&e))
}

/// A block read back from the store, or the API's answer when the store could not be read.
fn read(block: Result<Option<Arc<Block>>, StoreError>) -> Result<Option<Arc<Block>>, Response> {
    block.map_err(|e| Response::error(500, mvbc_protocol::error_line(&e)))
}

fn shown(text: &str) -> String {
    text.chars().take(80).collect()
}

fn not_found(path: &str) -> Response {
    Response::error(
        404,
        format!(
            "no such endpoint {:?}; see /api/v1/summary, block/ID, blocks, tx/ID, address/ADDRESS, pending, peers, hashrate",
            shown(path)
        ),
    )
}

/// Digits only: a height (an all-digit string of 64 would also be a hash; heights are shorter).
fn is_height(id: &str) -> bool {
    !id.is_empty() && id.len() < 64 && id.bytes().all(|b| b.is_ascii_digit())
}

fn parse_height(id: &str) -> Result<u64, Response> {
    id.parse()
        .map_err(|_| Response::error(400, format!("height {} is out of range", shown(id))))
}

fn parse_hash(id: &str, what: &str) -> Result<Hash256, Response> {
    if id.len() != 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Response::error(
            400,
            format!("{:?} is not a {what} (64 hex digits)", shown(id)),
        ));
    }
    id.parse()
        .map_err(|_| Response::error(400, format!("{:?} is not a {what}", shown(id))))
}

fn tx_json(tx: &Transaction) -> Value {
    match tx {
        Transaction::Reward(r) => json!({
            "id": tx.id().to_string(),
            "type": "reward",
            "to": r.to.to_string(),
            "amount": r.amount.to_string(),
            "height": r.height,
        }),
        Transaction::Payment(p) => json!({
            "id": tx.id().to_string(),
            "type": "payment",
            "from": p.from.to_string(),
            "to": p.to.to_string(),
            "amount": p.amount.to_string(),
            "timestamp": p.timestamp,
        }),
    }
}

/// A block's header fields and where it stands.
fn header_json(chain: &Chain, block: &Block) -> Value {
    let h = &block.header;
    let best = chain.is_on_best_chain(&block.hash());
    json!({
        "hash": block.hash().to_string(),
        "height": h.height,
        "version": h.version,
        "prev_hash": h.prev_hash.to_string(),
        "merkle_root": h.merkle_root.to_string(),
        "timestamp": h.timestamp,
        "difficulty": h.difficulty,
        // Beyond 2^53 a JSON number loses digits in JavaScript: the nonce goes as text.
        "nonce": h.nonce.to_string(),
        "best_chain": best,
        "confirmations": if best { chain.height() - h.height + 1 } else { 0 },
    })
}

fn block_summary(chain: &Chain, block: &Block) -> Value {
    let mut v = header_json(chain, block);
    v["transaction_count"] = json!(block.transactions.len());
    v["miner"] = match block.transactions.first() {
        Some(Transaction::Reward(r)) => json!(r.to.to_string()),
        _ => Value::Null,
    };
    v
}

fn block_json(chain: &Chain, block: &Block) -> Value {
    let mut v = block_summary(chain, block);
    v["transactions"] = block.transactions.iter().map(tx_json).collect();
    v
}
