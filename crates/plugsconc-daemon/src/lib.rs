//! The plugsconc daemon as a library: configuration, the catalog's store, jobs, the REST API,
//! sharing between daemons, metrics and the log pipeline, and [`daemon::run`], which wires them
//! together. The `plugsconc` binary is its command line.

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
