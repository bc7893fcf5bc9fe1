//! Metering: what a resource is doing, second by second, from its lifecycle events.
//!
//! A resource's history is a list of [`Reading`]s, each saying "from second
//! `at`, the meter reads `meter` with `quantity` units" (1 for an instance,
//! GiB for a volume). Readings are ordered by `(at, seq)`, never by arrival,
//! so events that arrive late or out of order give the same usage.

use std::fmt;
use std::str::FromStr;

use kumo_wire::InstanceState;

/// What a resource's meter reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Meter {
    /// Not billed: not yet on a host, failed, or on a host that stopped reporting.
    #[default]
    Off,
    /// Stopped: billed only where the price item says so.
    Stopped,
    /// Running (for storage: existing): billed.
    Running,
    /// Deleted; nothing more will be billed.
    Gone,
}

impl Meter {
    /// The lowercase name, as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::Stopped => "stopped",
            Self::Running => "running",
            Self::Gone => "gone",
        }
    }
}

impl fmt::Display for Meter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Meter {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "off" => Ok(Self::Off),
            "stopped" => Ok(Self::Stopped),
            "running" => Ok(Self::Running),
            "gone" => Ok(Self::Gone),
            other => Err(format!("unknown meter '{other}'")),
        }
    }
}

/// The meter an instance's new state sets, or `None` when the state keeps
/// the meter as it was. Only confirmed states move the meter: `running` and
/// `stopped` are what the agent saw, `deleted` is the agent confirming the
/// domain gone. A transitional state (`building`, `stopping`, `rebooting`,
/// `deleting`) holds the previous meter until the agent confirms the outcome,
/// so billing follows the agent's clock, not the API call's. `unknown` (host
/// lost), `error` and `pending` are not billed.
pub fn meter_for(state: InstanceState) -> Option<Meter> {
    match state {
        InstanceState::Running => Some(Meter::Running),
        InstanceState::Stopped => Some(Meter::Stopped),
        InstanceState::Deleted => Some(Meter::Gone),
        InstanceState::Pending | InstanceState::Error | InstanceState::Unknown => Some(Meter::Off),
        InstanceState::Building | InstanceState::Stopping | InstanceState::Rebooting | InstanceState::Deleting => None,
    }
}

/// From second `at` on, the meter reads `meter` with `quantity` units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reading {
    /// Whole seconds since the epoch (when the agent confirmed it).
    pub at: i64,
    /// Tie-breaker for equal `at` (the event id).
    pub seq: i64,
    /// The new meter.
    pub meter: Meter,
    /// Units: 1 for an instance or a floating IP, GiB for storage.
    pub quantity: u64,
}

/// A meter and its quantity at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Level {
    /// The meter.
    pub meter: Meter,
    /// Its units.
    pub quantity: u64,
}

/// What one resource used in one hour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HourUsage {
    /// Seconds running.
    pub running_secs: i64,
    /// Seconds stopped.
    pub stopped_secs: i64,
    /// Units × seconds running.
    pub running_unit_secs: i64,
    /// Units × seconds stopped.
    pub stopped_unit_secs: i64,
}

/// Sorts readings into billing order.
pub fn sort(readings: &mut [Reading]) {
    readings.sort_by_key(|r| (r.at, r.seq));
}

/// The level in force just before second `t`, from a sorted history.
pub fn level_before(history: &[Reading], t: i64) -> Level {
    let idx = history.partition_point(|r| r.at < t);
    idx.checked_sub(1).map_or_else(Level::default, |i| Level { meter: history[i].meter, quantity: history[i].quantity })
}

/// The usage in `[start, end)` starting from `level`, with the sorted
/// `readings` of that window (others are ignored); also the level at `end`.
pub fn usage_between(mut level: Level, readings: &[Reading], start: i64, end: i64) -> (HourUsage, Level) {
    let mut usage = HourUsage::default();
    let mut from = start;
    for r in readings.iter().filter(|r| r.at >= start && r.at < end) {
        add(&mut usage, level, r.at - from);
        from = r.at;
        level = Level { meter: r.meter, quantity: r.quantity };
    }
    add(&mut usage, level, end - from);
    (usage, level)
}

fn add(usage: &mut HourUsage, level: Level, secs: i64) {
    let units = i64::try_from(level.quantity).unwrap_or(i64::MAX).saturating_mul(secs);
    match level.meter {
        Meter::Running => {
            usage.running_secs += secs;
            usage.running_unit_secs = usage.running_unit_secs.saturating_add(units);
        }
        Meter::Stopped => {
            usage.stopped_secs += secs;
            usage.stopped_unit_secs = usage.stopped_unit_secs.saturating_add(units);
        }
        Meter::Off | Meter::Gone => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(at: i64, meter: Meter, quantity: u64) -> Reading {
        Reading { at, seq: at, meter, quantity }
    }

    #[test]
    fn every_instance_state_has_a_decided_meter() {
        let table = [
            (InstanceState::Pending, Some(Meter::Off)),
            (InstanceState::Building, None),
            (InstanceState::Running, Some(Meter::Running)),
            (InstanceState::Stopping, None),
            (InstanceState::Stopped, Some(Meter::Stopped)),
            (InstanceState::Rebooting, None),
            (InstanceState::Deleting, None),
            (InstanceState::Deleted, Some(Meter::Gone)),
            (InstanceState::Error, Some(Meter::Off)),
            (InstanceState::Unknown, Some(Meter::Off)),
        ];
        assert_eq!(table.len(), InstanceState::ALL.len());
        for (state, want) in table {
            assert_eq!(meter_for(state), want, "{state}");
        }
    }

    #[test]
    fn usage_splits_the_hour_at_each_reading() {
        let readings = [r(100, Meter::Running, 1), r(1000, Meter::Stopped, 1), r(3000, Meter::Gone, 0)];
        let (u, end) = usage_between(Level::default(), &readings, 0, 3600);
        assert_eq!((u.running_secs, u.stopped_secs), (900, 2000));
        assert_eq!(end.meter, Meter::Gone);
    }

    #[test]
    fn quantities_weigh_the_seconds() {
        // A 10 GiB volume extended to 30 GiB at 20 minutes past.
        let readings = [r(1200, Meter::Running, 30)];
        let (u, _) = usage_between(Level { meter: Meter::Running, quantity: 10 }, &readings, 0, 3600);
        assert_eq!((u.running_secs, u.running_unit_secs), (3600, 10 * 1200 + 30 * 2400));
    }

    #[test]
    fn level_before_uses_only_earlier_readings() {
        let history = [r(10, Meter::Running, 1), r(20, Meter::Stopped, 1)];
        assert_eq!(level_before(&history, 10).meter, Meter::Off);
        assert_eq!(level_before(&history, 11).meter, Meter::Running);
        assert_eq!(level_before(&history, 21).meter, Meter::Stopped);
    }
}
