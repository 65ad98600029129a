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

/// Runs the OTA controllers (today the FirmwareRelease controller) on one watch per kind —
/// Devices, FirmwareRollouts, FirmwareReleases — until the operator's shutdown signal, then
/// waits for their in-flight reconciles to finish.
pub fn run(operator: &Operator) -> BoxFuture<'_, ()> {
    Box::pin(async move {
        let client = operator.client.clone();
        let wc = watch::watcher_config(&operator.config);
        // 100,000 Devices: the release controller reads them only through its index, so the
        // cache keeps nothing until a controller needs it.
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

        let release_controller = release::controller(
            operator,
            &mut releases,
            release::Relations {
                rollouts: live_rollouts,
                devices: device_counts,
                synced: vec![rollouts.synced(), devices.synced()],
                changed: vec![rollouts_changed.boxed(), devices_changed.boxed()],
            },
        );
        let stop = || operator.shutdown.signalled();
        futures::join!(
            Box::pin(devices.run(stop())),
            Box::pin(rollouts.run(stop())),
            Box::pin(releases.run(stop())),
            release_controller,
        );
    })
}
