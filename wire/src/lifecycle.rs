//! The instance lifecycle: a closed set of states and one transition function.
//!
//! Every change of an instance's `state` in the controller goes through
//! [`InstanceState::apply`]; a new event or state does not compile until
//! someone decides, in the `match` below, where it may happen.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// What the controller shows as an instance's state.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    ToSchema,
    strum::EnumIter,
    strum::IntoStaticStr,
    strum::VariantArray,
)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum InstanceState {
    /// Recorded, waiting for the scheduler to place it on a host.
    Pending,
    /// Placed on a host; the agent is preparing its disk and starting it.
    Building,
    /// The agent confirmed the domain runs.
    Running,
    /// A stop was asked for; the agent is shutting it down.
    Stopping,
    /// The agent confirmed the domain is shut off.
    Stopped,
    /// A reboot was asked for; the agent is restarting it.
    Rebooting,
    /// A delete was asked for; the agent is removing domain, disk and console log.
    Deleting,
    /// Gone from its host. Kept visible for a while, as EC2 keeps terminated instances.
    Deleted,
    /// Something failed; `state_reason` says what. Start, stop, reboot or delete may recover it.
    Error,
    /// Its host stopped reporting; the instance may or may not still run.
    Unknown,
}

impl InstanceState {
    /// Every state, in declaration order (for exhaustive tests and docs).
    pub const ALL: &'static [InstanceState] = <Self as strum::VariantArray>::VARIANTS;

    /// The state's lowercase name, as stored and shown.
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// Transitional states carry a deadline after which they become `error`.
    pub fn is_transitional(self) -> bool {
        matches!(self, Self::Pending | Self::Building | Self::Stopping | Self::Rebooting | Self::Deleting)
    }

    /// The state after `event`, or why `event` is not allowed in this state.
    ///
    /// One arm per event, each naming every state (no wildcard): a new state
    /// or event does not compile until someone decides where it may happen.
    /// `every_state_event_pair_matches_the_table` checks each pair.
    pub fn apply(self, event: LifecycleEvent) -> Result<InstanceState, IllegalTransition> {
        use InstanceState as S;
        use LifecycleEvent as E;
        let next = match event {
            // The scheduler.
            E::Placed => match self {
                S::Pending => Some(S::Building),
                S::Building
                | S::Running
                | S::Stopping
                | S::Stopped
                | S::Rebooting
                | S::Deleting
                | S::Deleted
                | S::Error
                | S::Unknown => None,
            },
            E::NoValidHost => match self {
                S::Pending => Some(S::Error),
                S::Building
                | S::Running
                | S::Stopping
                | S::Stopped
                | S::Rebooting
                | S::Deleting
                | S::Deleted
                | S::Error
                | S::Unknown => None,
            },
            E::Rescheduled => match self {
                S::Error => Some(S::Pending),
                S::Pending
                | S::Building
                | S::Running
                | S::Stopping
                | S::Stopped
                | S::Rebooting
                | S::Deleting
                | S::Deleted
                | S::Unknown => None,
            },

            // Users. Repeating a request that is already being carried out is a no-op.
            E::DeleteRequested => match self {
                S::Pending | S::Deleted => Some(S::Deleted),
                S::Building
                | S::Running
                | S::Stopping
                | S::Stopped
                | S::Rebooting
                | S::Deleting
                | S::Error
                | S::Unknown => Some(S::Deleting),
            },
            E::StopRequested => match self {
                S::Building | S::Running | S::Rebooting | S::Error | S::Unknown | S::Stopping => Some(S::Stopping),
                S::Stopped => Some(S::Stopped),
                S::Pending | S::Deleting | S::Deleted => None,
            },
            E::StartRequested => match self {
                S::Stopped | S::Error | S::Unknown | S::Building => Some(S::Building),
                S::Running => Some(S::Running),
                S::Pending | S::Stopping | S::Rebooting | S::Deleting | S::Deleted => None,
            },
            E::RebootRequested => match self {
                S::Running | S::Error | S::Unknown | S::Rebooting => Some(S::Rebooting),
                S::Pending | S::Building | S::Stopping | S::Stopped | S::Deleting | S::Deleted => None,
            },

            // The agent, reporting on the current generation of the desired state.
            E::ObservedRunning => match self {
                S::Building | S::Running | S::Rebooting | S::Error | S::Unknown => Some(S::Running),
                S::Pending | S::Stopping | S::Stopped | S::Deleting | S::Deleted => None,
            },
            E::ObservedStopped => match self {
                S::Stopping | S::Stopped | S::Error | S::Unknown => Some(S::Stopped),
                S::Pending | S::Building | S::Running | S::Rebooting | S::Deleting | S::Deleted => None,
            },
            E::GuestPoweredOff | E::HostRebooted => match self {
                S::Building | S::Running | S::Rebooting | S::Unknown => Some(S::Stopped),
                S::Pending | S::Stopping | S::Stopped | S::Deleting | S::Deleted | S::Error => None,
            },
            E::ObservedGone => match self {
                S::Deleting | S::Error | S::Unknown => Some(S::Deleted),
                S::Pending | S::Building | S::Running | S::Stopping | S::Stopped | S::Rebooting | S::Deleted => None,
            },
            E::AgentFailed => match self {
                S::Building
                | S::Running
                | S::Stopping
                | S::Stopped
                | S::Rebooting
                | S::Deleting
                | S::Unknown
                | S::Error => Some(S::Error),
                S::Pending | S::Deleted => None,
            },

            // The controller's watchdogs.
            E::DeadlinePassed => match self {
                S::Pending | S::Building | S::Stopping | S::Rebooting | S::Deleting => Some(S::Error),
                S::Running | S::Stopped | S::Deleted | S::Error | S::Unknown => None,
            },
            E::HostLost => match self {
                S::Building
                | S::Running
                | S::Stopping
                | S::Stopped
                | S::Rebooting
                | S::Deleting
                | S::Error
                | S::Unknown => Some(S::Unknown),
                S::Pending | S::Deleted => None,
            },
        };
        next.ok_or(IllegalTransition { from: self, event })
    }
}

impl fmt::Display for InstanceState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A stored state name that is not one of [`InstanceState::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown instance state '{0}'")]
pub struct UnknownState(pub String);

impl FromStr for InstanceState {
    type Err = UnknownState;
    fn from_str(s: &str) -> Result<Self, UnknownState> {
        Self::ALL.iter().copied().find(|st| st.as_str() == s).ok_or_else(|| UnknownState(s.to_owned()))
    }
}

/// What the tenant wants the instance to be; the agent converges the host to it.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    ToSchema,
    strum::EnumIter,
    strum::IntoStaticStr,
    strum::VariantArray,
)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum DesiredPower {
    /// Defined and running.
    Running,
    /// Defined, disk kept, not running.
    Stopped,
    /// Domain, disk and console log removed.
    Deleted,
}

impl DesiredPower {
    /// The lowercase name, as stored and shown.
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

impl fmt::Display for DesiredPower {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DesiredPower {
    type Err = UnknownState;
    fn from_str(s: &str) -> Result<Self, UnknownState> {
        match s {
            "running" => Ok(Self::Running),
            "stopped" => Ok(Self::Stopped),
            "deleted" => Ok(Self::Deleted),
            other => Err(UnknownState(other.to_owned())),
        }
    }
}

/// Everything that can move an instance from one state to another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, strum::EnumIter)]
#[serde(rename_all = "snake_case")]
pub enum LifecycleEvent {
    /// The scheduler claimed capacity on a host.
    Placed,
    /// The scheduler found no host with room.
    NoValidHost,
    /// A start of an instance that never got a host sends it back to the scheduler.
    Rescheduled,
    /// A user asked to stop.
    StopRequested,
    /// A user asked to start.
    StartRequested,
    /// A user asked to reboot.
    RebootRequested,
    /// A user asked to delete.
    DeleteRequested,
    /// The agent reports the domain running at the current generation.
    ObservedRunning,
    /// The agent reports the domain shut off at the current generation, as desired.
    ObservedStopped,
    /// The domain shut off although it should run: the guest powered itself off.
    GuestPoweredOff,
    /// The agent reports domain, disk and console log gone.
    ObservedGone,
    /// The agent failed to carry out the current generation.
    AgentFailed,
    /// A transitional state outlived its deadline.
    DeadlinePassed,
    /// The instance's host stopped heartbeating.
    HostLost,
    /// The host rebooted under a running instance: it was off from the boot
    /// on (the controller then asks for it to be started again).
    HostRebooted,
}

/// An event that is not allowed in the instance's current state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("instance is {from}: {event:?} is not allowed")]
pub struct IllegalTransition {
    /// The state the instance was in.
    pub from: InstanceState,
    /// The rejected event.
    pub event: LifecycleEvent,
}

#[cfg(test)]
mod tests {
    use super::*;
    use strum::IntoEnumIterator;
    use InstanceState as S;
    use LifecycleEvent as E;

    /// Every event, in declaration order: the table's columns.
    fn events() -> Vec<LifecycleEvent> {
        E::iter().collect()
    }

    /// The whole table, written out: one row per state, one column per event in
    /// declaration order; `-` marks an illegal transition.
    const TABLE: &str = "
pending   building error - - - - deleted - - - - - error - -
building  - - - stopping building - deleting running - stopped - error error unknown stopped
running   - - - stopping running rebooting deleting running - stopped - error - unknown stopped
stopping  - - - stopping - - deleting - stopped - - error error unknown -
stopped   - - - stopped building - deleting - stopped - - error - unknown -
rebooting - - - stopping - rebooting deleting running - stopped - error error unknown stopped
deleting  - - - - - - deleting - - - deleted error error unknown -
deleted   - - - - - - deleted - - - - - - - -
error     - - pending stopping building rebooting deleting running stopped - deleted error - unknown -
unknown   - - - stopping building rebooting deleting running stopped stopped deleted error - unknown stopped
";

    #[test]
    fn every_state_event_pair_matches_the_table() {
        let rows: Vec<&str> = TABLE.lines().filter(|l| !l.trim().is_empty()).collect();
        let states: Vec<InstanceState> = S::iter().collect();
        assert_eq!(rows.len(), states.len());
        let events = events();
        for (row, state) in rows.into_iter().zip(states) {
            let mut cells = row.split_whitespace();
            let from: InstanceState = cells.next().unwrap().parse().unwrap();
            assert_eq!(from, state, "rows follow the declaration order");
            let cells: Vec<&str> = cells.collect();
            assert_eq!(cells.len(), events.len(), "row for {from}");
            for (event, cell) in events.iter().zip(cells) {
                let got = from.apply(*event).map(|s| s.to_string()).unwrap_or_else(|_| "-".into());
                assert_eq!(got, cell, "{from} + {event:?}");
            }
        }
    }

    #[test]
    fn only_transitional_states_time_out() {
        for s in S::iter() {
            assert_eq!(s.apply(E::DeadlinePassed).is_ok(), s.is_transitional(), "{s}");
        }
    }

    #[test]
    fn deleted_is_terminal() {
        for e in E::iter() {
            if e != E::DeleteRequested {
                assert!(S::Deleted.apply(e).is_err(), "{e:?}");
            }
        }
    }

    #[test]
    fn state_names_round_trip() {
        assert_eq!(S::ALL.to_vec(), S::iter().collect::<Vec<_>>(), "ALL lists every state in order");
        for s in S::iter() {
            assert_eq!(s.as_str().parse::<InstanceState>(), Ok(s));
        }
        assert!("exploded".parse::<InstanceState>().is_err());
        for d in DesiredPower::iter() {
            assert_eq!(d.as_str().parse::<DesiredPower>(), Ok(d));
            assert_eq!(serde_json::to_value(d).unwrap(), serde_json::Value::String(d.as_str().into()));
        }
    }
}
