//! `/v1/networks`, `/v1/security-groups`, `/v1/floating-ips` and `/v1/admin/vlans`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use kumo_wire::api::{ListQuery, Listing};
use kumo_wire::network::{
    AddRule, AllocateFloatingIp, AssociateFloatingIp, CreateNetwork, CreateSecurityGroup, FloatingIp, Network,
    SecurityGroup, VlanPool,
};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Caller;
use crate::error::{ApiJson, ApiQuery, ApiResult};
use crate::networks::{self, floating_ips, security_groups};
use crate::state::AppState;

/// Routes of this module.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_networks, create_network))
        .routes(routes!(show_network, delete_network))
        .routes(routes!(list_groups, create_group))
        .routes(routes!(show_group, delete_group))
        .routes(routes!(add_rule))
        .routes(routes!(remove_rule))
        .routes(routes!(list_floating_ips, allocate_floating_ip))
        .routes(routes!(release_floating_ip))
        .routes(routes!(associate_floating_ip))
        .routes(routes!(disassociate_floating_ip))
        .routes(routes!(vlan_pool))
}

// ---------------------------------------------------------------- networks

/// Creates a network. `vlan_id` and `external` are for admins; the VLAN comes from the pool otherwise.
#[utoipa::path(post, path = "/v1/networks", tag = "networks", request_body = CreateNetwork,
    responses((status = 201, body = Network), (status = 403, body = kumo_wire::ErrorBody),
        (status = 409, body = kumo_wire::ErrorBody), (status = 422, body = kumo_wire::ErrorBody)))]
async fn create_network(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<CreateNetwork>,
) -> ApiResult<(StatusCode, Json<Network>)> {
    Ok((StatusCode::CREATED, Json(networks::create(&state, &caller, req).await?.to_api())))
}

/// Lists the project's networks by name.
#[utoipa::path(get, path = "/v1/networks", tag = "networks", params(ListQuery), responses((status = 200, body = Listing<Network>)))]
async fn list_networks(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Json<Listing<Network>>> {
    let items = networks::list(&state, &caller).await?.iter().map(|n| n.to_api()).collect();
    Ok(Json(crate::paging::page(items, &q)?))
}

/// Shows a network.
#[utoipa::path(get, path = "/v1/networks/{network}", tag = "networks",
    params(("network" = String, Path, description = "Network id or name")),
    responses((status = 200, body = Network), (status = 404, body = kumo_wire::ErrorBody)))]
async fn show_network(
    State(state): State<AppState>,
    caller: Caller,
    Path(network): Path<String>,
) -> ApiResult<Json<Network>> {
    Ok(Json(networks::find(&state, &caller, &network).await?.to_api()))
}

/// Deletes a network (refused while ports or floating IPs use it).
#[utoipa::path(delete, path = "/v1/networks/{network}", tag = "networks",
    params(("network" = String, Path, description = "Network id or name")),
    responses((status = 200, body = Network), (status = 404, body = kumo_wire::ErrorBody), (status = 409, body = kumo_wire::ErrorBody)))]
async fn delete_network(
    State(state): State<AppState>,
    caller: Caller,
    Path(network): Path<String>,
) -> ApiResult<Json<Network>> {
    Ok(Json(networks::delete(&state, &caller, &network).await?.to_api()))
}

/// The VLAN pool's use (admins).
#[utoipa::path(get, path = "/v1/admin/vlans", tag = "networks",
    responses((status = 200, body = VlanPool), (status = 403, body = kumo_wire::ErrorBody)))]
async fn vlan_pool(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<VlanPool>> {
    Ok(Json(networks::vlan_pool(&state, &caller).await?))
}

// ---------------------------------------------------------------- security groups

/// Creates an empty security group (inbound denied until rules are added).
#[utoipa::path(post, path = "/v1/security-groups", tag = "security-groups", request_body = CreateSecurityGroup,
    responses((status = 201, body = SecurityGroup), (status = 409, body = kumo_wire::ErrorBody), (status = 422, body = kumo_wire::ErrorBody)))]
async fn create_group(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<CreateSecurityGroup>,
) -> ApiResult<(StatusCode, Json<SecurityGroup>)> {
    Ok((StatusCode::CREATED, Json(security_groups::create(&state, &caller, req).await?.to_api())))
}

/// Lists the project's security groups (the `default` group is made on first use).
#[utoipa::path(get, path = "/v1/security-groups", tag = "security-groups", params(ListQuery), responses((status = 200, body = Listing<SecurityGroup>)))]
async fn list_groups(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Json<Listing<SecurityGroup>>> {
    let items = security_groups::list(&state, &caller).await?.iter().map(|g| g.to_api()).collect();
    Ok(Json(crate::paging::page(items, &q)?))
}

/// Shows a security group with its rules.
#[utoipa::path(get, path = "/v1/security-groups/{group}", tag = "security-groups",
    params(("group" = String, Path, description = "Security group id or name")),
    responses((status = 200, body = SecurityGroup), (status = 404, body = kumo_wire::ErrorBody)))]
async fn show_group(
    State(state): State<AppState>,
    caller: Caller,
    Path(group): Path<String>,
) -> ApiResult<Json<SecurityGroup>> {
    Ok(Json(security_groups::find(&state, &caller, &group).await?.to_api()))
}

/// Deletes a security group (not `default`, not while ports use it or other groups' rules name it).
#[utoipa::path(delete, path = "/v1/security-groups/{group}", tag = "security-groups",
    params(("group" = String, Path, description = "Security group id or name")),
    responses((status = 200, body = SecurityGroup), (status = 404, body = kumo_wire::ErrorBody), (status = 409, body = kumo_wire::ErrorBody)))]
async fn delete_group(
    State(state): State<AppState>,
    caller: Caller,
    Path(group): Path<String>,
) -> ApiResult<Json<SecurityGroup>> {
    Ok(Json(security_groups::delete(&state, &caller, &group).await?.to_api()))
}

/// Adds an inbound rule; hosts with member ports apply it at once.
#[utoipa::path(post, path = "/v1/security-groups/{group}/rules", tag = "security-groups", request_body = AddRule,
    params(("group" = String, Path, description = "Security group id or name")),
    responses((status = 201, body = SecurityGroup), (status = 404, body = kumo_wire::ErrorBody),
        (status = 409, body = kumo_wire::ErrorBody), (status = 422, body = kumo_wire::ErrorBody)))]
async fn add_rule(
    State(state): State<AppState>,
    caller: Caller,
    Path(group): Path<String>,
    ApiJson(req): ApiJson<AddRule>,
) -> ApiResult<(StatusCode, Json<SecurityGroup>)> {
    Ok((StatusCode::CREATED, Json(security_groups::add_rule(&state, &caller, &group, req).await?.to_api())))
}

/// Removes a rule; hosts with member ports apply it at once.
#[utoipa::path(delete, path = "/v1/security-groups/{group}/rules/{rule}", tag = "security-groups",
    params(("group" = String, Path, description = "Security group id or name"), ("rule" = String, Path, description = "Rule id")),
    responses((status = 200, body = SecurityGroup), (status = 404, body = kumo_wire::ErrorBody)))]
async fn remove_rule(
    State(state): State<AppState>,
    caller: Caller,
    Path((group, rule)): Path<(String, String)>,
) -> ApiResult<Json<SecurityGroup>> {
    Ok(Json(security_groups::remove_rule(&state, &caller, &group, &rule).await?.to_api()))
}

// ---------------------------------------------------------------- floating IPs

/// Allocates a floating IP from the external network (billed per hour until released).
#[utoipa::path(post, path = "/v1/floating-ips", tag = "floating-ips", request_body = AllocateFloatingIp,
    responses((status = 201, body = FloatingIp), (status = 403, body = kumo_wire::ErrorBody), (status = 409, body = kumo_wire::ErrorBody)))]
async fn allocate_floating_ip(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<AllocateFloatingIp>,
) -> ApiResult<(StatusCode, Json<FloatingIp>)> {
    let rec = floating_ips::allocate(&state, &caller, req.network.as_deref()).await?;
    Ok((StatusCode::CREATED, Json(rec.to_api())))
}

/// Lists the project's floating IPs.
#[utoipa::path(get, path = "/v1/floating-ips", tag = "floating-ips", params(ListQuery), responses((status = 200, body = Listing<FloatingIp>)))]
async fn list_floating_ips(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Json<Listing<FloatingIp>>> {
    let items = floating_ips::list(&state, &caller).await?.iter().map(|f| f.to_api()).collect();
    Ok(Json(crate::paging::page(items, &q)?))
}

/// Releases a floating IP (disassociating it first).
#[utoipa::path(delete, path = "/v1/floating-ips/{fip}", tag = "floating-ips",
    params(("fip" = String, Path, description = "Floating IP id or address")),
    responses((status = 200, body = FloatingIp), (status = 404, body = kumo_wire::ErrorBody)))]
async fn release_floating_ip(
    State(state): State<AppState>,
    caller: Caller,
    Path(fip): Path<String>,
) -> ApiResult<Json<FloatingIp>> {
    Ok(Json(floating_ips::release(&state, &caller, &fip).await?.to_api()))
}

/// Maps a floating IP to an instance's first port (1:1 NAT on its host, at once).
#[utoipa::path(post, path = "/v1/floating-ips/{fip}/associate", tag = "floating-ips", request_body = AssociateFloatingIp,
    params(("fip" = String, Path, description = "Floating IP id or address")),
    responses((status = 200, body = FloatingIp), (status = 404, body = kumo_wire::ErrorBody), (status = 409, body = kumo_wire::ErrorBody)))]
async fn associate_floating_ip(
    State(state): State<AppState>,
    caller: Caller,
    Path(fip): Path<String>,
    ApiJson(req): ApiJson<AssociateFloatingIp>,
) -> ApiResult<Json<FloatingIp>> {
    Ok(Json(floating_ips::associate(&state, &caller, &fip, &req.instance).await?.to_api()))
}

/// Unmaps a floating IP (the project keeps it).
#[utoipa::path(post, path = "/v1/floating-ips/{fip}/disassociate", tag = "floating-ips",
    params(("fip" = String, Path, description = "Floating IP id or address")),
    responses((status = 200, body = FloatingIp), (status = 404, body = kumo_wire::ErrorBody), (status = 409, body = kumo_wire::ErrorBody)))]
async fn disassociate_floating_ip(
    State(state): State<AppState>,
    caller: Caller,
    Path(fip): Path<String>,
) -> ApiResult<Json<FloatingIp>> {
    Ok(Json(floating_ips::disassociate(&state, &caller, &fip).await?.to_api()))
}
