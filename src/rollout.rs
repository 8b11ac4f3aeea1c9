//! The rollout state machine, pure: which boards a step moves, how each moved board is doing
//! from what it reported, and whether a rollout waits, advances, completes or pauses.
//! `store::rollouts` feeds it rows and a clock and writes what it decides; `serve` runs that
//! on a timer and whenever reports arrive.

use anyhow::{bail, Context, Result};
use serde_json::Value;
use std::fmt;

/// The steps of a rollout: percentages of the group, increasing, the last 100.
pub fn parse_steps(s: &str) -> Result<Vec<u32>> {
    let steps = s
        .split(',')
        .map(|p| {
            let p = p.trim();
            let n = p.strip_suffix('%').unwrap_or(p);
            n.parse::<u32>()
                .ok()
                .filter(|n| (1..=100).contains(n))
                .with_context(|| format!("invalid step {p:?}: a percentage from 1% to 100%"))
        })
        .collect::<Result<Vec<_>>>()?;
    if steps.windows(2).any(|w| w[0] >= w[1]) {
        bail!("steps {s:?} must grow (such as 5%,25%,100%)");
    }
    if steps.last() != Some(&100) {
        bail!("steps {s:?}: the last step must be 100%");
    }
    Ok(steps)
}

/// How many failed boards a rollout tolerates: a number, or a percentage of the group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Threshold {
    Count(u32),
    Percent(u32),
}

impl Threshold {
    pub fn parse(s: &str) -> Result<Self> {
        let t = s.trim();
        let bad = || format!("invalid --max-failures {s:?}: a number (2) or a percentage (10%)");
        match t.strip_suffix('%') {
            Some(p) => {
                let p: u32 = p.parse().ok().filter(|p| *p <= 100).with_context(bad)?;
                Ok(Self::Percent(p))
            }
            None => Ok(Self::Count(t.parse().ok().with_context(bad)?)),
        }
    }

    /// The failures tolerated in a group of `size` boards (a percentage rounds down).
    pub fn allowed(&self, size: usize) -> usize {
        match *self {
            Self::Count(n) => n as usize,
            Self::Percent(p) => size * p as usize / 100,
        }
    }
}

impl fmt::Display for Threshold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Count(n) => write!(f, "{n}"),
            Self::Percent(p) => write!(f, "{p}%"),
        }
    }
}

/// How many of a group's `size` boards a step of `percent` covers: at least one.
pub fn step_target(percent: u32, size: usize) -> usize {
    if size == 0 {
        return 0;
    }
    (size * percent as usize).div_ceil(100).clamp(1, size)
}

/// The order in which a rollout takes a group's boards: by a hash of the MAC, so the subset
/// is stable (the same boards go first however often it is computed) and not the boards with
/// the lowest addresses, which often came in one box.
pub fn order_key(mac: &str) -> String {
    crate::store::sha256_hex(format!("mpfleet rollout {mac}").as_bytes())
}

/// One report of a moved board, after it was moved: `at` in seconds.
#[derive(Debug, Clone)]
pub struct Seen {
    pub at: i64,
    pub event: String,
    pub generation: Option<i64>,
}

impl Seen {
    pub fn from_report(at: i64, body: &Value) -> Self {
        Self {
            at,
            event: body["event"].as_str().unwrap_or("").to_owned(),
            generation: body["generation"].as_i64(),
        }
    }
}

/// A board a rollout has moved.
#[derive(Debug, Clone)]
pub struct Moved {
    /// When it was moved (seconds).
    pub at: i64,
    /// The generation it was given; None if moving it changed nothing it runs (its own pins
    /// hold every module the rollout moves).
    pub generation: Option<i64>,
    /// A failure forgiven by `rollout resume`: it counts neither way.
    pub forgiven: bool,
    /// What it reported since, oldest first.
    pub reports: Vec<Seen>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// Waiting for it to report `updated`, or to stay healthy long enough after.
    Waiting,
    /// Updated and healthy for the rollout's `healthy_after` (or nothing to install).
    Healthy,
    /// `update_failed`, `rolled_back`, or silence past the deadline.
    Failed(String),
    /// Failed before a `resume`, which forgave it.
    Forgiven,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Waiting => f.write_str("waiting"),
            Self::Healthy => f.write_str("healthy"),
            Self::Failed(why) => write!(f, "failed: {why}"),
            Self::Forgiven => f.write_str("failed, forgiven"),
        }
    }
}

/// How a moved board is doing at `now` (seconds): healthy once it has reported `updated` for
/// its generation (or a later one) at least `healthy_after` seconds ago with no failure since;
/// failed at the first `update_failed` or `rolled_back` after it was moved, or when it has
/// not reported `updated` within `deadline` seconds of being moved.
pub fn status(m: &Moved, now: i64, healthy_after: i64, deadline: i64) -> Status {
    if m.forgiven {
        return Status::Forgiven;
    }
    let Some(target) = m.generation else {
        return Status::Healthy;
    };
    let mut updated_at = None;
    for r in &m.reports {
        match r.event.as_str() {
            "update_failed" | "rolled_back" => return Status::Failed(r.event.clone()),
            "updated" if r.generation.is_some_and(|g| g >= target) => {
                updated_at.get_or_insert(r.at);
            }
            _ => {}
        }
    }
    match updated_at {
        Some(t) if now - t >= healthy_after => Status::Healthy,
        Some(_) => Status::Waiting,
        None if now - m.at > deadline => Status::Failed(format!(
            "no `updated` report within {}",
            crate::duration::show(std::time::Duration::from_secs(deadline as u64))
        )),
        None => Status::Waiting,
    }
}

/// What a running rollout does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Move `n` more boards into the current step (it needs them: the step's share of the
    /// group, or boards that joined the group since).
    Move(usize),
    /// Too many failures: stop, saying why.
    Pause(String),
    /// Every board of the step is healthy (or a tolerated failure): on to the next step.
    Advance,
    /// The last step is done: the group takes the rollout's versions.
    Complete,
    Wait,
}

/// Decides for a running rollout at step `step` of `steps`, in a group of `size` boards, of
/// which the ones moved so far are `moved` (MAC and status).
pub fn decide(
    steps: &[u32],
    step: usize,
    threshold: Threshold,
    size: usize,
    moved: &[(String, Status)],
) -> Decision {
    let failed: Vec<String> = moved
        .iter()
        .filter_map(|(mac, s)| match s {
            Status::Failed(why) => Some(format!("{mac} {why}")),
            _ => None,
        })
        .collect();
    let allowed = threshold.allowed(size);
    if failed.len() > allowed {
        return Decision::Pause(format!(
            "{} failed, more than the {allowed} tolerated (--max-failures {threshold}): {}",
            failed.len(),
            failed.join(", ")
        ));
    }
    let target = step_target(steps[step], size);
    if moved.len() < target {
        return Decision::Move(target - moved.len());
    }
    if moved.iter().any(|(_, s)| *s == Status::Waiting) {
        return Decision::Wait;
    }
    if step + 1 >= steps.len() {
        Decision::Complete
    } else {
        Decision::Advance
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(at: i64, event: &str, generation: i64) -> Seen {
        Seen {
            at,
            event: event.into(),
            generation: Some(generation),
        }
    }

    fn moved(reports: Vec<Seen>) -> Moved {
        Moved {
            at: 100,
            generation: Some(7),
            forgiven: false,
            reports,
        }
    }

    #[test]
    fn steps_and_thresholds() {
        assert_eq!(parse_steps("5%,25%,100%").unwrap(), [5, 25, 100]);
        assert_eq!(parse_steps("100").unwrap(), [100]);
        for bad in [
            "",
            "5%,25%",
            "50%,25%,100%",
            "0%,100%",
            "5%,5%,100%",
            "x,100%",
            "150%",
        ] {
            assert!(parse_steps(bad).is_err(), "{bad}");
        }
        assert_eq!(Threshold::parse("2").unwrap().allowed(40), 2);
        assert_eq!(Threshold::parse("10%").unwrap().allowed(40), 4);
        assert_eq!(Threshold::parse("10%").unwrap().allowed(9), 0);
        for bad in ["", "-1", "101%", "x%"] {
            assert!(Threshold::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(step_target(5, 4), 1);
        assert_eq!(step_target(25, 4), 1);
        assert_eq!(step_target(50, 4), 2);
        assert_eq!(step_target(26, 4), 2);
        assert_eq!(step_target(100, 4), 4);
        assert_eq!(step_target(5, 0), 0);
    }

    #[test]
    fn a_board_is_healthy_only_after_updated_and_quiet() {
        let (healthy_after, deadline) = (10, 60);
        let st = |m: &Moved, now| status(m, now, healthy_after, deadline);
        assert_eq!(st(&moved(vec![]), 120), Status::Waiting);
        assert!(matches!(st(&moved(vec![]), 161), Status::Failed(w) if w.contains("1m")));
        // An `updated` for an older generation is not this one.
        assert_eq!(
            st(&moved(vec![seen(105, "updated", 6)]), 200),
            Status::Failed("no `updated` report within 1m".into())
        );
        let ok = moved(vec![seen(105, "boot", 7), seen(110, "updated", 7)]);
        assert_eq!(st(&ok, 115), Status::Waiting);
        assert_eq!(st(&ok, 120), Status::Healthy);
        let rolled = moved(vec![seen(110, "updated", 7), seen(112, "rolled_back", 6)]);
        assert_eq!(st(&rolled, 500), Status::Failed("rolled_back".into()));
        let nothing = Moved {
            generation: None,
            ..moved(vec![])
        };
        assert_eq!(st(&nothing, 100), Status::Healthy);
        let forgiven = Moved {
            forgiven: true,
            ..rolled
        };
        assert_eq!(st(&forgiven, 500), Status::Forgiven);
    }

    #[test]
    fn decisions() {
        let steps = [25, 50, 100];
        let t0 = Threshold::Count(0);
        let h = |m: &str| (m.to_owned(), Status::Healthy);
        let w = |m: &str| (m.to_owned(), Status::Waiting);
        let f = |m: &str| (m.to_owned(), Status::Failed("rolled_back".into()));
        assert_eq!(decide(&steps, 0, t0, 4, &[]), Decision::Move(1));
        assert_eq!(decide(&steps, 0, t0, 4, &[w("a")]), Decision::Wait);
        assert_eq!(decide(&steps, 0, t0, 4, &[h("a")]), Decision::Advance);
        assert_eq!(decide(&steps, 1, t0, 4, &[h("a")]), Decision::Move(1));
        assert_eq!(
            decide(&steps, 2, t0, 4, &[h("a"), h("b"), h("c"), h("d")]),
            Decision::Complete
        );
        // A board that joined the group during the last step is moved too.
        assert_eq!(
            decide(&steps, 2, t0, 5, &[h("a"), h("b"), h("c"), h("d")]),
            Decision::Move(1)
        );
        match decide(&steps, 0, t0, 4, &[f("a")]) {
            Decision::Pause(why) => assert!(why.contains("a rolled_back"), "{why}"),
            d => panic!("{d:?}"),
        }
        // A tolerated failure does not hold the step.
        assert_eq!(
            decide(&steps, 1, Threshold::Count(1), 4, &[h("a"), f("b")]),
            Decision::Advance
        );
        let forgiven = ("b".to_owned(), Status::Forgiven);
        assert_eq!(
            decide(&steps, 1, t0, 4, &[h("a"), forgiven]),
            Decision::Advance
        );
    }
}
