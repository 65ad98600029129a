//! The ledger's Kubernetes I/O: audience and progress shards as ConfigMaps in the Campaign's
//! namespace, owned by it (`controller: true`, `blockOwnerDeletion`), so they go with it.
//!
//! | ConfigMap | `data` | Written |
//! |---|---|---|
//! | `<campaign>-audience-<i>` | `meta`, `lines` ([`super::audience`]) | once, at the start |
//! | `<campaign>-progress-<i>` | `meta`, `states`, `details` ([`super::progress`]) | per claim and flush, whole object, under its `resourceVersion` |
//!
//! The start commits when `progress-0` exists: it is written last, after every audience shard
//! and every other progress shard. Nothing is sent before that, so a start cut short (some
//! shards written) is simply written again — from a fresh snapshot, overwriting what this
//! Campaign owns — and a ConfigMap this Campaign does not own is never touched.

use std::collections::BTreeMap;

use flotilla_crds::campaign::Campaign;
use flotilla_crds::common::labels;
use flotilla_runtime::ErrorClass;
use flotilla_runtime::shards::{self, Shard};
use futures::{StreamExt, TryStreamExt, stream};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::PostParams;
use kube::{Api, Client, Resource, ResourceExt};
use sha2::{Digest, Sha256};

use super::audience::{AUDIENCE_FORMAT, Audience, AudienceError};
use super::progress::{Claim, DeliveryLedger, FlushPolicy, ProgressError};

/// On every ledger ConfigMap: the owning Campaign's UID (a name may be too long for a label).
pub const CAMPAIGN_UID_LABEL: &str = "flotilla.dev/campaign-uid";
/// On every ledger ConfigMap: `audience` or `progress`.
pub const LEDGER_PART_LABEL: &str = "flotilla.dev/ledger";
/// Requests in flight while writing or reading a ledger's shards.
const CONCURRENCY: usize = 8;
const MAX_NAME: usize = 253;

/// Why the ledger cannot be read or written.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// A ConfigMap with a ledger shard's name exists and is not this Campaign's.
    #[error("ConfigMap {name} exists and is not this Campaign's")]
    NameTaken {
        /// The ConfigMap.
        name: String,
        /// It is a ledger shard of an earlier Campaign of the same name (deleted and
        /// re-created): the garbage collector is about to remove it, so this heals.
        earlier_campaign: bool,
    },
    /// A progress shard changed since this ledger read or wrote it: another writer. Drop the
    /// ledger and load it again; never write over it.
    #[error("ConfigMap {name} was changed by another writer")]
    Conflict {
        /// The ConfigMap.
        name: String,
    },
    /// The audience of a started campaign does not decode.
    #[error("the audience shards do not decode (at fault: {})", .config_map.as_deref().unwrap_or("all"))]
    Audience {
        /// The ConfigMap at fault, when one is.
        config_map: Option<String>,
        /// What is wrong.
        #[source]
        source: AudienceError,
    },
    /// The progress of a started campaign does not decode.
    #[error("the progress shards do not decode (at fault: {})", .config_map.as_deref().unwrap_or("all"))]
    Progress {
        /// The ConfigMap at fault, when one is.
        config_map: Option<String>,
        /// What is wrong.
        #[source]
        source: ProgressError,
    },
    /// The API server refused or failed.
    #[error("{action} ConfigMap {name}")]
    Api {
        /// What was being done.
        action: &'static str,
        /// The ConfigMap.
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
}

impl LedgerError {
    /// The ConfigMap at fault, when one is: for the condition message and the Event.
    pub fn config_map(&self) -> Option<&str> {
        match self {
            LedgerError::NameTaken { name, .. }
            | LedgerError::Conflict { name }
            | LedgerError::Api { name, .. } => Some(name),
            LedgerError::Audience { config_map, .. } | LedgerError::Progress { config_map, .. } => {
                config_map.as_deref()
            }
        }
    }

    /// How the controller's error policy treats it.
    pub fn class(&self) -> ErrorClass {
        match self {
            LedgerError::NameTaken {
                earlier_campaign: true,
                ..
            } => ErrorClass::Transient,
            LedgerError::NameTaken { .. }
            | LedgerError::Audience { .. }
            | LedgerError::Progress { .. } => ErrorClass::Permanent,
            LedgerError::Conflict { .. } => ErrorClass::Transient,
            LedgerError::Api { source, .. } => match source {
                kube::Error::Api(status) if status.code == 403 => ErrorClass::Forbidden,
                kube::Error::Api(status) if (400..500).contains(&status.code) => {
                    if status.code == 429 {
                        ErrorClass::Transient
                    } else {
                        ErrorClass::Permanent
                    }
                }
                _ => ErrorClass::Transient,
            },
        }
    }
}

/// Which of the two shard sets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LedgerPart {
    /// The audience snapshot.
    Audience,
    /// Delivery progress.
    Progress,
}

impl LedgerPart {
    fn as_str(self) -> &'static str {
        match self {
            LedgerPart::Audience => "audience",
            LedgerPart::Progress => "progress",
        }
    }
}

/// The name of shard `index` of `part` of the campaign `campaign`:
/// `<campaign>-<part>-<index>`, or, when that is over 253 characters, the campaign name cut
/// short plus 8 hex digits of its SHA-256, so names stay unique and valid.
pub fn shard_name(campaign: &str, part: LedgerPart, index: usize) -> String {
    let suffix = format!("-{}-{index}", part.as_str());
    if campaign.len() + suffix.len() <= MAX_NAME {
        return format!("{campaign}{suffix}");
    }
    let hash = shards::hex(&Sha256::digest(campaign.as_bytes())[..4]);
    let room = MAX_NAME - suffix.len() - hash.len() - 1;
    let prefix = campaign[..room].trim_end_matches(['-', '.']);
    format!("{prefix}-{hash}{suffix}")
}

/// The ledger ConfigMaps of one Campaign.
#[derive(Clone)]
pub struct LedgerStore {
    api: Api<ConfigMap>,
    campaign: String,
    uid: String,
    owner: OwnerReference,
    policy: FlushPolicy,
}

impl LedgerStore {
    /// The store of `campaign` (which must have been read from the API server: its UID owns
    /// the shards).
    pub fn new(client: Client, campaign: &Campaign, policy: FlushPolicy) -> Self {
        let uid = campaign.uid().unwrap_or_default();
        let owner = OwnerReference {
            api_version: Campaign::api_version(&()).into_owned(),
            kind: Campaign::kind(&()).into_owned(),
            name: campaign.name_any(),
            uid: uid.clone(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        };
        Self {
            api: Api::namespaced(client, &campaign.namespace().unwrap_or_default()),
            campaign: campaign.name_any(),
            uid,
            owner,
            policy,
        }
    }

    /// The store of round `round` of a trigger campaign (round 0 is the store itself): its
    /// shards are named after `<campaign>-r<round>`.
    pub fn round(mut self, round: usize) -> Self {
        if round > 0 {
            self.campaign = format!("{}-r{round}", self.campaign);
        }
        self
    }

    fn name(&self, part: LedgerPart, index: usize) -> String {
        shard_name(&self.campaign, part, index)
    }

    fn audience_error(&self, source: AudienceError) -> LedgerError {
        let AudienceError::Shards(shard_error) = &source;
        LedgerError::Audience {
            config_map: shard_error
                .index()
                .map(|i| self.name(LedgerPart::Audience, i)),
            source,
        }
    }

    fn config_map(
        &self,
        part: LedgerPart,
        index: usize,
        data: BTreeMap<String, String>,
        resource_version: Option<String>,
    ) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                name: Some(self.name(part, index)),
                labels: Some(BTreeMap::from([
                    (CAMPAIGN_UID_LABEL.to_owned(), self.uid.clone()),
                    (LEDGER_PART_LABEL.to_owned(), part.as_str().to_owned()),
                    (
                        labels::MANAGED_BY.to_owned(),
                        labels::MANAGED_BY_VALUE.to_owned(),
                    ),
                ])),
                owner_references: Some(vec![self.owner.clone()]),
                resource_version,
                ..ObjectMeta::default()
            },
            data: Some(data),
            ..ConfigMap::default()
        }
    }

    fn name_taken(&self, name: String, config_map: &ConfigMap) -> LedgerError {
        let earlier_campaign =
            config_map.owner_references().iter().any(|o| {
                o.kind == self.owner.kind && o.name == self.owner.name && o.uid != self.uid
            }) && config_map.labels().contains_key(LEDGER_PART_LABEL);
        LedgerError::NameTaken {
            name,
            earlier_campaign,
        }
    }

    fn owned(&self, config_map: &ConfigMap) -> bool {
        config_map
            .owner_references()
            .iter()
            .any(|o| o.uid == self.uid)
    }

    /// The ledger of the campaign: the one persisted if its start committed, else a new one
    /// from `snapshot` (called only then), written before it is returned.
    pub async fn open(
        &self,
        snapshot: impl FnOnce() -> (Audience, Vec<Shard>),
    ) -> Result<DeliveryLedger, LedgerError> {
        match self.load().await? {
            Some(ledger) => Ok(ledger),
            None => {
                let (audience, shards) = snapshot();
                self.start(audience, shards).await
            }
        }
    }

    /// The persisted ledger, or `None` when the start never committed (nothing, or only part
    /// of a start, is there).
    ///
    /// # Errors
    /// [`LedgerError::NameTaken`] when a shard's name is another's ConfigMap;
    /// [`LedgerError::Audience`] / [`LedgerError::Progress`] when a committed ledger is damaged.
    pub async fn load(&self) -> Result<Option<DeliveryLedger>, LedgerError> {
        let Some(first) = self.read(LedgerPart::Progress, 0).await? else {
            return Ok(None);
        };
        let audience_zero = self.read(LedgerPart::Audience, 0).await?;
        let count = match &audience_zero {
            Some(config_map) => {
                shards::shard_meta(AUDIENCE_FORMAT, &shard(0, config_map))
                    .map_err(|e| self.audience_error(e.into()))?
                    .count
            }
            None => 1,
        };
        let rest: Vec<Option<ConfigMap>> = stream::iter(1..count)
            .map(|index| self.read(LedgerPart::Audience, index))
            .buffered(CONCURRENCY)
            .try_collect()
            .await?;
        let mut audience_shards = Vec::with_capacity(count);
        for (index, config_map) in std::iter::once(audience_zero).chain(rest).enumerate() {
            match config_map {
                Some(config_map) => audience_shards.push(shard(index, &config_map)),
                None => {
                    let missing = shards::ShardError::Missing { index, count };
                    return Err(self.audience_error(missing.into()));
                }
            }
        }
        let audience = Audience::decode(&audience_shards).map_err(|e| self.audience_error(e))?;
        let rest: Vec<Option<ConfigMap>> = stream::iter(1..audience.shard_count())
            .map(|index| self.read(LedgerPart::Progress, index))
            .buffered(CONCURRENCY)
            .try_collect()
            .await?;
        let progress = std::iter::once(Some(first))
            .chain(rest)
            .enumerate()
            .filter_map(|(index, config_map)| {
                let config_map = config_map?;
                let version = config_map.resource_version().unwrap_or_default();
                Some((index, config_map.data.unwrap_or_default(), version))
            })
            .collect();
        DeliveryLedger::load(&self.uid, audience, progress, self.policy)
            .map(Some)
            .map_err(|source| LedgerError::Progress {
                config_map: source.index().map(|i| self.name(LedgerPart::Progress, i)),
                source,
            })
    }

    /// Writes a new ledger for `audience` (its `shards` as [`Audience::from_recipients`] gave
    /// them): the audience shards and progress shards 1.. first, progress shard 0 last (the
    /// commit). Shards of an earlier start cut short are overwritten.
    pub async fn start(
        &self,
        audience: Audience,
        audience_shards: Vec<Shard>,
    ) -> Result<DeliveryLedger, LedgerError> {
        let mut ledger = DeliveryLedger::start(&self.uid, audience, self.policy);
        let mut writes: Vec<(LedgerPart, usize, BTreeMap<String, String>)> = audience_shards
            .into_iter()
            .map(|s| (LedgerPart::Audience, s.index, s.data))
            .collect();
        writes.extend(
            (1..ledger.audience().shard_count())
                .map(|i| (LedgerPart::Progress, i, ledger.progress_data(i))),
        );
        let versions: Vec<(LedgerPart, usize, String)> = stream::iter(writes)
            .map(|(part, index, data)| async move {
                let version = self.create_or_overwrite(part, index, data).await?;
                Ok::<_, LedgerError>((part, index, version))
            })
            .buffer_unordered(CONCURRENCY)
            .try_collect()
            .await?;
        for (part, index, version) in versions {
            if part == LedgerPart::Progress {
                ledger.persisted(index, version);
            }
        }
        let version = self
            .create_or_overwrite(LedgerPart::Progress, 0, ledger.progress_data(0))
            .await?;
        ledger.persisted(0, version);
        Ok(ledger)
    }

    /// Claims up to `max` recipients ([`DeliveryLedger::claim`]) and persists the claim, with
    /// every outcome recorded so far, before returning it: what it returns may be sent.
    ///
    /// # Errors
    /// After an error the claim may or may not be persisted, and nothing claimed may be sent;
    /// after [`LedgerError::Conflict`] load the ledger again.
    pub async fn claim(
        &self,
        ledger: &mut DeliveryLedger,
        max: usize,
        now: Timestamp,
    ) -> Result<Vec<Claim>, LedgerError> {
        let claims = ledger.claim(max, now);
        // Nothing claimed, nothing to persist before a send: recorded outcomes wait for the
        // flush policy (else the tail of a campaign costs a write per message).
        if !claims.is_empty() {
            self.flush(ledger).await?;
        }
        Ok(claims)
    }

    /// Writes every changed progress shard; returns how many writes it made.
    pub async fn flush(&self, ledger: &mut DeliveryLedger) -> Result<usize, LedgerError> {
        let dirty = ledger.dirty_shards();
        for &index in &dirty {
            let version = self.update(ledger, index).await?;
            ledger.persisted(index, version);
        }
        Ok(dirty.len())
    }

    /// [`Self::flush`] when [`DeliveryLedger::needs_flush`] says so.
    pub async fn flush_if_due(
        &self,
        ledger: &mut DeliveryLedger,
        now: Timestamp,
    ) -> Result<usize, LedgerError> {
        if ledger.needs_flush(now) {
            self.flush(ledger).await
        } else {
            Ok(0)
        }
    }

    /// Replaces progress shard `index` under the `resourceVersion` the ledger last saw.
    async fn update(&self, ledger: &DeliveryLedger, index: usize) -> Result<String, LedgerError> {
        let name = self.name(LedgerPart::Progress, index);
        let version = ledger.resource_version(index).map(str::to_owned);
        let config_map = self.config_map(
            LedgerPart::Progress,
            index,
            ledger.progress_data(index),
            version,
        );
        match self
            .api
            .replace(&name, &PostParams::default(), &config_map)
            .await
        {
            Ok(written) => Ok(written.resource_version().unwrap_or_default()),
            Err(kube::Error::Api(status)) if status.code == 409 || status.code == 404 => {
                // 404: someone deleted it; writing it again could resurrect a stale view.
                Err(LedgerError::Conflict { name })
            }
            Err(source) => Err(LedgerError::Api {
                action: "updating",
                name,
                source,
            }),
        }
    }

    /// Creates a shard; when its name exists and this Campaign owns it (a start cut short),
    /// replaces it; never touches another's ConfigMap.
    async fn create_or_overwrite(
        &self,
        part: LedgerPart,
        index: usize,
        data: BTreeMap<String, String>,
    ) -> Result<String, LedgerError> {
        let name = self.name(part, index);
        let api_error = |action| {
            let name = name.clone();
            move |source| LedgerError::Api {
                action,
                name,
                source,
            }
        };
        let config_map = self.config_map(part, index, data, None);
        match self.api.create(&PostParams::default(), &config_map).await {
            Ok(created) => return Ok(created.resource_version().unwrap_or_default()),
            Err(kube::Error::Api(status)) if status.code == 409 => {}
            Err(source) => return Err(api_error("creating")(source)),
        }
        let existing = self.api.get(&name).await.map_err(api_error("reading"))?;
        if !self.owned(&existing) {
            return Err(self.name_taken(name, &existing));
        }
        let mut config_map = config_map;
        config_map.metadata.resource_version = existing.resource_version();
        match self
            .api
            .replace(&name, &PostParams::default(), &config_map)
            .await
        {
            Ok(written) => Ok(written.resource_version().unwrap_or_default()),
            Err(kube::Error::Api(status)) if status.code == 409 => {
                Err(LedgerError::Conflict { name })
            }
            Err(source) => Err(api_error("overwriting")(source)),
        }
    }

    /// Reads a shard: `None` when absent, an error when the name is another's ConfigMap.
    async fn read(&self, part: LedgerPart, index: usize) -> Result<Option<ConfigMap>, LedgerError> {
        let name = self.name(part, index);
        match self.api.get_opt(&name).await {
            Ok(Some(config_map)) if !self.owned(&config_map) => {
                Err(self.name_taken(name, &config_map))
            }
            Ok(found) => Ok(found),
            Err(source) => Err(LedgerError::Api {
                action: "reading",
                name,
                source,
            }),
        }
    }
}

fn shard(index: usize, config_map: &ConfigMap) -> Shard {
    Shard {
        index,
        data: config_map.data.clone().unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_stay_valid_and_unique_when_long() {
        assert_eq!(
            shard_name("spring-sale", LedgerPart::Audience, 3),
            "spring-sale-audience-3"
        );
        let long = format!("{}.x", "a".repeat(240));
        let other = format!("{}.y", "a".repeat(240));
        let a = shard_name(&long, LedgerPart::Progress, 12_345);
        let b = shard_name(&other, LedgerPart::Progress, 12_345);
        assert!(a.len() <= 253 && b.len() <= 253, "{a}");
        assert_ne!(a, b);
        assert!(a.ends_with("-progress-12345"));
        // A cut that would end on '-' or '.' is trimmed to an alphanumeric.
        let dashes = format!("{}{}", "b".repeat(200), "-".repeat(53));
        let name = shard_name(&dashes, LedgerPart::Audience, 0);
        assert!(!name.contains("--"), "{name}");
    }
}
