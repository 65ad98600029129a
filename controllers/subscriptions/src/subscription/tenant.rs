//! The requests that carry one Subscription's decision out: retiring namespaces (delete, or
//! release with the children in them), provisioning each namespace (create or apply the
//! Namespace, server-side apply every child, delete the children the plan no longer asks
//! for), and scaling workloads to zero or back. Each stops at the first failure and names the
//! object in its error; the shell writes status only when all of them succeeded.

use std::fmt::Debug;

use flotilla_crds::{Subscription, SubscriptionPhase};
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, LimitRange, Namespace, ResourceQuota};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::api::{
    DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams, Preconditions,
};
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;
use kube::{Api, Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::build::{
    ENTITLEMENTS_NAME, LIMIT_RANGE_NAME, NETWORK_POLICY_NAME, QUOTA_NAME, ROLE_BINDING_NAME,
    TenantObjects,
};
use super::cancellation::release_patch;
use super::namespaces::{self, Ownership};
use super::phase::{Decision, WorkloadAction};
use super::reconcile::{ChildOperation, SubscriptionError, SubscriptionState};
use super::status::event_reasons;
use super::suspension::{self, Workload, WorkloadPatch};
use flotilla_runtime::applied::{ChildApply, ChildKey, Versioning};
use flotilla_runtime::context::Context;
use flotilla_runtime::events;
use flotilla_runtime::status::FIELD_MANAGER;

/// What provisioning one namespace did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Provisioned {
    /// The ResourceQuota was written (applied or deleted), or an earlier apply is not in the
    /// cache yet: its watch event is on its way, and the usage the cache shows may be from
    /// before.
    pub quota_applied: bool,
}

/// The requests that carry a decision out for one Subscription.
pub struct Tenant<'a> {
    /// The Subscription.
    pub subscription: &'a Subscription,
    /// Its name.
    pub name: &'a str,
    /// Its UID.
    pub uid: &'a str,
    /// The namespaces the decision was made from.
    pub existing: &'a [Namespace],
    /// The controller's context.
    pub ctx: &'a Context<SubscriptionState>,
}

impl Tenant<'_> {
    fn client(&self) -> Client {
        self.ctx.state.client.clone()
    }

    fn failed(
        &self,
        operation: ChildOperation,
        object: String,
    ) -> impl FnOnce(kube::Error) -> SubscriptionError + '_ {
        move |source| SubscriptionError::Child {
            name: self.name.to_owned(),
            operation,
            object,
            source,
        }
    }

    /// Drops the applied record of a child this pass deletes or lets go (`namespace` empty
    /// for a Namespace): if it comes back, it is applied whatever the cache shows.
    fn forget<K: Resource<DynamicType = ()>>(&self, namespace: &str, name: &str) {
        self.ctx.state.applied.forget(&ChildKey {
            kind: K::kind(&()).into_owned(),
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        });
    }

    fn existing(&self, namespace: &str) -> Option<&Namespace> {
        self.existing
            .iter()
            .find(|ns| ns.metadata.name.as_deref() == Some(namespace))
    }

    /// Lets go of namespaces: deletes them, or releases them and Flotilla's children in them.
    pub async fn retire(&self, decision: &Decision) -> Result<(), SubscriptionError> {
        let retire = &decision.actions.retire;
        let api: Api<Namespace> = Api::all(self.client());
        for namespace in &retire.delete {
            self.forget::<Namespace>("", namespace);
            // The decision rests on what the namespace was when read (its ownerReference): a
            // namespace re-created or changed since is refused with 409 and decided again.
            let Some(params) = self
                .existing(namespace)
                .map(|ns| preconditioned(&ns.metadata))
            else {
                continue;
            };
            match api.delete(namespace, &params).await {
                Ok(_) => {
                    tracing::info!(namespace, "namespace deleted");
                    self.announce(
                        event_reasons::NAMESPACE_DELETED,
                        format!("namespace {namespace} deleted (deletionPolicy: Delete)"),
                    )
                    .await;
                }
                Err(kube::Error::Api(status)) if status.code == 404 => {}
                Err(error) => {
                    return Err(self
                        .failed(ChildOperation::Delete, format!("Namespace {namespace}"))(
                        error,
                    ));
                }
            }
        }
        for namespace in &retire.release {
            self.forget::<Namespace>("", namespace);
            // Children first: a namespace released before its children would no longer be
            // found as ours, and the garbage collector would delete the children still owned
            // by the Subscription once it is gone.
            self.release_child::<ResourceQuota>(namespace, QUOTA_NAME)
                .await?;
            self.release_child::<LimitRange>(namespace, LIMIT_RANGE_NAME)
                .await?;
            self.release_child::<RoleBinding>(namespace, ROLE_BINDING_NAME)
                .await?;
            self.release_child::<NetworkPolicy>(namespace, NETWORK_POLICY_NAME)
                .await?;
            self.release_child::<ConfigMap>(namespace, ENTITLEMENTS_NAME)
                .await?;
            if let Some(existing) = self.existing(namespace)
                && let Some(patch) = release_patch(&existing.metadata, self.uid)
            {
                api.patch(namespace, &write_params(), &Patch::Merge(&patch))
                    .await
                    .map_err(
                        self.failed(ChildOperation::Release, format!("Namespace {namespace}")),
                    )?;
                tracing::info!(namespace, "namespace released");
                self.announce(
                    event_reasons::NAMESPACE_RELEASED,
                    format!(
                        "namespace {namespace} released: kept, without Flotilla's labels and ownerReferences"
                    ),
                )
                .await;
            }
        }
        Ok(())
    }

    async fn announce(&self, reason: &'static str, note: String) {
        events::publish(
            &self.ctx.recorder,
            self.subscription,
            EventType::Normal,
            reason,
            "Cancel",
            note,
        )
        .await;
    }

    /// Releases the child `name` of kind `K` in `namespace`, if it exists and is ours (carries
    /// an ownerReference to the Subscription's UID): an object of that name someone else made
    /// is left as it is.
    async fn release_child<K>(&self, namespace: &str, name: &str) -> Result<(), SubscriptionError>
    where
        K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
            + Clone
            + DeserializeOwned
            + Debug,
    {
        let object = || format!("{} {namespace}/{name}", K::kind(&()));
        self.forget::<K>(namespace, name);
        let api: Api<K> = Api::namespaced(self.client(), namespace);
        let Some(child) = api
            .get_metadata_opt(name)
            .await
            .map_err(self.failed(ChildOperation::Read, object()))?
        else {
            return Ok(());
        };
        if !owned_by(&child.metadata, self.uid) {
            return Ok(());
        }
        if let Some(patch) = release_patch(&child.metadata, self.uid) {
            api.patch(name, &write_params(), &Patch::Merge(&patch))
                .await
                .map_err(self.failed(ChildOperation::Release, object()))?;
        }
        Ok(())
    }

    /// Creates or keeps in shape one tenant namespace and its children. Children the cache
    /// shows as last applied are not sent again (see [`flotilla_runtime::applied`]).
    ///
    /// The ResourceQuota goes last: a quota in force before the other children would count
    /// (and could refuse) Flotilla's own ConfigMap, and the quota controller's first usage
    /// report would be out of date at once, costing another status write.
    pub async fn provision(
        &self,
        objects: &TenantObjects,
    ) -> Result<Provisioned, SubscriptionError> {
        let namespace = objects.namespace.name_any();
        self.ensure_namespace(&objects.namespace).await?;
        let caches = &self.ctx.state.caches;
        let quota = async {
            match &objects.quota {
                Some(quota) => {
                    // Compared by content: the quota controller rewrites `status.used` on every
                    // change of usage, which is no reason to apply the spec again.
                    let cached = caches.quotas.get(&ObjectRef::from_obj(quota));
                    self.apply_child(quota, cached.as_deref(), Versioning::Content)
                        .await
                }
                None => {
                    self.delete_unwanted::<ResourceQuota>(
                        &namespace,
                        QUOTA_NAME,
                        caches
                            .quotas
                            .get(&ObjectRef::new(QUOTA_NAME).within(&namespace))
                            .as_deref()
                            .map(|cached| &cached.metadata),
                    )
                    .await
                }
            }
        };
        let limit_range = async {
            match &objects.limit_range {
                Some(limit_range) => self.apply_watched(limit_range).await,
                None => {
                    self.delete_unwatched::<LimitRange>(&namespace, LIMIT_RANGE_NAME)
                        .await
                }
            }
        };
        let network_policy = async {
            match &objects.network_policy {
                Some(policy) => self.apply_watched(policy).await,
                None => {
                    self.delete_unwatched::<NetworkPolicy>(&namespace, NETWORK_POLICY_NAME)
                        .await
                }
            }
        };
        let role_binding = self.apply_watched(&objects.role_binding);
        let entitlements = self.apply_watched(&objects.entitlements);
        tokio::try_join!(limit_range, network_policy, role_binding, entitlements)?;
        Ok(Provisioned {
            quota_applied: quota.await?,
        })
    }

    /// Creates the Namespace if the cache has not seen it, or applies it unless the cache
    /// shows it as last applied. Creating first matters: an apply would also succeed on a
    /// namespace someone else created a moment ago, and take it over.
    async fn ensure_namespace(&self, desired: &Namespace) -> Result<(), SubscriptionError> {
        let name = desired.name_any();
        let object = || format!("Namespace {name}");
        let api: Api<Namespace> = Api::all(self.client());
        let applied = &self.ctx.state.applied;
        let key = ChildKey::of(desired);
        // A namespace this controller created a moment ago whose watch event has not arrived
        // yet is not created again (see `AppliedChildren::is_current`).
        if self.existing(&name).is_none() && !applied.is_current(&key, desired, None) {
            let params = PostParams {
                field_manager: Some(FIELD_MANAGER.to_owned()),
                ..PostParams::default()
            };
            let flight = applied.start(key);
            match api.create(&params, desired).await {
                Ok(created) => {
                    tracing::info!(namespace = %name, "namespace created");
                    flight.record(desired, Versioning::ResourceVersion.of(&created));
                    return Ok(());
                }
                Err(kube::Error::Api(status)) if status.code == 409 => {
                    let found = api
                        .get_metadata_opt(&name)
                        .await
                        .map_err(self.failed(ChildOperation::Read, object()))?;
                    let ownership = found.map(|found| {
                        let namespace = Namespace {
                            metadata: found.metadata,
                            ..Namespace::default()
                        };
                        namespaces::ownership(&namespace, self.name, self.uid)
                    });
                    match ownership {
                        Some(Ownership::Created) => {}
                        // Handed over meanwhile: applied as such, never given an ownerReference.
                        Some(Ownership::HandedOver) => {
                            let mut handed_over = desired.clone();
                            handed_over.metadata.owner_references = None;
                            return self.apply_namespace(&api, &handed_over).await;
                        }
                        _ => {
                            return Err(SubscriptionError::NamespaceTaken {
                                name: self.name.to_owned(),
                                namespace: name,
                            });
                        }
                    }
                }
                Err(error) => return Err(self.failed(ChildOperation::Create, object())(error)),
            }
        }
        self.apply_namespace(&api, desired).await
    }

    async fn apply_namespace(
        &self,
        api: &Api<Namespace>,
        desired: &Namespace,
    ) -> Result<(), SubscriptionError> {
        let name = desired.name_any();
        let cached = self.ctx.state.caches.namespaces.get(&ObjectRef::new(&name));
        self.ctx
            .state
            .applied
            .apply(api, desired, cached.as_deref(), Versioning::ResourceVersion)
            .await
            .map(drop)
            .map_err(self.failed(ChildOperation::Apply, format!("Namespace {name}")))
    }

    /// Applies `child` unless `cached` (the cache's copy, read with `versioning`) shows it as
    /// last applied. Returns whether its watch event is on its way: it was applied now, or
    /// the cache has not shown its last apply yet.
    async fn apply_child<K, C>(
        &self,
        child: &K,
        cached: Option<&C>,
        versioning: Versioning,
    ) -> Result<bool, SubscriptionError>
    where
        K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
            + Clone
            + DeserializeOwned
            + Serialize
            + Debug,
        C: Resource + Serialize,
    {
        let namespace = child.namespace().unwrap_or_default();
        let api: Api<K> = Api::namespaced(self.client(), &namespace);
        self.ctx
            .state
            .applied
            .apply(&api, child, cached, versioning)
            .await
            .map(|done| done != ChildApply::Unchanged)
            .map_err(self.failed(
                ChildOperation::Apply,
                format!("{} {namespace}/{}", K::kind(&()), child.name_any()),
            ))
    }

    /// [`apply_child`](Self::apply_child) for the children no cache keeps (LimitRange,
    /// NetworkPolicy, RoleBinding, ConfigMap): their watch keeps only a hash of each one's
    /// version, a few bytes instead of an object per child at 50,000 tenants.
    async fn apply_watched<K>(&self, child: &K) -> Result<bool, SubscriptionError>
    where
        K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
            + Clone
            + DeserializeOwned
            + Serialize
            + Debug,
    {
        let namespace = child.namespace().unwrap_or_default();
        let api: Api<K> = Api::namespaced(self.client(), &namespace);
        self.ctx
            .state
            .applied
            .apply_watched(&api, child)
            .await
            .map(|done| done != ChildApply::Unchanged)
            .map_err(self.failed(
                ChildOperation::Apply,
                format!("{} {namespace}/{}", K::kind(&()), child.name_any()),
            ))
    }

    /// [`delete_unwanted`](Self::delete_unwanted) for a child no cache keeps: when its watch
    /// holds it, its metadata is read fresh (a rare request: a plan dropped the feature), so
    /// the ownership proof and the delete's preconditions come from the object itself.
    async fn delete_unwatched<K>(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<bool, SubscriptionError>
    where
        K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
            + Clone
            + DeserializeOwned
            + Debug,
    {
        let key = ChildKey {
            kind: K::kind(&()).into_owned(),
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        };
        if !self.ctx.state.applied.is_watched(&key) {
            return Ok(false);
        }
        let api: Api<K> = Api::namespaced(self.client(), namespace);
        let fresh = api.get_metadata_opt(name).await.map_err(self.failed(
            ChildOperation::Read,
            format!("{} {namespace}/{name}", K::kind(&())),
        ))?;
        self.delete_unwanted::<K>(namespace, name, fresh.as_ref().map(|meta| &meta.metadata))
            .await
    }

    /// Deletes a child the plan no longer asks for, if the cache has seen one that is the
    /// Subscription's (an ownerReference to its UID; the managed-by label the cache selects
    /// on proves nothing). The delete carries the cached UID and resourceVersion, so a newer
    /// object of the same name is never deleted on a stale decision. Returns whether it was
    /// deleted.
    async fn delete_unwanted<K>(
        &self,
        namespace: &str,
        name: &str,
        cached: Option<&ObjectMeta>,
    ) -> Result<bool, SubscriptionError>
    where
        K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
            + Clone
            + DeserializeOwned
            + Debug,
    {
        let Some(cached) = cached.filter(|meta| owned_by(meta, self.uid)) else {
            return Ok(false);
        };
        self.forget::<K>(namespace, name);
        let api: Api<K> = Api::namespaced(self.client(), namespace);
        match api.delete(name, &preconditioned(cached)).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(false),
            Err(error) => Err(self.failed(
                ChildOperation::Delete,
                format!("{} {namespace}/{name}", K::kind(&())),
            )(error)),
        }
    }

    /// Scales the tenant's workloads to zero, or restores them.
    pub async fn workloads(&self, decision: &Decision) -> Result<(), SubscriptionError> {
        let state = &self.ctx.state;
        match &decision.actions.workloads {
            WorkloadAction::Leave => Ok(()),
            WorkloadAction::ScaleToZero { namespaces } => {
                state.restore_pending().insert(self.uid.to_owned());
                for namespace in namespaces {
                    let workloads = self.list_workloads(namespace).await?;
                    for patch in suspension::suspend(&workloads) {
                        self.patch_workload(&patch, ChildOperation::Suspend).await?;
                    }
                }
                Ok(())
            }
            WorkloadAction::Restore { namespaces } => {
                let recorded = self
                    .subscription
                    .status
                    .as_ref()
                    .and_then(|status| status.phase);
                // Only a tenant that was suspended has anything to restore; listing every
                // workload on every reconcile of an active tenant would cost two lists per
                // namespace for nothing.
                let suspended = recorded == Some(SubscriptionPhase::Suspended)
                    || state.restore_pending().contains(self.uid);
                if !suspended {
                    return Ok(());
                }
                for namespace in namespaces {
                    let workloads = self.list_workloads(namespace).await?;
                    let restoration = suspension::restore(&workloads);
                    for patch in &restoration.patches {
                        self.patch_workload(patch, ChildOperation::Restore).await?;
                    }
                    for unreadable in &restoration.unreadable {
                        events::publish(
                            &self.ctx.recorder,
                            self.subscription,
                            EventType::Warning,
                            event_reasons::REPLICAS_NOT_RESTORED,
                            "Resume",
                            format!(
                                "{}: the recorded replica count {:?} in {} is not a number; the annotation was removed and the replicas left as they are",
                                unreadable.target,
                                unreadable.value,
                                suspension::REPLICAS_BEFORE_SUSPEND
                            ),
                        )
                        .await;
                    }
                }
                state.restore_pending().remove(self.uid);
                Ok(())
            }
        }
    }

    async fn list_workloads(&self, namespace: &str) -> Result<Vec<Workload>, SubscriptionError> {
        let deployments: Api<Deployment> = Api::namespaced(self.client(), namespace);
        let stateful_sets: Api<StatefulSet> = Api::namespaced(self.client(), namespace);
        let params = ListParams::default();
        let (deployments, stateful_sets) = tokio::try_join!(
            async {
                deployments.list(&params).await.map_err(
                    self.failed(ChildOperation::List, format!("Deployments in {namespace}")),
                )
            },
            async {
                stateful_sets.list(&params).await.map_err(
                    self.failed(ChildOperation::List, format!("StatefulSets in {namespace}")),
                )
            },
        )?;
        Ok(deployments
            .items
            .iter()
            .filter_map(Workload::from_deployment)
            .chain(
                stateful_sets
                    .items
                    .iter()
                    .filter_map(Workload::from_stateful_set),
            )
            .collect())
    }

    async fn patch_workload(
        &self,
        patch: &WorkloadPatch,
        operation: ChildOperation,
    ) -> Result<(), SubscriptionError> {
        let target = &patch.target;
        let body = Patch::Merge(&patch.patch);
        let result = match target.kind {
            suspension::WorkloadKind::Deployment => {
                Api::<Deployment>::namespaced(self.client(), &target.namespace)
                    .patch(&target.name, &write_params(), &body)
                    .await
                    .map(drop)
            }
            suspension::WorkloadKind::StatefulSet => {
                Api::<StatefulSet>::namespaced(self.client(), &target.namespace)
                    .patch(&target.name, &write_params(), &body)
                    .await
                    .map(drop)
            }
        };
        result.map_err(self.failed(operation, target.to_string()))?;
        tracing::info!(workload = %target, %operation, "workload scaled");
        Ok(())
    }
}

/// Whether `meta` carries an ownerReference to the Subscription with UID `uid`: the proof
/// that Flotilla made the object for it.
fn owned_by(meta: &ObjectMeta, uid: &str) -> bool {
    !uid.is_empty()
        && meta
            .owner_references
            .iter()
            .flatten()
            .any(|owner| owner.uid == uid)
}

/// A delete that only goes through if the object is still the one read: same UID, same
/// resourceVersion (409 Conflict otherwise).
fn preconditioned(meta: &ObjectMeta) -> DeleteParams {
    DeleteParams {
        preconditions: Some(Preconditions {
            uid: meta.uid.clone(),
            resource_version: meta.resource_version.clone(),
        }),
        ..DeleteParams::default()
    }
}

/// The parameters of the operator's non-apply writes (merge patches).
fn write_params() -> PatchParams {
    PatchParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..PatchParams::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

    fn meta(owner_uid: Option<&str>) -> ObjectMeta {
        ObjectMeta {
            name: Some("flotilla-quota".into()),
            uid: Some("child-uid".into()),
            resource_version: Some("17".into()),
            owner_references: owner_uid.map(|uid| {
                vec![OwnerReference {
                    api_version: "flotilla.dev/v1alpha1".into(),
                    kind: "Subscription".into(),
                    name: "acme".into(),
                    uid: uid.into(),
                    controller: Some(true),
                    block_owner_deletion: Some(true),
                }]
            }),
            ..ObjectMeta::default()
        }
    }

    #[test]
    fn only_an_owner_reference_to_the_uid_proves_ownership() {
        assert!(owned_by(&meta(Some("sub-uid")), "sub-uid"));
        assert!(!owned_by(&meta(Some("older-sub-uid")), "sub-uid"));
        assert!(!owned_by(&meta(None), "sub-uid"));
        assert!(!owned_by(&meta(Some("")), ""), "no UID proves nothing");
    }

    #[test]
    fn deletes_are_bound_to_the_object_that_was_read() {
        let params = preconditioned(&meta(None));
        let preconditions = params.preconditions.expect("preconditions");
        assert_eq!(preconditions.uid.as_deref(), Some("child-uid"));
        assert_eq!(preconditions.resource_version.as_deref(), Some("17"));
    }
}
