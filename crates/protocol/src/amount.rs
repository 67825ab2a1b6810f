//! Money as a type: integer base units, checked arithmetic, decimal text.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Base units in one coin.
pub const UNITS_PER_COIN: u64 = 1_000_000;
/// Decimal places shown and accepted.
pub const DECIMALS: usize = 6;

/// An amount of coins in base units (1 coin = 1,000,000 units). Never negative; every
/// operation that could overflow or go below zero is checked.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
pub struct Amount(u64);

impl Amount {
    /// No money.
    pub const ZERO: Amount = Amount(0);

    /// An amount of `units` base units.
    pub const fn from_units(units: u64) -> Amount {
        Amount(units)
    }

    /// Whole coins, or `None` if that many coins do not fit.
    pub const fn from_coins(coins: u64) -> Option<Amount> {
        match coins.checked_mul(UNITS_PER_COIN) {
            Some(units) => Some(Amount(units)),
            None => None,
        }
    }

    /// The amount in base units.
    pub const fn units(self) -> u64 {
        self.0
    }

    /// Whether this is zero.
    pub const fn is_zero(self) -> bool {
        self.0 == 0
    }

    /// `self + rhs`, or `None` on overflow.
    pub fn checked_add(self, rhs: Amount) -> Option<Amount> {
        self.0.checked_add(rhs.0).map(Amount)
    }

    /// `self - rhs`, or `None` if the result would be negative.
    pub fn checked_sub(self, rhs: Amount) -> Option<Amount> {
        self.0.checked_sub(rhs.0).map(Amount)
    }
}

/// Shows coins with exactly six decimal places: `12.500000`.
impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = format!(
            "{}.{:0width$}",
            self.0 / UNITS_PER_COIN,
            self.0 % UNITS_PER_COIN,
            width = DECIMALS
        );
        f.pad(&text)
    }
}

/// A net change of coins, credits less debits, in base units: what a wallet shows as pending
/// or as a transaction's effect on an address. Any sum of `u64` amounts a program can hold fits.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Debug)]
pub struct SignedAmount(i128);

impl SignedAmount {
    /// No change.
    pub const ZERO: SignedAmount = SignedAmount(0);

    /// `amount` coming in.
    pub fn credit(amount: Amount) -> SignedAmount {
        SignedAmount(i128::from(amount.units()))
    }

    /// `amount` going out.
    pub fn debit(amount: Amount) -> SignedAmount {
        SignedAmount(-i128::from(amount.units()))
    }

    /// Whether more goes out than comes in.
    pub fn is_negative(self) -> bool {
        self.0 < 0
    }
}

impl std::ops::Add for SignedAmount {
    type Output = SignedAmount;

    /// Saturates far beyond any sum of real amounts (2^127 base units).
    fn add(self, rhs: SignedAmount) -> SignedAmount {
        SignedAmount(self.0.saturating_add(rhs.0))
    }
}

impl std::iter::Sum for SignedAmount {
    fn sum<I: Iterator<Item = SignedAmount>>(iter: I) -> SignedAmount {
        iter.fold(SignedAmount::ZERO, |a, b| a + b)
    }
}

/// Six decimal places and a minus sign when negative (`-1.500000`); `{:+}` shows `+` too.
impl fmt::Display for SignedAmount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let units = u128::from(UNITS_PER_COIN);
        let abs = self.0.unsigned_abs();
        let sign = match (self.is_negative(), f.sign_plus()) {
            (true, _) => "-",
            (false, true) => "+",
            (false, false) => "",
        };
        let text = format!(
            "{sign}{}.{:0width$}",
            abs / units,
            abs % units,
            width = DECIMALS
        );
        f.pad(&text)
    }
}

impl fmt::Debug for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Amount({self})")
    }
}

/// Why a string is not an amount.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseAmountError {
    /// Empty input.
    #[error("empty amount")]
    Empty,
    /// Anything but digits and at most one decimal point (signs, exponents, spaces).
    #[error("invalid amount {0:?}: use digits with an optional decimal point, e.g. 12.5")]
    Invalid(String),
    /// More than six decimal places.
    #[error("invalid amount {0:?}: at most 6 decimal places")]
    TooPrecise(String),
    /// Larger than the largest representable amount.
    #[error("amount {0:?} is too large")]
    TooLarge(String),
}

/// Parses a decimal number of coins with up to six decimal places: `10`, `0.5`, `.25`, `3.`.
impl FromStr for Amount {
    type Err = ParseAmountError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err(ParseAmountError::Empty);
        }
        let invalid = || ParseAmountError::Invalid(s.to_owned());
        let (whole, frac) = match s.split_once('.') {
            Some((w, f)) => (w, f),
            None => (s, ""),
        };
        let all_digits = |t: &str| t.bytes().all(|b| b.is_ascii_digit());
        if (whole.is_empty() && frac.is_empty()) || !all_digits(whole) || !all_digits(frac) {
            return Err(invalid());
        }
        if frac.len() > DECIMALS {
            return Err(ParseAmountError::TooPrecise(s.to_owned()));
        }
        let too_large = || ParseAmountError::TooLarge(s.to_owned());
        let whole_units = if whole.is_empty() {
            0
        } else {
            // Digits only, so the only parse failure left is overflow.
            let coins: u64 = whole.parse().map_err(|_| too_large())?;
            coins.checked_mul(UNITS_PER_COIN).ok_or_else(too_large)?
        };
        let frac_units = if frac.is_empty() {
            0
        } else {
            let digits: u64 = frac.parse().map_err(|_| invalid())?;
            digits * 10u64.pow((DECIMALS - frac.len()) as u32)
        };
        whole_units
            .checked_add(frac_units)
            .map(Amount)
            .ok_or_else(too_large)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_amounts_sum_and_show_their_sign() {
        let a = |u| Amount::from_units(u);
        let net: SignedAmount = [
            SignedAmount::credit(a(2_500_000)),
            SignedAmount::debit(a(4_000_000)),
        ]
        .into_iter()
        .sum();
        assert_eq!(net.to_string(), "-1.500000");
        assert_eq!(format!("{:+}", SignedAmount::credit(a(1))), "+0.000001");
        assert_eq!(format!("{:+}", SignedAmount::ZERO), "+0.000000");
        assert_eq!(format!("{:>10}", SignedAmount::debit(a(1))), " -0.000001");
        // Far past u64::MAX units without overflow.
        let big: SignedAmount = std::iter::repeat_n(SignedAmount::credit(a(u64::MAX)), 3).sum();
        assert!(!big.is_negative());
        assert_eq!(
            big.to_string(),
            format!(
                "{}.{:06}",
                3 * u128::from(u64::MAX) / 1_000_000,
                3 * u128::from(u64::MAX) % 1_000_000
            )
        );
    }
    use proptest::prelude::*;

    #[test]
    fn parses_and_prints() {
        assert_eq!(
            "10".parse::<Amount>().unwrap(),
            Amount::from_units(10_000_000)
        );
        assert_eq!(
            "0.5".parse::<Amount>().unwrap(),
            Amount::from_units(500_000)
        );
        assert_eq!(
            ".25".parse::<Amount>().unwrap(),
            Amount::from_units(250_000)
        );
        assert_eq!(
            "3.".parse::<Amount>().unwrap(),
            Amount::from_units(3_000_000)
        );
        assert_eq!("0.000001".parse::<Amount>().unwrap(), Amount::from_units(1));
        assert_eq!(Amount::from_units(12_500_000).to_string(), "12.500000");
        assert_eq!(Amount::ZERO.to_string(), "0.000000");
        assert_eq!(format!("{:>12}", Amount::from_units(1)), "    0.000001");
    }

    #[test]
    fn rejects_bad_text() {
        for bad in [
            "-1", "+1", "1e3", " 1", "1 ", "1.2.3", ".", "abc", "1,5", "0x10",
        ] {
            assert!(
                matches!(bad.parse::<Amount>(), Err(ParseAmountError::Invalid(_))),
                "{bad}"
            );
        }
        assert_eq!("".parse::<Amount>(), Err(ParseAmountError::Empty));
        assert!(matches!(
            "1.0000001".parse::<Amount>(),
            Err(ParseAmountError::TooPrecise(_))
        ));
        assert!(matches!(
            "18446744073709.551616".parse::<Amount>(),
            Err(ParseAmountError::TooLarge(_))
        ));
        assert!(matches!(
            "99999999999999999999".parse::<Amount>(),
            Err(ParseAmountError::TooLarge(_))
        ));
        assert_eq!(
            "18446744073709.551615".parse::<Amount>().unwrap(),
            Amount::from_units(u64::MAX)
        );
    }

    #[test]
    fn arithmetic_is_checked() {
        let one = Amount::from_units(1);
        assert_eq!(Amount::ZERO.checked_sub(one), None);
        assert_eq!(Amount::from_units(u64::MAX).checked_add(one), None);
        assert_eq!(one.checked_add(one), Some(Amount::from_units(2)));
        assert_eq!(Amount::from_coins(u64::MAX), None);
    }

    proptest! {
        #[test]
        fn display_then_parse_round_trips(units: u64) {
            let a = Amount::from_units(units);
            prop_assert_eq!(a.to_string().parse::<Amount>().unwrap(), a);
        }

        #[test]
        fn parse_never_panics(s in "\\PC{0,30}") {
            let _ = s.parse::<Amount>();
        }
    }
}
