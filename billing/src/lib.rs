//! Kumo's billing core: money, the versioned price list, metering from
//! lifecycle events, the hourly ledger with daily and monthly caps, invoices.
//!
//! Pure: this crate knows no HTTP, no SQL and no clock. The controller loads
//! events, prices and ledger totals, calls [`close::plan_close`], and writes
//! the plan in one transaction; [`ledger::MemoryLedger`] runs the same
//! procedure in memory for the property tests and the benchmark.
//!
//! Money is exact (see [`money`] for the one rounding rule); the ledger is
//! append-only, each line keyed by (resource, item, hour, usage hour).

pub mod calendar;
pub mod close;
pub mod error;
pub mod estimate;
pub mod invoice;
pub mod ledger;
pub mod money;
pub mod prices;
pub mod usage;

pub use calendar::{Calendar, Month};
pub use close::{Line, Resource};
pub use error::BillingError;
pub use money::{Currency, Money, Rate};
pub use prices::{ItemKey, PriceList, PriceVersion};
pub use usage::{Meter, Reading};
