//! A board's USB serial port, opened for `mpfleet provision`: 115200 baud, raw, ours alone
//! (TIOCEXCL and an exclusive `flock`, so a second `provision`, `mpremote` or a serial
//! monitor holding it is a clear "busy"), and its failures in words a user can act on.

use super::repl::Link;
use anyhow::{anyhow, Result};
use serialport::{ErrorKind, SerialPort, TTYPort};
use std::io::{self, Read, Write};
use std::time::Duration;

/// The speed every MicroPython port's REPL runs at.
pub const BAUD: u32 = 115_200;

/// An open serial port to a board.
pub struct Serial(TTYPort);

impl Serial {
    /// Opens `path`, or says why not: no such port, busy, not allowed.
    pub fn open(path: &str) -> Result<Self> {
        let port = serialport::new(path, BAUD)
            .timeout(Duration::from_secs(1))
            .open_native()
            .map_err(|e| match e.kind() {
                ErrorKind::Io(io::ErrorKind::NotFound) => anyhow!(
                    "no serial port at {path}: is the board plugged in? (Linux: /dev/ttyUSB0 or \
                     /dev/ttyACM0; macOS: /dev/cu.usbserial-*)"
                ),
                ErrorKind::NoDevice => anyhow!(
                    "serial port {path} is busy: another program has it open (mpremote, a \
                     serial monitor, another mpfleet provision); close it and try again"
                ),
                ErrorKind::Io(io::ErrorKind::PermissionDenied) => anyhow!(
                    "not allowed to open serial port {path}: on Linux, add yourself to its \
                     group (`sudo usermod -aG dialout $USER`, then log in again)"
                ),
                _ if e.description.contains("typewriter")
                    || e.description.contains("Inappropriate ioctl") =>
                {
                    anyhow!("{path} is not a serial port")
                }
                _ => anyhow!("cannot open serial port {path}: {e}"),
            })?;
        Ok(Self(port))
    }
}

impl Write for Serial {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

impl Link for Serial {
    fn read_within(&mut self, buf: &mut [u8], timeout: Duration) -> io::Result<usize> {
        self.0
            .set_timeout(timeout.max(Duration::from_millis(1)))
            .map_err(io::Error::from)?;
        match self.0.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::TimedOut => Ok(0),
            // The board went away (unplugged, or the other side of a pty closed).
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(0),
            Err(e) if e.raw_os_error() == Some(libc::EIO) => Ok(0),
            // serialport's own poll says "I/O error" (without an errno) for the same.
            Err(e) if e.kind() == io::ErrorKind::Other => Ok(0),
            other => other,
        }
    }
}
