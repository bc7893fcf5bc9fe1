//! `/v1/billing`: usage, invoices, estimates, the price list, and the admin views.

use axum::extract::{Path, State};
use axum::http::header::{ACCEPT, CONTENT_DISPOSITION, CONTENT_TYPE};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use kumo_wire::billing::{
    CloseReport, CreatePriceVersion, Estimate, EstimateQuery, Invoice, InvoiceQuery, MonthQuery, PriceListing,
    PriceVersion, ProjectsOverview, Usage,
};
use kumo_wire::ProjectId;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Caller;
use crate::billing;
use crate::error::{ApiError, ApiJson, ApiQuery, ApiResult};
use crate::state::AppState;

/// Routes of this module.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(my_usage))
        .routes(routes!(my_invoice))
        .routes(routes!(estimate))
        .routes(routes!(list_prices, create_price))
        .routes(routes!(close_hours))
        .routes(routes!(projects_overview))
        .routes(routes!(project_usage))
        .routes(routes!(project_invoice))
}

/// The caller's project's usage this month (or `month`), by resource, with cap states.
#[utoipa::path(get, path = "/v1/billing/usage", tag = "billing", params(MonthQuery),
    responses((status = 200, body = Usage), (status = 422, body = kumo_wire::ErrorBody)))]
async fn my_usage(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<MonthQuery>,
) -> ApiResult<Json<Usage>> {
    Ok(Json(billing::usage(&state, &caller.project_id, q.month.as_deref()).await?))
}

/// The caller's project's invoice for `month` (`YYYY-MM`): JSON, or CSV with `?format=csv` or `Accept: text/csv`.
#[utoipa::path(get, path = "/v1/billing/invoices/{month}", tag = "billing",
    params(("month" = String, Path, description = "YYYY-MM"), InvoiceQuery),
    responses((status = 200, body = Invoice), (status = 422, body = kumo_wire::ErrorBody)))]
async fn my_invoice(
    State(state): State<AppState>,
    caller: Caller,
    Path(month): Path<String>,
    ApiQuery(q): ApiQuery<InvoiceQuery>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    render_invoice(&state, &caller.project_id, &month, &q, &headers).await
}

/// What running a flavor (or `item` with `quantity` GiB) for `hours` hours would cost, caps and tax included.
#[utoipa::path(get, path = "/v1/billing/estimate", tag = "billing", params(EstimateQuery),
    responses((status = 200, body = Estimate), (status = 422, body = kumo_wire::ErrorBody)))]
async fn estimate(
    State(state): State<AppState>,
    _caller: Caller,
    ApiQuery(q): ApiQuery<EstimateQuery>,
) -> ApiResult<Json<Estimate>> {
    Ok(Json(billing::estimate(&state, &q).await?))
}

/// The price list: every version of every item.
#[utoipa::path(get, path = "/v1/billing/prices", tag = "billing", responses((status = 200, body = PriceListing)))]
async fn list_prices(State(state): State<AppState>, _caller: Caller) -> ApiResult<Json<PriceListing>> {
    Ok(Json(billing::price_listing(&state).await?))
}

/// Adds a price version (admin). It starts at a future hour; past charges never change.
#[utoipa::path(post, path = "/v1/billing/prices", tag = "billing", request_body = CreatePriceVersion,
    responses((status = 201, body = PriceVersion), (status = 409, body = kumo_wire::ErrorBody), (status = 422, body = kumo_wire::ErrorBody)))]
async fn create_price(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<CreatePriceVersion>,
) -> ApiResult<(StatusCode, Json<PriceVersion>)> {
    Ok((StatusCode::CREATED, Json(billing::create_price(&state, &caller, req).await?)))
}

/// Closes every hour that is due now (admin); the billing worker does the same on its own.
#[utoipa::path(post, path = "/v1/billing/close", tag = "billing", responses((status = 200, body = CloseReport)))]
async fn close_hours(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<CloseReport>> {
    caller.require_admin()?;
    // In its own task: a client that hangs up must not cancel a close half-way
    // through its transaction.
    let closing = tokio::spawn(async move { billing::close_all_due(&state).await });
    let report = closing.await.map_err(|e| ApiError::Internal(format!("billing close task: {e}")))??;
    Ok(Json(report))
}

/// Every project's charges this month (or `month`) (admin).
#[utoipa::path(get, path = "/v1/billing/projects", tag = "billing", params(MonthQuery),
    responses((status = 200, body = ProjectsOverview), (status = 403, body = kumo_wire::ErrorBody)))]
async fn projects_overview(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<MonthQuery>,
) -> ApiResult<Json<ProjectsOverview>> {
    caller.require_admin()?;
    Ok(Json(billing::overview(&state, q.month.as_deref()).await?))
}

/// A project's usage (admins: any project; members: their own).
#[utoipa::path(get, path = "/v1/billing/projects/{project}/usage", tag = "billing",
    params(("project" = String, Path, description = "Project id or name"), MonthQuery),
    responses((status = 200, body = Usage), (status = 404, body = kumo_wire::ErrorBody)))]
async fn project_usage(
    State(state): State<AppState>,
    caller: Caller,
    Path(project): Path<String>,
    ApiQuery(q): ApiQuery<MonthQuery>,
) -> ApiResult<Json<Usage>> {
    let project = billing::project_for(&state, &caller, &project).await?;
    Ok(Json(billing::usage(&state, &project, q.month.as_deref()).await?))
}

/// A project's invoice (admins: any project; members: their own).
#[utoipa::path(get, path = "/v1/billing/projects/{project}/invoices/{month}", tag = "billing",
    params(("project" = String, Path, description = "Project id or name"), ("month" = String, Path, description = "YYYY-MM"), InvoiceQuery),
    responses((status = 200, body = Invoice), (status = 404, body = kumo_wire::ErrorBody)))]
async fn project_invoice(
    State(state): State<AppState>,
    caller: Caller,
    Path((project, month)): Path<(String, String)>,
    ApiQuery(q): ApiQuery<InvoiceQuery>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let project = billing::project_for(&state, &caller, &project).await?;
    render_invoice(&state, &project, &month, &q, &headers).await
}

async fn render_invoice(
    state: &AppState,
    project: &ProjectId,
    month: &str,
    q: &InvoiceQuery,
    headers: &HeaderMap,
) -> ApiResult<Response> {
    let wants_csv = match q.format.as_deref() {
        Some("csv") => true,
        Some("json") => false,
        Some(other) => return Err(ApiError::BadRequest(format!("format must be json or csv, not '{other}'"))),
        None => headers.get(ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|a| a.contains("text/csv")),
    };
    let (inv, hour_secs) = billing::invoice(state, project, month).await?;
    if wants_csv {
        let disposition = format!("attachment; filename=\"kumo-invoice-{}-{}.csv\"", project, inv.month);
        return Ok((
            [(CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()), (CONTENT_DISPOSITION, disposition)],
            kumo_billing::invoice::to_csv(&inv, hour_secs),
        )
            .into_response());
    }
    Ok(Json(billing::invoice_dto(&inv, project, hour_secs)).into_response())
}
