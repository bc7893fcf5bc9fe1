//! Instances that never reached a host: when the scheduler finds no host (or
//! the `pending` deadline passes), the instance goes to `error` and, in the
//! same transaction, gives back everything its launch claimed: volumes that
//! were attaching to it are `available` again, its ports (addresses, MACs,
//! group memberships) are freed, and its vCPUs and RAM stop counting against
//! the project's quota (`db::quotas::usage` leaves out never-placed errors).
//! Such an instance cannot be started again; it is deleted and launched anew.
//!
//! The giving back is an effect of the lifecycle kernel (`lifecycle::Instance`'s
//! effects: an instance without a host entering `error`), so it happens on
//! whichever path the instance takes there.

use kumo_wire::InstanceState;

use crate::db::instances::InstanceRecord;

/// Whether `rec` is an instance whose launch was given back: it failed
/// before any host took it.
pub fn released(rec: &InstanceRecord) -> bool {
    rec.host_id.is_none() && rec.state == InstanceState::Error
}
