//! Exact money: integer minor units, never floats.
//!
//! Three quantities exist, each an integer:
//! - [`Money`]: an amount in the currency's minor unit (yen for JPY, cents for USD);
//! - [`Rate`]: a price per unit-hour in millionths of the minor unit, so that
//!   sub-yen prices such as 0.05 JPY per GiB-hour stay exact;
//! - unit-seconds: how much was used (a resource's quantity times seconds).
//!
//! **The rounding rule, stated once:** an amount is computed exactly as a
//! fraction and rounded *once* to the minor unit, half up (half away from
//! zero). Usage is rounded once per resource, item and month: the exact
//! value (rate × unit-seconds ÷ hour length, [`exact_value`]) is summed over
//! the month, and each hour's line is what that running sum's rounding grew
//! by ([`cumulative_amount`]), so a month's lines add up to its exact usage
//! rounded once, however the usage is cut into hours or pieces (splitting can
//! neither lower nor raise it). The other place is an invoice's tax ([`tax`]:
//! subtotal × rate ÷ 10,000). Everything else (caps, subtotals, invoice
//! totals) is integer addition and comparison of already rounded amounts.

use std::fmt;
use std::str::FromStr;

use crate::BillingError;

/// Millionths of a minor unit in one minor unit: the resolution of a [`Rate`].
pub const RATE_SCALE: i64 = 1_000_000;

/// The largest rate accepted: 10^9 minor units per unit-hour is more than any price,
/// and keeps every product in a line far inside `i128`.
const MAX_RATE_MICRO: i64 = 1_000_000_000 * RATE_SCALE;

/// A currency: its ISO 4217 code and how many decimal digits its minor unit has.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Currency {
    code: [u8; 3],
    exponent: u8,
}

/// The currencies Kumo knows the minor unit of.
const KNOWN: [(&str, u8); 9] =
    [("JPY", 0), ("USD", 2), ("EUR", 2), ("GBP", 2), ("CNY", 2), ("KRW", 0), ("TWD", 2), ("SGD", 2), ("AUD", 2)];

impl Currency {
    /// Japanese yen: whole yen, the default.
    pub const JPY: Currency = Currency { code: *b"JPY", exponent: 0 };

    /// The ISO 4217 code.
    pub fn code(&self) -> &str {
        std::str::from_utf8(&self.code).unwrap_or("???")
    }

    /// Decimal digits of the minor unit (0 for JPY, 2 for USD).
    pub fn exponent(&self) -> u32 {
        u32::from(self.exponent)
    }
}

impl FromStr for Currency {
    type Err = BillingError;
    fn from_str(s: &str) -> Result<Self, BillingError> {
        let upper = s.to_ascii_uppercase();
        KNOWN
            .iter()
            .find(|(code, _)| *code == upper)
            .map(|(code, exponent)| {
                let b = code.as_bytes();
                Currency { code: [b[0], b[1], b[2]], exponent: *exponent }
            })
            .ok_or_else(|| BillingError::UnknownCurrency(s.chars().take(16).collect()))
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl fmt::Debug for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// An amount of money in a currency's minor unit.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Money {
    minor: i64,
    currency: Currency,
}

impl Money {
    /// `minor` minor units of `currency`.
    pub fn new(minor: i64, currency: Currency) -> Self {
        Self { minor, currency }
    }

    /// Zero.
    pub fn zero(currency: Currency) -> Self {
        Self { minor: 0, currency }
    }

    /// The amount in minor units.
    pub fn minor(self) -> i64 {
        self.minor
    }

    /// The currency.
    pub fn currency(self) -> Currency {
        self.currency
    }

    /// The sum, or why there is none (different currencies, overflow).
    pub fn checked_add(self, other: Money) -> Result<Money, BillingError> {
        if self.currency != other.currency {
            return Err(BillingError::CurrencyMismatch {
                left: other.currency.code().into(),
                right: self.currency.code().into(),
            });
        }
        let minor = self.minor.checked_add(other.minor).ok_or(BillingError::TooLarge { what: "the sum" })?;
        Ok(Self { minor, currency: self.currency })
    }

    /// Parses a decimal amount in major units ("1800", "12.34") for `what`.
    pub fn parse(text: &str, currency: Currency, what: &'static str) -> Result<Money, BillingError> {
        let minor = parse_scaled(text, currency, currency.exponent(), what)?;
        Ok(Self { minor, currency })
    }

    /// The amount in major units, exactly ("1800" for JPY, "12.34" for USD).
    pub fn to_decimal(self) -> String {
        format_scaled(self.minor, self.currency.exponent())
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.to_decimal(), self.currency)
    }
}

/// A price per unit-hour (per hour, or per GiB-hour), in millionths of the minor unit.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Default)]
pub struct Rate(i64);

impl Rate {
    /// A rate of `micro` millionths of a minor unit per unit-hour.
    pub fn from_micro(micro: i64) -> Self {
        Self(micro)
    }

    /// `minor` whole minor units per unit-hour.
    pub fn from_minor(minor: i64) -> Self {
        Self(minor.saturating_mul(RATE_SCALE))
    }

    /// Millionths of a minor unit per unit-hour.
    pub fn micro(self) -> i64 {
        self.0
    }

    /// Parses a decimal price in major units ("5", "0.05"), exact to a millionth of the minor unit.
    pub fn parse(text: &str, currency: Currency) -> Result<Rate, BillingError> {
        let digits = currency.exponent() + 6;
        let micro = parse_scaled(text, currency, digits, "unit_price")?;
        if micro > MAX_RATE_MICRO {
            return Err(BillingError::TooLarge { what: "unit_price" });
        }
        Ok(Self(micro))
    }

    /// The price in major units, exactly, without trailing zeros ("5", "0.05").
    pub fn to_decimal(self, currency: Currency) -> String {
        let full = format_scaled(self.0, currency.exponent() + 6);
        if full.contains('.') {
            full.trim_end_matches('0').trim_end_matches('.').to_owned()
        } else {
            full
        }
    }
}

/// `numer / denom` rounded half away from zero. `denom` must be positive.
pub fn round_half_up(numer: i128, denom: i128) -> i128 {
    debug_assert!(denom > 0);
    let q = numer / denom;
    let r = numer % denom;
    if 2 * r.abs() >= denom {
        q + numer.signum()
    } else {
        q
    }
}

/// The exact value of `unit_seconds` unit-seconds at `rate`, as the numerator
/// of a fraction over `hour_secs × RATE_SCALE` (see [`cumulative_amount`]).
pub fn exact_value(rate: Rate, unit_seconds: i64) -> i128 {
    i128::from(rate.micro()) * i128::from(unit_seconds)
}

/// What a line charges when `exact` (an [`exact_value`]) is added to the
/// month's running exact sum `before`: the growth of the rounded sum,
/// `round(before + exact) - round(before)` (the first of the two places the
/// rounding rule applies). Summed over a month it telescopes to the month's
/// exact usage rounded once.
pub fn cumulative_amount(before: i128, exact: i128, hour_secs: i64) -> i64 {
    let denom = i128::from(hour_secs.max(1)) * i128::from(RATE_SCALE);
    saturate(round_half_up(before.saturating_add(exact), denom) - round_half_up(before, denom))
}

/// What `unit_seconds` unit-seconds cost at `rate` per unit-hour of `hour_secs`
/// seconds, in minor units, rounded on their own (estimates of whole hours).
pub fn line_amount(rate: Rate, unit_seconds: i64, hour_secs: i64) -> i64 {
    let exact_numer = i128::from(rate.micro()) * i128::from(unit_seconds);
    let denom = i128::from(hour_secs.max(1)) * i128::from(RATE_SCALE);
    saturate(round_half_up(exact_numer, denom))
}

/// The tax on `subtotal` at `rate_bp` basis points (1000 = 10%): the second
/// and last place the rounding rule applies.
pub fn tax(subtotal: i64, rate_bp: u32) -> i64 {
    saturate(round_half_up(i128::from(subtotal) * i128::from(rate_bp), 10_000))
}

fn saturate(v: i128) -> i64 {
    i64::try_from(v).unwrap_or(if v < 0 { i64::MIN } else { i64::MAX })
}

/// Parses a non-negative decimal with at most `digits` fraction digits into an
/// integer scaled by 10^digits.
fn parse_scaled(text: &str, currency: Currency, digits: u32, what: &'static str) -> Result<i64, BillingError> {
    let bad =
        || BillingError::BadAmount { value: text.chars().take(32).collect(), currency: currency.code().into(), digits };
    let t = text.trim();
    if let Some(rest) = t.strip_prefix('-') {
        if !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
            return Err(BillingError::Negative { what, value: t.into() });
        }
        return Err(bad());
    }
    let (int, frac) = match t.split_once('.') {
        Some((i, f)) => (i, f),
        None => (t, ""),
    };
    if int.is_empty() && frac.is_empty()
        || !int.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
        || (t.contains('.') && frac.is_empty())
    {
        return Err(bad());
    }
    let frac = frac.trim_end_matches('0');
    if frac.len() > digits as usize {
        return Err(bad());
    }
    let scale = 10i128.pow(digits);
    let int_v: i128 = if int.is_empty() { 0 } else { int.parse().map_err(|_| BillingError::TooLarge { what })? };
    let frac_v: i128 = if frac.is_empty() {
        0
    } else {
        let f: i128 = frac.parse().map_err(|_| bad())?;
        f * 10i128.pow(digits - frac.len() as u32)
    };
    let v = int_v.checked_mul(scale).and_then(|v| v.checked_add(frac_v)).ok_or(BillingError::TooLarge { what })?;
    i64::try_from(v).map_err(|_| BillingError::TooLarge { what })
}

/// `v / 10^digits` as an exact decimal string.
fn format_scaled(v: i64, digits: u32) -> String {
    if digits == 0 {
        return v.to_string();
    }
    let sign = if v < 0 { "-" } else { "" };
    let a = i128::from(v).unsigned_abs();
    let scale = 10u128.pow(digits);
    format!("{sign}{}.{:0width$}", a / scale, a % scale, width = digits as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usd() -> Currency {
        "usd".parse().unwrap()
    }

    #[test]
    fn rounding_is_half_away_from_zero() {
        let cases = [(5, 10, 1), (4, 10, 0), (15, 10, 2), (-5, 10, -1), (-4, 10, 0), (7, 2, 4), (0, 3, 0)];
        for (n, d, want) in cases {
            assert_eq!(round_half_up(n, d), want, "{n}/{d}");
        }
    }

    #[test]
    fn line_amounts_round_once_from_the_exact_product() {
        // 5 JPY/h for 30 min: 2.5 -> 3.
        assert_eq!(line_amount(Rate::from_minor(5), 1800, 3600), 3);
        // 5 JPY/h for 1 s: 0.00138 -> 0.
        assert_eq!(line_amount(Rate::from_minor(5), 1, 3600), 0);
        // 0.05 JPY per GiB-hour for 100 GiB for one hour: 5.
        let r = Rate::parse("0.05", Currency::JPY).unwrap();
        assert_eq!(line_amount(r, 100 * 3600, 3600), 5);
        // Rounding the per-second price first would give 0; the exact product gives 5.
        assert_eq!(line_amount(r, 100 * 3599, 3600), 5);
    }

    #[test]
    fn cumulative_amounts_round_the_running_sum_once() {
        // 2 JPY/h for 0.19 h, ten times: each piece alone rounds to 0, the sum is 3.8 -> 4.
        let rate = Rate::from_minor(2);
        let piece = exact_value(rate, 684);
        let mut before = 0i128;
        let mut charged = 0;
        for _ in 0..10 {
            charged += cumulative_amount(before, piece, 3600);
            before += piece;
        }
        assert_eq!(charged, 4);
        assert_eq!(line_amount(rate, 684, 3600), 0, "rounded alone, each piece was free");
        // Half an hour at 5 JPY/h twice: 3 then 2 (2.5 -> 3, 5.0 -> 5), never 3 + 3.
        let half = exact_value(Rate::from_minor(5), 1800);
        assert_eq!((cumulative_amount(0, half, 3600), cumulative_amount(half, half, 3600)), (3, 2));
    }

    #[test]
    fn tax_rounds_half_up() {
        assert_eq!(tax(1234, 1000), 123); // 123.4
        assert_eq!(tax(1235, 1000), 124); // 123.5
        assert_eq!(tax(0, 1000), 0);
        assert_eq!(tax(-15, 1000), -2); // credits round away from zero too
    }

    #[test]
    fn parse_and_print_amounts() {
        assert_eq!(Money::parse("1800", Currency::JPY, "cap").unwrap().minor(), 1800);
        assert_eq!(Money::parse("12.34", usd(), "cap").unwrap().minor(), 1234);
        assert_eq!(Money::parse("12.3", usd(), "cap").unwrap().to_decimal(), "12.30");
        assert!(matches!(Money::parse("1.5", Currency::JPY, "cap"), Err(BillingError::BadAmount { .. })));
        assert!(matches!(
            Money::parse("-1", Currency::JPY, "daily_cap"),
            Err(BillingError::Negative { what: "daily_cap", .. })
        ));
        for bad in ["", ".", "1.", "abc", "1e3", "1,000", "--1", "99999999999999999999999"] {
            assert!(Money::parse(bad, Currency::JPY, "cap").is_err(), "{bad:?}");
        }
        assert_eq!(Money::new(-5, usd()).to_decimal(), "-0.05");
        assert_eq!(Money::new(1234, usd()).to_string(), "12.34 USD");
    }

    #[test]
    fn rates_are_exact_below_the_minor_unit() {
        let r = Rate::parse("0.05", Currency::JPY).unwrap();
        assert_eq!(r.micro(), 50_000);
        assert_eq!(r.to_decimal(Currency::JPY), "0.05");
        assert_eq!(Rate::parse("5", Currency::JPY).unwrap().to_decimal(Currency::JPY), "5");
        assert_eq!(Rate::parse("0.000001", Currency::JPY).unwrap().micro(), 1);
        assert!(Rate::parse("0.0000001", Currency::JPY).is_err());
        assert_eq!(Rate::parse("0.015", usd()).unwrap().micro(), 1_500_000);
        assert!(matches!(Rate::parse("-5", Currency::JPY), Err(BillingError::Negative { what: "unit_price", .. })));
        assert!(matches!(Rate::parse("2000000000", Currency::JPY), Err(BillingError::TooLarge { .. })));
    }

    #[test]
    fn money_refuses_to_mix_currencies() {
        let yen = Money::new(1, Currency::JPY);
        assert!(yen.checked_add(Money::new(1, usd())).is_err());
        assert_eq!(yen.checked_add(yen).unwrap().minor(), 2);
        assert!(Money::new(i64::MAX, Currency::JPY).checked_add(yen).is_err());
        assert!("XYZ".parse::<Currency>().is_err());
    }
}
