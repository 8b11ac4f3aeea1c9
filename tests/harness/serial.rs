//! A simulated board on a serial port, for `mpfleet provision`: the MicroPython unix port
//! with the simulator's shims (`network` says the board's MAC, `machine.reset()` ends the
//! process with 42, the flash is a host directory mounted at `/`) at its REPL, on one
//! pseudo-terminal; a second pseudo-terminal is the cable, its slave (`/dev/pts/N`) the port
//! `provision` opens, and the harness relays bytes between the two. After `machine.reset()`
//! the board boots on the same line as `mpfleet sim` boots it (`board.py`: `/main.py`, then
//! the app). The cable can be pulled after a given number of bytes towards the board (the
//! board dies with it, as one unplugged does); [`SerialPort::silent`] is a port where
//! nothing answers and [`SerialPort::cat`] one where something that is not MicroPython does.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// A pseudo-terminal in raw mode (no echo, no line editing, no `\n` to `\r\n`), as a serial
/// line is: (master, slave, the slave's path).
fn pty() -> (File, OwnedFd, String) {
    let (mut master, mut slave) = (0, 0);
    let mut name = [0 as libc::c_char; 128];
    // SAFETY: openpty writes two fds and the slave's name (128 bytes is ample) into the given
    // buffers; the termios and winsize pointers may be null.
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            name.as_mut_ptr(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: a zeroed termios filled by tcgetattr on a valid fd.
    unsafe {
        let mut t: libc::termios = std::mem::zeroed();
        assert_eq!(libc::tcgetattr(slave, &mut t), 0);
        libc::cfmakeraw(&mut t);
        assert_eq!(libc::tcsetattr(slave, libc::TCSANOW, &t), 0);
    }
    // SAFETY: name is NUL-terminated by openpty.
    let path = unsafe { std::ffi::CStr::from_ptr(name.as_ptr()) }
        .to_string_lossy()
        .into_owned();
    // SAFETY: both fds are fresh and owned by nothing else.
    unsafe { (File::from_raw_fd(master), OwnedFd::from_raw_fd(slave), path) }
}

/// What to set up the board's REPL with: the shims, then the flash at `/` (as `board.py`
/// does before it runs `/main.py`), then `micropython -i` leaves it at the REPL.
const REPL_SETUP: &str = "import machine, network, socket, time, simsetup, sys\n\
                          simsetup._mount()\n\
                          sys.path[:] = ['/', '/lib']\n\
                          del sys.modules['simsetup']\n";

/// A serial port with a board (or something else, or nothing) on it.
pub struct SerialPort {
    /// What `mpfleet provision` opens.
    pub path: String,
    /// The board's flash (for a board).
    pub flash: PathBuf,
    stop: Arc<AtomicBool>,
    child: Arc<Mutex<Option<Child>>>,
    /// Keeps the cable's slave open, so its master never reads end-of-file between openers.
    _cable_slave: OwnedFd,
    threads: Vec<JoinHandle<()>>,
    /// Everything the board said, for a failing test's message.
    pub said: Arc<Mutex<Vec<u8>>>,
}

impl SerialPort {
    /// A board with MAC `mac` whose flash is the directory `flash` (created if missing), its
    /// RTC memory and watchdog files in `state`. `cut_after`: the cable is pulled once that
    /// many bytes went towards the board.
    pub fn board(mac: &str, flash: &Path, state: &Path, cut_after: Option<usize>) -> Self {
        std::fs::create_dir_all(flash).unwrap();
        Self::start(mac, ("MPFLEET_FLASH_DIR", flash), state, cut_after, &[])
    }

    /// A board whose flash is the littlefs2 image `image` (see `littlefs_image`).
    pub fn board_on_image(mac: &str, image: &Path, state: &Path) -> Self {
        Self::start(mac, ("MPFLEET_FLASH_IMG", image), state, None, &[])
    }

    /// A board as [`SerialPort::board`] with more of the simulator's environment
    /// (`MPFLEET_PORT_VERSION`...).
    pub fn board_with_env(mac: &str, flash: &Path, state: &Path, env: &[(&str, &str)]) -> Self {
        std::fs::create_dir_all(flash).unwrap();
        Self::start(mac, ("MPFLEET_FLASH_DIR", flash), state, None, env)
    }

    fn start(
        mac: &str,
        flash: (&str, &Path),
        state: &Path,
        cut_after: Option<usize>,
        extra: &[(&str, &str)],
    ) -> Self {
        std::fs::create_dir_all(state).unwrap();
        let micropython =
            std::env::var("MPFLEET_MICROPYTHON").unwrap_or_else(|_| "micropython".into());
        let shims = mpfleet::sim::shims_dir().expect("the simulator's shims");
        let setup = state.join("repl_setup.py");
        std::fs::write(&setup, REPL_SETUP).unwrap();
        let env: Vec<(String, String)> = [
            ("MICROPYPATH".into(), shims.display().to_string()),
            (flash.0.into(), flash.1.display().to_string()),
            ("MPFLEET_MAC".into(), mac.into()),
            (
                "MPFLEET_RTC".into(),
                state.join(format!("{mac}.rtc")).display().to_string(),
            ),
            (
                "MPFLEET_WDT".into(),
                state.join(format!("{mac}.wdt")).display().to_string(),
            ),
            ("MPFLEET_PORT".into(), "esp32".into()),
        ]
        .into_iter()
        .chain(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())))
        .collect();
        let (board_master, board_slave, _) = pty();
        let stop = Arc::new(AtomicBool::new(false));
        let child: Arc<Mutex<Option<Child>>> = Arc::default();
        // The board: its REPL first; after each machine.reset() (exit 42) a boot as
        // `mpfleet sim` boots, until it ends otherwise or the port is dropped.
        let runner = {
            let (stop, child) = (stop.clone(), child.clone());
            let heap = "-X heapsize=256k".split(' ').collect::<Vec<_>>();
            let first: Vec<String> = vec!["-i".into(), setup.display().to_string()];
            let again: Vec<String> = vec![shims.join("board.py").display().to_string()];
            std::thread::spawn(move || {
                let mut args = first;
                let mut cause = "power";
                loop {
                    {
                        let mut slot = child.lock().unwrap();
                        if stop.load(Ordering::SeqCst) {
                            return;
                        }
                        let io = || Stdio::from(board_slave.try_clone().unwrap());
                        *slot = Some(
                            Command::new(&micropython)
                                .args(&heap)
                                .args(&args)
                                .envs(env.iter().map(|(k, v)| (k, v)))
                                .env("MPFLEET_RESET_CAUSE", cause)
                                .stdin(io())
                                .stdout(io())
                                .stderr(io())
                                .spawn()
                                .expect("starting micropython"),
                        );
                    }
                    let status = loop {
                        match child.lock().unwrap().as_mut() {
                            // Unplugged, or the port dropped.
                            None => return,
                            Some(c) => {
                                if let Ok(Some(s)) = c.try_wait() {
                                    break s;
                                }
                            }
                        }
                        std::thread::sleep(Duration::from_millis(10));
                    };
                    if status.code() != Some(42) {
                        return;
                    }
                    args = again.clone();
                    cause = "reset";
                }
            })
        };
        let mut port = Self::relay(board_master, cut_after, stop.clone(), child.clone());
        port.flash = flash.1.to_owned();
        port.threads.push(runner);
        port
    }

    /// A port where nothing answers.
    pub fn silent() -> Self {
        let (master, slave, path) = pty();
        let stop = Arc::new(AtomicBool::new(false));
        let said = Arc::new(Mutex::new(Vec::new()));
        // Reads (and drops) what is sent, so writes never block, and answers nothing.
        let t = {
            let stop = stop.clone();
            let mut master = master;
            std::thread::spawn(move || {
                let mut buf = [0u8; 256];
                while !stop.load(Ordering::SeqCst) {
                    if readable(&master, 20) && master.read(&mut buf).unwrap_or(0) == 0 {
                        return;
                    }
                }
            })
        };
        Self {
            path,
            flash: PathBuf::new(),
            stop,
            child: Arc::default(),
            _cable_slave: slave,
            threads: vec![t],
            said,
        }
    }

    /// A port where `cat` answers: it says back what it is sent, never a raw REPL prompt.
    pub fn cat() -> Self {
        let (board_master, board_slave, _) = pty();
        let stop = Arc::new(AtomicBool::new(false));
        let child: Arc<Mutex<Option<Child>>> = Arc::default();
        let io = || Stdio::from(board_slave.try_clone().unwrap());
        *child.lock().unwrap() = Some(
            Command::new("cat")
                .stdin(io())
                .stdout(io())
                .stderr(io())
                .spawn()
                .expect("starting cat"),
        );
        Self::relay(board_master, None, stop, child)
    }

    /// The cable: a pty whose slave is the port, relayed to and from `board`.
    fn relay(
        board: File,
        cut_after: Option<usize>,
        stop: Arc<AtomicBool>,
        child: Arc<Mutex<Option<Child>>>,
    ) -> Self {
        let (cable, cable_slave, path) = pty();
        let said = Arc::new(Mutex::new(Vec::new()));
        let t = {
            let (stop, child, said) = (stop.clone(), child.clone(), said.clone());
            std::thread::spawn(move || {
                let (mut board, mut cable) = (board, Some(cable));
                let mut sent = 0usize;
                let mut buf = [0u8; 1024];
                while !stop.load(Ordering::SeqCst) {
                    let Some(c) = cable.as_mut() else { return };
                    let mut fds = [
                        libc::pollfd {
                            fd: board.as_raw_fd(),
                            events: libc::POLLIN,
                            revents: 0,
                        },
                        libc::pollfd {
                            fd: c.as_raw_fd(),
                            events: libc::POLLIN,
                            revents: 0,
                        },
                    ];
                    // SAFETY: two valid pollfds for the duration of the call.
                    if unsafe { libc::poll(fds.as_mut_ptr(), 2, 20) } <= 0 {
                        continue;
                    }
                    if (fds[0].revents | fds[1].revents) & libc::POLLIN == 0 {
                        // A hang-up on one side (the board between two boots): wait.
                        std::thread::sleep(Duration::from_millis(20));
                        continue;
                    }
                    if fds[0].revents & libc::POLLIN != 0 {
                        if let Ok(n @ 1..) = board.read(&mut buf) {
                            said.lock().unwrap().extend_from_slice(&buf[..n]);
                            let _ = c.write_all(&buf[..n]);
                        }
                    }
                    if fds[1].revents & libc::POLLIN != 0 {
                        if let Ok(n @ 1..) = c.read(&mut buf) {
                            let mut n = n;
                            if let Some(limit) = cut_after {
                                n = n.min(limit - sent);
                            }
                            let _ = board.write_all(&buf[..n]);
                            sent += n;
                            if cut_after == Some(sent) {
                                // Pulled: the board loses power, the port goes away.
                                if let Some(mut ch) = child.lock().unwrap().take() {
                                    let _ = ch.kill();
                                    let _ = ch.wait();
                                }
                                stop.store(true, Ordering::SeqCst);
                                cable = None;
                            }
                        }
                    }
                }
            })
        };
        Self {
            path,
            flash: PathBuf::new(),
            stop,
            child,
            _cable_slave: cable_slave,
            threads: vec![t],
            said,
        }
    }

    /// What the board said so far, as text.
    pub fn output(&self) -> String {
        String::from_utf8_lossy(&self.said.lock().unwrap()).into_owned()
    }

    /// Whether the board's interpreter still runs.
    pub fn running(&self) -> bool {
        self.child
            .lock()
            .unwrap()
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }
}

fn readable(f: &File, ms: i32) -> bool {
    let mut fd = libc::pollfd {
        fd: f.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd for the duration of the call.
    unsafe { libc::poll(&mut fd, 1, ms) > 0 }
}

impl Drop for SerialPort {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(mut c) = self.child.lock().unwrap().take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}
