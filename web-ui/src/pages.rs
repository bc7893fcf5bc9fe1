//! The tenant's pages: login, dashboard, instances, images, volumes,
//! snapshots, key pairs, billing.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{AppendHeaders, IntoResponse, Redirect, Response};
use axum::Json;
use kumo_billing::{Currency, Money};
use kumo_wire::api::{
    ConsoleOutput, CreatedKeyPair, Event, Flavor, Image, ImageState, Instance, InstancePage, KeyPair, Listing,
    RunInstances, RunInstancesResponse, TokenRequest, TokenResponse,
};
use kumo_wire::billing::{Estimate, Usage};
use kumo_wire::network::{Network, SecurityGroup};
use kumo_wire::storage::{ProjectQuotas, Snapshot, Volume};
use kumo_wire::{InstanceState, Timestamp};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::client::{enc, ApiFailure};
use crate::error::PanelError;
use crate::render::{self, page, Bar};
use crate::session::{
    cookie, over_tls, same, set_cookie, FormData, Posted, Session, LOGIN_CSRF_COOKIE, SESSION_COOKIE,
};
use crate::Panel;

/// A handler's result.
pub type PageResult = Result<Response, PanelError>;

/// An API refusal of a form: shown next to the form with the API's status,
/// except an expired session, which goes back to the login page.
pub fn refusal(f: ApiFailure) -> Result<(StatusCode, String), PanelError> {
    if f.status == StatusCode::UNAUTHORIZED {
        return Err(PanelError::Expired);
    }
    Ok((f.status, f.message))
}

/// Renders a page whose form was refused, with the refusal's status.
pub fn with_status(status: StatusCode, html: axum::response::Html<String>) -> Response {
    (status, html).into_response()
}

/// A 303 to `to` (after a form was carried out).
pub fn see_other(to: &str) -> PageResult {
    Ok(Redirect::to(to).into_response())
}

/// The end of a form handler: when the API call succeeded, go to `to`; when
/// the API refused it, render the page again (`again`) with the API's status
/// and message. An expired session goes back to the login form.
pub async fn redirect_or_refused<T, Fut>(
    result: Result<T, ApiFailure>,
    to: &str,
    again: impl FnOnce(StatusCode, String) -> Fut,
) -> PageResult
where
    Fut: std::future::Future<Output = PageResult>,
{
    match result {
        Ok(_) => see_other(to),
        Err(f) => {
            let (status, msg) = refusal(f)?;
            again(status, msg).await
        }
    }
}

/// Instances of the project, deleted ones only with `deleted` (the API pages; the panel reads up to 10,000).
async fn all_instances(panel: &Panel, s: &Session, deleted: bool) -> Result<Vec<Instance>, PanelError> {
    let mut out = Vec::new();
    let mut after: Option<String> = None;
    let all = if deleted { "&all=true" } else { "" };
    loop {
        let path = match &after {
            Some(a) => format!("/v1/instances?limit=1000{all}&after={}", enc(a)),
            None => format!("/v1/instances?limit=1000{all}"),
        };
        let page: InstancePage = panel.api.get(&s.token, &path).await?;
        out.extend(page.items);
        match page.next {
            Some(n) if out.len() < 10_000 => after = Some(n),
            _ => return Ok(out),
        }
    }
}

// ---------------------------------------------------------------- login

#[derive(Debug, Deserialize)]
pub struct LoginQuery {
    expired: Option<String>,
}

fn login_page(status: StatusCode, message: Option<String>, username: &str, secure: bool) -> Response {
    let token = hex::encode(rand::random::<[u8; 16]>());
    let html = render::page_html("login.html", &json!({"csrf": token, "message": message, "username": username}));
    let cookie = set_cookie(LOGIN_CSRF_COOKIE, &token, 3600, secure);
    (status, [(header::SET_COOKIE, cookie)], html).into_response()
}

/// The login form.
pub async fn login_form(headers: HeaderMap, Query(q): Query<LoginQuery>) -> Response {
    let msg = q.expired.map(|_| PanelError::Expired.localized());
    login_page(StatusCode::OK, msg, "", over_tls(&headers))
}

/// Exchanges the form's user name and password for a token; the token becomes the session cookie.
pub async fn login(State(panel): State<Panel>, headers: HeaderMap, body: Bytes) -> PageResult {
    let form = FormData::parse(&body)?;
    let secure = over_tls(&headers);
    let expected = cookie(&headers, LOGIN_CSRF_COOKIE).unwrap_or_default();
    if expected.is_empty() || !same(&form.get("csrf"), &expected) {
        return Err(PanelError::Csrf);
    }
    let req = TokenRequest {
        username: form.get("username"),
        password: form.0.iter().find(|(k, _)| k == "password").map(|(_, v)| v.clone()).unwrap_or_default(),
    };
    match panel.api.send::<_, TokenResponse>(None, Method::POST, "/v1/auth/tokens", &req).await {
        Ok(t) => {
            let max_age = (t.expires_at.millis() - Timestamp::now().millis()) / 1000;
            let resp = (
                AppendHeaders([
                    (header::SET_COOKIE, set_cookie(SESSION_COOKIE, &t.token, max_age, secure)),
                    (header::SET_COOKIE, set_cookie(LOGIN_CSRF_COOKIE, "", 0, secure)),
                ]),
                Redirect::to("/ui/"),
            );
            Ok(resp.into_response())
        }
        Err(f) => Ok(login_page(f.status, Some(f.message), &req.username, secure)),
    }
}

/// Ends the session: the API revokes its token (so a copy of the cookie is
/// worthless from now on), then the cookie is cleared.
pub async fn logout(State(panel): State<Panel>, headers: HeaderMap, posted: Posted) -> Response {
    if let Err(f) = panel.api.act::<()>(&posted.session.token, Method::DELETE, "/v1/auth/tokens", None).await {
        tracing::warn!(status = %f.status, message = %f.message, "could not revoke the session's token at logout");
    }
    let clear = set_cookie(SESSION_COOKIE, "", 0, over_tls(&headers));
    ([(header::SET_COOKIE, clear)], Redirect::to("/ui/login")).into_response()
}

// ---------------------------------------------------------------- dashboard

/// Hours from `now` to the start of next month (UTC).
fn hours_left_in_month(now: Timestamp) -> u32 {
    let days = now.millis().div_euclid(86_400_000);
    let (y, m, _) = civil_from_days(days);
    let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
    let next = days_from_civil(ny, nm, 1) * 86_400_000;
    u32::try_from((next - now.millis()) / 3_600_000).unwrap_or(0)
}

/// Howard Hinnant's `days_from_civil`.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (i64::from(m) + 9) % 12;
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Howard Hinnant's `civil_from_days`.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { yoe + era * 400 + 1 } else { yoe + era * 400 }, m, d)
}

/// `YYYY-MM` of the `back`-th month before `now`'s.
fn month_before(now: Timestamp, back: u32) -> String {
    let (y, m, _) = civil_from_days(now.millis().div_euclid(86_400_000));
    let idx = y * 12 + i64::from(m) - 1 - i64::from(back);
    format!("{:04}-{:02}", idx.div_euclid(12), idx.rem_euclid(12) + 1)
}

/// Month so far plus the running instances for the rest of the month at
/// today's prices (the billing API's estimate, caps included).
async fn forecast(panel: &Panel, s: &Session, usage: &Usage, instances: &[Instance]) -> Result<String, PanelError> {
    let currency: Currency = usage.currency.parse().map_err(|e| PanelError::Internal(format!("{e}")))?;
    let money = |text: &str| Money::parse(text, currency, "amount").map_err(|e| PanelError::Internal(format!("{e}")));
    let mut total = money(&usage.total)?;
    let hours = hours_left_in_month(Timestamp::now());
    if hours == 0 {
        return Ok(total.to_decimal());
    }
    let mut by_flavor: BTreeMap<&str, i64> = BTreeMap::new();
    for i in instances.iter().filter(|i| i.state == InstanceState::Running) {
        *by_flavor.entry(i.flavor.as_str()).or_default() += 1;
    }
    for (flavor, count) in by_flavor {
        let path = format!("/v1/billing/estimate?flavor={}&hours={hours}", enc(flavor));
        let est: Estimate = match panel.api.get(&s.token, &path).await {
            Ok(e) => e,
            Err(f) if f.status == StatusCode::UNAUTHORIZED => return Err(PanelError::Expired),
            Err(_) => continue, // a flavor without a price costs nothing
        };
        let one = money(&est.amount)?;
        let add = Money::new(one.minor() * count, currency);
        total = total.checked_add(add).map_err(|e| PanelError::Internal(format!("{e}")))?;
    }
    Ok(total.to_decimal())
}

/// Instances by state, the month's charges and forecast, quota use.
pub async fn dashboard(State(panel): State<Panel>, s: Session) -> PageResult {
    let instances = all_instances(&panel, &s, false).await?;
    let mut by_state: BTreeMap<&str, usize> = BTreeMap::new();
    for i in &instances {
        *by_state.entry(i.state.as_str()).or_default() += 1;
    }
    let usage: Usage = panel.api.get(&s.token, "/v1/billing/usage").await?;
    let forecast = forecast(&panel, &s, &usage, &instances).await?;
    let quotas: ProjectQuotas = panel.api.get(&s.token, "/v1/quotas").await?;
    let ctx = json!({"by_state": by_state, "total_instances": instances.len(), "usage": usage, "forecast": forecast, "quotas": quotas});
    Ok(page("dashboard.html", "dashboard", &s, ctx).into_response())
}

// ---------------------------------------------------------------- instances

/// The instance list; states refresh live through `instances.json`.
pub async fn instances(State(panel): State<Panel>, s: Session) -> PageResult {
    let instances = all_instances(&panel, &s, false).await?;
    Ok(page("instances.html", "instances", &s, json!({"instances": instances})).into_response())
}

/// States of the project's instances, for the list's live refresh.
pub async fn instances_json(State(panel): State<Panel>, s: Session) -> Result<Json<Value>, PanelError> {
    // Deleted ones too, so that a row on the page turns `deleted` instead of freezing.
    let instances = all_instances(&panel, &s, true).await?;
    let items: Vec<Value> =
        instances.iter().map(|i| json!({"id": i.id, "state": i.state, "reason": i.state_reason})).collect();
    Ok(Json(json!({"items": items})))
}

async fn launch_page(
    panel: &Panel,
    s: &Session,
    status: StatusCode,
    error: Option<String>,
    input: Value,
) -> PageResult {
    let flavors: Listing<Flavor> = panel.api.get_all(&s.token, "/v1/flavors").await?;
    let images: Listing<Image> = panel.api.get_all(&s.token, "/v1/images").await?;
    let images: Vec<Image> = images.items.into_iter().filter(|i| i.state == ImageState::Active).collect();
    let keys: Listing<KeyPair> = panel.api.get_all(&s.token, "/v1/keypairs").await?;
    let networks: Listing<Network> = panel.api.get_all(&s.token, "/v1/networks").await?;
    let networks: Vec<Network> = networks.items.into_iter().filter(|n| !n.external).collect();
    let groups: Listing<SecurityGroup> = panel.api.get_all(&s.token, "/v1/security-groups").await?;
    let ctx = json!({
        "flavors": flavors.items, "images": images, "keypairs": keys.items, "networks": networks,
        "groups": groups.items, "error": error, "input": input,
    });
    Ok(with_status(status, page("launch.html", "instances", s, ctx)))
}

/// The launch form.
pub async fn launch_form(State(panel): State<Panel>, s: Session) -> PageResult {
    launch_page(&panel, &s, StatusCode::OK, None, json!({"count": "1", "networks": [], "security_groups": []})).await
}

/// Launches; on refusal the form comes back with the API's message and the input kept.
pub async fn launch(State(panel): State<Panel>, Posted { session: s, form }: Posted) -> PageResult {
    let mut input = form.to_json();
    input["networks"] = json!(form.all("networks"));
    input["security_groups"] = json!(form.all("security_groups"));
    let count = match form.opt("count") {
        None => None,
        Some(c) => match c.parse::<u32>() {
            Ok(n) => Some(n),
            Err(_) => {
                let msg = crate::i18n::t("msg_count_not_number").replace("{value}", &c);
                return launch_page(&panel, &s, StatusCode::BAD_REQUEST, Some(msg), input).await;
            }
        },
    };
    let req = RunInstances {
        name: form.get("name"),
        flavor: form.get("flavor"),
        image: form.opt("image"),
        key_pair: form.opt("key_pair"),
        user_data: form
            .0
            .iter()
            .find(|(k, _)| k == "user_data")
            .map(|(_, v)| v.clone())
            .filter(|v| !v.trim().is_empty()),
        count,
        volumes: form.all("volumes"),
        networks: form.all("networks"),
        security_groups: form.all("security_groups"),
        config_drive: form.opt("config_drive").is_some(),
        unique_name: false,
        metadata_options: None,
    };
    match panel.api.send::<_, RunInstancesResponse>(Some(&s.token), Method::POST, "/v1/instances", &req).await {
        Ok(r) if r.instances.len() == 1 => see_other(&format!("/ui/instances/{}", r.instances[0].id)),
        Ok(_) => see_other("/ui/instances"),
        Err(f) => {
            let (status, msg) = refusal(f)?;
            launch_page(&panel, &s, status, Some(msg), input).await
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct EstimateParams {
    flavor: String,
    hours: Option<u32>,
}

/// The billing API's estimate for a flavor, for the launch form's live price.
pub async fn estimate(State(panel): State<Panel>, s: Session, Query(q): Query<EstimateParams>) -> Response {
    let path = format!("/v1/billing/estimate?flavor={}&hours={}", enc(&q.flavor), q.hours.unwrap_or(720));
    match panel.api.get::<Estimate>(&s.token, &path).await {
        Ok(e) => Json(json!(e)).into_response(),
        Err(f) => (f.status, Json(json!({"code": f.code, "message": f.message}))).into_response(),
    }
}

async fn instance_page(
    panel: &Panel,
    s: &Session,
    id: &str,
    range: &str,
    status: StatusCode,
    error: Option<String>,
) -> PageResult {
    let instance: Instance = panel.api.get(&s.token, &format!("/v1/instances/{}", enc(id))).await?;
    let events: Listing<Event> = panel.api.get(&s.token, &format!("/v1/instances/{}/events", enc(id))).await?;
    let volumes: Listing<Volume> = panel.api.get_all(&s.token, "/v1/volumes").await?;
    let volumes: Vec<Volume> =
        volumes.items.into_iter().filter(|v| v.attached_to.as_ref().is_some_and(|a| a.as_str() == id)).collect();
    let console = console_text(panel, s, id).await?;
    let graphs = graphs_html(panel, s, id, range).await?;
    let ranges: Vec<&str> = crate::graphs::RANGES.iter().map(|(n, ..)| *n).collect();
    let ctx = json!({"i": instance, "events": events.items, "volumes": volumes, "console": console, "error": error,
        "graphs": graphs, "range": crate::graphs::range(range).0, "ranges": ranges});
    Ok(with_status(status, page("instance.html", "instances", s, ctx)))
}

/// The console's tail, or a note on why it cannot be read now.
async fn console_text(panel: &Panel, s: &Session, id: &str) -> Result<String, PanelError> {
    match panel.api.get::<ConsoleOutput>(&s.token, &format!("/v1/instances/{}/console?tail_bytes=65536", enc(id))).await
    {
        Ok(c) => Ok(c.output),
        Err(f) if f.status == StatusCode::UNAUTHORIZED => Err(PanelError::Expired),
        Err(f) if f.status == StatusCode::NOT_FOUND || f.status == StatusCode::FORBIDDEN => Err(f.into()),
        Err(f) => Ok(crate::i18n::t("msg_console_unavailable").replace("{detail}", &f.message)),
    }
}

/// `?range=hour|day|month` of the instance page's graphs.
#[derive(Debug, Deserialize)]
pub struct GraphParams {
    range: Option<String>,
}

/// One instance: state and reason, graphs, volumes, console, events, actions.
pub async fn instance(
    State(panel): State<Panel>,
    s: Session,
    Path(id): Path<String>,
    Query(q): Query<GraphParams>,
) -> PageResult {
    instance_page(&panel, &s, &id, q.range.as_deref().unwrap_or("hour"), StatusCode::OK, None).await
}

/// The graphs of the instance page over `range`, as inline SVG: from the
/// instance's `/metrics`, or a note on why there are none.
async fn graphs_html(panel: &Panel, s: &Session, id: &str, range: &str) -> Result<String, PanelError> {
    let (_, since, step) = crate::graphs::range(range);
    let path = format!("/v1/instances/{}/metrics?since={since}&step={step}", enc(id));
    let series = match panel.api.get::<kumo_wire::stats::MetricsSeries>(&s.token, &path).await {
        Ok(series) => series,
        Err(f) if f.status == StatusCode::UNAUTHORIZED => return Err(PanelError::Expired),
        Err(f) if f.status == StatusCode::NOT_FOUND => return Err(f.into()),
        Err(f) => return Ok(format!("<p class=\"hint\">{}</p>", tera::escape_html(&f.message))),
    };
    let t = crate::i18n::t;
    let (cpu, disk, net, read, write, rx, tx) = (
        t("graph_cpu"),
        t("graph_disk"),
        t("graph_net"),
        t("graph_read"),
        t("graph_write"),
        t("graph_in"),
        t("graph_out"),
    );
    let labels =
        crate::graphs::Labels { cpu: &cpu, disk: &disk, net: &net, read: &read, write: &write, rx: &rx, tx: &tx };
    let mut html = crate::graphs::instance_graphs(&series, Timestamp::now(), &labels);
    if series.points.is_empty() {
        html.insert_str(0, &format!("<p class=\"hint\">{}</p>", tera::escape_html(&t("graph_none"))));
    }
    Ok(html)
}

/// The instance page's graphs alone, for its live refresh.
pub async fn instance_graphs(
    State(panel): State<Panel>,
    s: Session,
    Path(id): Path<String>,
    Query(q): Query<GraphParams>,
) -> Result<axum::response::Html<String>, PanelError> {
    Ok(axum::response::Html(graphs_html(&panel, &s, &id, q.range.as_deref().unwrap_or("hour")).await?))
}

/// State and console of one instance, for the detail page's live refresh.
pub async fn instance_live(
    State(panel): State<Panel>,
    s: Session,
    Path(id): Path<String>,
) -> Result<Json<Value>, PanelError> {
    let i: Instance = panel.api.get(&s.token, &format!("/v1/instances/{}", enc(&id))).await?;
    let console = console_text(&panel, &s, &id).await?;
    Ok(Json(json!({"id": i.id, "state": i.state, "reason": i.state_reason, "host": i.host_name, "console": console})))
}

/// Stop, start, reboot or delete.
pub async fn instance_action(
    State(panel): State<Panel>,
    Path(id): Path<String>,
    Posted { session: s, form }: Posted,
) -> PageResult {
    let path = format!("/v1/instances/{}", enc(&id));
    let result = match form.get("action").as_str() {
        "delete" => panel.api.act::<()>(&s.token, Method::DELETE, &path, None).await,
        a @ ("stop" | "start" | "reboot") => {
            panel.api.act(&s.token, Method::POST, &format!("{path}/actions"), Some(&json!({"action": a}))).await
        }
        other => return Err(PanelError::BadForm(format!("unknown action '{other}'"))),
    };
    redirect_or_refused(result, &format!("/ui/instances/{}", enc(&id)), |status, msg| {
        instance_page(&panel, &s, &id, "hour", status, Some(msg))
    })
    .await
}

/// Snapshots the instance's root disk.
pub async fn instance_snapshot(
    State(panel): State<Panel>,
    Path(id): Path<String>,
    Posted { session: s, form }: Posted,
) -> PageResult {
    let body = json!({"name": form.get("name"), "instance": id});
    redirect_or_refused(
        panel.api.send::<_, Snapshot>(Some(&s.token), Method::POST, "/v1/snapshots", &body).await,
        "/ui/snapshots",
        |status, msg| instance_page(&panel, &s, &id, "hour", status, Some(msg)),
    )
    .await
}

// ---------------------------------------------------------------- images

async fn images_page(panel: &Panel, s: &Session, status: StatusCode, error: Option<String>) -> PageResult {
    let images: Listing<Image> = panel.api.get_all(&s.token, "/v1/images").await?;
    Ok(with_status(status, page("images.html", "images", s, json!({"images": images.items, "error": error}))))
}

/// Images the project sees.
pub async fn images(State(panel): State<Panel>, s: Session) -> PageResult {
    images_page(&panel, &s, StatusCode::OK, None).await
}

/// Deletes an image.
pub async fn image_delete(
    State(panel): State<Panel>,
    Path(id): Path<String>,
    Posted { session: s, .. }: Posted,
) -> PageResult {
    redirect_or_refused(
        panel.api.act::<()>(&s.token, Method::DELETE, &format!("/v1/images/{}", enc(&id)), None).await,
        "/ui/images",
        |status, msg| images_page(&panel, &s, status, Some(msg)),
    )
    .await
}

// ---------------------------------------------------------------- volumes

async fn volumes_page(
    panel: &Panel,
    s: &Session,
    status: StatusCode,
    error: Option<String>,
    input: Value,
) -> PageResult {
    let volumes: Listing<Volume> = panel.api.get_all(&s.token, "/v1/volumes").await?;
    let instances: Vec<Instance> = all_instances(panel, s, false).await?;
    let ctx = json!({"volumes": volumes.items, "instances": instances, "error": error, "input": input});
    Ok(with_status(status, page("volumes.html", "volumes", s, ctx)))
}

/// The project's volumes.
pub async fn volumes(State(panel): State<Panel>, s: Session) -> PageResult {
    volumes_page(&panel, &s, StatusCode::OK, None, json!({})).await
}

/// Creates a volume.
pub async fn volume_create(State(panel): State<Panel>, Posted { session: s, form }: Posted) -> PageResult {
    let size = match form.opt("size_gib").map(|v| v.parse::<u64>()) {
        None => None,
        Some(Ok(n)) => Some(n),
        Some(Err(_)) => {
            let msg = crate::i18n::t("msg_size_not_number").replace("{value}", &form.get("size_gib"));
            return volumes_page(&panel, &s, StatusCode::BAD_REQUEST, Some(msg), form.to_json()).await;
        }
    };
    let body = json!({"name": form.get("name"), "size_gib": size, "snapshot": form.opt("snapshot"), "attach_to": form.opt("attach_to")});
    redirect_or_refused(
        panel.api.send::<_, Volume>(Some(&s.token), Method::POST, "/v1/volumes", &body).await,
        "/ui/volumes",
        |status, msg| volumes_page(&panel, &s, status, Some(msg), form.to_json()),
    )
    .await
}

/// Attach, detach, extend or delete a volume.
pub async fn volume_action(
    State(panel): State<Panel>,
    Path(id): Path<String>,
    Posted { session: s, form }: Posted,
) -> PageResult {
    let path = format!("/v1/volumes/{}", enc(&id));
    let actions = format!("{path}/actions");
    let result = match form.get("action").as_str() {
        "delete" => panel.api.act::<()>(&s.token, Method::DELETE, &path, None).await,
        "detach" => panel.api.act(&s.token, Method::POST, &actions, Some(&json!({"action": "detach"}))).await,
        "attach" => {
            let body = json!({"action": "attach", "instance": form.get("instance")});
            panel.api.act(&s.token, Method::POST, &actions, Some(&body)).await
        }
        "extend" => match form.get("size_gib").parse::<u64>() {
            Ok(n) => {
                panel.api.act(&s.token, Method::POST, &actions, Some(&json!({"action": "extend", "size_gib": n}))).await
            }
            Err(_) => {
                let msg = crate::i18n::t("msg_size_not_number").replace("{value}", &form.get("size_gib"));
                return volumes_page(&panel, &s, StatusCode::BAD_REQUEST, Some(msg), json!({})).await;
            }
        },
        other => return Err(PanelError::BadForm(format!("unknown action '{other}'"))),
    };
    redirect_or_refused(result, "/ui/volumes", |status, msg| volumes_page(&panel, &s, status, Some(msg), json!({})))
        .await
}

// ---------------------------------------------------------------- snapshots

async fn snapshots_page(
    panel: &Panel,
    s: &Session,
    status: StatusCode,
    error: Option<String>,
    input: Value,
) -> PageResult {
    let snapshots: Listing<Snapshot> = panel.api.get_all(&s.token, "/v1/snapshots").await?;
    let volumes: Listing<Volume> = panel.api.get_all(&s.token, "/v1/volumes").await?;
    let ctx = json!({"snapshots": snapshots.items, "volumes": volumes.items, "error": error, "input": input});
    Ok(with_status(status, page("snapshots.html", "snapshots", s, ctx)))
}

/// The project's snapshots.
pub async fn snapshots(State(panel): State<Panel>, s: Session) -> PageResult {
    snapshots_page(&panel, &s, StatusCode::OK, None, json!({})).await
}

/// Snapshots a volume.
pub async fn snapshot_create(State(panel): State<Panel>, Posted { session: s, form }: Posted) -> PageResult {
    let body = json!({"name": form.get("name"), "volume": form.opt("volume")});
    redirect_or_refused(
        panel.api.send::<_, Snapshot>(Some(&s.token), Method::POST, "/v1/snapshots", &body).await,
        "/ui/snapshots",
        |status, msg| snapshots_page(&panel, &s, status, Some(msg), form.to_json()),
    )
    .await
}

/// Deletes a snapshot.
pub async fn snapshot_delete(
    State(panel): State<Panel>,
    Path(id): Path<String>,
    Posted { session: s, .. }: Posted,
) -> PageResult {
    redirect_or_refused(
        panel.api.act::<()>(&s.token, Method::DELETE, &format!("/v1/snapshots/{}", enc(&id)), None).await,
        "/ui/snapshots",
        |status, msg| snapshots_page(&panel, &s, status, Some(msg), json!({})),
    )
    .await
}

// ---------------------------------------------------------------- key pairs

async fn keypairs_page(
    panel: &Panel,
    s: &Session,
    status: StatusCode,
    error: Option<String>,
    input: Value,
) -> PageResult {
    let keys: Listing<KeyPair> = panel.api.get_all(&s.token, "/v1/keypairs").await?;
    let ctx = json!({"keypairs": keys.items, "error": error, "input": input});
    Ok(with_status(status, page("keypairs.html", "keypairs", s, ctx)))
}

/// The project's key pairs.
pub async fn keypairs(State(panel): State<Panel>, s: Session) -> PageResult {
    keypairs_page(&panel, &s, StatusCode::OK, None, json!({})).await
}

/// Imports or generates a key pair. A generated private key is the answer
/// to this POST, as a download; the panel keeps no copy, so it is offered
/// exactly once.
pub async fn keypair_create(State(panel): State<Panel>, Posted { session: s, form }: Posted) -> PageResult {
    let body = json!({"name": form.get("name"), "public_key": form.opt("public_key")});
    match panel.api.send::<_, CreatedKeyPair>(Some(&s.token), Method::POST, "/v1/keypairs", &body).await {
        Ok(CreatedKeyPair { key_pair, private_key: Some(private) }) => {
            let file: String =
                key_pair.name.chars().filter(|c| c.is_ascii_alphanumeric() || "-_.".contains(*c)).collect();
            Ok((
                [
                    (header::CONTENT_TYPE, "application/x-pem-file".to_owned()),
                    (header::CONTENT_DISPOSITION, format!("attachment; filename=\"{file}.pem\"")),
                    (header::CACHE_CONTROL, "no-store".to_owned()),
                ],
                private,
            )
                .into_response())
        }
        Ok(_) => see_other("/ui/keypairs"),
        Err(f) => {
            let (status, msg) = refusal(f)?;
            keypairs_page(&panel, &s, status, Some(msg), form.to_json()).await
        }
    }
}

/// Deletes a key pair.
pub async fn keypair_delete(
    State(panel): State<Panel>,
    Path(name): Path<String>,
    Posted { session: s, .. }: Posted,
) -> PageResult {
    redirect_or_refused(
        panel.api.act::<()>(&s.token, Method::DELETE, &format!("/v1/keypairs/{}", enc(&name)), None).await,
        "/ui/keypairs",
        |status, msg| keypairs_page(&panel, &s, status, Some(msg), json!({})),
    )
    .await
}

// ---------------------------------------------------------------- billing

#[derive(Debug, Deserialize)]
pub struct MonthParam {
    month: Option<String>,
}

/// Month-to-date usage by resource with a chart, links to past invoices.
pub async fn billing(State(panel): State<Panel>, s: Session, Query(q): Query<MonthParam>) -> PageResult {
    let path = match &q.month {
        Some(m) => format!("/v1/billing/usage?month={}", enc(m)),
        None => "/v1/billing/usage".to_owned(),
    };
    let usage: Usage = panel.api.get(&s.token, &path).await?;
    let mut bars: Vec<Bar> = usage
        .resources
        .iter()
        .map(|r| Bar {
            label: format!("{} {}", r.resource_id, r.item),
            value: r.amount.parse().unwrap_or(0.0),
            text: format!("{} {}", r.amount, usage.currency),
        })
        .collect();
    bars.sort_by(|a, b| b.value.total_cmp(&a.value));
    bars.truncate(30);
    let now = Timestamp::now();
    let months: Vec<String> = (0..12).map(|b| month_before(now, b)).collect();
    let ctx = json!({"usage": usage, "chart": render::bar_chart(&bars), "months": months});
    Ok(page("billing.html", "billing", &s, ctx).into_response())
}

/// One month's invoice.
pub async fn invoice(State(panel): State<Panel>, s: Session, Path(month): Path<String>) -> PageResult {
    let invoice: kumo_wire::billing::Invoice =
        panel.api.get(&s.token, &format!("/v1/billing/invoices/{}", enc(&month))).await?;
    Ok(page("invoice.html", "billing", &s, json!({"invoice": invoice})).into_response())
}

/// The invoice as the API's CSV, as a download.
pub async fn invoice_csv(State(panel): State<Panel>, s: Session, Path(month): Path<String>) -> PageResult {
    let path = format!("/v1/billing/invoices/{}?format=csv", enc(&month));
    let (_, body) = panel.api.raw(Some(&s.token), Method::GET, &path, None).await?;
    let file: String = month.chars().filter(|c| c.is_ascii_digit() || *c == '-').collect();
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
            (header::CONTENT_DISPOSITION, format!("attachment; filename=\"invoice-{file}.csv\"")),
        ],
        body,
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calendar_helpers() {
        // 2026-11-22T06:00:00Z: 8 days and 18 hours to December.
        let t = Timestamp::parse_rfc3339("2026-11-22T06:00:00Z").unwrap();
        assert_eq!(hours_left_in_month(t), 8 * 24 + 18);
        assert_eq!(month_before(t, 0), "2026-11");
        assert_eq!(month_before(t, 11), "2025-12");
        assert_eq!(civil_from_days(days_from_civil(2024, 2, 29)), (2024, 2, 29));
        let dec = Timestamp::parse_rfc3339("2026-12-31T23:30:00Z").unwrap();
        assert_eq!(hours_left_in_month(dec), 0);
    }
}
