//! NoCloud config drive: an ISO 9660 image with volume id `cidata` that
//! cloud-init's NoCloud datasource reads (`meta-data`, `user-data`,
//! `network-config`). Written with `genisoimage` (Joliet + Rock Ridge), which
//! scripts/install-system-deps.sh installs; no maintained Rust crate writes
//! ISO 9660 images.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Stdio;

use kumo_wire::network::DesiredNetwork;
use tokio::process::Command;

use crate::metadata::InstanceView;

/// Errors writing a config drive.
#[derive(Debug, thiserror::Error)]
pub enum ConfigDriveError {
    /// The instance's address is not in the network's subnet.
    #[error("address {ip} is not in the network's subnet {cidr}")]
    AddressOutsideNetwork {
        /// The instance's address.
        ip: std::net::Ipv4Addr,
        /// The network's subnet.
        cidr: ipnet::Ipv4Net,
    },
    /// Staging the files or moving the image into place failed.
    #[error("cannot write the config drive {0}")]
    Io(String, #[source] std::io::Error),
    /// `genisoimage` could not be started (is it installed?).
    #[error("cannot run genisoimage")]
    Spawn(#[source] std::io::Error),
    /// `genisoimage` failed.
    #[error("genisoimage failed: {0}")]
    Genisoimage(String),
}

/// A YAML scalar: YAML is a superset of JSON, so a JSON string is always safe.
fn q(s: &str) -> String {
    serde_json::Value::from(s).to_string()
}

/// The `meta-data` file.
pub fn meta_data(view: &InstanceView) -> String {
    let mut out = format!("instance-id: {}\nlocal-hostname: {}\n", q(&view.instance_id), q(&view.hostname));
    if !view.public_keys.is_empty() {
        out.push_str("public-keys:\n");
        for (_, key) in &view.public_keys {
            let _ = writeln!(out, "  - {}", q(key.trim()));
        }
    }
    out
}

/// The `network-config` file (version 2): the NIC with `view.mac` gets the
/// fixed address, the gateway as default route and the network's DNS servers.
pub fn network_config(view: &InstanceView, net: &DesiredNetwork) -> String {
    let mut out = format!(
        "version: 2\nethernets:\n  eth0:\n    match:\n      macaddress: {}\n    set-name: eth0\n    addresses:\n      - {}/{}\n    routes:\n      - to: 0.0.0.0/0\n        via: {}\n",
        q(&view.mac.to_ascii_lowercase()),
        view.ip,
        net.cidr.prefix_len(),
        net.gateway,
    );
    if !net.dns_servers.is_empty() {
        let dns: Vec<String> = net.dns_servers.iter().map(|d| d.to_string()).collect();
        let _ = write!(out, "    nameservers:\n      addresses: [{}]\n", dns.join(", "));
    }
    out
}

/// Writes a NoCloud `cidata` ISO 9660 image (volume id `cidata`; files
/// `meta-data` (instance-id, local-hostname, public-keys), `user-data`,
/// `network-config` v2 for eth0 with the fixed IP) for cloud-init's NoCloud
/// datasource. The image replaces `path` atomically.
pub async fn write_config_drive(
    path: &Path,
    view: &InstanceView,
    net: &DesiredNetwork,
) -> Result<(), ConfigDriveError> {
    if !net.cidr.contains(&view.ip) {
        return Err(ConfigDriveError::AddressOutsideNetwork { ip: view.ip, cidr: net.cidr });
    }
    let io = |what: &str, e| ConfigDriveError::Io(format!("{} ({what})", path.display()), e);
    let staging = tempfile::tempdir().map_err(|e| io("staging directory", e))?;
    let files: [(&str, Vec<u8>); 3] = [
        ("meta-data", meta_data(view).into_bytes()),
        ("user-data", view.user_data.clone().unwrap_or_default()),
        ("network-config", network_config(view, net).into_bytes()),
    ];
    for (name, content) in &files {
        tokio::fs::write(staging.path().join(name), content).await.map_err(|e| io(name, e))?;
    }
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let tmp = tempfile::Builder::new()
        .prefix(".cidata")
        .suffix(".iso")
        .tempfile_in(dir)
        .map_err(|e| io("temporary file", e))?;
    let out = Command::new("genisoimage")
        .arg("-output")
        .arg(tmp.path())
        .args(["-volid", "cidata", "-joliet", "-rock", "-input-charset", "utf-8", "-quiet"])
        .arg(staging.path())
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(ConfigDriveError::Spawn)?;
    if !out.status.success() {
        return Err(ConfigDriveError::Genisoimage(String::from_utf8_lossy(&out.stderr).trim().to_owned()));
    }
    tmp.persist(path).map_err(|e| io("rename", e.error))?;
    Ok(())
}
