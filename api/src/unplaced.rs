//! Instances that never reached a host: when the scheduler finds no host (or
//! the `pending` deadline passes), the instance goes to `error` and, in the
//! same transaction, gives back everything its launch claimed: volumes that
//! were attaching to it are `available` again, its ports (addresses, MACs,
//! group memberships) are freed, and its vCPUs and RAM stop counting against
//! the project's quota (`db::quotas::usage` leaves out never-placed errors).
//! Such an instance cannot be started again; it is deleted and launched anew.

use kumo_wire::{InstanceId, InstanceState};

use crate::db::instances::InstanceRecord;
use crate::db::DbError;
use crate::error::ApiError;
use crate::state::AppState;
use crate::transition::{self, Change, TransitionError};

/// How often a compare-and-swap conflict is retried before giving up.
const CAS_ATTEMPTS: usize = 8;

/// Whether `rec` is an instance whose launch was given back: it failed
/// before any host took it.
pub fn released(rec: &InstanceRecord) -> bool {
    rec.host_id.is_none() && rec.state == InstanceState::Error
}

/// Applies `change` (which must end an unplaced instance in `error`) to
/// instance `id`, lets `edit` adjust the record, and releases the launch's
/// volumes and ports in the same transaction. Retries when another writer
/// got there first.
pub async fn fail(
    state: &AppState,
    id: &InstanceId,
    change: &Change,
    mut edit: impl FnMut(&InstanceRecord, &mut InstanceRecord),
) -> Result<InstanceRecord, TransitionError> {
    for _ in 0..CAS_ATTEMPTS {
        let old = state
            .db
            .instance(id)
            .await
            .map_err(ApiError::from)?
            .ok_or_else(|| TransitionError::NotFound(id.clone()))?;
        let mut new = transition::prepare(&state.config, &old, change)?;
        edit(&old, &mut new);
        if new == old {
            return Ok(old);
        }
        let release = old.host_id.is_none() && new.state == InstanceState::Error;
        // Freeing the ports changes what rules naming their groups resolve to elsewhere.
        let mut wake = if release { crate::networks::hosts_seeing(state, &old.id).await? } else { Vec::new() };
        let mut tx = state.db.begin_write().await.map_err(ApiError::from)?;
        if !transition::commit(&mut tx, &old, &mut new, change).await? {
            continue;
        }
        if release {
            crate::db::networks::release_instance_ports(&mut tx, &old.id).await.map_err(ApiError::from)?;
            wake.extend(crate::volumes::release_unplaced(&mut tx, state, &old.id).await?);
        }
        tx.commit().await.map_err(|e| ApiError::from(DbError::from(e)))?;
        transition::wake(state, &new);
        wake.sort();
        wake.dedup();
        crate::networks::security_groups::wake(state, &wake);
        return Ok(new);
    }
    Err(TransitionError::Api(ApiError::Unavailable(format!("instance {id} is changing too quickly; try again"))))
}
