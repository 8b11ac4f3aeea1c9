//! Operations on a store, the same whether the CLI runs them on the local data directory or
//! sends them to a running `serve` over its admin API.
//!
//! Each operation is a struct implementing [`Operation`]: its fields are its input, its
//! `Output` what it answers (both serde, so the two can cross HTTP), `run` does it on a
//! [`Store`], and `VERB` and `PATH` place it in the admin API under `/admin/api/v1`. A CLI
//! subcommand turns the user's words into an operation, hands it to a [`Backend`] (the local
//! data dir, or a remote server), and prints the output; so a command prints the same on
//! either side, errors included (a remote error is the server's `{e:#}` of the same error).
//!
//! Adding an operation is: its struct and `impl Operation` in a file of this module, and one
//! `.op::<...>()` line in [`register`], which both the admin API router and the docs' route
//! list are built from.

pub mod device;
pub mod group;
pub mod module;
mod remote;
pub mod rollout;

pub use remote::Remote;

use crate::store::Store;
use anyhow::Result;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::path::{Path, PathBuf};

/// The HTTP method an operation is served with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    /// Reads; the operation's fields all come from the path.
    Get,
    /// Removes; the operation's fields all come from the path.
    Delete,
    /// Creates or acts: fields not in the path are the JSON body.
    Post,
    /// Replaces: fields not in the path are the JSON body.
    Put,
}

impl Verb {
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Get => "GET",
            Verb::Delete => "DELETE",
            Verb::Post => "POST",
            Verb::Put => "PUT",
        }
    }

    /// Whether the fields not in the path travel as a JSON body.
    pub fn has_body(self) -> bool {
        matches!(self, Verb::Post | Verb::Put)
    }
}

/// One thing a client can ask of a store. The struct is braced (`struct List {}`) so that it
/// is a JSON object on the wire, even with no fields.
pub trait Operation: Serialize + DeserializeOwned + Send + 'static {
    /// What it answers, as JSON on the wire.
    type Output: Serialize + DeserializeOwned + Send + 'static;
    const VERB: Verb;
    /// Under `/admin/api/v1`, axum syntax: `{field}` is a string field of the operation.
    const PATH: &'static str;
    /// Whether it changes the store: it then opens it with `Store::open` (which may publish
    /// the runtime this binary carries), else with `Store::open_read_only`.
    const WRITES: bool;
    fn run(self, store: &mut Store) -> Result<Self::Output>;
}

/// Runs `op` on the store in `data`.
pub fn run_local<O: Operation>(data: &Path, op: O) -> Result<O::Output> {
    let mut store = if O::WRITES {
        Store::open(data)?
    } else {
        Store::open_read_only(data)?
    };
    op.run(&mut store)
}

/// Where a command's operations run.
pub enum Backend {
    /// The store in this data directory.
    Local(PathBuf),
    /// A running `mpfleet serve`, through its admin API.
    Remote(Remote),
}

impl Backend {
    pub fn call<O: Operation>(&self, op: O) -> Result<O::Output> {
        match self {
            Backend::Local(data) => run_local(data, op),
            Backend::Remote(remote) => remote.call(op),
        }
    }

    pub fn is_remote(&self) -> bool {
        matches!(self, Backend::Remote(_))
    }
}

/// What the admin API serves: every operation, once. The one list to extend.
pub trait Registry: Sized {
    fn op<O: Operation>(self) -> Self;
}

pub fn register<R: Registry>(r: R) -> R {
    r.op::<module::List>()
        .op::<module::Show>()
        .op::<module::Publish>()
        .op::<module::Latest>()
        .op::<device::List>()
        .op::<device::Unknown>()
        .op::<device::Export>()
        .op::<device::Import>()
        .op::<device::Show>()
        .op::<device::Set>()
        .op::<device::Remove>()
        .op::<device::Bootstrap>()
        .op::<device::Key>()
        .op::<device::RotateKey>()
        .op::<device::Hourly>()
        .op::<group::List>()
        .op::<group::Create>()
        .op::<group::Show>()
        .op::<group::Set>()
        .op::<group::Delete>()
        .op::<rollout::List>()
        .op::<rollout::Start>()
        .op::<rollout::Show>()
        .op::<rollout::Pause>()
        .op::<rollout::Resume>()
        .op::<rollout::Abort>()
}

/// An error that means "no such thing": the admin API answers it with 404.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct NotFound(pub String);

/// A route of the admin API, as docs and tests list them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub verb: Verb,
    pub path: &'static str,
    pub writes: bool,
}

/// Every route [`register`] serves.
pub fn routes() -> Vec<Route> {
    struct List(Vec<Route>);
    impl Registry for List {
        fn op<O: Operation>(mut self) -> Self {
            self.0.push(Route {
                verb: O::VERB,
                path: O::PATH,
                writes: O::WRITES,
            });
            self
        }
    }
    register(List(Vec::new())).0
}

#[cfg(test)]
mod tests {
    #[test]
    fn routes_are_distinct_and_reads_write_nothing() {
        let routes = super::routes();
        for (i, a) in routes.iter().enumerate() {
            assert!(a.path.starts_with('/'), "{a:?}");
            for b in &routes[i + 1..] {
                assert!(a.verb != b.verb || a.path != b.path, "{a:?} twice");
            }
            // Reads must not change the store.
            if a.verb == super::Verb::Get {
                assert!(!a.writes, "{a:?}");
            }
        }
    }
}
