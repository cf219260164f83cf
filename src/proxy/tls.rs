//! TLS termination for the live and preview listeners (`tls` and `preview_tls`, each
//! `{ listen, cert, key }`): rustls on ring, TLS 1.2 and 1.3 only, HTTP/2 or HTTP/1.1 by ALPN.
//!
//! The certificate and key are read at start and re-read on `POST /tls/reload` (admin API) or
//! SIGHUP of `cutover proxy`. A reload swaps what *new* handshakes get; connections already
//! open keep their session, so nothing is dropped. A reload that fails (a missing file, a key
//! that does not match) keeps the certificate in use and says why.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use color_eyre::eyre::{Result, WrapErr, eyre};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// The certificate in use, swapped whole by a reload. Read once per handshake, never per
/// request.
#[derive(Debug)]
pub(crate) struct Certs {
    /// The router table's field these come from (`tls`, `preview_tls`), for errors.
    table: &'static str,
    cert: PathBuf,
    key: PathBuf,
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<CertifiedKey>>,
}

impl Certs {
    /// Read `cert` (a PEM chain, leaf first) and `key` (a PEM private key) of the router's
    /// `table` (`tls`, `preview_tls`).
    pub async fn load(table: &'static str, cert: &Path, key: &Path) -> Result<Certs> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let current = read(table, cert, key, &provider).await?;
        Ok(Certs {
            table,
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            provider,
            current: RwLock::new(Arc::new(current)),
        })
    }

    /// Re-read the files; on success new handshakes get the new certificate.
    pub async fn reload(&self) -> Result<()> {
        let fresh = read(self.table, &self.cert, &self.key, &self.provider).await?;
        let mut cur = self.current.write().unwrap_or_else(|e| e.into_inner());
        *cur = Arc::new(fresh);
        Ok(())
    }

    /// The certificate new handshakes get.
    fn current(&self) -> Arc<CertifiedKey> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// A rustls server config for a TLS listener shared by `sites` (each environment's hosts and
/// certificate): each handshake gets the certificate of the host its SNI names, else of the
/// environment without hosts, else the first one. HTTP/2 is offered by ALPN when `http2`
/// (HTTP/1.1 always).
pub(crate) fn server_config(
    sites: Vec<(Vec<String>, Arc<Certs>)>,
    http2: bool,
) -> Result<rustls::ServerConfig> {
    let provider = sites
        .first()
        .map(|(_, c)| c.provider.clone())
        .ok_or_else(|| eyre!("a TLS listener without a certificate"))?;
    let builder = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .wrap_err("cannot set up TLS 1.2/1.3 with ring")?
        .with_no_client_auth();
    let mut c = match &sites[..] {
        [(_, only)] => builder.with_cert_resolver(only.clone()),
        _ => builder.with_cert_resolver(Arc::new(BySni(sites))),
    };
    c.alpn_protocols = if http2 {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    Ok(c)
}

/// The certificate by the host a handshake names (SNI), for a listener several environments
/// share.
#[derive(Debug)]
struct BySni(Vec<(Vec<String>, Arc<Certs>)>);

impl ResolvesServerCert for BySni {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let name = hello.server_name().map(str::to_ascii_lowercase);
        let named = |(hosts, _): &&(Vec<String>, Arc<Certs>)| {
            name.as_ref().is_some_and(|n| hosts.contains(n))
        };
        let site = self
            .0
            .iter()
            .find(named)
            .or_else(|| self.0.iter().find(|(hosts, _)| hosts.is_empty()))
            .or(self.0.first())?;
        Some(site.1.current())
    }
}

/// Reload every TLS listener's certificate; the first error is returned (a listener whose
/// files fail keeps its certificate, the others take their new one).
pub(crate) async fn reload_all(certs: &[Arc<Certs>]) -> Result<()> {
    let mut first = None;
    for c in certs {
        if let Err(e) = c.reload().await {
            first.get_or_insert(e);
        }
    }
    first.map_or(Ok(()), Err)
}

impl ResolvesServerCert for Certs {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

async fn read(
    table: &str,
    cert: &Path,
    key: &Path,
    provider: &CryptoProvider,
) -> Result<CertifiedKey> {
    let pem = tokio::fs::read(cert).await.wrap_err_with(|| {
        format!(
            "cannot read the TLS certificate `{}` (field `{table}.cert`)",
            cert.display()
        )
    })?;
    let chain = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            eyre!(
                "the TLS certificate `{}` is not PEM: {e}; give the full chain (leaf first)",
                cert.display()
            )
        })?;
    if chain.is_empty() {
        return Err(eyre!(
            "the TLS certificate `{}` holds no CERTIFICATE block",
            cert.display()
        ));
    }
    let pem = tokio::fs::read(key).await.wrap_err_with(|| {
        format!(
            "cannot read the TLS key `{}` (field `{table}.key`)",
            key.display()
        )
    })?;
    let der = PrivateKeyDer::from_pem_slice(&pem).map_err(|e| {
        eyre!(
            "the TLS key `{}` holds no private key cutover can read ({e}); give a PEM key \
             (PKCS#8, PKCS#1 or SEC1)",
            key.display()
        )
    })?;
    let ck = CertifiedKey::from_der(chain, der, provider).map_err(|e| {
        eyre!(
            "the TLS key `{}` does not fit the certificate `{}`: {e}",
            key.display(),
            cert.display()
        )
    })?;
    Ok(ck)
}
