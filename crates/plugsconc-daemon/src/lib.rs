//! The plugsconc daemon as a library: configuration, the catalog's store, trusted publishers,
//! plugin calls with JSON, jobs, the REST API, sharing between daemons, metrics and the log
//! pipeline, and [`daemon::Daemon`], which wires them together. The `plugsconc` binary is its
//! command line.
//!
//! Modules depend downward only, and nothing imports `daemon`: `daemon` → `api` → `trust`,
//! `sharing`, `states` → `store` → `jobs` (the store keeps the job queue) → `calls` → `metrics`.

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
