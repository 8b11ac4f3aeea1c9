//! The `mpfleet` binary: parses the command line and runs it (all of it lives in the library).

fn main() {
    std::process::exit(mpfleet::run());
}
