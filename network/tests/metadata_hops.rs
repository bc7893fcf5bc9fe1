//! EC2's `HttpPutResponseHopLimit`, through real routing: the token answer
//! leaves with that IP TTL, so with the default limit of 1 a container routed
//! (and masqueraded) behind the guest never receives a token, while the guest
//! does; with a limit of 2 the container gets one too. Other answers keep the
//! socket's default TTL and reach the container either way.
#![allow(clippy::unwrap_used)]

use crate::netns;

use std::net::Ipv4Addr;

use kumo_network::metadata::{InstanceView, MetadataService};
use kumo_wire::network::{InstanceMetadata, MetadataOptions};
use netns::{veth, Netns};

const GUEST: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 5);

fn view(hop_limit: u8) -> InstanceView {
    InstanceView {
        instance_id: "i-hops".into(),
        ip: GUEST,
        mac: "52:54:00:12:34:57".into(),
        hostname: "host-i-hops".into(),
        public_keys: vec![],
        user_data: None,
        metadata: InstanceMetadata {
            instance_type: "m1.small".into(),
            image_id: "ami-0000000000000000a".into(),
            availability_zone: "kumo-1a".into(),
            key_name: None,
            public_ipv4: None,
            config_drive: false,
            options: MetadataOptions { http_put_response_hop_limit: hop_limit, ..MetadataOptions::default() },
            tags: vec![],
        },
    }
}

/// `curl` in `ns` with a 3 s limit: (succeeded, body).
fn curl(ns: &Netns, args: &[&str]) -> (bool, String) {
    let mut cmd = vec!["curl", "-s", "-f", "-m", "3"];
    cmd.extend(args);
    let out = ns.exec(&cmd);
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned())
}

fn token(ns: &Netns) -> (bool, String) {
    curl(
        ns,
        &["-X", "PUT", "-H", "X-aws-ec2-metadata-token-ttl-seconds: 60", "http://169.254.169.254/latest/api/token"],
    )
}

#[test]
fn the_token_answer_goes_no_further_than_the_hop_limit() {
    let host = Netns::new("hoph");
    let guest = Netns::new("hopg");
    let container = Netns::new("hopc");
    // Host <-> guest, as a tap on the tenant bridge: the listener's device.
    veth(&host, "kbrhop", &guest, "eth0");
    host.ip("addr add 169.254.169.254/32 dev kbrhop");
    host.ip("addr add 10.0.0.1/24 dev kbrhop");
    guest.ip("addr add 10.0.0.5/24 dev eth0");
    guest.ip("route add 169.254.169.254/32 dev eth0");
    // Guest <-> container: one routed hop, masqueraded to the guest's address
    // (as Docker does), so the metadata service sees the guest as the source.
    veth(&guest, "ctr0", &container, "eth0");
    guest.ip("addr add 192.168.50.1/24 dev ctr0");
    container.ip("addr add 192.168.50.2/24 dev eth0");
    container.ip("route add default via 192.168.50.1");
    let sysctl = guest.exec(&["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"]);
    assert!(sysctl.status.success(), "{}", String::from_utf8_lossy(&sysctl.stderr));
    let nat = guest.exec(&[
        "nft",
        "add table ip hopnat; add chain ip hopnat post { type nat hook postrouting priority 100; }; \
         add rule ip hopnat post oifname eth0 masquerade",
    ]);
    assert!(nat.status.success(), "{}", String::from_utf8_lossy(&nat.stderr));

    let s = MetadataService::new();
    s.set_bridge("kbrhop", vec![view(1)]);
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = {
        let s = s.clone();
        host.spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                let listener = s.listen("kbrhop").await.unwrap();
                ready_tx.send(()).unwrap();
                let _ = stop_rx.await;
                drop(listener);
            });
        })
    };
    ready_rx.recv().unwrap();
    let url = "http://169.254.169.254/latest/meta-data/instance-id";

    // The routed path works: ordinary answers reach the container.
    assert_eq!(curl(&container, &[url]), (true, "i-hops".into()));
    // Hop limit 1 (EC2's default): the guest gets a token, the container does not.
    let (ok, t) = token(&guest);
    assert!(ok && !t.is_empty(), "the guest itself gets a token");
    let (ok, body) = token(&container);
    assert!(!ok && body.is_empty(), "a token answer with TTL 1 must die at the guest's forwarding hop, got {body:?}");
    // The connection the TTL killed took no other answer with it.
    assert_eq!(curl(&container, &[url]), (true, "i-hops".into()));

    // Hop limit 2: the container is within reach.
    s.set_bridge("kbrhop", vec![view(2)]);
    let (ok, t) = token(&container);
    assert!(ok && !t.is_empty(), "with a hop limit of 2 the container gets a token");
    let header = format!("X-aws-ec2-metadata-token: {t}");
    assert_eq!(curl(&container, &["-H", &header, url]), (true, "i-hops".into()));

    stop_tx.send(()).unwrap();
    server.join().unwrap();
}
