//! `portcullis-loadgen`: see loadgen/README.md.

use clap::Parser;
use portcullis_loadgen::cli::{Cli, Command};
use portcullis_loadgen::{execute, sys, target};
use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = cli.check() {
        e.exit();
    }
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("portcullis-loadgen: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    sys::raise_nofile();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cli.command.workers())
        .thread_name("loadgen")
        .enable_all()
        .build()?;
    if let Command::Target(args) = &cli.command {
        let (listen, mode) = (args.listen, args.mode);
        return runtime.block_on(async move {
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
            let bound = listener.local_addr()?;
            println!(
                "portcullis-loadgen target: {} on {bound}",
                serde_json::to_value(mode)?.as_str().unwrap_or("?")
            );
            std::io::stdout().flush()?;
            target::serve(listener, mode, Arc::default()).await;
            Ok(())
        });
    }

    // The crypto floor runs on this thread, without the runtime's threads (they stay idle).
    let json_path = match &cli.command {
        Command::CryptoFloor(a) => a.json.clone(),
        command => command.run_args().expect("scenario arguments").json.clone(),
    };
    // Open the JSON file before the run, so a bad path fails at once rather than after it.
    let to_stdout = json_path.as_deref().is_some_and(|p| p.as_os_str() == "-");
    let mut json_file = match &json_path {
        Some(p) if !to_stdout => {
            Some(std::fs::File::create(p).map_err(|e| anyhow::anyhow!("cannot write --json {}: {e}", p.display()))?)
        }
        _ => None,
    };
    let outcome = match &cli.command {
        Command::CryptoFloor(a) => portcullis_loadgen::cipher::run(a)?,
        _ => runtime.block_on(execute(cli.command))?,
    };
    runtime.shutdown_timeout(std::time::Duration::from_millis(100));

    let text = serde_json::to_string_pretty(&outcome.json)?;
    if let Some(f) = json_file.as_mut() {
        writeln!(f, "{text}")?;
    }
    if to_stdout {
        println!("{text}");
        eprintln!("{}", outcome.summary);
    } else {
        println!("{}", outcome.summary);
    }
    Ok(())
}
