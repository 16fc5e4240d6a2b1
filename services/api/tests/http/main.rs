//! Black-box tests of the HTTP API against a real server on port 0, on SQLite and PostgreSQL.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod access;
mod conventions;
mod durability;
mod engagements;
mod findings;
mod graphql;
mod graphql_access;
mod graphql_mutations;
mod graphql_subscription;
mod harness;
mod history;
mod operations;
mod rebuild;
mod reports;
mod stream;
mod targets;
mod tasks;
mod travel;
mod webhooks;
mod wiki;
