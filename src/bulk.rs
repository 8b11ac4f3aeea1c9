//! The file format of `mpfleet device import` and `device export`: many devices at once.
//!
//! Two formats, told apart by content (never by the file's name, so stdin works the same):
//! when the first non-blank line starts with `{`, every line is a JSON object
//! `{"mac": "...", "app": "...", "modules": {"sensorclass": "2"}}` ("modules" may be left
//! out); otherwise the first line must be the CSV header `mac,app,modules`, and every line
//! after it `MAC,APP,MODULE=VERSION MODULE=VERSION...` (the modules field may be empty).
//! A device in a group: a `"group"` key, or a fourth CSV column (header
//! `mac,app,modules,group`); its app may then be left empty (the group's) and its modules
//! are its own pins over the group's. Blank lines are skipped in both. Export writes the JSON
//! form, so `export | import` round-trips.
//!
//! Parsing checks each line on its own (its MAC, names, versions and pairs) and that no MAC
//! comes twice; whether the modules and versions exist is the catalog's question, asked by
//! the command before anything is written. Every error names its line (1-based, as an
//! editor counts).

use crate::manifest::{Desired, Pins, Want};
use crate::names::{GroupName, Mac, ModuleName};
use crate::store::Assignment;
use anyhow::{bail, Context, Result};
use serde::Deserialize;
use serde_json::{Map, Value};
use std::collections::HashMap;

/// The CSV header, without and with the group column.
pub const CSV_HEADER: &str = "mac,app,modules";
pub const CSV_HEADER_GROUP: &str = "mac,app,modules,group";

/// One device of an import file, and the line it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub line: usize,
    pub mac: Mac,
    pub assignment: Assignment,
}

/// One JSON line, as written (unknown keys are refused, so a typo is not silently dropped).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonLine {
    mac: String,
    #[serde(default)]
    app: String,
    #[serde(default)]
    modules: Map<String, Value>,
    #[serde(default)]
    group: Option<String>,
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
    // CSV: the fields a line may have (the header says whether there is a group column).
    let mut columns = 3;
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
        columns = if header == CSV_HEADER_GROUP { 4 } else { 3 };
        if header != CSV_HEADER && header != CSV_HEADER_GROUP {
            bail!(
                "line {first_no}: expected the CSV header `{CSV_HEADER}` (or \
                 `{CSV_HEADER_GROUP}`) or a JSON object (one device per line), found {first:?}"
            );
        }
        Box::new(lines)
    };
    for (no, line) in rest {
        let (mac, assignment) = if json {
            json_line(line)
        } else {
            csv_line(line, columns)
        }
        .with_context(|| format!("line {no}"))?;
        if let Some(earlier) = seen.insert(mac.clone(), no) {
            bail!("line {no}: device {mac} is already on line {earlier}");
        }
        entries.push(Entry {
            line: no,
            mac,
            assignment,
        });
    }
    Ok(entries)
}

fn unquote(s: &str) -> &str {
    s.strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .unwrap_or(s)
}

fn csv_line(line: &str, columns: usize) -> Result<(Mac, Assignment)> {
    let fields: Vec<&str> = line.split(',').map(|f| unquote(f.trim())).collect();
    let [mac, app, modules, group] =
        match fields[..] {
            [mac, app] => [mac, app, "", ""],
            [mac, app, modules] => [mac, app, modules, ""],
            [mac, app, modules, group] if columns == 4 => [mac, app, modules, group],
            _ => {
                bail!(
            "{} fields, expected {columns} (`{}`; separate modules with spaces, not commas)",
            fields.len(),
            if columns == 4 { CSV_HEADER_GROUP } else { CSV_HEADER }
        )
            }
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
    device(mac, app, pairs, group)
}

fn json_line(line: &str) -> Result<(Mac, Assignment)> {
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
    device(&j.mac, &j.app, pairs, j.group.as_deref().unwrap_or(""))
}

fn pair(module: &str, version: &str) -> Result<(ModuleName, Want)> {
    Ok((
        ModuleName::parse(module).map_err(anyhow::Error::msg)?,
        Want::parse(version).map_err(anyhow::Error::msg)?,
    ))
}

/// A device's line: its own manifest (an app needed), or a group's with its own pins over
/// it (when `group` is not empty; the app may then be empty).
fn device(
    mac: &str,
    app: &str,
    pairs: Vec<(ModuleName, Want)>,
    group: &str,
) -> Result<(Mac, Assignment)> {
    let mac = Mac::parse(mac).map_err(anyhow::Error::msg)?;
    if group.is_empty() {
        if app.is_empty() {
            bail!("no app and no group: a device needs one or the other");
        }
        let app = ModuleName::parse(app).map_err(anyhow::Error::msg)?;
        return Ok((mac, Assignment::Own(Desired::new(app, pairs)?)));
    }
    let group = GroupName::parse(group).map_err(anyhow::Error::msg)?;
    let app = if app.is_empty() {
        None
    } else {
        Some(ModuleName::parse(app).map_err(anyhow::Error::msg)?)
    };
    let pins = Pins::new(app, pairs)?;
    Ok((mac, Assignment::Group { group, pins }))
}

/// One line of `device export`: what `parse` reads back into the same assignment.
pub fn export_line(mac: &Mac, assignment: &Assignment) -> String {
    let modules = |m: &[(ModuleName, Want)]| -> Map<String, Value> {
        m.iter()
            .map(|(n, w)| (n.to_string(), Value::String(w.as_str().to_owned())))
            .collect()
    };
    match assignment {
        Assignment::Own(desired) => serde_json::json!({
            "mac": mac.as_str(), "app": desired.app.as_str(), "modules": modules(&desired.modules)
        }),
        Assignment::Group { group, pins } => {
            let mut v = serde_json::json!({"mac": mac.as_str()});
            if let Some(app) = &pins.app {
                v["app"] = Value::String(app.to_string());
            }
            v["modules"] = Value::Object(modules(&pins.modules));
            v["group"] = Value::String(group.to_string());
            v
        }
    }
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
        assert_eq!(csv[0].assignment, json[0].assignment);
        assert_eq!(csv[1].assignment, json[1].assignment);
        assert_eq!((csv[0].line, csv[1].line), (2, 4));
        let line = export_line(&csv[0].mac, &csv[0].assignment);
        assert_eq!(parse(&line).unwrap()[0].assignment, csv[0].assignment);
    }

    #[test]
    fn a_group_column_gives_grouped_devices() {
        let csv = parse(
            "mac,app,modules,group\ndeadbeef1234,,sensorclass=2,greenhouse\naabbccddeeff,blink,,\n",
        )
        .unwrap();
        let json = parse(
            "{\"mac\":\"deadbeef1234\",\"modules\":{\"sensorclass\":\"2\"},\"group\":\"greenhouse\"}\n",
        )
        .unwrap();
        assert_eq!(csv[0].assignment, json[0].assignment);
        let Assignment::Group { group, pins } = &csv[0].assignment else {
            panic!("{:?}", csv[0].assignment);
        };
        assert_eq!(group.as_str(), "greenhouse");
        assert_eq!(pins.app, None);
        assert!(matches!(csv[1].assignment, Assignment::Own(_)));
        let line = export_line(&csv[0].mac, &csv[0].assignment);
        assert_eq!(parse(&line).unwrap()[0].assignment, csv[0].assignment);
        let e = format!(
            "{:#}",
            parse("mac,app,modules\ndeadbeef1234,,\n").unwrap_err()
        );
        assert!(e.contains("line 2: no app and no group"), "{e}");
        let e = format!(
            "{:#}",
            parse("mac,app,modules,group\ndeadbeef1234,,,-x\n").unwrap_err()
        );
        assert!(e.contains("line 2: invalid group name"), "{e}");
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
