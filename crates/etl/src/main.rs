//! `etl`: the pipeline's state and the operations that change it. See `etl --help`.

use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use etl::{Config, Error, Pipeline, Result};

/// Operates the ToteSys pipeline: its state from the raw zone to the warehouse, replays,
/// transform's snapshots, quarantined rows. Reads the Lambdas' settings from the environment:
/// INGEST_BUCKET, PROCESSED_BUCKET, SOURCE_DB_SECRET_ID or SOURCE_DB_URL, WAREHOUSE_DB_SECRET_ID
/// or WAREHOUSE_DB_URL, AWS_REGION, AWS_ENDPOINT_URL (a local S3 API).
#[derive(Parser)]
#[command(name = "etl", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Each source table's watermark, last raw file, and lag behind the source; each warehouse
    /// table's files not loaded yet, last loaded file and quarantined rows. Exits 2 when a
    /// table is behind by more than --max-lag (a check for cron or CI), 1 on an error.
    Status {
        /// Print JSON instead of tables.
        #[arg(long)]
        json: bool,
        /// The lag (the source's newest change minus the watermark; where the source cannot
        /// be reached, the watermark's age) above which a table counts as behind: 90s, 30m,
        /// 2h, ...
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        max_lag: Duration,
    },
    /// Moves tables' watermarks back to a time, so that the next run reads from there again.
    /// Shows what will be read again and asks before writing.
    Replay {
        /// A source table (repeat for several).
        #[arg(
            long = "table",
            required_unless_present = "all",
            conflicts_with = "all"
        )]
        tables: Vec<String>,
        /// Every source table.
        #[arg(long)]
        all: bool,
        /// Where the next run starts: 2024-11-14T09:30:00Z, 2024-11-14 09:30:00 (UTC) or
        /// 2024-11-14.
        #[arg(long)]
        since: String,
        /// Only show what the next run would read again.
        #[arg(long)]
        dry_run: bool,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
        #[arg(long)]
        json: bool,
    },
    /// Re-derives transform's current-state snapshots from the raw zone and compares each with
    /// the one in the bucket; writes those that are missing (and, with --force, those that
    /// differ).
    RebuildSnapshots {
        /// One of staff, department, counterparty, address (repeat for several; default all).
        #[arg(long = "table")]
        tables: Vec<String>,
        /// Also replace a snapshot that differs from the rebuilt one.
        #[arg(long)]
        force: bool,
        /// Compare only; write nothing.
        #[arg(long)]
        dry_run: bool,
        #[arg(long)]
        json: bool,
    },
    /// The fact rows transform set aside, with their reasons.
    Quarantine {
        #[command(subcommand)]
        command: QuarantineCommand,
    },
    /// Datasets declared in datasets/*.json.
    Dataset {
        #[command(subcommand)]
        command: DatasetCommand,
    },
}

#[derive(Subcommand)]
enum DatasetCommand {
    /// Reads a landed file on this machine under its dataset's declaration, as the pipeline
    /// will: how many rows are typed, which are quarantined and why. Exits 2 when any row is
    /// quarantined, 1 when the file cannot be read or its columns break the declaration.
    Check {
        /// The dataset's declaration, e.g. datasets/trips.json.
        #[arg(long)]
        declaration: std::path::PathBuf,
        /// The file (CSV or JSON Lines as declared, gzip-compressed if the declaration says so).
        file: std::path::PathBuf,
        /// Also write the typed rows to this Parquet file, with the declared field and table
        /// metadata.
        #[arg(long)]
        parquet: Option<std::path::PathBuf>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum QuarantineCommand {
    /// Every quarantine file: its rows and reasons.
    List {
        #[arg(long)]
        json: bool,
    },
    /// The rows of one quarantine file (its key, as `list` gives it).
    Show {
        key: String,
        #[arg(long)]
        json: bool,
    },
}

/// What `status` exits with when a table is behind.
const BEHIND: u8 = 2;
/// What `dataset check` exits with when rows were quarantined.
const QUARANTINED: u8 = 2;

#[tokio::main]
async fn main() -> ExitCode {
    utils::logging::init_tracing_stderr();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            // Usage errors exit 64 (EX_USAGE), apart from status's 1 and 2; help exits 0.
            return ExitCode::from(if e.use_stderr() { 64 } else { 0 });
        }
    };
    match run(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("etl: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<ExitCode> {
    if let Command::Dataset {
        command:
            DatasetCommand::Check {
                declaration,
                file,
                parquet,
                json,
            },
    } = &cli.command
    {
        // Encrypted fields' data keys from KMS, as ingest has them: the reader blocks on it.
        let (declaration, file, parquet) = (declaration.clone(), file.clone(), parquet.clone());
        let checked = tokio::task::spawn_blocking(move || {
            let keys = Box::new(etl::dataset::Kms::default());
            etl::dataset::check(&declaration, &file, parquet.as_deref(), keys)
        })
        .await
        .expect("the check does not panic")?;
        emit(*json, &checked, || checked.render());
        return Ok(if checked.quarantined.is_empty() {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(QUARANTINED)
        });
    }
    let config = Config::from_env()?;
    let sdk = utils::store::aws_config().await;
    let pipeline = Pipeline::new(&config, &sdk);
    match cli.command {
        Command::Status { json, max_lag } => {
            let status = etl::status::status(&pipeline, max_lag).await?;
            if json {
                println!("{}", to_json(&status));
            } else {
                print!("{}", status.render());
            }
            Ok(if status.is_behind() {
                ExitCode::from(BEHIND)
            } else {
                ExitCode::SUCCESS
            })
        }
        Command::Replay {
            tables,
            all,
            since,
            dry_run,
            yes,
            json,
        } => {
            let since = etl::parse_time_arg(&since)?;
            let tables = etl::source_tables(if all { &[] } else { &tables })?;
            let plans = etl::replay::replay(&pipeline, &tables, since, true).await?;
            let moving = plans.iter().filter(|p| p.replay.is_some()).count();
            if dry_run || moving == 0 {
                emit(json, &plans, || etl::replay::render(&plans, since, false));
                return Ok(ExitCode::SUCCESS);
            }
            if !yes {
                eprint!("{}", etl::replay::render(&plans, since, false));
                confirm(&format!(
                    "Move {moving} watermark(s) back to {}?",
                    utils::time::format_time(since)
                ))?;
            }
            let done = etl::replay::replay(&pipeline, &tables, since, false).await?;
            emit(json, &done, || etl::replay::render(&done, since, true));
            Ok(ExitCode::SUCCESS)
        }
        Command::RebuildSnapshots {
            tables,
            force,
            dry_run,
            json,
        } => {
            let tables = if tables.is_empty() {
                etl::snapshots::snapshot_tables()
            } else {
                etl::source_tables(&tables)?
            };
            let rebuilt = etl::snapshots::rebuild(&pipeline, &tables, force, dry_run).await?;
            emit(json, &rebuilt, || etl::snapshots::render(&rebuilt));
            Ok(ExitCode::SUCCESS)
        }
        Command::Dataset { .. } => unreachable!("needs no configuration: run before it is read"),
        Command::Quarantine { command } => {
            match command {
                QuarantineCommand::List { json } => {
                    let files = etl::quarantine::list(&pipeline.processed, &pipeline.raw).await?;
                    emit(json, &files, || etl::quarantine::render_list(&files));
                }
                QuarantineCommand::Show { key, json } => {
                    let rows =
                        etl::quarantine::read(&pipeline.processed, &pipeline.raw, &key).await?;
                    emit(json, &rows, || etl::quarantine::render_rows(&rows));
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn to_json(value: &impl serde::Serialize) -> String {
    serde_json::to_string_pretty(value).expect("the outputs serialize")
}

fn emit(json: bool, value: &impl serde::Serialize, text: impl FnOnce() -> String) {
    if json {
        println!("{}", to_json(value));
    } else {
        print!("{}", text());
    }
}

/// Asks on the terminal; anything but yes is no. Without a terminal, refuses: --yes says it.
fn confirm(question: &str) -> Result<()> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        return Err(Error::Usage(
            "nothing changed: confirm on a terminal, or pass --yes".into(),
        ));
    }
    eprint!("{question} [y/N] ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    stdin
        .lock()
        .read_line(&mut answer)
        .map_err(|e| Error::Usage(format!("reading the answer: {e}")))?;
    if matches!(answer.trim().to_lowercase().as_str(), "y" | "yes") {
        Ok(())
    } else {
        Err(Error::Usage("nothing changed".into()))
    }
}
