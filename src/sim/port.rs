//! Which MicroPython port a simulated board behaves as: its `machine` rules live in
//! `sim/ports.py`; here are the profile's name, release and the defaults it brings (heap,
//! flash size), so a run simulates a board that exists.

use std::fmt;
use std::str::FromStr;

/// The port (`--port`), passed to the shims as env `MPFLEET_PORT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Port {
    /// ESP8266: WDT fixed at 5000 (resets 1.6 s after the last feed), Timer(id) then
    /// .init(), 492 bytes of RTC memory, about 30 KB of heap free for your code.
    Esp8266,
    /// ESP32: WDT(timeout=ms), hardware timers 0-3, 2048 bytes of RTC memory.
    Esp32,
    /// The unix port: no WDT, no Timer (RTC memory and reset() are simulated for the runtime).
    Unix,
}

impl Port {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Esp8266 => "esp8266",
            Self::Esp32 => "esp32",
            Self::Unix => "unix",
        }
    }

    /// The default `-X heapsize`: what the simulator itself needs (an empty `main.py` on a
    /// littlefs image boots from 29k on esp8266 and esp32, 28k on unix; `FLOOR` keeps 1k
    /// more) plus twice the GC heap a board leaves your code, since objects cost about twice
    /// as much on this 64-bit host (see sim/README.md).
    pub fn default_heap(self) -> u64 {
        const FLOOR: u64 = 30 * 1024;
        match self {
            Self::Esp8266 => FLOOR + 2 * 30 * 1024,
            Self::Esp32 => FLOOR + 2 * 90 * 1024,
            Self::Unix => 256 * 1024,
        }
    }

    /// The default flash size in 4 KiB blocks: an ESP8266 with 4 MiB (the 2M+ build's
    /// filesystem), an ESP32's 2 MiB `vfs` partition, 1 MiB for unix.
    pub fn default_flash_blocks(self) -> u32 {
        match self {
            Self::Esp8266 => 763,
            Self::Esp32 => 512,
            Self::Unix => 256,
        }
    }
}

impl fmt::Display for Port {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A MicroPython release `1.Y` (`--port-version`), env `MPFLEET_PORT_VERSION`: the rules that
/// changed between releases (PORTS.md) are known from 1.20 to 1.28.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortVersion(u32);

impl PortVersion {
    pub const LATEST: Self = Self(28);
}

impl FromStr for PortVersion {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        s.strip_prefix("1.")
            .and_then(|m| m.parse::<u32>().ok())
            .filter(|m| (20..=28).contains(m))
            .map(Self)
            .ok_or_else(|| format!("unknown MicroPython release {s:?}: use 1.20 to 1.28"))
    }
}

impl fmt::Display for PortVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "1.{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_versions_are_releases_we_know() {
        assert_eq!("1.21".parse::<PortVersion>().unwrap().to_string(), "1.21");
        assert_eq!("1.28".parse::<PortVersion>(), Ok(PortVersion::LATEST));
        for bad in ["1.19", "1.29", "2.0", "1.2x", "28", ""] {
            assert!(bad.parse::<PortVersion>().is_err(), "{bad}");
        }
    }
}
