//! Fault harness: what the host and the daemon do when things die or misbehave, printed as one
//! JSON line per suite (the table is `benches/faults.sh`'s job).
//!
//! - `registry`: kill storm through an embedded registry (8 callers, N `kill -9` of the plugin);
//! - `api`: the same through the daemon's REST API;
//! - `crash`: the daemon killed at a random point of an operation, restarted, and its catalog,
//!   plugins folder and store compared;
//! - `converge`: two daemons on one PostgreSQL store, changes through both and listener
//!   connections cut; both catalogs compared with the store;
//! - `hostile`: hostile inputs to the API, with the status, whether health still answered and
//!   the daemon's peak memory.
//!
//! `plugsconc-bench-faults registry --plugins <folder from examples/plugins.sh> --kills 1000`

mod converge;
mod crash;
mod daemon;
mod hostile;
mod http;
mod procs;
mod storm;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
struct Args {
    /// A plugins folder assembled by examples/plugins.sh (cat, dog, kv with sidecars).
    #[arg(long, global = true, default_value = "plugins")]
    plugins: PathBuf,
    /// The `plugsconc` binary, for the suites that run the daemon.
    #[arg(long, global = true, default_value = "target/debug/plugsconc")]
    plugsconc: PathBuf,
    #[command(subcommand)]
    suite: Suite,
}

#[derive(Debug, Subcommand)]
enum Suite {
    /// Kill storm through an embedded registry.
    Registry {
        #[arg(long, default_value_t = 1000)]
        kills: usize,
    },
    /// Kill storm through the daemon's REST API.
    Api {
        #[arg(long, default_value_t = 1000)]
        kills: usize,
    },
    /// The daemon killed during operations, restarted and checked.
    Crash {
        #[arg(long, default_value_t = 100)]
        runs: usize,
        /// Random seed of the operations and kill points (printed, to replay a run).
        #[arg(long)]
        seed: Option<u64>,
    },
    /// Two daemons on one PostgreSQL store.
    Converge {
        #[arg(long, default_value_t = 1000)]
        changes: usize,
        #[arg(long, default_value_t = 3)]
        cuts: usize,
        /// The PostgreSQL database the two daemons share.
        #[arg(
            long,
            env = "PLUGSCONC_TEST_DATABASE_URL",
            default_value = "postgres://postgres@127.0.0.1:5432/test"
        )]
        url: String,
    },
    /// Hostile inputs to the API.
    Hostile {
        /// Size of each of the concurrent large uploads, MiB.
        #[arg(long, default_value_t = 1024)]
        upload_mib: u64,
        /// What the gzip bomb unpacks to, MiB.
        #[arg(long, default_value_t = 1024)]
        bomb_mib: u64,
        /// Files in the many-files tar.
        #[arg(long, default_value_t = 100_000)]
        tar_files: usize,
        /// Connections held idle, and with a partial header.
        #[arg(long, default_value_t = 200)]
        connections: usize,
        /// How long held connections are watched for the daemon closing them, seconds.
        #[arg(long, default_value_t = 30)]
        hold_secs: u64,
    },
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let report = runtime.block_on(async {
        match args.suite {
            Suite::Registry { kills } => storm::registry(&args.plugins, kills).await,
            Suite::Api { kills } => storm::api(&args.plugsconc, &args.plugins, kills).await,
            Suite::Crash { runs, seed } => {
                crash::run(&args.plugsconc, &args.plugins, runs, seed).await
            }
            Suite::Converge { changes, cuts, url } => {
                converge::run(&args.plugsconc, &args.plugins, changes, cuts, &url).await
            }
            Suite::Hostile {
                upload_mib,
                bomb_mib,
                tar_files,
                connections,
                hold_secs,
            } => {
                let sizes = hostile::Sizes {
                    upload_mib,
                    bomb_mib,
                    tar_files,
                    connections,
                    hold_secs,
                };
                hostile::run(&args.plugsconc, &args.plugins, sizes).await
            }
        }
    })?;
    println!("{report}");
    Ok(())
}
