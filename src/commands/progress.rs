//! A progress bar on stderr for commands that take a while (`provision`): a bar redrawn in
//! place when stderr is a terminal, one line per step otherwise (a log, a pipe, a test).
//! Lines from outside (what a board prints) go above the bar, made safe for the terminal.

use super::terminal::for_terminal;
use std::io::{IsTerminal, Write};

const WIDTH: usize = 30;

pub(crate) struct Progress {
    tty: bool,
    /// 0 to 100.
    percent: u32,
    step: String,
}

impl Progress {
    pub fn new() -> Self {
        Self {
            tty: std::io::stderr().is_terminal(),
            percent: 0,
            step: String::new(),
        }
    }

    /// A new step, at `percent`.
    pub fn step(&mut self, percent: u32, step: &str) {
        self.step = step.to_owned();
        self.percent = percent.min(100);
        if self.tty {
            self.draw();
        } else {
            eprintln!("mpfleet: {step}");
        }
    }

    /// Moves the bar within the current step (never back).
    pub fn set(&mut self, percent: u32) {
        let percent = percent.min(100);
        if percent > self.percent {
            self.percent = percent;
            if self.tty {
                self.draw();
            }
        }
    }

    /// A line from `who`, printed above the bar.
    pub fn say(&mut self, who: &str, line: &str) {
        let line = for_terminal(line);
        if self.tty {
            eprint!("\r\x1b[2K");
            eprintln!("{who}: {line}");
            self.draw();
        } else {
            eprintln!("{who}: {line}");
        }
    }

    /// Takes the bar off the screen.
    pub fn clear(&mut self) {
        if self.tty {
            eprint!("\r\x1b[2K");
            let _ = std::io::stderr().flush();
        }
    }

    fn draw(&self) {
        let filled = WIDTH * self.percent as usize / 100;
        eprint!(
            "\r\x1b[2K[{}{}] {:>3}% {}",
            "#".repeat(filled),
            "-".repeat(WIDTH - filled),
            self.percent,
            self.step
        );
        let _ = std::io::stderr().flush();
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        // An error message follows on a line of its own.
        self.clear();
    }
}
