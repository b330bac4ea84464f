fn main() -> std::process::ExitCode {
    weave_agent::cli::main()
}
