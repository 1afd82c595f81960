//! X509-SVIDs: minting CA certificates and leaf SVIDs, checking our own SVIDs, and verifying a
//! peer's chain against the bundle of the peer's trust domain.
//!
//! Leaf SVIDs are minted from a DER SubjectPublicKeyInfo, never from a CSR: the caller keeps the
//! private key and sends only the public key. Every certificate minted here follows the
//! X509-SVID rules: exactly one URI SAN, a critical keyUsage, `cA` set only on signing
//! certificates, `keyCertSign`/`cRLSign` never on leaves, and serverAuth plus clientAuth in the
//! leaf's extKeyUsage.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::string::{Ia5String, PrintableString};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, DnValue,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, PublicKeyData, SanType,
    SerialNumber,
};
use rustls_pki_types::{CertificateDer, UnixTime};
use time::OffsetDateTime;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::{GeneralName, KeyUsage};
use x509_parser::time::ASN1Time;

use crate::bundle::{BundleSource, X509Authority};
use crate::id::{IdError, SpiffeId, TrustDomain};
use crate::keys::{EcCurve, KeyError, PrivateKey, PublicKey};
use crate::pem::certificates_pem;

/// The validity of a CA minted without an explicit TTL: one year.
pub const DEFAULT_CA_TTL: Duration = Duration::from_secs(365 * 24 * 60 * 60);

/// How far `notBefore` is set in the past, so that peers with a slightly slow clock accept a
/// certificate minted a moment ago.
pub const BACKDATE: Duration = Duration::from_secs(30);

/// The `O` attribute of every CA subject minted here.
const ORGANIZATION: &str = "fedhub";
/// The X.520 `serialNumber` attribute type (2.5.4.5), which makes every CA subject unique.
const OID_DN_SERIAL_NUMBER: &[u64] = &[2, 5, 4, 5];

/// Why a certificate could not be minted, checked or verified.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum X509Error {
    /// The certificate chain holds no certificate.
    #[error("certificate chain is empty: it must start with the leaf certificate")]
    EmptyChain,
    /// A certificate is not well-formed DER X.509, or one of its extensions cannot be parsed.
    #[error("certificate {index} of the chain is malformed: {reason}")]
    Malformed {
        /// Position in the chain, the leaf being 0.
        index: usize,
        /// What the parser reported.
        reason: String,
    },
    /// The certificate has no URI SAN, so it names no SPIFFE ID.
    #[error("certificate contains no URI SAN")]
    NoUriSan,
    /// The certificate has more than one URI SAN; an SVID carries exactly one.
    #[error("certificate contains more than one URI SAN")]
    MultipleUriSans,
    /// The URI SAN is not a valid SPIFFE ID.
    #[error("URI SAN {uri:?} is not a valid SPIFFE ID: {source}")]
    InvalidSpiffeId {
        /// The URI as found in the certificate.
        uri: String,
        /// The rule it breaks.
        source: IdError,
    },
    /// A leaf SVID names a trust domain (`spiffe://td`) instead of a workload.
    #[error("leaf certificate SPIFFE ID must have a non-root path")]
    LeafIdWithoutPath,
    /// The leaf has `cA` = true.
    #[error("leaf certificate with CA flag set to true")]
    LeafIsCa,
    /// The leaf has the `keyCertSign` key usage.
    #[error("leaf certificate with KeyCertSign key usage")]
    LeafKeyCertSign,
    /// The leaf has the `cRLSign` key usage.
    #[error("leaf certificate with KeyCrlSign key usage")]
    LeafCrlSign,
    /// The leaf lacks keyUsage or its `digitalSignature` bit.
    #[error("leaf certificate must have 'digitalSignature' set as key usage")]
    LeafNoDigitalSignature,
    /// A signing certificate (after the leaf, or a CA) lacks `cA` = true.
    #[error("signing certificate must have CA flag set to true (certificate {index} of the chain)")]
    SigningCertNotCa {
        /// Position in the chain.
        index: usize,
    },
    /// A signing certificate lacks the `keyCertSign` key usage.
    #[error(
        "signing certificate must have 'keyCertSign' set as key usage (certificate {index} of the chain)"
    )]
    SigningCertNoKeyCertSign {
        /// Position in the chain.
        index: usize,
    },
    /// A CA certificate's SPIFFE ID has a path; a signing certificate names its trust domain.
    #[error("CA certificate SPIFFE ID {0} must not have a path: use spiffe://<trust domain>")]
    CaIdWithPath(SpiffeId),
    /// The private key is not the key the (leaf or CA) certificate certifies.
    #[error("certificate does not match private key: use the key the certificate was minted for")]
    KeyMismatch,
    /// No bundle is held for the trust domain of the peer's SPIFFE ID.
    #[error("could not get X509 bundle: no X.509 bundle found for trust domain \"{0}\"")]
    NoBundle(TrustDomain),
    /// The bundle of the peer's trust domain holds no usable X.509 authority.
    #[error("bundle of trust domain \"{0}\" holds no usable X.509 authority")]
    NoX509Authorities(TrustDomain),
    /// A certificate of the chain is past its `notAfter`.
    #[error("certificate has expired: the peer must present a fresh SVID")]
    Expired,
    /// A certificate of the chain is before its `notBefore`.
    #[error("certificate is not valid yet: check the clocks of both sides")]
    NotYetValid,
    /// The chain does not lead to any X.509 authority of the trust domain's bundle.
    #[error(
        "certificate signed by unknown authority: the chain does not lead to an X.509 authority of trust domain \"{0}\""
    )]
    UnknownAuthority(TrustDomain),
    /// Path validation failed for another reason.
    #[error("certificate chain failed path validation: {0}")]
    PathValidation(String),
    /// The SPIFFE ID to mint is in another trust domain than the CA's.
    #[error("cannot mint {id}: this CA signs only for trust domain \"{ca_trust_domain}\"")]
    ForeignTrustDomain {
        /// The ID that was asked for.
        id: SpiffeId,
        /// The CA's trust domain.
        ca_trust_domain: TrustDomain,
    },
    /// The public key to certify is not a supported DER SubjectPublicKeyInfo.
    #[error(
        "public key is not a supported DER SubjectPublicKeyInfo (EC P-256/P-384/P-521 or RSA): {0}"
    )]
    BadPublicKey(String),
    /// A DNS name to put in the SAN is not a valid DNS name.
    #[error("{0:?} is not a valid DNS name")]
    InvalidDnsName(String),
    /// The TTL is zero or ends beyond what X.509 can express.
    #[error("invalid ttl {0:?}: it must be longer than zero and end before the year 10000")]
    InvalidTtl(Duration),
    /// The signing CA (or parent CA) is expired, so nothing it signs can be valid.
    #[error("the signing CA certificate expired or expires now: rotate to a new CA")]
    CaExpired,
    /// A private key could not be used.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// rcgen refused to build the certificate.
    #[error("certificate generation failed: {0}")]
    Mint(String),
}

fn mint_error(e: impl fmt::Display) -> X509Error {
    X509Error::Mint(e.to_string())
}

/// How a verified peer uses its SVID; an extKeyUsage, when present, must allow it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SvidUsage {
    /// The peer is a TLS server (its SVID needs id-kp-serverAuth when it carries an EKU).
    ServerAuth,
    /// The peer is a TLS client (its SVID needs id-kp-clientAuth when it carries an EKU).
    ClientAuth,
}

impl SvidUsage {
    fn webpki(self) -> webpki::KeyUsage {
        match self {
            Self::ServerAuth => webpki::KeyUsage::server_auth(),
            Self::ClientAuth => webpki::KeyUsage::client_auth(),
        }
    }
}

/// What [`verify_x509_svid`] proved about a peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedSvid {
    spiffe_id: SpiffeId,
    not_after: SystemTime,
}

impl VerifiedSvid {
    /// The peer's SPIFFE ID, from the leaf's URI SAN.
    pub fn spiffe_id(&self) -> &SpiffeId {
        &self.spiffe_id
    }

    /// When the leaf expires.
    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }
}

/// Verifies a peer's X509-SVID chain (leaf first, then intermediates) at time `now`.
///
/// The steps follow the X509-SVID spec: the leaf must carry exactly one URI SAN holding a
/// SPIFFE ID with a non-root path, must not be a CA nor carry `keyCertSign`/`cRLSign`, and must
/// carry `digitalSignature`; every further certificate must be a CA with `keyCertSign`. Then the
/// bundle of the *leaf's* trust domain is fetched from `bundles` (roots are never pooled across
/// trust domains), and RFC 5280 path validation runs up to one of its X.509 authorities.
/// Authorization (which IDs are acceptable) is left to the caller.
///
/// # Errors
/// An [`X509Error`] naming the first rule the chain breaks; [`X509Error::NoBundle`] when no
/// bundle is held for the leaf's trust domain.
pub fn verify_x509_svid(
    chain: &[impl AsRef<[u8]>],
    bundles: &dyn BundleSource,
    now: SystemTime,
    usage: SvidUsage,
) -> Result<VerifiedSvid, X509Error> {
    let (leaf_der, rest) = chain.split_first().ok_or(X509Error::EmptyChain)?;
    let leaf = parse_cert(leaf_der.as_ref(), 0)?;
    let spiffe_id = check_leaf(&leaf)?;
    check_signing_certs(rest.iter().map(AsRef::as_ref), 1)?;

    let trust_domain = spiffe_id.trust_domain();
    let bundle = bundles
        .bundle(&trust_domain)
        .ok_or_else(|| X509Error::NoBundle(trust_domain.clone()))?;
    let roots: Vec<CertificateDer<'_>> = bundle
        .x509_authorities()
        .iter()
        .map(|authority| CertificateDer::from(authority.der()))
        .collect();
    let anchors: Vec<_> = roots
        .iter()
        .filter_map(|root| match webpki::anchor_from_trusted_cert(root) {
            Ok(anchor) => Some(anchor),
            Err(e) => {
                tracing::warn!(trust_domain = %trust_domain, error = %e, "skipping an unusable X.509 authority");
                None
            }
        })
        .collect();
    if anchors.is_empty() {
        return Err(X509Error::NoX509Authorities(trust_domain));
    }

    let intermediates: Vec<CertificateDer<'_>> = rest
        .iter()
        .map(|der| CertificateDer::from(der.as_ref()))
        .collect();
    let leaf_cert_der = CertificateDer::from(leaf_der.as_ref());
    let end_entity =
        webpki::EndEntityCert::try_from(&leaf_cert_der).map_err(|e| X509Error::Malformed {
            index: 0,
            reason: e.to_string(),
        })?;
    let since_epoch = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    end_entity
        .verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            &anchors,
            &intermediates,
            UnixTime::since_unix_epoch(since_epoch),
            usage.webpki(),
            None,
            None,
        )
        .map_err(|e| match e {
            webpki::Error::CertExpired { .. } => X509Error::Expired,
            webpki::Error::CertNotValidYet { .. } => X509Error::NotYetValid,
            // A name-matching issuer whose key did not sign the chain is no authority either.
            webpki::Error::UnknownIssuer | webpki::Error::InvalidSignatureForPublicKey => {
                X509Error::UnknownAuthority(trust_domain)
            }
            other => X509Error::PathValidation(other.to_string()),
        })?;

    Ok(VerifiedSvid {
        spiffe_id,
        not_after: system_time(&leaf.validity().not_after),
    })
}

/// Reads the SPIFFE ID of a certificate: its one URI SAN. Nothing else is checked, so use this
/// only on a certificate that was already verified (e.g. a TLS peer's leaf after the handshake).
///
/// # Errors
/// [`X509Error::Malformed`], [`X509Error::NoUriSan`], [`X509Error::MultipleUriSans`] or
/// [`X509Error::InvalidSpiffeId`].
pub fn spiffe_id_of(cert_der: &[u8]) -> Result<SpiffeId, X509Error> {
    uri_san_id(&parse_cert(cert_der, 0)?, 0)
}

/// Settings for minting a CA certificate of a trust domain.
#[derive(Debug, Clone)]
pub struct CaParams {
    trust_domain: TrustDomain,
    ttl: Duration,
    path_len: Option<u8>,
    common_name: Option<String>,
    issued_at: Option<SystemTime>,
}

impl CaParams {
    /// A CA for `trust_domain`, valid for [`DEFAULT_CA_TTL`], without pathLenConstraint or CN.
    pub fn new(trust_domain: TrustDomain) -> Self {
        Self {
            trust_domain,
            ttl: DEFAULT_CA_TTL,
            path_len: None,
            common_name: None,
            issued_at: None,
        }
    }

    /// Sets the moment of minting that the validity period counts from (default: the clock
    /// when the CA is minted), so a caller keeping its own schedule gets exactly
    /// `issued_at + ttl` as `notAfter`.
    #[must_use]
    pub fn with_issued_at(mut self, issued_at: SystemTime) -> Self {
        self.issued_at = Some(issued_at);
        self
    }

    /// Sets the validity period, counted from the moment of minting.
    #[must_use]
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// Sets basicConstraints `pathLenConstraint`: how many CAs may follow below this one.
    #[must_use]
    pub fn with_path_len(mut self, path_len: u8) -> Self {
        self.path_len = Some(path_len);
        self
    }

    /// Adds a common name (`CN`) to the subject, e.g. for operators reading the certificate.
    #[must_use]
    pub fn with_common_name(mut self, common_name: impl Into<String>) -> Self {
        self.common_name = Some(common_name.into());
        self
    }

    /// The trust domain.
    pub fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }

    fn issued_at(&self) -> SystemTime {
        self.issued_at.unwrap_or_else(SystemTime::now)
    }

    fn certificate_params(
        &self,
        now: SystemTime,
        not_after_cap: Option<SystemTime>,
    ) -> Result<CertificateParams, X509Error> {
        let (not_before, not_after) = validity(now, self.ttl, not_after_cap)?;
        let serial = random_serial()?;
        let mut subject = DistinguishedName::new();
        subject.push(DnType::OrganizationName, ORGANIZATION);
        subject.push(
            DnType::CustomDnType(OID_DN_SERIAL_NUMBER.to_vec()),
            DnValue::PrintableString(
                PrintableString::try_from(hex(serial.as_ref())).map_err(mint_error)?,
            ),
        );
        if let Some(cn) = &self.common_name {
            subject.push(DnType::CommonName, cn.as_str());
        }
        let mut params = CertificateParams::default();
        params.not_before = not_before;
        params.not_after = not_after;
        params.serial_number = Some(serial);
        params.distinguished_name = subject;
        params.subject_alt_names = vec![SanType::URI(ia5(self.trust_domain.id_string())?)];
        params.is_ca = IsCa::Ca(self.path_len.map_or(
            BasicConstraints::Unconstrained,
            BasicConstraints::Constrained,
        ));
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
        ];
        Ok(params)
    }
}

/// A CA that signs X509-SVIDs of one trust domain: its certificate chain and private key.
///
/// The chain starts with the CA's own certificate, followed by the certificates above it (for a
/// CA under an upstream CA), possibly ending with a self-signed root. The CA certificate must
/// name its trust domain as its one URI SAN (`spiffe://<trust domain>`).
#[derive(Clone)]
pub struct CaSigner {
    chain: Vec<Vec<u8>>,
    key: PrivateKey,
    /// The CA certificate's name and key identifier with the parsed signing key, built once:
    /// parsing the PKCS#8 key (which checks the key pair) costs as much as a signature.
    issuer: Arc<Issuer<'static, KeyPair>>,
    trust_domain: TrustDomain,
    not_after: SystemTime,
    /// How many certificates of `chain` go out with a minted leaf: all but a self-signed root.
    presented: usize,
}

impl CaSigner {
    /// Wraps an existing CA, e.g. loaded from disk, after checking it.
    ///
    /// # Errors
    /// [`X509Error`] when the chain is empty or malformed, a certificate of it is not a CA with
    /// `keyCertSign`, the CA certificate does not carry `spiffe://<trust domain>` as its one URI
    /// SAN, or `key` is not the CA certificate's key.
    pub fn new(chain: Vec<Vec<u8>>, key: PrivateKey) -> Result<Self, X509Error> {
        let ca_der = chain.first().ok_or(X509Error::EmptyChain)?;
        let ca = parse_cert(ca_der, 0)?;
        check_signing_certs(chain.iter().map(Vec::as_slice), 0)?;
        let id = uri_san_id(&ca, 0)?;
        if !id.is_trust_domain_id() {
            return Err(X509Error::CaIdWithPath(id));
        }
        check_key_matches(&ca, &key)?;
        let not_after = system_time(&ca.validity().not_after);
        let mut presented = chain.len();
        if let Some(last) = chain.last() {
            let last = parse_cert(last, chain.len() - 1)?;
            if last.subject().as_raw() == last.issuer().as_raw() {
                presented -= 1;
            }
        }
        let issuer = Issuer::from_ca_cert_der(
            &CertificateDer::from(ca_der.as_slice()),
            key.rcgen_key_pair()?,
        )
        .map_err(mint_error)?;
        check_issuer_name(&issuer, &ca)?;
        Ok(Self {
            trust_domain: id.trust_domain(),
            issuer: Arc::new(issuer),
            chain,
            key,
            not_after,
            presented,
        })
    }

    /// Mints a self-signed root CA with `key`.
    ///
    /// # Errors
    /// [`X509Error::InvalidTtl`] for a zero or huge TTL; [`X509Error::Key`] or
    /// [`X509Error::Mint`] if the key cannot sign.
    pub fn self_signed(params: &CaParams, key: PrivateKey) -> Result<Self, X509Error> {
        let cert_params = params.certificate_params(params.issued_at(), None)?;
        let der = cert_params
            .self_signed(&key.rcgen_key_pair()?)
            .map_err(mint_error)?
            .der()
            .to_vec();
        Self::new(vec![der], key)
    }

    /// Mints an intermediate CA for `key`, signed by a parent CA: an upstream CA the hub runs
    /// under, or another `CaSigner` (pass its [`chain`](Self::chain) and [`key`](Self::key)).
    /// The new CA's chain is its certificate followed by `parent_chain`; its `notAfter` never
    /// passes the parent's.
    ///
    /// The parent need not be a SPIFFE CA; when it carries a SPIFFE ID, that ID must be in
    /// `params`' trust domain.
    ///
    /// # Errors
    /// [`X509Error`] when the parent chain is not a CA chain, `parent_key` does not match it,
    /// the parent has a SPIFFE ID of another trust domain, the parent is expired, or minting
    /// fails.
    pub fn intermediate(
        params: &CaParams,
        key: PrivateKey,
        parent_chain: &[Vec<u8>],
        parent_key: &PrivateKey,
    ) -> Result<Self, X509Error> {
        let parent_der = parent_chain.first().ok_or(X509Error::EmptyChain)?;
        let parent = parse_cert(parent_der, 0)?;
        check_signing_certs(parent_chain.iter().map(Vec::as_slice), 0)?;
        check_key_matches(&parent, parent_key)?;
        if let Ok(parent_id) = uri_san_id(&parent, 0)
            && !parent_id.is_member_of(&params.trust_domain)
        {
            return Err(X509Error::ForeignTrustDomain {
                id: params.trust_domain.id(),
                ca_trust_domain: parent_id.trust_domain(),
            });
        }
        let mut cert_params = params.certificate_params(
            params.issued_at(),
            Some(system_time(&parent.validity().not_after)),
        )?;
        cert_params.use_authority_key_identifier_extension = true;
        let der = sign(&cert_params, &key.rcgen_key_pair()?, parent_der, parent_key)?;
        let mut chain = Vec::with_capacity(parent_chain.len() + 1);
        chain.push(der);
        chain.extend_from_slice(parent_chain);
        Self::new(chain, key)
    }

    /// The CA certificate (DER).
    pub fn certificate(&self) -> &[u8] {
        &self.chain[0]
    }

    /// The CA certificate followed by the certificates above it (DER).
    pub fn chain(&self) -> &[Vec<u8>] {
        &self.chain
    }

    /// The self-signed root at the top of the chain, if the chain ends with one. This is the
    /// certificate to publish as an X.509 authority of the trust domain's bundle.
    pub fn root(&self) -> Option<&[u8]> {
        self.chain[self.presented..].first().map(Vec::as_slice)
    }

    /// The root as a bundle authority; see [`root`](Self::root).
    pub fn root_authority(&self) -> Option<X509Authority> {
        self.root()
            .map(|der| X509Authority::from_der_unchecked(der.to_vec()))
    }

    /// The CA's private key.
    pub fn key(&self) -> &PrivateKey {
        &self.key
    }

    /// The CA's SPIFFE ID, `spiffe://<trust domain>`.
    pub fn spiffe_id(&self) -> SpiffeId {
        self.trust_domain.id()
    }

    /// The trust domain this CA signs for.
    pub fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }

    /// When the CA certificate expires; no SVID it mints outlives this.
    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }

    /// Mints a leaf X509-SVID for `spiffe_id` certifying `public_key_spki_der` (a DER
    /// SubjectPublicKeyInfo; the private key never leaves its owner).
    ///
    /// The leaf has an empty subject and a critical SAN holding the URI SAN and `dns_names`,
    /// critical basicConstraints `cA` = false, critical keyUsage `digitalSignature`,
    /// extKeyUsage serverAuth + clientAuth, a random serial, `notBefore` backdated by
    /// [`BACKDATE`], and `notAfter` = now + `ttl`, clamped to the CA's `notAfter`.
    ///
    /// Returns the chain to present, leaf first, followed by the CA's chain without its
    /// self-signed root (peers hold the root in their bundle).
    ///
    /// # Errors
    /// [`X509Error::LeafIdWithoutPath`] for `spiffe://td`; [`X509Error::ForeignTrustDomain`] for
    /// an ID outside the CA's trust domain; [`X509Error::BadPublicKey`],
    /// [`X509Error::InvalidDnsName`], [`X509Error::InvalidTtl`], [`X509Error::CaExpired`], or
    /// [`X509Error::Mint`].
    pub fn mint_x509_svid(
        &self,
        spiffe_id: &SpiffeId,
        public_key_spki_der: &[u8],
        ttl: Duration,
        dns_names: &[String],
    ) -> Result<Vec<Vec<u8>>, X509Error> {
        if spiffe_id.is_trust_domain_id() {
            return Err(X509Error::LeafIdWithoutPath);
        }
        if !spiffe_id.is_member_of(&self.trust_domain) {
            return Err(X509Error::ForeignTrustDomain {
                id: spiffe_id.clone(),
                ca_trust_domain: self.trust_domain.clone(),
            });
        }
        let public_key = parse_public_key(public_key_spki_der)?;

        let mut sans = vec![SanType::URI(ia5(spiffe_id.as_str().to_owned())?)];
        for name in dns_names {
            rustls_pki_types::DnsName::try_from(name.as_str())
                .map_err(|_| X509Error::InvalidDnsName(name.clone()))?;
            sans.push(SanType::DnsName(ia5(name.clone())?));
        }
        let (not_before, not_after) = validity(SystemTime::now(), ttl, Some(self.not_after))?;

        let mut params = CertificateParams::default();
        params.not_before = not_before;
        params.not_after = not_after;
        params.serial_number = Some(random_serial()?);
        params.distinguished_name = DistinguishedName::new();
        params.subject_alt_names = sans;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        let leaf = params
            .signed_by(&public_key, &self.issuer)
            .map_err(mint_error)?
            .der()
            .to_vec();

        let mut chain = Vec::with_capacity(self.presented + 1);
        chain.push(leaf);
        chain.extend_from_slice(&self.chain[..self.presented]);
        Ok(chain)
    }
}

impl fmt::Debug for CaSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CaSigner")
            .field("trust_domain", &self.trust_domain)
            .field("chain_len", &self.chain.len())
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

/// An X509-SVID held by its owner: the chain (leaf first, DER) and the leaf's private key.
#[derive(Clone)]
pub struct X509Svid {
    spiffe_id: SpiffeId,
    chain: Vec<Vec<u8>>,
    key: PrivateKey,
    not_after: SystemTime,
}

impl X509Svid {
    /// Builds an SVID after the own-SVID sanity checks: the leaf names a SPIFFE ID with a
    /// non-root path, is not a CA, has `digitalSignature` and neither `keyCertSign` nor
    /// `cRLSign`; every intermediate is a CA with `keyCertSign`; `key` is the leaf's key.
    /// Signatures are not checked here; peers do that with [`verify_x509_svid`].
    ///
    /// # Errors
    /// The [`X509Error`] of the first failed check, e.g. [`X509Error::KeyMismatch`].
    pub fn new_checked(chain: Vec<Vec<u8>>, key: PrivateKey) -> Result<Self, X509Error> {
        let leaf_der = chain.first().ok_or(X509Error::EmptyChain)?;
        let leaf = parse_cert(leaf_der, 0)?;
        let spiffe_id = check_leaf(&leaf)?;
        check_signing_certs(chain[1..].iter().map(Vec::as_slice), 1)?;
        check_key_matches(&leaf, &key)?;
        let not_after = system_time(&leaf.validity().not_after);
        Ok(Self {
            spiffe_id,
            chain,
            key,
            not_after,
        })
    }

    /// The SPIFFE ID.
    pub fn spiffe_id(&self) -> &SpiffeId {
        &self.spiffe_id
    }

    /// The chain, leaf first (DER).
    pub fn chain(&self) -> &[Vec<u8>] {
        &self.chain
    }

    /// The leaf certificate (DER).
    pub fn leaf(&self) -> &[u8] {
        &self.chain[0]
    }

    /// The leaf's private key.
    pub fn key(&self) -> &PrivateKey {
        &self.key
    }

    /// When the leaf expires.
    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }

    /// The chain as PEM `CERTIFICATE` blocks, leaf first.
    pub fn chain_pem(&self) -> String {
        certificates_pem(self.chain.iter().map(Vec::as_slice))
    }
}

impl fmt::Debug for X509Svid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("X509Svid")
            .field("spiffe_id", &self.spiffe_id)
            .field("chain_len", &self.chain.len())
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

/// Signs `params` for `subject_key` with the CA `issuer_der`/`issuer_key`.
/// Signs `params` for `subject_key` with a CA given by its certificate and key (for one-off
/// certificates such as intermediate CAs; [`CaSigner`] keeps its issuer instead).
fn sign(
    params: &CertificateParams,
    subject_key: &impl PublicKeyData,
    issuer_der: &[u8],
    issuer_key: &PrivateKey,
) -> Result<Vec<u8>, X509Error> {
    let issuer = Issuer::from_ca_cert_der(
        &CertificateDer::from(issuer_der),
        issuer_key.rcgen_key_pair()?,
    )
    .map_err(mint_error)?;
    check_issuer_name(&issuer, &parse_cert(issuer_der, 0)?)?;
    Ok(params
        .signed_by(subject_key, &issuer)
        .map_err(mint_error)?
        .der()
        .to_vec())
}

/// Checks that rcgen reproduces `ca`'s subject byte for byte as the issuer name of what
/// `issuer` signs (it re-encodes the name; path building needs an exact match), by signing a
/// throwaway certificate. rcgen's encoding depends on the name alone, so one check per issuer
/// covers every certificate it signs.
fn check_issuer_name(
    issuer: &Issuer<'_, KeyPair>,
    ca: &X509Certificate<'_>,
) -> Result<(), X509Error> {
    let probe = CertificateParams::default()
        .signed_by(issuer.key(), issuer)
        .map_err(mint_error)?;
    if parse_cert(probe.der(), 0)?.issuer().as_raw() == ca.subject().as_raw() {
        Ok(())
    } else {
        Err(X509Error::Mint(
            "the CA's subject name cannot be reproduced exactly (multi-valued or repeated attributes); use a CA with a simple subject".into(),
        ))
    }
}

fn parse_cert(der: &[u8], index: usize) -> Result<X509Certificate<'_>, X509Error> {
    match x509_parser::parse_x509_certificate(der) {
        Ok(([], cert)) => Ok(cert),
        Ok(_) => Err(X509Error::Malformed {
            index,
            reason: "trailing bytes after the certificate".into(),
        }),
        Err(e) => Err(X509Error::Malformed {
            index,
            reason: e.to_string(),
        }),
    }
}

fn malformed(index: usize) -> impl Fn(x509_parser::error::X509Error) -> X509Error {
    move |e| X509Error::Malformed {
        index,
        reason: e.to_string(),
    }
}

/// The one URI SAN of a certificate, parsed as a SPIFFE ID.
fn uri_san_id(cert: &X509Certificate<'_>, index: usize) -> Result<SpiffeId, X509Error> {
    let san = cert.subject_alternative_name().map_err(malformed(index))?;
    let mut uris = san
        .iter()
        .flat_map(|ext| ext.value.general_names.iter())
        .filter_map(|name| match name {
            GeneralName::URI(uri) => Some(*uri),
            _ => None,
        });
    let uri = uris.next().ok_or(X509Error::NoUriSan)?;
    if uris.next().is_some() {
        return Err(X509Error::MultipleUriSans);
    }
    SpiffeId::parse(uri).map_err(|source| X509Error::InvalidSpiffeId {
        uri: uri.to_owned(),
        source,
    })
}

fn is_ca(cert: &X509Certificate<'_>, index: usize) -> Result<bool, X509Error> {
    Ok(cert
        .basic_constraints()
        .map_err(malformed(index))?
        .is_some_and(|bc| bc.value.ca))
}

fn key_usage(cert: &X509Certificate<'_>, index: usize) -> Result<Option<KeyUsage>, X509Error> {
    Ok(cert
        .key_usage()
        .map_err(malformed(index))?
        .map(|ext| *ext.value))
}

/// The leaf rules shared by peer verification and own-SVID checks; returns the SPIFFE ID.
fn check_leaf(leaf: &X509Certificate<'_>) -> Result<SpiffeId, X509Error> {
    let id = uri_san_id(leaf, 0)?;
    if id.is_trust_domain_id() {
        return Err(X509Error::LeafIdWithoutPath);
    }
    if is_ca(leaf, 0)? {
        return Err(X509Error::LeafIsCa);
    }
    let usage = key_usage(leaf, 0)?;
    if usage.is_some_and(|u| u.key_cert_sign()) {
        return Err(X509Error::LeafKeyCertSign);
    }
    if usage.is_some_and(|u| u.crl_sign()) {
        return Err(X509Error::LeafCrlSign);
    }
    if !usage.is_some_and(|u| u.digital_signature()) {
        return Err(X509Error::LeafNoDigitalSignature);
    }
    Ok(id)
}

/// Every certificate must be a CA with `keyCertSign`; `first_index` numbers them in errors.
fn check_signing_certs<'a>(
    certs: impl Iterator<Item = &'a [u8]>,
    first_index: usize,
) -> Result<(), X509Error> {
    for (index, der) in (first_index..).zip(certs) {
        let cert = parse_cert(der, index)?;
        if !is_ca(&cert, index)? {
            return Err(X509Error::SigningCertNotCa { index });
        }
        if !key_usage(&cert, index)?.is_some_and(|u| u.key_cert_sign()) {
            return Err(X509Error::SigningCertNoKeyCertSign { index });
        }
    }
    Ok(())
}

/// Parses the SubjectPublicKeyInfo to certify, refusing anything the crypto backend would not
/// accept as a signing key (unsupported types, off-curve points, short RSA moduli).
fn parse_public_key(spki_der: &[u8]) -> Result<rcgen::SubjectPublicKeyInfo, X509Error> {
    use aws_lc_rs::signature as sig;
    let algorithm: &'static dyn sig::VerificationAlgorithm =
        match PublicKey::from_spki_der(spki_der)
            .map_err(|e| X509Error::BadPublicKey(e.to_string()))?
        {
            PublicKey::Ec { curve, .. } => match curve {
                EcCurve::P256 => &sig::ECDSA_P256_SHA256_ASN1,
                EcCurve::P384 => &sig::ECDSA_P384_SHA384_ASN1,
                EcCurve::P521 => &sig::ECDSA_P521_SHA512_ASN1,
            },
            PublicKey::Rsa { .. } => &sig::RSA_PKCS1_2048_8192_SHA256,
        };
    sig::ParsedPublicKey::new(algorithm, spki_der)
        .map_err(|e| X509Error::BadPublicKey(format!("the key is not usable: {e}")))?;
    rcgen::SubjectPublicKeyInfo::from_der(spki_der)
        .map_err(|e| X509Error::BadPublicKey(e.to_string()))
}

fn check_key_matches(cert: &X509Certificate<'_>, key: &PrivateKey) -> Result<(), X509Error> {
    let in_cert = PublicKey::from_spki(cert.public_key()).map_err(|_| X509Error::KeyMismatch)?;
    if in_cert == PublicKey::from_spki_der(&key.public_key_der()?)? {
        Ok(())
    } else {
        Err(X509Error::KeyMismatch)
    }
}

/// `notBefore` (backdated) and `notAfter` (now + ttl, clamped to `cap`) in whole seconds.
fn validity(
    now: SystemTime,
    ttl: Duration,
    cap: Option<SystemTime>,
) -> Result<(OffsetDateTime, OffsetDateTime), X509Error> {
    if ttl.is_zero() {
        return Err(X509Error::InvalidTtl(ttl));
    }
    let wanted = now.checked_add(ttl).ok_or(X509Error::InvalidTtl(ttl))?;
    let not_after = cap.map_or(wanted, |cap| wanted.min(cap));
    if not_after <= now {
        return Err(X509Error::CaExpired);
    }
    let not_before = now.checked_sub(BACKDATE).unwrap_or(UNIX_EPOCH);
    let to_datetime = |t: SystemTime| {
        let secs = t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        i64::try_from(secs)
            .ok()
            .and_then(|secs| OffsetDateTime::from_unix_timestamp(secs).ok())
            .filter(|t| t.year() < 10000)
            .ok_or(X509Error::InvalidTtl(ttl))
    };
    Ok((to_datetime(not_before)?, to_datetime(not_after)?))
}

fn system_time(t: &ASN1Time) -> SystemTime {
    let secs = t.timestamp();
    match u64::try_from(secs) {
        Ok(secs) => UNIX_EPOCH + Duration::from_secs(secs),
        Err(_) => UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs()),
    }
}

/// A random positive 128-bit serial number with its top byte non-zero (always 16 bytes).
fn random_serial() -> Result<SerialNumber, X509Error> {
    let mut bytes = [0u8; 16];
    aws_lc_rs::rand::fill(&mut bytes)
        .map_err(|_| X509Error::Mint("the random number generator failed".into()))?;
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    Ok(SerialNumber::from_slice(&bytes))
}

fn ia5(s: String) -> Result<Ia5String, X509Error> {
    Ia5String::try_from(s).map_err(mint_error)
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut out, b| {
        let _ = write!(out, "{b:02x}");
        out
    })
}

#[cfg(test)]
mod tests;
