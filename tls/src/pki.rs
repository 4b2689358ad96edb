//! Making the certificates of both sides: the daemon's root CA and server certificate, the
//! client's self-signed certificate.
//!
//! All keys are ECDSA P-256. Private keys are written 0600 from the moment they exist.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PublicKeyData, SerialNumber, PKCS_ECDSA_P256_SHA256,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use time::{Duration, OffsetDateTime};
use trust::fsutil::{self, DirLock, FileMode};
use trust::paths::{DataDir, CLIENT_CERT_FILE, CLIENT_KEY_FILE};
use trust::Fingerprint;
use zeroize::{Zeroize, Zeroizing};

use crate::error::{Error, Result};

/// How long the root CA is valid.
pub const ROOT_CA_VALIDITY: Duration = Duration::days(3650);
/// How long a server certificate is valid unless the daemon is told otherwise.
pub const SERVER_CERT_VALIDITY: Duration = Duration::days(365);
/// How long before its end a server certificate is renewed, by default.
pub const SERVER_CERT_RENEW_BEFORE: Duration = Duration::days(30);
/// How long a client certificate is valid (clients stay trusted after expiry anyway).
pub const CLIENT_CERT_VALIDITY: Duration = Duration::days(3650);

/// What the daemon presents in the TLS handshake.
#[derive(Debug)]
pub struct ServerPki {
    /// The root CA certificate, PEM, as clients read it.
    pub root_cert_pem: String,
    /// Server certificate followed by the root CA certificate.
    pub chain: Vec<CertificateDer<'static>>,
    /// The server certificate's key.
    pub key: PrivateKeyDer<'static>,
    /// When the server certificate starts to be valid.
    pub not_before: OffsetDateTime,
    /// When the server certificate expires.
    pub not_after: OffsetDateTime,
}

/// Options for [`ServerPki::load_or_create`].
#[derive(Debug, Clone, Copy)]
pub struct ServerPkiOptions {
    /// Validity of a newly made server certificate.
    pub server_validity: Duration,
    /// Replace the server certificate when it expires within this long.
    pub renew_before: Duration,
}

impl Default for ServerPkiOptions {
    fn default() -> Self {
        ServerPkiOptions {
            server_validity: SERVER_CERT_VALIDITY,
            renew_before: SERVER_CERT_RENEW_BEFORE,
        }
    }
}

impl ServerPki {
    /// Load the root CA and server certificate from `dir`, creating or renewing what is missing,
    /// unparseable, inconsistent or close to expiry. The root CA is kept whenever it is usable, so
    /// clients that already read it keep working.
    pub fn load_or_create(dir: &DataDir, opts: ServerPkiOptions) -> Result<ServerPki> {
        ServerPki::load_or_create_then(dir, opts, |_| Ok(()))
    }

    /// [`ServerPki::load_or_create`], calling `ready` with the result before a new root CA's
    /// certificate is written where clients read it: a running daemon presents the new chain
    /// from then on, so that no client reads the new root CA and is still shown a certificate
    /// of the old one. Fails, with a new root CA left unpublished, if `ready` fails.
    pub fn load_or_create_then(
        dir: &DataDir,
        opts: ServerPkiOptions,
        ready: impl FnOnce(&ServerPki) -> Result<()>,
    ) -> Result<ServerPki> {
        fsutil::ensure_dir(&dir.certificates_dir(), 0o700)?;
        // Two daemons started on one directory (or a renewal racing a second daemon) would
        // otherwise each write a key and a certificate, and could leave one's key beside the
        // other's certificate. Under the lock, no temporary file belongs to a live writer.
        let _lock = DirLock::acquire(&dir.certificates_dir())?;
        for file in [
            dir.root_key(),
            dir.root_cert(),
            dir.server_key(),
            dir.server_cert(),
        ] {
            fsutil::remove_stale_temporaries(&file);
        }
        let now = OffsetDateTime::now_utc();

        let mut publish_root = false;
        let root = match load_root(dir, now + opts.renew_before) {
            Ok(root) => {
                make_public(&dir.root_cert());
                root
            }
            Err(why) => {
                // Files that are there but cannot be used (damaged, unreadable, mismatched,
                // expiring) are kept beside the new ones: a root CA is what clients that copied
                // it verify the daemon against, and an administrator may want it back.
                if let Some(why) = why {
                    let kept: Vec<String> = [dir.root_key(), dir.root_cert()]
                        .iter()
                        .filter_map(|path| keep_aside(path))
                        .map(|aside| aside.display().to_string())
                        .collect();
                    tracing::warn!(
                        why,
                        kept = kept.join(", "),
                        "the root CA cannot be used; making a new one (clients read it at their \
                         next command)"
                    );
                }
                tracing::info!("creating a new root CA certificate");
                let root = new_root(now)?;
                fsutil::write_atomic(
                    &dir.root_key(),
                    Zeroizing::new(root.key.serialize_pem()).as_bytes(),
                    FileMode::PRIVATE,
                )?;
                // Its certificate last, below.
                publish_root = true;
                root
            }
        };

        let (cert_der, key_der, not_before, not_after) =
            match load_server(dir, &root, now + opts.renew_before) {
                Some(found) => found,
                None => {
                    tracing::info!("creating a new server certificate");
                    let (cert_pem, key, not_before, not_after) =
                        new_server(&root, now, opts.server_validity)?;
                    fsutil::write_atomic(
                        &dir.server_key(),
                        Zeroizing::new(key.serialize_pem()).as_bytes(),
                        FileMode::PRIVATE,
                    )?;
                    fsutil::write_atomic(
                        &dir.server_cert(),
                        cert_pem.as_bytes(),
                        FileMode {
                            mode: 0o644,
                            owner: None,
                        },
                    )?;
                    let cert_der = CertificateDer::from_pem_slice(cert_pem.as_bytes())
                        .map_err(|_| invalid_pem(&dir.server_cert(), "certificate"))?;
                    let key_der = PrivateKeyDer::try_from(key.serialize_der())
                        .map_err(|_| invalid_pem(&dir.server_key(), "private key"))?;
                    (cert_der, key_der, not_before, not_after)
                }
            };

        let pki = ServerPki {
            root_cert_pem: root.cert_pem.clone(),
            chain: vec![cert_der, root.cert_der.clone()],
            key: key_der,
            not_before,
            not_after,
        };
        ready(&pki)?;
        if publish_root {
            fsutil::write_atomic(
                &dir.root_cert(),
                root.cert_pem.as_bytes(),
                FileMode {
                    mode: 0o644,
                    owner: None,
                },
            )?;
        }
        Ok(pki)
    }
}

struct Root {
    cert_pem: String,
    cert_der: CertificateDer<'static>,
    key: KeyPair,
}

/// The root CA in `dir`, or why not: `None` when there is none (neither file), else what is
/// wrong with the files there.
fn load_root(dir: &DataDir, valid_until: OffsetDateTime) -> Result<Root, Option<String>> {
    if !dir.root_cert().exists() && !dir.root_key().exists() {
        return Err(None);
    }
    let read = |path: std::path::PathBuf| {
        read_text(&path).map_err(|e| Some(format!("{}: {e}", path.display())))
    };
    let cert_pem = read(dir.root_cert())?;
    let key_pem = Zeroizing::new(read(dir.root_key())?);
    let why = |what: &str| Some(what.to_string());
    let cert_der = CertificateDer::from_pem_slice(cert_pem.as_bytes())
        .map_err(|_| why("the certificate file holds no certificate"))?;
    let key = KeyPair::from_pem(&key_pem).map_err(|_| why("the key file holds no usable key"))?;
    let (_, x509) = x509_parser::parse_x509_certificate(&cert_der)
        .map_err(|_| why("the certificate cannot be parsed"))?;
    // The key must be the certificate's, and the certificate must outlive the renewal margin.
    if x509.public_key().raw != key.subject_public_key_info().as_slice() {
        return Err(why("the key is not the certificate's"));
    }
    if x509.validity().not_after.to_datetime() < valid_until {
        return Err(why("the certificate expires soon"));
    }
    // Server certificates name the issuer from `root_subject()`, so a root with another subject
    // could not be their issuer.
    if x509.subject().to_string() != ROOT_SUBJECT_TEXT {
        return Err(why("the certificate has an unexpected subject"));
    }
    Ok(Root {
        cert_pem,
        cert_der,
        key,
    })
}

fn load_server(
    dir: &DataDir,
    root: &Root,
    valid_until: OffsetDateTime,
) -> Option<(
    CertificateDer<'static>,
    PrivateKeyDer<'static>,
    OffsetDateTime,
    OffsetDateTime,
)> {
    let cert_der =
        CertificateDer::from_pem_slice(read_text(&dir.server_cert()).ok()?.as_bytes()).ok()?;
    let key_pem = Zeroizing::new(read_text(&dir.server_key()).ok()?);
    let key = KeyPair::from_pem(&key_pem).ok()?;
    let (_, x509) = x509_parser::parse_x509_certificate(&cert_der).ok()?;
    if x509.public_key().raw != key.subject_public_key_info().as_slice() {
        return None;
    }
    if let Err(e) = verify_server_cert(&cert_der, &root.cert_der) {
        tracing::info!(
            error = %e,
            "server certificate does not verify against the current root CA; replacing it"
        );
        return None;
    }
    let not_after = x509.validity().not_after.to_datetime();
    if not_after < valid_until {
        tracing::info!(%not_after, "server certificate expires soon; renewing it");
        return None;
    }
    let key_der = PrivateKeyDer::try_from(key.serialize_der()).ok()?;
    let not_before = x509.validity().not_before.to_datetime();
    Some((cert_der, key_der, not_before, not_after))
}

fn random_serial() -> SerialNumber {
    let mut bytes = *uuid::Uuid::new_v4().as_bytes();
    // Positive and without a leading zero octet, as RFC 5280 wants.
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    SerialNumber::from_slice(&bytes)
}

fn generate_key(what: &'static str) -> Result<KeyPair> {
    KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
        .map_err(|source| Error::Generate { what, source })
}

/// The root CA's subject as x509-parser prints it; see [`root_subject`].
const ROOT_SUBJECT_TEXT: &str = "C=US, O=multipass, CN=Multipass Root CA";

fn root_subject() -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CountryName, "US");
    dn.push(DnType::OrganizationName, "multipass");
    dn.push(DnType::CommonName, "Multipass Root CA");
    dn
}

/// Check `cert` as a client will: signed by `root`, valid now, for `localhost`, for server
/// authentication. rustls's own verifier does it, so the check and the clients cannot disagree.
fn verify_server_cert(
    cert: &CertificateDer<'static>,
    root: &CertificateDer<'static>,
) -> Result<(), rustls::Error> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(root.clone())?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier =
        rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .map_err(|e| rustls::Error::General(e.to_string()))?;
    let name = ServerName::try_from("localhost").expect("a valid DNS name");
    use rustls::client::danger::ServerCertVerifier;
    verifier.verify_server_cert(cert, &[], &name, &[], UnixTime::now())?;
    Ok(())
}

fn root_key_usages() -> Vec<KeyUsagePurpose> {
    vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ]
}

fn root_params(now: OffsetDateTime) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = root_subject();
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = root_key_usages();
    params.serial_number = Some(random_serial());
    params.not_before = now - Duration::hours(1);
    params.not_after = now + ROOT_CA_VALIDITY;
    params
}

fn new_root(now: OffsetDateTime) -> Result<Root> {
    let key = generate_key("root CA key")?;
    let cert = root_params(now)
        .self_signed(&key)
        .map_err(|source| Error::Generate {
            what: "root CA certificate",
            source,
        })?;
    Ok(Root {
        cert_pem: cert.pem(),
        cert_der: cert.der().clone(),
        key,
    })
}

fn new_server(
    root: &Root,
    now: OffsetDateTime,
    validity: Duration,
) -> Result<(String, KeyPair, OffsetDateTime, OffsetDateTime)> {
    let gen_err = |source| Error::Generate {
        what: "server certificate",
        source,
    };
    // The issuer is described by the parameters the root was made with (its subject, and the key
    // identifier rcgen derives from its key), which `load_root` checked; reading them back from
    // the certificate would need rcgen's X.509 parsing and with it x509-parser's signature
    // verification feature, which the privileged helper's build would then share.
    let mut issuer_params = CertificateParams::default();
    issuer_params.distinguished_name = root_subject();
    issuer_params.key_usages = root_key_usages();
    let issuer = Issuer::new(issuer_params, &root.key);
    let key = generate_key("server key")?;
    let mut params = CertificateParams::new(vec!["localhost".to_string()]).map_err(gen_err)?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CountryName, "US");
    dn.push(DnType::OrganizationName, "multipass");
    dn.push(DnType::CommonName, "localhost");
    params.distinguished_name = dn;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyAgreement,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    params.serial_number = Some(random_serial());
    let not_before = (now - Duration::hours(1))
        .replace_nanosecond(0)
        .unwrap_or(now - Duration::hours(1));
    params.not_before = not_before;
    // A certificate holds whole seconds (the fraction is dropped), and the renewal is timed from
    // the expiry returned here: it must be the one the certificate holds, not up to a second
    // later.
    let not_after = (now + validity)
        .replace_nanosecond(0)
        .unwrap_or(now + validity);
    params.not_after = not_after;
    let cert = params.signed_by(&key, &issuer).map_err(gen_err)?;
    Ok((cert.pem(), key, not_before, not_after))
}

/// A certificate or key file of the daemon's, as text: a regular file only, opened without
/// blocking (`trust::fsutil::open_regular`), so that a FIFO in its place cannot stop the reload
/// that reads it.
fn read_text(path: &Path) -> std::result::Result<String, trust::Error> {
    let bytes = fsutil::read_optional(path)?.ok_or_else(|| trust::Error::Read {
        path: path.to_path_buf(),
        source: std::io::ErrorKind::NotFound.into(),
    })?;
    String::from_utf8(bytes).map_err(|_| trust::Error::Read {
        path: path.to_path_buf(),
        source: std::io::Error::other("not text"),
    })
}

/// Names kept of one file at most: the first ones (the root CA that was in use) are kept, and
/// a replacement that keeps failing adds no more.
const KEPT_AT_MOST: usize = 4;

/// A root CA file that cannot be used, kept before a new one replaces it.
fn keep_aside(path: &Path) -> Option<std::path::PathBuf> {
    fsutil::keep_aside(path, "replaced", KEPT_AT_MOST).map(|kept| kept.path)
}

/// Give the root CA certificate, which the clients of every user read, the mode it was made
/// with. A copy restored under a strict umask (0600, 0640) would otherwise keep every user but
/// root out, and no restart would help. Through a descriptor opened without following a link:
/// the daemon changes the mode of its own file only.
fn make_public(path: &std::path::Path) {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let Ok(file) = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
    else {
        return;
    };
    let Ok(meta) = file.metadata() else { return };
    let mode = meta.permissions().mode() & 0o7777;
    if meta.is_file() && mode != 0o644 {
        match file.set_permissions(std::fs::Permissions::from_mode(0o644)) {
            Ok(()) => tracing::warn!(
                path = %path.display(),
                was = format!("{mode:04o}"),
                "the root CA certificate was not readable by every user; made it 0644"
            ),
            Err(e) => tracing::warn!(
                path = %path.display(),
                mode = format!("{mode:04o}"),
                error = %e,
                "the root CA certificate is not readable by every user, and its mode cannot be set"
            ),
        }
    }
}

/// A client's certificate and key, as the client presents them.
pub struct ClientIdentity {
    /// The certificate, DER.
    pub cert: CertificateDer<'static>,
    /// The certificate, PEM, exactly as stored (what users append to the trust store by hand).
    pub cert_pem: String,
    /// The certificate with its private key, loaded once and checked to be the certificate's,
    /// as the TLS configuration presents them.
    certified: Arc<rustls::sign::CertifiedKey>,
    /// Where [`ClientIdentity::load_or_create`] moved a key it found without its certificate,
    /// before it made this identity.
    pub moved_aside: Option<std::path::PathBuf>,
}

impl Drop for ServerPki {
    fn drop(&mut self) {
        self.key.zeroize();
    }
}

impl Drop for Root {
    fn drop(&mut self) {
        self.key.zeroize();
    }
}

impl fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientIdentity")
            .field("fingerprint", &self.fingerprint())
            .finish_non_exhaustive()
    }
}

impl ClientIdentity {
    /// Load the certificate and key from `dir`, or create them there (dir 0700, key 0600, under a
    /// lock so that two first commands of the same user agree on one identity).
    pub fn load_or_create(dir: &Path) -> Result<ClientIdentity> {
        fsutil::ensure_own_private_dir(dir)?;
        let _lock = DirLock::acquire(dir)?;
        let cert_path = dir.join(CLIENT_CERT_FILE);
        let key_path = dir.join(CLIENT_KEY_FILE);
        // A copy of the key left by a write that a crash interrupted.
        for file in [&key_path, &cert_path] {
            fsutil::remove_stale_temporaries(file);
        }
        // `symlink_metadata`: a certificate that is a link to a file missing now (a mount not
        // there yet) is not taken for no certificate.
        let mut moved_aside = None;
        if key_path.exists() && std::fs::symlink_metadata(&cert_path).is_err() {
            // Key first, below: a first run stopped between the two writes (killed, the disk
            // full) leaves a key without a certificate. No certificate was ever made of it here,
            // so it was never trusted as this client: it is moved aside (kept, private), and a
            // new identity made, rather than leaving the client unusable until its user moves
            // the directory aside by hand.
            // Named by the time, so that an earlier one is not replaced: a key whose certificate
            // was deleted can be whole again with the certificate from the daemon's store.
            let aside = fsutil::aside_name(&key_path, "orphaned");
            std::fs::rename(&key_path, &aside).map_err(|source| trust::Error::Write {
                path: aside.clone(),
                source,
            })?;
            moved_aside = Some(aside.clone());
            tracing::warn!(
                key = %key_path.display(),
                moved_to = %aside.display(),
                "a client key without its certificate was moved aside; making a new identity"
            );
        }
        if cert_path.exists() || key_path.exists() {
            return ClientIdentity::load(&cert_path, &key_path);
        }
        let made = |identity: ClientIdentity| ClientIdentity {
            moved_aside,
            ..identity
        };
        let (cert_pem, key) = new_client_cert(OffsetDateTime::now_utc())?;
        // Key first: a crash between the two writes leaves a key without a certificate (moved
        // aside above by the next run); the other order would leave a certificate that a daemon
        // could trust without a key to use it.
        fsutil::write_atomic(
            &key_path,
            Zeroizing::new(key.serialize_pem()).as_bytes(),
            FileMode::PRIVATE,
        )?;
        fsutil::write_atomic(
            &cert_path,
            cert_pem.as_bytes(),
            FileMode {
                mode: 0o644,
                owner: None,
            },
        )?;
        ClientIdentity::load(&cert_path, &key_path).map(made)
    }

    /// Load an existing certificate and key.
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<ClientIdentity> {
        let cert_pem = std::fs::read_to_string(cert_path).map_err(|source| trust::Error::Read {
            path: cert_path.to_path_buf(),
            source,
        })?;
        let cert = CertificateDer::from_pem_slice(cert_pem.as_bytes())
            .map_err(|_| invalid_pem(cert_path, "certificate"))?;
        let key_pem = zeroize::Zeroizing::new(std::fs::read(key_path).map_err(|source| {
            trust::Error::Read {
                path: key_path.to_path_buf(),
                source,
            }
        })?);
        let mut key = PrivateKeyDer::from_pem_slice(&key_pem)
            .map_err(|_| invalid_pem(key_path, "private key"))?;
        // Checked here rather than when the TLS configuration is built, where a mismatch would
        // look like a problem with the daemon's root certificate, loaded at the same time.
        let certified = certify(&cert, &key).map_err(|e| match e {
            Certify::Unusable(source) => Error::UnusableKey {
                key: key_path.to_path_buf(),
                source,
            },
            Certify::Mismatch => Error::KeyMismatch {
                cert: cert_path.to_path_buf(),
                key: key_path.to_path_buf(),
            },
            Certify::Certificate(_) => invalid_pem(cert_path, "certificate"),
        });
        key.zeroize();
        Ok(ClientIdentity {
            cert,
            cert_pem,
            certified: certified?,
            moved_aside: None,
        })
    }

    /// The identity of `cert` (its PEM text `cert_pem`) and `key`, which must be the
    /// certificate's key.
    pub fn new(
        cert: CertificateDer<'static>,
        cert_pem: String,
        mut key: PrivateKeyDer<'static>,
    ) -> Result<ClientIdentity> {
        let certified = certify(&cert, &key).map_err(|e| match e {
            Certify::Unusable(e) | Certify::Certificate(e) => Error::Tls(e),
            Certify::Mismatch => Error::Tls(rustls::Error::InconsistentKeys(
                rustls::InconsistentKeys::KeyMismatch,
            )),
        });
        key.zeroize();
        Ok(ClientIdentity {
            cert,
            cert_pem,
            certified: certified?,
            moved_aside: None,
        })
    }

    /// The certificate and its key, as a TLS client presents them.
    pub(crate) fn certified_key(&self) -> Arc<rustls::sign::CertifiedKey> {
        self.certified.clone()
    }

    /// This client's identity as the daemon sees it.
    pub fn fingerprint(&self) -> Fingerprint {
        Fingerprint::of(&self.cert)
    }
}

/// Why [`certify`] found no identity.
enum Certify {
    /// The key cannot be loaded for signing.
    Unusable(rustls::Error),
    /// The key is not the certificate's.
    Mismatch,
    /// The certificate's public key cannot be read.
    Certificate(rustls::Error),
}

/// `cert` with `key` loaded for signing, checked to be its key, as rustls's
/// `CertifiedKey::from_der` does, telling apart what went wrong.
fn certify(
    cert: &CertificateDer<'static>,
    key: &PrivateKeyDer<'static>,
) -> std::result::Result<Arc<rustls::sign::CertifiedKey>, Certify> {
    let signing_key = crate::config::provider()
        .key_provider
        .load_private_key(key.clone_key())
        .map_err(Certify::Unusable)?;
    let pair = rustls::sign::CertifiedKey::new(vec![cert.clone()], signing_key);
    match pair.keys_match() {
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            Err(Certify::Mismatch)
        }
        // The key does not say its public half: the handshake is the test then.
        Ok(()) | Err(rustls::Error::InconsistentKeys(_)) => Ok(Arc::new(pair)),
        Err(e) => Err(Certify::Certificate(e)),
    }
}

/// A new self-signed client certificate (PEM) and its key: P-256, random serial,
/// `CN=<random UUID>`, EKU clientAuth.
pub fn new_client_cert(now: OffsetDateTime) -> Result<(String, KeyPair)> {
    let gen_err = |source| Error::Generate {
        what: "client certificate",
        source,
    };
    let key = generate_key("client key")?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, uuid::Uuid::new_v4().to_string());
    params.distinguished_name = dn;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.serial_number = Some(random_serial());
    params.not_before = now - Duration::hours(1);
    params.not_after = now + CLIENT_CERT_VALIDITY;
    let cert = params.self_signed(&key).map_err(gen_err)?;
    Ok((cert.pem(), key))
}

fn invalid_pem(path: &Path, what: &'static str) -> Error {
    Error::Trust(trust::Error::InvalidPem {
        path: path.to_path_buf(),
        what,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_pki_is_created_once_and_reused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = DataDir::new(tmp.path());
        let first = ServerPki::load_or_create(&dir, ServerPkiOptions::default()).unwrap();
        let second = ServerPki::load_or_create(&dir, ServerPkiOptions::default()).unwrap();
        assert_eq!(first.root_cert_pem, second.root_cert_pem);
        assert_eq!(first.chain[0], second.chain[0]);
        use std::os::unix::fs::PermissionsExt;
        let mode =
            |p: std::path::PathBuf| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(dir.root_key()), 0o600);
        assert_eq!(mode(dir.server_key()), 0o600);
        assert_eq!(mode(dir.root_cert()), 0o644);
        assert_eq!(mode(dir.certificates_dir()), 0o700);
    }

    /// A root CA that cannot be used is replaced, but its files are kept beside the new ones:
    /// its key was overwritten before, and clients that copied the certificate verify against it.
    #[test]
    fn a_root_ca_that_cannot_be_used_is_kept_aside() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = DataDir::new(tmp.path());
        let first = ServerPki::load_or_create(&dir, ServerPkiOptions::default()).unwrap();
        let key = std::fs::read(dir.root_key()).unwrap();
        std::fs::write(dir.root_cert(), &first.root_cert_pem[..300]).unwrap();
        let second = ServerPki::load_or_create(&dir, ServerPkiOptions::default()).unwrap();
        assert_ne!(first.root_cert_pem, second.root_cert_pem, "a new root CA");
        let kept: Vec<std::path::PathBuf> = std::fs::read_dir(dir.certificates_dir())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.to_string_lossy().contains(".pem.replaced-"))
            .collect();
        assert_eq!(kept.len(), 1, "{kept:?}");
        assert_eq!(std::fs::read(&kept[0]).unwrap(), key, "the old key, kept");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&kept[0]).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // The file stays in place until its replacement is written, and a replacement tried
        // again (after a failed write) does not keep the same file twice.
        let file = tmp.path().join("file.pem");
        std::fs::write(&file, "root").unwrap();
        let aside = keep_aside(&file).expect("kept");
        assert_eq!(std::fs::read(&file).unwrap(), b"root");
        assert_eq!(std::fs::read(&aside).unwrap(), b"root");
        assert_eq!(keep_aside(&file), Some(aside.clone()), "kept once");
        // Replaced as the service replaces files: another file renamed over it.
        let next = tmp.path().join("next.pem");
        std::fs::write(&next, "another root").unwrap();
        std::fs::rename(&next, &file).unwrap();
        assert_eq!(std::fs::read(&aside).unwrap(), b"root");
        assert!(keep_aside(&file).is_some(), "a new file is kept again");
        // None of this when there was no root CA at all.
        let fresh = tempfile::tempdir().unwrap();
        let fresh = DataDir::new(fresh.path());
        ServerPki::load_or_create(&fresh, ServerPkiOptions::default()).unwrap();
        assert!(!std::fs::read_dir(fresh.certificates_dir())
            .unwrap()
            .any(|e| e
                .unwrap()
                .file_name()
                .to_string_lossy()
                .contains("replaced")));
    }

    #[test]
    fn daemons_starting_at_once_on_a_new_directory_agree_on_one_pki() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = DataDir::new(tmp.path());
        // A key copy left by a write that a crash interrupted.
        std::fs::create_dir_all(dir.certificates_dir()).unwrap();
        let stale = dir.certificates_dir().join(".localhost_key.pem.tmp.1.x");
        std::fs::write(&stale, "left by a crash").unwrap();
        let roots: Vec<String> = std::thread::scope(|scope| {
            let starts: Vec<_> = (0..8)
                .map(|_| {
                    scope.spawn(|| {
                        ServerPki::load_or_create(&dir, Default::default())
                            .unwrap()
                            .root_cert_pem
                            .clone()
                    })
                })
                .collect();
            starts.into_iter().map(|s| s.join().unwrap()).collect()
        });
        assert!(roots.iter().all(|r| *r == roots[0]), "two root CAs made");
        let again = ServerPki::load_or_create(&dir, Default::default()).unwrap();
        assert_eq!(again.root_cert_pem, roots[0], "the files did not match");
        assert!(!stale.exists(), "the stale temporary file is still there");
    }

    #[test]
    fn short_lived_server_cert_is_renewed_but_root_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = DataDir::new(tmp.path());
        let opts = ServerPkiOptions {
            server_validity: Duration::minutes(5),
            renew_before: Duration::minutes(10),
        };
        let first = ServerPki::load_or_create(&dir, opts).unwrap();
        let second = ServerPki::load_or_create(&dir, opts).unwrap();
        assert_eq!(first.root_cert_pem, second.root_cert_pem);
        assert_ne!(first.chain[0], second.chain[0]);
    }

    #[test]
    fn a_new_server_cert_expires_when_its_pki_says() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = DataDir::new(tmp.path());
        let opts = ServerPkiOptions {
            server_validity: Duration::seconds(4),
            renew_before: Duration::seconds(2),
        };
        // Made several times, so that at least one is made at a fraction of a second.
        for _ in 0..3 {
            std::fs::remove_file(dir.server_cert()).ok();
            let pki = ServerPki::load_or_create(&dir, opts).unwrap();
            let (_, x509) = x509_parser::parse_x509_certificate(&pki.chain[0]).unwrap();
            assert_eq!(x509.validity().not_after.to_datetime(), pki.not_after);
            std::thread::sleep(std::time::Duration::from_millis(137));
        }
    }

    #[test]
    fn server_cert_from_another_root_is_replaced() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = DataDir::new(tmp.path());
        let first = ServerPki::load_or_create(&dir, ServerPkiOptions::default()).unwrap();
        // A new root (as after a lost root key) invalidates the old server certificate.
        std::fs::remove_file(dir.root_key()).unwrap();
        let second = ServerPki::load_or_create(&dir, ServerPkiOptions::default()).unwrap();
        assert_ne!(first.root_cert_pem, second.root_cert_pem);
        assert_ne!(first.chain[0], second.chain[0]);
    }

    #[test]
    fn client_identity_is_created_once() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("multipass-client-certificate");
        let a = ClientIdentity::load_or_create(&dir).unwrap();
        let stale = dir.join(format!(".{CLIENT_KEY_FILE}.tmp.1.x"));
        std::fs::write(&stale, "a key copy left by a crash").unwrap();
        let b = ClientIdentity::load_or_create(&dir).unwrap();
        assert_eq!(a.fingerprint(), b.fingerprint());
        assert!(!stale.exists(), "the stale temporary file is still there");
        use std::os::unix::fs::PermissionsExt;
        let mode =
            |p: std::path::PathBuf| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(dir.clone()), 0o700);
        assert_eq!(mode(dir.join(CLIENT_KEY_FILE)), 0o600);
        let (_, x509) = x509_parser::parse_x509_certificate(&a.cert).unwrap();
        let cn = x509.subject().iter_common_name().next().unwrap();
        assert!(uuid::Uuid::parse_str(cn.as_str().unwrap()).is_ok());
    }

    /// A first run stopped between writing the key and the certificate leaves a key alone: the
    /// next run moves it aside and makes a new identity, instead of failing until the user moves
    /// the directory aside. A certificate without its key (perhaps trusted) is still refused.
    #[test]
    fn a_key_left_without_its_certificate_is_moved_aside() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("multipass-client-certificate");
        ClientIdentity::load_or_create(&dir).unwrap();
        let key = std::fs::read(dir.join(CLIENT_KEY_FILE)).unwrap();
        std::fs::remove_file(dir.join(CLIENT_CERT_FILE)).unwrap();
        let again = ClientIdentity::load_or_create(&dir).expect("a new identity");
        let aside = again.moved_aside.clone().expect("moved aside");
        assert!(aside
            .to_string_lossy()
            .contains(&format!("{CLIENT_KEY_FILE}.orphaned-")));
        assert_eq!(std::fs::read(&aside).unwrap(), key, "the old key is kept");
        assert_eq!(
            std::fs::metadata(&aside).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_ne!(std::fs::read(dir.join(CLIENT_KEY_FILE)).unwrap(), key);
        assert_eq!(
            ClientIdentity::load_or_create(&dir).unwrap().fingerprint(),
            again.fingerprint()
        );

        std::fs::remove_file(dir.join(CLIENT_KEY_FILE)).unwrap();
        assert!(ClientIdentity::load_or_create(&dir).is_err());
    }
}
