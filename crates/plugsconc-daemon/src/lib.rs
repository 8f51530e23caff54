//! The plugsconc daemon as a library: configuration, the catalog's store, trusted publishers,
//! plugin calls with JSON, jobs, the REST API, sharing between daemons, metrics and the log
//! pipeline, and [`daemon::Daemon`], which wires them together. The `plugsconc` binary is its
//! command line.
//!
//! Modules depend downward only: `daemon` → `api` → `jobs` → `calls` → `metrics`, with `trust`,
//! `states`, `sharing` and `store` below the API and `daemon`; nothing imports `daemon`.

pub mod api;
pub mod calls;
pub mod config;
pub mod daemon;
pub mod jobs;
pub mod locator;
pub mod logging;
pub mod logqueue;
pub mod metrics;
pub mod sharing;
pub mod states;
pub mod store;
pub mod trust;
