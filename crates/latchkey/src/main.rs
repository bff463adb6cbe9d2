/// mimalloc rather than glibc's malloc: a request allocates and frees
/// many small buffers on whichever worker thread runs it, where glibc's
/// arenas spent an eighth of the server's CPU (docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    latchkey::cli::main()
}
