//! The price list: per item, a sequence of versions, each in force from its
//! `effective_from` until the next one. Versions are only ever added, and only
//! from an hour that has not begun, so a price change never rewrites a charge.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use crate::calendar::Calendar;
use crate::money::Rate;
use crate::BillingError;

/// Longest flavor name in an item key.
const MAX_FLAVOR_NAME: usize = 63;

/// What a price is for: `flavor:<name>` (per hour), `volume`, `snapshot` and
/// `image` (per GiB-hour; images only when private), `floating-ip` (per hour).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ItemKey(String);

/// The unit a price is per.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// One resource for one hour.
    Hour,
    /// One GiB for one hour.
    GibHour,
}

impl ItemKey {
    /// The item of instances of flavor `name`.
    pub fn flavor(name: &str) -> Result<Self, BillingError> {
        format!("flavor:{name}").parse()
    }

    /// The key as stored and shown.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// What the price is per.
    pub fn unit(&self) -> Unit {
        match self.0.as_str() {
            "volume" | "snapshot" | "image" => Unit::GibHour,
            _ => Unit::Hour,
        }
    }

    /// The flavor name of a flavor item.
    pub fn flavor_name(&self) -> Option<&str> {
        self.0.strip_prefix("flavor:")
    }
}

impl FromStr for ItemKey {
    type Err = BillingError;
    fn from_str(s: &str) -> Result<Self, BillingError> {
        let ok = match s {
            "volume" | "snapshot" | "floating-ip" | "image" => true,
            _ => s.strip_prefix("flavor:").is_some_and(|name| {
                !name.is_empty()
                    && name.len() <= MAX_FLAVOR_NAME
                    && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            }),
        };
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(BillingError::BadItem(s.chars().take(80).collect()))
        }
    }
}

impl fmt::Display for ItemKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ItemKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One version of an item's price.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PriceVersion {
    /// Id (the database's; tests number them by hand).
    pub id: i64,
    /// The item.
    pub item: ItemKey,
    /// The first second (an hour start) it applies to.
    pub effective_from: i64,
    /// Price per unit-hour.
    pub unit_price: Rate,
    /// Most one resource is charged for this item in one day, in minor units.
    pub daily_cap: Option<i64>,
    /// Most one resource is charged for this item in one month, in minor units.
    pub monthly_cap: Option<i64>,
    /// Whether a stopped instance is charged (at the same rate) or free.
    pub charge_stopped: bool,
}

/// Every version of every item.
#[derive(Debug, Clone, Default)]
pub struct PriceList {
    by_item: HashMap<String, Vec<PriceVersion>>,
}

impl PriceList {
    /// A list of `versions` (in any order).
    pub fn new(versions: impl IntoIterator<Item = PriceVersion>) -> Self {
        let mut by_item: HashMap<String, Vec<PriceVersion>> = HashMap::new();
        for v in versions {
            by_item.entry(v.item.as_str().to_owned()).or_default().push(v);
        }
        for list in by_item.values_mut() {
            list.sort_by_key(|v| v.effective_from);
        }
        Self { by_item }
    }

    /// The version of `item` in force at second `t`, if any.
    pub fn at(&self, item: &str, t: i64) -> Option<&PriceVersion> {
        let list = self.by_item.get(item)?;
        let idx = list.partition_point(|v| v.effective_from <= t);
        idx.checked_sub(1).map(|i| &list[i])
    }

    /// Every version, by item then start.
    pub fn versions(&self) -> Vec<&PriceVersion> {
        let mut all: Vec<&PriceVersion> = self.by_item.values().flatten().collect();
        all.sort_by(|a, b| (&a.item, a.effective_from).cmp(&(&b.item, b.effective_from)));
        all
    }

    /// Whether a new version of `item` may take effect at `effective_from`,
    /// given that it is now `now`: it must start an hour that has not begun
    /// and come after every existing version of the item.
    pub fn check_new(&self, item: &ItemKey, effective_from: i64, now: i64, cal: &Calendar) -> Result<(), BillingError> {
        if !cal.is_hour_start(effective_from) {
            return Err(BillingError::NotHourStart(rfc3339(effective_from)));
        }
        let earliest = cal.hour_start(now) + cal.hour_secs();
        if effective_from < earliest {
            return Err(BillingError::EffectiveInPast { earliest: rfc3339(earliest) });
        }
        if let Some(latest) = self.by_item.get(item.as_str()).and_then(|l| l.last()) {
            if latest.effective_from >= effective_from {
                return Err(BillingError::OverlappingVersion {
                    item: item.to_string(),
                    existing: rfc3339(latest.effective_from),
                });
            }
        }
        Ok(())
    }
}

/// Seconds since the epoch as RFC 3339 (UTC), for messages.
pub fn rfc3339(secs: i64) -> String {
    kumo_wire::Timestamp(secs.saturating_mul(1000)).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version(id: i64, item: &str, from: i64, price: i64) -> PriceVersion {
        PriceVersion {
            id,
            item: item.parse().unwrap(),
            effective_from: from,
            unit_price: Rate::from_minor(price),
            daily_cap: None,
            monthly_cap: None,
            charge_stopped: false,
        }
    }

    #[test]
    fn the_version_in_force_is_the_latest_started() {
        let list = PriceList::new([version(2, "flavor:small", 7200, 6), version(1, "flavor:small", 0, 5)]);
        assert_eq!(list.at("flavor:small", 0).map(|v| v.id), Some(1));
        assert_eq!(list.at("flavor:small", 7199).map(|v| v.id), Some(1));
        assert_eq!(list.at("flavor:small", 7200).map(|v| v.id), Some(2));
        assert_eq!(list.at("flavor:small", -1), None);
        assert_eq!(list.at("flavor:large", 0), None);
    }

    #[test]
    fn new_versions_start_in_the_future_after_the_last_one() {
        let cal = Calendar::UTC;
        let list = PriceList::new([version(1, "volume", 36_000, 1)]);
        let item: ItemKey = "volume".parse().unwrap();
        let now = 10_000; // inside the hour starting at 7200
        assert_eq!(list.check_new(&item, 39_600, now, &cal), Ok(()));
        assert!(matches!(list.check_new(&item, 36_000, now, &cal), Err(BillingError::OverlappingVersion { .. })));
        assert!(matches!(list.check_new(&item, 7200, now, &cal), Err(BillingError::EffectiveInPast { .. })));
        assert!(matches!(list.check_new(&item, 39_601, now, &cal), Err(BillingError::NotHourStart(_))));
        let other: ItemKey = "snapshot".parse().unwrap();
        assert_eq!(list.check_new(&other, 10_800, now, &cal), Ok(()));
        let msg = list.check_new(&item, 36_000, now, &cal).unwrap_err().to_string();
        assert_eq!(msg, "a price version for volume already takes effect at 1970-01-01T10:00:00Z; a new version must start after it");
    }

    #[test]
    fn item_keys() {
        for good in ["flavor:small", "flavor:m1.large", "volume", "snapshot", "floating-ip", "image"] {
            assert_eq!(good.parse::<ItemKey>().unwrap().as_str(), good);
        }
        for bad in ["flavor:", "flavor:a b", "disk", "", "Volume"] {
            assert!(bad.parse::<ItemKey>().is_err(), "{bad}");
        }
        assert_eq!("volume".parse::<ItemKey>().unwrap().unit(), Unit::GibHour);
        assert_eq!(ItemKey::flavor("mini").unwrap().unit(), Unit::Hour);
        assert_eq!(ItemKey::flavor("mini").unwrap().flavor_name(), Some("mini"));
    }
}
