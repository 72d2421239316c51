//! TLS for talking to registries over HTTPS: one process-wide rustls
//! provider (ring), installed before the first client is built.

/// Installs the crypto provider once; later calls do nothing.
pub fn init() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}
