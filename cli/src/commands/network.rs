//! `kumo network`, `kumo sg`, `kumo fip` and `kumo admin vlans`.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use kumo_wire::api::Listing;
use kumo_wire::network::{
    AddRule, AllocateFloatingIp, AssociateFloatingIp, CreateNetwork, CreateSecurityGroup, Direction, FloatingIp,
    Network, PortRange, Protocol, SecurityGroup, VlanPool,
};

use crate::args::{AdminCommand, FloatingIpCommand, NetworkCommand, RuleAddArgs, RuleCommand, SecurityGroupCommand};
use crate::client::Reply;
use crate::commands::{fetch_all, Ctx};
use crate::error::Error;
use crate::render;

/// Runs one `kumo network` subcommand.
pub async fn network(ctx: &Ctx, command: NetworkCommand) -> Result<(), Error> {
    match command {
        NetworkCommand::Create(args) => {
            let request = CreateNetwork {
                name: args.name,
                cidr: parse_cidr(&args.cidr)?,
                gateway: args.gateway.as_deref().map(|g| parse_ip("--gateway", g)).transpose()?,
                dns_servers: args.dns.iter().map(|d| parse_ip("--dns", d)).collect::<Result<_, _>>()?,
                vlan_id: args.vlan,
                external: args.external,
            };
            let reply: Reply<Network> = ctx.client()?.post(&["v1", "networks"], &request).await?;
            ctx.show(&reply, render::network)
        }
        NetworkCommand::List => {
            let listing: Listing<Network> = fetch_all(&ctx.client()?, &["v1", "networks"], &[]).await?;
            ctx.show_listing(&listing, "No networks.", render::networks)
        }
        NetworkCommand::Show { network } => {
            let reply: Reply<Network> = ctx.client()?.get(&["v1", "networks", &network], &()).await?;
            ctx.show(&reply, render::network)
        }
        NetworkCommand::Delete { network } => {
            let reply: Reply<Network> = ctx.client()?.delete(&["v1", "networks", &network]).await?;
            ctx.show(&reply, |n| format!("Deleted network {} ({}, VLAN {}).", n.name, n.cidr, n.vlan_id))
        }
    }
}

/// Runs one `kumo sg` subcommand.
pub async fn security_group(ctx: &Ctx, command: SecurityGroupCommand) -> Result<(), Error> {
    let reply: Reply<SecurityGroup> = match command {
        SecurityGroupCommand::Create { name, description } => {
            ctx.client()?.post(&["v1", "security-groups"], &CreateSecurityGroup { name, description }).await?
        }
        SecurityGroupCommand::List => {
            let listing: Listing<SecurityGroup> = fetch_all(&ctx.client()?, &["v1", "security-groups"], &[]).await?;
            return ctx.show_listing(&listing, "No security groups.", render::security_groups);
        }
        SecurityGroupCommand::Show { group } => ctx.client()?.get(&["v1", "security-groups", &group], &()).await?,
        SecurityGroupCommand::Delete { group } => {
            let reply: Reply<SecurityGroup> = ctx.client()?.delete(&["v1", "security-groups", &group]).await?;
            return ctx.show(&reply, |g| format!("Deleted security group {}.", g.name));
        }
        SecurityGroupCommand::Rule(RuleCommand::Add(args)) => {
            let group = args.group.clone();
            let request = rule_request(args)?;
            ctx.client()?.post(&["v1", "security-groups", &group, "rules"], &request).await?
        }
        SecurityGroupCommand::Rule(RuleCommand::Remove { group, rule }) => {
            ctx.client()?.delete(&["v1", "security-groups", &group, "rules", &rule]).await?
        }
    };
    ctx.show(&reply, render::security_group)
}

/// Runs one `kumo fip` subcommand.
pub async fn floating_ip(ctx: &Ctx, command: FloatingIpCommand) -> Result<(), Error> {
    let client = ctx.client()?;
    let reply: Reply<FloatingIp> = match command {
        FloatingIpCommand::Allocate { network } => {
            client.post(&["v1", "floating-ips"], &AllocateFloatingIp { network }).await?
        }
        FloatingIpCommand::Associate { fip, instance } => {
            client.post(&["v1", "floating-ips", &fip, "associate"], &AssociateFloatingIp { instance }).await?
        }
        FloatingIpCommand::Disassociate { fip } => {
            client.post(&["v1", "floating-ips", &fip, "disassociate"], &serde_json::json!({})).await?
        }
        FloatingIpCommand::Release { fip } => {
            let reply: Reply<FloatingIp> = client.delete(&["v1", "floating-ips", &fip]).await?;
            return ctx.show(&reply, |f| format!("Released floating IP {}.", f.address));
        }
        FloatingIpCommand::List => {
            let listing: Listing<FloatingIp> = fetch_all(&client, &["v1", "floating-ips"], &[]).await?;
            return ctx.show_listing(&listing, "No floating IPs.", render::floating_ips);
        }
    };
    ctx.show(&reply, |f| render::floating_ips(std::slice::from_ref(f)))
}

/// Runs one `kumo admin` subcommand.
pub async fn admin(ctx: &Ctx, command: AdminCommand) -> Result<(), Error> {
    match command {
        AdminCommand::Vlans => {
            let reply: Reply<VlanPool> = ctx.client()?.get(&["v1", "admin", "vlans"], &()).await?;
            ctx.show(&reply, render::vlan_pool)
        }
        AdminCommand::Quarantine(command) => crate::commands::quarantine::run(ctx, command).await,
        AdminCommand::Audit { host, repair } => crate::commands::audit::audit(ctx, host, repair).await,
    }
}

fn parse_cidr(s: &str) -> Result<Ipv4Net, Error> {
    s.parse().map_err(|_| Error::Invalid(format!("--cidr '{s}' is not an IPv4 CIDR such as 10.1.0.0/24")))
}

fn parse_ip(flag: &str, s: &str) -> Result<Ipv4Addr, Error> {
    s.parse().map_err(|_| Error::Invalid(format!("{flag} '{s}' is not an IPv4 address")))
}

/// `80` or `8000-8080`, each 1-65535, first <= last.
pub fn parse_port_range(s: &str) -> Result<PortRange, Error> {
    let bad = || Error::Invalid(format!("--port '{s}' is not a port (1-65535) or a range such as 8000-8080"));
    let (first, last) = s.split_once('-').unwrap_or((s, s));
    let first: u16 = first.trim().parse().map_err(|_| bad())?;
    let last: u16 = last.trim().parse().map_err(|_| bad())?;
    if first == 0 || last == 0 || first > last {
        return Err(bad());
    }
    Ok(PortRange { first, last })
}

fn rule_request(args: RuleAddArgs) -> Result<AddRule, Error> {
    let protocol: Protocol = serde_json::from_value(serde_json::Value::from(args.protocol.as_str()))
        .map_err(|_| Error::Invalid(format!("--protocol '{}' is not tcp, udp, icmp or any", args.protocol)))?;
    let ports = args.port.as_deref().map(parse_port_range).transpose()?;
    if ports.is_some() && !protocol.has_ports() {
        return Err(Error::Invalid(format!("--port does not apply to protocol {}", protocol.as_str())));
    }
    let direction = match (args.egress, args.direction.as_deref()) {
        (true, _) | (false, Some("egress")) => Direction::Egress,
        _ => Direction::Ingress,
    };
    Ok(AddRule {
        direction,
        protocol,
        ports,
        cidr: args.cidr.as_deref().map(parse_cidr).transpose()?,
        source_group: args.source_group,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_ranges() {
        assert_eq!(parse_port_range("80").unwrap(), PortRange { first: 80, last: 80 });
        assert_eq!(parse_port_range("8000-8080").unwrap(), PortRange { first: 8000, last: 8080 });
        for bad in ["0", "90-80", "70000", "a", "1-", "-1", ""] {
            assert!(parse_port_range(bad).is_err(), "{bad}");
        }
    }
}
