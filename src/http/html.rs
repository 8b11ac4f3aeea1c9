//! HTML for the dashboard: escaping, and the page every dashboard view is wrapped in.
//!
//! Everything that reaches a page from the store or a request goes through [`esc`]: boards
//! choose what they report (error strings, module names in `modules`), and an unknown MAC or
//! a path comes from anyone on the network. The page shell is plain HTML with its CSS inline
//! (no build step, no script, nothing fetched from elsewhere), a viewport for phones, and a
//! `<meta http-equiv="refresh">` on views so a dashboard left open stays current.

use std::fmt::Write;

/// `s` with `& < > " '` replaced by entities: safe as element text and in quoted attributes.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// How often a view reloads itself, in seconds.
pub const REFRESH_SECS: u32 = 10;

const CSS: &str = "\
*{box-sizing:border-box}\
body{font:15px/1.4 system-ui,sans-serif;margin:0;color:#1d2330;background:#f4f6f9}\
header{background:#1d2330;color:#fff;padding:.6em 1em;display:flex;flex-wrap:wrap;gap:.4em 1.2em;align-items:center}\
header a{color:#fff}header strong{font-size:1.1em;margin-right:.5em}\
header form{margin:0 0 0 auto}\
main{padding:.5em 1em 2em;max-width:72em;margin:auto}\
section{background:#fff;border-radius:6px;padding:.6em .9em;margin:.8em 0;box-shadow:0 1px 2px #0002}\
h1{font-size:1.3em;margin:.6em 0 .2em}h2{font-size:1.1em;margin:.2em 0 .5em}\
.scroll{overflow-x:auto}\
table{border-collapse:collapse;width:100%;font-size:.92em}\
th,td{text-align:left;padding:.3em .5em;border-bottom:1px solid #e3e6eb;vertical-align:top;white-space:nowrap}\
td.wrap{white-space:normal;word-break:break-word;min-width:12em}\
th{font-weight:600;color:#555}\
code{font-size:.95em}\
.ok{color:#1a7f37}.warn{color:#9a6700}.bad{color:#cf222e}.muted{color:#777}\
.pill{display:inline-block;padding:0 .5em;border-radius:1em;font-size:.85em;background:#e3e6eb}\
.pill.running{background:#ddf4ff}.pill.paused{background:#fff1c2}.pill.done{background:#dafbe1}.pill.aborted{background:#ffe1e1}\
.stats{display:flex;flex-wrap:wrap;gap:.5em}.stats div{background:#f4f6f9;border-radius:4px;padding:.3em .7em}\
.stats b{display:block;font-size:1.3em}\
form.inline{display:inline-flex;flex-wrap:wrap;gap:.3em;margin:0}\
button,select,input{font:inherit;padding:.25em .5em}\
.msg{padding:.6em .9em;border-radius:6px;background:#fff1c2}.msg.bad{background:#ffe1e1;color:#1d2330}\
svg{max-width:100%;height:auto}svg.health,svg.progress{width:100%;max-width:46em}\
@media (max-width:40em){body{font-size:14px}main{padding:.3em .4em}section{padding:.5em}}";

/// Whether the page is a view (reloads itself) or holds a form to fill in (does not).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    View,
    Form,
}

/// Who is looking: whether they are logged in decides the header's link and button.
pub struct Viewer<'a> {
    /// The form token of a logged-in browser.
    pub form_token: Option<&'a str>,
}

/// A whole page: `title` (text, escaped here) and `body` (HTML, already escaped).
pub fn page(title: &str, kind: Kind, viewer: &Viewer<'_>, body: &str) -> String {
    let mut out = String::with_capacity(body.len() + 4096);
    let refresh = match kind {
        Kind::View => format!("<meta http-equiv=\"refresh\" content=\"{REFRESH_SECS}\">"),
        Kind::Form => String::new(),
    };
    let account = match viewer.form_token {
        Some(t) => format!(
            "<form method=\"post\" action=\"/admin/logout\">{}<button>Log out</button></form>",
            csrf_field(t)
        ),
        None => "<a href=\"/admin/login\" style=\"margin-left:auto\">Log in</a>".into(),
    };
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">{refresh}\
         <title>{} · mpfleet</title><style>{CSS}</style></head>\n<body><header>\
         <strong>mpfleet</strong><a href=\"/admin/\">Fleet</a>\
         <a href=\"/admin/modules\">Modules</a>{account}</header>\n<main>\n{body}\n</main>\
         </body></html>\n",
        esc(title)
    );
    out
}

/// The hidden field every dashboard form carries.
pub fn csrf_field(form_token: &str) -> String {
    format!(
        "<input type=\"hidden\" name=\"csrf\" value=\"{}\">",
        esc(form_token)
    )
}

/// `at` (Unix seconds) as "12s ago" in an element whose tooltip is the UTC time.
pub fn ago(at: Option<i64>) -> String {
    match at {
        Some(t) => format!(
            "<time datetime=\"{u}\" title=\"{u}\">{}</time>",
            esc(&crate::commands::ago(Some(t))),
            u = utc(t)
        ),
        None => "<span class=\"muted\">never</span>".into(),
    }
}

/// `2026-12-02 03:46:21Z` for Unix seconds (proleptic Gregorian calendar, UTC).
pub fn utc(t: i64) -> String {
    let (days, secs) = (t.div_euclid(86_400), t.rem_euclid(86_400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_what_html_would_read() {
        assert_eq!(
            esc("<a href=\"x\" title='y'>&amp;</a>"),
            "&lt;a href=&quot;x&quot; title=&#39;y&#39;&gt;&amp;amp;&lt;/a&gt;"
        );
        assert_eq!(esc("plain é"), "plain é");
    }

    #[test]
    fn utc_dates() {
        assert_eq!(utc(0), "1970-01-01 00:00:00Z");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00:00Z");
        assert_eq!(utc(1_796_096_781), "2026-12-01 03:46:21Z");
    }
}
