//! ModifyInstanceMetadataOptions and the `MetadataOptions` of RunInstances and
//! of the instance view. The options live on the instance row (migration
//! 0020), travel to the agent in the desired instance's metadata, and the
//! host's metadata service honours `HttpTokens` (401 for a token-less GET when
//! `required`), `HttpEndpoint` (403 for everything when `disabled`) and the
//! hop limit (the IP TTL of the token answer). `HttpProtocolIpv6` and
//! `InstanceMetadataTags` are stored and reported only.
//!
//! `State` is `pending` in the ModifyInstanceMetadataOptions answer and
//! `applied` in DescribeInstances, as AWS shows it once the change reached
//! the host (Kumo's agent picks it up on its next sync, within seconds).

use kumo_wire::network::{HttpTokens, MetadataOptions, Switch, HOP_LIMIT_RANGE};

use super::super::errors::{Ec2Error, Ec2Result};
use super::super::params::Params;
use super::super::xml::Xml;
use super::instances::find_instance;
use super::{dry_run, Ctx};

fn tokens(v: &str) -> Ec2Result<HttpTokens> {
    match v {
        "optional" => Ok(HttpTokens::Optional),
        "required" => Ok(HttpTokens::Required),
        other => Err(Ec2Error::invalid_value(format!(
            "Value ({other}) for parameter HttpTokens is invalid. Valid values: optional, required"
        ))),
    }
}

fn switch(name: &str, v: &str) -> Ec2Result<Switch> {
    match v {
        "enabled" => Ok(Switch::Enabled),
        "disabled" => Ok(Switch::Disabled),
        other => Err(Ec2Error::invalid_value(format!(
            "Value ({other}) for parameter {name} is invalid. Valid values: enabled, disabled"
        ))),
    }
}

/// Applies the options `p` names (with `prefix`, e.g. `MetadataOptions.`) to
/// `o`; the others keep their value. A hop limit of -1 means "no change", as on AWS.
pub fn apply(p: &Params, prefix: &str, o: &mut MetadataOptions) -> Ec2Result<()> {
    let get = |n: &str| p.get(&format!("{prefix}{n}"));
    if let Some(v) = get("HttpTokens") {
        o.http_tokens = tokens(v)?;
    }
    if let Some(v) = get("HttpEndpoint") {
        o.http_endpoint = switch("HttpEndpoint", v)?;
    }
    if let Some(v) = get("HttpProtocolIpv6") {
        o.http_protocol_ipv6 = switch("HttpProtocolIpv6", v)?;
    }
    if let Some(v) = get("InstanceMetadataTags") {
        o.instance_metadata_tags = switch("InstanceMetadataTags", v)?;
    }
    if let Some(v) = get("HttpPutResponseHopLimit") {
        let (lo, hi) = HOP_LIMIT_RANGE;
        match v.trim().parse::<i64>() {
            Ok(-1) => {}
            Ok(n) if (i64::from(lo)..=i64::from(hi)).contains(&n) => {
                o.http_put_response_hop_limit = u8::try_from(n).unwrap_or(lo);
            }
            _ => {
                return Err(Ec2Error::invalid_value(format!(
                    "Value ({v}) for parameter HttpPutResponseHopLimit is invalid. Valid values: {lo} to {hi}"
                )))
            }
        }
    }
    Ok(())
}

/// The `metadataOptions` members (botocore's `InstanceMetadataOptionsResponse`).
pub fn write(x: &mut Xml, o: &MetadataOptions, state: &str) {
    x.leaf("state", state)
        .leaf("httpTokens", o.http_tokens.as_str())
        .leaf("httpPutResponseHopLimit", o.http_put_response_hop_limit)
        .leaf("httpEndpoint", o.http_endpoint.as_str())
        .leaf("httpProtocolIpv6", o.http_protocol_ipv6.as_str())
        .leaf("instanceMetadataTags", o.instance_metadata_tags.as_str());
}

/// `ModifyInstanceMetadataOptions`: the named options change, the rest stay.
pub async fn modify_instance_metadata_options(ctx: &Ctx<'_>, x: &mut Xml) -> Ec2Result<()> {
    let raw = ctx.params.required("InstanceId")?;
    let rec = find_instance(ctx, raw).await?;
    let mut o = rec.metadata_options;
    apply(&ctx.params, "", &mut o)?;
    if rec.state == kumo_wire::InstanceState::Deleted {
        return Err(Ec2Error::client("IncorrectInstanceState", format!("The instance '{}' is terminated", rec.id)));
    }
    dry_run(ctx)?;
    if !crate::db::instances::set_metadata_options(&ctx.state.db, &rec.id, &o).await? {
        return Err(Ec2Error::not_found("InvalidInstanceID.NotFound", "instance", raw));
    }
    if let Some(host) = &rec.host_id {
        ctx.state.hosts.wake(host);
    }
    x.leaf("instanceId", &rec.id).with("instanceMetadataOptions", |x| write(x, &o, "pending"));
    Ok(())
}
