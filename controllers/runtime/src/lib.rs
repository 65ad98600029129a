//! The machinery every Flotilla controller shares: one way of doing each thing.
//!
//! | Concern | Module |
//! |---|---|
//! | shared state: client, config, clock, metrics, Events, readiness, shutdown | [`context`], [`config`], [`clock`] |
//! | error classes and the error policy (per-object backoff with jitter) | [`error`], [`backoff`], [`reconciler`] |
//! | what each controller has queued and not started | [`queue`] |
//! | phase state machines | [`phase`] |
//! | conditions and status writes (server-side apply on `/status`) | [`conditions`], [`status`] |
//! | cleanup before deletion | [`finalizer`] |
//! | applying children only when they changed | [`applied`] |
//! | reconciling again at a moment of the clock (trial end, grace end) | [`wakeups`] |
//! | watches and caches, one per kind, shared by every controller | [`watch`] |
//! | relations between objects, kept from watch events | [`index`] |
//! | Events | [`events`] |
//! | `/metrics`, `/healthz`, `/readyz` | [`metrics`], [`readiness`], [`admin`] |
//! | a long list persisted over byte-bounded ConfigMaps | [`shards`] |
//! | SIGTERM/SIGINT | [`shutdown`] |
//! | only the Lease holder runs controllers | [`leadership`] |
//! | waiting for the world in tests, scenarios and benchmarks | [`testing`] |

pub mod admin;
pub mod applied;
pub mod backoff;
pub mod clock;
pub mod conditions;
pub mod config;
pub mod context;
pub mod controller;
pub mod crypto;
pub mod error;
pub mod events;
pub mod finalizer;
pub mod index;
pub mod leadership;
pub mod metrics;
pub mod phase;
pub mod queue;
pub mod readiness;
pub mod reconciler;
pub mod shards;
pub mod shutdown;
pub mod status;
pub mod testing;
pub mod users;
pub mod wakeups;
pub mod watch;

pub use clock::{Clock, ManualClock, SharedClock, SystemClock};
pub use config::Config;
pub use context::{Context, Operator};
pub use error::{ControllerError, ErrorClass};
pub use phase::{IllegalTransition, Phase};
pub use shutdown::Shutdown;
