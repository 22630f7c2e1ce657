//! pcsync keeps a PostgreSQL copy of what Microsoft Partner Center says each customer owns.
//!
//! Data flow of one pass: the customer list (a CSV file or the Partner Center customer list) →
//! for every customer, its subscriptions and managed services, fetched with bounded concurrency
//! within the rate budget → handed to one writer, which compares them with what is stored and
//! writes new and changed rows, with a change event per added, removed or changed field, many
//! customers per atomic statement, each customer whole or not at all.
//!
//! Modules, one concern each:
//! - [`clock`]: the one clock every "now" of a pass comes from (tests and the demo set it).
//! - [`config`]: layered settings (defaults file, optional file, environment), validated once.
//! - [`schedule`]: cron expressions for `pcsync run`.
//! - [`telemetry`]: logging as text or JSON.
//! - [`db`]: the connection pool and the embedded migrations (schema `pcsync`).
//! - [`notify`]: the webhook notification after a pass (run by the command, not the pass).
//! - [`metrics`]: Prometheus metrics of the passes; [`serve`]: the worker's `/metrics`,
//!   `/healthz` and `/livez`.
//! - [`partner_center`]: the Partner Center client (auth, retries, throttling, paging, models).
//! - [`pgserver`] (feature `simulator`): finding or starting a PostgreSQL server (`initdb
//!   --auth=trust` for a throwaway cluster) for tests, the demo and the benchmark; not in a
//!   production build.
//! - [`ratelimit`]: the request budget: GCRA arithmetic shared by client and simulator, and the
//!   client's adaptive budget that slows down on 429.
//! - [`simulator`] (feature `simulator`, on by default): a local Partner Center over HTTP.
//! - [`report`]: `pcsync report`, a self-contained HTML report with inline SVG charts.
//! - [`shutdown`]: SIGINT and SIGTERM.
//! - [`status`]: `pcsync status`: health, failing customers, recent changes, endings.
//! - [`sync`]: one pass: customer list, bounded fetch, change detection, per-customer store.
//! - [`demo`] (feature `simulator`): `pcsync demo`, end to end on the simulator.
//! - [`exit`]: the exit codes.
//! - [`cli`]: the commands; `main.rs` only calls [`cli::main`].

pub mod cli;
pub mod clock;
pub mod config;
pub mod db;
#[cfg(feature = "simulator")]
pub mod demo;
pub mod exit;
pub mod metrics;
pub mod notify;
pub mod partner_center;
#[cfg(feature = "simulator")]
pub mod pgserver;
pub mod ratelimit;
pub mod report;
pub mod schedule;
pub mod serve;
pub mod shutdown;
#[cfg(feature = "simulator")]
pub mod simulator;
pub mod status;
pub mod sync;
pub mod telemetry;
