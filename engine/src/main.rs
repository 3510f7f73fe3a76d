fn main() -> std::process::ExitCode {
    phoenix_engine::cli::main()
}
