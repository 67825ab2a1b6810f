//! Pending payments: valid, not yet confirmed, each covered by its sender's confirmed balance
//! less what the sender's other pending payments already spend.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use crate::amount::Amount;
use crate::block::Block;
use crate::hash::Hash256;
use crate::keys::Address;
use crate::ledger::Ledger;
use crate::tx::{Payment, Transaction, TxError};

/// Default cap on pending payments.
pub const DEFAULT_POOL_CAPACITY: usize = 10_000;

/// Why a payment was not pooled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    /// Invalid on its own.
    #[error("invalid payment: {0}")]
    Invalid(#[from] TxError),
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
    /// The pool holds no payment at all (capacity 0).
    #[error("the pool is full ({0} payments)")]
    Full(usize),
}

/// A payment the pool took.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Added {
    /// Its id.
    pub id: Hash256,
    /// The oldest payment, dropped to make room when the pool was full.
    pub evicted: Option<Hash256>,
}

/// Pending payments in arrival order.
#[derive(Debug, Clone)]
pub struct Pool {
    order: VecDeque<Hash256>,
    payments: HashMap<Hash256, Payment>,
    spending: HashMap<Address, Amount>,
    capacity: usize,
}

impl Default for Pool {
    fn default() -> Self {
        Pool::with_capacity(DEFAULT_POOL_CAPACITY)
    }
}

impl Pool {
    /// An empty pool holding at most `capacity` payments.
    pub fn with_capacity(capacity: usize) -> Pool {
        Pool {
            order: VecDeque::new(),
            payments: HashMap::new(),
            spending: HashMap::new(),
            capacity,
        }
    }

    /// Number of pending payments.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Whether nothing is pending.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// Whether this payment is pending.
    pub fn contains(&self, id: &Hash256) -> bool {
        self.payments.contains_key(id)
    }

    /// What `address`'s pending payments spend in total.
    pub fn pending_spend(&self, address: &Address) -> Amount {
        self.spending.get(address).copied().unwrap_or(Amount::ZERO)
    }

    /// Validates and adds a payment. A full pool drops its oldest payment to make room, so
    /// memory stays bounded and a flood cannot freeze what the pool holds; a wallet's
    /// re-broadcast brings a dropped payment back.
    pub fn add(&mut self, payment: Payment, ledger: &Ledger) -> Result<Added, PoolError> {
        let id = payment.id();
        if self.payments.contains_key(&id) {
            return Err(PoolError::Duplicate(id));
        }
        if ledger.is_confirmed(&id) {
            return Err(PoolError::Confirmed(id));
        }
        if self.capacity == 0 {
            return Err(PoolError::Full(0));
        }
        payment.verify()?;
        self.check_funded(&payment, ledger)?;
        let evicted = if self.order.len() >= self.capacity {
            self.order.front().copied().inspect(|oldest| {
                self.remove(oldest);
            })
        } else {
            None
        };
        self.insert_funded(id, payment, ledger)?;
        Ok(Added { id, evicted })
    }

    /// Takes a payment out, releasing what it spent.
    fn remove(&mut self, id: &Hash256) -> Option<Payment> {
        let payment = self.payments.remove(id)?;
        self.order.retain(|o| o != id);
        let left = self
            .pending_spend(&payment.from)
            .checked_sub(payment.amount)
            .unwrap_or(Amount::ZERO);
        if left.is_zero() {
            self.spending.remove(&payment.from);
        } else {
            self.spending.insert(payment.from, left);
        }
        Some(payment)
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

    /// Adds an already verified payment if its sender can afford it.
    fn insert_funded(
        &mut self,
        id: Hash256,
        payment: Payment,
        ledger: &Ledger,
    ) -> Result<Hash256, PoolError> {
        self.check_funded(&payment, ledger)?;
        let spent = self.pending_spend(&payment.from);
        // amount <= available <= balance, so the sum fits in a u64.
        let total = spent
            .checked_add(payment.amount)
            .unwrap_or(Amount::from_units(u64::MAX));
        self.spending.insert(payment.from, total);
        self.order.push_back(id);
        self.payments.insert(id, payment);
        Ok(id)
    }

    /// Up to `n` pending payments, oldest first. Together they are affordable against the
    /// ledger the pool was last reconciled with.
    pub fn select(&self, n: usize) -> Vec<Payment> {
        self.order
            .iter()
            .take(n)
            .map(|id| self.payments[id].clone())
            .collect()
    }

    /// Brings the pool in line with a moved tip: payments of disconnected blocks come back
    /// (oldest first, ahead of newer ones), confirmed ones leave, and any payment the new
    /// ledger no longer covers is dropped. Returns the ids dropped as unaffordable or replayed.
    pub fn reconcile(&mut self, disconnected: &[Arc<Block>], ledger: &Ledger) -> Vec<Hash256> {
        let mut candidates: Vec<(Hash256, Payment)> = Vec::new();
        for block in disconnected.iter().rev() {
            for tx in &block.transactions {
                if let Transaction::Payment(p) = tx {
                    candidates.push((tx.id(), p.clone()));
                }
            }
        }
        let mut old = std::mem::take(&mut self.payments);
        candidates.extend(
            self.order
                .drain(..)
                .filter_map(|id| old.remove(&id).map(|p| (id, p))),
        );
        self.spending.clear();
        let mut dropped = Vec::new();
        for (id, payment) in candidates {
            if ledger.is_confirmed(&id) || self.payments.contains_key(&id) {
                continue;
            }
            if self.order.len() >= self.capacity || self.insert_funded(id, payment, ledger).is_err()
            {
                dropped.push(id);
            }
        }
        dropped
    }
}
