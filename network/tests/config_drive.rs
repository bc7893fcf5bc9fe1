//! The NoCloud config drive, read back with `isoinfo` (from genisoimage).
#![allow(clippy::unwrap_used)]

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;

use kumo_network::config_drive::{write_config_drive, ConfigDriveError};
use kumo_network::metadata::InstanceView;
use kumo_wire::network::{DesiredNetwork, InstanceMetadata};
use kumo_wire::NetworkId;

fn view(user_data: Option<&[u8]>) -> InstanceView {
    InstanceView {
        instance_id: "i-0123456789abcdef0".into(),
        ip: Ipv4Addr::new(10, 0, 0, 5),
        mac: "52:54:00:AB:CD:EF".into(),
        hostname: "web-1".into(),
        public_keys: vec![("mykey".into(), "ssh-ed25519 AAAAC3Nza mykey: with colon\n".into())],
        user_data: user_data.map(<[u8]>::to_vec),
        metadata: InstanceMetadata::default(),
    }
}

fn net() -> DesiredNetwork {
    DesiredNetwork {
        id: NetworkId::generate(),
        vlan_id: 100,
        cidr: "10.0.0.0/24".parse().unwrap(),
        gateway: Ipv4Addr::new(10, 0, 0, 1),
        dns_servers: vec![Ipv4Addr::new(10, 0, 0, 2), Ipv4Addr::new(10, 0, 0, 3)],
    }
}

fn isoinfo(iso: &Path, args: &[&str]) -> String {
    let out = Command::new("isoinfo").arg("-i").arg(iso).args(args).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn file(iso: &Path, name: &str) -> String {
    isoinfo(iso, &["-R", "-x", &format!("/{name}")])
}

#[tokio::test]
async fn writes_a_cidata_image_cloud_init_can_read() {
    let dir = tempfile::tempdir().unwrap();
    let iso = dir.path().join("cidata.iso");
    write_config_drive(&iso, &view(Some(b"#!/bin/sh\necho hello\n")), &net()).await.unwrap();

    let pvd = isoinfo(&iso, &["-d"]);
    assert!(pvd.lines().any(|l| l.trim() == "Volume id: cidata"), "{pvd}");
    let listing = isoinfo(&iso, &["-R", "-f"]);
    let mut names: Vec<&str> = listing.lines().collect();
    names.sort();
    assert_eq!(names, ["/meta-data", "/network-config", "/user-data"]);

    assert_eq!(
        file(&iso, "meta-data"),
        "instance-id: \"i-0123456789abcdef0\"\nlocal-hostname: \"web-1\"\npublic-keys:\n  - \"ssh-ed25519 AAAAC3Nza mykey: with colon\"\n"
    );
    assert_eq!(file(&iso, "user-data"), "#!/bin/sh\necho hello\n");
    assert_eq!(
        file(&iso, "network-config"),
        "version: 2\nethernets:\n  eth0:\n    match:\n      macaddress: \"52:54:00:ab:cd:ef\"\n    set-name: eth0\n    addresses:\n      - 10.0.0.5/24\n    routes:\n      - to: 0.0.0.0/0\n        via: 10.0.0.1\n    nameservers:\n      addresses: [10.0.0.2, 10.0.0.3]\n"
    );

    // Rewriting replaces the image; no user data gives an empty user-data.
    write_config_drive(&iso, &view(None), &net()).await.unwrap();
    assert_eq!(file(&iso, "user-data"), "");
    let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(leftovers, ["cidata.iso"], "no temporary files left");
}

#[tokio::test]
async fn an_address_outside_the_network_is_refused_and_nothing_written() {
    let dir = tempfile::tempdir().unwrap();
    let iso = dir.path().join("cidata.iso");
    let mut v = view(None);
    v.ip = Ipv4Addr::new(192, 168, 1, 5);
    let err = write_config_drive(&iso, &v, &net()).await.unwrap_err();
    assert!(matches!(err, ConfigDriveError::AddressOutsideNetwork { .. }));
    assert_eq!(err.to_string(), "address 192.168.1.5 is not in the network's subnet 10.0.0.0/24");
    assert!(!iso.exists());
    // A directory that does not exist: a clear I/O error.
    let err = write_config_drive(&dir.path().join("missing/cidata.iso"), &view(None), &net()).await.unwrap_err();
    assert!(matches!(err, ConfigDriveError::Io(..)), "{err}");
}
