//! What makes a board trust the server and the server trust a board: HMAC-SHA256 under the
//! device's key.
//!
//! A resolved manifest reaches the board as an envelope: one line `{"hmac":"<64 hex>"}`, then
//! the manifest's bytes exactly as rendered. The HMAC covers those bytes, so the board checks
//! what it received while streaming it to flash, with no re-serialisation, and the envelope
//! needs no HTTP header (the static export serves it as it is). A report's HMAC covers its
//! body and travels in the [`REPORT_HMAC`] header.

use crate::store::DeviceKey;
use anyhow::{bail, Context, Result};
use hmac::{Hmac, Mac as _};
use sha2::Sha256;

/// The header carrying a report's HMAC, in hex.
pub const REPORT_HMAC: &str = "x-mpfleet-hmac";

/// The longest first line an envelope may have: `{"hmac":"` + 64 hex digits + `"}` + newline.
pub const ENVELOPE_LINE: usize = 76;

fn mac(key: &DeviceKey) -> Hmac<Sha256> {
    Hmac::<Sha256>::new_from_slice(&key.0).expect("HMAC takes a key of any length")
}

/// HMAC-SHA256 of `bytes` under `key`, as 64 lowercase hex digits.
pub fn hmac_hex(key: &DeviceKey, bytes: &[u8]) -> String {
    let mut m = mac(key);
    m.update(bytes);
    hex::encode(m.finalize().into_bytes())
}

/// Checks `claimed` (64 lowercase hex digits, exactly as a board writes and compares them)
/// against the HMAC of `bytes`, in constant time. Uppercase is refused: one HMAC has one
/// spelling, so what the server accepts is what a board accepts.
pub fn verify(key: &DeviceKey, bytes: &[u8], claimed: &str) -> bool {
    let lower_hex = |b: &u8| b.is_ascii_digit() || (b'a'..=b'f').contains(b);
    if claimed.len() != 64 || !claimed.bytes().all(|b| lower_hex(&b)) {
        return false;
    }
    let Ok(claimed) = hex::decode(claimed) else {
        return false;
    };
    let mut m = mac(key);
    m.update(bytes);
    m.verify_slice(&claimed).is_ok()
}

/// The envelope a board receives: the HMAC line, then `manifest` unchanged.
pub fn seal(key: &DeviceKey, manifest: &str) -> String {
    let mut out = String::with_capacity(ENVELOPE_LINE + manifest.len());
    out.push_str("{\"hmac\":\"");
    out.push_str(&hmac_hex(key, manifest.as_bytes()));
    out.push_str("\"}\n");
    out.push_str(manifest);
    out
}

/// The manifest inside an envelope, if its HMAC is right under `key`: what a board does, for
/// tests, tools and the fuzzer.
pub fn open<'a>(key: &DeviceKey, envelope: &'a [u8]) -> Result<&'a [u8]> {
    let end = envelope
        .iter()
        .take(ENVELOPE_LINE)
        .position(|&b| b == b'\n')
        .context("no envelope line: not a signed manifest")?;
    let (line, body) = (&envelope[..end], &envelope[end + 1..]);
    let claimed = line
        .strip_prefix(b"{\"hmac\":\"")
        .and_then(|l| l.strip_suffix(b"\"}"))
        .context("the envelope line is not {\"hmac\":\"...\"}")?;
    let claimed = std::str::from_utf8(claimed).context("the HMAC is not hex")?;
    if claimed.len() != 64 || !verify(key, body, claimed) {
        bail!("the manifest's HMAC does not match this device's key");
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> DeviceKey {
        DeviceKey([b; 32])
    }

    #[test]
    fn hmac_matches_rfc_4231_case_2() {
        // RFC 4231 test case 2 ("Jefe"): checks the construction, not only round trips.
        let m = {
            let mut m = Hmac::<Sha256>::new_from_slice(b"Jefe").unwrap();
            m.update(b"what do ya want for nothing?");
            hex::encode(m.finalize().into_bytes())
        };
        assert_eq!(
            m,
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn sealed_manifest_opens_only_under_its_key_and_unchanged() {
        let body = "{\"device\":\"aabbccddeeff\",\"modules\":{\n}}\n";
        let sealed = seal(&key(1), body);
        assert!(sealed.lines().next().unwrap().len() < ENVELOPE_LINE);
        assert_eq!(open(&key(1), sealed.as_bytes()).unwrap(), body.as_bytes());
        assert!(open(&key(2), sealed.as_bytes()).is_err());
        let mut tampered = sealed.clone().into_bytes();
        let last = tampered.len() - 3;
        tampered[last] ^= 1;
        assert!(open(&key(1), &tampered).is_err());
        assert!(open(&key(1), body.as_bytes()).is_err());
        assert!(open(&key(1), b"").is_err());
    }

    mod fuzz {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            /// Arbitrary bytes never open (and never panic): only a seal made with the key does.
            #[test]
            fn arbitrary_envelopes_are_refused(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
                prop_assert!(open(&key(7), &bytes).is_err());
            }

            /// Any manifest sealed under a key opens under it to the same bytes, and under no
            /// other key; any single changed byte is refused.
            #[test]
            fn seals_open_only_unchanged(
                manifest in "[ -~\n]{0,300}",
                k in any::<u8>(),
                other in any::<u8>(),
                flip in any::<prop::sample::Index>(),
                bit in 0u8..8,
            ) {
                let sealed = seal(&key(k), &manifest);
                prop_assert_eq!(open(&key(k), sealed.as_bytes()).unwrap(), manifest.as_bytes());
                if other != k {
                    prop_assert!(open(&key(other), sealed.as_bytes()).is_err());
                }
                let mut bytes = sealed.into_bytes();
                let i = flip.index(bytes.len());
                bytes[i] ^= 1 << bit;
                prop_assert!(open(&key(k), &bytes).is_err());
            }
        }
    }
}
