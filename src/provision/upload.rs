//! Writing a file onto a board over the raw REPL, so that a broken link never leaves half a
//! file where the whole one belongs.
//!
//! The bytes go in pieces small enough that each program fits in one of the raw REPL's
//! 256-byte writes: the board's answer to one piece is the flow control for the next (raw
//! mode has none of its own, and a board's UART buffer is small). Each piece says how many
//! bytes it wrote; the whole file is written beside its place (`PATH.part`), its SHA-256
//! computed on the board and compared, and only then renamed into place. A link cut anywhere
//! leaves at most a `.part` file, which the next run truncates. A full flash (`OSError` 28,
//! ENOSPC) is its own error, and its `.part` file is removed.

use super::repl::{Link, RawRepl, ReplError};
use sha2::{Digest, Sha256};

/// Bytes of the file per program: 240 characters of base64, 247 with the call around them.
const PIECE: usize = 180;

#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error("the board's flash is full (OSError 28 writing {0}): free some space on it, or erase it and flash MicroPython again")]
    FlashFull(String),
    #[error("{path} on the board does not hold what was written ({why}): the link is unreliable; try again, or another cable")]
    Mismatch { path: String, why: String },
    #[error(transparent)]
    Repl(#[from] ReplError),
}

/// Whether a traceback is MicroPython's way of saying ENOSPC.
pub fn is_enospc(text: &str) -> bool {
    text.contains("OSError: 28") || text.contains("[Errno 28]") || text.contains("ENOSPC")
}

/// Writes `bytes` to `path` on the board (creating its parent directories), verified and
/// renamed into place; `progress` gets the bytes written so far.
pub fn write_file<L: Link>(
    repl: &mut RawRepl<L>,
    path: &str,
    bytes: &[u8],
    mut progress: impl FnMut(usize),
) -> Result<(), UploadError> {
    let part = format!("{path}.part");
    let mut dirs = String::new();
    let mut at = 0;
    while let Some(i) = path[at + 1..].find('/') {
        at += i + 1;
        dirs.push_str(&format!("_d({:?})\n", &path[..at]));
    }
    let full = |e: ReplError| match e {
        ReplError::Raised(tb) if is_enospc(&tb) => UploadError::FlashFull(path.to_owned()),
        e => e.into(),
    };
    let result = (|| {
        repl.exec(&format!(
            "import os,binascii,hashlib\n\
             def _d(p):\n try:os.mkdir(p)\n except OSError as e:\n  if e.errno!=17:raise\n\
             {dirs}_f=open({part:?},'wb')\n\
             def _w(b):\n print(_f.write(binascii.a2b_base64(b)))\n"
        ))
        .map_err(full)?;
        let mut done = 0;
        for piece in bytes.chunks(PIECE) {
            let said = repl
                .exec(&format!("_w(b'{}')", base64(piece)))
                .map_err(full)?;
            if said.trim() != piece.len().to_string() {
                return Err(UploadError::Mismatch {
                    path: path.to_owned(),
                    why: format!("wrote {:?} of {} bytes", said.trim(), piece.len()),
                });
            }
            done += piece.len();
            progress(done);
        }
        let sha = repl
            .exec(&format!(
                "_f.close()\n\
                 h=hashlib.sha256()\n\
                 with open({part:?},'rb') as f:\n\
                 \x20while 1:\n  b=f.read(256)\n  if not b:break\n  h.update(b)\n\
                 print(binascii.hexlify(h.digest()).decode())\n"
            ))
            .map_err(full)?;
        let want = hex::encode(Sha256::digest(bytes));
        if sha.trim() != want {
            return Err(UploadError::Mismatch {
                path: path.to_owned(),
                why: format!("SHA-256 {} instead of {want}", sha.trim()),
            });
        }
        // littlefs renames over a file atomically; FAT will not rename over one.
        repl.exec(&format!(
            "try:os.rename({part:?},{path:?})\n\
             except OSError:\n os.remove({path:?})\n os.rename({part:?},{path:?})\n"
        ))
        .map_err(full)?;
        Ok(())
    })();
    if matches!(result, Err(UploadError::FlashFull(_))) {
        // Give the space back; the board still answers.
        let _ = repl.exec(&format!(
            "try:\n _f.close()\nexcept Exception:pass\n\
             try:\n os.remove({part:?})\nexcept OSError:pass\n"
        ));
    }
    result
}

/// Standard base64 with padding, as `binascii.a2b_base64` reads it.
fn base64(bytes: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for c in bytes.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(ABC[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_as_python_writes_it() {
        assert_eq!(super::base64(b""), "");
        assert_eq!(super::base64(b"f"), "Zg==");
        assert_eq!(super::base64(b"fo"), "Zm8=");
        assert_eq!(super::base64(b"foo"), "Zm9v");
        assert_eq!(super::base64(b"foob"), "Zm9vYg==");
        assert_eq!(super::base64(&[0xff, 0xfe, 0x00]), "//4A");
    }

    #[test]
    fn a_piece_fits_one_raw_repl_write() {
        let call = format!("_w(b'{}')", super::base64(&[0u8; super::PIECE]));
        assert!(call.len() <= 256, "{}", call.len());
    }
}
