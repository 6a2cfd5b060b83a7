//! Mutual TLS on the gRPC port: loading the cluster CA and this process's
//! certificate, the server and client settings built from them, and who a
//! peer certificate names.
//!
//! A certificate says who holds it with one URI subject alternative name:
//! `slotd://node/NAME` for the agent of node NAME (the node's `name` in the
//! cluster state), `slotd://operator/NAME` for a person or tool running
//! `slotctl`. What each may call is decided in `access`. The CA must be the
//! cluster's own: any certificate it signed gets through the handshake.
//! Making certificates (`slotctl certs`) is `certs`'.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity, ServerTlsConfig};

use crate::config::TlsConfig;

pub mod certs;

/// The URI prefix naming a node's agent.
pub const NODE_URI: &str = "slotd://node/";
/// The URI prefix naming an operator.
pub const OPERATOR_URI: &str = "slotd://operator/";

/// A TLS handshake that takes longer than this is dropped: a client that
/// opens connections and says nothing holds no task for long.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Who a certificate names.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Who {
    Node(String),
    Operator(String),
}

impl fmt::Display for Who {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Who::Node(n) => write!(f, "node {n}"),
            Who::Operator(n) => write!(f, "operator {n}"),
        }
    }
}

/// Who a certificate (DER) names: exactly one `slotd://` URI SAN.
pub fn who_of(cert: &CertificateDer<'_>) -> Result<Who, String> {
    let parsed = webpki::EndEntityCert::try_from(cert).map_err(|e| format!("unreadable certificate: {e}"))?;
    let mut found = Vec::new();
    for uri in parsed.valid_uri_names() {
        if let Some(name) = uri.strip_prefix(NODE_URI) {
            found.push(Who::Node(name.to_owned()));
        } else if let Some(name) = uri.strip_prefix(OPERATOR_URI) {
            found.push(Who::Operator(name.to_owned()));
        }
    }
    match found.as_slice() {
        [one] if name_ok(one) => Ok(one.clone()),
        [one] => Err(format!("the certificate names {one}, which is not a valid name")),
        [] => Err(format!(
            "the certificate names no slotd identity (a URI SAN {NODE_URI}NAME or {OPERATOR_URI}NAME)"
        )),
        _ => Err("the certificate names more than one slotd identity".to_owned()),
    }
}

fn name_ok(who: &Who) -> bool {
    let (Who::Node(n) | Who::Operator(n)) = who;
    slotd_raft_store::apply::name_problem(n).is_none()
}

/// Why TLS settings could not be loaded. Each names the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{field} {path}: {source}")]
    Read {
        field: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}: missing (or set tls.insecure = true for plain text)")]
    Missing(&'static str),
    #[error("{field} {path}: {why}")]
    Bad {
        field: &'static str,
        path: PathBuf,
        why: String,
    },
}

/// The three files, by the names the caller knows them under (config keys
/// or command-line options), for messages.
#[derive(Clone, Debug)]
pub struct Files<'a> {
    pub ca: (&'static str, &'a Path),
    pub cert: (&'static str, &'a Path),
    pub key: (&'static str, &'a Path),
}

impl<'a> Files<'a> {
    /// The files of a node's `[tls]`: none when `insecure`; a file missing
    /// otherwise is an error (never plain text by accident).
    pub fn of_config(tls: &'a TlsConfig) -> Result<Option<Files<'a>>, TlsError> {
        if tls.insecure {
            return Ok(None);
        }
        let file = |field: &'static str, f: &'a Option<PathBuf>| {
            f.as_deref().map(|p| (field, p)).ok_or(TlsError::Missing(field))
        };
        Ok(Some(Files {
            ca: file("tls.ca_file", &tls.ca_file)?,
            cert: file("tls.cert_file", &tls.cert_file)?,
            key: file("tls.key_file", &tls.key_file)?,
        }))
    }
}

/// A loaded CA, certificate and key, checked against each other.
#[derive(Clone)]
pub struct Credentials {
    ca_pem: Vec<u8>,
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
    roots: Arc<RootCertStore>,
    /// Who our own certificate names.
    pub who: Who,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("who", &self.who)
            .finish_non_exhaustive()
    }
}

fn algorithms() -> WebPkiSupportedAlgorithms {
    rustls::crypto::ring::default_provider().signature_verification_algorithms
}

impl Credentials {
    /// Reads and checks the files: the key readable by its owner (and
    /// group) only, every PEM readable, the certificate signed by the CA,
    /// matching the key, and naming a slotd identity.
    pub fn load(files: &Files<'_>) -> Result<Credentials, TlsError> {
        let read = |(field, path): (&'static str, &Path)| {
            std::fs::read(path).map_err(|source| TlsError::Read {
                field,
                path: path.to_owned(),
                source,
            })
        };
        let bad = |(field, path): (&'static str, &Path), why: String| TlsError::Bad {
            field,
            path: path.to_owned(),
            why,
        };
        check_key_mode(files.key.1).map_err(|why| bad(files.key, why))?;
        let ca_pem = read(files.ca)?;
        let cert_pem = read(files.cert)?;
        let key_pem = read(files.key)?;

        let cas = pem_certs(&ca_pem).map_err(|why| bad(files.ca, why))?;
        let mut roots = RootCertStore::empty();
        for ca in &cas {
            roots
                .add(ca.clone())
                .map_err(|e| bad(files.ca, format!("not a usable CA certificate: {e}")))?;
        }
        let chain = pem_certs(&cert_pem).map_err(|why| bad(files.cert, why))?;
        let key = PrivateKeyDer::from_pem_slice(&key_pem)
            .map_err(|e| bad(files.key, format!("no private key in PEM form ({e})")))?;
        let provider = rustls::crypto::ring::default_provider();
        let signing = provider
            .key_provider
            .load_private_key(key)
            .map_err(|e| bad(files.key, format!("unusable private key: {e}")))?;
        rustls::sign::CertifiedKey::new(chain.clone(), signing)
            .keys_match()
            .map_err(|e| bad(files.key, format!("does not belong to {}: {e}", files.cert.1.display())))?;
        let leaf = &chain[0];
        // Both kinds of certificate act as clients; a node's also serves.
        let mut usages = vec![webpki::KeyUsage::client_auth()];
        let who = who_of(leaf).map_err(|why| bad(files.cert, why))?;
        if matches!(who, Who::Node(_)) {
            usages.push(webpki::KeyUsage::server_auth());
        }
        for usage in usages {
            verify(leaf, &chain[1..], &cas, usage).map_err(|e| {
                bad(
                    files.cert,
                    format!("not a valid certificate of the CA in {}: {e}", files.ca.1.display()),
                )
            })?;
        }
        Ok(Credentials {
            ca_pem,
            cert_pem,
            key_pem,
            roots: Arc::new(roots),
            who,
        })
    }

    /// The gRPC server's settings: our certificate, and a client
    /// certificate of the CA required of every caller.
    pub fn server(&self) -> ServerTlsConfig {
        ServerTlsConfig::new()
            .identity(Identity::from_pem(&self.cert_pem, &self.key_pem))
            .client_ca_root(Certificate::from_pem(&self.ca_pem))
            .timeout(HANDSHAKE_TIMEOUT)
    }

    /// `endpoint` (an `https://` one) with our certificate as client, and
    /// any node certificate of the CA accepted as server. The server's
    /// name is not checked against the address: the CA is the cluster's
    /// own, and which node answers is settled by the cluster id and the
    /// calls themselves (`Peer.Join` checks the node it reached).
    pub fn client(&self, endpoint: Endpoint) -> Result<Endpoint, tonic::transport::Error> {
        let tls = ClientTlsConfig::new()
            .identity(Identity::from_pem(&self.cert_pem, &self.key_pem))
            .assume_http2(true);
        endpoint.tls_config_with_verifier(
            tls,
            Arc::new(NodeVerifier {
                roots: self.roots.clone(),
                algorithms: algorithms(),
            }),
        )
    }
}

impl Credentials {
    /// `endpoint` as a client that checks the server like `client` but
    /// shows no certificate: what every agent refuses (for tests).
    pub fn client_without_certificate(&self, endpoint: Endpoint) -> Result<Endpoint, tonic::transport::Error> {
        endpoint.tls_config_with_verifier(
            ClientTlsConfig::new().assume_http2(true),
            Arc::new(NodeVerifier {
                roots: self.roots.clone(),
                algorithms: algorithms(),
            }),
        )
    }
}

/// The gRPC endpoint of the agent at `addr` (`host:port`): TLS with `tls`
/// (see `Credentials::client`), plain text without.
pub fn endpoint(addr: &str, tls: Option<&Credentials>) -> Result<Endpoint, tonic::transport::Error> {
    match tls {
        Some(tls) => tls.client(Endpoint::from_shared(format!("https://{addr}"))?),
        None => Endpoint::from_shared(format!("http://{addr}")),
    }
}

/// A private key that others may read is refused: whoever reads it can
/// act as this node (or operator).
#[cfg(unix)]
pub(crate) fn check_key_mode(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let mode = match std::fs::metadata(path) {
        Ok(m) => m.permissions().mode() & 0o777,
        // The read that follows names the problem.
        Err(_) => return Ok(()),
    };
    if mode & 0o007 != 0 {
        return Err(format!(
            "the private key is readable by others (mode {mode:04o}); chmod o-rwx it (0600 or 0640)"
        ));
    }
    Ok(())
}

#[cfg(not(unix))]
pub(crate) fn check_key_mode(_: &Path) -> Result<(), String> {
    Ok(())
}

/// Checks `leaf` (with `intermediates`) chains to one of `cas` for `usage`.
pub(crate) fn verify(
    leaf: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    cas: &[CertificateDer<'_>],
    usage: webpki::KeyUsage,
) -> Result<(), String> {
    let anchors = cas
        .iter()
        .map(|ca| webpki::anchor_from_trusted_cert(ca).map(|a| a.to_owned()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("CA certificate: {e}"))?;
    let ee = webpki::EndEntityCert::try_from(leaf).map_err(|e| e.to_string())?;
    ee.verify_for_usage(
        algorithms().all,
        &anchors,
        intermediates,
        UnixTime::now(),
        usage,
        None,
        None,
    )
    .map(drop)
    .map_err(|e| format!("{e}"))
}

fn pem_certs(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("unreadable PEM: {e}"))?;
    if certs.is_empty() {
        return Err("no certificate in PEM form".to_owned());
    }
    Ok(certs)
}

/// Accepts a server certificate signed by the CA that names a node.
#[derive(Debug)]
struct NodeVerifier {
    roots: Arc<RootCertStore>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for NodeVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let parsed = ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &parsed,
            &self.roots,
            intermediates,
            now,
            self.algorithms.all,
        )?;
        match who_of(end_entity) {
            Ok(Who::Node(_)) => Ok(ServerCertVerified::assertion()),
            _ => Err(rustls::Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            )),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// Who is calling a service: the certificate's identity, or nobody known
/// on a plain-text port (`insecure = true`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Caller {
    Cert(Who),
    /// Plain text: anyone who reaches the port.
    Insecure,
}

impl fmt::Display for Caller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Caller::Cert(w) => w.fmt(f),
            Caller::Insecure => f.write_str("an unauthenticated caller"),
        }
    }
}

/// The caller of `req`. `secure`: the port runs TLS, so a request without
/// a certificate cannot be (and is refused if it somehow is).
pub fn caller<T>(req: &tonic::Request<T>, secure: bool) -> Result<Caller, tonic::Status> {
    if !secure {
        return Ok(Caller::Insecure);
    }
    let certs = req.peer_certs();
    let leaf = certs
        .as_deref()
        .and_then(|c| c.first())
        .ok_or_else(|| tonic::Status::unauthenticated("a client certificate of the cluster CA is required"))?;
    who_of(leaf).map(Caller::Cert).map_err(tonic::Status::permission_denied)
}

#[cfg(test)]
mod tests {
    use rustls::pki_types::pem::PemObject;

    use super::*;
    use crate::tls::certs::Authority;

    fn der(pem: &str) -> CertificateDer<'static> {
        CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()
    }

    /// A certificate with these URI SANs, signed by a fresh CA.
    fn with_uris(uris: &[&str]) -> CertificateDer<'static> {
        let mut p = rcgen::CertificateParams::default();
        p.subject_alt_names = uris
            .iter()
            .map(|u| rcgen::SanType::URI(rcgen::string::Ia5String::try_from(*u).unwrap()))
            .collect();
        let key = rcgen::KeyPair::generate().unwrap();
        der(&p.self_signed(&key).unwrap().pem())
    }

    #[test]
    fn who_a_certificate_names() {
        assert_eq!(
            who_of(&with_uris(&["slotd://node/imap1"])),
            Ok(Who::Node("imap1".into()))
        );
        assert_eq!(
            who_of(&with_uris(&["https://example.org/", "slotd://operator/alice"])),
            Ok(Who::Operator("alice".into()))
        );
        for (uris, says) in [
            (vec![], "no slotd identity"),
            (vec!["slotd://node/imap1", "slotd://operator/imap1"], "more than one"),
            (vec!["slotd://node/imap1", "slotd://node/imap2"], "more than one"),
            (vec!["slotd://node/im/ap1"], "not a valid name"),
            (vec!["slotd://node/"], "not a valid name"),
            (vec!["SLOTD://node/imap1"], "no slotd identity"),
        ] {
            let e = who_of(&with_uris(&uris)).unwrap_err();
            assert!(e.contains(says), "{uris:?}: {e}");
        }
        assert!(who_of(&CertificateDer::from(vec![0x30, 0x03, 1, 2, 3])).is_err());
    }

    #[test]
    fn a_client_accepts_only_a_node_certificate_of_its_ca_as_server() {
        let ca = Authority::generate().unwrap();
        let other = Authority::generate().unwrap();
        let verifier = NodeVerifier {
            roots: {
                let mut r = RootCertStore::empty();
                r.add(der(ca.cert_pem())).unwrap();
                Arc::new(r)
            },
            algorithms: algorithms(),
        };
        let name = ServerName::try_from("10.0.0.1").unwrap();
        let check = |a: &Authority, who: Who| {
            let (pem, _) = a.issue(&who, &[], 1).unwrap();
            verifier.verify_server_cert(&der(&pem), &[], &name, &[], UnixTime::now())
        };
        assert!(check(&ca, Who::Node("imap1".into())).is_ok());
        assert!(
            check(&ca, Who::Operator("alice".into())).is_err(),
            "an operator as server"
        );
        assert!(check(&other, Who::Node("imap1".into())).is_err(), "another CA's node");
    }
}
