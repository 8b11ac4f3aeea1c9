//! The command line, as the user types it (clap derive). Clap parses values straight into
//! the project's checked types (`Mac`, `ModuleName`, `Version`, `GroupName`, `Pair`,
//! `ListenAddr`, through their `FromStr`), so a bad one is a usage error before any command
//! runs.

use crate::manifest::Pair;
use crate::names::{GroupName, ListenAddr, Mac, ModuleName, Version};
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

/// Local-first over-the-air updates for fleets of MicroPython boards.
///
/// Publish versions of your .py modules, say which device (by MAC) runs which, and serve
/// them to your boards over HTTP: they install only what changed, verify it, roll back by
/// themselves when new code crashes, and report what they run.
///
/// Commands that only read (`module list|show`, `device list|show|export`,
/// `group list|show`, `rollout list|show`, `export`) write
/// nothing in the data directory. `serve` and the commands that change the store publish the device
/// runtime this binary carries when it is a newer release than the store runs (never an
/// older one).
#[derive(Debug, Parser)]
#[command(name = "mpfleet", version, after_help = EXAMPLES)]
pub struct Cli {
    /// Data directory: the SQLite database and the module blobs.
    #[arg(
        long,
        global = true,
        env = "MPFLEET_DATA",
        default_value = "mpfleet-data"
    )]
    pub data: PathBuf,

    /// Run `module`, `device`, `group` and `rollout` commands on a running `mpfleet serve` at
    /// URL, through its admin API, instead of on the data directory: same commands, same
    /// output. The admin token comes from MPFLEET_TOKEN (`mpfleet token show` on the server
    /// prints it).
    #[arg(long, global = true, env = "MPFLEET_REMOTE", value_name = "URL")]
    pub remote: Option<String>,

    /// With an https:// --remote: trust this CA certificate (PEM), or the server's own
    /// self-signed certificate, instead of the public CAs.
    #[arg(long, global = true, env = "MPFLEET_CA", value_name = "PEM")]
    pub ca_cert: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

const EXAMPLES: &str = "Examples:
  mpfleet serve                                   serve boards on 0.0.0.0:8080
  mpfleet module publish sensorclass.py           publish the next version of sensorclass
  mpfleet device set DE:AD:BE:EF:12:34 --app smartcharger sensorclass=2
  mpfleet device import devices.csv               many devices at once (CSV or JSON lines)
  mpfleet group create greenhouse --app smartcharger sensorclass=2
  mpfleet device set DE:AD:BE:EF:12:34 --group greenhouse
  mpfleet rollout start greenhouse --to sensorclass=3 --steps 10%,50%,100%
  mpfleet export /srv/www/ota                     the same tree as static files
  MPFLEET_TOKEN=... mpfleet --remote http://fleet.lan:8080 device list   the same, on a server
  mpfleet provision /dev/ttyUSB0 --server http://192.168.1.10:8080/ --app smartcharger
  mpfleet demo                                    see it all at work: a server, 20 simulated boards, two rollouts";

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the modules and manifests to boards over HTTP.
    ///
    /// Prints the bound address on its first line. Boards GET their manifest from
    /// `v1/{mac}.json` and POST what they did to `v1/{mac}/report`. Changes made with other
    /// mpfleet commands while it runs are served within a second. It also runs the rollouts
    /// (`mpfleet rollout`): every 5 s (`MPFLEET_ROLLOUT_TICK`) and as reports arrive.
    ///
    /// On the same port, the admin API (`/admin/api/v1/`, what `--remote` uses) and
    /// `/metrics` (Prometheus) answer only requests carrying the admin token, which `serve`
    /// creates on its first start (`mpfleet token show`); see docs/admin-api.md. Boards'
    /// paths need no token. With --admin-listen, --tls-cert and --tls-key, the admin side is
    /// served over TLS on a port of its own instead (its address on the second line of
    /// output), and the boards' port refuses it; boards keep plain HTTP.
    /// A dashboard for a browser or a phone is at `/admin/`
    /// (http://SERVER:PORT/admin/): open to view; adopting boards and pausing, resuming or
    /// aborting rollouts need the token, given once at /admin/login; see docs/dashboard.md.
    /// With --mqtt, it also publishes, retained, `{"generation": N}` on `mpfleet/{mac}/update`
    /// whenever a device's generation changes (boards running the optional `mpfleet_push`
    /// module update at once instead of at their next poll), and each report's JSON on
    /// `mpfleet/{mac}/state` (for Home Assistant). A broker that is down is retried with a
    /// backoff; serving boards never waits for it.
    ///
    /// Example: mpfleet serve --listen 127.0.0.1:0
    ///
    /// Example: MPFLEET_MQTT=mqtt://mpfleet:PASSWORD@192.168.1.20:1883 mpfleet serve
    ///
    /// Example: mpfleet serve --admin-listen 0.0.0.0:8443 --tls-cert cert.pem --tls-key key.pem
    Serve {
        /// Address and port to listen on (`127.0.0.1:0` picks a free port).
        #[arg(long, env = "MPFLEET_LISTEN", default_value = "0.0.0.0:8080")]
        listen: ListenAddr,
        /// Push to this MQTT broker: mqtt://[user[:password]@]host[:port] (port 1883 if left
        /// out; plain MQTT 3.1.1, no TLS). Set MPFLEET_MQTT instead to keep the password out
        /// of the process list.
        #[arg(long, env = "MPFLEET_MQTT", hide_env_values = true, value_name = "URL")]
        mqtt: Option<String>,
        /// Serve the admin side (the admin API, /admin/ and /metrics) over TLS on this address,
        /// with --tls-cert and --tls-key: the --listen port then serves boards only, and
        /// answers admin paths with 403 naming the https address. Boards keep plain HTTP.
        #[arg(
            long,
            env = "MPFLEET_ADMIN_LISTEN",
            value_name = "ADDR",
            requires_all = ["tls_cert", "tls_key"]
        )]
        admin_listen: Option<ListenAddr>,
        /// The admin side's TLS certificate (PEM; its chain after it, if any).
        #[arg(
            long,
            env = "MPFLEET_TLS_CERT",
            value_name = "PEM",
            requires = "admin_listen"
        )]
        tls_cert: Option<PathBuf>,
        /// The private key of --tls-cert (PEM: PKCS#8, PKCS#1 or SEC1).
        #[arg(
            long,
            env = "MPFLEET_TLS_KEY",
            value_name = "PEM",
            requires = "admin_listen"
        )]
        tls_key: Option<PathBuf>,
    },
    /// Publish, list and inspect module versions.
    #[command(subcommand)]
    Module(ModuleCommand),
    /// Say which device runs what, and see what each device reported.
    #[command(subcommand)]
    Device(DeviceCommand),
    /// Groups of devices that run the same thing (a device's own pins win over its group's).
    #[command(subcommand)]
    Group(GroupCommand),
    /// Move a group to new versions a few boards at a time, stopping by itself on failures.
    ///
    /// The rollout runs inside `mpfleet serve` (and carries on after a restart of it): each
    /// step moves a share of the group, and the next starts once every board of the step
    /// reported `updated` and stayed healthy for --healthy-after.
    #[command(subcommand)]
    Rollout(RolloutCommand),
    /// Write what `serve` serves to boards as static files in DIR.
    ///
    /// For nginx, Home Assistant's `www/` folder or any web server: boards read the same
    /// bytes as from `serve` (reports need `serve`). The tree is built beside DIR and swapped
    /// in at once; DIR must be new, empty, or an earlier export. Export only reads the store.
    ///
    /// Example: mpfleet export /config/www/ota   (boards then use http://ha.local:8123/local/ota/)
    Export {
        /// Directory to write the tree into.
        dir: PathBuf,
    },
    /// The admin token, which the admin API (`/admin/api/v1/`) and `/metrics` of `serve` ask for.
    ///
    /// `serve` creates it on its first start, in `admin-token` in the data directory
    /// (readable by its owner only). Clients send it as `Authorization: Bearer TOKEN`; the
    /// CLI with `--remote` reads it from MPFLEET_TOKEN.
    ///
    /// Example: export MPFLEET_TOKEN=$(mpfleet token show)
    #[command(subcommand)]
    Token(TokenCommand),
    /// Make a MicroPython board on a USB serial port a member of the fleet, in one go.
    ///
    /// Opens PORT (115200 baud), interrupts what the board runs (Ctrl-C) and enters its raw
    /// REPL, reads its Wi-Fi MAC, creates its device (--app, MODULE=VERSION pairs as in
    /// `device set`) or adopts the one that exists (same key; --app changes what it runs),
    /// writes its bootstrap onto the board (in verified pieces, renamed into place) and runs
    /// it: the board stores its settings (server, key) in /ota.json, installs the runtime and
    /// its app from the server, and resets into the app. Needs `mpfleet serve` running on
    /// this store at --server, and a boot.py on the board that joins your Wi-Fi. Safe to
    /// run again, also after an interrupted run. Progress goes to stderr, one line of result
    /// to stdout.
    ///
    /// Example: mpfleet provision /dev/ttyUSB0 --server http://192.168.1.10:8080/ --app blink
    Provision(Box<ProvisionArgs>),
    /// Boot simulated boards (the real MicroPython unix port) against a server.
    Sim(Box<crate::sim::SimArgs>),
    /// See the whole product in a minute: a server, simulated boards, two rollouts.
    ///
    /// Starts `serve` on a temporary store, publishes a small app, boots --boards simulated
    /// boards that poll it, rolls out a good version to every board step by step, then a bad
    /// one that pauses itself at its first step (its boards go back by themselves, the others
    /// are untouched), and prints the dashboard's address and the admin token. Then it serves
    /// on until Ctrl-C, which stops the boards and the server and deletes the store.
    ///
    /// Example: mpfleet demo
    Demo(Box<crate::demo::DemoArgs>),
    /// Print the shell completion script for SHELL (bash, zsh, fish, elvish, powershell).
    ///
    /// Example: mpfleet completions bash > ~/.local/share/bash-completion/completions/mpfleet
    Completions {
        /// The shell to complete for.
        shell: clap_complete::Shell,
    },
    /// Print the manual page mpfleet(1) as roff, or write one page per command to --dir.
    ///
    /// Example: mpfleet man --dir ~/.local/share/man/man1   (then `man mpfleet-device-set`)
    Man {
        /// Write mpfleet.1 and a page per subcommand (mpfleet-device-set.1, ...) here instead.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Print the admin token (creating it if the store has none yet).
    Show,
    /// Replace the admin token with a new random one: the old one stops working at once,
    /// on a running `serve` too (no restart).
    Rotate,
}

#[derive(Debug, Subcommand)]
pub enum ModuleCommand {
    /// Publish one or more .py files as new module versions.
    ///
    /// The module name is the file's stem unless --name is given; the version is one more
    /// than the highest numeric version of that module unless --version is given. Versions
    /// are immutable: the same version with other bytes is refused; the same bytes again is
    /// a no-op. `latest` moves to the new version unless --no-latest. Several files are
    /// published together: if one is refused, none is.
    ///
    /// Example: mpfleet module publish sensorclass.py mqttclass.py
    Publish {
        /// The .py files to publish.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Module name (a Python identifier); only with a single file.
        #[arg(long)]
        name: Option<ModuleName>,
        /// Version to publish as (1 to 32 of A-Z a-z 0-9 . _ -).
        #[arg(long)]
        version: Option<Version>,
        /// Keep `latest` where it is.
        #[arg(long)]
        no_latest: bool,
    },
    /// List modules with their latest version.
    List(ListArgs),
    /// Show one module's versions, sizes, hashes, latest, and which devices run each.
    ///
    /// Example: mpfleet module show sensorclass
    Show {
        name: ModuleName,
        #[command(flatten)]
        list: ListArgs,
    },
    /// Point a module's `latest` at one of its versions (every device tracking latest follows).
    ///
    /// Example: mpfleet module latest sensorclass 2
    Latest { name: ModuleName, version: Version },
}

#[derive(Debug, Subcommand)]
pub enum DeviceCommand {
    /// Set what a device runs: its app module and MODULE=VERSION pairs, or a group.
    ///
    /// VERSION is a published version or `latest`. The app is added at latest if not
    /// listed, and so are the runtime modules `config` and `updater`.
    ///
    /// With --group the device runs its group's manifest, with the pairs given here (and
    /// --app, if given) laid over it: a module named here keeps this version whatever the
    /// group (or a rollout in it) says; every other module follows the group. Each `device
    /// set` says everything about the device: without --group it leaves its group.
    ///
    /// Example: mpfleet device set DE:AD:BE:EF:12:34 --app smartcharger sensorclass=2 mqttclass=latest
    ///
    /// Example: mpfleet device set DE:AD:BE:EF:12:34 --group greenhouse sensorclass=2
    Set {
        /// The device's Wi-Fi MAC, in any common form (deadbeef1234, DE:AD:BE:EF:12:34, ...).
        mac: Mac,
        /// The application module the board runs at boot (with --group: instead of the group's).
        #[arg(long, required_unless_present = "group")]
        app: Option<ModuleName>,
        /// The group the device belongs to (`mpfleet group create` makes one).
        #[arg(long)]
        group: Option<GroupName>,
        /// MODULE=VERSION pairs (VERSION may be `latest`).
        modules: Vec<Pair>,
    },
    /// Set many devices at once from FILE (`-` for stdin): all of them, or none.
    ///
    /// The format is told by content: if the first non-blank line starts with `{`, each line
    /// is JSON, `{"mac": "deadbeef1234", "app": "smartcharger", "modules": {"sensorclass":
    /// "2"}}` ("modules" may be left out), as `device export` prints; otherwise the first line
    /// is the CSV header `mac,app,modules` and each line after it `MAC,APP,PAIRS`, where PAIRS
    /// is space-separated MODULE=VERSION (may be empty). A device in a group: a "group" key,
    /// or the header `mac,app,modules,group` and a fourth field; its app may then be empty and
    /// its modules are its own pins over the group's. Every line is checked (MAC, names,
    /// versions published, groups exist, no MAC twice, at most 64 modules) before anything is
    /// written; an error names its line and nothing is imported. Devices already in the store are updated
    /// and keep their keys; new ones get a key each. One transaction, however many lines.
    ///
    /// Example: mpfleet device import devices.csv   (devices.csv: `mac,app,modules` then `DE:AD:BE:EF:12:34,smartcharger,sensorclass=2`)
    Import {
        /// The file to read, or `-` for standard input.
        file: PathBuf,
    },
    /// Print every device as a JSON line, the format `device import` reads (keys excluded).
    ///
    /// Example: mpfleet device export > devices.jsonl   (and back: mpfleet device import devices.jsonl)
    Export,
    /// List devices (or, with --unknown, MACs that asked but are not devices yet).
    List {
        /// List MACs that asked for a manifest but have none.
        #[arg(long)]
        unknown: bool,
        #[command(flatten)]
        list: ListArgs,
    },
    /// Show a device: desired and resolved manifest, last report, last seen, recent reports.
    Show {
        mac: Mac,
        #[command(flatten)]
        list: ListArgs,
    },
    /// Forget a device and its reports.
    Rm { mac: Mac },
    /// Print the bootstrap for one board: bootstrap.py with the server, this device's key and
    /// the store's identity filled in. Run it on the board once, over the cable.
    ///
    /// It holds the device's secret key: do not keep it or commit it anywhere. The board keeps
    /// the key in /ota.json and from then on accepts only manifests signed with it.
    ///
    /// Example: mpfleet device bootstrap DE:AD:BE:EF:12:34 --server http://192.168.1.10:8080/ > bootstrap.py && mpremote run bootstrap.py
    Bootstrap {
        mac: Mac,
        /// The URL boards reach the server at (what `serve` listens on, as the board sees it,
        /// or where an export is served).
        #[arg(
            long,
            env = "MPFLEET_SERVER",
            default_value = "http://mpfleet.local:8080/"
        )]
        server: String,
        /// A JSON object of this board's own secrets (Wi-Fi password, API tokens...): the
        /// bootstrap writes it to the board's /secrets.json, which no update touches and no
        /// server serves. Modules are served to anyone on the LAN: keep secrets out of them.
        #[arg(long, value_name = "FILE")]
        secrets: Option<PathBuf>,
    },
    /// Show a device's key fingerprint, or give it a new key with --rotate.
    ///
    /// After --rotate the board refuses every manifest (and the server its reports) until it
    /// runs its new bootstrap (`mpfleet device bootstrap MAC`) over the cable.
    Key {
        mac: Mac,
        /// Replace the key with a new random one.
        #[arg(long)]
        rotate: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum GroupCommand {
    /// Create a group: the app and MODULE=VERSION pairs its devices run.
    ///
    /// Devices join with `mpfleet device set MAC --group NAME` (or a group column in
    /// `device import`); a device's own pins win over the group's.
    ///
    /// Example: mpfleet group create greenhouse --app smartcharger sensorclass=2
    Create {
        /// The group's name (1 to 64 of A-Z a-z 0-9 . _ -, not only digits).
        name: GroupName,
        /// The application module the group's boards run at boot.
        #[arg(long)]
        app: ModuleName,
        /// MODULE=VERSION pairs (VERSION may be `latest`).
        modules: Vec<Pair>,
    },
    /// Replace a group's MODULE=VERSION pairs (and its app, with --app).
    ///
    /// Every member whose resolved manifest changes gets a new generation, and only those: a
    /// member that pins the module itself keeps its version.
    ///
    /// Example: mpfleet group set greenhouse sensorclass=3
    Set {
        name: GroupName,
        /// A new application module (default: keep the group's).
        #[arg(long)]
        app: Option<ModuleName>,
        /// MODULE=VERSION pairs (VERSION may be `latest`); they replace the group's.
        modules: Vec<Pair>,
    },
    /// Show a group: its pins, the desired manifest they make, and its devices.
    Show {
        name: GroupName,
        #[command(flatten)]
        list: ListArgs,
    },
    /// List groups with their app, pins and number of devices.
    List(ListArgs),
    /// Delete a group that has no devices.
    Delete { name: GroupName },
}

#[derive(Debug, Subcommand)]
pub enum RolloutCommand {
    /// Start moving GROUP to the --to versions, step by step.
    ///
    /// Each step moves boards until that share of the group has been moved, always in the
    /// same order (by a hash of the MAC). The next step starts when every moved board
    /// reported `updated` for its new generation and then stayed healthy (no `rolled_back` or
    /// `update_failed`) for --healthy-after. A board failing (`update_failed`, `rolled_back`,
    /// or no `updated` within --deadline) counts against --max-failures: past it, the
    /// rollout pauses by itself, says why, and moves no more boards. At the last step the
    /// group itself takes the new versions. A device's own pins still win. Boards that join
    /// the group while it runs are moved when the step's share needs them (every one at 100%).
    ///
    /// Example: mpfleet rollout start greenhouse --to sensorclass=3 --steps 10%,50%,100% --max-failures 1
    Start {
        /// The group to move.
        group: GroupName,
        /// MODULE=VERSION: a published version (not `latest`). Repeat for several modules.
        #[arg(long = "to", required = true, value_name = "MODULE=VERSION")]
        to: Vec<Pair>,
        /// Shares of the group, growing, the last 100%.
        #[arg(long, default_value = crate::ops::rollout::DEFAULT_STEPS)]
        steps: String,
        /// Failed boards tolerated before the rollout pauses: a number or a share of the
        /// group (10%).
        #[arg(long, default_value = crate::ops::rollout::DEFAULT_MAX_FAILURES, value_name = "N|P%")]
        max_failures: String,
        /// How long a board must run its new versions, after reporting `updated`, without a
        /// failure (30s, 10m, 2h, 1d).
        #[arg(long, default_value = crate::ops::rollout::DEFAULT_HEALTHY_AFTER, value_name = "DURATION")]
        healthy_after: String,
        /// How long a moved board has to report `updated` before it counts as failed.
        #[arg(long, default_value = crate::ops::rollout::DEFAULT_DEADLINE, value_name = "DURATION")]
        deadline: String,
    },
    /// List rollouts, newest first.
    List(ListArgs),
    /// Show a rollout: its step, its boards and how each is doing, why it paused.
    ///
    /// ROLLOUT is a rollout's number or a group's name (its latest rollout).
    Show {
        rollout: String,
        #[command(flatten)]
        list: ListArgs,
    },
    /// Pause a running rollout: no more boards move (the moved ones keep their versions).
    Pause { rollout: String },
    /// Resume a paused rollout; the boards that had failed are forgiven.
    Resume { rollout: String },
    /// Abort a rollout: every board it moved goes back to the group's versions, as a new
    /// generation.
    Abort { rollout: String },
}

#[derive(Debug, Args)]
pub struct ProvisionArgs {
    /// The board's serial port: /dev/ttyUSB0 or /dev/ttyACM0 on Linux,
    /// /dev/cu.usbserial-* on macOS.
    pub port: String,
    /// The URL the board reaches the server at (what `serve` listens on, as the board sees
    /// it, or where an export is served).
    #[arg(
        long,
        env = "MPFLEET_SERVER",
        default_value = "http://mpfleet.local:8080/"
    )]
    pub server: String,
    /// The application module the board runs (needed when the board is not a device yet;
    /// given for one that is, it replaces what that device runs, as `device set` does).
    #[arg(long)]
    pub app: Option<ModuleName>,
    /// MODULE=VERSION pairs, as in `device set` (VERSION may be `latest`); with --app.
    #[arg(requires = "app")]
    pub modules: Vec<Pair>,
    /// A JSON object of this board's own secrets (Wi-Fi password, tokens...), written to its
    /// /secrets.json, as `device bootstrap --secrets`.
    #[arg(long, value_name = "FILE")]
    pub secrets: Option<PathBuf>,
    /// Seconds the board may take to answer before it counts as not answering.
    #[arg(long, value_name = "SECONDS", default_value_t = 5.0)]
    pub timeout: f64,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Print JSON for scripts instead of a table.
    #[arg(long)]
    pub json: bool,
}
