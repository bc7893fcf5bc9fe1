//! The lifecycle events of the event log, as types: the controller's
//! lifecycle kernel writes them (`detail` of an `events` row whose `action` is
//! [`STATE_CHANGED`] or [`REQUESTED`]) and billing reads them back with the
//! same types, so a renamed field fails to compile instead of silently
//! changing invoices. The JSON is the one the log has always held.

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use crate::lifecycle::{DesiredPower, InstanceState, LifecycleEvent};
use crate::storage::{SnapshotEvent, SnapshotState, VolumeEvent, VolumeState};
use crate::InstanceId;

/// `action` of an event that moved a resource's state (billing meters these).
pub const STATE_CHANGED: &str = "state_changed";
/// `action` of an event that was accepted but left the state as it was.
pub const REQUESTED: &str = "requested";

/// One lifecycle event of a resource: which event, from which state to which,
/// why, and what the kind records besides (`extra`, flattened into the same
/// JSON object).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateChanged<S, E, X> {
    /// What happened.
    pub event: E,
    /// The state before.
    pub from: S,
    /// The state after (equal to `from` for a [`REQUESTED`] event).
    pub to: S,
    /// A reason a user can read.
    #[serde(default)]
    pub reason: Option<String>,
    /// The kind's own fields.
    #[serde(flatten)]
    pub extra: X,
}

/// What an instance's event records besides the states.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceDetail {
    /// The desired state after the event.
    pub desired: DesiredPower,
    /// The generation after the event.
    pub generation: u64,
}

/// What a volume's event records besides the states.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeDetail {
    /// The generation after the event.
    pub generation: u64,
    /// The instance it is attached (or attaching) to after the event.
    #[serde(default)]
    pub instance: Option<InstanceId>,
    /// Its size after the event, GiB (billing charges it).
    pub size_gib: u64,
}

/// A snapshot's event records nothing besides the states.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotDetail {}

/// The `detail` of an instance's lifecycle event.
pub type InstanceStateChanged = StateChanged<InstanceState, LifecycleEvent, InstanceDetail>;
/// The `detail` of a volume's lifecycle event.
pub type VolumeStateChanged = StateChanged<VolumeState, VolumeEvent, VolumeDetail>;
/// The `detail` of a snapshot's lifecycle event.
pub type SnapshotStateChanged = StateChanged<SnapshotState, SnapshotEvent, SnapshotDetail>;

/// An image's state as its events record it: the API's `ImageState`, and
/// `deleted` (an image row is kept, marked deleted, for billing).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, strum::EnumIter)]
#[serde(rename_all = "lowercase")]
pub enum ImageLogState {
    /// Waiting for its files.
    Queued,
    /// Launchable.
    Active,
    /// Deleted.
    Deleted,
}

/// The `detail` of an image's `state_changed` event (billing charges private
/// images per GiB-hour of their files).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageStateChanged {
    /// The state before.
    pub from: ImageLogState,
    /// The state after.
    pub to: ImageLogState,
    /// What its files take, GiB (rounded up).
    pub size_gib: u64,
}

/// A floating IP's state in its events: held by a project, or given back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, strum::EnumIter)]
#[serde(rename_all = "lowercase")]
pub enum FloatingIpState {
    /// Allocated to a project (billed from here).
    Allocated,
    /// Released (the row is deleted; the events carry everything).
    Released,
}

/// The `detail` of a floating IP's `state_changed` event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FloatingIpStateChanged {
    /// The state before (`None` at allocation).
    pub from: Option<FloatingIpState>,
    /// The state after.
    pub to: FloatingIpState,
    /// The address.
    pub address: Ipv4Addr,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Rows written before these types existed (by `json!` in the controller) still parse,
    /// and the types write the very same JSON.
    #[test]
    fn the_old_rows_parse_and_the_types_write_the_same_json() {
        let instance = json!({
            "event": "observed_running", "from": "building", "to": "running",
            "desired": "running", "generation": 3, "reason": null,
        });
        let parsed: InstanceStateChanged = serde_json::from_value(instance.clone()).unwrap();
        assert_eq!(parsed.to, InstanceState::Running);
        assert_eq!(parsed.extra, InstanceDetail { desired: DesiredPower::Running, generation: 3 });
        assert_eq!(serde_json::to_value(&parsed).unwrap(), instance);

        let volume = json!({
            "event": "observed_detached", "from": "extending", "to": "available", "generation": 4,
            "instance": null, "size_gib": 20, "reason": "grown",
        });
        let parsed: VolumeStateChanged = serde_json::from_value(volume.clone()).unwrap();
        assert_eq!((parsed.to, parsed.extra.size_gib), (VolumeState::Available, 20));
        assert_eq!(serde_json::to_value(&parsed).unwrap(), volume);

        let snapshot = json!({ "event": "observed_created", "from": "creating", "to": "available", "reason": null });
        let parsed: SnapshotStateChanged = serde_json::from_value(snapshot.clone()).unwrap();
        assert_eq!(parsed.to, SnapshotState::Available);
        assert_eq!(serde_json::to_value(&parsed).unwrap(), snapshot);

        let image = json!({ "from": "queued", "to": "active", "size_gib": 1 });
        let parsed: ImageStateChanged = serde_json::from_value(image.clone()).unwrap();
        assert_eq!((parsed.to, parsed.size_gib), (ImageLogState::Active, 1));
        assert_eq!(serde_json::to_value(&parsed).unwrap(), image);

        for fip in [
            json!({ "from": null, "to": "allocated", "address": "203.0.113.5" }),
            json!({ "from": "allocated", "to": "released", "address": "203.0.113.5" }),
        ] {
            let parsed: FloatingIpStateChanged = serde_json::from_value(fip.clone()).unwrap();
            assert_eq!(serde_json::to_value(&parsed).unwrap(), fip);
        }
    }

    #[test]
    fn a_row_with_an_unknown_state_is_refused() {
        let bad = json!({ "event": "observed_created", "from": "creating", "to": "exploded", "reason": null });
        assert!(serde_json::from_value::<SnapshotStateChanged>(bad).is_err());
    }
}
