//! Balances and confirmed transaction ids of one chain, with the rules that need them.

use std::collections::{HashMap, HashSet};

use crate::amount::Amount;
use crate::block::Block;
use crate::hash::Hash256;
use crate::keys::Address;
use crate::rules::BlockError;
use crate::tx::Transaction;

/// The state a chain's blocks add up to: a balance per address (O(1) to look up) and the id of
/// every payment confirmed so far (to refuse replays). Rewards are not kept: a reward names
/// its block's height, so it can never be valid in another block of the same chain.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ledger {
    balances: HashMap<Address, Amount>,
    confirmed: HashSet<Hash256>,
}

impl Ledger {
    /// The confirmed balance of `address`.
    pub fn balance(&self, address: &Address) -> Amount {
        self.balances.get(address).copied().unwrap_or(Amount::ZERO)
    }

    /// Whether a payment with this id is confirmed.
    pub fn is_confirmed(&self, id: &Hash256) -> bool {
        self.confirmed.contains(id)
    }

    /// Number of confirmed payments.
    pub fn confirmed_count(&self) -> usize {
        self.confirmed.len()
    }

    /// Every address with a non-zero balance.
    pub fn balances(&self) -> impl Iterator<Item = (&Address, &Amount)> {
        self.balances.iter()
    }

    /// Applies `block` if every transaction is new and every payment is covered by its sender's
    /// balance at that point of the block; otherwise changes nothing and says why. The
    /// block-local rules (`rules::check_block`) must already hold.
    pub fn apply_block(&mut self, block: &Block) -> Result<(), BlockError> {
        let mut touched: HashMap<Address, Amount> = HashMap::new();
        let mut ids = Vec::with_capacity(block.transactions.len());
        for tx in &block.transactions {
            let (from, to, amount) = transfer(tx);
            // A reward's id is not kept: its height ties it to its block.
            let paid = match tx {
                Transaction::Payment(p) => {
                    let id = p.id();
                    if self.confirmed.contains(&id) {
                        return Err(BlockError::Replay(id));
                    }
                    ids.push(id);
                    Some(id)
                }
                Transaction::Reward(_) => None,
            };
            let id = || paid.unwrap_or_else(|| tx.id());
            if let Some(from) = from {
                let balance = *touched.entry(from).or_insert_with(|| self.balance(&from));
                let left = balance
                    .checked_sub(amount)
                    .ok_or_else(|| BlockError::Overspend {
                        id: id(),
                        from,
                        amount,
                        balance,
                    })?;
                touched.insert(from, left);
            }
            let balance = *touched.entry(to).or_insert_with(|| self.balance(&to));
            touched.insert(
                to,
                balance
                    .checked_add(amount)
                    .ok_or_else(|| BlockError::Overflow(id()))?,
            );
        }
        for (address, amount) in touched {
            self.set_balance(address, amount);
        }
        self.confirmed.extend(ids);
        Ok(())
    }

    /// Reverses [`Ledger::apply_block`] for the block applied last.
    pub fn undo_block(&mut self, block: &Block) {
        for tx in block.transactions.iter().rev() {
            let (from, to, amount) = transfer(tx);
            // The block was applied, so these cannot go out of range; saturate rather than panic.
            let to_balance = self.balance(&to);
            debug_assert!(to_balance >= amount);
            self.set_balance(to, to_balance.checked_sub(amount).unwrap_or(Amount::ZERO));
            if let Some(from) = from {
                let from_balance = self.balance(&from);
                self.set_balance(
                    from,
                    from_balance
                        .checked_add(amount)
                        .unwrap_or(Amount::from_units(u64::MAX)),
                );
            }
            if let Transaction::Payment(p) = tx {
                self.confirmed.remove(&p.id());
            }
        }
    }

    fn set_balance(&mut self, address: Address, amount: Amount) {
        if amount.is_zero() {
            self.balances.remove(&address);
        } else {
            self.balances.insert(address, amount);
        }
    }
}

/// Who pays (none for a reward), who receives, and how much.
fn transfer(tx: &Transaction) -> (Option<Address>, Address, Amount) {
    match tx {
        Transaction::Payment(p) => (Some(p.from), p.to, p.amount),
        Transaction::Reward(r) => (None, r.to, r.amount),
    }
}
