//! Compressed copies of module files, for boards that can afford to inflate them.
//!
//! A board downloads each file it lacks, and most of those bytes are Python source, which
//! gzip shrinks to about 40 %. A board inflates with MicroPython's `deflate.DeflateIO`, whose
//! memory is a window of 2^wbits bytes plus about 1.3 KB of decoder state; a stream made
//! with the usual 32 KiB window cannot be inflated on an ESP8266 at all. So every compressed
//! copy here is gzip made with a window of [`WINDOW_BITS`] (1 KiB): a board inflates it with
//! `DeflateIO(stream, GZIP, WINDOW_BITS)`, and no back-reference reaches further than that.
//!
//! The copies sit beside the files they compress, as `m/{module}/{version}.py.gz` (and
//! `.mpy.gz`): plain static files, so `mpfleet export` on any web server serves them with
//! no configuration. A manifest names a file's copy (`"gz"`) only when it saves at least an
//! eighth of the bytes; a board that does not ask for it, or cannot, gets the plain file as
//! before (`docs/protocol.md`).

use flate2::{Compress, Compression, FlushCompress, Status};

/// log2 of the window the copies are made with, and boards inflate with.
pub const WINDOW_BITS: u8 = 10;

/// `body` as gzip with a 2^[`WINDOW_BITS`]-byte window, or None when that does not save at
/// least an eighth of its bytes (a short file gets longer: the gzip header and trailer alone
/// are 18 bytes).
pub fn gzip(body: &[u8]) -> Option<Vec<u8>> {
    let mut c = Compress::new_gzip(Compression::best(), WINDOW_BITS);
    let mut out = Vec::with_capacity(body.len() / 2 + 64);
    loop {
        let before = c.total_in() as usize;
        let status = c
            .compress_vec(&body[before..], &mut out, FlushCompress::Finish)
            .expect("compressing into memory does not fail");
        if status == Status::StreamEnd {
            break;
        }
        out.reserve(out.capacity().max(64));
    }
    (out.len() + body.len() / 8 <= body.len()).then_some(out)
}

/// The path of a file's compressed copy.
pub fn path(plain: &str) -> String {
    format!("{plain}.gz")
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::{Decompress, FlushDecompress};

    /// Inflates `gz` the way a board does: a 2^WINDOW_BITS window, nothing further back.
    fn inflate(gz: &[u8], size: usize) -> Vec<u8> {
        let mut d = Decompress::new_gzip(WINDOW_BITS);
        let mut out = Vec::with_capacity(size + 16);
        let status = d
            .decompress_vec(gz, &mut out, FlushDecompress::Finish)
            .unwrap();
        assert_eq!(status, Status::StreamEnd);
        assert_eq!(d.total_in() as usize, gz.len(), "trailing bytes");
        out
    }

    #[test]
    fn a_copy_inflates_with_the_small_window_to_the_same_bytes() {
        let source = include_bytes!("../device/installer.py");
        let gz = gzip(source).expect("source compresses");
        assert!(
            gz.len() * 2 < source.len(),
            "{} of {}",
            gz.len(),
            source.len()
        );
        assert_eq!(&gz[..3], &[0x1f, 0x8b, 8], "a gzip header");
        assert_eq!(inflate(&gz, source.len()), source);
        // Repeats further apart than the window still come back right.
        let far: Vec<u8> = (0..20_000u32).map(|i| (i * 7919 % 251) as u8).collect();
        if let Some(gz) = gzip(&far) {
            assert_eq!(inflate(&gz, far.len()), far);
        }
        // The same bytes always make the same copy (its ETag and the export stay stable).
        assert_eq!(gzip(source), Some(gz));
    }

    #[test]
    fn no_copy_when_it_does_not_save_an_eighth() {
        assert_eq!(gzip(b"VALUE = 'one'\n"), None);
        assert_eq!(gzip(b""), None);
        let mut x = 0x2545_f491_4f6c_dd1d_u64;
        let random: Vec<u8> = (0..4096)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect();
        assert_eq!(gzip(&random), None);
    }
}
