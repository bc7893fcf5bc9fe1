//! Security groups: sets of inbound and outbound rules applied to ports. Each
//! project has a `default` group, made on first use, that like AWS's allows
//! inbound traffic from its own members and nothing else. Every group starts
//! with AWS's default egress rule (everything to 0.0.0.0/0), made in the
//! transaction that makes the group, and removable. A rule change changes the desired
//! state of every host with a port in the group (or in a group whose rules
//! name it as source), and wakes those hosts.

use kumo_wire::network::{AddRule, CreateSecurityGroup, Direction, Protocol};
use kumo_wire::storage::QuotaResource;
use kumo_wire::{HostId, SecurityGroupId, SecurityGroupRuleId, Timestamp};
use serde_json::json;

use crate::auth::Caller;
use crate::db::events::{self, NewEvent};
use crate::db::networks::{self as db, GroupRecord, NewRule};
use crate::db::DbError;
use crate::error::ApiError;
use crate::state::AppState;

use super::DEFAULT_NAME;

/// The project's default group, made (with its one rule) on first use.
pub async fn default_group(state: &AppState, caller: &Caller) -> Result<GroupRecord, ApiError> {
    let mut conn = state.db.pool().acquire().await.map_err(DbError::from)?;
    if let Some(g) = db::default_group(&mut conn, &caller.project_id).await? {
        return Ok(g);
    }
    drop(conn);
    let mut tx = state.db.begin_write().await?;
    let rec = GroupRecord {
        id: SecurityGroupId::generate(),
        project_id: caller.project_id.clone(),
        name: DEFAULT_NAME.into(),
        description: "default: inbound from members of this group only".into(),
        is_default: true,
        created_by: caller.actor(),
        created_at: Timestamp::now(),
        port_count: 0,
        rules: Vec::new(),
    };
    if db::insert_group(&mut tx, &rec).await? {
        db::insert_rule(
            &mut tx,
            &NewRule {
                id: SecurityGroupRuleId::generate(),
                group_id: rec.id.clone(),
                direction: Direction::Ingress,
                protocol: Protocol::Any,
                ports: None,
                cidr: None,
                source_group_id: Some(rec.id.clone()),
                created_at: rec.created_at,
            },
        )
        .await?;
        db::insert_rule(&mut tx, &NewRule::default_egress(&rec.id, rec.created_at)).await?;
        tx.commit().await.map_err(DbError::from)?;
    } else {
        drop(tx);
    }
    let mut conn = state.db.pool().acquire().await.map_err(DbError::from)?;
    match db::default_group(&mut conn, &caller.project_id).await? {
        Some(g) => Ok(g),
        None => Err(ApiError::Conflict(
            "a security group named 'default' exists but is not the project's default; rename or delete it".into(),
        )),
    }
}

/// A group of the caller's project by id or name; 404 otherwise. The
/// project's `default` group always exists (as on AWS): it is made here if
/// nothing made it yet.
pub async fn find(state: &AppState, caller: &Caller, key: &str) -> Result<GroupRecord, ApiError> {
    let mut conn = state.db.pool().acquire().await.map_err(DbError::from)?;
    match db::find_group(&mut conn, &caller.project_id, key).await? {
        Some(group) => Ok(group),
        None if key == DEFAULT_NAME => {
            drop(conn);
            default_group(state, caller).await
        }
        None => Err(ApiError::not_found(crate::error::Kind::SecurityGroup, key)),
    }
}

/// The caller's groups (the default one included, made if needed).
pub async fn list(state: &AppState, caller: &Caller) -> Result<Vec<GroupRecord>, ApiError> {
    default_group(state, caller).await?;
    let mut conn = state.db.pool().acquire().await.map_err(DbError::from)?;
    Ok(db::project_groups(&mut conn, &caller.project_id).await?)
}

/// `POST /v1/security-groups`.
pub async fn create(state: &AppState, caller: &Caller, req: CreateSecurityGroup) -> Result<GroupRecord, ApiError> {
    crate::names::validate_group_name(&req.name)?;
    if req.name == DEFAULT_NAME {
        return Err(ApiError::duplicate(
            crate::error::Kind::SecurityGroup,
            "'default' is the name of the project's default group",
        ));
    }
    if req.description.len() > 255 {
        return Err(ApiError::Invalid("description is longer than 255 bytes".into()));
    }
    let rec = GroupRecord {
        id: SecurityGroupId::generate(),
        project_id: caller.project_id.clone(),
        name: req.name,
        description: req.description,
        is_default: false,
        created_by: caller.actor(),
        created_at: Timestamp::now(),
        port_count: 0,
        rules: Vec::new(),
    };
    let mut tx = state.db.begin_write().await?;
    crate::quotas::check(&mut tx, &caller.project_id, &[(QuotaResource::SecurityGroups, 1)]).await?;
    if !db::insert_group(&mut tx, &rec).await? {
        return Err(ApiError::duplicate(
            crate::error::Kind::SecurityGroup,
            format!("security group '{}' already exists", rec.name),
        ));
    }
    db::insert_rule(&mut tx, &NewRule::default_egress(&rec.id, rec.created_at)).await?;
    event(&mut tx, caller, &rec, "created", json!({ "name": rec.name })).await?;
    tx.commit().await.map_err(DbError::from)?;
    find(state, caller, rec.id.as_str()).await
}

/// `DELETE /v1/security-groups/{id}`: not the default group, not while ports
/// use it or other groups' rules name it.
pub async fn delete(state: &AppState, caller: &Caller, key: &str) -> Result<GroupRecord, ApiError> {
    let rec = find(state, caller, key).await?;
    if rec.is_default {
        return Err(ApiError::Protected {
            kind: crate::error::Kind::SecurityGroup,
            message: "the default security group cannot be deleted".into(),
        });
    }
    let mut tx = state.db.begin_write().await?;
    let referring = db::groups_referring_to(&mut tx, &rec.id).await?;
    if !referring.is_empty() {
        return Err(ApiError::in_use(
            crate::error::Kind::SecurityGroup,
            format!(
                "security group '{}' is the source of rules in {}: remove those rules first",
                rec.name,
                referring.join(", ")
            ),
        ));
    }
    if !db::delete_group(&mut tx, &rec.id).await? {
        return Err(ApiError::in_use(
            crate::error::Kind::SecurityGroup,
            format!("security group '{}' is used by ports: delete their instances first", rec.name),
        ));
    }
    event(&mut tx, caller, &rec, "deleted", json!({ "name": rec.name })).await?;
    tx.commit().await.map_err(DbError::from)?;
    Ok(rec)
}

/// Checks a rule's shape: ports only for TCP/UDP, 1-65535, first <= last;
/// exactly one of a CIDR (a network address) and a group (the source of an
/// ingress rule, the destination of an egress rule).
pub fn check_rule(req: &AddRule) -> Result<(), ApiError> {
    if let Some(r) = req.ports {
        if !req.protocol.has_ports() {
            return Err(ApiError::Invalid(format!("protocol {} has no ports; leave them out", req.protocol.as_str())));
        }
        if r.first == 0 || r.last == 0 {
            return Err(ApiError::Invalid("ports are 1-65535; 0 is not a port".into()));
        }
        if r.first > r.last {
            return Err(ApiError::Invalid(format!("port range {}-{} is backwards", r.first, r.last)));
        }
    }
    match (&req.cidr, &req.source_group) {
        (Some(_), Some(_)) => Err(ApiError::Invalid("give a CIDR or a source group, not both".into())),
        (None, None) => Err(ApiError::Invalid(format!(
            "give a CIDR (e.g. 0.0.0.0/0) or a {} group",
            match req.direction {
                Direction::Ingress => "source",
                Direction::Egress => "destination",
            }
        ))),
        (Some(cidr), None) if cidr.trunc() != *cidr => {
            Err(ApiError::Invalid(format!("CIDR {cidr} has host bits set; did you mean {}?", cidr.trunc())))
        }
        _ => Ok(()),
    }
}

/// `POST /v1/security-groups/{id}/rules`.
pub async fn add_rule(state: &AppState, caller: &Caller, key: &str, req: AddRule) -> Result<GroupRecord, ApiError> {
    let group = find(state, caller, key).await?;
    check_rule(&req)?;
    let source_group_id = match &req.source_group {
        Some(name) => Some(find(state, caller, name).await?.id),
        None => None,
    };
    let duplicate = group.rules.iter().any(|r| {
        r.direction == req.direction
            && r.protocol == req.protocol
            && r.ports == req.ports
            && r.cidr == req.cidr
            && r.source_group_id == source_group_id
    });
    if duplicate {
        return Err(ApiError::duplicate(
            crate::error::Kind::SecurityGroupRule,
            format!("security group '{}' already has this {} rule", group.name, req.direction.as_str()),
        ));
    }
    let rule = NewRule {
        id: SecurityGroupRuleId::generate(),
        group_id: group.id.clone(),
        direction: req.direction,
        protocol: req.protocol,
        ports: req.ports,
        cidr: req.cidr,
        source_group_id,
        created_at: Timestamp::now(),
    };
    let mut tx = state.db.begin_write().await?;
    crate::quotas::check_rules_in_group(&mut tx, &caller.project_id, rule.group_id.as_str()).await?;
    db::insert_rule(&mut tx, &rule).await?;
    let detail = json!({ "rule": rule.id, "direction": rule.direction, "protocol": rule.protocol, "ports": rule.ports, "cidr": rule.cidr,
        "source_group": rule.source_group_id });
    event(&mut tx, caller, &group, "rule_added", detail).await?;
    let hosts = db::hosts_affected_by_group(&mut tx, &group.id).await?;
    tx.commit().await.map_err(DbError::from)?;
    wake(state, &hosts);
    find(state, caller, group.id.as_str()).await
}

/// `DELETE /v1/security-groups/{id}/rules/{rule}`.
pub async fn remove_rule(state: &AppState, caller: &Caller, key: &str, rule: &str) -> Result<GroupRecord, ApiError> {
    let group = find(state, caller, key).await?;
    let rule_id: SecurityGroupRuleId =
        rule.parse().map_err(|_| ApiError::not_found(crate::error::Kind::SecurityGroupRule, rule))?;
    let mut tx = state.db.begin_write().await?;
    if !db::delete_rule(&mut tx, &group.id, &rule_id).await? {
        return Err(ApiError::not_found(crate::error::Kind::SecurityGroupRule, rule));
    }
    event(&mut tx, caller, &group, "rule_removed", json!({ "rule": rule_id })).await?;
    let hosts = db::hosts_affected_by_group(&mut tx, &group.id).await?;
    tx.commit().await.map_err(DbError::from)?;
    wake(state, &hosts);
    find(state, caller, group.id.as_str()).await
}

/// The groups a launch asks for (names or ids), or the project's default group.
pub async fn for_launch(state: &AppState, caller: &Caller, names: &[String]) -> Result<Vec<GroupRecord>, ApiError> {
    if names.is_empty() {
        return Ok(vec![default_group(state, caller).await?]);
    }
    let mut out: Vec<GroupRecord> = Vec::with_capacity(names.len());
    for name in names {
        let g = match find(state, caller, name).await {
            Ok(g) => g,
            Err(_) if name == DEFAULT_NAME => default_group(state, caller).await?,
            Err(_) => {
                return Err(ApiError::Invalid(format!("security group '{name}' does not exist (see `kumo sg list`)")))
            }
        };
        if !out.iter().any(|o| o.id == g.id) {
            out.push(g);
        }
    }
    Ok(out)
}

/// Wakes the long polls of `hosts`, whose desired state changed.
pub fn wake(state: &AppState, hosts: &[HostId]) {
    for h in hosts {
        state.hosts.wake(h);
    }
}

async fn event(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    caller: &Caller,
    group: &GroupRecord,
    action: &str,
    detail: serde_json::Value,
) -> Result<(), ApiError> {
    events::append(
        &mut **tx,
        &NewEvent {
            project_id: Some(&group.project_id),
            resource_type: "security_group",
            resource_id: group.id.as_str(),
            at: Timestamp::now(),
            actor: &caller.actor(),
            action,
            detail,
        },
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use kumo_wire::network::PortRange;

    use super::*;

    fn rule(protocol: Protocol, ports: Option<(u16, u16)>, cidr: Option<&str>, source: Option<&str>) -> AddRule {
        AddRule {
            direction: Direction::Ingress,
            protocol,
            ports: ports.map(|(first, last)| PortRange { first, last }),
            cidr: cidr.map(|c| c.parse().unwrap()),
            source_group: source.map(str::to_owned),
        }
    }

    #[test]
    fn rules_are_checked() {
        use Protocol::*;
        let good = [
            rule(Tcp, Some((80, 80)), Some("0.0.0.0/0"), None),
            rule(Udp, Some((1, 65535)), Some("10.0.0.0/8"), None),
            rule(Tcp, None, None, Some("web")),
            rule(Icmp, None, Some("192.168.0.0/16"), None),
            rule(Any, None, None, Some("default")),
        ];
        for r in &good {
            assert!(check_rule(r).is_ok(), "{r:?}");
        }
        let bad = [
            rule(Tcp, Some((0, 80)), Some("0.0.0.0/0"), None),
            rule(Tcp, Some((90, 80)), Some("0.0.0.0/0"), None),
            rule(Icmp, Some((1, 2)), Some("0.0.0.0/0"), None),
            rule(Any, Some((1, 2)), Some("0.0.0.0/0"), None),
            rule(Tcp, Some((22, 22)), None, None),
            rule(Tcp, Some((22, 22)), Some("0.0.0.0/0"), Some("web")),
            rule(Tcp, Some((22, 22)), Some("10.0.0.1/8"), None),
        ];
        for r in &bad {
            assert!(check_rule(r).is_err(), "{r:?}");
        }
    }
}
