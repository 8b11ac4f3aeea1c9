//! `mpfleet token show|rotate`: the admin token of the store in the data directory (see
//! `crate::token`). Local only: the token is what a remote client would need to ask.

use crate::cli::TokenCommand;
use crate::out::outln;
use anyhow::Result;
use std::path::Path;

pub fn run(data: &Path, command: TokenCommand) -> Result<()> {
    match command {
        TokenCommand::Show => {
            let (token, created) = crate::token::ensure(data)?;
            if created {
                eprintln!(
                    "mpfleet: created the admin token in {}",
                    crate::token::path(data).display()
                );
            }
            outln!("{}", token.as_str())
        }
        TokenCommand::Rotate => {
            crate::token::rotate(data)?;
            outln!(
                "new admin token in {}: the old one no longer works (a running serve too); \
                 `mpfleet token show` prints it",
                crate::token::path(data).display()
            )
        }
    }
}
