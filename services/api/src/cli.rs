//! The CLI commands. `pwnbook orgs create` and `pwnbook keys create` write through the command
//! service and return only once the read side shows the change, so a server running on the same
//! database accepts a new key as soon as the command exits. `events verify`/`export` read the
//! log; `projections rebuild` replays it.

use std::io::Write;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use pwnbook_commands::CommandService;
use pwnbook_events::log::{self, ChainReport};
use pwnbook_events::{Id, IdKind};
use pwnbook_projections::feed::{self, EventFilter};
use pwnbook_projections::{all_projectors, organizations, ProjectionRunner, Projector};

use crate::bootstrap::{create_key, create_organization, open_store, sync_read_side};
use crate::config::{KeysCommand, OrgsCommand, ProjectionsCommand};
use crate::routes::events::event_object;
use crate::secrets::Secret;
use crate::StartError;

pub async fn orgs(database_url: &str, command: OrgsCommand) -> Result<String, StartError> {
    let OrgsCommand::Create { name } = command;
    let store = open_store(database_url).await?;
    let runner = ProjectionRunner::new(store.clone(), all_projectors());
    runner.prepare().await?;
    let id = create_organization(&CommandService::new(store.clone()), &name).await?;
    sync_read_side(&store, &runner).await?;
    store.close().await;
    Ok(id.to_string())
}

pub async fn keys(database_url: &str, command: KeysCommand) -> Result<String, StartError> {
    let KeysCommand::Create { org, name, permissions, environment } = command;
    if environment != "live" && environment != "test" {
        return Err(StartError::Usage("--environment must be live or test".to_owned()));
    }
    let store = open_store(database_url).await?;
    let runner = ProjectionRunner::new(store.clone(), all_projectors());
    runner.prepare().await?;
    sync_read_side(&store, &runner).await?;
    let known = Id::parse(IdKind::Organization, &org).is_some()
        && organizations::get(store.pool(), &org).await?.is_some();
    if !known {
        return Err(StartError::Usage(format!("no organization {org}")));
    }
    let secret = Secret::generate(&environment);
    create_key(&CommandService::new(store.clone()), &org, &name, permissions, &secret).await?;
    sync_read_side(&store, &runner).await?;
    store.close().await;
    Ok(secret.expose().to_owned())
}

/// `events verify`: the chains of all organizations. A broken chain is an error naming the
/// first position that does not match.
pub async fn verify(database_url: &str) -> Result<ChainReport, StartError> {
    let store = open_store(database_url).await?;
    let report = log::verify_chain(&store, None).await?;
    store.close().await;
    Ok(report)
}

/// `events export --org ID`: the organization's events as NDJSON on `out`, a page at a time.
pub async fn export(database_url: &str, org: &str, out: &mut impl Write) -> Result<u64, StartError> {
    const PAGE: i64 = 1_000;
    let store = open_store(database_url).await?;
    let known = Id::parse(IdKind::Organization, org).is_some()
        && log::stream_exists(&store, org, "organization", org).await?;
    if !known {
        return Err(StartError::Usage(format!("no organization {org}")));
    }
    let head = log::head(&store).await?;
    let filter = EventFilter::default();
    let (mut after, mut written) = (0, 0_u64);
    while after < head {
        let page = feed::page(&store, org, &filter, after, PAGE, head).await?;
        after = page.scanned_to;
        for event in &page.events {
            serde_json::to_writer(&mut *out, &event_object(event)).map_err(std::io::Error::from)?;
            out.write_all(b"\n")?;
            written += 1;
        }
    }
    out.flush()?;
    store.close().await;
    Ok(written)
}

/// `projections rebuild [--projection NAME]`: replays the log into each projector's tables with
/// a progress bar on standard error (events/s, ETA); returns each projector's new checkpoint.
pub async fn rebuild(
    database_url: &str,
    command: ProjectionsCommand,
) -> Result<Vec<(String, i64)>, StartError> {
    let ProjectionsCommand::Rebuild { projection } = command;
    let store = open_store(database_url).await?;
    let runner = ProjectionRunner::new(store.clone(), all_projectors());
    runner.prepare().await?;
    let chosen: Vec<_> = runner
        .projectors()
        .iter()
        .filter(|p| projection.as_deref().is_none_or(|name| name == p.name()))
        .cloned()
        .collect();
    if chosen.is_empty() {
        let names: Vec<&str> = runner.projectors().iter().map(|p| p.name()).collect();
        return Err(StartError::Usage(format!("--projection must be one of {}", names.join(", "))));
    }
    // Everything committed so far is in the log before the replay reads it.
    sync_read_side(&store, &runner).await?;
    let head = log::head(&store).await?;
    let style = ProgressStyle::with_template(
        "{msg:>14} [{elapsed_precise}] {wide_bar} {pos}/{len} events ({per_sec}, ETA {eta})",
    )
    .map_err(|e| StartError::Usage(e.to_string()))?;
    // One pass over the log for every chosen projector: each batch is read once.
    let bar = ProgressBar::new(u64::try_from(head).unwrap_or(0)).with_style(style);
    let names: Vec<&str> = chosen.iter().map(|p| p.name()).collect();
    bar.set_message(if chosen.len() == 1 { names.join("") } else { "projections".to_owned() });
    bar.enable_steady_tick(Duration::from_millis(200));
    let projectors: Vec<&dyn Projector> = chosen.iter().map(|p| p.as_ref()).collect();
    let position = runner
        .rebuild_all_with_progress(&projectors, &mut |position| {
            bar.set_position(u64::try_from(position).unwrap_or(0));
        })
        .await?;
    bar.finish();
    let rebuilt = names.into_iter().map(|name| (name.to_owned(), position)).collect();
    store.close().await;
    Ok(rebuilt)
}
