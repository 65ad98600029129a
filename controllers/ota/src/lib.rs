//! Flotilla's OTA domain: FirmwareReleases, Device twins and the FirmwareRollouts that move a
//! release across a fleet in waves. Depends on the runtime and the API types only.

pub mod index;
pub mod release;
pub mod rollout;

use flotilla_crds::{Device, FirmwareRelease, FirmwareRollout};
use futures::StreamExt;
use futures::future::BoxFuture;
use kube::Api;
use kube::core::DeserializeGuard;

use flotilla_runtime::Operator;
use flotilla_runtime::index::SharedIndex;
use flotilla_runtime::watch::{self, SharedWatch};
use index::{DevicesByVersion, LiveRolloutsByRelease, ReleasesByVersion};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use rollout::book::Tracker;

/// Which OTA controllers run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Selection {
    /// The FirmwareRelease controller.
    pub release: bool,
    /// The FirmwareRollout controller.
    pub rollout: bool,
}

/// Runs the selected OTA controllers on one watch per kind — Devices, FirmwareRollouts,
/// FirmwareReleases — until the operator's shutdown signal, then waits for their in-flight
/// reconciles to finish.
pub fn run(operator: &Operator, selection: Selection) -> BoxFuture<'_, ()> {
    Box::pin(async move {
        if !selection.release && !selection.rollout {
            return;
        }
        let client = operator.client.clone();
        let wc = watch::watcher_config(&operator.config);
        // 100,000 Devices: the controllers read them only through their indexes (counts per
        // version, the rollout fleet's compact views), so the cache keeps nothing.
        let mut devices = SharedWatch::new(
            "devices",
            Api::<DeserializeGuard<Device>>::all(client.clone()),
            wc.clone(),
        )
        .uncached();
        let mut rollouts = SharedWatch::new(
            "firmwarerollouts",
            Api::<DeserializeGuard<FirmwareRollout>>::all(client.clone()),
            wc.clone(),
        );
        let mut releases = SharedWatch::new(
            "firmwarereleases",
            Api::<DeserializeGuard<FirmwareRelease>>::all(client),
            wc,
        );
        for (kind, synced) in [
            (devices.kind(), devices.synced()),
            (rollouts.kind(), rollouts.synced()),
            (releases.kind(), releases.synced()),
        ] {
            operator.readiness.track(kind, synced);
        }

        let by_version = SharedIndex::new(ReleasesByVersion::default());
        let feed = by_version.clone();
        releases.on_event(move |event| feed.lock().apply_watcher_event(event));

        let live_rollouts = SharedIndex::new(LiveRolloutsByRelease::default());
        let feed = live_rollouts.clone();
        let rollouts_changed = rollouts.wakes(move |event| feed.lock().apply_watcher_event(event));

        let release_controller = selection.release.then(|| {
            let device_counts = SharedIndex::new(DevicesByVersion::default());
            let feed = device_counts.clone();
            let releases_of = by_version.clone();
            let devices_changed = devices.wakes(move |event| {
                let touched = feed.lock().apply_watcher_event(event);
                let releases = releases_of.lock();
                touched
                    .iter()
                    .flat_map(|(namespace, version)| releases.releases(namespace, version))
                    .collect::<Vec<_>>()
            });
            release::controller(
                operator,
                &mut releases,
                release::Relations {
                    rollouts: live_rollouts.clone(),
                    devices: device_counts,
                    synced: vec![rollouts.synced(), devices.synced()],
                    changed: vec![rollouts_changed.boxed(), devices_changed.boxed()],
                },
            )
        });

        let rollout_controller = selection.rollout.then(|| {
            let tracker = SharedIndex::new(Tracker::default());
            let feed = tracker.clone();
            let clock = operator.clock.clone();
            let progress_changed = devices.wakes(move |event| {
                feed.lock()
                    .apply_device_event(event, clock.now())
                    .into_iter()
                    .map(|(namespace, name)| ObjectRef::new(&name).within(&namespace))
                    .collect::<Vec<_>>()
            });
            // A release that changes wakes its live rollouts (one waiting for it to become
            // Ready; one that pauses when it stops being Ready).
            let users = live_rollouts.clone();
            let release_changed = releases.wakes(move |event| {
                let users = users.lock();
                let touched: Vec<_> = match event {
                    watcher::Event::Apply(release) | watcher::Event::Delete(release) => {
                        vec![release.clone()]
                    }
                    _ => Vec::new(),
                };
                touched
                    .iter()
                    .filter_map(|release| {
                        let meta = match &release.0 {
                            Ok(r) => &r.metadata,
                            Err(e) => &e.metadata,
                        };
                        Some((meta.namespace.clone()?, meta.name.clone()?))
                    })
                    .flat_map(|(namespace, name)| {
                        users
                            .rollouts(&namespace, &name)
                            .map(|rollout| ObjectRef::new(rollout).within(&namespace))
                            .collect::<Vec<_>>()
                    })
                    .collect::<Vec<_>>()
            });
            let synced = vec![devices.synced(), releases.synced(), rollouts.synced()];
            register_device_census(operator, rollouts.store());
            rollout::controller(
                operator,
                &mut rollouts,
                rollout::Relations {
                    tracker,
                    releases: releases.store(),
                    releases_by_version: by_version.clone(),
                    synced,
                    changed: vec![progress_changed.boxed(), release_changed.boxed()],
                },
            )
        });

        let stop = || operator.shutdown.signalled();
        futures::join!(
            Box::pin(devices.run(stop())),
            Box::pin(rollouts.run(stop())),
            Box::pin(releases.run(stop())),
            async {
                if let Some(controller) = release_controller {
                    controller.await;
                }
            },
            async {
                if let Some(controller) = rollout_controller {
                    controller.await;
                }
            },
        );
    })
}

/// `flotilla_rollout_devices{namespace, rollout, state}`: each FirmwareRollout's devices by
/// state, from its `status.counts` in the cache at scrape time.
fn register_device_census(
    operator: &Operator,
    rollouts: kube::runtime::reflector::Store<DeserializeGuard<FirmwareRollout>>,
) {
    let census = move || {
        let mut rows = Vec::new();
        for rollout in rollouts.state() {
            let Ok(rollout) = &rollout.0 else { continue };
            let Some(counts) = rollout.status.as_ref().and_then(|s| s.counts.as_ref()) else {
                continue;
            };
            let namespace = rollout.metadata.namespace.clone().unwrap_or_default();
            let name = rollout.metadata.name.clone().unwrap_or_default();
            for (state, count) in [
                ("pending", counts.pending),
                ("updating", counts.updating),
                ("succeeded", counts.succeeded),
                ("failed", counts.failed),
                ("skipped", counts.skipped),
            ] {
                rows.push((
                    vec![namespace.clone(), name.clone(), state.to_owned()],
                    i64::from(count),
                ));
            }
        }
        rows
    };
    if let Err(error) = operator.metrics.register_census(
        "flotilla_rollout_devices",
        "Devices of each FirmwareRollout by state (pending, updating, succeeded, failed, skipped), from its status.",
        &["namespace", "rollout", "state"],
        census,
    ) {
        tracing::warn!(%error, "registering flotilla_rollout_devices");
    }
}
