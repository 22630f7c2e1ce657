fn main() -> std::process::ExitCode {
    pcsync::cli::main().into()
}
