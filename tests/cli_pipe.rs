//! Every command that prints to stdout, with stdout a pipe whose reader is already gone (what
//! `mpfleet device list | head -1` does after its first line): exit 0, and nothing on stderr
//! about it (no panic, no backtrace, no "Broken pipe"), as ripgrep does.

use crate::harness::{Fleet, Run, BIN};
use std::io::Read;
use std::process::{Command, Stdio};

/// Runs `mpfleet ARGS` with stdout a pipe whose read end is closed before it starts, so its
/// very first write fails with EPIPE (deterministic: no race with a reader).
fn run_into_closed_pipe(f: &Fleet, args: &[&str]) -> Run {
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    let mut child = Command::new(BIN)
        .args(args)
        .envs(f.env().iter().map(|(k, v)| (k, v)))
        .env("MPFLEET_DATA", f.data())
        .env("RUST_BACKTRACE", "1")
        .env_remove("RUST_LOG")
        .current_dir(f.dir.path())
        .stdin(Stdio::null())
        .stdout(writer)
        .stderr(Stdio::piped())
        .spawn()
        .expect("running mpfleet");
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let status = child.wait().unwrap();
    Run {
        code: status.code().unwrap_or(-1),
        stdout: String::new(),
        stderr,
    }
}

#[test]
fn every_printing_command_exits_quietly_when_its_reader_is_gone() {
    let f = Fleet::smartcharger();
    f.ok(&["device", "set", "deadbeef1234", "--app", "smartcharger"]);
    f.ok(&["device", "set", "deadbeef5678", "--app", "smartcharger"]);
    let secrets = f.file("secrets.json", r#"{"wifi": "x"}"#);
    let sensor = f.file("sensorclass.py", "x = 3\n");
    let export = f.dir.path().join("export");
    let commands: Vec<Vec<&str>> = vec![
        vec!["--help"],
        vec!["--version"],
        vec!["device", "--help"],
        vec!["device", "list"],
        vec!["device", "list", "--json"],
        vec!["device", "list", "--unknown"],
        vec!["device", "list", "--unknown", "--json"],
        vec!["device", "show", "deadbeef1234"],
        vec!["device", "show", "deadbeef1234", "--json"],
        vec!["device", "key", "deadbeef1234"],
        vec!["device", "bootstrap", "deadbeef1234"],
        vec![
            "device",
            "bootstrap",
            "deadbeef1234",
            "--secrets",
            secrets.to_str().unwrap(),
        ],
        vec!["module", "list"],
        vec!["module", "list", "--json"],
        vec!["module", "show", "sensorclass"],
        vec!["module", "show", "sensorclass", "--json"],
        vec!["module", "latest", "sensorclass", "1"],
        vec!["module", "publish", sensor.to_str().unwrap()],
        vec!["device", "set", "deadbeef1234", "--app", "smartcharger"],
        vec!["export", export.to_str().unwrap()],
        vec!["device", "rm", "deadbeef5678"],
        vec!["completions", "bash"],
        vec!["man"],
    ];
    for args in &commands {
        let r = run_into_closed_pipe(&f, args);
        assert_eq!(
            r.code, 0,
            "mpfleet {args:?} into a closed pipe\nstderr:\n{}",
            r.stderr
        );
        for word in ["panicked", "Broken pipe", "backtrace", "error"] {
            assert!(
                !r.stderr.contains(word),
                "mpfleet {args:?} into a closed pipe says {word:?}:\n{}",
                r.stderr
            );
        }
    }
    // The commands that change the store did so before they printed.
    let module = f.json(&["module", "show", "sensorclass", "--json"]);
    assert_eq!(module["versions"].as_array().unwrap().len(), 3);
    assert_eq!(
        f.json(&["device", "list", "--json"])
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

/// The same as a user types it. Whether `head` is gone before mpfleet writes is up to the
/// scheduler, so this one alone would not catch the bug; the test above does.
#[test]
fn a_real_shell_pipe_into_head_is_quiet() {
    let f = Fleet::smartcharger();
    for i in 0..3 {
        f.ok(&[
            "device",
            "set",
            &format!("deadbeef000{i}"),
            "--app",
            "smartcharger",
        ]);
    }
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "'{BIN}' device list | head -1; exit ${{PIPESTATUS:-0}}"
        ))
        .env("MPFLEET_DATA", f.data())
        .env("RUST_BACKTRACE", "1")
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    assert!(stdout.starts_with("MAC"), "{stdout}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}
