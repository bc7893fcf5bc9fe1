//! DescribeInstanceAttribute and ModifyInstanceAttribute. The flags Kumo has
//! no native notion of (`disableApiTermination`, `disableApiStop`,
//! `instanceInitiatedShutdownBehavior`, `sourceDestCheck`) live in
//! `ec2_instance_attributes` (migration 0008); TerminateInstances and
//! StopInstances honour the first two. `userData` changes through
//! [`crate::instances::set_user_data`] and `instanceType` through
//! [`crate::instances::set_flavor`] (stopped instances only, as on AWS).

use base64::Engine;
use kumo_wire::InstanceId;

use super::super::errors::{Ec2Error, Ec2Result};
use super::super::xml::Xml;
use super::instance_xml::groups_of;
use super::instances::find_instance;
use super::related::{Attributes, Related};
use super::{dry_run, Ctx};
use crate::db::DbError;
use crate::error::ApiError;
use crate::instances::ResizeError;
use crate::state::AppState;

/// Validates `stop`/`terminate`.
pub fn shutdown_behavior(v: &str) -> Ec2Result<String> {
    match v {
        "stop" | "terminate" => Ok(v.to_owned()),
        other => Err(Ec2Error::invalid_value(format!(
            "Invalid value '{other}' for instanceInitiatedShutdownBehavior: use stop or terminate"
        ))),
    }
}

/// Stores an instance's flags (replacing earlier ones).
pub async fn store(state: &AppState, id: &InstanceId, a: &Attributes) -> Ec2Result<()> {
    let mut tx = state.db.begin_write().await?;
    sqlx::query("DELETE FROM ec2_instance_attributes WHERE instance_id = $1")
        .bind(id.as_str())
        .execute(&mut *tx)
        .await
        .map_err(DbError::from)?;
    sqlx::query(
        "INSERT INTO ec2_instance_attributes (instance_id, disable_api_termination, disable_api_stop, \
         shutdown_behavior, source_dest_check) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(id.as_str())
    .bind(i64::from(a.disable_api_termination))
    .bind(i64::from(a.disable_api_stop))
    .bind(&a.shutdown_behavior)
    .bind(i64::from(a.source_dest_check))
    .execute(&mut *tx)
    .await
    .map_err(DbError::from)?;
    tx.commit().await.map_err(DbError::from)?;
    Ok(())
}

fn value(x: &mut Xml, name: &str, v: impl std::fmt::Display) {
    x.with(name, |x| {
        x.leaf("value", v);
    });
}

/// `DescribeInstanceAttribute`: one attribute of one instance.
pub async fn describe_instance_attribute(ctx: &Ctx<'_>, x: &mut Xml) -> Ec2Result<()> {
    let rec = find_instance(ctx, ctx.params.required("InstanceId")?).await?;
    let attribute = ctx.params.required("Attribute")?;
    let rel = Related::load(ctx.state, &[&rec.id]).await?;
    let attrs = rel.attributes(&rec.id);
    dry_run(ctx)?;
    x.leaf("instanceId", &rec.id);
    match attribute {
        "instanceType" => value(x, "instanceType", &rec.flavor_name),
        "userData" => {
            x.with("userData", |x| {
                if let Some(d) = &rec.user_data {
                    x.leaf("value", base64::engine::general_purpose::STANDARD.encode(d.as_bytes()));
                }
            });
        }
        "disableApiTermination" => value(x, "disableApiTermination", attrs.disable_api_termination),
        "disableApiStop" => value(x, "disableApiStop", attrs.disable_api_stop),
        "instanceInitiatedShutdownBehavior" => value(x, "instanceInitiatedShutdownBehavior", &attrs.shutdown_behavior),
        "sourceDestCheck" => value(x, "sourceDestCheck", attrs.source_dest_check),
        "rootDeviceName" => value(x, "rootDeviceName", "/dev/vda"),
        "ebsOptimized" => value(x, "ebsOptimized", false),
        "enaSupport" => value(x, "enaSupport", false),
        "sriovNetSupport" => {
            x.with("sriovNetSupport", |_| {});
        }
        "kernel" | "ramdisk" => {
            x.with(attribute, |_| {});
        }
        "productCodes" => {
            x.set("productCodes", Vec::<u8>::new(), |_, _| {});
        }
        "groupSet" => {
            x.set("groupSet", groups_of(rel.nics(&rec.id)), |x, (id, name)| {
                x.leaf("groupId", id).leaf("groupName", name);
            });
        }
        "blockDeviceMapping" => {
            x.set("blockDeviceMapping", rel.disks(&rec.id), |x, d| {
                x.leaf("deviceName", &d.device).with("ebs", |x| {
                    x.leaf("volumeId", &d.volume_id)
                        .leaf("status", "attached")
                        .leaf("attachTime", super::super::xml::time(d.attach_time))
                        .leaf("deleteOnTermination", false);
                });
            });
        }
        "enclaveOptions" => {
            x.with("enclaveOptions", |x| {
                x.leaf("enabled", false);
            });
        }
        other => {
            return Err(Ec2Error::invalid_value(format!("Value ({other}) for parameter attribute is invalid")));
        }
    }
    Ok(())
}

/// The new value of one attribute: `Attribute`+`Value`, or `<Name>.Value`.
fn new_value<'a>(ctx: &'a Ctx<'_>) -> Ec2Result<(String, &'a str)> {
    if let Some(attr) = ctx.params.get("Attribute") {
        let v = ctx.params.get("Value").ok_or_else(|| Ec2Error::missing("Value"))?;
        return Ok((attr.to_owned(), v));
    }
    for (param, attr) in [
        ("DisableApiTermination.Value", "disableApiTermination"),
        ("DisableApiStop.Value", "disableApiStop"),
        ("InstanceInitiatedShutdownBehavior.Value", "instanceInitiatedShutdownBehavior"),
        ("SourceDestCheck.Value", "sourceDestCheck"),
        ("UserData.Value", "userData"),
        ("InstanceType.Value", "instanceType"),
    ] {
        if let Some(v) = ctx.params.get(param) {
            return Ok((attr.to_owned(), v));
        }
    }
    for unsupported in ["GroupId.1", "BlockDeviceMapping.1.DeviceName", "Kernel.Value", "Ramdisk.Value"] {
        if ctx.params.get(unsupported).is_some() {
            return Err(Ec2Error::unsupported(format!(
                "{} cannot be changed on Kumo instances",
                unsupported.split('.').next().unwrap_or(unsupported)
            )));
        }
    }
    Err(Ec2Error::missing("Attribute"))
}

fn parse_bool(attr: &str, v: &str) -> Ec2Result<bool> {
    match v.to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(Ec2Error::invalid_value(format!("Value ({v}) for parameter {attr} is invalid: use true or false"))),
    }
}

/// `ModifyInstanceAttribute`: one attribute per call, as on AWS.
pub async fn modify_instance_attribute(ctx: &Ctx<'_>, x: &mut Xml) -> Ec2Result<()> {
    let rec = find_instance(ctx, ctx.params.required("InstanceId")?).await?;
    let (attr, raw) = new_value(ctx)?;
    let mut attrs = Related::load(ctx.state, &[&rec.id]).await?.attributes(&rec.id);
    match attr.as_str() {
        "disableApiTermination" => attrs.disable_api_termination = parse_bool(&attr, raw)?,
        "disableApiStop" => attrs.disable_api_stop = parse_bool(&attr, raw)?,
        "sourceDestCheck" => attrs.source_dest_check = parse_bool(&attr, raw)?,
        "instanceInitiatedShutdownBehavior" => attrs.shutdown_behavior = shutdown_behavior(raw)?,
        "userData" => {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(raw.trim())
                .map_err(|_| Ec2Error::invalid_value("UserData is not valid base64"))?;
            let text = String::from_utf8(bytes).map_err(|_| {
                Ec2Error::invalid_value("UserData must decode to text (Kumo passes user data as a UTF-8 string)")
            })?;
            if rec.state != kumo_wire::InstanceState::Stopped {
                return Err(Ec2Error::client(
                    "IncorrectInstanceState",
                    format!("The instance '{}' is not in the 'stopped' state.", rec.id),
                ));
            }
            dry_run(ctx)?;
            crate::instances::set_user_data(ctx.state, &ctx.caller, rec.id.as_str(), Some(text)).await.map_err(
                |e| match e {
                    ApiError::Conflict(m) => Ec2Error::client("IncorrectInstanceState", m),
                    other => other.into(),
                },
            )?;
            x.leaf("return", true);
            return Ok(());
        }
        "instanceType" => {
            let name = raw.trim();
            if ctx.state.db.find_flavor(name).await?.is_none() {
                return Err(Ec2Error::client(
                    "InvalidInstanceAttributeValue",
                    format!("The instance type '{name}' does not exist (see DescribeInstanceTypes)"),
                ));
            }
            if rec.state != kumo_wire::InstanceState::Stopped || rec.desired != kumo_wire::DesiredPower::Stopped {
                return Err(Ec2Error::client(
                    "IncorrectInstanceState",
                    format!("The instance '{}' is not in the 'stopped' state.", rec.id),
                ));
            }
            dry_run(ctx)?;
            crate::instances::set_flavor(ctx.state, &ctx.caller, rec.id.as_str(), name).await.map_err(|e| match e {
                ResizeError::NoRoom(m) => Ec2Error::client("InsufficientInstanceCapacity", m),
                ResizeError::Api(ApiError::Conflict(m)) => Ec2Error::client("IncorrectInstanceState", m),
                ResizeError::Api(ApiError::Invalid(m)) => Ec2Error::client("InvalidInstanceAttributeValue", m),
                // A resize makes no new instance: not `InstanceLimitExceeded`.
                ResizeError::Api(e @ ApiError::QuotaExceeded(_)) => {
                    Ec2Error::client("ResourceLimitExceeded", e.to_string())
                }
                ResizeError::Api(other) => other.into(),
            })?;
            x.leaf("return", true);
            return Ok(());
        }
        other => {
            return Err(Ec2Error::invalid_value(format!("Value ({other}) for parameter attribute is invalid")));
        }
    }
    dry_run(ctx)?;
    store(ctx.state, &rec.id, &attrs).await?;
    x.leaf("return", true);
    Ok(())
}
