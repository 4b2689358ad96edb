fn main() -> std::process::ExitCode {
    multipass_cli::main()
}
