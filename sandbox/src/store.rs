//! The object store: every object of every resource, one resourceVersion counter for all of
//! them (as etcd has), the retained window of changes that watches replay, and the server-side
//! lifecycle rules that controllers depend on (finalizers, garbage collection, namespace
//! termination, status subresource, generation).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use http::StatusCode;
use serde_json::{Map, Value, json};
use tokio::sync::broadcast;

use crate::apply::{self, ApplyError, ApplyRequest};
use crate::error::{ApiError, ApiResult, statuses};
use crate::names::{self, NameRule};
use crate::patch;
use crate::patch::PatchError;
use crate::quota;
use crate::registry::{Registry, Resource, ResourceKey};
use crate::schema::{self, FieldError};
use crate::selector::{FieldSelector, LabelSelector};
use crate::status_error;
use crate::watch_window::{RetainedEvents, WatchWindow};

/// (namespace, name); namespace is empty for cluster-scoped objects.
pub type ObjectKey = (String, String);

/// What happened to an object, as a watch reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeType {
    Added,
    Modified,
    Deleted,
}

impl ChangeType {
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeType::Added => "ADDED",
            ChangeType::Modified => "MODIFIED",
            ChangeType::Deleted => "DELETED",
        }
    }
}

/// One committed change. `previous` lets a filtered watch turn a MODIFIED that leaves its
/// selector into a DELETED, as the apiserver does.
#[derive(Debug)]
pub struct Change {
    pub rv: u64,
    pub resource: ResourceKey,
    pub change: ChangeType,
    pub object: Arc<Value>,
    pub previous: Option<Arc<Value>>,
}

/// How the request body changes an existing object.
pub enum Mutation<'a> {
    /// PUT: the whole object.
    Replace(Value),
    /// PATCH with a JSON merge patch.
    Merge(&'a Value),
    /// PATCH with a JSON patch.
    Json(&'a Value),
    /// PATCH with a strategic merge patch (built-in kinds only).
    Strategic(&'a Value),
    /// PATCH with server-side apply.
    Apply { config: &'a Value, force: bool },
}

/// Options shared by writes.
#[derive(Debug, Clone, Default)]
pub struct WriteOptions {
    pub dry_run: bool,
    pub field_manager: Option<String>,
    /// `fieldValidation=Strict`: unknown fields are an error instead of being pruned.
    pub strict_fields: bool,
}

/// Deletion options (`DeleteOptions` body and query).
#[derive(Debug, Clone, Default)]
pub struct DeleteOptions {
    pub dry_run: bool,
    pub propagation: Propagation,
    pub precondition_uid: Option<String>,
    pub precondition_rv: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Propagation {
    #[default]
    Background,
    Foreground,
    Orphan,
}

/// The result of a list.
pub struct ListPage {
    pub items: Vec<Arc<Value>>,
    pub resource_version: u64,
    pub continue_token: Option<String>,
    pub remaining: Option<u64>,
}

/// Where a watch starts.
pub enum WatchStart {
    /// Replay changes after this resourceVersion from the retained window.
    After(u64),
    /// Synthetic ADDED events for the current state, then live changes.
    Now,
    /// Live changes only, from the current resourceVersion (`sendInitialEvents=false` with
    /// resourceVersion unset or `0`).
    Latest,
}

/// A consistent starting point for a watch: the events to send first, and the receiver for
/// everything after them.
pub struct WatchSubscription {
    pub initial: Vec<Arc<Change>>,
    pub receiver: broadcast::Receiver<Arc<Change>>,
    pub resource_version: u64,
}

const FINALIZER_FOREGROUND: &str = "foregroundDeletion";
const FINALIZER_ORPHAN: &str = "orphan";
const NAMESPACE_FINALIZER: &str = "kubernetes";

pub struct Store {
    state: Mutex<State>,
    events: broadcast::Sender<Arc<Change>>,
}

struct State {
    registry: Registry,
    rv: u64,
    objects: HashMap<ResourceKey, BTreeMap<ObjectKey, Arc<Value>>>,
    /// uid → where the object lives, for garbage collection.
    by_uid: HashMap<String, (ResourceKey, ObjectKey)>,
    /// owner uid → dependents.
    dependents: HashMap<String, HashSet<(ResourceKey, ObjectKey)>>,
    /// The retained events of each resource, for watches to resume from and for consistent
    /// `continue` snapshots.
    windows: HashMap<ResourceKey, RetainedEvents>,
    window: WatchWindow,
    /// Where the window of a resource that had no events yet starts: the last compaction.
    compacted_rv: u64,
    /// Changes made during the current operation, broadcast once the lock is released.
    pending: Vec<Arc<Change>>,
}

impl Store {
    pub fn new(registry: Registry, window: WatchWindow) -> Arc<Self> {
        let (events, _) = broadcast::channel(window.upper().clamp(1024, 65536));
        let store = Arc::new(Self {
            state: Mutex::new(State {
                registry,
                rv: 1,
                objects: HashMap::new(),
                by_uid: HashMap::new(),
                dependents: HashMap::new(),
                windows: HashMap::new(),
                window,
                compacted_rv: 0,
                pending: Vec::new(),
            }),
            events,
        });
        for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            let ns_obj = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
            store
                .create(
                    &ResourceKey::new("", "namespaces"),
                    "",
                    ns_obj,
                    &WriteOptions::default(),
                )
                .expect("the built-in namespaces are valid");
        }
        store
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock would be a sandbox bug; the state is still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` under the lock and publishes the changes it made before releasing it, so that
    /// watchers see changes in resourceVersion order and a watch subscribed under the lock
    /// receives exactly the changes after its snapshot.
    fn write<T>(&self, f: impl FnOnce(&mut State) -> ApiResult<T>) -> ApiResult<T> {
        let mut state = self.lock();
        let result = f(&mut state);
        state.update_quotas();
        for change in std::mem::take(&mut state.pending) {
            // No receivers is fine: nobody watches.
            let _ = self.events.send(change);
        }
        result
    }

    pub fn registry(&self) -> Registry {
        self.lock().registry.clone()
    }

    pub fn resource_version(&self) -> u64 {
        self.lock().rv
    }

    pub fn get(&self, key: &ResourceKey, ns: &str, name: &str) -> ApiResult<Arc<Value>> {
        let state = self.lock();
        let resource = state.resource(key)?;
        state
            .objects
            .get(key)
            .and_then(|m| m.get(&(ns.to_string(), name.to_string())))
            .cloned()
            .ok_or_else(|| not_found(&resource, name))
    }

    /// Lists one resource (optionally one namespace): the current state, or with a continue
    /// token the state at the token's resourceVersion (see [`Store::list_at`]).
    pub fn list(
        &self,
        key: &ResourceKey,
        ns: Option<&str>,
        labels: &LabelSelector,
        fields: &FieldSelector,
        limit: Option<usize>,
        continue_token: Option<&str>,
    ) -> ApiResult<ListPage> {
        self.list_at(key, ns, labels, fields, limit, continue_token, None)
    }

    /// Lists one resource (optionally one namespace). Without `snapshot` and `continue_token`
    /// the list is the current state; `snapshot` (`resourceVersionMatch=Exact`) and a continue
    /// token list the state at their resourceVersion, rebuilt from the retained window of
    /// events, or fail with 410 once that version left the window, as an etcd compaction makes
    /// a real apiserver do.
    #[allow(clippy::too_many_arguments)]
    pub fn list_at(
        &self,
        key: &ResourceKey,
        ns: Option<&str>,
        labels: &LabelSelector,
        fields: &FieldSelector,
        limit: Option<usize>,
        continue_token: Option<&str>,
        snapshot: Option<u64>,
    ) -> ApiResult<ListPage> {
        let state = self.lock();
        state.resource(key)?;
        let start_after = match continue_token {
            Some(token) => Some(decode_continue(token).ok_or_else(|| {
                ApiError::from(status_error::bad_request(
                    "continue key is not valid: invalid continue token",
                ))
            })?),
            None => None,
        };
        // The version the list shows: a continue token's, the exact one asked for, or now.
        // A token from an expired snapshot carries -1: continue at the latest version.
        let list_rv = match (&start_after, snapshot) {
            (Some((rv, _)), _) => u64::try_from(*rv).unwrap_or(state.rv),
            (None, Some(rv)) => rv,
            (None, None) => state.rv,
        };
        if list_rv > state.rv {
            return Err(status_error::too_large_resource_version(list_rv, state.rv).into());
        }
        // The objects whose state at `list_rv` differs from now: their state then (None when
        // they did not exist).
        let mut overlay: BTreeMap<ObjectKey, Option<Arc<Value>>> = BTreeMap::new();
        if list_rv < state.rv {
            let Some(changes) = state.events_since(key, list_rv) else {
                return Err(match &start_after {
                    Some((_, last)) => {
                        let (code, mut body) = status_error::gone(INCONSISTENT_CONTINUE);
                        body["metadata"] = json!({"continue": encode_continue(-1, last)});
                        ApiError::from((code, body))
                    }
                    None => status_error::gone(EXPIRED_LIST).into(),
                });
            };
            for change in changes {
                overlay
                    .entry(object_key_of(&change.object))
                    .or_insert_with(|| change.previous.clone());
            }
        }
        let lower = match (&start_after, ns) {
            (Some((_, after)), _) => Bound::Excluded(after.clone()),
            (None, Some(ns)) => Bound::Included((ns.to_string(), String::new())),
            (None, None) => Bound::Unbounded,
        };
        let empty = BTreeMap::new();
        let current = state.objects.get(key).unwrap_or(&empty);
        let at_list_rv = merge_snapshot(
            current.range((lower.clone(), Bound::Unbounded)),
            overlay.range((lower, Bound::Unbounded)),
        )
        .skip_while(|(k, _)| ns.is_some_and(|ns| k.0.as_str() < ns))
        .take_while(|(k, _)| ns.is_none_or(|ns| k.0 == ns));
        let mut items = Vec::new();
        let mut last_key = None;
        let mut more = false;
        for (k, obj) in at_list_rv {
            if !labels.matches(&labels_of(obj)) || !fields.matches(obj) {
                continue;
            }
            if limit.is_some_and(|l| l > 0 && items.len() >= l) {
                more = true;
                break;
            }
            last_key = Some(k.clone());
            items.push(obj.clone());
        }
        let continue_token = if more {
            last_key.map(|k| encode_continue(list_rv as i64, &k))
        } else {
            None
        };
        Ok(ListPage {
            items,
            resource_version: list_rv,
            continue_token,
            remaining: None,
        })
    }

    /// Starts a watch of one resource (optionally one namespace). Events are filtered by the
    /// caller; this only guarantees that nothing is lost or repeated between `initial` and
    /// `receiver`.
    pub fn watch(
        &self,
        key: &ResourceKey,
        ns: Option<&str>,
        start: WatchStart,
    ) -> ApiResult<WatchSubscription> {
        let state = self.lock();
        state.resource(key)?;
        // Subscribing under the lock: no change can be committed between the snapshot and
        // the subscription.
        let receiver = self.events.subscribe();
        let initial = match start {
            WatchStart::After(rv) => match state.events_since(key, rv) {
                Some(changes) => changes.cloned().collect(),
                None => {
                    let horizon = state.horizon(key);
                    return Err(status_error::too_old_resource_version(rv, horizon).into());
                }
            },
            WatchStart::Latest => Vec::new(),
            WatchStart::Now => state
                .objects
                .get(key)
                .into_iter()
                .flat_map(|m| m.iter())
                .filter(|(k, _)| ns.is_none_or(|ns| k.0 == ns))
                .map(|(_, obj)| {
                    Arc::new(Change {
                        rv: rv_of(obj),
                        resource: key.clone(),
                        change: ChangeType::Added,
                        object: obj.clone(),
                        previous: None,
                    })
                })
                .collect(),
        };
        Ok(WatchSubscription {
            initial,
            receiver,
            resource_version: state.rv,
        })
    }

    /// Drops the retained events of every resource so that watches resuming from any earlier
    /// resourceVersion get 410 Gone, as after an etcd compaction and a re-list of the watch
    /// cache.
    pub fn compact(&self) {
        let mut state = self.lock();
        let rv = state.rv;
        for window in state.windows.values_mut() {
            window.restart_at(rv);
        }
        state.compacted_rv = rv;
    }

    /// The window of events retained for each resource.
    pub fn watch_window(&self) -> WatchWindow {
        self.lock().window
    }

    pub fn create(
        &self,
        key: &ResourceKey,
        ns: &str,
        body: Value,
        opts: &WriteOptions,
    ) -> ApiResult<Arc<Value>> {
        self.write(|state| {
            let resource = state.resource(key)?;
            state.create(&resource, ns, body, opts, None)
        })
    }

    pub fn update(
        &self,
        key: &ResourceKey,
        ns: &str,
        name: &str,
        subresource: Option<&str>,
        mutation: Mutation<'_>,
        opts: &WriteOptions,
    ) -> ApiResult<(Arc<Value>, bool)> {
        self.write(|state| {
            let resource = state.resource(key)?;
            state.update(&resource, ns, name, subresource, mutation, opts)
        })
    }

    pub fn delete(
        &self,
        key: &ResourceKey,
        ns: &str,
        name: &str,
        opts: &DeleteOptions,
    ) -> ApiResult<Arc<Value>> {
        self.write(|state| {
            let resource = state.resource(key)?;
            state.delete(&resource, ns, name, opts)
        })
    }

    pub fn delete_collection(
        &self,
        key: &ResourceKey,
        ns: Option<&str>,
        labels: &LabelSelector,
        fields: &FieldSelector,
        opts: &DeleteOptions,
    ) -> ApiResult<Vec<Arc<Value>>> {
        self.write(|state| {
            let resource = state.resource(key)?;
            let targets: Vec<ObjectKey> = state
                .objects
                .get(key)
                .into_iter()
                .flat_map(|m| m.iter())
                .filter(|(k, obj)| {
                    ns.is_none_or(|ns| k.0 == ns)
                        && labels.matches(&labels_of(obj))
                        && fields.matches(obj)
                })
                .map(|(k, _)| k.clone())
                .collect();
            let mut deleted = Vec::new();
            for (obj_ns, name) in targets {
                deleted.push(state.delete(&resource, &obj_ns, &name, opts)?);
            }
            Ok(deleted)
        })
    }
}

impl State {
    /// Watches and snapshots of `key` from a resourceVersion below this get 410.
    fn horizon(&self, key: &ResourceKey) -> u64 {
        self.windows
            .get(key)
            .map_or(self.compacted_rv, RetainedEvents::horizon)
    }

    /// The retained changes of `key` after `rv`, oldest first; None when some are gone.
    fn events_since(
        &self,
        key: &ResourceKey,
        rv: u64,
    ) -> Option<Box<dyn Iterator<Item = &Arc<Change>> + '_>> {
        match self.windows.get(key) {
            Some(window) => window
                .since(rv)
                .map(|it| Box::new(it) as Box<dyn Iterator<Item = _>>),
            None if rv >= self.compacted_rv => Some(Box::new(std::iter::empty())),
            None => None,
        }
    }

    fn resource(&self, key: &ResourceKey) -> ApiResult<Arc<Resource>> {
        self.registry
            .get(key)
            .ok_or_else(|| statuses::resource_not_served(&key.qualified()).into())
    }

    fn get(&self, key: &ResourceKey, obj: &ObjectKey) -> Option<Arc<Value>> {
        self.objects.get(key).and_then(|m| m.get(obj)).cloned()
    }

    fn create(
        &mut self,
        resource: &Resource,
        ns: &str,
        mut body: Value,
        opts: &WriteOptions,
        applied_by: Option<&str>,
    ) -> ApiResult<Arc<Value>> {
        check_type(resource, &body)?;
        drop_builtin_nulls(resource, &mut body);
        let meta = metadata_mut(&mut body)?;
        let ns = if resource.namespaced {
            match meta.get("namespace").and_then(Value::as_str) {
                Some(body_ns) if !body_ns.is_empty() && body_ns != ns => {
                    return Err(status_error::bad_request(
                        "the namespace of the provided object does not match the namespace sent on the request",
                    )
                    .into());
                }
                _ => ns.to_string(),
            }
        } else {
            String::new()
        };
        let name = match meta.get("name").and_then(Value::as_str) {
            Some(name) if !name.is_empty() => name.to_string(),
            _ => match meta.get("generateName").and_then(Value::as_str) {
                Some(prefix) if !prefix.is_empty() => {
                    names::generate_name(prefix, &mut rand::rng())
                }
                _ => {
                    return Err(invalid(
                        resource,
                        "",
                        vec![FieldError::required(
                            "metadata.name",
                            "name or generateName is required",
                        )],
                    ));
                }
            },
        };
        let rule = if resource.group.is_empty() && resource.plural == "namespaces" {
            NameRule::Dns1123Label
        } else if resource.group == "rbac.authorization.k8s.io" {
            NameRule::PathSegment
        } else {
            NameRule::Dns1123Subdomain
        };
        let mut meta_for_validation = body.get("metadata").cloned().unwrap_or_else(|| json!({}));
        meta_for_validation["name"] = json!(name);
        if resource.namespaced {
            meta_for_validation["namespace"] = json!(ns);
        }
        let errors = names::validate_object_meta(&meta_for_validation, resource.namespaced, rule);
        if !errors.is_empty() {
            return Err(invalid(resource, &name, errors));
        }
        if resource.namespaced {
            self.check_namespace_accepts(&ns, &resource.group, &resource.plural, &name)?;
        }
        let key = resource.key();
        let obj_key = (ns.clone(), name.clone());
        if self.get(&key, &obj_key).is_some() {
            return Err(
                status_error::already_exists(&resource.group, &resource.plural, &name).into(),
            );
        }
        let now = now_rfc3339();
        {
            let meta = metadata_mut(&mut body)?;
            meta.insert("name".into(), json!(name));
            if resource.namespaced {
                meta.insert("namespace".into(), json!(ns));
            } else {
                meta.remove("namespace");
            }
            meta.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
            meta.insert("creationTimestamp".into(), json!(now));
            meta.insert("generation".into(), json!(1));
            meta.remove("deletionTimestamp");
            meta.remove("deletionGracePeriodSeconds");
            meta.remove("selfLink");
            if applied_by.is_none() {
                meta.remove("managedFields");
            }
        }
        if resource.has_status
            && let Some(obj) = body.as_object_mut()
        {
            obj.remove("status");
        }
        default_builtin_fields(resource, &mut body);
        if let Some(schema) = &resource.schema {
            let source = match applied_by {
                Some(_) => schema::Source::Applied,
                None => schema::Source::Decoded,
            };
            admit(
                resource,
                schema,
                &name,
                &mut body,
                None,
                opts.strict_fields,
                source,
            )?;
        }
        if applied_by.is_none()
            && let Some(manager) = &opts.field_manager
        {
            apply::record_update(None, &mut body, manager, None, &*resource.list_types, &now);
        }
        drop_empty_metadata(&mut body);
        if opts.dry_run {
            return Ok(Arc::new(body));
        }
        if key.plural == "customresourcedefinitions" {
            self.register_crd(&mut body)?;
        }
        Ok(self.commit(&key, obj_key, Some(body), ChangeType::Added))
    }

    fn update(
        &mut self,
        resource: &Resource,
        ns: &str,
        name: &str,
        subresource: Option<&str>,
        mutation: Mutation<'_>,
        opts: &WriteOptions,
    ) -> ApiResult<(Arc<Value>, bool)> {
        let key = resource.key();
        let ns = if resource.namespaced { ns } else { "" };
        let obj_key = (ns.to_string(), name.to_string());
        let status_only = match subresource {
            None => false,
            Some("status") if resource.has_status => true,
            Some(other) => {
                return Err(
                    statuses::resource_not_served(&format!("{}/{other}", key.qualified())).into(),
                );
            }
        };
        let Some(old) = self.get(&key, &obj_key) else {
            return match mutation {
                Mutation::Apply { config, .. } if !status_only => {
                    let manager = required_manager(opts)?;
                    let mut config = config.clone();
                    fill_identity(resource, &mut config, ns, name)?;
                    let now = now_rfc3339();
                    let created =
                        apply_config(resource, None, &config, manager, false, None, &now)?;
                    let obj = self.create(resource, ns, created, opts, Some(manager))?;
                    Ok((obj, true))
                }
                _ => Err(not_found(resource, name)),
            };
        };
        let now = now_rfc3339();
        let mut proposed = match &mutation {
            Mutation::Replace(body) => {
                check_type(resource, body)?;
                let has_rv = body
                    .pointer("/metadata/resourceVersion")
                    .and_then(Value::as_str)
                    .is_some_and(|rv| !rv.is_empty());
                // Custom resources do not allow unconditional updates.
                if resource.custom && !has_rv {
                    return Err(status_error::resource_version_required(
                        &resource.group,
                        &resource.plural,
                        name,
                    )
                    .into());
                }
                check_rv_precondition(resource, &old, body)?;
                let mut body = body.clone();
                keep_system_metadata(&old, &mut body);
                body
            }
            Mutation::Merge(patch_body) => {
                let mut target = (*old).clone();
                patch::merge_patch(&mut target, patch_body);
                check_rv_precondition(resource, &old, &target)?;
                target
            }
            Mutation::Json(patch_body) => {
                let mut target = (*old).clone();
                patch::json_patch(&mut target, patch_body).map_err(patch_error)?;
                check_rv_precondition(resource, &old, &target)?;
                target
            }
            Mutation::Strategic(patch_body) => {
                if !resource.strategic_merge {
                    return Err(status_error::unsupported_media_type(&[
                        "application/json-patch+json",
                        "application/merge-patch+json",
                        "application/apply-patch+yaml",
                    ])
                    .into());
                }
                let mut target = (*old).clone();
                patch::strategic_merge_patch(&mut target, patch_body, &*resource.list_types)
                    .map_err(patch_error)?;
                check_rv_precondition(resource, &old, &target)?;
                target
            }
            Mutation::Apply { config, force } => {
                let manager = required_manager(opts)?;
                let mut config = (*config).clone();
                fill_identity(resource, &mut config, ns, name)?;
                check_rv_precondition(resource, &old, &config)?;
                let config = restrict_to_subresource(resource, config, status_only);
                apply_config(
                    resource,
                    Some(&old),
                    &config,
                    manager,
                    *force,
                    subresource,
                    &now,
                )?
            }
        };
        drop_builtin_nulls(resource, &mut proposed);
        // Identity and server-owned metadata cannot change through an update.
        keep_system_metadata(&old, &mut proposed);
        if let Some(obj) = proposed.as_object_mut() {
            obj.insert("apiVersion".into(), json!(resource.api_version()));
            obj.insert("kind".into(), json!(resource.kind));
        }
        // The status subresource splits the object: each endpoint changes only its half.
        if resource.has_status {
            proposed = if status_only {
                let mut merged = (*old).clone();
                set_or_remove(&mut merged, "status", proposed.get("status").cloned());
                // Field ownership is recorded for the whole object, status writes included.
                let managed = proposed.pointer("/metadata/managedFields").cloned();
                if let Some(meta) = merged.get_mut("metadata").and_then(Value::as_object_mut) {
                    match managed {
                        Some(m) => meta.insert("managedFields".into(), m),
                        None => meta.remove("managedFields"),
                    };
                }
                merged
            } else {
                set_or_remove(&mut proposed, "status", old.get("status").cloned());
                proposed
            };
        }
        let being_deleted = old.pointer("/metadata/deletionTimestamp").is_some();
        if being_deleted {
            let before: HashSet<&str> = finalizers_of(&old).into_iter().collect();
            let added: Vec<&str> = finalizers_of(&proposed)
                .into_iter()
                .filter(|f| !before.contains(f))
                .collect();
            if !added.is_empty() {
                return Err(invalid(
                    resource,
                    name,
                    vec![FieldError::forbidden(
                        "metadata.finalizers",
                        "no new finalizers can be added if the object is being deleted",
                    )],
                ));
            }
        }
        if let Some(schema) = &resource.schema {
            let source = match mutation {
                Mutation::Apply { .. } => schema::Source::Applied,
                _ => schema::Source::Decoded,
            };
            admit(
                resource,
                schema,
                name,
                &mut proposed,
                Some(&old),
                opts.strict_fields,
                source,
            )?;
        }
        default_builtin_fields(resource, &mut proposed);
        if !matches!(mutation, Mutation::Apply { .. })
            && let Some(manager) = &opts.field_manager
        {
            apply::record_update(
                Some(&old),
                &mut proposed,
                manager,
                subresource,
                &*resource.list_types,
                &now,
            );
        }
        if generation_source(resource, &proposed) != generation_source(resource, &old) {
            let generation = old
                .pointer("/metadata/generation")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            if let Some(meta) = proposed.get_mut("metadata").and_then(Value::as_object_mut) {
                meta.insert("generation".into(), json!(generation + 1));
            }
        }
        drop_empty_metadata(&mut proposed);
        if without_rv(&proposed) == without_rv(&old) {
            // A write that changes nothing is not a change: no new resourceVersion, no event.
            return Ok((old, false));
        }
        if opts.dry_run {
            return Ok((Arc::new(proposed), true));
        }
        if being_deleted
            && finalizers_of(&proposed).is_empty()
            && !is_namespace_holding(resource, &proposed)
        {
            let obj = self.remove(&key, &obj_key, Some(proposed));
            return Ok((obj, true));
        }
        if key.plural == "customresourcedefinitions" {
            self.register_crd(&mut proposed)?;
        }
        Ok((
            self.commit(&key, obj_key, Some(proposed), ChangeType::Modified),
            true,
        ))
    }

    fn delete(
        &mut self,
        resource: &Resource,
        ns: &str,
        name: &str,
        opts: &DeleteOptions,
    ) -> ApiResult<Arc<Value>> {
        let key = resource.key();
        let ns = if resource.namespaced { ns } else { "" };
        let obj_key = (ns.to_string(), name.to_string());
        let Some(old) = self.get(&key, &obj_key) else {
            return Err(not_found(resource, name));
        };
        let uid = old
            .pointer("/metadata/uid")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if let Some(want) = &opts.precondition_uid
            && want != uid
        {
            return Err(status_error::conflict(
                &resource.group,
                &resource.plural,
                name,
                &format!(
                    "Precondition failed: UID in precondition: {want}, UID in object meta: {uid}"
                ),
            )
            .into());
        }
        if let Some(want) = &opts.precondition_rv {
            let have = rv_of(&old).to_string();
            if *want != have {
                return Err(status_error::conflict(
                    &resource.group,
                    &resource.plural,
                    name,
                    &format!(
                        "Precondition failed: ResourceVersion in precondition: {want}, ResourceVersion in object meta: {have}"
                    ),
                )
                .into());
            }
        }
        if opts.dry_run {
            return Ok(old);
        }
        let mut obj = (*old).clone();
        let mut finalizers: Vec<String> =
            finalizers_of(&obj).iter().map(|s| s.to_string()).collect();
        let already_deleting = obj.pointer("/metadata/deletionTimestamp").is_some();
        if !already_deleting {
            match opts.propagation {
                Propagation::Foreground if self.has_dependents(uid) => {
                    finalizers.push(FINALIZER_FOREGROUND.into())
                }
                Propagation::Orphan if self.has_dependents(uid) => {
                    finalizers.push(FINALIZER_ORPHAN.into())
                }
                _ => {}
            }
        }
        let namespace_content = key.plural == "namespaces" && key.group.is_empty();
        if finalizers.is_empty() && !namespace_content {
            return Ok(self.remove(&key, &obj_key, None));
        }
        if already_deleting {
            // Deleting again changes nothing; the finalizers still hold it.
            return Ok(old);
        }
        {
            let meta = metadata_mut(&mut obj)?;
            meta.insert("deletionTimestamp".into(), json!(now_rfc3339()));
            meta.insert("deletionGracePeriodSeconds".into(), json!(0));
            if !finalizers.is_empty() {
                meta.insert("finalizers".into(), json!(finalizers));
            }
        }
        if namespace_content && let Some(o) = obj.as_object_mut() {
            o.insert("status".into(), json!({"phase": "Terminating"}));
        }
        let result = self.commit(&key, obj_key.clone(), Some(obj), ChangeType::Modified);
        self.run_deletion_controllers(&key, &obj_key);
        Ok(self.get(&key, &obj_key).unwrap_or(result))
    }

    /// The resource quota controller: refresh `status` of the quotas in every namespace the
    /// pending changes touched (see [`crate::quota`]).
    fn update_quotas(&mut self) {
        let rq_key = ResourceKey::new("", "resourcequotas");
        let namespaces: HashSet<String> = self
            .pending
            .iter()
            .filter_map(|c| {
                c.object
                    .pointer("/metadata/namespace")
                    .and_then(Value::as_str)
            })
            .map(str::to_string)
            .collect();
        for ns in namespaces {
            let quotas: Vec<(ObjectKey, Arc<Value>)> = self
                .objects
                .get(&rq_key)
                .map(|m| {
                    m.range((ns.clone(), String::new())..)
                        .take_while(|(k, _)| k.0 == ns)
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect()
                })
                .unwrap_or_default();
            for (obj_key, rq) in quotas {
                let status = quota::status(&rq, |group, plural| {
                    self.objects
                        .get(&ResourceKey::new(group, plural))
                        .map(|m| {
                            m.range((ns.clone(), String::new())..)
                                .take_while(|(k, _)| k.0 == ns)
                                .count() as u64
                        })
                        .unwrap_or(0)
                });
                if rq.get("status") != Some(&status) {
                    let mut updated = (*rq).clone();
                    updated["status"] = status;
                    self.commit(&rq_key, obj_key, Some(updated), ChangeType::Modified);
                }
            }
        }
    }

    fn has_dependents(&self, uid: &str) -> bool {
        self.dependents.get(uid).is_some_and(|d| !d.is_empty())
    }

    /// What the garbage collector and the namespace controller do for an object that was just
    /// marked for deletion: orphan or delete its dependents, empty a namespace, and drop the
    /// finalizers they own once their work is done.
    fn run_deletion_controllers(&mut self, key: &ResourceKey, obj_key: &ObjectKey) {
        let Some(obj) = self.get(key, obj_key) else {
            return;
        };
        let uid = obj
            .pointer("/metadata/uid")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let finalizers: Vec<String> = finalizers_of(&obj).iter().map(|s| s.to_string()).collect();
        if finalizers.iter().any(|f| f == FINALIZER_ORPHAN) {
            for (dep_key, dep_obj_key) in self.dependents.get(&uid).cloned().unwrap_or_default() {
                if let Some(dep) = self.get(&dep_key, &dep_obj_key) {
                    let mut dep = (*dep).clone();
                    remove_owner_ref(&mut dep, &uid);
                    self.commit(&dep_key, dep_obj_key, Some(dep), ChangeType::Modified);
                }
            }
            self.dependents.remove(&uid);
            self.drop_finalizer(key, obj_key, FINALIZER_ORPHAN);
        } else if finalizers.iter().any(|f| f == FINALIZER_FOREGROUND) {
            for (dep_key, dep_obj_key) in self.dependents.get(&uid).cloned().unwrap_or_default() {
                self.delete_internal(&dep_key, &dep_obj_key, Propagation::Foreground);
            }
            if !self.has_dependents(&uid) {
                self.drop_finalizer(key, obj_key, FINALIZER_FOREGROUND);
            }
        }
        if key.plural == "namespaces" && key.group.is_empty() {
            self.terminate_namespace(&obj_key.1);
        }
    }

    /// Deletes everything in a terminating namespace; removes the namespace once it is empty.
    fn terminate_namespace(&mut self, ns: &str) {
        let keys: Vec<ResourceKey> = self.objects.keys().cloned().collect();
        for key in keys {
            let Some(resource) = self.registry.get(&key) else {
                continue;
            };
            if !resource.namespaced {
                continue;
            }
            let names: Vec<ObjectKey> = self.objects[&key]
                .range((ns.to_string(), String::new())..)
                .take_while(|(k, _)| k.0 == ns)
                .map(|(k, _)| k.clone())
                .collect();
            for obj_key in names {
                self.delete_internal(&key, &obj_key, Propagation::Background);
            }
        }
        let empty = self.objects.iter().any(|(key, objects)| {
            self.registry.get(key).is_some_and(|r| r.namespaced)
                && objects
                    .range((ns.to_string(), String::new())..)
                    .next()
                    .is_some_and(|(k, _)| k.0 == ns)
        });
        if empty {
            return;
        }
        let ns_key = ResourceKey::new("", "namespaces");
        let ns_obj_key = (String::new(), ns.to_string());
        if let Some(obj) = self.get(&ns_key, &ns_obj_key) {
            if obj.pointer("/metadata/deletionTimestamp").is_none() {
                return;
            }
            let mut obj = (*obj).clone();
            if let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut)
                && let Some(fins) = spec.get_mut("finalizers").and_then(Value::as_array_mut)
            {
                fins.retain(|f| f != NAMESPACE_FINALIZER);
            }
            if finalizers_of(&obj).is_empty() {
                self.remove(&ns_key, &ns_obj_key, Some(obj));
            } else {
                self.commit(&ns_key, ns_obj_key, Some(obj), ChangeType::Modified);
            }
        }
    }

    /// A deletion the control plane itself makes (garbage collection, namespace termination).
    fn delete_internal(
        &mut self,
        key: &ResourceKey,
        obj_key: &ObjectKey,
        propagation: Propagation,
    ) {
        let Some(resource) = self.registry.get(key) else {
            return;
        };
        let opts = DeleteOptions {
            propagation,
            ..Default::default()
        };
        // NotFound here means someone else removed it first: nothing to do.
        let _ = self.delete(&resource, &obj_key.0, &obj_key.1, &opts);
    }

    fn drop_finalizer(&mut self, key: &ResourceKey, obj_key: &ObjectKey, finalizer: &str) {
        let Some(obj) = self.get(key, obj_key) else {
            return;
        };
        let mut obj = (*obj).clone();
        if let Some(fins) = obj
            .pointer_mut("/metadata/finalizers")
            .and_then(Value::as_array_mut)
        {
            fins.retain(|f| f != finalizer);
        }
        if finalizers_of(&obj).is_empty() {
            self.remove(key, obj_key, Some(obj));
        } else {
            self.commit(key, obj_key.clone(), Some(obj), ChangeType::Modified);
        }
    }

    /// Removes an object for good, then collects what depended on it.
    fn remove(
        &mut self,
        key: &ResourceKey,
        obj_key: &ObjectKey,
        last: Option<Value>,
    ) -> Arc<Value> {
        let last = match last {
            Some(v) => v,
            None => self
                .get(key, obj_key)
                .map(|o| (*o).clone())
                .unwrap_or(Value::Null),
        };
        let removed = self.commit(key, obj_key.clone(), None, ChangeType::Deleted);
        let removed = if removed.is_null() {
            Arc::new(last)
        } else {
            removed
        };
        let uid = removed
            .pointer("/metadata/uid")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        if key.plural == "customresourcedefinitions" {
            self.unregister_crd(&removed);
        }
        // Garbage collection: dependents whose owners are all gone are deleted.
        for (dep_key, dep_obj_key) in self.dependents.remove(&uid).unwrap_or_default() {
            let Some(dep) = self.get(&dep_key, &dep_obj_key) else {
                continue;
            };
            let owners_alive = owner_uids(&dep)
                .iter()
                .any(|owner| owner != &uid && self.by_uid.contains_key(owner));
            if !owners_alive {
                self.delete_internal(&dep_key, &dep_obj_key, Propagation::Background);
            }
        }
        // A foreground-deleting owner waits for its last dependent.
        for owner in owner_uids(&removed) {
            if let Some((owner_key, owner_obj_key)) = self.by_uid.get(&owner).cloned()
                && !self.has_dependents(&owner)
            {
                let waiting = self
                    .get(&owner_key, &owner_obj_key)
                    .is_some_and(|o| finalizers_of(&o).contains(&FINALIZER_FOREGROUND));
                if waiting {
                    self.drop_finalizer(&owner_key, &owner_obj_key, FINALIZER_FOREGROUND);
                }
            }
        }
        // The namespace controller finishes a terminating namespace once it is empty.
        if !obj_key.0.is_empty() {
            let ns_key = ResourceKey::new("", "namespaces");
            let terminating = self
                .get(&ns_key, &(String::new(), obj_key.0.clone()))
                .is_some_and(|ns| ns.pointer("/metadata/deletionTimestamp").is_some());
            if terminating {
                self.terminate_namespace(&obj_key.0.clone());
            }
        }
        removed
    }

    /// Stores (or removes, when `object` is None) an object under a new resourceVersion and
    /// records the change. Returns the stored object (the removed one for deletions).
    fn commit(
        &mut self,
        key: &ResourceKey,
        obj_key: ObjectKey,
        object: Option<Value>,
        change: ChangeType,
    ) -> Arc<Value> {
        self.rv += 1;
        let rv = self.rv;
        let previous = self.objects.get(key).and_then(|m| m.get(&obj_key)).cloned();
        if let Some(prev) = &previous {
            self.unindex(key, &obj_key, prev);
        }
        let stored = match object {
            Some(mut obj) => {
                set_rv(&mut obj, rv);
                let obj = Arc::new(obj);
                self.index(key, &obj_key, &obj);
                self.objects
                    .entry(key.clone())
                    .or_default()
                    .insert(obj_key, obj.clone());
                obj
            }
            None => {
                let Some(prev) = previous.clone() else {
                    return Arc::new(Value::Null);
                };
                self.objects.get_mut(key).map(|m| m.remove(&obj_key));
                let mut gone = (*prev).clone();
                set_rv(&mut gone, rv);
                Arc::new(gone)
            }
        };
        let change = Arc::new(Change {
            rv,
            resource: key.clone(),
            change,
            object: stored.clone(),
            previous,
        });
        let (window, floor) = (self.window, self.compacted_rv);
        self.windows
            .entry(key.clone())
            .or_insert_with(|| RetainedEvents::new(window, floor))
            .push(change.clone(), Instant::now());
        self.pending.push(change);
        stored
    }

    fn index(&mut self, key: &ResourceKey, obj_key: &ObjectKey, obj: &Value) {
        if let Some(uid) = obj.pointer("/metadata/uid").and_then(Value::as_str) {
            self.by_uid
                .insert(uid.to_string(), (key.clone(), obj_key.clone()));
        }
        for owner in owner_uids(obj) {
            self.dependents
                .entry(owner)
                .or_default()
                .insert((key.clone(), obj_key.clone()));
        }
    }

    fn unindex(&mut self, key: &ResourceKey, obj_key: &ObjectKey, obj: &Value) {
        if let Some(uid) = obj.pointer("/metadata/uid").and_then(Value::as_str) {
            self.by_uid.remove(uid);
        }
        for owner in owner_uids(obj) {
            if let Some(deps) = self.dependents.get_mut(&owner) {
                deps.remove(&(key.clone(), obj_key.clone()));
                if deps.is_empty() {
                    self.dependents.remove(&owner);
                }
            }
        }
    }

    fn check_namespace_accepts(
        &self,
        ns: &str,
        group: &str,
        plural: &str,
        name: &str,
    ) -> ApiResult<()> {
        if ns.is_empty() {
            return Err(status_error::bad_request(
                "the server could not find the requested resource: a namespace is required",
            )
            .into());
        }
        match self.get(
            &ResourceKey::new("", "namespaces"),
            &(String::new(), ns.to_string()),
        ) {
            None => Err(status_error::not_found("", "namespaces", ns).into()),
            Some(obj) if obj.pointer("/metadata/deletionTimestamp").is_some() => {
                Err(status_error::namespace_terminating(group, plural, name, ns).into())
            }
            Some(_) => Ok(()),
        }
    }

    /// Serves a CustomResourceDefinition's resource and marks it Established.
    fn register_crd(&mut self, crd: &mut Value) -> ApiResult<()> {
        let resource = Registry::resource_from_crd(crd).map_err(|msg| {
            ApiError::from(status_error::invalid(
                "CustomResourceDefinition",
                "apiextensions.k8s.io",
                crd.pointer("/metadata/name")
                    .and_then(Value::as_str)
                    .unwrap_or_default(),
                &[FieldError::invalid_without_value("spec", &msg)],
            ))
        })?;
        let expected = format!("{}.{}", resource.plural, resource.group);
        let name = crd
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if name != expected {
            return Err(status_error::invalid(
                "CustomResourceDefinition",
                "apiextensions.k8s.io",
                name,
                &[FieldError::invalid(
                    "metadata.name",
                    &json!(name),
                    &format!("must be spec.names.plural+\".\"+spec.group: {expected}"),
                )],
            )
            .into());
        }
        let names = crd.pointer("/spec/names").cloned().unwrap_or(Value::Null);
        let condition = |t: &str, reason: &str, msg: &str| {
            json!({"type": t, "status": "True", "reason": reason, "message": msg,
                   "lastTransitionTime": now_rfc3339()})
        };
        let status = json!({
            "conditions": [
                condition("NamesAccepted", "NoConflicts", "no conflicts found"),
                condition("Established", "InitialNamesAccepted", "the initial names have been accepted"),
            ],
            "acceptedNames": names,
            "storedVersions": [resource.version.clone()],
        });
        if let Some(obj) = crd.as_object_mut() {
            obj.insert("status".into(), status);
        }
        // A new resource's watch cache starts from a list of it made now: watches from
        // before the CRD existed are too old, as on a real apiserver.
        let (window, rv) = (self.window, self.rv);
        self.windows
            .entry(resource.key())
            .or_insert_with(|| RetainedEvents::new(window, rv));
        self.registry.insert(resource);
        Ok(())
    }

    fn unregister_crd(&mut self, crd: &Value) {
        let group = crd
            .pointer("/spec/group")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let plural = crd
            .pointer("/spec/names/plural")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let key = ResourceKey::new(group, plural);
        // Custom resources go with their definition.
        if let Some(objects) = self.objects.get(&key) {
            for obj_key in objects.keys().cloned().collect::<Vec<_>>() {
                let obj = self.objects[&key][&obj_key].clone();
                self.unindex(&key, &obj_key, &obj);
                self.commit(&key, obj_key, None, ChangeType::Deleted);
            }
        }
        self.objects.remove(&key);
        self.windows.remove(&key);
        self.registry.remove(&key);
    }
}

fn admit(
    resource: &Resource,
    schema: &schema::CrdSchema,
    name: &str,
    obj: &mut Value,
    old: Option<&Value>,
    strict: bool,
    source: schema::Source,
) -> ApiResult<()> {
    if strict {
        let unknown = schema.unknown_fields(obj);
        if !unknown.is_empty() {
            return Err(
                status_error::strict_decoding(&resource.kind, &resource.version, &unknown).into(),
            );
        }
    }
    schema
        .admit(obj, old, source)
        .map_err(|errors| invalid(resource, name, errors))
}

fn invalid(resource: &Resource, name: &str, errors: Vec<FieldError>) -> ApiError {
    status_error::invalid(&resource.kind, &resource.group, name, &errors).into()
}

fn patch_error(e: PatchError) -> ApiError {
    match e {
        PatchError::Malformed(m) => statuses::malformed(&m).into(),
        PatchError::Unprocessable(m) => statuses::unprocessable(&m).into(),
    }
}

fn not_found(resource: &Resource, name: &str) -> ApiError {
    status_error::not_found(&resource.group, &resource.plural, name).into()
}

fn required_manager(opts: &WriteOptions) -> ApiResult<&str> {
    opts.field_manager.as_deref().filter(|m| !m.is_empty()).ok_or_else(|| {
        status_error::bad_request("PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch").into()
    })
}

fn check_type(resource: &Resource, body: &Value) -> ApiResult<()> {
    let api_version = body
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let kind = body.get("kind").and_then(Value::as_str).unwrap_or_default();
    if (!api_version.is_empty() && api_version != resource.api_version())
        || (!kind.is_empty() && kind != resource.kind)
    {
        return Err(status_error::bad_request(&format!(
            "the API version in the data ({api_version}) does not match the expected API version ({})",
            resource.api_version()
        ))
        .into());
    }
    Ok(())
}

/// An apply configuration names its object; fill what the URL says and refuse disagreement.
fn fill_identity(resource: &Resource, config: &mut Value, ns: &str, name: &str) -> ApiResult<()> {
    check_type(resource, config)?;
    let meta = metadata_mut(config)?;
    match meta.get("name").and_then(Value::as_str) {
        Some(n) if n != name => {
            return Err(status_error::bad_request(
                "the name of the object does not match the name on the URL",
            )
            .into());
        }
        _ => {}
    }
    meta.insert("name".into(), json!(name));
    if resource.namespaced {
        meta.insert("namespace".into(), json!(ns));
    }
    if let Some(obj) = config.as_object_mut() {
        obj.insert("apiVersion".into(), json!(resource.api_version()));
        obj.insert("kind".into(), json!(resource.kind));
    }
    Ok(())
}

/// The part of an apply configuration a subresource endpoint takes.
fn restrict_to_subresource(resource: &Resource, mut config: Value, status_only: bool) -> Value {
    if !resource.has_status {
        return config;
    }
    if let Some(obj) = config.as_object_mut() {
        if status_only {
            obj.retain(|k, _| matches!(k.as_str(), "apiVersion" | "kind" | "metadata" | "status"));
            if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
                meta.retain(|k, _| matches!(k.as_str(), "name" | "namespace" | "resourceVersion"));
            }
        } else {
            obj.remove("status");
        }
    }
    config
}

fn apply_config(
    resource: &Resource,
    live: Option<&Value>,
    config: &Value,
    manager: &str,
    force: bool,
    subresource: Option<&str>,
    now: &str,
) -> ApiResult<Value> {
    apply::server_side_apply(ApplyRequest {
        live,
        applied: config,
        manager,
        force,
        subresource,
        lists: &*resource.list_types,
        now,
    })
    .map_err(|e| match e {
        ApplyError::Conflicts(conflicts) => status_error::conflict_apply(&conflicts).into(),
        ApplyError::Invalid(msg) => status_error::bad_request(&msg).into(),
    })
}

fn check_rv_precondition(resource: &Resource, old: &Value, new: &Value) -> ApiResult<()> {
    let want = new
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str);
    match want {
        Some(want) if !want.is_empty() && want != rv_of(old).to_string() => {
            let name = old
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or_default();
            Err(status_error::conflict(
                &resource.group,
                &resource.plural,
                name,
                "the object has been modified; please apply your changes to the latest version and try again",
            )
            .into())
        }
        _ => Ok(()),
    }
}

/// Metadata only the server sets survives any update as it was.
fn keep_system_metadata(old: &Value, new: &mut Value) {
    let Some(old_meta) = old.get("metadata").and_then(Value::as_object) else {
        return;
    };
    if !new.get("metadata").is_some_and(Value::is_object)
        && let Some(obj) = new.as_object_mut()
    {
        obj.insert("metadata".into(), json!({}));
    }
    let Some(meta) = new.get_mut("metadata").and_then(Value::as_object_mut) else {
        return;
    };
    for field in [
        "name",
        "namespace",
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "generation",
        "resourceVersion",
    ] {
        match old_meta.get(field) {
            Some(v) => {
                meta.insert(field.into(), v.clone());
            }
            None => {
                meta.remove(field);
            }
        }
    }
    meta.remove("selfLink");
}

/// A built-in object is decoded into its Go type, where a `null` is the field's zero value,
/// which its JSON leaves out: whatever the verb (server-side apply included), a `null` field
/// of a built-in kind is as if it had not been sent. (Custom resources keep their JSON; see
/// [`schema::Source`].)
fn drop_builtin_nulls(resource: &Resource, obj: &mut Value) {
    fn drop_nulls(value: &mut Value) {
        match value {
            Value::Object(map) => {
                map.retain(|_, v| !v.is_null());
                map.values_mut().for_each(drop_nulls);
            }
            Value::Array(items) => items.iter_mut().for_each(drop_nulls),
            _ => {}
        }
    }
    if !resource.custom {
        drop_nulls(obj);
    }
}

/// Server-side defaults of the built-in kinds that clients read back.
fn default_builtin_fields(resource: &Resource, obj: &mut Value) {
    if resource.custom {
        return;
    }
    match (resource.group.as_str(), resource.plural.as_str()) {
        ("", "namespaces") => default_namespace(obj),
        ("", "secrets") => fold_string_data(obj),
        ("apps", "deployments" | "statefulsets") => default_replicas(obj),
        _ => {}
    }
}

/// `spec.replicas` defaults to 1 (apps/v1 defaulting), so that readers always see a count.
fn default_replicas(obj: &mut Value) {
    if let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) {
        spec.entry("replicas").or_insert(json!(1));
    }
}

/// A Secret's `stringData` is write-only: the apiserver merges it into `data`, base64-encoded,
/// and never stores it.
fn fold_string_data(obj: &mut Value) {
    use base64::Engine;
    let Some(o) = obj.as_object_mut() else { return };
    let Some(Value::Object(string_data)) = o.remove("stringData") else {
        return;
    };
    let data = o.entry("data").or_insert_with(|| json!({}));
    if let Some(data) = data.as_object_mut() {
        for (k, v) in string_data {
            if let Some(text) = v.as_str() {
                let encoded = base64::engine::general_purpose::STANDARD.encode(text.as_bytes());
                data.insert(k, json!(encoded));
            }
        }
    }
}

fn default_namespace(obj: &mut Value) {
    let Some(o) = obj.as_object_mut() else { return };
    let terminating = o
        .get("metadata")
        .and_then(|m| m.get("deletionTimestamp"))
        .is_some();
    let spec = o.entry("spec").or_insert_with(|| json!({}));
    if let Some(spec) = spec.as_object_mut() {
        spec.entry("finalizers")
            .or_insert_with(|| json!([NAMESPACE_FINALIZER]));
    }
    let phase = if terminating { "Terminating" } else { "Active" };
    o.insert("status".into(), json!({"phase": phase}));
    // Set on every namespace by the apiserver since Kubernetes 1.22, so that network
    // policies can select namespaces by name.
    if let Some(name) = obj_name(obj)
        && let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut)
    {
        let labels = meta.entry("labels").or_insert_with(|| json!({}));
        if let Some(labels) = labels.as_object_mut() {
            labels.insert("kubernetes.io/metadata.name".into(), json!(name));
        }
    }
}

fn obj_name(obj: &Value) -> Option<String> {
    obj.pointer("/metadata/name")
        .and_then(Value::as_str)
        .map(str::to_string)
}

/// A namespace is only removed by the namespace controller, once empty.
fn is_namespace_holding(resource: &Resource, obj: &Value) -> bool {
    resource.group.is_empty()
        && resource.plural == "namespaces"
        && obj
            .pointer("/spec/finalizers")
            .and_then(Value::as_array)
            .is_some_and(|f| !f.is_empty())
}

/// The part of an object whose change bumps `metadata.generation`.
fn generation_source(resource: &Resource, obj: &Value) -> Value {
    let Some(o) = obj.as_object() else {
        return Value::Null;
    };
    if resource.custom {
        let rest: Map<String, Value> = o
            .iter()
            .filter(|(k, _)| !matches!(k.as_str(), "metadata" | "status" | "apiVersion" | "kind"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        Value::Object(rest)
    } else {
        o.get("spec").cloned().unwrap_or(Value::Null)
    }
}

/// Go drops empty `omitempty` collections when it serializes an object, so a real apiserver
/// never returns `finalizers: []`; clients (kube-runtime's finalizer helper among them) rely on
/// the field being absent.
fn drop_empty_metadata(obj: &mut Value) {
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        for field in [
            "labels",
            "annotations",
            "finalizers",
            "ownerReferences",
            "managedFields",
        ] {
            let empty = match meta.get(field) {
                Some(Value::Array(a)) => a.is_empty(),
                Some(Value::Object(o)) => o.is_empty(),
                Some(Value::Null) => true,
                _ => false,
            };
            if empty {
                meta.remove(field);
            }
        }
    }
}

fn without_rv(obj: &Value) -> Value {
    let mut obj = obj.clone();
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("resourceVersion");
    }
    obj
}

fn set_or_remove(obj: &mut Value, field: &str, value: Option<Value>) {
    if let Some(o) = obj.as_object_mut() {
        match value {
            Some(v) => {
                o.insert(field.into(), v);
            }
            None => {
                o.remove(field);
            }
        }
    }
}

fn metadata_mut(obj: &mut Value) -> ApiResult<&mut Map<String, Value>> {
    let o = obj.as_object_mut().ok_or_else(|| {
        ApiError::from(status_error::bad_request("the body must be a JSON object"))
    })?;
    let meta = o.entry("metadata").or_insert_with(|| json!({}));
    meta.as_object_mut()
        .ok_or_else(|| ApiError::from(status_error::bad_request("metadata must be an object")))
}

pub fn labels_of(obj: &Value) -> BTreeMap<String, String> {
    obj.pointer("/metadata/labels")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

fn finalizers_of(obj: &Value) -> Vec<&str> {
    obj.pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

fn owner_uids(obj: &Value) -> Vec<String> {
    obj.pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .map(|refs| {
            refs.iter()
                .filter_map(|r| r.get("uid").and_then(Value::as_str).map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn remove_owner_ref(obj: &mut Value, uid: &str) {
    if let Some(refs) = obj
        .pointer_mut("/metadata/ownerReferences")
        .and_then(Value::as_array_mut)
    {
        refs.retain(|r| r.get("uid").and_then(Value::as_str) != Some(uid));
        if refs.is_empty()
            && let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut)
        {
            meta.remove("ownerReferences");
        }
    }
}

pub fn rv_of(obj: &Value) -> u64 {
    obj.pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn set_rv(obj: &mut Value, rv: u64) {
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert("resourceVersion".into(), json!(rv.to_string()));
    }
}

pub fn now_rfc3339() -> String {
    // Kubernetes timestamps have second precision.
    let now = jiff::Timestamp::now();
    jiff::Timestamp::from_second(now.as_second())
        .expect("the current time is representable")
        .to_string()
}

/// The 410 of a list page whose snapshot left the window (etcd3 `inconsistentContinue`); the
/// Status carries a token that continues at the latest version.
const INCONSISTENT_CONTINUE: &str = "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.";

/// The 410 of a `resourceVersionMatch=Exact` list from a version that left the window.
const EXPIRED_LIST: &str = "The resourceVersion for the provided list is too old.";

/// The current objects overlaid with their state at an earlier resourceVersion (None: the
/// object did not exist then), in key order.
fn merge_snapshot<'a>(
    current: impl Iterator<Item = (&'a ObjectKey, &'a Arc<Value>)>,
    overlay: impl Iterator<Item = (&'a ObjectKey, &'a Option<Arc<Value>>)>,
) -> impl Iterator<Item = (&'a ObjectKey, &'a Arc<Value>)> {
    let mut current = current.peekable();
    let mut overlay = overlay.peekable();
    std::iter::from_fn(move || {
        loop {
            let order = match (current.peek(), overlay.peek()) {
                (None, None) => return None,
                (Some(_), None) => std::cmp::Ordering::Less,
                (None, Some(_)) => std::cmp::Ordering::Greater,
                (Some((a, _)), Some((b, _))) => a.cmp(b),
            };
            match order {
                std::cmp::Ordering::Less => return current.next(),
                // The object changed since: its state then replaces the current one.
                std::cmp::Ordering::Equal => {
                    current.next();
                }
                std::cmp::Ordering::Greater => {}
            }
            if let Some((k, Some(obj))) = overlay.next() {
                return Some((k, obj));
            }
        }
    })
}

fn object_key_of(obj: &Value) -> ObjectKey {
    let field = |f: &str| {
        obj.pointer(&format!("/metadata/{f}"))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    (field("namespace"), field("name"))
}

/// Continue tokens are opaque to clients; ours carry the list's resourceVersion (-1: the
/// latest) and the last key returned, hex-encoded.
fn encode_continue(rv: i64, key: &ObjectKey) -> String {
    let raw = serde_json::to_vec(&json!([rv, key.0, key.1])).unwrap_or_default();
    raw.iter().map(|b| format!("{b:02x}")).collect()
}

fn decode_continue(token: &str) -> Option<(i64, ObjectKey)> {
    if !token.len().is_multiple_of(2) {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..token.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(token.get(i..i + 2)?, 16).ok())
        .collect();
    let v: Value = serde_json::from_slice(&bytes?).ok()?;
    let rv = v.get(0)?.as_i64()?;
    Some((
        rv,
        (
            v.get(1)?.as_str()?.to_string(),
            v.get(2)?.as_str()?.to_string(),
        ),
    ))
}

/// HTTP status of a store error, for the request log.
pub fn code_of(result: &ApiResult<impl Sized>) -> StatusCode {
    match result {
        Ok(_) => StatusCode::OK,
        Err(e) => e.code,
    }
}
