//! Tells an instance's users when its network is cut off: a port whose
//! firewall rules cannot be applied drops every frame (see
//! `Firewall::apply_isolating`); each change of the set of such ports becomes
//! a notice of the port's instance (`firewall_isolated` with the reason, then
//! `firewall_restored`), sent with the next sync and kept as an event.

use std::collections::BTreeMap;

use kumo_wire::agent::{DesiredInstance, InstanceNotice, NOTICE_FIREWALL_ISOLATED, NOTICE_FIREWALL_RESTORED};
use kumo_wire::{PortId, Timestamp};

/// The notices for going from the isolated ports `before` to `after` (port →
/// reason). A port of no desired instance (deleted meanwhile) tells nobody.
pub fn notices(
    before: &BTreeMap<PortId, String>,
    after: &BTreeMap<PortId, String>,
    desired: &[DesiredInstance],
    now: Timestamp,
) -> Vec<InstanceNotice> {
    let owner = |port: &PortId| desired.iter().find(|d| d.ports.iter().any(|p| &p.id == port));
    let mut out = Vec::new();
    for (port, reason) in after {
        if before.get(port) == Some(reason) {
            continue;
        }
        if let Some(d) = owner(port) {
            out.push(InstanceNotice {
                instance: d.id.clone(),
                key: format!("{NOTICE_FIREWALL_ISOLATED}:{port}:{}", now.millis()),
                action: NOTICE_FIREWALL_ISOLATED.to_owned(),
                message: format!(
                    "network cut off: the firewall rules of port {port} cannot be applied on its host, so all its \
                     traffic is dropped: {reason}"
                ),
                at: now,
            });
        }
    }
    for port in before.keys().filter(|p| !after.contains_key(*p)) {
        if let Some(d) = owner(port) {
            out.push(InstanceNotice {
                instance: d.id.clone(),
                key: format!("{NOTICE_FIREWALL_RESTORED}:{port}:{}", now.millis()),
                action: NOTICE_FIREWALL_RESTORED.to_owned(),
                message: format!(
                    "network no longer cut off: the firewall rules of port {port} apply again (or the port left the host)"
                ),
                at: now,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{desired, instance_id, MemFetcher};
    use kumo_wire::network::DesiredPort;
    use kumo_wire::DesiredPower;

    fn with_port(n: u32) -> DesiredInstance {
        let image = MemFetcher::default().kernel_image(1);
        let mut d = desired(&instance_id(n), 1, DesiredPower::Running, &image);
        d.ports.push(DesiredPort {
            id: port(n),
            network: "net-00000000000000001".parse().expect("network id"),
            mac: format!("02:00:00:00:00:{n:02x}"),
            ip: std::net::Ipv4Addr::new(10, 0, 0, 10 + n as u8),
            ingress: vec![],
            egress: None,
        });
        d
    }

    fn port(n: u32) -> PortId {
        format!("eni-{n:017x}").parse().expect("port id")
    }

    #[test]
    fn a_cut_off_port_is_told_once_with_its_reason_and_again_when_restored() {
        let desired = [with_port(1), with_port(2)];
        let none = BTreeMap::new();
        let cut: BTreeMap<_, _> = [(port(1), "nft: syntax error".to_owned())].into();
        let isolated = notices(&none, &cut, &desired, Timestamp(5));
        assert_eq!(isolated.len(), 1, "{isolated:?}");
        assert_eq!((isolated[0].instance.clone(), isolated[0].action.as_str()), (instance_id(1), "firewall_isolated"));
        assert!(isolated[0].message.contains("nft: syntax error") && isolated[0].message.contains("cut off"));
        assert!(notices(&cut, &cut, &desired, Timestamp(6)).is_empty(), "no change, no notice");
        let restored = notices(&cut, &none, &desired, Timestamp(7));
        assert_eq!(restored.len(), 1, "{restored:?}");
        assert_eq!((restored[0].instance.clone(), restored[0].action.as_str()), (instance_id(1), "firewall_restored"));
        assert_ne!(restored[0].key, isolated[0].key);
        // A new reason is a new notice; a port of no desired instance tells nobody.
        let other: BTreeMap<_, _> = [(port(1), "other".to_owned()), (port(9), "x".to_owned())].into();
        let changed = notices(&cut, &other, &desired, Timestamp(8));
        assert_eq!(changed.len(), 1, "{changed:?}");
        assert!(changed[0].message.contains("other"));
    }
}
