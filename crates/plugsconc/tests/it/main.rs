//! Integration tests of the `plugsconc` binary and of go-plugin interoperability, both ways.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod api_errors;
mod call;
mod config_cli;
mod connections;
mod daemon_files;
mod faults;
mod go_host;
mod go_plugin;
mod install;
mod jobs;
mod older_api;
mod orphans;
mod plugins_cli;
mod python;
mod scan;
mod serve;
mod shared_states;
mod signing_cli;
mod store_triggers;
mod support;
