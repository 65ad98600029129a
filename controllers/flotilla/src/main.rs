//! The `flotilla` binary; everything lives in the library (`flotilla::cli`). Installed (or
//! linked) under the name `kubectl-flotilla` it is the kubectl plugin (`flotilla::plugin`).

#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    flotilla::main()
}
