//! The TLS crypto provider of the process. kube and reqwest are built on rustls with `ring`;
//! when some other crate in the same build turns on rustls' `aws-lc-rs` backend too (a test
//! dependency does: the `hawkbit` DDI client's reqwest 0.13), rustls no longer picks a
//! default and the first TLS client config panics. Every entry point picks `ring` first.

/// Makes `ring` the process's rustls provider, unless one is installed already.
pub fn use_ring() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
