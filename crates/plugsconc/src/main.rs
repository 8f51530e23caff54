//! `plugsconc`: the command line of the plugin framework.

mod cli;

// Built-in plugins register at link time; naming the crate is what links it in. They join the
// catalog only when the configuration's `application.builtins` names them.
#[cfg(feature = "example-builtins")]
use builtin_cow as _;

use clap::Parser as _;

fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    if !cli.logs_from_config() {
        cli::init_logging(cli.verbose);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the runtime: {err}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(cli.run()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
