//! The one error type of the billing core.

/// Everything the billing core refuses. Each message is a sentence a user can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BillingError {
    /// A price, cap or amount that is not a plain decimal number.
    #[error("'{value}' is not an amount of {currency} (expected a decimal number with at most {digits} digits after the point)")]
    BadAmount {
        /// The rejected text.
        value: String,
        /// The currency code.
        currency: String,
        /// How many fraction digits are allowed.
        digits: u32,
    },
    /// A price or cap below zero.
    #[error("{what} must not be negative, not {value}")]
    Negative {
        /// What it was, e.g. "unit_price".
        what: &'static str,
        /// The rejected value.
        value: String,
    },
    /// An amount too large to bill.
    #[error("{what} is too large")]
    TooLarge {
        /// What it was.
        what: &'static str,
    },
    /// A currency code Kumo does not know the minor unit of.
    #[error("unknown currency '{0}' (known: JPY, USD, EUR, GBP, CNY, KRW, TWD, SGD, AUD)")]
    UnknownCurrency(String),
    /// Two amounts in different currencies met.
    #[error("cannot add {left} to {right}")]
    CurrencyMismatch {
        /// One currency.
        left: String,
        /// The other.
        right: String,
    },
    /// A price item that is not one of the billable kinds.
    #[error("'{0}' is not a price item (expected flavor:<name>, volume, snapshot, floating-ip or image)")]
    BadItem(String),
    /// A month that is not `YYYY-MM`.
    #[error("'{0}' is not a month (expected YYYY-MM, e.g. 2026-11)")]
    BadMonth(String),
    /// A price version that starts inside or before an existing version of the same item.
    #[error("a price version for {item} already takes effect at {existing}; a new version must start after it")]
    OverlappingVersion {
        /// The item.
        item: String,
        /// When the existing version takes effect (RFC 3339).
        existing: String,
    },
    /// A price version that would change the price of hours already billed or under way.
    #[error("a new price must take effect at or after {earliest}, the next hour not yet begun; past charges are never rewritten")]
    EffectiveInPast {
        /// The earliest allowed start (RFC 3339).
        earliest: String,
    },
    /// A time that is not the start of a billing hour.
    #[error("{0} is not the start of an hour")]
    NotHourStart(String),
    /// A calendar setting that cannot work.
    #[error("invalid billing calendar: {0}")]
    BadCalendar(String),
}
