//! kumo-netplumb: drive the host datapath by hand (and from the 802.1Q test
//! guest, so that the crate's own code plumbs the VLANs there).
//!
//!   kumo-netplumb [--trunk IF] ensure --network ID --vlan N --cidr C --gateway G
//!   kumo-netplumb remove --network ID
//!   kumo-netplumb list
//!
//! Prints one `KUMO-NETPLUMB ...` line per result, with the time taken.

use std::net::Ipv4Addr;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use clap::{Parser, Subcommand};
use ipnet::Ipv4Net;
use kumo_network::{Datapath, DatapathConfig};
use kumo_wire::network::DesiredNetwork;
use kumo_wire::NetworkId;

#[derive(Debug, Parser)]
#[command(about = "Plumb Kumo tenant networks on this host (bridge + 802.1Q link) over rtnetlink")]
struct Args {
    /// The trunk NIC for 802.1Q links; without it, host-local bridges only.
    #[arg(long, global = true)]
    trunk: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create (or confirm) a network's bridge, addresses and VLAN link.
    Ensure {
        /// The network id (net-…).
        #[arg(long)]
        network: NetworkId,
        /// The 802.1Q tag.
        #[arg(long)]
        vlan: u16,
        /// The subnet.
        #[arg(long)]
        cidr: Ipv4Net,
        /// The gateway address the bridge holds.
        #[arg(long)]
        gateway: Ipv4Addr,
    },
    /// Remove a network's bridge and VLAN link.
    Remove {
        /// The network id (net-…).
        #[arg(long)]
        network: NetworkId,
    },
    /// List Kumo's bridges on this host.
    List,
}

async fn run(args: Args) -> anyhow::Result<()> {
    let datapath = Datapath::connect(DatapathConfig { trunk: args.trunk, ..Default::default() })
        .await
        .context("connect to rtnetlink")?;
    match args.command {
        Command::Ensure { network, vlan, cidr, gateway } => {
            let net = DesiredNetwork { id: network, vlan_id: vlan, cidr, gateway, dns_servers: vec![] };
            let start = Instant::now();
            let links = datapath.ensure_network(&net).await?;
            let us = start.elapsed().as_micros();
            println!(
                "KUMO-NETPLUMB ensure network={} vlan={vlan} bridge={} vlan_link={} elapsed_us={us}",
                net.id.as_str(),
                links.bridge,
                links.vlan_link.as_deref().unwrap_or("-"),
            );
        }
        Command::Remove { network } => {
            let start = Instant::now();
            datapath.remove_network(&network).await?;
            println!("KUMO-NETPLUMB remove network={} elapsed_us={}", network.as_str(), start.elapsed().as_micros());
        }
        Command::List => {
            for p in datapath.plumbed_networks().await? {
                println!(
                    "KUMO-NETPLUMB plumbed bridge={} network={} vlan_link={}",
                    p.bridge,
                    p.network.as_ref().map_or("?", |n| n.as_str()),
                    p.vlan_link.as_deref().unwrap_or("-"),
                );
            }
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("kumo-netplumb: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kumo-netplumb: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
