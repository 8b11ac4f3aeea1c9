//! A child process with a wall-clock deadline, for the short helper runs (`mpfleet sim
//! --inspect`, writing an image with MicroPython): killed with everything it started when the
//! deadline passes, and the test fails naming it. Boots have their own loop (`board.rs`).
//! And [`dead_pid`], for files named after a process that no longer runs.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Runs `cmd` to its end, as `Command::output` does, or fails the test at `deadline`.
pub fn output_within(cmd: &mut Command, what: &str, deadline: Duration) -> Output {
    cmd.process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("starting {what}: {e}"));
    let read = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = r.read_to_end(&mut buf);
            buf
        })
    };
    let stdout = read(Box::new(child.stdout.take().unwrap()));
    let stderr = read(Box::new(child.stderr.take().unwrap()));
    let end = Instant::now() + deadline;
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for a child") {
            break status;
        }
        if Instant::now() >= end {
            // Its own process group: whatever it started dies with it.
            unsafe {
                libc::kill(-(child.id() as i32), libc::SIGKILL);
            }
            let _ = child.wait();
            let out = stdout.join().unwrap_or_default();
            let err = stderr.join().unwrap_or_default();
            panic!(
                "{what}: still running after {deadline:?}, killed; output so far:\n{}{}",
                String::from_utf8_lossy(&out),
                String::from_utf8_lossy(&err)
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Output {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    }
}

/// The id of a process that has ended (and was reaped): what a killed mpfleet leaves in the
/// name of its temporary files.
pub fn dead_pid() -> u32 {
    let mut child = Command::new("true").spawn().expect("running `true`");
    let pid = child.id();
    child.wait().expect("waiting for `true`");
    pid
}
