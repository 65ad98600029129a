//! The Subscription controller's functional core: every decision it makes, as pure functions
//! over observed data, tested without a server. The reconcile shell (reading the world,
//! server-side applying children, writing status) calls them in this order:
//!
//! 1. [`namespaces`]: resolve the tenant namespaces from the spec and sort the observed
//!    namespaces into usable, terminating, conflicting, owned and orphaned.
//! 2. [`phase`]: decide the next phase and the actions from the spec, the recorded status,
//!    the Plan, the namespaces and the time.
//! 3. [`cancellation`]: let go of namespaces (delete, or release with [`cancellation::release_patch`]).
//! 4. [`build`]: the desired children of each namespace to apply.
//! 5. [`suspension`]: scale workloads to zero or restore them.
//! 6. [`usage`]: sum quota usage and find what is over the plan.
//! 7. [`status`]: the status to write, and the Events to publish.

pub mod build;
pub mod cancellation;
pub mod namespaces;
pub mod phase;
pub mod status;
pub mod suspension;
pub mod usage;
