fn main() -> std::process::ExitCode {
    stageset_controller::cli::main()
}
