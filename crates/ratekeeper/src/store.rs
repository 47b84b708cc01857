//! `ratekeeper store`: checking and recovering the embedded store's files
//! while no server runs on them.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use ratekeeper_backend::repair;

use crate::failure::Failure;

/// The data directory of `ratekeeper store` commands.
#[derive(Debug, Args)]
pub struct StoreArgs {
    /// The data directory (the server's `--data-dir`).
    #[arg(
        long,
        env = "RATEKEEPER_DATA_DIR",
        default_value = "ratekeeper-data",
        global = true
    )]
    data_dir: PathBuf,
    #[command(subcommand)]
    command: StoreCommand,
}

#[derive(Debug, Subcommand)]
enum StoreCommand {
    /// Says whether the store opens and what it holds, or exactly what is
    /// wrong with it; changes nothing.
    Check,
    /// Keeps what can be read of a damaged store and says what is lost:
    /// damaged files are moved or copied aside (`*.damaged-<seconds>`).
    Recover {
        /// Confirms that changes which cannot be read may be lost.
        #[arg(long)]
        accept_loss: bool,
    },
}

/// Runs a `ratekeeper store` command.
pub fn run(args: StoreArgs) -> Result<(), Failure> {
    let failed = Failure::new;
    match args.command {
        StoreCommand::Check => {
            let records = repair::check(&args.data_dir).map_err(|e| failed(e.to_string()))?;
            println!(
                "the store at {} is sound: {} limits, {} leases",
                args.data_dir.display(),
                records.limits.len(),
                records.leases.len()
            );
            Ok(())
        }
        StoreCommand::Recover { accept_loss: false } => Err(failed(
            "recovering keeps what can be read and drops the rest: pass --accept-loss to go on \
             (run `ratekeeper store check` first to see what is wrong)"
                .into(),
        )),
        StoreCommand::Recover { accept_loss: true } => {
            let lost = repair::recover(&args.data_dir).map_err(|e| failed(e.to_string()))?;
            if lost.is_empty() {
                println!(
                    "the store at {} was sound: nothing was lost",
                    args.data_dir.display()
                );
            } else {
                println!("recovered the store at {}; lost:", args.data_dir.display());
                for line in lost {
                    println!("- {line}");
                }
            }
            Ok(())
        }
    }
}
