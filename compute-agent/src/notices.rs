//! What the agent noticed about instances that their users should see: a
//! guest forced off because it ignored ACPI, a guest that never took its DHCP
//! lease. Notices wait here until a sync carrying them succeeds; the
//! controller records each key once, as an event of the instance.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use kumo_wire::agent::InstanceNotice;
use kumo_wire::InstanceId;

/// The notices not yet acknowledged by the controller. Clones share them.
#[derive(Debug, Clone, Default)]
pub struct Notices {
    inner: Arc<Mutex<BTreeMap<(InstanceId, String), InstanceNotice>>>,
}

impl Notices {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<(InstanceId, String), InstanceNotice>> {
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Adds a notice (a second one with the same instance and key replaces it).
    pub fn push(&self, notice: InstanceNotice) {
        tracing::warn!(instance = %notice.instance, action = %notice.action, message = %notice.message, "notice");
        self.lock().insert((notice.instance.clone(), notice.key.clone()), notice);
    }

    /// Whether a notice with this key waits (or waited: see [`Self::acknowledge`]).
    pub fn contains(&self, instance: &InstanceId, key: &str) -> bool {
        self.lock().contains_key(&(instance.clone(), key.to_owned()))
    }

    /// Every waiting notice, in order.
    pub fn pending(&self) -> Vec<InstanceNotice> {
        self.lock().values().cloned().collect()
    }

    /// Drops the notices a successful sync carried.
    pub fn acknowledge(&self, sent: &[InstanceNotice]) {
        let mut map = self.lock();
        for n in sent {
            map.remove(&(n.instance.clone(), n.key.clone()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kumo_wire::Timestamp;

    fn notice(n: u32, key: &str) -> InstanceNotice {
        InstanceNotice {
            instance: crate::testing::instance_id(n),
            key: key.into(),
            action: kumo_wire::agent::NOTICE_FORCED_RESET.into(),
            message: format!("message {key}"),
            at: Timestamp(1),
        }
    }

    #[test]
    fn notices_wait_until_a_sync_carried_them() {
        let notices = Notices::default();
        notices.push(notice(1, "forced_reset:2"));
        notices.push(notice(1, "forced_reset:2"));
        let sent = notices.pending();
        assert_eq!(sent.len(), 1, "one per key");
        notices.push(notice(2, "forced_reset:5"));
        notices.acknowledge(&sent);
        let left = notices.pending();
        assert_eq!(left, vec![notice(2, "forced_reset:5")], "only what was sent is dropped");
        assert!(!notices.contains(&crate::testing::instance_id(1), "forced_reset:2"));
    }
}
