//! The imperative shell of the Channel controller: read the Channel, its Secrets (from the
//! labelled-Secret cache; a Secret not there is looked up once to tell "missing" from "not
//! labelled") and its live campaigns (from the index), let the pure core decide, write status
//! once if it changed, publish Events, keep the registry campaigns send through current.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use flotilla_crds::{Channel, ChannelPhase};
use k8s_openapi::api::core::v1::Secret;
use kube::core::DeserializeGuard;
use kube::runtime::controller::Action;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Client, ResourceExt};

use super::deliveries::Deliveries;
use super::phase::{self, MAX_LISTED_CAMPAIGNS, Observation};
use super::registry::Registry;
use super::secrets::{self, Lookup, SecretData};
use super::status;
use crate::index::LiveCampaignsByChannel;
use flotilla_runtime::context::Context;
use flotilla_runtime::error::{
    ControllerError, ErrorClass, classify_finalizer_error, classify_kube_error,
    finalizer_retry_after, kube_retry_after,
};
use flotilla_runtime::finalizer::{Cleanup, FinalizerError, reconcile_with_finalizer};
use flotilla_runtime::index::SharedIndex;
use flotilla_runtime::phase::IllegalTransition;
use flotilla_runtime::reconciler;
use flotilla_runtime::status::{StatusWrite, write_status};
use flotilla_runtime::users::Users;
use flotilla_runtime::watch::Synced;

/// How long a reconcile waits for the Secret and Campaign caches' first list.
const CACHE_SYNC_TIMEOUT: Duration = Duration::from_secs(30);

/// What the Channel controller keeps between reconciles.
pub struct ChannelState {
    client: Client,
    /// Secrets labelled [`CHANNEL_SECRET_LABEL`], data only.
    pub secrets: Store<Secret>,
    /// Live campaigns per Channel.
    pub campaigns: SharedIndex<LiveCampaignsByChannel>,
    /// Whether those caches have listed.
    pub synced: Vec<Synced>,
    /// The usable Channels, for the campaigns' senders.
    pub registry: Registry,
    /// The senders' deliveries: each Channel's circuit breaker.
    pub deliveries: Deliveries,
}

impl std::fmt::Debug for ChannelState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChannelState").finish_non_exhaustive()
    }
}

impl ChannelState {
    /// The state for a client and the caches it reads.
    pub fn new(
        client: Client,
        secrets: Store<Secret>,
        campaigns: SharedIndex<LiveCampaignsByChannel>,
        synced: Vec<Synced>,
        deliveries: Deliveries,
    ) -> Self {
        Self {
            client,
            secrets,
            campaigns,
            synced,
            registry: deliveries.registry().clone(),
            deliveries,
        }
    }

    fn channels(&self, namespace: &str) -> Api<Channel> {
        Api::namespaced(self.client.clone(), namespace)
    }

    fn live_campaigns(&self, namespace: &str, channel: &str) -> Users {
        let index = self.campaigns.lock();
        Users::bounded(
            index.campaigns(namespace, channel).map(str::to_owned),
            MAX_LISTED_CAMPAIGNS,
        )
    }

    /// What each Secret `channel` references is: its data from the cache, or — not cached —
    /// whether it exists unlabelled or not at all (one GET, only for a Channel that cannot
    /// be Ready anyway).
    async fn lookups(&self, channel: &Channel) -> Result<BTreeMap<String, Found>, kube::Error> {
        let namespace = channel.namespace().unwrap_or_default();
        let mut found = BTreeMap::new();
        for name in secrets::referenced(&channel.spec) {
            if found.contains_key(name) {
                continue;
            }
            let cached = self.secrets.get(&ObjectRef::new(name).within(&namespace));
            let entry = match cached {
                Some(secret) => Found::Data(secret_data(&secret)),
                None => {
                    let api: Api<Secret> = Api::namespaced(self.client.clone(), &namespace);
                    match api.get_metadata_opt(name).await? {
                        Some(_) => Found::Unlabelled,
                        None => Found::Missing,
                    }
                }
            };
            found.insert(name.to_owned(), entry);
        }
        Ok(found)
    }
}

/// A referenced Secret, as far as the controller could tell.
enum Found {
    Data(SecretData),
    Unlabelled,
    Missing,
}

fn secret_data(secret: &Secret) -> SecretData {
    secret
        .data
        .iter()
        .flatten()
        .map(|(key, value)| (key.clone(), value.0.clone()))
        .collect()
}

/// Everything that can go wrong reconciling a Channel.
#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    /// The Channel does not decode as the operator's type (a version skew).
    #[error("Channel {name} cannot be decoded: {message}")]
    Undecodable {
        /// The Channel.
        name: String,
        /// The decoding error.
        message: String,
    },
    /// The status records a phase the Channel cannot leave for the one it should be in.
    #[error("Channel {name}: illegal phase transition")]
    IllegalTransition {
        /// The Channel.
        name: String,
        /// The refused move.
        #[source]
        source: IllegalTransition<ChannelPhase>,
    },
    /// Looking a Secret up failed.
    #[error("reading the Secrets of Channel {name}")]
    SecretLookup {
        /// The Channel.
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// Writing `status` failed.
    #[error("writing the status of Channel {name}")]
    StatusWrite {
        /// The Channel.
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// The Secret or Campaign cache did not fill in time.
    #[error("the Secret and Campaign caches have not synced within {0:?}")]
    CacheNotSynced(Duration),
    /// Adding or removing the finalizer failed, or a step inside it did.
    #[error("finalizer of Channel {name}")]
    Finalizer {
        /// The Channel.
        name: String,
        /// What failed.
        #[source]
        source: Box<FinalizerError<ChannelError>>,
    },
}

impl ControllerError for ChannelError {
    fn class(&self) -> ErrorClass {
        match self {
            ChannelError::Undecodable { .. } | ChannelError::IllegalTransition { .. } => {
                ErrorClass::Permanent
            }
            ChannelError::StatusWrite { source, .. }
            | ChannelError::SecretLookup { source, .. } => classify_kube_error(source),
            ChannelError::CacheNotSynced(_) => ErrorClass::Transient,
            ChannelError::Finalizer { source, .. } => classify_finalizer_error(source),
        }
    }

    fn reason(&self) -> &'static str {
        match self {
            ChannelError::Undecodable { .. } => "UndecodableObject",
            ChannelError::IllegalTransition { .. } => "IllegalPhaseTransition",
            ChannelError::SecretLookup { .. } => "SecretLookupFailed",
            ChannelError::StatusWrite { .. } => "StatusWriteFailed",
            ChannelError::CacheNotSynced(_) => "CacheNotSynced",
            ChannelError::Finalizer { source, .. } => match source.as_ref() {
                FinalizerError::ApplyFailed(inner) | FinalizerError::CleanupFailed(inner) => {
                    inner.reason()
                }
                _ => "FinalizerUpdateFailed",
            },
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            ChannelError::StatusWrite { source, .. }
            | ChannelError::SecretLookup { source, .. } => kube_retry_after(source),
            ChannelError::Finalizer { source, .. } => finalizer_retry_after(source),
            _ => None,
        }
    }
}

/// Reconciles one Channel (the controller's `reconcile`).
pub async fn reconcile(
    object: Arc<DeserializeGuard<Channel>>,
    ctx: Arc<Context<ChannelState>>,
) -> Result<Action, ChannelError> {
    reconciler::observe(&ctx, object.as_ref(), reconcile_channel(&object, &ctx)).await
}

async fn reconcile_channel(
    object: &DeserializeGuard<Channel>,
    ctx: &Context<ChannelState>,
) -> Result<Action, ChannelError> {
    let channel = match &object.0 {
        Ok(channel) => Arc::new(channel.clone()),
        Err(invalid) => {
            return Err(ChannelError::Undecodable {
                name: invalid.metadata.name.clone().unwrap_or_default(),
                message: invalid.error.clone(),
            });
        }
    };
    if !Synced::wait_all(&ctx.state.synced, CACHE_SYNC_TIMEOUT).await {
        return Err(ChannelError::CacheNotSynced(CACHE_SYNC_TIMEOUT));
    }
    let name = channel.name_any();
    let api = ctx.state.channels(&channel.namespace().unwrap_or_default());
    reconcile_with_finalizer(
        &api,
        channel,
        |channel| apply(channel, ctx),
        |channel| cleanup(channel, ctx),
    )
    .await
    .map_err(|source| ChannelError::Finalizer {
        name,
        source: Box::new(source),
    })
}

async fn observe(
    channel: &Channel,
    ctx: &Context<ChannelState>,
    deleting: bool,
) -> Result<(Observation, Option<secrets::Credentials>), ChannelError> {
    let namespace = channel.namespace().unwrap_or_default();
    let found = ctx
        .state
        .lookups(channel)
        .await
        .map_err(|source| ChannelError::SecretLookup {
            name: channel.name_any(),
            source,
        })?;
    let resolved = secrets::resolve(&channel.spec, |name| match found.get(name) {
        Some(Found::Data(data)) => Lookup::Found(data),
        Some(Found::Unlabelled) => Lookup::Unlabelled,
        Some(Found::Missing) | None => Lookup::Missing,
    });
    let (credentials, secret_problems) = match resolved {
        Ok(credentials) => (Some(credentials), Vec::new()),
        Err(problems) => (None, problems),
    };
    let breaker = ctx
        .state
        .deliveries
        .breaker_status(&namespace, &channel.name_any());
    let observed = Observation {
        validation: channel.spec.validate(),
        secret_problems,
        deleting,
        campaigns: ctx.state.live_campaigns(&namespace, &channel.name_any()),
        breaker,
    };
    Ok((observed, credentials))
}

/// The Channel lives: check it, publish it to the registry when usable, report.
async fn apply(channel: Arc<Channel>, ctx: &Context<ChannelState>) -> Result<Action, ChannelError> {
    let (observed, credentials) = observe(&channel, ctx, false).await?;
    let step = decide(&channel, &observed)?;
    match credentials.filter(|_| step.phase == ChannelPhase::Ready) {
        Some(credentials) => ctx.state.registry.publish(&channel, credentials),
        None => ctx.state.registry.withdraw(&channel),
    }
    report(&channel, &observed, step.phase, ctx).await?;
    // Secret, Campaign and own changes wake it; the resync catches a Secret created without
    // the label and labelled later only through its own watch, so nothing is polled faster.
    Ok(Action::requeue(ctx.config.resync_interval))
}

/// The Channel is being deleted: campaigns stop using it at once; it goes when none is live.
async fn cleanup(
    channel: Arc<Channel>,
    ctx: &Context<ChannelState>,
) -> Result<Cleanup, ChannelError> {
    ctx.state.registry.withdraw(&channel);
    let (observed, _) = observe(&channel, ctx, true).await?;
    let step = decide(&channel, &observed)?;
    if step.release {
        status::release_event()
            .publish(&ctx.recorder, channel.as_ref(), "Delete")
            .await;
        return Ok(Cleanup::Done);
    }
    report(&channel, &observed, step.phase, ctx).await?;
    Ok(Cleanup::Wait(Action::requeue(ctx.config.resync_interval)))
}

fn decide(channel: &Channel, observed: &Observation) -> Result<phase::Step, ChannelError> {
    let current = channel
        .status
        .as_ref()
        .and_then(|status| status.phase)
        .unwrap_or(ChannelPhase::Pending);
    phase::step(current, observed).map_err(|source| ChannelError::IllegalTransition {
        name: channel.name_any(),
        source,
    })
}

/// Writes the status if it changed, with the Events the change deserves.
async fn report(
    channel: &Channel,
    observed: &Observation,
    phase: ChannelPhase,
    ctx: &Context<ChannelState>,
) -> Result<(), ChannelError> {
    let name = channel.name_any();
    let current = channel.status.as_ref();
    let desired = status::desired_status(
        current,
        observed,
        phase,
        channel.metadata.generation,
        ctx.now(),
    );
    let api = ctx.state.channels(&channel.namespace().unwrap_or_default());
    let written = write_status(&api, &name, current, &desired)
        .await
        .map_err(|source| ChannelError::StatusWrite {
            name: name.clone(),
            source,
        })?;
    if written == StatusWrite::Applied {
        tracing::info!(?phase, "status updated");
        for event in status::transition_events(current, &desired) {
            event.publish(&ctx.recorder, channel, "Reconcile").await;
        }
    }
    Ok(())
}
