//! The operator's pages: hosts, flavors, price list, projects and users, quotas.
//!
//! Members get 403 here twice over: the page refuses a session whose token
//! does not claim the admin role, and the API refuses the calls anyway (the
//! claim is unverified in the panel, but a forged token fails every API call).

use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{Method, StatusCode};
use kumo_wire::api::{Flavor, Host, Listing, Project, User};
use kumo_wire::billing::{PriceListing, PriceVersion};
use kumo_wire::storage::{ProjectQuotas, QuotaDefaults};
use kumo_wire::Timestamp;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::client::{enc, ApiFailure};
use crate::error::PanelError;
use crate::pages::{redirect_or_refused, refusal, see_other, with_status, PageResult};
use crate::render::page;
use crate::session::{FormData, Posted, Session};
use crate::Panel;

/// A session whose token claims the admin role.
#[derive(Debug)]
pub struct AdminSession(pub Session);

fn forbidden() -> PanelError {
    PanelError::Api(ApiFailure {
        status: StatusCode::FORBIDDEN,
        code: "forbidden".into(),
        message: "this page is for administrators".into(),
    })
}

impl<S: Send + Sync> FromRequestParts<S> for AdminSession {
    type Rejection = PanelError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, PanelError> {
        let s = Session::from_request_parts(parts, state).await?;
        if !s.is_admin() {
            return Err(forbidden());
        }
        Ok(Self(s))
    }
}

/// A posted form of an admin session.
fn admin(posted: Posted) -> Result<(Session, FormData), PanelError> {
    if !posted.session.is_admin() {
        return Err(forbidden());
    }
    Ok((posted.session, posted.form))
}

// ---------------------------------------------------------------- hosts

async fn hosts_page(panel: &Panel, s: &Session, status: StatusCode, error: Option<String>) -> PageResult {
    let hosts: Listing<Host> = panel.api.get_all(&s.token, "/v1/hosts").await?;
    let loads = host_loads(panel, s, &hosts.items).await?;
    let now = Timestamp::now().millis();
    let rows: Vec<Value> = hosts
        .items
        .iter()
        .map(|h| {
            let mut v = json!(h);
            v["heartbeat_age_secs"] = json!(h.last_heartbeat_at.map(|t| (now - t.millis()).max(0) / 1000));
            v["free_vcpus"] = json!(i64::from(h.vcpus) - i64::from(h.used_vcpus));
            v["free_memory_mib"] = json!(h.memory_mib as i64 - h.used_memory_mib as i64);
            v["free_disk_gib"] = json!(h.disk_gib as i64 - h.used_disk_gib as i64);
            if let Some((load, spark)) = loads.get(h.id.as_str()) {
                v["load"] = json!(load);
                v["load_spark"] = json!(spark);
            }
            v
        })
        .collect();
    Ok(with_status(status, page("admin_hosts.html", "admin", s, json!({"hosts": rows, "error": error}))))
}

/// Each host's newest CPU %, load and memory (its last hour of minute
/// points) and a CPU sparkline of that hour; hosts without points are left out.
async fn host_loads(
    panel: &Panel,
    s: &Session,
    hosts: &[Host],
) -> Result<std::collections::HashMap<String, (String, String)>, PanelError> {
    let mut out = std::collections::HashMap::new();
    for h in hosts {
        let path = format!("/v1/hosts/{}/metrics?since=1h&step=60", enc(h.id.as_str()));
        let Ok(series) = panel.api.get::<kumo_wire::stats::MetricsSeries>(&s.token, &path).await else { continue };
        let Some(last) = series.points.last() else { continue };
        let text = format!(
            "{} % · {} · {} MiB",
            last.cpu_percent.map_or_else(|| "-".to_owned(), |c| format!("{c:.0}")),
            last.load1.map_or_else(|| "-".to_owned(), |l| format!("{l:.2}")),
            last.memory_used_mib.map_or_else(|| "-".to_owned(), |m| format!("{m:.0}")),
        );
        out.insert(h.id.as_str().to_owned(), (text, crate::graphs::sparkline(&series, Timestamp::now())));
    }
    Ok(out)
}

/// Hosts with capacity used and free, heartbeat age, load, enable/disable.
pub async fn hosts(State(panel): State<Panel>, AdminSession(s): AdminSession) -> PageResult {
    hosts_page(&panel, &s, StatusCode::OK, None).await
}

/// Enables or disables a host.
pub async fn host_action(
    State(panel): State<Panel>,
    Path((id, action)): Path<(String, String)>,
    posted: Posted,
) -> PageResult {
    let (s, _) = admin(posted)?;
    if action != "enable" && action != "disable" {
        return Err(PanelError::NotFound);
    }
    redirect_or_refused(
        panel.api.act::<()>(&s.token, Method::POST, &format!("/v1/hosts/{}/{action}", enc(&id)), None).await,
        "/ui/admin/hosts",
        |status, msg| hosts_page(&panel, &s, status, Some(msg)),
    )
    .await
}

// ---------------------------------------------------------------- flavors

async fn flavors_page(
    panel: &Panel,
    s: &Session,
    status: StatusCode,
    error: Option<String>,
    input: Value,
) -> PageResult {
    let flavors: Listing<Flavor> = panel.api.get_all(&s.token, "/v1/flavors").await?;
    let ctx = json!({"flavors": flavors.items, "error": error, "input": input});
    Ok(with_status(status, page("admin_flavors.html", "admin", s, ctx)))
}

/// Flavors, with a form for a new one.
pub async fn flavors(State(panel): State<Panel>, AdminSession(s): AdminSession) -> PageResult {
    flavors_page(&panel, &s, StatusCode::OK, None, json!({})).await
}

/// Numbers of a form: each named field parsed, or a message naming the bad one.
fn numbers(form: &FormData, names: &[&str], required: bool) -> Result<Map<String, Value>, String> {
    let mut out = Map::new();
    for name in names {
        match form.opt(name) {
            None if required => return Err(format!("{name} is required")),
            None => {}
            Some(v) => match v.parse::<i64>() {
                Ok(n) => {
                    out.insert((*name).to_owned(), json!(n));
                }
                Err(_) => return Err(format!("{name} must be a whole number, not '{v}'")),
            },
        }
    }
    Ok(out)
}

/// Creates a flavor.
pub async fn flavor_create(State(panel): State<Panel>, posted: Posted) -> PageResult {
    let (s, form) = admin(posted)?;
    let mut body = match numbers(&form, &["vcpus", "memory_mib", "disk_gib"], true) {
        Ok(b) => b,
        Err(msg) => return flavors_page(&panel, &s, StatusCode::BAD_REQUEST, Some(msg), form.to_json()).await,
    };
    body.insert("name".into(), json!(form.get("name")));
    redirect_or_refused(
        panel.api.send::<_, Flavor>(Some(&s.token), Method::POST, "/v1/flavors", &body).await,
        "/ui/admin/flavors",
        |status, msg| flavors_page(&panel, &s, status, Some(msg), form.to_json()),
    )
    .await
}

/// Deletes a flavor.
pub async fn flavor_delete(State(panel): State<Panel>, Path(id): Path<String>, posted: Posted) -> PageResult {
    let (s, _) = admin(posted)?;
    redirect_or_refused(
        panel.api.act::<()>(&s.token, Method::DELETE, &format!("/v1/flavors/{}", enc(&id)), None).await,
        "/ui/admin/flavors",
        |status, msg| flavors_page(&panel, &s, status, Some(msg), json!({})),
    )
    .await
}

// ---------------------------------------------------------------- prices

async fn prices_page(
    panel: &Panel,
    s: &Session,
    status: StatusCode,
    error: Option<String>,
    input: Value,
) -> PageResult {
    let prices: PriceListing = panel.api.get(&s.token, "/v1/billing/prices").await?;
    let ctx = json!({"prices": prices, "error": error, "input": input});
    Ok(with_status(status, page("admin_prices.html", "admin", s, ctx)))
}

/// The price list, with a form for a new version of an item's price.
pub async fn prices(State(panel): State<Panel>, AdminSession(s): AdminSession) -> PageResult {
    prices_page(&panel, &s, StatusCode::OK, None, json!({})).await
}

/// Schedules a new price version.
pub async fn price_create(State(panel): State<Panel>, posted: Posted) -> PageResult {
    let (s, form) = admin(posted)?;
    let body = json!({
        "item": form.get("item"),
        "unit_price": form.get("unit_price"),
        "daily_cap": form.opt("daily_cap"),
        "monthly_cap": form.opt("monthly_cap"),
        "charge_stopped": form.opt("charge_stopped").map(|_| true),
    });
    redirect_or_refused(
        panel.api.send::<_, PriceVersion>(Some(&s.token), Method::POST, "/v1/billing/prices", &body).await,
        "/ui/admin/prices",
        |status, msg| prices_page(&panel, &s, status, Some(msg), form.to_json()),
    )
    .await
}

// ---------------------------------------------------------------- projects and users

async fn projects_page(
    panel: &Panel,
    s: &Session,
    status: StatusCode,
    error: Option<String>,
    input: Value,
) -> PageResult {
    let projects: Listing<Project> = panel.api.get_all(&s.token, "/v1/projects").await?;
    let users: Listing<User> = panel.api.get_all(&s.token, "/v1/users").await?;
    let ctx = json!({"projects": projects.items, "users": users.items, "error": error, "input": input});
    Ok(with_status(status, page("admin_projects.html", "admin", s, ctx)))
}

/// Projects and users.
pub async fn projects(State(panel): State<Panel>, AdminSession(s): AdminSession) -> PageResult {
    projects_page(&panel, &s, StatusCode::OK, None, json!({})).await
}

/// Creates a project.
pub async fn project_create(State(panel): State<Panel>, posted: Posted) -> PageResult {
    let (s, form) = admin(posted)?;
    let body = json!({"name": form.get("name")});
    redirect_or_refused(
        panel.api.send::<_, Project>(Some(&s.token), Method::POST, "/v1/projects", &body).await,
        "/ui/admin/projects",
        |status, msg| projects_page(&panel, &s, status, Some(msg), json!({"project": form.to_json()})),
    )
    .await
}

/// Creates a user.
pub async fn user_create(State(panel): State<Panel>, posted: Posted) -> PageResult {
    let (s, form) = admin(posted)?;
    let password = form.0.iter().find(|(k, _)| k == "password").map(|(_, v)| v.clone()).unwrap_or_default();
    let body = json!({"name": form.get("name"), "password": password, "project": form.get("project"), "role": form.opt("role")});
    match panel.api.send::<_, User>(Some(&s.token), Method::POST, "/v1/users", &body).await {
        Ok(_) => see_other("/ui/admin/projects"),
        Err(f) => {
            let (status, msg) = refusal(f)?;
            let mut input = form.to_json();
            input["password"] = json!("");
            projects_page(&panel, &s, status, Some(msg), json!({"user": input})).await
        }
    }
}

// ---------------------------------------------------------------- quotas

/// Names of the quota fields, as `SetQuotas` spells them.
const QUOTA_FIELDS: [&str; 7] = ["instances", "vcpus", "ram_mib", "volumes", "volume_gib", "snapshots", "floating_ips"];

#[derive(Debug, Deserialize)]
pub struct ProjectParam {
    project: Option<String>,
}

async fn quotas_page(
    panel: &Panel,
    s: &Session,
    project: Option<String>,
    status: StatusCode,
    error: Option<String>,
) -> PageResult {
    let projects: Listing<Project> = panel.api.get_all(&s.token, "/v1/projects").await?;
    let defaults: QuotaDefaults = panel.api.get(&s.token, "/v1/quotas/defaults").await?;
    let selected = project.or_else(|| projects.items.first().map(|p| p.id.to_string()));
    let quotas: Option<ProjectQuotas> = match &selected {
        Some(p) => Some(panel.api.get(&s.token, &format!("/v1/projects/{}/quotas", enc(p))).await?),
        None => None,
    };
    let ctx = json!({"projects": projects.items, "defaults": defaults.defaults, "selected": selected, "quotas": quotas, "error": error});
    Ok(with_status(status, page("admin_quotas.html", "admin", s, ctx)))
}

/// Default limits and one project's limits and use.
pub async fn quotas(
    State(panel): State<Panel>,
    AdminSession(s): AdminSession,
    Query(q): Query<ProjectParam>,
) -> PageResult {
    quotas_page(&panel, &s, q.project, StatusCode::OK, None).await
}

/// Sets a project's limits (empty fields unchanged).
pub async fn quotas_set(State(panel): State<Panel>, posted: Posted) -> PageResult {
    let (s, form) = admin(posted)?;
    let project = form.get("project");
    let body = match numbers(&form, &QUOTA_FIELDS, false) {
        Ok(b) => b,
        Err(msg) => return quotas_page(&panel, &s, Some(project), StatusCode::BAD_REQUEST, Some(msg)).await,
    };
    let path = format!("/v1/projects/{}/quotas", enc(&project));
    redirect_or_refused(
        panel.api.send::<_, ProjectQuotas>(Some(&s.token), Method::PUT, &path, &body).await,
        &format!("/ui/admin/quotas?project={}", enc(&project)),
        |status, msg| quotas_page(&panel, &s, Some(project), status, Some(msg)),
    )
    .await
}
