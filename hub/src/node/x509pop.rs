//! x509pop node attestation: the node presents a certificate chain from an existing PKI and
//! proves it holds the leaf's key by signing a random challenge bound to the agent key it
//! asks the hub to certify ([`x509pop::challenge_message`]).

use std::io;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use aws_lc_rs::signature::{UnparsedPublicKey, VerificationAlgorithm};
use fedhub_core::{PublicKey, SpiffeId, TrustDomain, x509pop};
use fedhub_registry::Selector;
use rustls::pki_types::{CertificateDer, UnixTime};
use tonic::Status;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer as _, X509Certificate};

/// The most certificates accepted in a node's chain.
const MAX_CHAIN_LEN: usize = 8;
/// The selector type of x509pop node selectors.
const SELECTOR_TYPE: &str = "x509pop";
/// How many hex characters of the leaf's SHA-256 name the agent.
const AGENT_ID_HASH_CHARS: usize = 40;

/// The CAs node certificates must chain to (`node_attestation.x509pop.ca_bundle_file`).
#[derive(Debug)]
pub(super) struct X509PopVerifier {
    cas: Vec<CertificateDer<'static>>,
    path: PathBuf,
}

impl X509PopVerifier {
    /// Reads the PEM CA bundle at `path`.
    ///
    /// # Errors
    /// An [`io::Error`] naming the file when it is unreadable, holds no certificate, or holds a
    /// certificate that cannot serve as a trust anchor.
    pub(super) fn load(path: &Path) -> io::Result<Self> {
        let invalid = |reason: String| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "node_attestation.x509pop.ca_bundle_file {}: {reason}",
                    path.display()
                ),
            )
        };
        let text = std::fs::read(path).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "node_attestation.x509pop.ca_bundle_file {}: {e}",
                    path.display()
                ),
            )
        })?;
        let blocks = pem::parse_many(&text).map_err(|e| invalid(format!("not PEM: {e}")))?;
        let cas: Vec<CertificateDer<'static>> = blocks
            .into_iter()
            .filter(|block| block.tag() == "CERTIFICATE")
            .map(|block| CertificateDer::from(block.into_contents()))
            .collect();
        if cas.is_empty() {
            return Err(invalid(
                "holds no CERTIFICATE block; give the PEM CA certificates of the node PKI".into(),
            ));
        }
        for (index, ca) in cas.iter().enumerate() {
            webpki::anchor_from_trusted_cert(ca)
                .map_err(|e| invalid(format!("certificate {index} is unusable as a CA: {e:?}")))?;
        }
        Ok(Self {
            cas,
            path: path.to_owned(),
        })
    }

    /// Verifies a node's chain (leaf first) at `now`: path to one of the CAs, validity, and
    /// extKeyUsage clientAuth when the leaf has an extKeyUsage.
    pub(super) fn verify(&self, chain: &[Vec<u8>], now: SystemTime) -> Result<NodeCert, Status> {
        let (leaf, rest) = chain.split_first().ok_or_else(|| {
            Status::invalid_argument("x509pop.cert_chain is empty: send the node certificate first")
        })?;
        if chain.len() > MAX_CHAIN_LEN {
            return Err(Status::invalid_argument(format!(
                "x509pop.cert_chain has {} certificates; at most {MAX_CHAIN_LEN} are accepted",
                chain.len()
            )));
        }
        // Parsed when loaded, so every CA is an anchor and the indices match `self.cas`.
        let anchors: Vec<_> = self
            .cas
            .iter()
            .filter_map(|ca| webpki::anchor_from_trusted_cert(ca).ok())
            .collect();
        let leaf_der = CertificateDer::from(leaf.as_slice());
        let end_entity = webpki::EndEntityCert::try_from(&leaf_der).map_err(|e| {
            Status::invalid_argument(format!("the node certificate is malformed: {e}"))
        })?;
        let intermediates: Vec<CertificateDer<'_>> = rest
            .iter()
            .map(|der| CertificateDer::from(der.as_slice()))
            .collect();
        let since_epoch = now.duration_since(UNIX_EPOCH).unwrap_or_default();
        let path = end_entity
            .verify_for_usage(
                webpki::ALL_VERIFICATION_ALGS,
                &anchors,
                &intermediates,
                UnixTime::since_unix_epoch(since_epoch),
                webpki::KeyUsage::client_auth(),
                None,
                None,
            )
            .map_err(|e| self.refusal(&e))?;
        // The issuing CA: the first intermediate, or else the trust anchor itself.
        let issuer: Vec<u8> = if let Some(intermediate) = path.intermediate_certificates().next() {
            intermediate.der().to_vec()
        } else {
            let anchor = path.anchor();
            anchors
                .iter()
                .position(|candidate| std::ptr::eq(candidate, anchor))
                .and_then(|index| self.cas.get(index))
                .map(|ca| ca.to_vec())
                .ok_or_else(|| Status::internal("the verified trust anchor is unknown"))?
        };
        NodeCert::parse(leaf, &issuer)
    }

    fn refusal(&self, error: &webpki::Error) -> Status {
        let reason = match error {
            webpki::Error::UnknownIssuer | webpki::Error::InvalidSignatureForPublicKey => format!(
                "it does not chain to a CA of node_attestation.x509pop.ca_bundle_file ({})",
                self.path.display()
            ),
            webpki::Error::CertExpired { .. } => "it has expired".into(),
            webpki::Error::CertNotValidYet { .. } => {
                "it is not valid yet (check the node's and the hub's clocks)".into()
            }
            webpki::Error::RequiredEkuNotFoundContext(_) => {
                "its extKeyUsage does not allow clientAuth".into()
            }
            other => other.to_string(),
        };
        tracing::info!(%reason, "x509pop node certificate refused");
        Status::permission_denied(format!("x509pop node certificate refused: {reason}"))
    }
}

/// A verified node certificate.
#[derive(Debug)]
pub(super) struct NodeCert {
    leaf_sha256: String,
    issuer_sha256: String,
    common_name: Option<String>,
    dns_names: Vec<String>,
    algorithm: &'static dyn VerificationAlgorithm,
    public_key: Vec<u8>,
}

impl NodeCert {
    fn parse(leaf: &[u8], issuer: &[u8]) -> Result<Self, Status> {
        let malformed =
            |e: &dyn std::fmt::Display| Status::invalid_argument(format!("node certificate: {e}"));
        let (_, cert) = X509Certificate::from_der(leaf).map_err(|e| malformed(&e))?;
        let common_name = cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .filter(|cn| !cn.is_empty())
            .map(str::to_owned);
        let dns_names = cert
            .subject_alternative_name()
            .map_err(|e| malformed(&e))?
            .map(|san| {
                san.value
                    .general_names
                    .iter()
                    .filter_map(|name| match name {
                        GeneralName::DNSName(dns) => Some((*dns).to_owned()),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        let spki = cert.public_key();
        let algorithm = PublicKey::from_spki(spki)
            .map_err(|e| malformed(&e))?
            .verification_algorithm();
        Ok(Self {
            leaf_sha256: super::sha256_hex(leaf),
            issuer_sha256: super::sha256_hex(issuer),
            common_name,
            dns_names,
            algorithm,
            public_key: spki.subject_public_key.data.to_vec(),
        })
    }

    /// `spiffe://<td>/fedhub/agent/x509pop/<first 40 hex chars of the leaf's SHA-256>`.
    pub(super) fn agent_id(&self, trust_domain: &TrustDomain) -> Result<SpiffeId, Status> {
        let path = format!(
            "{}x509pop/{}",
            super::AGENT_ID_PREFIX,
            &self.leaf_sha256[..AGENT_ID_HASH_CHARS]
        );
        trust_domain
            .spiffe_id(&path)
            .map_err(|e| Status::internal(format!("agent ID: {e}")))
    }

    /// `x509pop:subject:cn:<CN>`, `x509pop:ca:fingerprint:<SHA-256 hex of the issuing CA>` and
    /// `x509pop:san:dns:<name>` per DNS SAN. Values a selector cannot hold (control
    /// characters, too long) are left out.
    pub(super) fn selectors(&self) -> Vec<Selector> {
        let cn = self.common_name.iter().map(|cn| format!("subject:cn:{cn}"));
        let ca = std::iter::once(format!("ca:fingerprint:{}", self.issuer_sha256));
        let dns = self.dns_names.iter().map(|name| format!("san:dns:{name}"));
        cn.chain(ca)
            .chain(dns)
            .filter_map(|value| match Selector::new(SELECTOR_TYPE, &value) {
                Ok(selector) => Some(selector),
                Err(error) => {
                    tracing::info!(%error, "x509pop node selector left out");
                    None
                }
            })
            .collect()
    }

    /// Checks the node's signature over the x509pop message binding `challenge` to
    /// `agent_public_key` ([`x509pop::challenge_message`]) with the leaf's public key (ECDSA
    /// with the curve's hash, ASN.1 DER signature; RSA PKCS#1 v1.5 with SHA-256).
    /// `agent_public_key` must be the `agent_public_key` of the same attestation, so that a
    /// challenge relayed to a node by a man in the middle cannot certify the relay's key.
    ///
    /// A signature over the bare challenge (agents before the binding) is refused with a
    /// message saying so.
    pub(super) fn verify_challenge(
        &self,
        challenge: &[u8; x509pop::CHALLENGE_LEN],
        agent_public_key: &[u8],
        response: &[u8],
    ) -> Result<(), Status> {
        let key = UnparsedPublicKey::new(self.algorithm, &self.public_key);
        let message = x509pop::challenge_message(challenge, agent_public_key);
        if key.verify(&message, response).is_ok() {
            return Ok(());
        }
        if key.verify(challenge, response).is_ok() {
            tracing::info!("x509pop challenge response over the bare challenge refused");
            return Err(Status::permission_denied(
                "x509pop challenge response signs the bare challenge, which this hub refuses: \
                 the node key must sign the challenge bound to this attestation's \
                 agent_public_key (\"fedhub x509pop v1\" NUL, the challenge, the SHA-256 of \
                 agent_public_key); upgrade the agent",
            ));
        }
        tracing::info!("x509pop challenge response refused");
        Err(Status::permission_denied(
            "x509pop challenge response does not verify with the node certificate's key over \
             the challenge bound to this attestation's agent_public_key (sign \"fedhub x509pop \
             v1\" NUL, the challenge, the SHA-256 of agent_public_key with the node key: ECDSA \
             with the curve's hash, or RSA PKCS#1 v1.5 with SHA-256)",
        ))
    }
}

#[cfg(test)]
mod tests {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose, SignatureAlgorithm, SigningKey as _,
    };

    use super::*;

    struct Pki {
        verifier: X509PopVerifier,
        issuer: Issuer<'static, KeyPair>,
        _dir: tempfile::TempDir,
    }

    fn pki() -> Pki {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "node CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        let cert = params.self_signed(&key).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, cert.pem()).unwrap();
        Pki {
            verifier: X509PopVerifier::load(&path).unwrap(),
            issuer: Issuer::new(params, key),
            _dir: dir,
        }
    }

    fn node(
        pki: &Pki,
        alg: &'static SignatureAlgorithm,
        edit: impl FnOnce(&mut CertificateParams),
    ) -> (Vec<u8>, KeyPair) {
        let key = KeyPair::generate_for(alg).unwrap();
        let mut params = CertificateParams::new(vec!["n.test".to_owned()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, "n");
        edit(&mut params);
        let cert = params.signed_by(&key, &pki.issuer).unwrap();
        (cert.der().to_vec(), key)
    }

    /// A DER SubjectPublicKeyInfo for an agent key, as `AttestStart.agent_public_key` carries.
    fn agent_spki() -> Vec<u8> {
        fedhub_core::PrivateKey::generate(fedhub_core::KeyType::EcP256)
            .unwrap()
            .public_key_der()
            .unwrap()
    }

    #[test]
    fn challenge_signatures_of_each_key_type_verify() {
        let pki = pki();
        let agent_key = agent_spki();
        for alg in [
            &rcgen::PKCS_ECDSA_P256_SHA256,
            &rcgen::PKCS_ECDSA_P384_SHA384,
            &rcgen::PKCS_RSA_SHA256,
        ] {
            let (leaf, key) = node(&pki, alg, |_| {});
            let cert = pki.verifier.verify(&[leaf], SystemTime::now()).unwrap();
            let challenge = [7u8; x509pop::CHALLENGE_LEN];
            let signature = key
                .sign(&x509pop::challenge_message(&challenge, &agent_key))
                .unwrap();
            cert.verify_challenge(&challenge, &agent_key, &signature)
                .unwrap_or_else(|e| panic!("{alg:?}: {e:?}"));
            let other = key
                .sign(&x509pop::challenge_message(
                    &[8u8; x509pop::CHALLENGE_LEN],
                    &agent_key,
                ))
                .unwrap();
            let error = cert
                .verify_challenge(&challenge, &agent_key, &other)
                .unwrap_err();
            assert_eq!(error.code(), tonic::Code::PermissionDenied, "{alg:?}");
            assert!(error.message().contains("does not verify"), "{error:?}");
        }
    }

    #[test]
    fn a_challenge_relayed_for_another_agent_key_is_refused() {
        // A man in the middle relays the hub's challenge to the node, which signs it bound to
        // its own agent key A; the relay submits that signature with its key B.
        let pki = pki();
        let (leaf, node_key) = node(&pki, &rcgen::PKCS_ECDSA_P256_SHA256, |_| {});
        let cert = pki.verifier.verify(&[leaf], SystemTime::now()).unwrap();
        let challenge = [42u8; x509pop::CHALLENGE_LEN];
        let (key_a, key_b) = (agent_spki(), agent_spki());
        let signed_for_a = node_key
            .sign(&x509pop::challenge_message(&challenge, &key_a))
            .unwrap();

        let error = cert
            .verify_challenge(&challenge, &key_b, &signed_for_a)
            .unwrap_err();
        assert_eq!(error.code(), tonic::Code::PermissionDenied);
        assert!(
            error
                .message()
                .contains("over the challenge bound to this attestation's agent_public_key"),
            "{error:?}"
        );
        cert.verify_challenge(&challenge, &key_a, &signed_for_a)
            .unwrap();
    }

    #[test]
    fn a_signature_over_the_bare_challenge_is_refused_with_upgrade_advice() {
        let pki = pki();
        for alg in [&rcgen::PKCS_ECDSA_P256_SHA256, &rcgen::PKCS_RSA_SHA256] {
            let (leaf, node_key) = node(&pki, alg, |_| {});
            let cert = pki.verifier.verify(&[leaf], SystemTime::now()).unwrap();
            let challenge = [9u8; x509pop::CHALLENGE_LEN];
            let bare = node_key.sign(&challenge).unwrap();
            let error = cert
                .verify_challenge(&challenge, &agent_spki(), &bare)
                .unwrap_err();
            assert_eq!(error.code(), tonic::Code::PermissionDenied, "{alg:?}");
            assert!(
                error.message().contains("signs the bare challenge"),
                "{error:?}"
            );
            assert!(error.message().contains("upgrade the agent"), "{error:?}");
        }
    }

    #[test]
    fn refuses_expired_and_server_only_certificates() {
        let pki = pki();
        let (expired, _) = node(&pki, &rcgen::PKCS_ECDSA_P256_SHA256, |p| {
            p.not_before = rcgen::date_time_ymd(2000, 1, 1);
            p.not_after = rcgen::date_time_ymd(2001, 1, 1);
        });
        let error = pki
            .verifier
            .verify(&[expired], SystemTime::now())
            .unwrap_err();
        assert!(error.message().contains("expired"), "{error:?}");

        let (server_only, _) = node(&pki, &rcgen::PKCS_ECDSA_P256_SHA256, |p| {
            p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        });
        let error = pki
            .verifier
            .verify(&[server_only], SystemTime::now())
            .unwrap_err();
        assert!(error.message().contains("clientAuth"), "{error:?}");

        let error = pki.verifier.verify(&[], SystemTime::now()).unwrap_err();
        assert_eq!(error.code(), tonic::Code::InvalidArgument);
    }

    #[test]
    fn a_ca_file_without_certificates_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("empty.pem");
        std::fs::write(&path, "no PEM here\n").unwrap();
        let error = X509PopVerifier::load(&path).unwrap_err();
        assert!(error.to_string().contains("empty.pem"), "{error}");
        assert!(error.to_string().contains("no CERTIFICATE"), "{error}");
        let missing = X509PopVerifier::load(&dir.path().join("missing.pem")).unwrap_err();
        assert_eq!(missing.kind(), io::ErrorKind::NotFound);
    }
}
