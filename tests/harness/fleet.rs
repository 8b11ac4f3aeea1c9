//! One store in a temporary directory, and the CLI run as a user runs it.

use super::{Server, BIN};
use std::path::PathBuf;
use std::process::Command;

/// One store in a temporary directory, and the CLI pointed at it.
pub struct Fleet {
    pub dir: tempfile::TempDir,
    /// Environment every CLI run of this fleet, and its server, gets (before any per-run
    /// variables, which win).
    env: Vec<(String, String)>,
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Default for Fleet {
    fn default() -> Self {
        Self::new()
    }
}

impl Fleet {
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("tempdir"),
            env: Vec::new(),
        }
    }

    /// A fleet whose CLI runs and server never precompile (`MPFLEET_MPY_CROSS=""`), from the
    /// very first open of its store on (which publishes the runtime the binary carries): a
    /// server without `mpy-cross`, whose boards get every module, the runtime included, as
    /// source.
    pub fn without_mpy_cross() -> Self {
        let mut f = Self::new();
        f.set_env("MPFLEET_MPY_CROSS", "");
        f
    }

    /// Sets `key=value` for every later CLI run of this fleet and its servers.
    pub fn set_env(&mut self, key: &str, value: &str) {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.to_owned(), value.to_owned()));
    }

    /// The environment every run of this fleet gets.
    pub fn env(&self) -> &[(String, String)] {
        &self.env
    }

    /// The seed's modules: `smartcharger` 1 (importing `sensorclass`) and `sensorclass` 1
    /// and 2.
    pub fn smartcharger() -> Self {
        let f = Self::new();
        f.publish("smartcharger", "import sensorclass\n", &[]);
        f.publish("sensorclass", "x = 1\n", &[]);
        f.publish("sensorclass", "x = 2\n", &[]);
        f
    }

    /// The secret key of device `mac`, read from its bootstrap as a user gets it.
    pub fn key(&self, mac: &str) -> mpfleet::store::DeviceKey {
        let bootstrap = self.ok(&["device", "bootstrap", mac]);
        let line = bootstrap
            .lines()
            .find(|l| l.starts_with("KEY = "))
            .unwrap_or_else(|| panic!("no KEY line in the bootstrap:\n{bootstrap}"));
        mpfleet::store::DeviceKey::from_hex(line[6..].split('"').nth(1).unwrap()).unwrap()
    }

    pub fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Writes a file in the fleet's scratch directory and returns its path.
    pub fn file(&self, name: &str, content: &str) -> PathBuf {
        let p = self.dir.path().join("src").join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, content).unwrap();
        p
    }

    pub fn run(&self, args: &[&str]) -> Run {
        self.run_env(args, &[])
    }

    /// Runs with extra environment variables.
    pub fn run_env(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let out = Command::new(BIN)
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .envs(env.iter().copied())
            .env("MPFLEET_DATA", self.data())
            .env_remove("RUST_LOG")
            .current_dir(self.dir.path())
            .output()
            .expect("running mpfleet");
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Runs and expects success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let r = self.run(args);
        assert_eq!(
            r.code, 0,
            "mpfleet {args:?} failed\nstdout:\n{}\nstderr:\n{}",
            r.stdout, r.stderr
        );
        r.stdout
    }

    /// Runs and expects failure; returns stderr, which must be one clear `error:` line.
    pub fn fails(&self, args: &[&str]) -> String {
        let r = self.run(args);
        assert_ne!(
            r.code, 0,
            "mpfleet {args:?} should fail\nstdout:\n{}",
            r.stdout
        );
        assert!(
            !r.stderr.contains("panicked"),
            "mpfleet {args:?} panicked:\n{}",
            r.stderr
        );
        r.stderr
    }

    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let out = self.ok(args);
        serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("{args:?} printed bad JSON ({e}):\n{out}"))
    }

    /// Publishes `name` with `content`; returns the CLI's output.
    pub fn publish(&self, name: &str, content: &str, extra: &[&str]) -> String {
        let f = self.file(&format!("{name}.py"), content);
        let mut args = vec!["module", "publish", f.to_str().unwrap()];
        args.extend_from_slice(extra);
        self.ok(&args)
    }

    /// A real `mpfleet serve` on this store, with this fleet's environment.
    pub fn serve(&self) -> Server {
        Server::start_env(&self.data(), &self.env)
    }
}
