//! The dashboard's pictures, as inline SVG (no script, no image files): a rollout's progress
//! (its steps over the group, its boards healthy, waiting, failed or not moved yet) and the
//! fleet's health over time (reports per hour by event). Text in them is escaped like any.

use super::html::esc;
use crate::ops::device::{HourCount, HOURLY_HOURS};
use crate::ops::rollout::RolloutDetail;
use std::fmt::Write;

/// A colour per report event (and one for anything else).
pub fn event_colour(event: &str) -> &'static str {
    match event {
        "boot" => "#8c959f",
        "updated" => "#2da44e",
        "update_failed" => "#cf222e",
        "server_failed" => "#d4a72c",
        "rolled_back" => "#8250df",
        _ => "#57606a",
    }
}

const HEALTHY: &str = "#2da44e";
const WAITING: &str = "#54aeff";
const FAILED: &str = "#cf222e";
const UNTOUCHED: &str = "#d0d7de";

/// A rollout's progress: one bar for the whole group, coloured by how its boards are doing,
/// with a tick at each step's share and the current step's share marked.
pub fn rollout_progress(r: &RolloutDetail) -> String {
    let (w, bar_y, bar_h) = (600.0_f64, 22.0, 22.0);
    let size = r.boards.max(1) as f64;
    let mut out = String::new();
    let _ = write!(
        out,
        "<svg class=\"progress\" viewBox=\"0 0 {w} 78\" width=\"{w}\" height=\"78\" role=\"img\" \
         aria-label=\"rollout {} progress: {} healthy, {} waiting, {} failed, {} not moved\">",
        r.rollout.id, r.healthy, r.waiting, r.failed, r.untouched
    );
    let mut x = 0.0;
    for (count, colour, what) in [
        (r.healthy, HEALTHY, "healthy"),
        (r.waiting, WAITING, "waiting"),
        (r.failed, FAILED, "failed"),
        (r.untouched, UNTOUCHED, "not moved"),
    ] {
        if count == 0 {
            continue;
        }
        let width = w * count as f64 / size;
        let _ = write!(
            out,
            "<rect x=\"{x:.1}\" y=\"{bar_y}\" width=\"{width:.1}\" height=\"{bar_h}\" \
             fill=\"{colour}\"><title>{count} {what}</title></rect>"
        );
        x += width;
    }
    let _ = write!(
        out,
        "<rect x=\"0.5\" y=\"{bar_y}\" width=\"{}\" height=\"{bar_h}\" fill=\"none\" \
         stroke=\"#57606a\"/>",
        w - 1.0
    );
    for (i, percent) in r.rollout.steps.iter().enumerate() {
        let sx = (w * f64::from(*percent) / 100.0).clamp(1.0, w - 1.0);
        let current = i + 1 == r.rollout.step;
        let (colour, weight) = if current {
            ("#1d2330", "700")
        } else {
            ("#57606a", "400")
        };
        let anchor = if sx > w - 40.0 { "end" } else { "middle" };
        let _ = write!(
            out,
            "<line x1=\"{sx:.1}\" x2=\"{sx:.1}\" y1=\"14\" y2=\"{}\" stroke=\"{colour}\" \
             stroke-width=\"{}\"/><text x=\"{sx:.1}\" y=\"11\" font-size=\"11\" \
             text-anchor=\"{anchor}\" fill=\"{colour}\" font-weight=\"{weight}\">step {} \
             {percent}%</text>",
            bar_y + bar_h + 4.0,
            if current { 2 } else { 1 },
            i + 1
        );
    }
    let mut lx = 0.0;
    for (count, colour, what) in [
        (r.healthy, HEALTHY, "healthy"),
        (r.waiting, WAITING, "waiting"),
        (r.failed, FAILED, "failed"),
        (r.untouched, UNTOUCHED, "not moved"),
    ] {
        let label = format!("{count} {what}");
        let _ = write!(
            out,
            "<rect x=\"{lx}\" y=\"60\" width=\"10\" height=\"10\" fill=\"{colour}\"/>\
             <text x=\"{}\" y=\"69\" font-size=\"12\">{}</text>",
            lx + 14.0,
            esc(&label)
        );
        lx += 28.0 + 7.0 * label.len() as f64;
    }
    out.push_str("</svg>");
    out
}

/// Reports per hour over the last [`HOURLY_HOURS`] hours, stacked by event, ending at the
/// hour of `now`.
pub fn health(counts: &[HourCount], now: i64) -> String {
    let hours = HOURLY_HOURS as usize;
    let last = now.div_euclid(3600) * 3600;
    let first = last - (HOURLY_HOURS - 1) * 3600;
    let mut events: Vec<&str> = Vec::new();
    let mut per_hour = vec![Vec::<(&str, i64)>::new(); hours];
    for c in counts {
        if c.hour < first || c.hour > last {
            continue;
        }
        let i = ((c.hour - first) / 3600) as usize;
        per_hour[i].push((c.event.as_str(), c.count));
        if !events.contains(&c.event.as_str()) {
            events.push(&c.event);
        }
    }
    // The usual order of a board's life, then anything else.
    let order = |e: &str| {
        crate::http::EVENTS
            .iter()
            .position(|k| *k == e)
            .unwrap_or(usize::MAX)
    };
    events.sort_by_key(|e| (order(e), e.to_string()));
    let top = per_hour
        .iter()
        .map(|h| h.iter().map(|(_, n)| n).sum::<i64>())
        .max()
        .unwrap_or(0)
        .max(1);
    let (w, h, left, bottom) = (600.0_f64, 150.0_f64, 34.0, 18.0);
    let plot_h = h - bottom - 8.0;
    let slot = (w - left) / hours as f64;
    let mut out = String::new();
    let total: i64 = per_hour.iter().flatten().map(|(_, n)| n).sum();
    let _ = write!(
        out,
        "<svg class=\"health\" viewBox=\"0 0 {w} {}\" width=\"{w}\" height=\"{}\" role=\"img\" \
         aria-label=\"reports per hour, last {hours} hours: {total} reports\">",
        h + 22.0,
        h + 22.0
    );
    // Axis: 0 and the top count.
    let _ = write!(
        out,
        "<line x1=\"{left}\" x2=\"{w}\" y1=\"{y0}\" y2=\"{y0}\" stroke=\"#8c959f\"/>\
         <text x=\"{}\" y=\"{y0}\" font-size=\"11\" text-anchor=\"end\">0</text>\
         <text x=\"{}\" y=\"16\" font-size=\"11\" text-anchor=\"end\">{top}</text>\
         <line x1=\"{left}\" x2=\"{w}\" y1=\"8\" y2=\"8\" stroke=\"#e3e6eb\"/>",
        left - 4.0,
        left - 4.0,
        y0 = h - bottom
    );
    for (i, stack) in per_hour.iter().enumerate() {
        let x = left + slot * i as f64 + 1.0;
        let mut y = h - bottom;
        for e in &events {
            let Some((_, n)) = stack.iter().find(|(k, _)| k == e) else {
                continue;
            };
            let bh = plot_h * *n as f64 / top as f64;
            y -= bh;
            let hour = first + 3600 * i as i64;
            let _ = write!(
                out,
                "<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"{bh:.1}\" \
                 fill=\"{}\"><title>{} {n} × {}</title></rect>",
                slot - 2.0,
                event_colour(e),
                &super::html::utc(hour)[..16],
                esc(e)
            );
        }
        if i % 6 == 0 || i == hours - 1 {
            let hour = first + 3600 * i as i64;
            let label = &super::html::utc(hour)[11..16];
            let anchor = if i == hours - 1 { "end" } else { "middle" };
            let _ = write!(
                out,
                "<text x=\"{:.1}\" y=\"{}\" font-size=\"11\" text-anchor=\"{anchor}\">{label}</text>",
                if i == hours - 1 { w } else { x + slot / 2.0 },
                h - 4.0
            );
        }
    }
    let mut lx = left;
    if events.is_empty() {
        let _ = write!(
            out,
            "<text x=\"{lx}\" y=\"{}\" font-size=\"12\" fill=\"#57606a\">no reports in the \
             last {hours} hours</text>",
            h + 16.0
        );
    }
    for e in &events {
        let _ = write!(
            out,
            "<rect x=\"{lx}\" y=\"{}\" width=\"10\" height=\"10\" fill=\"{}\"/>\
             <text x=\"{}\" y=\"{}\" font-size=\"12\">{}</text>",
            h + 6.0,
            event_colour(e),
            lx + 14.0,
            h + 15.0,
            esc(e)
        );
        lx += 24.0 + 7.0 * e.len() as f64;
    }
    out.push_str("</svg>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::rollout::RolloutSummary;

    #[test]
    fn health_stacks_this_hour_and_escapes_event_names() {
        let now = 1_796_096_781;
        let hour = now / 3600 * 3600;
        let counts = vec![
            HourCount {
                hour,
                event: "boot".into(),
                count: 5,
            },
            HourCount {
                hour,
                event: "<x>".into(),
                count: 1,
            },
            // Older than the chart: left out.
            HourCount {
                hour: hour - 30 * 3600,
                event: "boot".into(),
                count: 9,
            },
        ];
        let svg = health(&counts, now);
        assert!(svg.contains("last 24 hours: 6 reports"), "{svg}");
        assert!(svg.contains("5 × boot"), "{svg}");
        assert!(svg.contains("&lt;x&gt;") && !svg.contains("<x>"), "{svg}");
        assert!(health(&[], now).contains("no reports"));
    }

    #[test]
    fn progress_shows_each_share_of_the_group() {
        let d = RolloutDetail {
            rollout: RolloutSummary {
                id: 3,
                group: "g".into(),
                to: serde_json::json!({"m": "2"}),
                steps: vec![25, 100],
                step: 1,
                max_failures: "0".into(),
                healthy_after: 600,
                deadline: 86400,
                state: "paused".into(),
                reason: None,
                created_at: 0,
                updated_at: 0,
            },
            boards: 4,
            moved: 2,
            healthy: 1,
            waiting: 0,
            failed: 1,
            untouched: 2,
            devices: vec![],
        };
        let svg = rollout_progress(&d);
        // A quarter of 600 for each board moved, half for the two not moved.
        assert!(
            svg.contains("width=\"150.0\" height=\"22\" fill=\"#2da44e\""),
            "{svg}"
        );
        assert!(
            svg.contains("x=\"150.0\" y=\"22\" width=\"150.0\""),
            "{svg}"
        );
        assert!(svg.contains("width=\"300.0\""), "{svg}");
        assert!(svg.contains(">step 1 25%</text>"), "{svg}");
        assert!(
            svg.contains("1 healthy, 0 waiting, 1 failed, 2 not moved"),
            "{svg}"
        );
    }
}
