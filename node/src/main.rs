//! The `gregor` binary: `serve` runs a node (`cli::serve::run` with `cli::serve::ServeArgs`);
//! every other command is a client of one. See `gregor --help`.

fn main() -> std::process::ExitCode {
    gregor::cli::main()
}
