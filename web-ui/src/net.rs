//! Networks, security groups with their rules, floating IPs.

use axum::extract::{Path, State};
use axum::http::{Method, StatusCode};
use kumo_wire::api::{Instance, InstancePage, Listing};
use kumo_wire::network::{FloatingIp, Network, SecurityGroup};
use serde_json::{json, Value};

use crate::client::enc;
use crate::error::PanelError;
use crate::pages::{redirect_or_refused, with_status, PageResult};
use crate::render::page;
use crate::session::{FormData, Posted, Session};
use crate::Panel;

// ---------------------------------------------------------------- networks

async fn networks_page(
    panel: &Panel,
    s: &Session,
    status: StatusCode,
    error: Option<String>,
    input: Value,
) -> PageResult {
    let networks: Listing<Network> = panel.api.get_all(&s.token, "/v1/networks").await?;
    let ctx = json!({"networks": networks.items, "error": error, "input": input});
    Ok(with_status(status, page("networks.html", "networks", s, ctx)))
}

/// The project's networks (and the external one).
pub async fn networks(State(panel): State<Panel>, s: Session) -> PageResult {
    networks_page(&panel, &s, StatusCode::OK, None, json!({})).await
}

/// Creates a network.
pub async fn network_create(State(panel): State<Panel>, Posted { session: s, form }: Posted) -> PageResult {
    let mut body = json!({"name": form.get("name"), "cidr": form.get("cidr")});
    if let Some(g) = form.opt("gateway") {
        body["gateway"] = json!(g);
    }
    let dns: Vec<String> =
        form.get("dns_servers").split([',', ' ']).filter(|d| !d.is_empty()).map(str::to_owned).collect();
    if !dns.is_empty() {
        body["dns_servers"] = json!(dns);
    }
    redirect_or_refused(
        panel.api.send::<_, Network>(Some(&s.token), Method::POST, "/v1/networks", &body).await,
        "/ui/networks",
        |status, msg| networks_page(&panel, &s, status, Some(msg), form.to_json()),
    )
    .await
}

/// Deletes a network.
pub async fn network_delete(
    State(panel): State<Panel>,
    Path(id): Path<String>,
    Posted { session: s, .. }: Posted,
) -> PageResult {
    redirect_or_refused(
        panel.api.act::<()>(&s.token, Method::DELETE, &format!("/v1/networks/{}", enc(&id)), None).await,
        "/ui/networks",
        |status, msg| networks_page(&panel, &s, status, Some(msg), json!({})),
    )
    .await
}

// ---------------------------------------------------------------- security groups

async fn groups_page(
    panel: &Panel,
    s: &Session,
    status: StatusCode,
    error: Option<String>,
    input: Value,
) -> PageResult {
    let groups: Listing<SecurityGroup> = panel.api.get_all(&s.token, "/v1/security-groups").await?;
    let ctx = json!({"groups": groups.items, "error": error, "input": input});
    Ok(with_status(status, page("security_groups.html", "security-groups", s, ctx)))
}

/// The project's security groups with their rules.
pub async fn groups(State(panel): State<Panel>, s: Session) -> PageResult {
    groups_page(&panel, &s, StatusCode::OK, None, json!({})).await
}

/// Creates a security group.
pub async fn group_create(State(panel): State<Panel>, Posted { session: s, form }: Posted) -> PageResult {
    let body = json!({"name": form.get("name"), "description": form.get("description")});
    redirect_or_refused(
        panel.api.send::<_, SecurityGroup>(Some(&s.token), Method::POST, "/v1/security-groups", &body).await,
        "/ui/security-groups",
        |status, msg| groups_page(&panel, &s, status, Some(msg), json!({"group": form.to_json()})),
    )
    .await
}

/// Deletes a security group.
pub async fn group_delete(
    State(panel): State<Panel>,
    Path(id): Path<String>,
    Posted { session: s, .. }: Posted,
) -> PageResult {
    redirect_or_refused(
        panel.api.act::<()>(&s.token, Method::DELETE, &format!("/v1/security-groups/{}", enc(&id)), None).await,
        "/ui/security-groups",
        |status, msg| groups_page(&panel, &s, status, Some(msg), json!({})),
    )
    .await
}

/// `ports` as the form has it (`22`, `8000-8080`, empty for all) as the API's range.
fn port_range(text: &str) -> Result<Value, String> {
    if text.is_empty() {
        return Ok(Value::Null);
    }
    let bad = || format!("ports must be a port or a range like 8000-8080, not '{text}'");
    let (a, b) = text.split_once('-').unwrap_or((text, text));
    let first: u16 = a.trim().parse().map_err(|_| bad())?;
    let last: u16 = b.trim().parse().map_err(|_| bad())?;
    Ok(json!({"first": first, "last": last}))
}

fn rule_body(form: &FormData) -> Result<Value, String> {
    let mut body = json!({"protocol": form.get("protocol"), "ports": port_range(&form.get("ports"))?});
    if let Some(d) = form.opt("direction") {
        body["direction"] = json!(d);
    }
    if let Some(c) = form.opt("cidr") {
        body["cidr"] = json!(c);
    }
    if let Some(g) = form.opt("source_group") {
        body["source_group"] = json!(g);
    }
    Ok(body)
}

/// Adds a rule (inbound unless the form says `egress`) to a group.
pub async fn rule_add(
    State(panel): State<Panel>,
    Path(id): Path<String>,
    Posted { session: s, form }: Posted,
) -> PageResult {
    let input = json!({"rule_group": id, "rule": form.to_json()});
    let body = match rule_body(&form) {
        Ok(b) => b,
        Err(msg) => return groups_page(&panel, &s, StatusCode::BAD_REQUEST, Some(msg), input).await,
    };
    let path = format!("/v1/security-groups/{}/rules", enc(&id));
    redirect_or_refused(
        panel.api.send::<_, Value>(Some(&s.token), Method::POST, &path, &body).await,
        "/ui/security-groups",
        |status, msg| groups_page(&panel, &s, status, Some(msg), input),
    )
    .await
}

/// Removes a rule.
pub async fn rule_delete(
    State(panel): State<Panel>,
    Path((id, rule)): Path<(String, String)>,
    Posted { session: s, .. }: Posted,
) -> PageResult {
    let path = format!("/v1/security-groups/{}/rules/{}", enc(&id), enc(&rule));
    redirect_or_refused(
        panel.api.act::<()>(&s.token, Method::DELETE, &path, None).await,
        "/ui/security-groups",
        |status, msg| groups_page(&panel, &s, status, Some(msg), json!({})),
    )
    .await
}

// ---------------------------------------------------------------- floating IPs

async fn fips_page(panel: &Panel, s: &Session, status: StatusCode, error: Option<String>) -> PageResult {
    let fips: Listing<FloatingIp> = panel.api.get_all(&s.token, "/v1/floating-ips").await?;
    let page_: InstancePage = panel.api.get_all(&s.token, "/v1/instances").await?;
    let instances: Vec<Instance> = page_.items;
    let ctx = json!({"fips": fips.items, "instances": instances, "error": error});
    Ok(with_status(status, page("floating_ips.html", "floating-ips", s, ctx)))
}

/// The project's floating IPs.
pub async fn fips(State(panel): State<Panel>, s: Session) -> PageResult {
    fips_page(&panel, &s, StatusCode::OK, None).await
}

/// Allocates, associates, disassociates or releases.
pub async fn fip_action(State(panel): State<Panel>, Posted { session: s, form }: Posted) -> PageResult {
    let id = form.get("id");
    let path = format!("/v1/floating-ips/{}", enc(&id));
    let result = match form.get("action").as_str() {
        "allocate" => panel.api.act(&s.token, Method::POST, "/v1/floating-ips", Some(&json!({}))).await,
        "associate" => {
            let body = json!({"instance": form.get("instance")});
            panel.api.act(&s.token, Method::POST, &format!("{path}/associate"), Some(&body)).await
        }
        "disassociate" => {
            panel.api.act(&s.token, Method::POST, &format!("{path}/disassociate"), Some(&json!({}))).await
        }
        "release" => panel.api.act::<()>(&s.token, Method::DELETE, &path, None).await,
        other => return Err(PanelError::BadForm(format!("unknown action '{other}'"))),
    };
    redirect_or_refused(result, "/ui/floating-ips", |status, msg| fips_page(&panel, &s, status, Some(msg))).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_ranges_from_the_form() {
        assert_eq!(port_range("").unwrap(), Value::Null);
        assert_eq!(port_range("22").unwrap(), json!({"first": 22, "last": 22}));
        assert_eq!(port_range("8000-8080").unwrap(), json!({"first": 8000, "last": 8080}));
        assert!(port_range("ssh").unwrap_err().contains("'ssh'"));
        assert!(port_range("1-99999").is_err());
    }
}
