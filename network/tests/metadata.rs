//! The metadata service: every path through the router with fake peers, and
//! real listeners bound to two "bridges" with overlapping tenant addresses
//! in a network namespace this test creates.
#![allow(clippy::unwrap_used)]

use crate::netns;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Method, Request, StatusCode};
use kumo_network::metadata::{InstanceView, MetadataService};
use kumo_wire::network::InstanceMetadata;
use netns::{veth, Netns};
use tower::ServiceExt;

const A: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 5);
const B: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 6);

pub(crate) fn view(id: &str, ip: Ipv4Addr, rich: bool) -> InstanceView {
    InstanceView {
        instance_id: id.into(),
        ip,
        mac: "52:54:00:12:34:56".into(),
        hostname: format!("host-{id}"),
        public_keys: if rich { vec![("mykey".into(), "ssh-ed25519 AAAAC3Nza mykey".into())] } else { vec![] },
        user_data: rich.then(|| b"#!/bin/sh\necho hi\n".to_vec()),
        metadata: InstanceMetadata {
            instance_type: "m1.small".into(),
            image_id: "ami-0000000000000000a".into(),
            availability_zone: "kumo-1a".into(),
            key_name: rich.then(|| "mykey".into()),
            public_ipv4: rich.then(|| Ipv4Addr::new(198, 51, 100, 10)),
            config_drive: false,
            options: Default::default(),
            // Tags the controller would not send while the option is off: the
            // service itself must still hide them.
            tags: vec![("Name".into(), "web server".into())],
        },
    }
}

fn service() -> MetadataService {
    let s = MetadataService::new();
    s.set_bridge("kbr1", vec![view("i-a", A, true), view("i-b", B, false)]);
    s.set_bridge("kbr2", vec![view("i-c", A, false)]);
    s
}

async fn call(
    s: &MetadataService,
    bridge: &str,
    peer: Ipv4Addr,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, String) {
    let mut req = Request::builder().method(method).uri(path);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let mut req = req.body(Body::empty()).unwrap();
    req.extensions_mut().insert(ConnectInfo(SocketAddr::from((peer, 40000))));
    let resp = s.router_for(bridge).oneshot(req).await.unwrap();
    let status = resp.status();
    let body = axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

async fn get(s: &MetadataService, bridge: &str, peer: Ipv4Addr, path: &str) -> (StatusCode, String) {
    call(s, bridge, peer, Method::GET, path, &[]).await
}

#[tokio::test]
async fn every_path_answers_like_ec2() {
    let s = service();
    let cases: &[(&str, &str)] = &[
        ("/", "1.0\n2009-04-04\n2016-09-02\n2018-09-24\n2021-03-23\nlatest"),
        // cloud-init asks dated versions first.
        ("/2009-04-04/meta-data/instance-id", "i-a"),
        ("/2021-03-23/meta-data/public-keys/0/openssh-key", "ssh-ed25519 AAAAC3Nza mykey\n"),
        ("/2018-09-24/user-data", "#!/bin/sh\necho hi\n"),
        ("/latest/", "dynamic\nmeta-data\nuser-data"),
        ("/latest", "dynamic\nmeta-data\nuser-data"),
        (
            "/latest/meta-data/",
            "ami-id\nhostname\ninstance-id\ninstance-type\nlocal-hostname\nlocal-ipv4\nmac\nnetwork/\nplacement/\npublic-ipv4\npublic-keys/",
        ),
        ("/latest/meta-data/instance-id", "i-a"),
        ("/latest/meta-data/hostname", "host-i-a"),
        ("/latest/meta-data/local-hostname", "host-i-a"),
        ("/latest/meta-data/local-ipv4", "10.0.0.5"),
        ("/latest/meta-data/public-ipv4", "198.51.100.10"),
        ("/latest/meta-data/mac", "52:54:00:12:34:56"),
        ("/latest/meta-data/ami-id", "ami-0000000000000000a"),
        ("/latest/meta-data/instance-type", "m1.small"),
        ("/latest/meta-data/placement/", "availability-zone\nregion"),
        ("/latest/meta-data/placement/availability-zone", "kumo-1a"),
        ("/latest/meta-data/placement/region", "kumo-1"),
        ("/latest/meta-data/public-keys/", "0=mykey"),
        ("/latest/meta-data/public-keys/0/", "openssh-key"),
        ("/latest/meta-data/public-keys/0/openssh-key", "ssh-ed25519 AAAAC3Nza mykey\n"),
        ("/latest/user-data", "#!/bin/sh\necho hi\n"),
        ("/latest/meta-data/network/", "interfaces/"),
        ("/latest/meta-data/network/interfaces/", "macs/"),
        ("/latest/meta-data/network/interfaces/macs/", "52:54:00:12:34:56/"),
        ("/latest/meta-data/network/interfaces/macs/52:54:00:12:34:56/", "device-number\nlocal-ipv4s\nmac\npublic-ipv4s"),
        ("/latest/meta-data/network/interfaces/macs/52:54:00:12:34:56/device-number", "0"),
        ("/latest/meta-data/network/interfaces/macs/52:54:00:12:34:56/local-ipv4s", "10.0.0.5"),
        ("/latest/meta-data/network/interfaces/macs/52:54:00:12:34:56/mac", "52:54:00:12:34:56"),
        ("/latest/meta-data/network/interfaces/macs/52:54:00:12:34:56/public-ipv4s", "198.51.100.10"),
        ("/latest/dynamic/", "instance-identity/"),
        ("/latest/dynamic/instance-identity/", "document"),
    ];
    for (path, want) in cases {
        let (status, body) = get(&s, "kbr1", A, path).await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, *want), "{path}");
    }
    let (status, doc) = get(&s, "kbr1", A, "/latest/dynamic/instance-identity/document").await;
    assert_eq!(status, StatusCode::OK);
    let doc: serde_json::Value = serde_json::from_str(&doc).unwrap();
    assert_eq!(doc["instanceId"], "i-a");
    assert_eq!(doc["privateIp"], "10.0.0.5");
    assert_eq!(doc["region"], "kumo-1");
    assert_eq!(doc["availabilityZone"], "kumo-1a");
    assert_eq!(doc["instanceType"], "m1.small");
    assert_eq!(doc["imageId"], "ami-0000000000000000a");
}

#[tokio::test]
async fn what_an_instance_lacks_is_404() {
    let s = service();
    for path in [
        "/latest/meta-data/public-ipv4",
        "/latest/meta-data/public-keys/",
        "/latest/meta-data/public-keys/0/openssh-key",
        "/latest/user-data",
        "/latest/meta-data/nonsense",
        "/2009-4-4/meta-data/instance-id",
        "/latest/meta-data/network/interfaces/macs/52:54:00:12:34:56/public-ipv4s",
        "/latest/meta-data/network/interfaces/macs/52:54:00:00:00:99/",
        "/v1/meta-data/instance-id",
    ] {
        assert_eq!(get(&s, "kbr1", B, path).await.0, StatusCode::NOT_FOUND, "{path}");
    }
    assert_eq!(get(&s, "kbr1", B, "/latest/").await.1, "dynamic\nmeta-data");
    assert_eq!(get(&s, "kbr1", A, "/latest/meta-data/public-keys/1/openssh-key").await.0, StatusCode::NOT_FOUND);
    assert_eq!(call(&s, "kbr1", A, Method::POST, "/latest/meta-data/", &[]).await.0, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn an_instance_is_known_by_bridge_and_source_address() {
    let s = service();
    assert_eq!(get(&s, "kbr1", B, "/latest/meta-data/instance-id").await.1, "i-b");
    // The same address on another bridge is another tenant's instance.
    assert_eq!(get(&s, "kbr2", A, "/latest/meta-data/instance-id").await.1, "i-c");
    // An unknown source sees nothing, not even listings.
    for path in ["/", "/latest/", "/latest/meta-data/", "/latest/meta-data/instance-id", "/latest/user-data"] {
        let (status, body) = get(&s, "kbr1", Ipv4Addr::new(10, 0, 0, 99), path).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
        assert!(!body.contains("i-"), "{body}");
        assert_eq!(get(&s, "kbr3", A, path).await.0, StatusCode::NOT_FOUND, "unknown bridge {path}");
    }
    let unknown = call(
        &s,
        "kbr1",
        Ipv4Addr::new(10, 0, 0, 99),
        Method::PUT,
        "/latest/api/token",
        &[("x-aws-ec2-metadata-token-ttl-seconds", "60")],
    )
    .await;
    assert_eq!(unknown.0, StatusCode::FORBIDDEN);
    // Replacing a bridge's table and removing a bridge take effect at once.
    s.set_bridge("kbr1", vec![view("i-b", B, false)]);
    assert_eq!(get(&s, "kbr1", A, "/latest/meta-data/instance-id").await.0, StatusCode::NOT_FOUND);
    s.remove_bridge("kbr2");
    assert_eq!(get(&s, "kbr2", A, "/latest/meta-data/instance-id").await.0, StatusCode::NOT_FOUND);
}

async fn token(s: &MetadataService, bridge: &str, peer: Ipv4Addr, ttl: &str) -> (StatusCode, String) {
    call(s, bridge, peer, Method::PUT, "/latest/api/token", &[("X-aws-ec2-metadata-token-ttl-seconds", ttl)]).await
}

#[tokio::test]
async fn imdsv2_tokens() {
    let s = service();
    let (status, t) = token(&s, "kbr1", A, "21600").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(t.len(), 64);
    let with = |t: &str| vec![("X-aws-ec2-metadata-token", t.to_owned())];
    let get_with = |peer, bridge: &'static str, h: Vec<(&'static str, String)>| {
        let s = s.clone();
        async move {
            let h: Vec<(&str, &str)> = h.iter().map(|(k, v)| (*k, v.as_str())).collect();
            call(&s, bridge, peer, Method::GET, "/latest/meta-data/instance-id", &h).await
        }
    };
    assert_eq!(get_with(A, "kbr1", with(&t)).await, (StatusCode::OK, "i-a".into()));
    // Without a token: IMDSv1, allowed.
    assert_eq!(get_with(A, "kbr1", vec![]).await.0, StatusCode::OK);
    // A bad token, another instance's token, the same address on another bridge.
    assert_eq!(get_with(A, "kbr1", with("deadbeef")).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(get_with(B, "kbr1", with(&t)).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(get_with(A, "kbr2", with(&t)).await.0, StatusCode::UNAUTHORIZED);
    // TTLs outside 1-21600 (or none) are refused.
    for ttl in ["0", "21601", "-5", "abc", ""] {
        assert_eq!(token(&s, "kbr1", A, ttl).await.0, StatusCode::BAD_REQUEST, "ttl {ttl:?}");
    }
    let proxied = call(
        &s,
        "kbr1",
        A,
        Method::PUT,
        "/latest/api/token",
        &[("X-aws-ec2-metadata-token-ttl-seconds", "60"), ("X-Forwarded-For", "1.2.3.4")],
    )
    .await;
    assert_eq!(proxied.0, StatusCode::FORBIDDEN, "proxied token requests are refused");
    let none = call(&s, "kbr1", A, Method::PUT, "/latest/api/token", &[]).await;
    assert_eq!(none.0, StatusCode::BAD_REQUEST);
    assert!(none.1.contains("21600"), "{}", none.1);
    assert_eq!(get(&s, "kbr1", A, "/latest/api/token").await.0, StatusCode::METHOD_NOT_ALLOWED);
    // Expiry.
    let (_, short) = token(&s, "kbr1", A, "1").await;
    assert_eq!(get_with(A, "kbr1", with(&short)).await.0, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(get_with(A, "kbr1", with(&short)).await.0, StatusCode::UNAUTHORIZED, "expired");
    // An instance that left the bridge loses its tokens.
    s.set_bridge("kbr1", vec![view("i-b", B, false)]);
    s.set_bridge("kbr1", vec![view("i-a", A, true), view("i-b", B, false)]);
    assert_eq!(get_with(A, "kbr1", with(&t)).await.0, StatusCode::UNAUTHORIZED);
}

fn curl(ns: &Netns, args: &[&str]) -> (bool, String) {
    let mut cmd = vec!["curl", "-s", "-f", "-m", "3"];
    cmd.extend(args);
    let out = ns.exec(&cmd);
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Two bridges in a "host" namespace, both holding 169.254.169.254 and the
/// same tenant subnet; a client behind each with the same address.
#[test]
fn listeners_answer_per_bridge() {
    let host = Netns::new("mdh");
    let c1 = Netns::new("mdc1");
    let c2 = Netns::new("mdc2");
    for (br, client) in [("kbrmd1", &c1), ("kbrmd2", &c2)] {
        veth(&host, br, client, "eth0");
        host.ip(&format!("addr add 169.254.169.254/32 dev {br}"));
        host.ip(&format!("addr add 10.0.0.1/24 dev {br}"));
        client.ip("addr add 10.0.0.5/24 dev eth0");
        client.ip("route add 169.254.169.254/32 dev eth0");
    }
    let s = MetadataService::new();
    s.set_bridge("kbrmd1", vec![view("i-one", A, true)]);
    s.set_bridge("kbrmd2", vec![view("i-two", A, false)]);

    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (stop1_tx, stop1_rx) = tokio::sync::oneshot::channel::<()>();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = {
        let s = s.clone();
        host.spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                let l1 = s.listen("kbrmd1").await.unwrap();
                let again = s.listen("kbrmd1").await.expect("listen is idempotent");
                let l2 = s.listen("kbrmd2").await.unwrap();
                assert!(s.listen("kbrnope").await.is_err(), "no such device");
                ready_tx.send(()).unwrap();
                let _ = stop1_rx.await;
                drop((l1, again));
                ready_tx.send(()).unwrap();
                let _ = stop_rx.await;
                drop(l2);
            });
        })
    };
    ready_rx.recv().unwrap();

    let url = "http://169.254.169.254/latest/meta-data/instance-id";
    assert_eq!(curl(&c1, &[url]), (true, "i-one".into()));
    assert_eq!(curl(&c2, &[url]), (true, "i-two".into()));
    let (ok, t) = curl(
        &c1,
        &["-X", "PUT", "-H", "X-aws-ec2-metadata-token-ttl-seconds: 60", "http://169.254.169.254/latest/api/token"],
    );
    assert!(ok);
    let header = format!("X-aws-ec2-metadata-token: {t}");
    assert_eq!(
        curl(&c1, &["-H", &header, "http://169.254.169.254/latest/user-data"]),
        (true, "#!/bin/sh\necho hi\n".into())
    );
    assert!(!curl(&c2, &["-H", &header, url]).0, "a token from bridge 1 is worthless on bridge 2");

    // Dropping bridge 1's handles stops its listener only.
    stop1_tx.send(()).unwrap();
    ready_rx.recv().unwrap();
    assert!(!curl(&c1, &[url]).0, "stopped");
    assert_eq!(curl(&c2, &[url]), (true, "i-two".into()));
    stop_tx.send(()).unwrap();
    server.join().unwrap();
}

/// EC2's `MetadataOptions`: `HttpTokens=required` refuses token-less GETs
/// with 401 and serves them with a token; `optional` serves both;
/// `HttpEndpoint=disabled` answers 403 to everything, tokens included.
#[tokio::test]
async fn metadata_options_require_tokens_or_turn_the_endpoint_off() {
    use kumo_wire::network::{HttpTokens, MetadataOptions, Switch};
    let with = |id: &str, ip, options| {
        let mut v = view(id, ip, true);
        v.metadata.options = options;
        v
    };
    let required = MetadataOptions { http_tokens: HttpTokens::Required, ..MetadataOptions::default() };
    let off = MetadataOptions { http_endpoint: Switch::Disabled, ..MetadataOptions::default() };
    let s = MetadataService::new();
    s.set_bridge("kbr1", vec![with("i-a", A, required), with("i-b", B, MetadataOptions::default())]);
    s.set_bridge("kbr2", vec![with("i-c", A, off)]);
    let path = "/latest/meta-data/instance-id";
    // Required: no token, 401 for every path; a token opens them.
    for p in [path, "/latest/user-data", "/", "/latest/meta-data/"] {
        assert_eq!(get(&s, "kbr1", A, p).await.0, StatusCode::UNAUTHORIZED, "{p}");
    }
    let (status, t) = token(&s, "kbr1", A, "60").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        call(&s, "kbr1", A, Method::GET, path, &[("X-aws-ec2-metadata-token", t.as_str())]).await,
        (StatusCode::OK, "i-a".into())
    );
    assert_eq!(call(&s, "kbr1", A, Method::GET, path, &[("X-aws-ec2-metadata-token", "bogus")]).await.0, 401);
    // Optional (the default): served without and with a token.
    assert_eq!(get(&s, "kbr1", B, path).await, (StatusCode::OK, "i-b".into()));
    let (_, tb) = token(&s, "kbr1", B, "60").await;
    assert_eq!(call(&s, "kbr1", B, Method::GET, path, &[("X-aws-ec2-metadata-token", tb.as_str())]).await.0, 200);
    // Disabled: 403 for reads and token requests alike.
    assert_eq!(get(&s, "kbr2", A, path).await.0, StatusCode::FORBIDDEN);
    assert_eq!(token(&s, "kbr2", A, "60").await.0, StatusCode::FORBIDDEN);
    // A change of options takes effect with the next table.
    s.set_bridge("kbr1", vec![with("i-a", A, MetadataOptions::default())]);
    assert_eq!(get(&s, "kbr1", A, path).await, (StatusCode::OK, "i-a".into()));
}

#[tokio::test]
async fn instance_metadata_tags_are_served_only_when_enabled() {
    use kumo_wire::network::{MetadataOptions, Switch};
    let s = MetadataService::new();
    let mut tagged = view("i-t", A, false);
    tagged.metadata.options = MetadataOptions { instance_metadata_tags: Switch::Enabled, ..Default::default() };
    tagged.metadata.tags =
        vec![("Name".into(), "web".into()), ("env".into(), "prod".into()), ("team name".into(), "db ops".into())];
    s.set_bridge("kbr1", vec![tagged.clone(), view("i-u", B, false)]);
    let (status, listing) = get(&s, "kbr1", A, "/latest/meta-data/").await;
    assert_eq!(status, StatusCode::OK);
    assert!(listing.ends_with("\ntags/"), "{listing}");
    for (path, want) in [
        ("/latest/meta-data/tags", "instance"),
        ("/latest/meta-data/tags/", "instance"),
        ("/latest/meta-data/tags/instance", "Name\nenv\nteam name"),
        ("/latest/meta-data/tags/instance/", "Name\nenv\nteam name"),
        ("/latest/meta-data/tags/instance/Name", "web"),
        ("/latest/meta-data/tags/instance/env", "prod"),
        ("/latest/meta-data/tags/instance/team%20name", "db ops"),
    ] {
        assert_eq!(get(&s, "kbr1", A, path).await, (StatusCode::OK, want.to_owned()), "{path}");
    }
    for path in ["/latest/meta-data/tags/instance/nope", "/latest/meta-data/tags/instance/%zz"] {
        assert_eq!(get(&s, "kbr1", A, path).await.0, StatusCode::NOT_FOUND, "{path}");
    }
    // Disabled (the other instance, whose view carries a tag): 404, not listed.
    let (_, listing) = get(&s, "kbr1", B, "/latest/meta-data/").await;
    assert!(!listing.contains("tags"), "{listing}");
    for path in ["/latest/meta-data/tags", "/latest/meta-data/tags/instance", "/latest/meta-data/tags/instance/Name"] {
        assert_eq!(get(&s, "kbr1", B, path).await.0, StatusCode::NOT_FOUND, "{path}");
    }
    // Turned off later (ModifyInstanceMetadataOptions reaches the agent's next sync): gone at once.
    tagged.metadata.options.instance_metadata_tags = Switch::Disabled;
    s.set_bridge("kbr1", vec![tagged]);
    assert_eq!(get(&s, "kbr1", A, "/latest/meta-data/tags/instance/Name").await.0, StatusCode::NOT_FOUND);
}
