//! Trust material: the store's identity and each device's secret key.
//!
//! A device's key is 256 random bits made when the device is created; manifests served to it
//! are signed with it and its reports are checked with it (see `crate::sign`). It leaves the
//! store only in a board's bootstrap (`mpfleet device bootstrap`), never in a served path or
//! a log. The store's identity is named in every signed manifest, so a board provisioned for
//! one store refuses another store's manifests even under the same key.

use super::{optional, Store};
use crate::names::Mac;
use anyhow::{Context, Result};

/// A device's secret: 32 bytes, held as 64 lowercase hex digits.
#[derive(Clone, PartialEq, Eq)]
pub struct DeviceKey(pub [u8; 32]);

impl DeviceKey {
    /// 32 bytes from the operating system's random source.
    pub fn random() -> Result<Self> {
        let mut k = [0u8; 32];
        getrandom::getrandom(&mut k)
            .map_err(|e| anyhow::anyhow!("reading random bytes for a device key: {e}"))?;
        Ok(Self(k))
    }

    pub fn from_hex(s: &str) -> Result<Self> {
        let bytes = hex::decode(s).context("a device key is 64 hex digits")?;
        let k: [u8; 32] = bytes
            .try_into()
            .map_err(|_| anyhow::anyhow!("a device key is 64 hex digits"))?;
        Ok(Self(k))
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// A short name for the key that reveals nothing of it: the first 8 hex digits of its
    /// SHA-256, to tell two keys apart in `device show`.
    pub fn fingerprint(&self) -> String {
        super::sha256_hex(&self.0)[..8].to_owned()
    }
}

impl std::fmt::Debug for DeviceKey {
    /// Never prints the key itself, so a `{:?}` in a log cannot leak it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DeviceKey({})", self.fingerprint())
    }
}

impl Store {
    /// The store's identity: 32 hex digits, random, made when the store was created.
    pub fn store_id(&self) -> Result<String> {
        Ok(self
            .conn
            .query_row("SELECT value FROM meta WHERE name = 'store'", [], |r| {
                r.get(0)
            })?)
    }

    /// The key of `mac`, or None if it is not a device.
    pub fn device_key(&self, mac: &Mac) -> Result<Option<DeviceKey>> {
        let hex: Option<String> = optional(self.conn.query_row(
            "SELECT key FROM devices WHERE mac = ?1",
            [mac.as_str()],
            |r| r.get(0),
        ))?;
        hex.map(|h| DeviceKey::from_hex(&h)).transpose()
    }

    /// Gives `mac` a new random key (the board keeps refusing manifests until it gets the
    /// new one over the cable) and starts its report counter again. False if no such device.
    pub fn rotate_key(&mut self, mac: &Mac) -> Result<bool> {
        let key = DeviceKey::random()?;
        let tx = self.write()?;
        let n = tx.execute(
            "UPDATE devices SET key = ?2, report_counter = 0 WHERE mac = ?1",
            [mac.as_str(), key.to_hex().as_str()],
        )?;
        if n > 0 {
            super::bump(&tx, "revision")?;
        }
        tx.commit()?;
        Ok(n > 0)
    }
}
