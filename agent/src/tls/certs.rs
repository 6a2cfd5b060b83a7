//! `slotctl certs`: a cluster CA, node certificates and operator
//! certificates in one directory, for labs and small sites. Larger sites
//! issue the same with their own PKI (see `tls` for what a certificate
//! must name).
//!
//! Layout: `ca.pem`/`ca.key`, `node-NAME.pem`/`.key`,
//! `operator-NAME.pem`/`.key`. An existing CA in the directory is reused,
//! so that nodes added later get certificates of the same CA; an existing
//! certificate is never overwritten.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rcgen::string::Ia5String;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType, SerialNumber,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use time::{Duration, OffsetDateTime};

use crate::tls::{Who, NODE_URI, OPERATOR_URI};

pub const CA_CERT: &str = "ca.pem";
pub const CA_KEY: &str = "ca.key";

/// How long the CA lasts when created here.
const CA_DAYS: i64 = 3650;

#[derive(Debug, thiserror::Error)]
pub enum CertsError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: {why}")]
    Bad { path: PathBuf, why: String },
    #[error("{0}")]
    Invalid(String),
    #[error("generating: {0}")]
    Generate(#[from] rcgen::Error),
}

/// The CA that signs: its certificate and key.
pub struct Authority {
    params: CertificateParams,
    key: KeyPair,
    pem: String,
}

fn ca_params() -> CertificateParams {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "slotd cluster CA");
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p
}

fn serial() -> SerialNumber {
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&crate::random::u64().to_be_bytes());
    bytes[8..].copy_from_slice(&crate::random::u64().to_be_bytes());
    // A positive DER integer.
    bytes[0] &= 0x7f;
    SerialNumber::from_slice(&bytes)
}

fn validity(p: &mut CertificateParams, days: i64) {
    let now = OffsetDateTime::now_utc();
    // A day back: a machine whose clock is a little behind accepts it too.
    p.not_before = now - Duration::days(1);
    p.not_after = now + Duration::days(days);
}

impl Authority {
    /// A new CA.
    pub fn generate() -> Result<Authority, CertsError> {
        let mut params = ca_params();
        validity(&mut params, CA_DAYS);
        params.serial_number = Some(serial());
        let key = KeyPair::generate()?;
        let pem = params.self_signed(&key)?.pem();
        Ok(Authority { params, key, pem })
    }

    /// The CA `generate` made earlier, from its two files. Leaves it signs
    /// are checked against `cert_pem`, so a CA made elsewhere is refused
    /// rather than producing certificates nobody accepts.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Authority, CertsError> {
        let key = KeyPair::from_pem(key_pem).map_err(|e| CertsError::Invalid(format!("CA key: {e}")))?;
        Ok(Authority {
            params: ca_params(),
            key,
            pem: cert_pem.to_owned(),
        })
    }

    pub fn cert_pem(&self) -> &str {
        &self.pem
    }

    pub fn key_pem(&self) -> String {
        self.key.serialize_pem()
    }

    /// A certificate for `who`, valid `days`; a node's also names `hosts`
    /// (its address's host, so that tools like grpcurl can check it).
    /// Returns (certificate PEM, key PEM).
    pub fn issue(&self, who: &Who, hosts: &[String], days: i64) -> Result<(String, String), CertsError> {
        let mut p = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        let (uri, eku) = match who {
            Who::Node(n) => {
                dn.push(DnType::CommonName, format!("slotd node {n}"));
                (
                    format!("{NODE_URI}{n}"),
                    vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth],
                )
            }
            Who::Operator(n) => {
                dn.push(DnType::CommonName, format!("slotd operator {n}"));
                (format!("{OPERATOR_URI}{n}"), vec![ExtendedKeyUsagePurpose::ClientAuth])
            }
        };
        let (Who::Node(name) | Who::Operator(name)) = who;
        if let Some(p) = slotd_raft_store::apply::name_problem(name) {
            return Err(CertsError::Invalid(format!("{who}: {p}")));
        }
        p.distinguished_name = dn;
        p.subject_alt_names = vec![SanType::URI(Ia5String::try_from(uri)?)];
        for host in hosts {
            let san = match host.parse::<IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName(Ia5String::try_from(host.as_str())?),
            };
            p.subject_alt_names.push(san);
        }
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = eku;
        p.use_authority_key_identifier_extension = true;
        p.serial_number = Some(serial());
        validity(&mut p, days);
        let key = KeyPair::generate()?;
        let issuer = Issuer::from_params(&self.params, &self.key);
        let cert = p.signed_by(&key, &issuer)?;
        self.check(cert.der())?;
        Ok((cert.pem(), key.serialize_pem()))
    }

    /// The leaf verifies against our CA certificate (as a client: both
    /// kinds of certificate are used as one).
    fn check(&self, leaf: &CertificateDer<'_>) -> Result<(), CertsError> {
        let ca = CertificateDer::from_pem_slice(self.pem.as_bytes())
            .map_err(|e| CertsError::Invalid(format!("CA certificate: {e}")))?;
        crate::tls::verify(leaf, &[], &[ca], webpki::KeyUsage::client_auth()).map_err(|e| {
            CertsError::Invalid(format!(
                "a certificate signed with this CA key does not verify against the CA certificate ({e}); \
                 was the CA made by `slotctl certs`?"
            ))
        })?;
        Ok(())
    }
}

/// What `slotctl certs` is asked to make.
#[derive(Clone, Debug, Default)]
pub struct Request {
    /// Nodes by name, each with the hosts its certificate also names.
    pub nodes: Vec<(String, Vec<String>)>,
    pub operators: Vec<String>,
    pub days: i64,
}

/// The file names for `who` in the directory.
pub fn file_names(who: &Who) -> (String, String) {
    let stem = match who {
        Who::Node(n) => format!("node-{n}"),
        Who::Operator(n) => format!("operator-{n}"),
    };
    (format!("{stem}.pem"), format!("{stem}.key"))
}

fn write_new(path: &Path, text: &str, secret: bool) -> Result<(), CertsError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let io = |source| CertsError::Io {
        path: path.to_owned(),
        source,
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(if secret { 0o600 } else { 0o644 })
        .open(path)
        .map_err(io)?;
    f.write_all(text.as_bytes()).map_err(io)?;
    f.sync_all().map_err(io)
}

/// Makes what `request` asks for in `dir` (created if missing), reusing the
/// CA there if there is one. Refuses, writing nothing, if any certificate
/// it would write exists already. Returns the files written.
pub fn make(dir: &Path, request: &Request) -> Result<Vec<PathBuf>, CertsError> {
    if request.days < 1 {
        return Err(CertsError::Invalid(format!(
            "--days: must be at least 1, got {}",
            request.days
        )));
    }
    let whos: Vec<(Who, &[String])> = request
        .nodes
        .iter()
        .map(|(n, hosts)| (Who::Node(n.clone()), hosts.as_slice()))
        .chain(request.operators.iter().map(|n| (Who::Operator(n.clone()), &[][..])))
        .collect();
    let mut seen = std::collections::BTreeSet::new();
    for (who, _) in &whos {
        if !seen.insert(who) {
            return Err(CertsError::Invalid(format!("{who} is asked for twice")));
        }
        let (cert, key) = file_names(who);
        for f in [cert, key] {
            if dir.join(&f).exists() {
                return Err(CertsError::Invalid(format!(
                    "{} exists already; nothing was written (remove it to make a new one)",
                    dir.join(f).display()
                )));
            }
        }
    }
    let (ca_cert, ca_key) = (dir.join(CA_CERT), dir.join(CA_KEY));
    let read = |p: &Path| {
        std::fs::read_to_string(p).map_err(|source| CertsError::Io {
            path: p.to_owned(),
            source,
        })
    };
    // Everything is made in memory first, then written; a failed write
    // takes back what was written, so that a refusal leaves nothing.
    let mut files: Vec<(PathBuf, String, bool)> = Vec::new();
    let ca = match (ca_cert.exists(), ca_key.exists()) {
        (true, true) => {
            crate::tls::check_key_mode(&ca_key).map_err(|why| CertsError::Bad {
                path: ca_key.clone(),
                why,
            })?;
            Authority::from_pem(&read(&ca_cert)?, &read(&ca_key)?).map_err(|e| CertsError::Bad {
                path: ca_key.clone(),
                why: e.to_string(),
            })?
        }
        (false, false) => {
            let ca = Authority::generate()?;
            files.push((ca_cert.clone(), ca.cert_pem().to_owned(), false));
            files.push((ca_key.clone(), ca.key_pem(), true));
            ca
        }
        (true, false) | (false, true) => {
            return Err(CertsError::Invalid(format!(
                "{} and {} must both exist (to reuse the CA) or neither (to make one)",
                ca_cert.display(),
                ca_key.display()
            )))
        }
    };
    for (who, hosts) in whos {
        let (cert, key) = ca.issue(&who, hosts, request.days)?;
        let (cert_name, key_name) = file_names(&who);
        files.push((dir.join(cert_name), cert, false));
        files.push((dir.join(key_name), key, true));
    }
    std::fs::create_dir_all(dir).map_err(|source| CertsError::Io {
        path: dir.to_owned(),
        source,
    })?;
    let mut written = Vec::new();
    for (path, text, secret) in files {
        if let Err(e) = write_new(&path, &text, secret) {
            for w in &written {
                let _ = std::fs::remove_file(w);
            }
            return Err(e);
        }
        written.push(path);
    }
    Ok(written)
}
