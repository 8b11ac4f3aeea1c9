//! The dashboard (`/admin/` of `serve`), loaded by a real headless Chromium: the fleet with
//! the state its boards reported (signed reports, as boards send them), a rollout paused by
//! a failing board with its reason, the progress and health pictures, an unknown board with
//! its adopt form, a board's reports, modules and who runs them; hostile strings from boards
//! and URLs shown as text; screenshots at phone and desktop widths (written where the test
//! output says). Writes: the login, the adopt form and a rollout button used in the real
//! browser (driven over the DevTools protocol on a pipe: it fills in and submits the forms,
//! with its own cookies), a form posted from another site refused; and the same rules over
//! plain HTTP, where every refusal can be seen (wrong token, missing or wrong form token,
//! rotation, bad input).

use crate::harness::chromium::{dump_dom, Browser};
use crate::harness::{eventually, Fleet, Server};
use serde_json::{json, Value};
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

const GROUP: [&str; 4] = [
    "0a0000000001",
    "0a0000000002",
    "0a0000000003",
    "0a0000000004",
];
const ALONE: &str = "deadbeef1234";
const STRANGER: &str = "aabbccddeeff";
/// What a hostile board says went wrong: markup and script, to be shown as text.
const HOSTILE: &str =
    "<script>document.title='pwned'</script><img src=x onerror=\"document.title='pwned'\">&amp;";
/// A module name a hostile board claims to run.
const HOSTILE_MODULE: &str = "<b id=\"injected\">bold</b>";

struct Scene {
    f: Fleet,
    s: Server,
    /// The board the rollout moved, which then failed.
    failed: String,
}

/// Sends a signed report for `mac` as its board would.
fn report(f: &Fleet, s: &Server, mac: &str, n: i64, body: Value) {
    let mut body = body;
    body["n"] = json!(n);
    let r = s.report(mac, &f.key(mac), body.to_string().as_bytes());
    assert_eq!(r.status, 200, "report of {mac}: {}", r.text());
}

fn generation(f: &Fleet, mac: &str) -> i64 {
    f.json(&["device", "show", mac, "--json"])["generation"]
        .as_i64()
        .unwrap()
}

/// A group of four boards and one on its own, each having reported a boot; a rollout of
/// the group to sensorclass 2 whose first board reported `update_failed` (with a hostile
/// error string), so the rollout paused; a board that asked but is not a device.
fn scene() -> Scene {
    let mut f = Fleet::smartcharger();
    f.set_env("MPFLEET_ROLLOUT_TICK", "200ms");
    f.ok(&[
        "group",
        "create",
        "greenhouse",
        "--app",
        "smartcharger",
        "sensorclass=1",
    ]);
    for mac in GROUP {
        f.ok(&["device", "set", mac, "--group", "greenhouse"]);
    }
    f.ok(&["device", "set", ALONE, "--app", "smartcharger"]);
    let s = f.serve();
    for mac in GROUP.iter().chain([&ALONE]) {
        let g = generation(&f, mac);
        report(
            &f,
            &s,
            mac,
            1,
            json!({"event": "boot", "generation": g, "config": "primary",
                   "modules": {"smartcharger": "1", "sensorclass": if *mac == ALONE {"2"} else {"1"}},
                   "mem_free": 21344, "micropython": "1.24.1"}),
        );
    }
    f.ok(&[
        "rollout",
        "start",
        "greenhouse",
        "--to",
        "sensorclass=2",
        "--steps",
        "25%,100%",
    ]);
    let moved = f.json(&["rollout", "show", "greenhouse", "--json"])["devices"][0]["mac"]
        .as_str()
        .unwrap()
        .to_owned();
    report(
        &f,
        &s,
        &moved,
        2,
        json!({"event": "update_failed", "generation": generation(&f, &moved) - 1,
               "config": "primary", "error": HOSTILE,
               "modules": {"smartcharger": "1", "sensorclass": "1", HOSTILE_MODULE: "1"}}),
    );
    eventually("the rollout to pause", Duration::from_secs(30), || {
        let r = f.json(&["rollout", "show", "greenhouse", "--json"]);
        (r["state"] == "paused").then_some(())
    });
    assert_eq!(s.get(&format!("v1/{STRANGER}.json")).status, 404);
    eventually("the stranger listed", Duration::from_secs(10), || {
        f.ok(&["device", "list", "--unknown"])
            .contains(STRANGER)
            .then_some(())
    });
    Scene {
        f,
        s,
        failed: moved,
    }
}

/// Where screenshots go: `target/dashboard-screenshots/`.
fn shots() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/dashboard-screenshots")
}

/// The text of the first element after `marker` in `html` up to the next `<`.
fn text_after<'a>(html: &'a str, marker: &str) -> &'a str {
    let i = html
        .find(marker)
        .unwrap_or_else(|| panic!("no {marker} in:\n{html}"));
    let rest = &html[i + marker.len()..];
    let rest = &rest[rest.find('>').map_or(0, |j| j + 1)..];
    &rest[..rest.find('<').unwrap_or(rest.len())]
}

#[test]
fn the_dashboard_shows_the_fleet_in_a_real_browser() {
    let Scene { f, s, failed } = scene();
    let mut b = Browser::start();
    let dom = b.dom(&format!("{}admin/", s.base));
    // A page for phones that keeps itself current, with no script.
    assert!(dom.contains("name=\"viewport\""), "{dom}");
    assert!(dom.contains("http-equiv=\"refresh\""), "{dom}");
    assert!(!dom.contains("<script"), "{dom}");
    // Every board, with what it reported and how far it is from what it should run.
    for mac in GROUP.iter().chain([&ALONE]) {
        assert!(
            dom.contains(&format!("href=\"/admin/boards/{mac}\"")),
            "{mac}: {dom}"
        );
    }
    let row = |mac: &str| -> String {
        let i = dom
            .find(&format!("<a href=\"/admin/boards/{mac}\">"))
            .unwrap();
        let end = i + dom[i..].find("</tr>").unwrap();
        dom[i..end].to_owned()
    };
    let alone = row(ALONE);
    assert!(alone.contains("in sync"), "{alone}");
    assert!(alone.contains("primary"), "{alone}");
    assert!(alone.contains("boot"), "{alone}");
    let bad = row(&failed);
    assert!(bad.contains("update_failed"), "{bad}");
    assert!(bad.contains("class=\"wrap bad\""), "{bad}");
    // The moved board was given a new generation that it does not run.
    assert!(
        bad.contains(&format!("<td>{}</td>", generation(&f, &failed))),
        "{bad}"
    );
    // The paused rollout, why it stopped, and its progress as a picture.
    assert!(
        dom.contains("<span class=\"pill paused\">paused</span>"),
        "{dom}"
    );
    let reason = text_after(&dom, "class=\"msg bad reason\"");
    assert!(
        reason.contains(&failed) && reason.contains("update_failed"),
        "{reason}"
    );
    let reason_cli = f.json(&["rollout", "show", "greenhouse", "--json"])["reason"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(reason.contains(&reason_cli), "{reason} / {reason_cli}");
    assert!(dom.contains("<svg class=\"progress\""), "{dom}");
    assert!(
        dom.contains("0 healthy, 0 waiting, 1 failed, 3 not moved"),
        "{dom}"
    );
    assert!(dom.contains("action=\"/admin/rollouts/1/resume\""), "{dom}");
    // The fleet's health: this hour's reports, by event.
    assert!(
        dom.contains("aria-label=\"reports per hour, last 24 hours: 6 reports\""),
        "{dom}"
    );
    assert!(dom.contains("5 × boot"), "{dom}");
    assert!(dom.contains("1 × update_failed"), "{dom}");
    // The stranger, with a form to adopt it into the group or with an app.
    let i = dom
        .find("id=\"unknown\"")
        .expect("an unknown boards section");
    let unknown = &dom[i..i + dom[i..].find("</section>").unwrap()];
    assert!(unknown.contains(STRANGER), "{unknown}");
    assert!(
        unknown.contains("<form class=\"inline adopt\" method=\"post\" action=\"/admin/adopt\">"),
        "{unknown}"
    );
    assert!(
        unknown.contains(&format!(
            "<input type=\"hidden\" name=\"mac\" value=\"{STRANGER}\">"
        )),
        "{unknown}"
    );
    assert!(
        unknown.contains("<option value=\"group:greenhouse\">"),
        "{unknown}"
    );
    assert!(
        unknown.contains("<option value=\"app:smartcharger\">"),
        "{unknown}"
    );
    // Not logged in: no form token, and the page says a change needs a login.
    assert!(!unknown.contains("name=\"csrf\""), "{unknown}");
    assert!(dom.contains("href=\"/admin/login\""), "{dom}");
    // Groups.
    assert!(dom.contains("<td>greenhouse</td>"), "{dom}");

    // A board's page: its reports, newest first.
    let board = b.dom(&format!("{}admin/boards/{failed}", s.base));
    let reports = &board[board.find("id=\"reports\"").unwrap()..];
    let (failed_at, boot_at) = (
        reports.find("update_failed").unwrap(),
        reports.find(">boot<").unwrap(),
    );
    assert!(failed_at < boot_at, "{reports}");
    assert!(board.contains("rollout 1</a>"), "{board}");

    // Modules: which boards should run each version and which say they do.
    let modules = b.dom(&format!("{}admin/modules", s.base));
    let i = modules.find("id=\"module-sensorclass\"").unwrap();
    let sensorclass = &modules[i..i + modules[i..].find("</section>").unwrap()];
    let v2 = &sensorclass[sensorclass.find("<code>2</code>").unwrap()..];
    let v2: Vec<&str> = v2[..v2.find("</tr>").unwrap()].split("<td").collect();
    // Desired by the board the rollout moved; run, it says, by the board on its own.
    let (desired, running) = (v2[3], v2[4]);
    assert!(desired.contains("<b>1</b>"), "{desired}");
    assert!(
        desired.contains(&format!("/admin/boards/{failed}")),
        "{desired}"
    );
    assert!(running.contains("<b>1</b>"), "{running}");
    assert!(
        running.contains(&format!("/admin/boards/{ALONE}")),
        "{running}"
    );

    // The rollout's page lists the board it moved and why it failed.
    let rollout = b.dom(&format!("{}admin/rollouts/1", s.base));
    assert!(rollout.contains("failed: update_failed"), "{rollout}");

    // Screenshots: a phone, and a desktop.
    let phone = shots().join("fleet-phone.png");
    let size = b.screenshot(&format!("{}admin/", s.base), &phone, 390, 1500);
    assert_eq!(size, (390, 1500), "{}", phone.display());
    // At a phone's width the page is laid out for it: nothing but the tables' own scrolling
    // boxes is wider than the screen.
    assert_eq!(b.eval("document.documentElement.scrollWidth"), 390);
    let desktop = shots().join("fleet-desktop.png");
    b.screenshot(&format!("{}admin/", s.base), &desktop, 1280, 1700);
    let board_shot = shots().join("board-phone.png");
    b.screenshot(
        &format!("{}admin/boards/{failed}", s.base),
        &board_shot,
        390,
        1200,
    );
    // Straight to stderr, past the test harness's capture: shown even when the test passes.
    let _ = writeln!(
        std::io::stderr(),
        "dashboard screenshots: {}, {}, {}",
        phone.display(),
        desktop.display(),
        board_shot.display()
    );
}

#[test]
fn hostile_strings_from_boards_and_urls_are_shown_as_text() {
    // `_f` keeps the store's directory for the server.
    let Scene { f: _f, s, failed } = scene();
    // A browser loading the page on its own, as a user's would...
    let dom = dump_dom(&format!("{}admin/", s.base));
    assert!(!dom.contains("<script") && !dom.contains("<img"), "{dom}");
    assert!(dom.contains("&lt;script&gt;"), "{dom}");
    // ...and one going through every page.
    let mut b = Browser::start();
    for (path, shown) in [
        (format!("admin/boards/{failed}"), "&lt;script&gt;"),
        ("admin/".into(), "&lt;script&gt;"),
        ("admin/modules".into(), "&lt;b id="),
        // A MAC that is not one, in the URL: the error names it, as text.
        (
            "admin/boards/%3Cscript%3Edocument.title=%27pwned%27%3C%2Fscript%3E".into(),
            "&lt;script&gt;",
        ),
    ] {
        let dom = b.dom(&format!("{}{path}", s.base));
        // Nothing the boards or the URL said became markup: no script, image or bold element,
        // and the script did not run.
        assert!(!dom.contains("<script"), "{path}: {dom}");
        assert!(!dom.contains("<img"), "{path}: {dom}");
        assert!(!dom.contains("<b id="), "{path}: {dom}");
        assert!(!dom.contains("<title>pwned"), "{path}: {dom}");
        assert!(dom.contains("· mpfleet</title>"), "{path}: {dom}");
        // ...but is there, as text.
        assert!(dom.contains(shown), "{path}: {dom}");
    }
    let board = s.get(&format!("admin/boards/{failed}")).text();
    assert!(board.contains("&lt;img src=x onerror="), "{board}");
    assert!(board.contains("&amp;amp;"), "{board}");
    let modules = s.get("admin/modules").text();
    assert!(
        modules.contains("&lt;b id=&quot;injected&quot;&gt;bold&lt;/b&gt;"),
        "{modules}"
    );
    let r = s.get("admin/boards/%3Cscript%3Ex%3C%2Fscript%3E");
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("invalid MAC address"), "{}", r.text());
    let r = s.get(&format!("admin/boards/{STRANGER}"));
    assert_eq!(r.status, 404, "{}", r.text());
    // Browsers are told to run no script at all, nor frame the page.
    let r = ureq::get(&format!("{}admin/", s.base)).call().unwrap();
    let csp = r.header("content-security-policy").unwrap_or_default();
    assert!(csp.contains("default-src 'none'"), "{csp}");
    assert!(!csp.contains("script-src"), "{csp}");
    assert_eq!(r.header("x-frame-options"), Some("DENY"));
}

/// An HTTP client that does not follow redirects, so the test sees them.
fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .redirects(0)
        .timeout(Duration::from_secs(10))
        .build()
}

struct Answer {
    status: u16,
    location: Option<String>,
    cookie: Option<String>,
    text: String,
}

fn post_form(s: &Server, path: &str, cookie: Option<&str>, form: &[(&str, &str)]) -> Answer {
    let mut req = agent().post(&format!("{}{path}", s.base));
    if let Some(c) = cookie {
        req = req.set("Cookie", c);
    }
    answer(req.send_form(form))
}

fn get(s: &Server, path: &str, cookie: Option<&str>) -> Answer {
    let mut req = agent().get(&format!("{}{path}", s.base));
    if let Some(c) = cookie {
        req = req.set("Cookie", c);
    }
    answer(req.call())
}

fn answer(r: Result<ureq::Response, ureq::Error>) -> Answer {
    let r = match r {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("{e}"),
    };
    Answer {
        status: r.status(),
        location: r.header("location").map(str::to_owned),
        cookie: r.header("set-cookie").map(str::to_owned),
        text: r.into_string().unwrap(),
    }
}

/// The form token in a page rendered for a logged-in browser.
fn form_token(page: &str) -> String {
    let marker = "name=\"csrf\" value=\"";
    let i = page
        .find(marker)
        .unwrap_or_else(|| panic!("no form token in:\n{page}"))
        + marker.len();
    page[i..i + page[i..].find('"').unwrap()].to_owned()
}

#[test]
fn writes_need_the_token_through_the_login_and_a_form_from_the_dashboard() {
    let Scene { f, s, .. } = scene();
    let adopt = |cookie: Option<&str>, csrf: &str| {
        post_form(
            &s,
            "admin/adopt",
            cookie,
            &[
                ("mac", STRANGER),
                ("to", "group:greenhouse"),
                ("csrf", csrf),
            ],
        )
    };
    let not_adopted = |f: &Fleet| {
        let err = f.fails(&["device", "show", STRANGER]);
        assert!(err.contains("unknown device"), "{err}");
    };

    // No session: sent to the login page, nothing changes.
    let r = adopt(None, "");
    assert_eq!(r.status, 303, "{}", r.text);
    assert_eq!(r.location.as_deref(), Some("/admin/login?needed=1"));
    not_adopted(&f);
    let r = post_form(&s, "admin/rollouts/1/resume", None, &[("csrf", "")]);
    assert_eq!(r.status, 303);
    let login = get(&s, "admin/login?needed=1", None);
    assert!(
        login.text.contains("Log in to make changes"),
        "{}",
        login.text
    );
    assert!(
        !login.text.contains("http-equiv=\"refresh\""),
        "a form page stays put"
    );

    // A wrong token: no cookie.
    let r = post_form(&s, "admin/login", None, &[("token", &"0".repeat(64))]);
    assert_eq!(r.status, 401, "{}", r.text);
    assert!(r.cookie.is_none());
    assert!(r.text.contains("not the admin token"), "{}", r.text);

    // The token: a cookie for the dashboard only, which is not the token itself.
    let token = s.token();
    let r = post_form(&s, "admin/login", None, &[("token", &token)]);
    assert_eq!(r.status, 303, "{}", r.text);
    assert_eq!(r.location.as_deref(), Some("/admin/"));
    let set = r.cookie.expect("a session cookie");
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/admin"] {
        assert!(set.contains(attr), "{set}");
    }
    let cookie = set.split(';').next().unwrap().to_owned();
    assert!(cookie.starts_with("mpfleet_session="), "{cookie}");
    assert!(!cookie.contains(&token), "{cookie}");
    // The cookie's value opens no admin API.
    let value = cookie.split_once('=').unwrap().1;
    assert_eq!(
        s.admin("GET", "admin/api/v1/devices", Some(value), None)
            .status,
        401
    );

    // Logged in: the page carries the form token and a logout button.
    let page = get(&s, "admin/", Some(&cookie));
    assert!(
        page.text.contains("action=\"/admin/logout\""),
        "{}",
        page.text
    );
    let csrf = form_token(&page.text);
    assert_ne!(csrf, value);
    assert!(!page.text.contains(&token));

    // A session without the form's token (a form posted from another site): refused.
    for wrong in ["", "x", "0".repeat(64).as_str(), value] {
        let r = adopt(Some(&cookie), wrong);
        assert_eq!(r.status, 403, "csrf {wrong:?}: {}", r.text);
    }
    not_adopted(&f);

    // Both: the board is adopted into the group, and the page says where it went.
    let r = adopt(Some(&cookie), &csrf);
    assert_eq!(r.status, 303, "{}", r.text);
    assert_eq!(
        r.location.as_deref(),
        Some(&*format!("/admin/boards/{STRANGER}"))
    );
    let show = f.json(&["device", "show", STRANGER, "--json"]);
    assert_eq!(show["group"]["name"], "greenhouse", "{show}");
    assert!(!f.ok(&["device", "list", "--unknown"]).contains(STRANGER));
    // Bad input is an error page, not a panic, and changes nothing.
    let r = post_form(
        &s,
        "admin/adopt",
        Some(&cookie),
        &[("mac", "nope"), ("to", "group:greenhouse"), ("csrf", &csrf)],
    );
    assert_eq!(r.status, 400, "{}", r.text);
    assert!(r.text.contains("invalid MAC address"), "{}", r.text);
    let r = post_form(
        &s,
        "admin/adopt",
        Some(&cookie),
        &[
            ("mac", "112233445566"),
            ("to", "group:nosuch"),
            ("csrf", &csrf),
        ],
    );
    assert!(matches!(r.status, 400 | 404), "{}: {}", r.status, r.text);
    assert!(r.text.contains("nosuch"), "{}", r.text);
    assert!(f
        .fails(&["device", "show", "112233445566"])
        .contains("unknown device"));

    // Rollout buttons: resume the paused rollout.
    let r = post_form(
        &s,
        "admin/rollouts/1/resume",
        Some(&cookie),
        &[("csrf", &csrf)],
    );
    assert_eq!(r.status, 303, "{}", r.text);
    assert_eq!(r.location.as_deref(), Some("/admin/rollouts/1"));
    assert_eq!(
        f.json(&["rollout", "show", "1", "--json"])["state"],
        "running"
    );
    let r = post_form(
        &s,
        "admin/rollouts/1/explode",
        Some(&cookie),
        &[("csrf", &csrf)],
    );
    assert_eq!(r.status, 404, "{}", r.text);

    // Logging out clears the cookie.
    let r = post_form(&s, "admin/logout", Some(&cookie), &[]);
    assert_eq!(r.status, 303);
    let cleared = r.cookie.unwrap();
    assert!(cleared.contains("Max-Age=0"), "{cleared}");

    // A rotated token ends every session.
    f.ok(&["token", "rotate"]);
    let r = post_form(
        &s,
        "admin/rollouts/1/pause",
        Some(&cookie),
        &[("csrf", &csrf)],
    );
    assert_eq!(r.status, 303);
    assert_eq!(r.location.as_deref(), Some("/admin/login?needed=1"));
    assert_eq!(
        f.json(&["rollout", "show", "1", "--json"])["state"],
        "running"
    );
    assert!(s.log().iter().all(|l| !l.contains("panicked")));
}

#[test]
fn a_real_browser_logs_in_and_adopts_a_board_with_the_forms() {
    let Scene { f, s, .. } = scene();
    let mut b = Browser::start();
    let dashboard = format!("{}admin/", s.base);
    let rollout_state = |f: &Fleet| f.json(&["rollout", "show", "1", "--json"])["state"].clone();

    // Not logged in: Adopt leads to the login page, and nothing changes.
    b.open(&dashboard);
    b.eval("document.querySelector('form.adopt select').value = 'group:greenhouse'");
    b.click("form.adopt button");
    assert!(
        b.location().ends_with("/admin/login?needed=1"),
        "{}",
        b.location()
    );
    assert!(b.text().contains("Log in to make changes"), "{}", b.text());
    assert!(f
        .fails(&["device", "show", STRANGER])
        .contains("unknown device"));

    // A wrong token, then the token, typed into the login form.
    b.eval(&format!(
        "document.getElementById('token').value = '{}'",
        "0".repeat(64)
    ));
    b.click("main form button");
    assert!(b.text().contains("not the admin token"), "{}", b.text());
    b.eval(&format!(
        "document.getElementById('token').value = '{}'",
        s.token()
    ));
    b.click("main form button");
    assert_eq!(b.location(), dashboard);
    assert!(b.text().contains("Log out"), "{}", b.text());
    // The session cookie is HttpOnly: the page itself cannot read it.
    assert_eq!(b.eval("document.cookie"), "");

    // Adopt the stranger into the group: the browser lands on its page.
    b.eval("document.querySelector('form.adopt select').value = 'group:greenhouse'");
    b.click("form.adopt button");
    assert!(
        b.location().ends_with(&format!("/admin/boards/{STRANGER}")),
        "{}",
        b.location()
    );
    assert!(b.text().contains("greenhouse"), "{}", b.text());
    let show = f.json(&["device", "show", STRANGER, "--json"]);
    assert_eq!(show["group"]["name"], "greenhouse", "{show}");

    // Resume the paused rollout with its button.
    b.open(&format!("{}admin/rollouts/1", s.base));
    let csrf = b.eval("document.querySelector('input[name=csrf]').value");
    b.click("button[value=resume]");
    assert!(
        b.location().ends_with("/admin/rollouts/1"),
        "{}",
        b.location()
    );
    assert_eq!(rollout_state(&f), "running");

    // A page on another site (here a data: URL) posting a form to the dashboard, even one
    // that knew the form token: the browser does not send the SameSite=Strict cookie, so it
    // is sent to the login page and the rollout keeps running.
    let form = format!(
        "data:text/html,<form method=post action='{}admin/rollouts/1/pause'>\
         <input name=csrf value='{}'><button>go</button></form>",
        s.base,
        csrf.as_str().unwrap()
    );
    b.open(&form);
    b.click("button");
    assert!(
        b.location().ends_with("/admin/login?needed=1"),
        "{}",
        b.location()
    );
    assert_eq!(rollout_state(&f), "running");

    // Log out: the next change asks for the token again.
    b.open(&dashboard);
    b.click("header form button");
    assert!(b.text().contains("Log in"), "{}", b.text());
    b.open(&format!("{}admin/rollouts/1", s.base));
    b.click("button[value=pause]");
    assert!(
        b.location().ends_with("/admin/login?needed=1"),
        "{}",
        b.location()
    );
    assert_eq!(rollout_state(&f), "running");
}
