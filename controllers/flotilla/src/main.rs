//! The `flotilla` binary; everything lives in the library (`flotilla::cli`).

fn main() -> std::process::ExitCode {
    flotilla::cli::main()
}
