fn main() -> std::process::ExitCode {
    phantomc::cli::main()
}
