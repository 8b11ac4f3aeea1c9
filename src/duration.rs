//! Durations as a user types them (`2s`, `500ms`, `10m`, `1h`, `1d`): rollout options and the
//! test knobs of `serve` share one parser and one way to print them.

use anyhow::{bail, Result};
use std::time::Duration;

/// Parses `N` followed by `ms`, `s`, `m`, `h` or `d` (a bare number is seconds).
pub fn parse(s: &str) -> Result<Duration> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (n, unit) = t.split_at(split);
    let Ok(n) = n.parse::<u64>() else {
        bail!("invalid duration {s:?}: expected a number and a unit, such as 30s, 10m, 2h or 1d");
    };
    let ms = match unit {
        "ms" => 1,
        "" | "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => bail!("invalid duration {s:?}: the unit is one of ms, s, m, h, d"),
    };
    match n.checked_mul(ms) {
        Some(ms) if ms <= 366 * 86_400_000 => Ok(Duration::from_millis(ms)),
        _ => bail!("invalid duration {s:?}: at most a year"),
    }
}

/// The shortest exact form: `90s` is `90s`, `120s` is `2m`.
pub fn show(d: Duration) -> String {
    let ms = d.as_millis() as u64;
    for (unit, size) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1000),
    ] {
        if ms >= size && ms.is_multiple_of(size) {
            return format!("{}{unit}", ms / size);
        }
    }
    format!("{ms}ms")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        for (text, ms) in [
            ("2s", 2000),
            ("500ms", 500),
            ("10m", 600_000),
            ("1h", 3_600_000),
            ("1d", 86_400_000),
            ("7", 7000),
        ] {
            assert_eq!(parse(text).unwrap(), Duration::from_millis(ms), "{text}");
            assert_eq!(
                parse(&show(parse(text).unwrap())).unwrap(),
                parse(text).unwrap()
            );
        }
        assert_eq!(show(Duration::from_secs(120)), "2m");
        for bad in [
            "",
            "s",
            "-1s",
            "1x",
            "1.5s",
            "99999999999999999999d",
            "400d",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
