//! Billing: price list, metering from lifecycle events, the hourly ledger (filled in by the billing work).
