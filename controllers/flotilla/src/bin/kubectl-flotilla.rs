//! The kubectl plugin (`kubectl flotilla ...`); everything lives in `flotilla::plugin`.

fn main() -> std::process::ExitCode {
    flotilla_runtime::crypto::use_ring();
    flotilla::plugin::main()
}
