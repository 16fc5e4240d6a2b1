use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use pwnbook_api::config::{Cli, Command, EventsCommand, LogFormat};
use pwnbook_api::{cli, server};
use tracing_subscriber::EnvFilter;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let args = Cli::parse();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match args.settings.log_format {
        LogFormat::Json => subscriber.json().init(),
        LogFormat::Text => subscriber.init(),
    }
    let outcome = match args.command.unwrap_or(Command::Serve) {
        Command::Serve => match server::start(&args.settings).await {
            Ok(running) => {
                eprintln!("Pwnbook listening on http://{}", running.local_addr);
                running.run_until_signal().await.map_err(|e| e.to_string())
            }
            Err(error) => Err(error.to_string()),
        },
        Command::Orgs(command) => {
            cli::orgs(&args.settings.database_url, command).await.map(print).map_err(|e| e.to_string())
        }
        Command::Openapi => {
            print(pwnbook_api::openapi::document_json());
            Ok(())
        }
        Command::GraphqlSchema => {
            print!("{}", pwnbook_api::graphql::sdl());
            Ok(())
        }
        Command::Keys(command) => {
            cli::keys(&args.settings.database_url, command).await.map(print).map_err(|e| e.to_string())
        }
        Command::Events(EventsCommand::Verify) => match cli::verify(&args.settings.database_url).await {
            Ok(report) if report.valid => {
                println!("valid: {} events checked", report.checked);
                Ok(())
            }
            Ok(report) => Err(format!(
                "the hash chain is broken at position {} ({} events checked)",
                report.first_broken_position.unwrap_or_default(),
                report.checked
            )),
            Err(error) => Err(error.to_string()),
        },
        Command::Events(EventsCommand::Export { org }) => {
            let mut out = std::io::stdout().lock();
            cli::export(&args.settings.database_url, &org, &mut out)
                .await
                .map(drop)
                .map_err(|e| e.to_string())
        }
        Command::Projections(command) => match cli::rebuild(&args.settings.database_url, command).await {
            Ok(rebuilt) => {
                for (name, position) in rebuilt {
                    eprintln!("rebuilt {name} up to position {position}");
                }
                Ok(())
            }
            Err(error) => Err(error.to_string()),
        },
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("pwnbook: {message}");
            ExitCode::FAILURE
        }
    }
}

fn print(line: String) {
    println!("{line}");
}
