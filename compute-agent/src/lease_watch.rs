//! Guests that never took their DHCP lease: the API says `running` with the
//! address, yet the guest has no network (and so no metadata, key or user
//! data). [`LeaseWatch`] notices a port whose guest has run at its current
//! generation for a while without a lease in dnsmasq's lease file, once per
//! port and generation (a reboot or start is a new generation).

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use kumo_wire::agent::{DesiredInstance, InstanceNotice, NOTICE_NO_DHCP_LEASE};
use kumo_wire::network::DesiredPort;
use kumo_wire::{InstanceId, Timestamp};

/// Since when each guest has run at its generation, and the warnings given.
#[derive(Debug, Default)]
pub struct LeaseWatch {
    since: HashMap<InstanceId, (u64, Instant)>,
    warned: HashSet<(InstanceId, u64, String)>,
}

impl LeaseWatch {
    /// The new warnings at `now`. `settled` says whether an instance's guest
    /// runs at its desired generation; `has_lease` whether a port's lease
    /// was taken. `warn_after` zero: never warn.
    pub fn check(
        &mut self,
        desired: &[DesiredInstance],
        settled: impl Fn(&DesiredInstance) -> bool,
        now: Instant,
        warn_after: Duration,
        has_lease: impl Fn(&DesiredPort) -> bool,
    ) -> Vec<InstanceNotice> {
        let mut since = HashMap::new();
        let mut out = Vec::new();
        for d in desired.iter().filter(|d| !d.ports.is_empty() && settled(d)) {
            let start = match self.since.get(&d.id) {
                Some((generation, at)) if *generation == d.generation => *at,
                _ => now,
            };
            since.insert(d.id.clone(), (d.generation, start));
            if warn_after.is_zero() || now.duration_since(start) < warn_after {
                continue;
            }
            for port in &d.ports {
                let key = format!("{NOTICE_NO_DHCP_LEASE}:{}:{}", port.id, d.generation);
                let warned = (d.id.clone(), d.generation, key.clone());
                if self.warned.contains(&warned) || has_lease(port) {
                    continue;
                }
                self.warned.insert(warned);
                out.push(InstanceNotice {
                    instance: d.id.clone(),
                    key,
                    action: NOTICE_NO_DHCP_LEASE.to_owned(),
                    message: format!(
                        "the guest has run for {} s without taking its DHCP lease ({} for {} on port {}): \
                         it has no network, and no metadata, key or user data through it",
                        warn_after.as_secs(),
                        port.ip,
                        port.mac,
                        port.id
                    ),
                    at: Timestamp::now(),
                });
            }
        }
        // Warnings of generations that are over are forgotten.
        self.warned.retain(|(id, generation, _)| since.get(id).is_some_and(|(g, _)| g == generation));
        self.since = since;
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{desired, instance_id, MemFetcher};
    use kumo_wire::DesiredPower;

    fn with_port(n: u32, generation: u64) -> DesiredInstance {
        let image = MemFetcher::default().kernel_image(1);
        let mut d = desired(&instance_id(n), generation, DesiredPower::Running, &image);
        d.ports.push(DesiredPort {
            id: format!("eni-{n:017x}").parse().expect("port id"),
            network: "net-00000000000000001".parse().expect("network id"),
            mac: format!("02:00:00:00:00:{n:02x}"),
            ip: std::net::Ipv4Addr::new(10, 0, 0, 10 + n as u8),
            ingress: vec![],
            egress: None,
        });
        d
    }

    #[test]
    fn a_guest_that_never_took_its_lease_is_reported_once_per_generation() {
        let mut watch = LeaseWatch::default();
        let (a, b) = (with_port(1, 1), with_port(2, 1));
        let t0 = Instant::now();
        let after = Duration::from_secs(60);
        let leased = |p: &DesiredPort| p.mac.ends_with(":02"); // B took its lease, A did not.
        assert!(watch.check(&[a.clone(), b.clone()], |_| true, t0, after, leased).is_empty(), "too early");
        let later = t0 + Duration::from_secs(61);
        let notices = watch.check(&[a.clone(), b.clone()], |_| true, later, after, leased);
        assert_eq!(notices.len(), 1, "{notices:?}");
        assert_eq!(notices[0].instance, a.id);
        assert_eq!(notices[0].action, NOTICE_NO_DHCP_LEASE);
        assert!(
            notices[0].message.contains("10.0.0.11") && notices[0].message.contains("60 s"),
            "{}",
            notices[0].message
        );
        assert!(watch.check(&[a.clone(), b.clone()], |_| true, later, after, leased).is_empty(), "once");

        // A reboot (new generation) starts the clock again; then it warns again.
        let a2 = with_port(1, 2);
        assert!(watch.check(std::slice::from_ref(&a2), |_| true, later, after, leased).is_empty());
        let again = watch.check(std::slice::from_ref(&a2), |_| true, later + after, after, leased);
        assert_eq!(again.len(), 1);
        assert_ne!(again[0].key, notices[0].key);

        // Not settled (stopped, converging): no clock, no warning; 0 disables.
        let mut idle = LeaseWatch::default();
        assert!(idle.check(std::slice::from_ref(&a), |_| false, t0, after, leased).is_empty());
        assert!(idle.check(std::slice::from_ref(&a), |_| false, later, after, leased).is_empty());
        let mut off = LeaseWatch::default();
        assert!(off.check(std::slice::from_ref(&a), |_| true, t0, Duration::ZERO, leased).is_empty());
        assert!(off.check(std::slice::from_ref(&a), |_| true, later, Duration::ZERO, leased).is_empty());
    }
}
