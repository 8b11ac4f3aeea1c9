//! The file format of `mpfleet device import` and `device export`: many devices at once.
//!
//! Two formats, told apart by content (never by the file's name, so stdin works the same):
//! when the first non-blank line starts with `{`, every line is a JSON object
//! `{"mac": "...", "app": "...", "modules": {"sensorclass": "2"}}` ("modules" may be left
//! out); otherwise the first line must be the CSV header `mac,app,modules`, and every line
//! after it `MAC,APP,MODULE=VERSION MODULE=VERSION...` (the modules field may be empty).
//! Blank lines are skipped in both. Export writes the JSON form, so `export | import`
//! round-trips.
//!
//! Parsing checks each line on its own (its MAC, names, versions and pairs) and that no MAC
//! comes twice; whether the modules and versions exist is the catalog's question, asked by
//! the command before anything is written. Every error names its line (1-based, as an
//! editor counts).

use crate::manifest::{Desired, Want};
use crate::names::{Mac, ModuleName};
use anyhow::{bail, Context, Result};
use serde::Deserialize;
use serde_json::{Map, Value};
use std::collections::HashMap;

/// The CSV header, the only one accepted.
pub const CSV_HEADER: &str = "mac,app,modules";

/// One device of an import file, and the line it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub line: usize,
    pub mac: Mac,
    pub desired: Desired,
}

/// One JSON line, as written (unknown keys are refused, so a typo is not silently dropped).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonLine {
    mac: String,
    app: String,
    #[serde(default)]
    modules: Map<String, Value>,
}

/// Parses a whole import file; an error names the first line that is wrong.
pub fn parse(text: &str) -> Result<Vec<Entry>> {
    let mut lines = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim()))
        .filter(|(_, l)| !l.is_empty());
    let Some((first_no, first)) = lines.next() else {
        return Ok(Vec::new());
    };
    let json = first.starts_with('{');
    let mut entries = Vec::new();
    let mut seen: HashMap<Mac, usize> = HashMap::new();
    let rest: Box<dyn Iterator<Item = (usize, &str)>> = if json {
        Box::new(std::iter::once((first_no, first)).chain(lines))
    } else {
        let header: String = first
            .split(',')
            .map(|f| unquote(f.trim()).to_ascii_lowercase())
            .collect::<Vec<_>>()
            .join(",");
        if header != CSV_HEADER {
            bail!(
                "line {first_no}: expected the CSV header `{CSV_HEADER}` or a JSON object \
                 (one device per line), found {first:?}"
            );
        }
        Box::new(lines)
    };
    for (no, line) in rest {
        let (mac, desired) = if json {
            json_line(line)
        } else {
            csv_line(line)
        }
        .with_context(|| format!("line {no}"))?;
        if let Some(earlier) = seen.insert(mac.clone(), no) {
            bail!("line {no}: device {mac} is already on line {earlier}");
        }
        entries.push(Entry {
            line: no,
            mac,
            desired,
        });
    }
    Ok(entries)
}

fn unquote(s: &str) -> &str {
    s.strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .unwrap_or(s)
}

fn csv_line(line: &str) -> Result<(Mac, Desired)> {
    let fields: Vec<&str> = line.split(',').map(|f| unquote(f.trim())).collect();
    let [mac, app, modules] = match fields[..] {
        [mac, app] => [mac, app, ""],
        [mac, app, modules] => [mac, app, modules],
        _ => bail!(
            "{} fields, expected 3 (`{CSV_HEADER}`; separate modules with spaces, not commas)",
            fields.len()
        ),
    };
    let pairs = modules
        .split_whitespace()
        .map(|p| {
            let (m, v) = p
                .split_once('=')
                .with_context(|| format!("{p:?} is not MODULE=VERSION"))?;
            pair(m, v)
        })
        .collect::<Result<Vec<_>>>()?;
    device(mac, app, pairs)
}

fn json_line(line: &str) -> Result<(Mac, Desired)> {
    let j: JsonLine = serde_json::from_str(line).context(
        "not a JSON object {\"mac\": ..., \"app\": ..., \"modules\": {MODULE: VERSION}}",
    )?;
    let pairs = j
        .modules
        .iter()
        .map(|(m, v)| {
            let v = v
                .as_str()
                .with_context(|| format!("the version of {m} is not a string"))?;
            pair(m, v)
        })
        .collect::<Result<Vec<_>>>()?;
    device(&j.mac, &j.app, pairs)
}

fn pair(module: &str, version: &str) -> Result<(ModuleName, Want)> {
    Ok((
        ModuleName::parse(module).map_err(anyhow::Error::msg)?,
        Want::parse(version).map_err(anyhow::Error::msg)?,
    ))
}

fn device(mac: &str, app: &str, pairs: Vec<(ModuleName, Want)>) -> Result<(Mac, Desired)> {
    let mac = Mac::parse(mac).map_err(anyhow::Error::msg)?;
    let app = ModuleName::parse(app).map_err(anyhow::Error::msg)?;
    Ok((mac, Desired::new(app, pairs)?))
}

/// One line of `device export`: what `parse` reads back into the same manifest.
pub fn export_line(mac: &Mac, desired: &Desired) -> String {
    let modules: Map<String, Value> = desired
        .modules
        .iter()
        .map(|(n, w)| (n.to_string(), Value::String(w.as_str().to_owned())))
        .collect();
    serde_json::json!({"mac": mac.as_str(), "app": desired.app.as_str(), "modules": modules})
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_and_json_give_the_same_devices() {
        let csv = parse("mac,app,modules\r\nDE:AD:BE:EF:12:34,blink,sensorclass=2 x=latest\n\naabbccddeeff,blink,\n").unwrap();
        let json = parse(
            "{\"mac\":\"deadbeef1234\",\"app\":\"blink\",\"modules\":{\"sensorclass\":\"2\",\"x\":\"latest\"}}\n\
             {\"mac\":\"aabbccddeeff\",\"app\":\"blink\"}\n",
        )
        .unwrap();
        assert_eq!(csv.len(), 2);
        assert_eq!(csv[0].desired, json[0].desired);
        assert_eq!(csv[1].desired, json[1].desired);
        assert_eq!((csv[0].line, csv[1].line), (2, 4));
        let line = export_line(&csv[0].mac, &csv[0].desired);
        assert_eq!(parse(&line).unwrap()[0].desired, csv[0].desired);
    }

    #[test]
    fn errors_name_their_line() {
        for (text, want) in [
            (
                "mac,app,modules\ndeadbeef1234,blink,\nnope,blink,\n",
                "line 3",
            ),
            ("mac,app\n", "line 1: expected the CSV header"),
            ("mac,app,modules\ndeadbeef1234,blink,a=1,b=2\n", "line 2"),
            (
                "mac,app,modules\ndeadbeef1234,blink,\nDE:AD:BE:EF:12:34,blink,\n",
                "line 3: device deadbeef1234 is already on line 2",
            ),
            (
                "{\"mac\":\"deadbeef1234\",\"app\":\"b\"}\n{\"mac\":1}\n",
                "line 2",
            ),
            (
                "{\"mac\":\"deadbeef1234\",\"app\":\"b\",\"modulez\":{}}\n",
                "line 1",
            ),
        ] {
            let e = format!("{:#}", parse(text).unwrap_err());
            assert!(e.contains(want), "{text:?}: {e}");
        }
    }
}
