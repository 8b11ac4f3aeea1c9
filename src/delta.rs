//! Deltas: a new version of a module file as copies from the version a board already has,
//! plus the bytes that are new. A one-line change to a 20 KB module is a few dozen bytes
//! instead of 20 KB (or 7 KB gzipped).
//!
//! A board that has `m/{module}/{file}` of version A on its flash, and whose new manifest
//! lists A's file in B's `from` (`crate::snapshot` makes the deltas and the lists), asks for
//! `m/{module}/{B}.py.from-{sha12}` (or `.mpy`), `sha12` the first 12 hex digits of the SHA-256
//! of its A file (it is in the file's name on flash). It applies the delta as a stream into
//! `/ota/tmp/`, reading ranges of its A file, and checks the result against B's size and
//! SHA-256 like any download; on any failure (a truncated or corrupt delta, a base file that
//! is not what its name says) the installer fetches the whole file instead.
//! `docs/protocol.md` has the format; `device/updater_delta.py` applies it.
//!
//! The format, chosen to be applied with a 128-byte buffer and no other state:
//!
//! ```text
//! MPD1                      magic
//! then operations to the end of the body:
//!   C off:u32le len:u32le   copy len bytes of the base, from offset off
//!   I len:u32le bytes       insert the len bytes that follow
//! ```

/// The first bytes of every delta.
pub const MAGIC: &[u8; 4] = b"MPD1";

/// The suffix of a delta's path, after the path of the file it makes: `.from-{sha12}`.
pub const FROM: &str = ".from-";

/// Matches shorter than this are inserted rather than copied (a copy costs 9 bytes).
const MIN_COPY: usize = 16;

/// The delta that turns `base` into `target`. Greedy: at each position of the target, the
/// longest run found in the base through an index of its 16-byte windows, extended forwards
/// and backwards; what is not found is inserted.
pub fn make(base: &[u8], target: &[u8]) -> Vec<u8> {
    let mut index: std::collections::HashMap<&[u8], u32> =
        std::collections::HashMap::with_capacity(base.len() / 4 + 1);
    // Every window, the first occurrence kept: plenty for the few KB to 100 KB of a module.
    for i in (0..base.len().saturating_sub(MIN_COPY - 1)).rev() {
        index.insert(&base[i..i + MIN_COPY], i as u32);
    }
    let mut out = MAGIC.to_vec();
    let mut pending = 0..0; // target bytes not yet emitted
    let mut j = 0;
    while j + MIN_COPY <= target.len() {
        let Some(&at) = index.get(&target[j..j + MIN_COPY]) else {
            j += 1;
            pending.end = j;
            continue;
        };
        let (mut from, mut to) = (at as usize, j);
        // Backwards into what was about to be inserted.
        while to > pending.start && from > 0 && base[from - 1] == target[to - 1] {
            from -= 1;
            to -= 1;
        }
        let mut len = j - to;
        while from + len < base.len()
            && to + len < target.len()
            && base[from + len] == target[to + len]
        {
            len += 1;
        }
        insert(&mut out, &target[pending.start..to]);
        copy(&mut out, from, len);
        j = to + len;
        pending = j..j;
    }
    insert(&mut out, &target[pending.start..]);
    out
}

fn insert(out: &mut Vec<u8>, bytes: &[u8]) {
    if !bytes.is_empty() {
        out.push(b'I');
        out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        out.extend_from_slice(bytes);
    }
}

fn copy(out: &mut Vec<u8>, from: usize, len: usize) {
    out.push(b'C');
    out.extend_from_slice(&(from as u32).to_le_bytes());
    out.extend_from_slice(&(len as u32).to_le_bytes());
}

/// Applies `delta` to `base`, as a board does; an error for anything that is not a delta of
/// this format or reaches outside the base.
pub fn apply(base: &[u8], delta: &[u8]) -> Result<Vec<u8>, String> {
    let mut rest = delta
        .strip_prefix(MAGIC.as_slice())
        .ok_or("not a delta (no MPD1)")?;
    let mut out = Vec::new();
    let u32_at = |rest: &mut &[u8]| -> Result<usize, String> {
        let (n, tail) = rest.split_first_chunk::<4>().ok_or("cut short")?;
        *rest = tail;
        Ok(u32::from_le_bytes(*n) as usize)
    };
    while let Some((&op, tail)) = rest.split_first() {
        rest = tail;
        match op {
            b'C' => {
                let (from, len) = (u32_at(&mut rest)?, u32_at(&mut rest)?);
                let range = base
                    .get(from..from.saturating_add(len))
                    .ok_or("copy past the base")?;
                out.extend_from_slice(range);
            }
            b'I' => {
                let len = u32_at(&mut rest)?;
                let bytes = rest.get(..len).ok_or("cut short")?;
                out.extend_from_slice(bytes);
                rest = &rest[len..];
            }
            _ => return Err(format!("unknown operation {op:#04x}")),
        }
    }
    Ok(out)
}

/// The path of the delta that makes `target_path` (`m/{module}/{version}.py` or `.mpy`) from
/// the base whose SHA-256 is `base_sha256`.
pub fn path(target_path: &str, base_sha256: &str) -> String {
    format!("{target_path}{FROM}{}", &base_sha256[..12])
}

/// `m/{module}/{file}.from-{sha12}` as (module, target path, sha12), or None: what a path of
/// a delta names.
pub fn parse(path: &str) -> Option<(&str, &str, &str)> {
    let (target, sha12) = path.rsplit_once(FROM)?;
    let module = target.strip_prefix("m/")?.split_once('/')?.0;
    let ok = sha12.len() == 12
        && sha12
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    (ok && (target.ends_with(".py") || target.ends_with(".mpy"))).then_some((module, target, sha12))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A module of about 20 KB of ordinary Python.
    fn module() -> Vec<u8> {
        let mut s = String::new();
        for i in 0..400 {
            s.push_str(&format!(
                "def reading_{i}(sensor):\n    return sensor.read({i}) * {} + OFFSET\n\n",
                i * 7 % 13
            ));
        }
        s.into_bytes()
    }

    #[test]
    fn a_one_line_change_to_a_20k_module_is_a_few_dozen_bytes() {
        let a = module();
        let text = String::from_utf8(a.clone()).unwrap();
        let line = format!("sensor.read(200) * {}", 200 * 7 % 13);
        let b = text.replace(&line, "sensor.read(200) * 100").into_bytes();
        assert!(a != b, "the line is there to change");
        let d = make(&a, &b);
        assert_eq!(apply(&a, &d).unwrap(), b);
        assert!(
            d.len() * 100 < b.len() * 2,
            "{} bytes of delta for {} bytes",
            d.len(),
            b.len()
        );
    }

    #[test]
    fn any_edit_round_trips() {
        // Inserts, deletes, moves and replacements at many places, and unrelated files.
        let a = module();
        let mut seed = 0x2545_f491_u64;
        let mut next = move |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n as u64) as usize
        };
        for round in 0..200 {
            let mut b = a.clone();
            for _ in 0..=round % 7 {
                let at = next(b.len());
                match next(4) {
                    0 => b.insert(at, next(256) as u8),
                    1 => {
                        let end = (at + next(300)).min(b.len());
                        b.drain(at..end);
                    }
                    2 => {
                        let from = next(a.len());
                        let end = (from + next(500)).min(a.len());
                        b.splice(at..at, a[from..end].iter().copied());
                    }
                    _ => b[at] ^= 0x20,
                }
            }
            assert_eq!(apply(&a, &make(&a, &b)).unwrap(), b, "round {round}");
        }
        for (x, y) in [
            (&b""[..], &b"new"[..]),
            (b"old", b""),
            (b"", b""),
            (b"abc", b"xyz"),
        ] {
            assert_eq!(apply(x, &make(x, y)).unwrap(), y);
        }
    }

    #[test]
    fn what_is_not_a_delta_is_refused() {
        let a = module();
        let d = make(&a, &a);
        assert_eq!(apply(&a, &d).unwrap(), a);
        assert!(apply(&a, b"<html>").is_err());
        assert!(apply(&a, &d[..d.len() - 3]).is_err(), "cut short");
        assert!(apply(&a[..100], &d).is_err(), "copy past the base");
        assert!(apply(&a, b"MPD1X").is_err());
    }

    #[test]
    fn paths() {
        let sha = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
        let p = path("m/sensorclass/2.mpy", sha);
        assert_eq!(p, "m/sensorclass/2.mpy.from-9f86d081884c");
        assert_eq!(
            parse(&p),
            Some(("sensorclass", "m/sensorclass/2.mpy", "9f86d081884c"))
        );
        for bad in [
            "m/sensorclass/2.py.from-9F86D081884C",
            "m/sensorclass/2.py.from-9f86d08188",
            "m/sensorclass/2.txt.from-9f86d081884c",
            "v1/x.json.from-9f86d081884c",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }
}
