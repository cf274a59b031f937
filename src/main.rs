//! The `mailark` binary: everything lives in the library; this only hands over.

fn main() -> std::process::ExitCode {
    mailark::alloc::tune();
    mailark::cli::main()
}
