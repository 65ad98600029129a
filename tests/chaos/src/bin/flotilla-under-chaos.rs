//! `flotilla` for the chaos suite (see this package's Cargo.toml): the same entry point.

fn main() -> std::process::ExitCode {
    flotilla::main()
}
