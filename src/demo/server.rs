//! The demo's server: the real `mpfleet serve` (this same binary) run as a child process on
//! the demo's store, so the demo shows exactly what a user's `serve` does, and Ctrl-C in the
//! terminal stops it as it stops any `serve`.

use anyhow::{bail, Context, Result};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How often the demo's server runs its rollouts (besides each time reports arrive).
const ROLLOUT_TICK: &str = "500ms";

/// How long the server may take to say it listens.
const START: Duration = Duration::from_secs(30);

pub struct Server {
    child: Child,
    /// `http://127.0.0.1:PORT/`: where the boards and the admin API reach it.
    pub base: String,
}

impl Server {
    /// Starts `mpfleet serve --listen LISTEN` on `data`; returns once it listens, or fails
    /// with what it said (an address in use, say).
    pub fn start(data: &Path, listen: &str) -> Result<Self> {
        let exe = std::env::current_exe().context("finding the mpfleet binary")?;
        let mut cmd = Command::new(exe);
        cmd.arg("serve")
            .arg("--listen")
            .arg(listen)
            .arg("--data")
            .arg(data)
            .env("MPFLEET_ROLLOUT_TICK", ROLLOUT_TICK)
            .env_remove("MPFLEET_MQTT")
            .env_remove("MPFLEET_REMOTE")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "warn");
        }
        #[cfg(target_os = "linux")]
        {
            use std::os::unix::process::CommandExt;
            // If the demo dies without cleaning up (SIGKILL), its server goes with it.
            unsafe {
                cmd.pre_exec(|| {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                    Ok(())
                });
            }
        }
        let mut child = cmd.spawn().context("starting `mpfleet serve`")?;
        // What it says on stderr: kept until it listens (for the error), then passed on.
        let said: Arc<Mutex<Option<Vec<String>>>> = Arc::new(Mutex::new(Some(Vec::new())));
        let stderr = child.stderr.take().expect("piped");
        let reader = {
            let said = said.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    match said.lock().expect("stderr lock").as_mut() {
                        Some(lines) => lines.push(line),
                        None => eprintln!("serve: {line}"),
                    }
                }
            })
        };
        let stdout = child.stdout.take().expect("piped");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines().map_while(Result::ok);
            let _ = tx.send(lines.next());
            // Nothing else is expected; read on so that it never blocks on a full pipe.
            for _ in lines {}
        });
        let first = rx.recv_timeout(START).ok().flatten();
        let base = first.as_deref().and_then(|l| {
            l.strip_prefix("mpfleet listening on ")
                .map(|url| local_url(url.trim()))
        });
        let Some(base) = base else {
            let _ = child.kill();
            let _ = child.wait();
            // The process is gone: its stderr ends, and the reader has all of it.
            let _ = reader.join();
            let lines = said.lock().expect("stderr lock").take().unwrap_or_default();
            let why = lines
                .iter()
                .rev()
                .find_map(|l| l.strip_prefix("error: "))
                .map(str::to_owned)
                .unwrap_or_else(|| lines.join("\n"));
            bail!("the demo's server did not start: {why}");
        };
        // From now on what it logs goes straight to our stderr.
        if let Some(lines) = said.lock().expect("stderr lock").take() {
            for l in lines {
                eprintln!("serve: {l}");
            }
        }
        Ok(Self { child, base })
    }

    /// Stops it as Ctrl-C or systemd would (SIGTERM: requests in progress finish, every
    /// report is written) and waits for it.
    pub fn stop(mut self) {
        if let Ok(None) = self.child.try_wait() {
            unsafe {
                libc::kill(self.child.id() as i32, libc::SIGTERM);
            }
        }
        let _ = self.child.wait();
    }
}

/// The URL clients on this machine use for a server that printed `url`: a wildcard address
/// (`0.0.0.0`, `[::]`) is reached on loopback.
fn local_url(url: &str) -> String {
    url.replacen("//0.0.0.0:", "//127.0.0.1:", 1)
        .replacen("//[::]:", "//[::1]:", 1)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_wildcard_address_is_reached_on_loopback() {
        assert_eq!(
            super::local_url("http://0.0.0.0:8080/"),
            "http://127.0.0.1:8080/"
        );
        assert_eq!(super::local_url("http://[::]:80/"), "http://[::1]:80/");
        assert_eq!(
            super::local_url("http://127.0.0.1:5/"),
            "http://127.0.0.1:5/"
        );
    }
}
