//! The FirmwareRelease controller: validates what the schema cannot, sets `Ready`, and keeps a
//! release that a live rollout references from being deleted.
