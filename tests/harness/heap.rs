//! The smallest heap a board needs for something, by search over `--heap` in steps of
//! [`STEP`] bytes.

use super::ImageBoard;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// The resolution of every heap figure, in bytes. Finer than the 1 KiB a figure moves by when
/// the simulator or the runtime changes a little, so that a figure and the floor it is
/// compared with are not each rounded up by most of a KiB.
pub const STEP: u32 = 256;

/// `bytes` as KiB for people: `35.25k`.
pub fn kib(bytes: u32) -> String {
    let s = format!("{:.2}", f64::from(bytes) / 1024.0);
    format!("{}k", s.trim_end_matches('0').trim_end_matches('.'))
}

/// The smallest heap (bytes, a multiple of [`STEP`]) in `lo..=hi` for which `ok(bytes)` holds
/// (a board succeeds with `--heap {bytes}`), assuming it holds for every heap above one where
/// it holds; `None` when it holds nowhere in the range. Each round probes `parallel` heaps at
/// once, evenly spaced over what is still undecided, so a range of R steps takes about
/// log_{parallel+1}(R) rounds. Every probe is logged to stderr (`heap WHAT: 40.25k ok`).
pub fn min_heap(
    what: &str,
    lo: u32,
    hi: u32,
    parallel: usize,
    ok: impl Fn(u32) -> bool + Sync,
) -> Option<u32> {
    let parallel = parallel.max(1) as u32;
    // In steps: every heap below `lo` fails; `best` is the smallest known to succeed.
    let mut lo = lo.div_ceil(STEP);
    let hi = hi / STEP;
    let mut best: Option<u32> = None;
    let mut probes = 0;
    loop {
        let end = best.unwrap_or(hi + 1);
        if lo >= end {
            break;
        }
        let span = end - lo;
        let mut points: Vec<u32> = (1..=parallel)
            .map(|i| lo + (span * i / (parallel + 1)).min(span - 1))
            .collect();
        points.dedup();
        let results: Vec<(u32, bool)> = std::thread::scope(|s| {
            let handles: Vec<_> = points
                .iter()
                .map(|&k| {
                    let ok = &ok;
                    s.spawn(move || (k, ok(k * STEP)))
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        probes += results.len();
        for (k, good) in results {
            eprintln!(
                "heap {what}: {} {}",
                kib(k * STEP),
                if good { "ok" } else { "fails" }
            );
            if good {
                best = Some(best.map_or(k, |b| b.min(k)));
            } else {
                lo = lo.max(k + 1);
            }
        }
    }
    eprintln!(
        "heap {what}: {} after {probes} probes",
        best.map_or(
            format!("fails at every heap up to {}", kib(hi * STEP)),
            |k| format!("smallest {}", kib(k * STEP))
        )
    );
    best.map(|k| k * STEP)
}

/// The MicroPython unix port the simulator runs: `MPFLEET_MICROPYTHON`, or on `PATH`.
fn micropython() -> std::path::PathBuf {
    if let Some(p) = std::env::var_os("MPFLEET_MICROPYTHON") {
        return p.into();
    }
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|d| d.join("micropython"))
        .find(|p| p.is_file())
        .expect("micropython not found: run the tests through ./test.sh")
}

/// Writes a fresh littlefs2 image of `blocks` 4 KiB blocks, as the simulated flash formats
/// it, holding only `files` (name, content) at its root.
pub fn littlefs_image(image: &Path, blocks: u32, files: &[(&str, &str)]) {
    let mut script = String::from(
        "import sys, vfs\n\
         class Dev:\n\
         \x20 def __init__(s, f, n): s.f = f; s.n = n\n\
         \x20 def readblocks(s, b, buf, off=0): s.f.seek(b * 4096 + off); s.f.readinto(buf)\n\
         \x20 def writeblocks(s, b, buf, off=0): s.f.seek(b * 4096 + off); s.f.write(buf)\n\
         \x20 def ioctl(s, op, arg):\n\
         \x20   if op == 4: return s.n\n\
         \x20   if op == 5: return 4096\n\
         \x20   if op == 6: s.f.seek(arg * 4096); s.f.write(b'\\xff' * 4096); return 0\n\
         f = open(sys.argv[1], 'w+b')\n\
         n = int(sys.argv[2])\n\
         for i in range(n): f.write(b'\\xff' * 4096)\n\
         d = Dev(f, n)\n\
         vfs.VfsLfs2.mkfs(d)\n\
         fs = vfs.VfsLfs2(d)\n",
    );
    for (name, content) in files {
        script.push_str(&format!(
            "w = fs.open({name:?}, 'w'); w.write({content:?}); w.close()\n"
        ));
    }
    script.push_str("f.close()\n");
    let out = super::process::output_within(
        Command::new(micropython())
            .args(["-X", "heapsize=1m", "-c", &script])
            .arg(image)
            .arg(blocks.to_string()),
        &format!("micropython writing {}", image.display()),
        Duration::from_secs(60),
    );
    assert!(
        out.status.success(),
        "writing {}: {}{}",
        image.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A board that boots `image` (a copy) at `--heap {bytes}`, unconnected.
pub fn image_board_at(image: &Path, dir: &Path, mac: &str, bytes: u32) -> ImageBoard {
    let mut b = ImageBoard::new(dir.to_path_buf(), mac);
    std::fs::copy(image, b.image()).unwrap();
    b.heap = bytes.to_string();
    b
}
