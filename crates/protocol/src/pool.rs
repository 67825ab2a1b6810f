//! Pending payments: valid, not yet confirmed, each covered by its sender's confirmed balance
//! less what the sender's other pending payments already spend.
//!
//! Anyone can send a node payments, so the pool is built to be fair and cheap to defend:
//!
//! - What is cheap is checked first (duplicates, payments already found invalid, confirmed
//!   ones, the sender's balance, the sender's share); the signature, the one costly check,
//!   last. A payment whose signature failed is remembered (a bounded set of ids), so replaying
//!   it costs a lookup.
//! - One sender holds at most [`MAX_PENDING_PER_SENDER`] payments, and a full pool makes room
//!   by dropping the newest payment of the sender holding the most.
//! - Blocks take payments round-robin across senders (start-time fair queueing): a payment
//!   joins the round after its sender's last pending one, and a sender with nothing pending
//!   joins the round being served now, so one payer with thousands queued delays another by
//!   a block or two, not by thousands.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;

use crate::amount::Amount;
use crate::block::Block;
use crate::hash::Hash256;
use crate::keys::Address;
use crate::ledger::Ledger;
use crate::tx::{Payment, Transaction, TxError};

/// Default cap on pending payments.
pub const DEFAULT_POOL_CAPACITY: usize = 10_000;
/// Pending payments one sender may have at once: as many as a wallet keeps pending.
pub const MAX_PENDING_PER_SENDER: usize = 1_000;
/// Ids of payments found invalid that are remembered, so a replay is refused for a lookup.
pub const REMEMBERED_INVALID: usize = 10_000;

/// Why a payment was not pooled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    /// Invalid on its own.
    #[error("invalid payment: {0}")]
    Invalid(#[from] TxError),
    /// Found invalid before (remembered by id).
    #[error("payment {0} was already found invalid")]
    KnownInvalid(Hash256),
    /// Already confirmed in the chain.
    #[error("payment {0} is already confirmed")]
    Confirmed(Hash256),
    /// Already pending.
    #[error("payment {0} is already pending")]
    Duplicate(Hash256),
    /// Not covered by the sender's balance less its pending payments.
    #[error("{from} pays {amount} but has {available} available after pending payments")]
    Insufficient {
        /// The sender.
        from: Address,
        /// The payment.
        amount: Amount,
        /// Confirmed balance less pending outgoing payments.
        available: Amount,
    },
    /// The sender already has as many pending payments as one sender may.
    #[error("{0} already has {1} pending payments, as many as one sender may")]
    SenderFull(Address, usize),
    /// The pool is full and this payment's sender holds at least as many as anyone, or the
    /// pool holds nothing at all (capacity 0).
    #[error("the pool is full ({0} payments)")]
    Full(usize),
}

/// A payment the pool took.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Added {
    /// Its id.
    pub id: Hash256,
    /// The payment dropped to make room when the pool was full: the newest of the sender
    /// holding the most.
    pub evicted: Option<Hash256>,
}

/// Where a payment stands in the queue: its round, then the order of arrival.
type Place = (u64, u64);

struct Entry {
    payment: Payment,
    place: Place,
}

/// One sender's pending payments, in arrival order, what they spend together and the latest
/// round one of them was queued in.
#[derive(Default)]
struct Sender {
    queue: VecDeque<Hash256>,
    spending: Amount,
    last_round: u64,
}

/// Pending payments, served round-robin across senders.
pub struct Pool {
    payments: HashMap<Hash256, Entry>,
    senders: HashMap<Address, Sender>,
    /// Every pending payment by place: the order blocks take them in.
    order: BTreeSet<(Place, Hash256)>,
    arrivals: u64,
    invalid: RecentIds,
    capacity: usize,
    per_sender: usize,
}

impl Default for Pool {
    fn default() -> Self {
        Pool::with_capacity(DEFAULT_POOL_CAPACITY)
    }
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("pending", &self.payments.len())
            .field("senders", &self.senders.len())
            .field("round", &self.current_round())
            .finish()
    }
}

impl Pool {
    /// An empty pool holding at most `capacity` payments.
    pub fn with_capacity(capacity: usize) -> Pool {
        Pool::with_limits(capacity, MAX_PENDING_PER_SENDER)
    }

    /// An empty pool holding at most `capacity` payments, at most `per_sender` of one sender.
    pub fn with_limits(capacity: usize, per_sender: usize) -> Pool {
        Pool {
            payments: HashMap::new(),
            senders: HashMap::new(),
            order: BTreeSet::new(),
            arrivals: 0,
            invalid: RecentIds::new(REMEMBERED_INVALID),
            capacity,
            per_sender,
        }
    }

    /// Number of pending payments.
    pub fn len(&self) -> usize {
        self.payments.len()
    }

    /// Whether nothing is pending.
    pub fn is_empty(&self) -> bool {
        self.payments.is_empty()
    }

    /// Whether this payment is pending.
    pub fn contains(&self, id: &Hash256) -> bool {
        self.payments.contains_key(id)
    }

    /// What `address`'s pending payments spend in total.
    pub fn pending_spend(&self, address: &Address) -> Amount {
        self.senders
            .get(address)
            .map_or(Amount::ZERO, |s| s.spending)
    }

    /// How many payments `address` has pending.
    pub fn pending_count(&self, address: &Address) -> usize {
        self.senders.get(address).map_or(0, |s| s.queue.len())
    }

    /// Validates and adds a payment, cheapest checks first. A full pool drops the newest
    /// payment of the sender holding the most to make room (a wallet's re-broadcast brings it
    /// back later), unless this payment's sender is that sender.
    pub fn add(&mut self, payment: Payment, ledger: &Ledger) -> Result<Added, PoolError> {
        let id = payment.id();
        if self.payments.contains_key(&id) {
            return Err(PoolError::Duplicate(id));
        }
        if self.invalid.contains(&id) {
            return Err(PoolError::KnownInvalid(id));
        }
        if ledger.is_confirmed(&id) {
            return Err(PoolError::Confirmed(id));
        }
        if self.capacity == 0 {
            return Err(PoolError::Full(0));
        }
        self.check_funded(&payment, ledger)?;
        let held = self.pending_count(&payment.from);
        if held >= self.per_sender {
            return Err(PoolError::SenderFull(payment.from, held));
        }
        let evict = if self.payments.len() >= self.capacity {
            match self.heaviest_sender() {
                Some((from, most)) if most > held && from != payment.from => {
                    self.senders[&from].queue.back().copied()
                }
                _ => return Err(PoolError::Full(self.payments.len())),
            }
        } else {
            None
        };
        if let Err(e) = payment.verify() {
            self.invalid.insert(id);
            return Err(e.into());
        }
        if let Some(victim) = evict {
            self.remove(&victim);
        }
        self.insert(id, payment, None);
        Ok(Added { id, evicted: evict })
    }

    /// The sender with the most pending payments (of two with as many, the one that sent
    /// last), and how many.
    fn heaviest_sender(&self) -> Option<(Address, usize)> {
        self.senders
            .iter()
            .max_by_key(|(_, s)| {
                let newest = s.queue.back().map_or((0, 0), |id| self.payments[id].place);
                (s.queue.len(), newest.1)
            })
            .map(|(a, s)| (*a, s.queue.len()))
    }

    /// Whether the sender can afford `payment` on top of its pending payments.
    fn check_funded(&self, payment: &Payment, ledger: &Ledger) -> Result<(), PoolError> {
        let available = ledger
            .balance(&payment.from)
            .checked_sub(self.pending_spend(&payment.from))
            .unwrap_or(Amount::ZERO);
        if payment.amount > available {
            return Err(PoolError::Insufficient {
                from: payment.from,
                amount: payment.amount,
                available,
            });
        }
        Ok(())
    }

    /// The round being served: that of the first payment in line.
    fn current_round(&self) -> u64 {
        self.order.first().map_or(0, |((round, _), _)| *round)
    }

    /// Queues a checked, funded payment behind its sender's others: in the round after its
    /// sender's last, or in the round being served if that is later. `round` overrides that
    /// (a payment back from a disconnected block goes first).
    fn insert(&mut self, id: Hash256, payment: Payment, round: Option<u64>) {
        let now = self.current_round();
        let sender = self.senders.entry(payment.from).or_default();
        let joins = if sender.queue.is_empty() {
            now
        } else {
            (sender.last_round + 1).max(now)
        };
        let place = (round.unwrap_or(joins), self.arrivals);
        self.arrivals += 1;
        sender.last_round = sender.last_round.max(place.0);
        // amount <= available <= balance, so the sum fits in a u64.
        sender.spending = sender
            .spending
            .checked_add(payment.amount)
            .unwrap_or(Amount::from_units(u64::MAX));
        sender.queue.push_back(id);
        self.order.insert((place, id));
        self.payments.insert(id, Entry { payment, place });
    }

    /// Takes a payment out, releasing what it spent.
    fn remove(&mut self, id: &Hash256) -> Option<Entry> {
        let entry = self.payments.remove(id)?;
        self.order.remove(&(entry.place, *id));
        let from = entry.payment.from;
        if let Some(sender) = self.senders.get_mut(&from) {
            sender.queue.retain(|q| q != id);
            sender.spending = sender
                .spending
                .checked_sub(entry.payment.amount)
                .unwrap_or(Amount::ZERO);
            if sender.queue.is_empty() {
                self.senders.remove(&from);
            }
        }
        Some(entry)
    }

    /// Up to `n` pending payments in the order blocks take them: round by round, one payment
    /// of each sender with one left a round, oldest first within a round. Together they are
    /// affordable against the ledger the pool was last reconciled with.
    pub fn select(&self, n: usize) -> Vec<Payment> {
        self.order
            .iter()
            .take(n)
            .map(|(_, id)| self.payments[id].payment.clone())
            .collect()
    }

    /// Brings the pool in line with a moved tip: confirmed payments leave, payments of
    /// disconnected blocks come back ahead of the others (oldest first), and any payment the
    /// new ledger no longer covers is dropped. Returns the ids dropped as unaffordable or
    /// replayed.
    pub fn reconcile(&mut self, disconnected: &[Arc<Block>], ledger: &Ledger) -> Vec<Hash256> {
        let confirmed: Vec<Hash256> = self
            .payments
            .keys()
            .filter(|id| ledger.is_confirmed(id))
            .copied()
            .collect();
        for id in confirmed {
            self.remove(&id);
        }
        let first = self.current_round().saturating_sub(1);
        let mut dropped = Vec::new();
        let returned = disconnected.iter().rev().flat_map(|b| &b.transactions);
        for tx in returned {
            let Transaction::Payment(p) = tx else {
                continue;
            };
            let id = tx.id();
            if ledger.is_confirmed(&id) || self.payments.contains_key(&id) {
                continue;
            }
            if self.payments.len() >= self.capacity
                || self.pending_count(&p.from) >= self.per_sender
            {
                dropped.push(id);
                continue;
            }
            // Funding is checked below, with the sender's other payments.
            self.insert(id, p.clone(), Some(first));
        }
        dropped.extend(self.drop_unfunded(ledger));
        dropped
    }

    /// Drops, sender by sender, the payments that the sender's balance in `ledger` no longer
    /// covers: each sender's payments are covered in the order they are served, and those that
    /// no longer fit go.
    fn drop_unfunded(&mut self, ledger: &Ledger) -> Vec<Hash256> {
        let mut unfunded = Vec::new();
        for (from, sender) in &self.senders {
            let balance = ledger.balance(from);
            if sender.spending <= balance {
                continue;
            }
            let mut queue: Vec<Hash256> = sender.queue.iter().copied().collect();
            queue.sort_by_key(|id| self.payments[id].place);
            let mut covered = Amount::ZERO;
            for id in queue {
                let amount = self.payments[&id].payment.amount;
                match covered
                    .checked_add(amount)
                    .filter(|total| *total <= balance)
                {
                    Some(total) => covered = total,
                    None => unfunded.push(id),
                }
            }
        }
        for id in &unfunded {
            self.remove(id);
        }
        unfunded
    }
}

/// A bounded set of ids, forgetting the oldest first.
struct RecentIds {
    set: HashSet<Hash256>,
    order: VecDeque<Hash256>,
    cap: usize,
}

impl RecentIds {
    fn new(cap: usize) -> RecentIds {
        RecentIds {
            set: HashSet::new(),
            order: VecDeque::new(),
            cap,
        }
    }

    fn contains(&self, id: &Hash256) -> bool {
        self.set.contains(id)
    }

    fn insert(&mut self, id: Hash256) {
        if self.cap == 0 || !self.set.insert(id) {
            return;
        }
        self.order.push_back(id);
        if self.order.len() > self.cap
            && let Some(old) = self.order.pop_front()
        {
            self.set.remove(&old);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recent_ids_forget_the_oldest_past_their_cap() {
        let mut r = RecentIds::new(2);
        let id = |i: u8| Hash256([i; 32]);
        r.insert(id(1));
        r.insert(id(2));
        r.insert(id(1));
        assert!(r.contains(&id(1)) && r.contains(&id(2)));
        r.insert(id(3));
        assert!(!r.contains(&id(1)), "the oldest went");
        assert!(r.contains(&id(2)) && r.contains(&id(3)));
        assert_eq!(r.order.len(), 2);
    }
}
