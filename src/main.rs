// Compiling a large policy is mostly small allocations (IR, nft expressions,
// script text); mimalloc halves their cost against glibc's malloc.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    phantomc::cli::main()
}
