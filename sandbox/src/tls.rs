//! The self-signed certificate a sandbox that enforces RBAC serves HTTPS with.

use std::sync::Arc;

use axum_server::tls_rustls::RustlsConfig;

pub struct Tls {
    pub cert_pem: String,
    pub cert_der: Vec<u8>,
    key_der: Vec<u8>,
}

impl Tls {
    /// A fresh certificate for 127.0.0.1 and localhost.
    pub fn generate() -> Result<Self, String> {
        let certified = rcgen::generate_simple_self_signed(vec![
            "127.0.0.1".to_owned(),
            "localhost".to_owned(),
        ])
        .map_err(|e| e.to_string())?;
        Ok(Self {
            cert_pem: certified.cert.pem(),
            cert_der: certified.cert.der().to_vec(),
            key_der: certified.signing_key.serialize_der(),
        })
    }

    /// The server side: HTTP/2 and HTTP/1.1 (kubectl prefers the first, kube-rs the second).
    pub fn server_config(&self) -> RustlsConfig {
        let key = rustls::pki_types::PrivateKeyDer::try_from(self.key_der.clone())
            .expect("rcgen writes a PKCS#8 key");
        let cert = rustls::pki_types::CertificateDer::from(self.cert_der.clone());
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .expect("the generated certificate and key match");
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        RustlsConfig::from_config(Arc::new(config))
    }
}
