//! The admin token: the one secret that lets a client use the admin API (`/admin/api/v1/`,
//! `/metrics`) of `mpfleet serve`.
//!
//! 256 random bits, written as 64 hex digits in `admin-token` in the data directory, readable
//! by its owner only (0600). `serve` creates it on its first start and logs where it is (never
//! the token itself); `mpfleet token show` prints it, `mpfleet token rotate` replaces it. A
//! running `serve` notices a rotation at the next admin request: it keeps the file's identity
//! (inode, size, modification time) and reads the file again when that changes, so rotating
//! needs no restart and costs a request one `stat`. Tokens are compared in constant time.
//! The dashboard's session cookie and form token are derived from it ([`Token::derive`]), so
//! a rotation ends every dashboard session too.

use anyhow::{bail, Context, Result};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The token file's name in the data directory.
pub const FILE: &str = "admin-token";

/// The admin token.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(..)")
    }
}

impl Token {
    fn random() -> Result<Self> {
        let mut bytes = [0u8; 32];
        getrandom::getrandom(&mut bytes)
            .map_err(|e| anyhow::anyhow!("reading random bytes for the admin token: {e}"))?;
        Ok(Self(hex::encode(bytes)))
    }

    fn parse(text: &str, path: &Path) -> Result<Self> {
        let t = text.trim();
        if t.len() != 64 || !t.bytes().all(|b| b.is_ascii_hexdigit()) {
            bail!(
                "{} is not an admin token (64 hex digits): `mpfleet token rotate` writes a new one",
                path.display()
            );
        }
        Ok(Self(t.to_ascii_lowercase()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `presented` is this token, in time that does not depend on where they differ.
    pub fn matches(&self, presented: &str) -> bool {
        same(&self.0, presented)
    }

    /// A secret of its own for `purpose`, made from the token (HMAC-SHA256, 64 hex digits):
    /// the dashboard's session cookie and form token. It changes when the token is rotated,
    /// and does not reveal the token.
    pub fn derive(&self, purpose: &str) -> String {
        use hmac::{Hmac, Mac as _};
        let mut mac =
            Hmac::<sha2::Sha256>::new_from_slice(self.0.as_bytes()).expect("HMAC takes any key");
        mac.update(purpose.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }
}

/// Whether two secrets are equal, in time that does not depend on where they differ (the
/// length is no secret: every token and derived secret has 64 digits).
pub fn same(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// Where the token of the store in `data` lives.
pub fn path(data: &Path) -> PathBuf {
    data.join(FILE)
}

/// Reads the token of the store in `data`.
pub fn read(data: &Path) -> Result<Token> {
    let p = path(data);
    let text = std::fs::read_to_string(&p).with_context(|| {
        format!(
            "reading the admin token {}: `mpfleet serve` creates it on its first start, \
             `mpfleet token rotate` writes a new one",
            p.display()
        )
    })?;
    Token::parse(&text, &p)
}

/// Reads the token, creating it first if there is none. Returns whether it was created.
pub fn ensure(data: &Path) -> Result<(Token, bool)> {
    let p = path(data);
    if p.exists() {
        return Ok((read(data)?, false));
    }
    if !data.exists() {
        crate::store::create_private_dir(data)?;
    }
    let token = Token::random()?;
    // `create_new`: of two processes creating it at once, one writes and the other reads.
    match private_file(&p, true) {
        Ok(mut f) => {
            write_token(&mut f, &token).with_context(|| format!("writing {}", p.display()))?;
            Ok((token, true))
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok((read(data)?, false)),
        Err(e) => Err(e).with_context(|| format!("creating {}", p.display())),
    }
}

/// Replaces the token with a new random one (written beside it, then renamed over it, so a
/// reader sees the old token or the new one, never a part of either).
pub fn rotate(data: &Path) -> Result<Token> {
    if !data.exists() {
        crate::store::create_private_dir(data)?;
    }
    let p = path(data);
    let tmp = data.join(format!(".{FILE}.tmp"));
    let _ = std::fs::remove_file(&tmp);
    let token = Token::random()?;
    let mut f = private_file(&tmp, true).with_context(|| format!("creating {}", tmp.display()))?;
    write_token(&mut f, &token).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &p).with_context(|| format!("replacing {}", p.display()))?;
    Ok(token)
}

fn private_file(p: &Path, new: bool) -> std::io::Result<std::fs::File> {
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create_new(new);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
    o.open(p)
}

fn write_token(f: &mut std::fs::File, token: &Token) -> std::io::Result<()> {
    writeln!(f, "{}", token.0)?;
    f.sync_all()
}

/// The token as a running server knows it: read again whenever the file changes.
pub struct Live {
    path: PathBuf,
    cached: Mutex<Option<(FileId, Token)>>,
}

/// What tells one version of the token file from another.
#[derive(Clone, Copy, PartialEq, Eq)]
struct FileId {
    inode: u64,
    len: u64,
    modified: Option<std::time::SystemTime>,
}

impl FileId {
    fn of(p: &Path) -> std::io::Result<Self> {
        let m = std::fs::metadata(p)?;
        #[cfg(unix)]
        let inode = std::os::unix::fs::MetadataExt::ino(&m);
        #[cfg(not(unix))]
        let inode = 0;
        Ok(Self {
            inode,
            len: m.len(),
            modified: m.modified().ok(),
        })
    }
}

impl Live {
    pub fn new(data: &Path) -> Self {
        Self {
            path: path(data),
            cached: Mutex::new(None),
        }
    }

    /// Whether `presented` is the current token. A missing or unreadable file matches
    /// nothing (and is logged).
    pub fn check(&self, presented: &str) -> bool {
        self.current().is_some_and(|t| t.matches(presented))
    }

    /// The current token, read again if the file changed; none when the file is missing or
    /// is not a token (logged).
    pub fn current(&self) -> Option<Token> {
        let id = match FileId::of(&self.path) {
            Ok(id) => id,
            Err(e) => {
                tracing::error!(
                    "admin token {} unreadable ({e}): every admin request is refused until \
                     `mpfleet token rotate` writes one",
                    self.path.display()
                );
                return None;
            }
        };
        let mut cached = self.cached.lock().expect("token lock");
        if cached.as_ref().is_none_or(|(known, _)| *known != id) {
            let data = self.path.parent().unwrap_or(Path::new("."));
            match read(data) {
                Ok(t) => *cached = Some((id, t)),
                Err(e) => {
                    tracing::error!("{e:#}");
                    *cached = None;
                    return None;
                }
            }
        }
        cached.as_ref().map(|(_, t)| t.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_read_rotate() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let (t, created) = ensure(&data).unwrap();
        assert!(created);
        assert_eq!(t.as_str().len(), 64);
        let (again, created) = ensure(&data).unwrap();
        assert!(!created);
        assert_eq!(again, t);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(path(&data)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let live = Live::new(&data);
        assert!(live.check(t.as_str()));
        assert!(!live.check(&"0".repeat(64)));
        assert!(!live.check(""));
        let new = rotate(&data).unwrap();
        assert_ne!(new, t);
        assert!(live.check(new.as_str()));
        assert!(!live.check(t.as_str()));
        std::fs::write(path(&data), "junk").unwrap();
        assert!(!live.check(new.as_str()));
        std::fs::remove_file(path(&data)).unwrap();
        assert!(!live.check(new.as_str()));
    }

    #[test]
    fn comparison() {
        let t = Token("ab".repeat(32));
        assert!(t.matches(&"ab".repeat(32)));
        assert!(!t.matches(&"ab".repeat(31)));
        assert!(!t.matches(&format!("{}ac", "ab".repeat(31))));
    }
}
