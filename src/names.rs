//! Checked names: module names, versions, group names and MAC addresses.
//!
//! Everything a user or a board sends that ends up in a path or a key passes through here
//! first, so a name like `../../x` is refused before it can touch the filesystem. Each type
//! is `FromStr` (clap parses the command line straight into it, so a bad name is a usage
//! error) and serde as its string (checked again when read).

use std::fmt;
use std::str::FromStr;

/// `FromStr`, and serde as a checked string, for a name type with `parse` and `as_str`.
macro_rules! checked_string {
    ($t:ident) => {
        impl FromStr for $t {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                Self::parse(s)
            }
        }

        impl serde::Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                Self::parse(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}

checked_string!(ModuleName);
checked_string!(Version);
checked_string!(GroupName);
checked_string!(Mac);

/// A module's import name: a Python identifier (ASCII), at most 64 characters.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ModuleName(String);

impl ModuleName {
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut chars = s.chars();
        let ok_first = matches!(chars.next(), Some(c) if c == '_' || c.is_ascii_alphabetic());
        if !ok_first || s.len() > 64 || !s.chars().all(|c| c == '_' || c.is_ascii_alphanumeric()) {
            return Err(format!(
                "invalid module name {s:?}: a module name is a Python identifier \
                 (letters, digits and _, not starting with a digit, at most 64 characters)"
            ));
        }
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ModuleName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A version: an opaque string of `[A-Za-z0-9._-]{1,32}`, compared only for equality.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version(String);

impl Version {
    pub fn parse(s: &str) -> Result<Self, String> {
        let ok = (1..=32).contains(&s.len())
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
            && s != "."
            && s != ".."
            && s != "latest";
        if !ok {
            return Err(format!(
                "invalid version {s:?}: a version is 1 to 32 of A-Z a-z 0-9 . _ - \
                 (and not \".\", \"..\" or \"latest\")"
            ));
        }
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The version as a number, when it is purely numeric (used to pick the next default).
    pub fn numeric(&self) -> Option<u64> {
        if self.0.bytes().all(|b| b.is_ascii_digit()) {
            self.0.parse().ok()
        } else {
            None
        }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A group's name: 1 to 64 of `A-Z a-z 0-9 . _ -`, not starting with `-` or `.`, and not
/// only digits (a number names a rollout where both are accepted).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GroupName(String);

impl GroupName {
    pub fn parse(s: &str) -> Result<Self, String> {
        let ok = (1..=64).contains(&s.len())
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
            && !s.starts_with(['-', '.'])
            && !s.bytes().all(|b| b.is_ascii_digit());
        if !ok {
            return Err(format!(
                "invalid group name {s:?}: a group name is 1 to 64 of A-Z a-z 0-9 . _ - \
                 (not starting with - or ., and not only digits)"
            ));
        }
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for GroupName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A board's Wi-Fi MAC, normalised to 12 lowercase hex digits.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Mac(String);

impl Mac {
    /// Accepts `deadbeef1234`, `DE:AD:BE:EF:12:34`, `de-ad-be-ef-12-34`, `dead.beef.1234`
    /// and `de ad be ef 12 34`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let hex: String = t
            .chars()
            .filter(|c| !matches!(c, ':' | '-' | '.' | ' '))
            .collect();
        let separators_ok = {
            // Separators, if any, must split the address into equal groups of 2 or 4 digits.
            let groups: Vec<&str> = t.split([':', '-', '.', ' ']).collect();
            groups.len() == 1
                || (groups.len() == 6 && groups.iter().all(|g| g.len() == 2))
                || (groups.len() == 3 && groups.iter().all(|g| g.len() == 4))
        };
        if hex.len() != 12 || !hex.chars().all(|c| c.is_ascii_hexdigit()) || !separators_ok {
            return Err(format!(
                "invalid MAC address {s:?}: expected 12 hex digits such as deadbeef1234 \
                 or DE:AD:BE:EF:12:34"
            ));
        }
        Ok(Self(hex.to_ascii_lowercase()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The 48 bits of the address, for compact tables.
    pub fn bits(&self) -> u64 {
        u64::from_str_radix(&self.0, 16).expect("a Mac is 12 hex digits")
    }

    /// The address of `bits` (the low 48 are used).
    pub fn from_bits(bits: u64) -> Self {
        Self(format!("{:012x}", bits & 0xffff_ffff_ffff))
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where `serve` listens: `HOST:PORT`, HOST an IP address (`[::1]` for IPv6) or a name
/// looked up when binding (`localhost:8080`); port 0 picks a free one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenAddr(String);

impl ListenAddr {
    pub fn parse(s: &str) -> Result<Self, String> {
        let bad = |why: &str| {
            format!(
                "invalid listen address {s:?}: {why}; expected HOST:PORT such as 0.0.0.0:8080, \
                 127.0.0.1:0 or [::]:8080"
            )
        };
        if s.parse::<std::net::SocketAddr>().is_ok() {
            return Ok(Self(s.to_owned()));
        }
        let (host, port) = s.rsplit_once(':').ok_or_else(|| bad("no port"))?;
        port.parse::<u16>()
            .map_err(|_| bad(&format!("port {port:?} is not a number from 0 to 65535")))?;
        let name_ok = !host.is_empty()
            && host.len() <= 253
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
            && !host.starts_with(['-', '.']);
        if !name_ok {
            return Err(bad(&format!(
                "{host:?} is neither an IP address nor a host name"
            )));
        }
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for ListenAddr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::parse(s)
    }
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses() {
        for ok in [
            "0.0.0.0:8080",
            "127.0.0.1:0",
            "[::]:8080",
            "[::1]:1",
            "localhost:8080",
        ] {
            assert_eq!(ListenAddr::parse(ok).unwrap().as_str(), ok);
        }
        for bad in [
            "",
            "8080",
            "127.0.0.1",
            "127.0.0.1:99999",
            "127.0.0.1:x",
            ":8080",
            "::1:8080",
            "a/b:80",
            "-x:80",
        ] {
            assert!(ListenAddr::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn module_names() {
        assert!(ModuleName::parse("sensorclass").is_ok());
        assert!(ModuleName::parse("_x9").is_ok());
        for bad in ["", "../../x", "9a", "a-b", "a.b", "a/b", "é"] {
            assert!(ModuleName::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn versions() {
        assert!(Version::parse("1.2.3-rc_1").is_ok());
        for bad in ["", "a/b", "..", ".", "latest", &"1".repeat(33), "1 2"] {
            assert!(Version::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(Version::parse("12").unwrap().numeric(), Some(12));
        assert_eq!(Version::parse("1.2").unwrap().numeric(), None);
    }

    #[test]
    fn macs() {
        for ok in [
            "deadbeef1234",
            "DE:AD:BE:EF:12:34",
            "de-ad-be-ef-12-34",
            "dead.beef.1234",
            " DEADBEEF1234 ",
        ] {
            assert_eq!(Mac::parse(ok).unwrap().as_str(), "deadbeef1234", "{ok}");
        }
        for bad in [
            "",
            "deadbeef123",
            "deadbeef12345",
            "zzadbeef1234",
            "d:eadbeef1234",
        ] {
            assert!(Mac::parse(bad).is_err(), "{bad}");
        }
    }
}

/// Properties over arbitrary input: the parsers never panic, what they accept is safe in a
/// path, and valid names come back unchanged.
#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;

    /// Characters that matter to a path, a URL or a terminal, mixed with ordinary ones.
    fn tricky() -> impl Strategy<Value = String> {
        prop::collection::vec(
            prop_oneof![
                Just('/'),
                Just('\\'),
                Just('.'),
                Just(':'),
                Just('-'),
                Just(' '),
                Just('\0'),
                Just('%'),
                any::<char>(),
                prop::char::range('0', 'f'),
            ],
            0..40,
        )
        .prop_map(|v| v.into_iter().collect())
    }

    fn safe_in_a_path(s: &str) {
        assert!(!s.is_empty());
        assert!(
            !s.contains('/') && !s.contains('\\') && !s.contains('\0'),
            "{s:?}"
        );
        assert!(s != "." && s != "..", "{s:?}");
        assert!(
            s.is_ascii() && !s.chars().any(|c| c.is_ascii_control()),
            "{s:?}"
        );
    }

    proptest! {
        #[test]
        fn mac_parse_never_panics_and_accepts_only_12_hex_digits(s in tricky()) {
            if let Ok(m) = Mac::parse(&s) {
                prop_assert_eq!(m.as_str().len(), 12);
                prop_assert!(m.as_str().bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')));
                // The same address, whatever the spelling.
                let digits: String = s.chars().filter(char::is_ascii_hexdigit).collect();
                prop_assert_eq!(m.as_str(), digits.to_ascii_lowercase());
            }
        }

        #[test]
        fn mac_round_trips_in_every_spelling(bytes in any::<[u8; 6]>(), upper in any::<bool>(), style in 0..5usize) {
            let hex = hex::encode(bytes);
            let hex = if upper { hex.to_ascii_uppercase() } else { hex };
            let pairs: Vec<&str> = (0..6).map(|i| &hex[2 * i..2 * i + 2]).collect();
            let spelled = match style {
                0 => hex.clone(),
                1 => pairs.join(":"),
                2 => pairs.join("-"),
                3 => pairs.join(" "),
                _ => format!("{}.{}.{}", &hex[0..4], &hex[4..8], &hex[8..12]),
            };
            let m = Mac::parse(&spelled).unwrap();
            prop_assert_eq!(m.as_str(), hex::encode(bytes));
            // Its own output parses back to itself.
            prop_assert_eq!(Mac::parse(m.as_str()).unwrap(), m.clone());
            prop_assert_eq!(Mac::parse(&m.to_string()).unwrap(), m);
        }

        #[test]
        fn module_name_accepts_only_identifiers(s in tricky()) {
            if let Ok(n) = ModuleName::parse(&s) {
                safe_in_a_path(n.as_str());
                prop_assert!(!n.as_str().contains('.') && n.as_str().len() <= 64);
                prop_assert_eq!(n.as_str(), s.as_str());
            }
        }

        #[test]
        fn valid_module_names_round_trip(s in "[A-Za-z_][A-Za-z0-9_]{0,63}") {
            let n = ModuleName::parse(&s).unwrap();
            prop_assert_eq!(ModuleName::parse(n.as_str()).unwrap(), n.clone());
            prop_assert_eq!(n.to_string(), s);
        }

        #[test]
        fn version_accepts_nothing_unsafe_in_a_path(s in tricky()) {
            if let Ok(v) = Version::parse(&s) {
                safe_in_a_path(v.as_str());
                prop_assert!(v.as_str() != "latest" && v.as_str().len() <= 32);
                prop_assert_eq!(v.as_str(), s.as_str());
            }
        }

        #[test]
        fn valid_versions_round_trip(s in "[A-Za-z0-9._-]{1,32}") {
            prop_assume!(s != "." && s != ".." && s != "latest");
            let v = Version::parse(&s).unwrap();
            prop_assert_eq!(Version::parse(&v.to_string()).unwrap(), v);
        }
    }
}
