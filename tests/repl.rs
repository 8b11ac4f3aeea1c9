//! The raw REPL layer (`mpfleet::repl`) against the real MicroPython unix port behind a
//! pseudo-terminal (its REPL speaks the same raw REPL as a board's), against a silent port,
//! and against a port where something else answers.

use mpfleet::repl::{RawRepl, ReplError};
use std::fs::File;
use std::os::fd::{FromRawFd, OwnedFd};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A pseudo-terminal: (master, slave). `raw`: no echo, no line editing and no `\n` to `\r\n`
/// on the slave, as on a serial line.
fn pty(raw: bool) -> (File, OwnedFd) {
    let (mut master, mut slave) = (0, 0);
    // SAFETY: openpty writes two fds into the given ints; the pointers may be null.
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
    if raw {
        // SAFETY: a zeroed termios filled by tcgetattr on a valid fd.
        unsafe {
            let mut t: libc::termios = std::mem::zeroed();
            assert_eq!(libc::tcgetattr(slave, &mut t), 0);
            libc::cfmakeraw(&mut t);
            assert_eq!(libc::tcsetattr(slave, libc::TCSANOW, &t), 0);
        }
    }
    // SAFETY: both fds are fresh and owned by nothing else.
    unsafe { (File::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) }
}

/// Starts `program` with the slave side as its stdin, stdout and stderr.
fn on_pty(program: &str, args: &[&str], slave: OwnedFd) -> Child {
    Command::new(program)
        .args(args)
        .stdin(Stdio::from(slave.try_clone().unwrap()))
        .stdout(Stdio::from(slave.try_clone().unwrap()))
        .stderr(Stdio::from(slave))
        .spawn()
        .unwrap_or_else(|e| panic!("starting {program}: {e}"))
}

struct Board(Child);

impl Drop for Board {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn micropython() -> (RawRepl<File>, Board) {
    let bin = std::env::var("MPFLEET_MICROPYTHON").unwrap_or_else(|_| "micropython".into());
    let (master, slave) = pty(true);
    let board = Board(on_pty(&bin, &[], slave));
    let repl = RawRepl::enter(master, Duration::from_secs(10)).expect("raw REPL");
    (repl, board)
}

#[test]
fn runs_code_on_micropython_and_returns_what_it_printed() {
    let (mut repl, _board) = micropython();
    assert_eq!(repl.exec("print(1 + 1)").unwrap().trim(), "2");
    // State stays between programs, and a program longer than one piece arrives whole.
    let long = format!("s = {:?}\nprint(len(s))", "x".repeat(3000));
    assert_eq!(repl.exec(&long).unwrap().trim(), "3000");
    assert_eq!(repl.exec("print(s[:3])").unwrap().trim(), "xxx");
    let printed = repl.exec("for i in range(3):\n    print(i)").unwrap();
    assert_eq!(
        printed.split_whitespace().collect::<Vec<_>>(),
        ["0", "1", "2"]
    );
}

#[test]
fn a_raising_program_is_an_error_with_its_traceback_and_the_repl_goes_on() {
    let (mut repl, _board) = micropython();
    match repl.exec("1 / 0") {
        Err(ReplError::Raised(tb)) => assert!(tb.contains("ZeroDivisionError"), "{tb}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        repl.exec("print('still here')").unwrap().trim(),
        "still here"
    );
}

#[test]
fn a_silent_port_is_no_answer() {
    let (master, _slave) = pty(true);
    let started = std::time::Instant::now();
    match RawRepl::enter(master, Duration::from_millis(500)) {
        Err(ReplError::NoAnswer) => {}
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("entered a raw REPL on a silent port"),
    }
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn something_else_on_the_port_is_not_micropython() {
    let (master, slave) = pty(true);
    let _cat = Board(on_pty("cat", &[], slave));
    match RawRepl::enter(master, Duration::from_millis(500)) {
        Err(ReplError::NotMicroPython(said)) => assert!(!said.is_empty()),
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("entered a raw REPL on cat"),
    }
}
