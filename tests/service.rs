//! `contrib/mpfleet.service` (docs/service.md): the unit has what running `serve` as a
//! hardened service needs, names only settings mpfleet reads, passes `systemd-analyze verify`
//! where systemd is installed; and the log lines `serve` writes are kept well by journald.

use crate::harness::{Fleet, BIN};
use std::collections::BTreeMap;
use std::process::{Command, Stdio};

const UNIT: &str = include_str!("../contrib/mpfleet.service");

/// The unit's `[Section] Key=value` lines; a key given several times keeps every value.
fn unit() -> BTreeMap<(String, String), Vec<String>> {
    let mut keys = BTreeMap::<_, Vec<String>>::new();
    let mut section = String::new();
    for line in UNIT.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_owned();
            continue;
        }
        let (k, v) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("not Key=value: {line}"));
        assert!(!section.is_empty(), "{k} before any section");
        keys.entry((section.clone(), k.to_owned()))
            .or_default()
            .push(v.to_owned());
    }
    keys
}

fn one(u: &BTreeMap<(String, String), Vec<String>>, section: &str, key: &str) -> String {
    match u.get(&(section.to_owned(), key.to_owned())) {
        Some(v) if v.len() == 1 => v[0].clone(),
        other => panic!("[{section}] {key}: {other:?}"),
    }
}

#[test]
fn unit_runs_serve_hardened_with_its_state_in_var_lib() {
    let u = unit();
    assert_eq!(
        one(&u, "Service", "ExecStart"),
        "/usr/local/bin/mpfleet serve"
    );
    // Its own user: a named one (or DynamicUser), never root.
    let user = u.get(&("Service".into(), "User".into()));
    let dynamic = u.get(&("Service".into(), "DynamicUser".into()));
    assert!(
        matches!(user, Some(v) if v[0] != "root") || matches!(dynamic, Some(v) if v[0] == "yes"),
        "the unit runs as root"
    );
    for (key, value) in [
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("NoNewPrivileges", "yes"),
        ("StateDirectory", "mpfleet"),
        ("StateDirectoryMode", "0700"),
        ("Restart", "on-failure"),
    ] {
        assert_eq!(one(&u, "Service", key), value, "{key}");
    }
    let env = &u[&("Service".to_owned(), "Environment".to_owned())];
    assert!(
        env.iter().any(|e| e == "MPFLEET_DATA=/var/lib/mpfleet"),
        "{env:?}"
    );
    assert_eq!(one(&u, "Install", "WantedBy"), "multi-user.target");
    // Its ExecReload would be a lie: nothing needs reloading.
    assert!(!u.contains_key(&("Service".into(), "ExecReload".into())));
}

/// Every `Environment=` (commented-out ones too) names a variable mpfleet reads.
#[test]
fn unit_names_only_settings_mpfleet_reads() {
    let help = Command::new(BIN)
        .args(["serve", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    let mpy = include_str!("../src/mpy.rs");
    let names: Vec<&str> = UNIT
        .lines()
        .filter_map(|l| l.trim_start_matches('#').strip_prefix("Environment="))
        .map(|e| e.split_once('=').unwrap().0)
        .collect();
    assert!(names.len() >= 3, "{names:?}");
    for name in names {
        assert!(
            help.contains(&format!("env: {name}=")) || mpy.contains(&format!("\"{name}\"")),
            "the unit sets {name}, which mpfleet does not read"
        );
    }
}

/// `systemd-analyze verify` on the unit (its binary pointed at this build), where systemd is
/// installed: no error and no warning.
#[test]
fn unit_passes_systemd_analyze_verify() {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("systemd-analyze not installed: skipped");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mpfleet.service");
    std::fs::write(&path, UNIT.replace("/usr/local/bin/mpfleet", BIN)).unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.trim().is_empty(),
        "systemd-analyze verify:\n{stderr}"
    );
}

/// What a command logs on stderr, with stderr a pipe; `journal` sets `JOURNAL_STREAM` to that
/// pipe's DEVICE:INODE, as systemd does for a service whose stderr is the journal.
fn log_lines(journal: Option<bool>) -> String {
    use std::io::Read;
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::MetadataExt;
    let f = Fleet::new();
    let (mut reader, writer) = std::io::pipe().unwrap();
    let meta = std::fs::metadata(format!("/proc/self/fd/{}", writer.as_raw_fd())).unwrap();
    let mut cmd = Command::new(BIN);
    cmd.args(["device", "set", "deadbeef1234", "--app", "config"])
        .env("MPFLEET_DATA", f.data())
        .env_remove("RUST_LOG")
        .env_remove("JOURNAL_STREAM")
        .stdout(Stdio::null())
        .stderr(writer);
    match journal {
        Some(true) => cmd.env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino())),
        // Inherited from a parent whose stderr is the journal: not ours.
        Some(false) => cmd.env("JOURNAL_STREAM", "1:1"),
        None => &mut cmd,
    };
    let mut child = cmd.spawn().unwrap();
    drop(cmd);
    let mut text = String::new();
    reader.read_to_string(&mut text).unwrap();
    assert!(child.wait().unwrap().success(), "{text}");
    text
}

#[test]
fn logs_are_plain_lines_and_journald_stamps_them_itself() {
    for journal in [None, Some(false), Some(true)] {
        let text = log_lines(journal);
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines
                .iter()
                .any(|l| l.contains("INFO published the runtime")),
            "{journal:?}: {text}"
        );
        assert!(!text.contains('\x1b'), "colours into a pipe: {text:?}");
        for line in &lines {
            let stamped = line.as_bytes().first().is_some_and(u8::is_ascii_digit);
            assert_eq!(
                stamped,
                journal != Some(true),
                "{journal:?}: timestamp or not: {line:?}"
            );
        }
    }
}
