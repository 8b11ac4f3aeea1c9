fn main() {
    std::process::exit(mpfleet::run());
}
