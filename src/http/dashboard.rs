//! The dashboard: the fleet as server-rendered HTML pages under `/admin/`, for a person with a
//! browser or a phone rather than a script.
//!
//! It reads through the same operations as the CLI and the admin API (`crate::ops`), on a
//! store of its own per request, and writes through them too, so it can show or do nothing
//! the API could not. Pages are plain HTML (no script, no build step, CSS inline: `html`),
//! views reload themselves every few seconds, pictures are inline SVG (`charts`).
//!
//! Viewing is open to whoever reaches the admin port, as the issue asks ("writes need the
//! token"); nothing secret is shown (no keys, no token). Every write is a POST form that
//! needs a session: `/admin/login` takes the admin token and sets a cookie derived from it
//! (`auth::login`: HttpOnly, SameSite=Strict, Path=/admin), and each form carries a second
//! secret derived from the token (`csrf`), checked in constant time, so a page on another
//! site cannot make a logged-in browser write. A write without a session is sent to the
//! login page (303), one with a wrong form token is refused (403). docs/dashboard.md.

use super::auth::{self, Session};
use super::charts;
use super::html::{ago, csrf_field, esc, page, Kind, Viewer};
use crate::ops::{self, device, group, module, rollout, NotFound, Operation};
use crate::store::Store;
use crate::token::Live;
use anyhow::{Context, Result};
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;
use std::path::PathBuf;
use std::sync::Arc;

/// What the dashboard's handlers need.
#[derive(Clone)]
pub struct Dashboard {
    pub data: PathBuf,
    pub token: Arc<Live>,
}

/// The dashboard's routes, with their full paths (`/admin/`, `/admin/login`...). Its own
/// paths only: everything else under `/admin/` stays behind the token (`super::admin_side`).
pub fn routes<S: Clone + Send + Sync + 'static>(d: Dashboard) -> Router<S> {
    Router::new()
        .route("/admin/", get(overview))
        .route("/admin/login", get(login_form).post(login))
        .route("/admin/logout", post(logout))
        .route("/admin/modules", get(modules))
        .route("/admin/boards/{mac}", get(board))
        .route("/admin/rollouts/{id}", get(rollout_page))
        .route("/admin/adopt", post(adopt))
        .route("/admin/rollouts/{id}/{action}", post(rollout_action))
        .with_state(d)
}

/// A page that could not be made: its status and what to say.
struct Failure(StatusCode, String);

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        if e.chain().any(|c| c.is::<NotFound>()) {
            Failure(StatusCode::NOT_FOUND, format!("{e:#}"))
        } else if e
            .chain()
            .any(|c| c.is::<rusqlite::Error>() || c.is::<std::io::Error>())
        {
            tracing::error!("dashboard: {e:#}");
            Failure(
                StatusCode::INTERNAL_SERVER_ERROR,
                "cannot read the store (logged)".into(),
            )
        } else {
            Failure(StatusCode::BAD_REQUEST, format!("{e:#}"))
        }
    }
}

/// An HTML response, never cached, never framed, and allowed no script at all.
fn html_response(status: StatusCode, body: String) -> Response {
    let mut r = (status, body).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; \
             form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    r
}

fn see_other(to: &str) -> Response {
    let mut r = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(to) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

fn error_page(f: Failure, form_token: Option<&str>) -> Response {
    let title = match f.0 {
        StatusCode::NOT_FOUND => "Not found",
        StatusCode::FORBIDDEN => "Refused",
        s if s.is_server_error() => "Server error",
        _ => "Cannot do that",
    };
    let body = format!(
        "<h1>{}</h1><p class=\"msg bad\">{}</p><p><a href=\"/admin/\">Back to the fleet</a></p>",
        esc(title),
        esc(&f.1)
    );
    html_response(f.0, page(title, Kind::Form, &Viewer { form_token }, &body))
}

/// Renders a view on a blocking thread with a read-only store of its own.
async fn view(
    d: Dashboard,
    headers: HeaderMap,
    title: impl Into<String>,
    render: impl FnOnce(&mut Store, Option<&str>) -> Result<String> + Send + 'static,
) -> Response {
    let session = auth::session(&d.token, &headers).map(|s| s.form_token);
    let title = title.into();
    let done = tokio::task::spawn_blocking(move || {
        let out = Store::open_read_only(&d.data)
            .map_err(Failure::from)
            .and_then(|mut store| render(&mut store, session.as_deref()).map_err(Failure::from));
        (out, session)
    })
    .await;
    match done {
        Ok((Ok(body), session)) => html_response(
            StatusCode::OK,
            page(
                &title,
                Kind::View,
                &Viewer {
                    form_token: session.as_deref(),
                },
                &body,
            ),
        ),
        Ok((Err(f), session)) => error_page(f, session.as_deref()),
        Err(_) => error_page(
            Failure(StatusCode::INTERNAL_SERVER_ERROR, "internal error".into()),
            None,
        ),
    }
}

// ----- views -----------------------------------------------------------------------------

async fn overview(State(d): State<Dashboard>, headers: HeaderMap) -> Response {
    view(d, headers, "Fleet", render_overview).await
}

async fn modules(State(d): State<Dashboard>, headers: HeaderMap) -> Response {
    view(d, headers, "Modules", render_modules).await
}

async fn board(
    State(d): State<Dashboard>,
    UrlPath(mac): UrlPath<String>,
    headers: HeaderMap,
) -> Response {
    let title = format!("Board {mac}");
    view(d, headers, title, move |s, t| render_board(s, t, &mac)).await
}

async fn rollout_page(
    State(d): State<Dashboard>,
    UrlPath(id): UrlPath<String>,
    headers: HeaderMap,
) -> Response {
    let title = format!("Rollout {id}");
    view(d, headers, title, move |s, t| render_rollout(s, t, &id)).await
}

/// What a board reported last, as one phrase and how worried to be (a CSS class).
fn drift(generation: i64, report: Option<&Value>) -> (String, &'static str) {
    let Some(r) = report else {
        return ("no report yet".into(), "muted");
    };
    let event = r["event"].as_str().unwrap_or("?");
    let runs = r["generation"].as_i64();
    let config = r["config"].as_str().unwrap_or("?");
    match (event, runs) {
        ("update_failed" | "server_failed", _) => {
            let why = r["error"].as_str().unwrap_or("no reason given");
            (format!("{event}: {why}"), "bad")
        }
        ("rolled_back", _) => (
            format!(
                "rolled back to its alternate (generation {})",
                runs.map_or("?".into(), |g| g.to_string())
            ),
            "bad",
        ),
        (_, Some(g)) if g == generation && config == "alternate" => {
            ("on its alternate configuration".into(), "bad")
        }
        (_, Some(g)) if g == generation => ("in sync".into(), "ok"),
        (_, Some(g)) if g < generation => (
            format!("behind: runs generation {g}, should run {generation}"),
            "warn",
        ),
        (_, Some(g)) => (
            format!("ahead: runs generation {g}, the store says {generation}"),
            "warn",
        ),
        (_, None) => ("reported no generation".into(), "warn"),
    }
}

fn mac_link(mac: &str) -> String {
    format!(
        "<a href=\"/admin/boards/{m}\"><code>{m}</code></a>",
        m = esc(mac)
    )
}

fn state_pill(state: &str) -> String {
    format!("<span class=\"pill {s}\">{s}</span>", s = esc(state))
}

/// `{"module": "version"}` as `module=version, ...`.
fn pins_text(v: &Value) -> String {
    match v.as_object() {
        Some(m) if !m.is_empty() => m
            .iter()
            .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("?")))
            .collect::<Vec<_>>()
            .join(", "),
        _ => "-".into(),
    }
}

/// A device's own pins over its group's, as `module=version, ...` (or `-`).
fn own_pins_text(p: &crate::manifest::Pins) -> String {
    let mut parts: Vec<String> = p.app.iter().map(|a| format!("app={a}")).collect();
    parts.extend(p.modules.iter().map(|(m, w)| format!("{m}={}", w.as_str())));
    if parts.is_empty() {
        "-".into()
    } else {
        parts.join(", ")
    }
}

fn render_overview(store: &mut Store, form_token: Option<&str>) -> Result<String> {
    let devices = device::List {}.run(store)?;
    let unknown = device::Unknown {}.run(store)?;
    let groups = group::List {}.run(store)?;
    let rollouts = rollout::List {}.run(store)?;
    let hourly = device::Hourly {}.run(store)?;
    let apps = app_modules(store)?;
    let mut out = String::new();

    // Counts first: what a glance from a phone wants.
    let synced = devices
        .iter()
        .filter(|d| drift(d.generation, d.last_report.as_ref()).1 == "ok")
        .count();
    let failing = devices
        .iter()
        .filter(|d| drift(d.generation, d.last_report.as_ref()).1 == "bad")
        .count();
    let under_way = rollouts
        .iter()
        .filter(|r| r.state == "running" || r.state == "paused")
        .count();
    let _ = write!(
        out,
        "<h1>Fleet</h1><div class=\"stats\"><div><b>{}</b>boards</div>\
         <div class=\"ok\"><b>{synced}</b>in sync</div><div class=\"bad\"><b>{failing}</b>failing</div>\
         <div><b>{}</b>unknown</div><div><b>{}</b>groups</div><div><b>{under_way}</b>rollouts under way</div></div>",
        devices.len(),
        unknown.len(),
        groups.len(),
    );

    out.push_str("<section id=\"health\"><h2>Fleet health: reports per hour</h2>");
    out.push_str(&charts::health(&hourly, crate::store::now()));
    out.push_str("</section>");

    // Rollouts: those under way, then the latest few that ended.
    out.push_str("<section id=\"rollouts\"><h2>Rollouts</h2>");
    if rollouts.is_empty() {
        out.push_str(
            "<p class=\"muted\">None yet: <code>mpfleet rollout start GROUP --to \
             MODULE=VERSION</code>.</p>",
        );
    }
    let (live, ended): (Vec<_>, Vec<_>) = rollouts
        .iter()
        .partition(|r| r.state == "running" || r.state == "paused");
    for r in live.iter().chain(ended.iter().take(3)) {
        let detail = rollout::Show {
            rollout: r.id.to_string(),
        }
        .run(store)?;
        out.push_str(&rollout_card(&detail, form_token, true));
    }
    if ended.len() > 3 {
        let _ = write!(
            out,
            "<p class=\"muted\">{} older rollouts (<code>mpfleet rollout list</code>).</p>",
            ended.len() - 3
        );
    }
    out.push_str("</section>");

    if !unknown.is_empty() {
        out.push_str(
            "<section id=\"unknown\"><h2>Unknown boards that asked</h2>\
             <p class=\"muted\">Boards that asked for a manifest but are not devices. Adopt one \
             to give it a group or an app.</p><div class=\"scroll\"><table><tr><th>MAC</th>\
             <th>asked</th><th>first</th><th>last</th><th>adopt</th></tr>",
        );
        for u in &unknown {
            let _ = write!(
                out,
                "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&u.mac),
                u.requests,
                ago(Some(u.first_seen)),
                ago(Some(u.last_seen)),
                adopt_form(&u.mac, &groups, &apps, form_token)
            );
        }
        out.push_str("</table></div></section>");
    }

    out.push_str("<section id=\"boards\"><h2>Boards</h2>");
    if devices.is_empty() {
        out.push_str(
            "<p class=\"muted\">No devices yet: <code>mpfleet device set MAC --app APP</code>, \
             or adopt a board that asked.</p>",
        );
    } else {
        out.push_str(
            "<div class=\"scroll\"><table><tr><th>MAC</th><th>group</th><th>app</th>\
             <th>generation</th><th>runs</th><th>config</th><th>last event</th>\
             <th>last seen</th><th>drift from desired</th></tr>",
        );
        for d in &devices {
            let r = d.last_report.as_ref();
            let (said, class) = drift(d.generation, r);
            let runs = r
                .and_then(|r| r["generation"].as_i64())
                .map_or("-".into(), |g| g.to_string());
            let config = r.and_then(|r| r["config"].as_str()).unwrap_or("-");
            let event = r.and_then(|r| r["event"].as_str()).unwrap_or("-");
            let _ = write!(
                out,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
                 <td>{}</td><td>{}</td><td class=\"wrap {class}\">{}</td></tr>",
                mac_link(&d.mac),
                esc(d.group.as_deref().unwrap_or("-")),
                esc(&d.app),
                d.generation,
                esc(&runs),
                esc(config),
                esc(event),
                ago(d.last_seen),
                esc(&said)
            );
        }
        out.push_str("</table></div>");
    }
    out.push_str("</section>");

    out.push_str("<section id=\"groups\"><h2>Groups</h2>");
    if groups.is_empty() {
        out.push_str(
            "<p class=\"muted\">No groups: <code>mpfleet group create NAME --app APP</code>.</p>",
        );
    } else {
        out.push_str(
            "<div class=\"scroll\"><table><tr><th>group</th><th>app</th><th>pins</th>\
             <th>boards</th></tr>",
        );
        for g in &groups {
            let mut pins = g.pins.clone();
            let app = pins
                .as_object_mut()
                .and_then(|m| m.remove("name"))
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            let _ = write!(
                out,
                "<tr><td>{}</td><td>{}</td><td class=\"wrap\">{}</td><td>{}</td></tr>",
                esc(&g.name),
                esc(&app),
                esc(&pins_text(&pins)),
                g.devices
            );
        }
        out.push_str("</table></div>");
    }
    out.push_str("</section>");
    Ok(out)
}

/// Modules a device can have as its app: every published module but the runtime's own.
fn app_modules(store: &mut Store) -> Result<Vec<String>> {
    Ok(module::List {}
        .run(store)?
        .into_iter()
        .map(|m| m.name)
        .filter(|n| !crate::runtime::RUNTIME.iter().any(|(r, _)| r == n))
        .collect())
}

/// The adopt form of an unknown board: into a group, or with an app of its own.
fn adopt_form(
    mac: &str,
    groups: &[group::GroupSummary],
    apps: &[String],
    form_token: Option<&str>,
) -> String {
    let mut options = String::new();
    if !groups.is_empty() {
        options.push_str("<optgroup label=\"into group\">");
        for g in groups {
            let _ = write!(
                options,
                "<option value=\"group:{n}\">group {n}</option>",
                n = esc(&g.name)
            );
        }
        options.push_str("</optgroup>");
    }
    if !apps.is_empty() {
        options.push_str("<optgroup label=\"with app\">");
        for a in apps {
            let _ = write!(
                options,
                "<option value=\"app:{n}\">app {n}</option>",
                n = esc(a)
            );
        }
        options.push_str("</optgroup>");
    }
    if options.is_empty() {
        return "<span class=\"muted\">publish an app first</span>".into();
    }
    format!(
        "<form class=\"inline adopt\" method=\"post\" action=\"/admin/adopt\">{}\
         <input type=\"hidden\" name=\"mac\" value=\"{}\"><select name=\"to\" \
         aria-label=\"adopt {}\">{options}</select><button>Adopt</button>{}</form>",
        form_token.map(csrf_field).unwrap_or_default(),
        esc(mac),
        esc(mac),
        if form_token.is_none() {
            " <span class=\"muted\">(asks you to log in)</span>"
        } else {
            ""
        }
    )
}

/// A rollout: what it moves, its state (and why it stopped), its progress as a picture,
/// and its buttons.
fn rollout_card(d: &rollout::RolloutDetail, form_token: Option<&str>, link: bool) -> String {
    let r = &d.rollout;
    let mut out = String::new();
    let title = if link {
        format!(
            "<a href=\"/admin/rollouts/{id}\">rollout {id}</a>",
            id = r.id
        )
    } else {
        format!("rollout {}", r.id)
    };
    let _ = write!(
        out,
        "<div class=\"rollout\" id=\"rollout-{}\"><p><b>{title}</b> of group <b>{}</b> to \
         <code>{}</code> {} step {}</p>",
        r.id,
        esc(&r.group),
        esc(&pins_text(&r.to)),
        state_pill(&r.state),
        esc(&r.step_text())
    );
    if let Some(reason) = &r.reason {
        let class = if r.state == "paused" || r.state == "aborted" {
            "msg bad"
        } else {
            "msg"
        };
        let _ = write!(
            out,
            "<p class=\"{class} reason\">{} because: {}</p>",
            esc(&r.state),
            esc(reason)
        );
    }
    out.push_str(&charts::rollout_progress(d));
    let _ = write!(
        out,
        "<p class=\"muted\">{} boards in the group: {} moved ({} healthy, {} waiting, {} \
         failed), {} not moved. Max failures {}, healthy after {}s. Updated {}.</p>",
        d.boards,
        d.moved,
        d.healthy,
        d.waiting,
        d.failed,
        d.untouched,
        esc(&r.max_failures),
        r.healthy_after,
        ago(Some(r.updated_at))
    );
    let actions: &[&str] = match r.state.as_str() {
        "running" => &["pause", "abort"],
        "paused" => &["resume", "abort"],
        _ => &[],
    };
    if !actions.is_empty() {
        out.push_str("<p>");
        for a in actions {
            let _ = write!(
                out,
                "<form class=\"inline\" method=\"post\" action=\"/admin/rollouts/{}/{a}\">{}\
                 <button name=\"do\" value=\"{a}\">{}</button></form> ",
                r.id,
                form_token.map(csrf_field).unwrap_or_default(),
                match *a {
                    "pause" => "Pause",
                    "resume" => "Resume",
                    _ => "Abort",
                }
            );
        }
        if form_token.is_none() {
            out.push_str("<span class=\"muted\">(asks you to log in)</span>");
        }
        out.push_str("</p>");
    }
    out.push_str("</div>");
    out
}

fn render_rollout(store: &mut Store, form_token: Option<&str>, id: &str) -> Result<String> {
    let d = rollout::Show {
        rollout: id.to_owned(),
    }
    .run(store)?;
    let mut out = format!("<h1>Rollout {}</h1><section>", d.rollout.id);
    out.push_str(&rollout_card(&d, form_token, false));
    out.push_str("</section><section><h2>Boards it moved</h2>");
    if d.devices.is_empty() {
        out.push_str("<p class=\"muted\">None yet.</p>");
    } else {
        out.push_str(
            "<div class=\"scroll\"><table><tr><th>MAC</th><th>step</th><th>generation</th>\
             <th>status</th></tr>",
        );
        for b in &d.devices {
            let class = if b.status.starts_with("failed") {
                "bad"
            } else if b.status == "healthy" {
                "ok"
            } else {
                ""
            };
            let _ = write!(
                out,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"wrap {class}\">{}</td></tr>",
                mac_link(&b.mac),
                b.step,
                b.generation.map_or("-".into(), |g| g.to_string()),
                esc(&b.status)
            );
        }
        out.push_str("</table></div>");
    }
    out.push_str("</section>");
    Ok(out)
}

fn render_board(store: &mut Store, _form_token: Option<&str>, mac: &str) -> Result<String> {
    let d = device::Show {
        mac: mac.to_owned(),
    }
    .run(store)?;
    let (said, class) = drift(d.generation, d.last_report.as_ref());
    let mut out = format!(
        "<h1>Board <code>{}</code></h1><section><div class=\"scroll\"><table>",
        esc(d.mac.as_str())
    );
    let row = |out: &mut String, k: &str, v: String| {
        let _ = write!(
            out,
            "<tr><th>{}</th><td class=\"wrap\">{v}</td></tr>",
            esc(k)
        );
    };
    row(
        &mut out,
        "drift from desired",
        format!("<span class=\"{class}\">{}</span>", esc(&said)),
    );
    if let Some(g) = &d.group {
        row(
            &mut out,
            "group",
            format!(
                "{} (own pins: {})",
                esc(g.name.as_str()),
                esc(&own_pins_text(&g.own_pins))
            ),
        );
    }
    if let Some(r) = &d.rollout {
        row(
            &mut out,
            "rollout",
            format!(
                "<a href=\"/admin/rollouts/{id}\">rollout {id}</a> {} (step {})",
                state_pill(&r.state),
                r.step,
                id = r.id
            ),
        );
    }
    row(&mut out, "app", esc(d.desired.app.as_str()));
    row(&mut out, "generation", d.generation.to_string());
    row(&mut out, "last seen", ago(d.last_seen));
    row(&mut out, "key", format!("<code>{}</code>", esc(&d.key)));
    row(
        &mut out,
        "reports",
        format!(
            "{} taken; refused: {} forged, {} replayed",
            d.report_counter, d.forged_reports, d.replayed_reports
        ),
    );
    out.push_str("</table></div></section>");

    // What it should run against what it says it runs.
    let running: BTreeMap<String, String> = d
        .last_report
        .as_ref()
        .and_then(|r| r["modules"].as_object())
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("?").to_owned()))
                .collect()
        })
        .unwrap_or_default();
    out.push_str(
        "<section><h2>Modules</h2><div class=\"scroll\"><table><tr><th>module</th>\
         <th>desired</th><th>reported</th></tr>",
    );
    let mut names: Vec<String> = d.resolved.modules.keys().map(|k| k.to_string()).collect();
    for k in running.keys() {
        if !names.contains(k) {
            names.push(k.clone());
        }
    }
    for n in &names {
        let want = d
            .resolved
            .modules
            .iter()
            .find(|(k, _)| k.as_str() == n)
            .map_or("-", |(_, e)| e.version.as_str());
        let has = running.get(n).map_or("-", String::as_str);
        let class = if d.last_report.is_none() || want == has {
            ""
        } else {
            "warn"
        };
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td class=\"{class}\">{}</td></tr>",
            esc(n),
            esc(want),
            esc(has)
        );
    }
    out.push_str("</table></div></section>");

    let _ = write!(out, "<section id=\"reports\"><h2>Recent reports</h2>");
    if d.reports.is_empty() {
        out.push_str("<p class=\"muted\">No reports yet.</p>");
    } else {
        out.push_str(
            "<div class=\"scroll\"><table><tr><th>when</th><th>event</th><th>generation</th>\
             <th>config</th><th>error</th><th>report</th></tr>",
        );
        for r in &d.reports {
            let b = &r.report;
            let text = |k: &str| match &b[k] {
                Value::Null => "-".to_owned(),
                Value::String(s) => s.clone(),
                v => v.to_string(),
            };
            let event = text("event");
            let class = match event.as_str() {
                "updated" => "ok",
                "update_failed" | "server_failed" | "rolled_back" => "bad",
                _ => "",
            };
            let _ = write!(
                out,
                "<tr><td>{}</td><td class=\"{class}\">{}</td><td>{}</td><td>{}</td>\
                 <td class=\"wrap\">{}</td><td class=\"wrap\"><details><summary>all</summary>\
                 <code>{}</code></details></td></tr>",
                ago(Some(r.at)),
                esc(&event),
                esc(&text("generation")),
                esc(&text("config")),
                esc(&text("error")),
                esc(&b.to_string())
            );
        }
        out.push_str("</table></div>");
    }
    out.push_str("</section>");
    Ok(out)
}

fn render_modules(store: &mut Store, _form_token: Option<&str>) -> Result<String> {
    let list = module::List {}.run(store)?;
    let devices = device::List {}.run(store)?;
    // module -> version -> boards that report running it.
    let mut running: HashMap<String, BTreeMap<String, Vec<String>>> = HashMap::new();
    for d in &devices {
        if let Some(m) = d
            .last_report
            .as_ref()
            .and_then(|r| r["modules"].as_object())
        {
            for (name, v) in m {
                running
                    .entry(name.clone())
                    .or_default()
                    .entry(v.as_str().unwrap_or("?").to_owned())
                    .or_default()
                    .push(d.mac.clone());
            }
        }
    }
    let macs = |list: &[String]| -> String {
        if list.is_empty() {
            return "<span class=\"muted\">none</span>".into();
        }
        let shown: Vec<String> = list.iter().take(12).map(|m| mac_link(m)).collect();
        let more = if list.len() > 12 {
            format!(" and {} more", list.len() - 12)
        } else {
            String::new()
        };
        format!("<b>{}</b>: {}{more}", list.len(), shown.join(" "))
    };
    let mut out = String::from(
        "<h1>Modules</h1><p class=\"muted\">Each module's versions: which boards should run \
         each (their resolved manifest) and which say they do (their last report).</p>",
    );
    for m in &list {
        let detail = module::Show {
            name: m.name.clone(),
        }
        .run(store)?;
        let _ = write!(
            out,
            "<section id=\"module-{n}\"><h2>{n}</h2><div class=\"scroll\"><table><tr>\
             <th>version</th><th>size</th><th>published</th><th>desired by</th>\
             <th>running on</th></tr>",
            n = esc(&m.name)
        );
        let reported = running.remove(&m.name).unwrap_or_default();
        for v in detail.versions.iter().rev() {
            let on = reported.get(&v.version).cloned().unwrap_or_default();
            let _ = write!(
                out,
                "<tr><td><code>{}</code>{}</td><td>{}</td><td>{}</td><td class=\"wrap\">{}</td>\
                 <td class=\"wrap\">{}</td></tr>",
                esc(&v.version),
                if v.latest {
                    " <span class=\"pill\">latest</span>"
                } else {
                    ""
                },
                v.size,
                ago(Some(v.published_at)),
                macs(&v.devices),
                macs(&on)
            );
        }
        // Versions boards report that this store never published (or forgot).
        for (v, on) in &reported {
            if !detail.versions.iter().any(|x| &x.version == v) {
                let _ = write!(
                    out,
                    "<tr><td><code>{}</code> <span class=\"pill\">not published</span></td>\
                     <td>-</td><td>-</td><td>-</td><td class=\"wrap\">{}</td></tr>",
                    esc(v),
                    macs(on)
                );
            }
        }
        out.push_str("</table></div></section>");
    }
    // Modules boards report that are not published here at all.
    let mut others: Vec<_> = running.into_iter().collect();
    others.sort();
    if !others.is_empty() {
        out.push_str(
            "<section id=\"unpublished\"><h2>Reported, not published here</h2>\
             <div class=\"scroll\"><table><tr><th>module</th><th>version</th><th>running on</th></tr>",
        );
        for (name, versions) in &others {
            for (v, on) in versions {
                let _ = write!(
                    out,
                    "<tr><td>{}</td><td><code>{}</code></td><td class=\"wrap\">{}</td></tr>",
                    esc(name),
                    esc(v),
                    macs(on)
                );
            }
        }
        out.push_str("</table></div></section>");
    }
    Ok(out)
}

// ----- login and writes --------------------------------------------------------------------

#[derive(serde::Deserialize)]
struct LoginQuery {
    #[serde(default)]
    needed: Option<String>,
}

fn login_page(status: StatusCode, message: Option<&str>) -> Response {
    let msg = message
        .map(|m| format!("<p class=\"msg bad\">{}</p>", esc(m)))
        .unwrap_or_default();
    let body = format!(
        "<h1>Log in</h1>{msg}<section><form method=\"post\" action=\"/admin/login\">\
         <p><label for=\"token\">Admin token</label><br><input id=\"token\" name=\"token\" \
         type=\"password\" autocomplete=\"current-password\" size=\"40\" required></p>\
         <p><button>Log in</button></p></form><p class=\"muted\">The token is in \
         <code>admin-token</code> in the server's data directory: <code>mpfleet token \
         show</code> prints it. Logging in sets a cookie for this dashboard only; viewing \
         needs none, changes (adopting a board, pausing a rollout) do.</p></section>"
    );
    html_response(
        status,
        page("Log in", Kind::Form, &Viewer { form_token: None }, &body),
    )
}

async fn login_form(Query(q): Query<LoginQuery>) -> Response {
    login_page(
        StatusCode::OK,
        q.needed
            .is_some()
            .then_some("Log in to make changes: that needs the admin token."),
    )
}

#[derive(serde::Deserialize)]
struct LoginForm {
    #[serde(default)]
    token: String,
}

async fn login(
    State(d): State<Dashboard>,
    tls: Option<axum::Extension<super::sides::OverTls>>,
    Form(f): Form<LoginForm>,
) -> Response {
    let token = d.token.clone();
    let cookie = tokio::task::spawn_blocking(move || auth::login(&token, &f.token))
        .await
        .ok()
        .flatten()
        .map(|c| if tls.is_some() { c + "; Secure" } else { c });
    match cookie.and_then(|c| HeaderValue::from_str(&c).ok()) {
        Some(c) => {
            let mut r = see_other("/admin/");
            r.headers_mut().insert(header::SET_COOKIE, c);
            r
        }
        None => login_page(
            StatusCode::UNAUTHORIZED,
            Some("That is not the admin token."),
        ),
    }
}

async fn logout() -> Response {
    let mut r = see_other("/admin/");
    if let Ok(c) = HeaderValue::from_str(&auth::logout()) {
        r.headers_mut().insert(header::SET_COOKIE, c);
    }
    r
}

/// The session of a write whose form carried `csrf`, or the response that refuses it: to
/// the login page without a session, 403 with a wrong form token.
async fn writer(d: &Dashboard, headers: &HeaderMap, csrf: &str) -> Result<Session, Response> {
    let token = d.token.clone();
    let headers = headers.clone();
    let session = tokio::task::spawn_blocking(move || auth::session(&token, &headers))
        .await
        .ok()
        .flatten();
    match session {
        None => Err(see_other("/admin/login?needed=1")),
        Some(s) if !s.form_ok(csrf) => Err(error_page(
            Failure(
                StatusCode::FORBIDDEN,
                "this form is not from this dashboard's current session (reload the page \
                 and try again)"
                    .into(),
            ),
            Some(&s.form_token),
        )),
        Some(s) => Ok(s),
    }
}

/// Runs a write operation as the API would, then sends the browser to `then`.
async fn write<O: Operation>(d: Dashboard, s: Session, op: O, then: String) -> Response {
    let done = tokio::task::spawn_blocking(move || ops::run_local(&d.data, op)).await;
    match done {
        Ok(Ok(_)) => see_other(&then),
        Ok(Err(e)) => error_page(Failure::from(e), Some(&s.form_token)),
        Err(_) => error_page(
            Failure(StatusCode::INTERNAL_SERVER_ERROR, "internal error".into()),
            Some(&s.form_token),
        ),
    }
}

#[derive(serde::Deserialize)]
struct AdoptForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    mac: String,
    /// `group:NAME` or `app:NAME`.
    #[serde(default)]
    to: String,
}

async fn adopt(
    State(d): State<Dashboard>,
    headers: HeaderMap,
    Form(f): Form<AdoptForm>,
) -> Response {
    let s = match writer(&d, &headers, &f.csrf).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let (app, group) = match f.to.split_once(':') {
        Some(("app", a)) => (Some(a.to_owned()), None),
        Some(("group", g)) => (None, Some(g.to_owned())),
        _ => {
            return error_page(
                Failure(
                    StatusCode::BAD_REQUEST,
                    format!("adopt {:?}: choose a group or an app", f.to),
                ),
                Some(&s.form_token),
            )
        }
    };
    let mac = match device::mac(&f.mac).context("adopt") {
        Ok(m) => m,
        Err(e) => return error_page(Failure::from(e), Some(&s.form_token)),
    };
    let op = device::Set {
        mac: mac.to_string(),
        app,
        group,
        modules: Default::default(),
    };
    write(d, s, op, format!("/admin/boards/{mac}")).await
}

#[derive(serde::Deserialize)]
struct ActionForm {
    #[serde(default)]
    csrf: String,
}

async fn rollout_action(
    State(d): State<Dashboard>,
    UrlPath((id, action)): UrlPath<(String, String)>,
    headers: HeaderMap,
    Form(f): Form<ActionForm>,
) -> Response {
    let s = match writer(&d, &headers, &f.csrf).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let Ok(n) = id.parse::<i64>() else {
        return error_page(
            Failure(StatusCode::NOT_FOUND, format!("no rollout {id:?}")),
            Some(&s.form_token),
        );
    };
    let then = format!("/admin/rollouts/{n}");
    let rollout = n.to_string();
    match action.as_str() {
        "pause" => write(d, s, rollout::Pause { rollout }, then).await,
        "resume" => write(d, s, rollout::Resume { rollout }, then).await,
        "abort" => write(d, s, rollout::Abort { rollout }, then).await,
        other => error_page(
            Failure(
                StatusCode::NOT_FOUND,
                format!("a rollout can pause, resume or abort, not {other:?}"),
            ),
            Some(&s.form_token),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::drift;
    use serde_json::json;

    #[test]
    fn drift_says_how_a_board_stands() {
        assert_eq!(drift(3, None).1, "muted");
        let r = json!({"event": "boot", "generation": 3, "config": "primary"});
        assert_eq!(drift(3, Some(&r)), ("in sync".into(), "ok"));
        assert_eq!(drift(4, Some(&r)).1, "warn");
        assert!(drift(4, Some(&r)).0.contains("should run 4"));
        let r = json!({"event": "update_failed", "generation": 3, "error": "<x>"});
        assert_eq!(drift(4, Some(&r)), ("update_failed: <x>".into(), "bad"));
        let r = json!({"event": "rolled_back", "generation": 2, "config": "alternate"});
        assert_eq!(drift(3, Some(&r)).1, "bad");
    }
}
