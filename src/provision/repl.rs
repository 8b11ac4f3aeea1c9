//! MicroPython's raw REPL, the protocol `mpremote` speaks over a board's serial port: the
//! layer `mpfleet provision` runs code on a blank board with.
//!
//! Ctrl-C (twice) stops what the board runs, Ctrl-A enters raw mode (the board answers
//! `raw REPL; CTRL-B to exit\r\n>`), then each program is sent followed by Ctrl-D; the board
//! answers `OK`, the program's output, `\x04`, its error output (a traceback), `\x04>`.
//! Every read has a deadline, so a silent board, or something on the port that is not
//! MicroPython, is a clear error and never a hang.

use std::io::{self, Write};
use std::time::{Duration, Instant};

/// A byte stream to a board whose reads can wait at most a given time.
pub trait Link: Write {
    /// Reads what is there, waiting at most `timeout` for the first byte; `Ok(0)` when nothing
    /// came in that time.
    fn read_within(&mut self, buf: &mut [u8], timeout: Duration) -> io::Result<usize>;
}

/// A terminal or pseudo-terminal opened as a file (`/dev/ttyUSB0` set up elsewhere, or the
/// master side of a pty).
#[cfg(unix)]
impl Link for std::fs::File {
    fn read_within(&mut self, buf: &mut [u8], timeout: Duration) -> io::Result<usize> {
        use std::io::Read;
        use std::os::fd::AsRawFd;
        let mut fds = libc::pollfd {
            fd: self.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: one valid pollfd for the duration of the call.
        let ready = unsafe { libc::poll(&mut fds, 1, ms) };
        if ready < 0 {
            return Err(io::Error::last_os_error());
        }
        if ready == 0 {
            return Ok(0);
        }
        match self.read(buf) {
            // A pty whose other side closed reads EIO: the board went away.
            Err(e) if e.raw_os_error() == Some(libc::EIO) => Ok(0),
            other => other,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReplError {
    #[error("the board does not answer (is it powered, on this port, at this speed?)")]
    NoAnswer,
    #[error("something answers on this port, but not MicroPython's REPL: {0:?}")]
    NotMicroPython(String),
    #[error("the board broke off the raw REPL protocol: {0:?}")]
    Protocol(String),
    #[error("the code raised on the board:\n{0}")]
    Raised(String),
    #[error("talking to the board: {0}")]
    Io(#[from] io::Error),
}

const BANNER: &[u8] = b"raw REPL; CTRL-B to exit\r\n>";

/// A board in raw REPL mode.
pub struct RawRepl<L: Link> {
    link: L,
    /// How long the board may stay silent while it should be answering.
    pub timeout: Duration,
}

impl<L: Link> RawRepl<L> {
    /// Interrupts whatever the board runs and enters raw REPL mode.
    pub fn enter(mut link: L, timeout: Duration) -> Result<Self, ReplError> {
        link.write_all(b"\r\x03\x03")?;
        link.flush()?;
        let mut repl = Self { link, timeout };
        // What an interrupted program or the friendly REPL prints: read it until the board
        // has been quiet for a moment (at most `timeout`).
        let mut seen = repl.drain(Duration::from_millis(200))?;
        repl.link.write_all(b"\r\x01")?;
        repl.link.flush()?;
        match repl.read_until(BANNER) {
            Ok(_) => Ok(repl),
            Err((ReplError::NoAnswer, got)) => {
                seen.extend_from_slice(&got);
                if seen.is_empty() {
                    Err(ReplError::NoAnswer)
                } else {
                    Err(ReplError::NotMicroPython(tail(&seen)))
                }
            }
            Err((e, _)) => Err(e),
        }
    }

    /// Runs `code` on the board; returns what it printed, or its traceback as
    /// [`ReplError::Raised`].
    pub fn exec(&mut self, code: &str) -> Result<String, ReplError> {
        self.start(code)?;
        let out = self.read_until(b"\x04").map_err(|(e, _)| e)?;
        let err = self.read_until(b"\x04>").map_err(|(e, _)| e)?;
        let err = text(&err[..err.len() - 2]);
        if !err.is_empty() {
            return Err(ReplError::Raised(err));
        }
        Ok(text(&out[..out.len() - 1]))
    }

    /// Sends `code` and waits for the board to accept it (`OK`).
    fn start(&mut self, code: &str) -> Result<(), ReplError> {
        // Raw mode has no flow control: a board's UART buffer takes a few hundred bytes at a
        // time, so the code goes in pieces, each flushed before the next.
        for chunk in code.as_bytes().chunks(256) {
            self.link.write_all(chunk)?;
            self.link.flush()?;
        }
        self.link.write_all(b"\x04")?;
        self.link.flush()?;
        let ok = self.read_until(b"OK").map_err(|(e, got)| match e {
            ReplError::NoAnswer if !got.is_empty() => ReplError::Protocol(tail(&got)),
            e => e,
        })?;
        if ok != b"OK" {
            return Err(ReplError::Protocol(tail(&ok)));
        }
        Ok(())
    }

    /// Runs `code` on the board and hands each line it prints (its error output too) to
    /// `line` as it arrives, for a program that runs long or never returns (one that resets
    /// the board, whose next boot's lines follow). `line` returns true to stop reading. The
    /// board may stay silent for `silence` at a time.
    pub fn run(
        &mut self,
        code: &str,
        silence: Duration,
        mut line: impl FnMut(&str) -> bool,
    ) -> Result<Ran, ReplError> {
        self.start(code)?;
        // Output, then (after the first \x04) error output, ended by \x04>.
        let mut parts = [Vec::new(), Vec::new()];
        let mut ends = 0;
        let mut pending = Vec::new();
        let mut byte = [0u8; 1];
        loop {
            if self.link.read_within(&mut byte, silence)? == 0 {
                return Ok(Ran::Silent(text(&parts[0])));
            }
            let b = byte[0];
            if ends == 2 && b == b'>' && pending.is_empty() {
                return Ok(Ran::Returned {
                    out: text(&parts[0]),
                    err: text(&parts[1]),
                });
            }
            if b == 4 || b == b'\n' {
                if b == 4 {
                    ends += 1;
                }
                let said = text(&pending);
                pending.clear();
                if !(b == 4 && said.is_empty()) && line(said.trim_end_matches('\r')) {
                    return Ok(Ran::Stopped(text(&parts[0])));
                }
            } else {
                pending.push(b);
            }
            if b != 4 {
                parts[usize::from(ends > 0)].push(b);
            }
        }
    }

    /// Reads what the board prints outside any program (after it reset itself) a line at a
    /// time, until `line` returns true (then true) or the board is silent for `silence`.
    pub fn watch(
        &mut self,
        silence: Duration,
        deadline: Instant,
        mut line: impl FnMut(&str) -> bool,
    ) -> Result<bool, ReplError> {
        let mut pending = Vec::new();
        let mut byte = [0u8; 1];
        while Instant::now() < deadline {
            if self.link.read_within(&mut byte, silence)? == 0 {
                return Ok(false);
            }
            if byte[0] == 4 {
                continue; // the end of a program that reset the board (the unix port says it)
            }
            if byte[0] == b'\n' {
                let said = text(&pending);
                pending.clear();
                if line(said.trim_end_matches('\r')) {
                    return Ok(true);
                }
            } else {
                pending.push(byte[0]);
            }
        }
        Ok(false)
    }

    /// Leaves raw mode (Ctrl-B) and soft-resets the board (Ctrl-D at the friendly REPL), so it
    /// boots as it would at power on. Returns the link.
    pub fn reset(mut self) -> Result<L, ReplError> {
        self.link.write_all(b"\x02\x04")?;
        self.link.flush()?;
        Ok(self.link)
    }

    /// Reads until the input ends with `end`; on a silence of `timeout`, the error and what
    /// came so far.
    fn read_until(&mut self, end: &[u8]) -> Result<Vec<u8>, (ReplError, Vec<u8>)> {
        let mut got = Vec::new();
        let mut byte = [0u8; 1];
        loop {
            match self.link.read_within(&mut byte, self.timeout) {
                Ok(0) => return Err((ReplError::NoAnswer, got)),
                Ok(_) => got.push(byte[0]),
                Err(e) => return Err((e.into(), got)),
            }
            if got.ends_with(end) {
                return Ok(got);
            }
        }
    }

    /// Reads until the board has said nothing for `quiet`, or `self.timeout` has passed.
    fn drain(&mut self, quiet: Duration) -> Result<Vec<u8>, ReplError> {
        let deadline = Instant::now() + self.timeout;
        let mut got = Vec::new();
        let mut buf = [0u8; 256];
        while Instant::now() < deadline {
            match self.link.read_within(&mut buf, quiet)? {
                0 => break,
                n => got.extend_from_slice(&buf[..n]),
            }
        }
        Ok(got)
    }
}

/// How a program started with [`RawRepl::run`] came to an end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ran {
    /// It returned: what it printed, and its error output (a traceback, or empty).
    Returned { out: String, err: String },
    /// The line callback asked to stop; what it printed so far.
    Stopped(String),
    /// The board went silent, or away (reset, unplugged), before it returned.
    Silent(String),
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The last bytes of what the board said, for an error message.
fn tail(b: &[u8]) -> String {
    let s = String::from_utf8_lossy(b);
    let n = s.chars().count();
    s.chars().skip(n.saturating_sub(80)).collect()
}
