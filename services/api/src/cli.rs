//! `pwnbook orgs create` and `pwnbook keys create`: they write through the command service and
//! return only once the read side shows the change, so a server running on the same database
//! accepts a new key as soon as the command exits.

use pwnbook_commands::CommandService;
use pwnbook_events::{Id, IdKind};
use pwnbook_projections::{all_projectors, organizations, ProjectionRunner};

use crate::bootstrap::{create_key, create_organization, open_store, sync_read_side};
use crate::config::{KeysCommand, OrgsCommand};
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
