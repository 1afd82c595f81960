//! Node attestation, the agent's side: a join token, or x509pop (a node certificate and its
//! key's signature over the hub's challenge bound to the new agent key).

use std::path::Path;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self, EcdsaKeyPair, RsaKeyPair};
use fedhub_core::{KeyType, PrivateKey, x509pop};
use fedhub_proto::node::attest_request::Step as RequestStep;
use fedhub_proto::node::attest_response::Step as ResponseStep;
use fedhub_proto::node::attest_start::Method;
use fedhub_proto::node::{AgentSvid, AttestRequest, AttestStart, X509PopStart};
use futures::SinkExt as _;
use tonic::Status;
use x509_parser::prelude::{FromDer as _, X509Certificate};
use x509_parser::x509::SubjectPublicKeyInfo;
use zeroize::Zeroizing;

use super::NodeClient;
use crate::config::{JoinToken, NodeAttestation};

/// What the agent attests with, loaded and checked.
#[derive(Debug)]
pub(crate) enum NodeCredentials {
    /// A join token.
    JoinToken(JoinToken),
    /// A node certificate chain (DER, leaf first) and the leaf's key.
    X509Pop {
        chain: Vec<Vec<u8>>,
        key: PrivateKey,
    },
}

/// A credentials problem, naming the config key.
#[derive(Debug, thiserror::Error)]
#[error("{key}: {message}")]
pub(crate) struct CredentialsError {
    pub(crate) key: &'static str,
    pub(crate) message: String,
}

impl NodeCredentials {
    /// Loads the configured method: for x509pop, reads the certificate chain and the key and
    /// checks that they belong together.
    pub(crate) fn load(config: &NodeAttestation) -> Result<Self, CredentialsError> {
        match config {
            NodeAttestation::JoinToken(token) => Ok(Self::JoinToken(token.clone())),
            NodeAttestation::X509Pop {
                cert_file,
                key_file,
            } => {
                let chain = read_chain(cert_file)?;
                let key = read_key(key_file)?;
                check_key_matches(&chain[0], &key)?;
                Ok(Self::X509Pop { chain, key })
            }
        }
    }

    /// The method's name in messages.
    pub(crate) fn method(&self) -> &'static str {
        match self {
            Self::JoinToken(_) => "join token",
            Self::X509Pop { .. } => "x509pop node certificate",
        }
    }

    /// What the operator can do when the hub refuses this method.
    pub(crate) fn fix(&self) -> &'static str {
        match self {
            Self::JoinToken(_) => {
                "a join token works once and only until it expires: make a new one with \
                 `fedhub token generate` and set join_token (or FEDHUB_AGENT_JOIN_TOKEN)"
            }
            Self::X509Pop { .. } => {
                "check that the node certificate chains to the hub's \
                 node_attestation.x509pop.ca_bundle_file, is valid now, and is not banned"
            }
        }
    }
}

fn cert_error(message: String) -> CredentialsError {
    CredentialsError {
        key: "x509pop.cert_file",
        message,
    }
}

fn key_error(message: String) -> CredentialsError {
    CredentialsError {
        key: "x509pop.key_file",
        message,
    }
}

fn read_chain(path: &Path) -> Result<Vec<Vec<u8>>, CredentialsError> {
    let text = std::fs::read(path)
        .map_err(|e| cert_error(format!("cannot read {}: {e}", path.display())))?;
    let chain: Vec<Vec<u8>> = pem::parse_many(&text)
        .map_err(|e| cert_error(format!("{} is not PEM: {e}", path.display())))?
        .into_iter()
        .filter(|block| block.tag() == "CERTIFICATE")
        .map(pem::Pem::into_contents)
        .collect();
    if chain.is_empty() {
        return Err(cert_error(format!(
            "{} holds no CERTIFICATE block; give the node certificate (leaf first) in PEM",
            path.display()
        )));
    }
    Ok(chain)
}

fn read_key(path: &Path) -> Result<PrivateKey, CredentialsError> {
    let text = Zeroizing::new(
        std::fs::read_to_string(path)
            .map_err(|e| key_error(format!("cannot read {}: {e}", path.display())))?,
    );
    PrivateKey::from_pkcs8_pem(&text).map_err(|e| {
        key_error(format!(
            "{}: {e} (convert other formats with `openssl pkcs8 -topk8 -nocrypt`)",
            path.display()
        ))
    })
}

fn check_key_matches(leaf: &[u8], key: &PrivateKey) -> Result<(), CredentialsError> {
    let (_, cert) = X509Certificate::from_der(leaf)
        .map_err(|e| cert_error(format!("the first certificate is malformed: {e}")))?;
    let spki = key.public_key_der().map_err(|e| key_error(e.to_string()))?;
    let (_, key_spki) =
        SubjectPublicKeyInfo::from_der(&spki).map_err(|e| key_error(e.to_string()))?;
    if cert.public_key().subject_public_key.data != key_spki.subject_public_key.data {
        return Err(key_error(
            "is not the key of the first certificate in x509pop.cert_file".into(),
        ));
    }
    Ok(())
}

/// Answers an x509pop challenge the way the hub checks it: the node key's signature over the
/// message binding `challenge` to `agent_public_key` ([`x509pop::challenge_message`]), ECDSA
/// with the curve's hash (ASN.1 DER signature) or RSA PKCS#1 v1.5 with SHA-256.
///
/// A challenge that is not [`x509pop::CHALLENGE_LEN`] bytes is refused rather than signed: the
/// hub's challenge has that fixed length, and the agent signs nothing else with its node key.
fn sign_challenge(
    key: &PrivateKey,
    challenge: &[u8],
    agent_public_key: &[u8],
) -> Result<Vec<u8>, Status> {
    let challenge: &[u8; x509pop::CHALLENGE_LEN] = challenge.try_into().map_err(|_| {
        Status::unknown(format!(
            "the hub sent an x509pop challenge of {} bytes; a fedhub hub sends {}, so the agent \
             refuses to sign it (is hub_address a fedhub hub?)",
            challenge.len(),
            x509pop::CHALLENGE_LEN
        ))
    })?;
    let message = x509pop::challenge_message(challenge, agent_public_key);
    let rng = SystemRandom::new();
    let failed =
        |e: &dyn std::fmt::Display| Status::internal(format!("cannot sign the challenge: {e}"));
    let ecdsa = |algorithm| {
        let pair = EcdsaKeyPair::from_pkcs8(algorithm, key.pkcs8_der()).map_err(|e| failed(&e))?;
        pair.sign(&rng, &message)
            .map(|signature| signature.as_ref().to_vec())
            .map_err(|e| failed(&e))
    };
    match key.key_type() {
        KeyType::EcP256 => ecdsa(&signature::ECDSA_P256_SHA256_ASN1_SIGNING),
        KeyType::EcP384 => ecdsa(&signature::ECDSA_P384_SHA384_ASN1_SIGNING),
        KeyType::Rsa2048 => {
            let pair = RsaKeyPair::from_pkcs8(key.pkcs8_der()).map_err(|e| failed(&e))?;
            let mut signature = vec![0; pair.public_modulus_len()];
            pair.sign(&signature::RSA_PKCS1_SHA256, &rng, &message, &mut signature)
                .map_err(|e| failed(&e))?;
            Ok(signature)
        }
    }
}

/// Runs one attestation on `client` for the agent key `agent_public_key` (DER SPKI): sends
/// the start, answers an x509pop challenge (bound to `agent_public_key`), and returns the
/// hub's result.
///
/// # Errors
/// The hub's status, or `INTERNAL`/`UNKNOWN` for a broken exchange.
pub(crate) async fn attest(
    client: &mut NodeClient,
    credentials: &NodeCredentials,
    agent_public_key: Vec<u8>,
) -> Result<AgentSvid, Status> {
    let method = match credentials {
        NodeCredentials::JoinToken(token) => Method::JoinToken(token.secret().to_owned()),
        NodeCredentials::X509Pop { chain, .. } => Method::X509pop(X509PopStart {
            cert_chain: chain.clone(),
        }),
    };
    // The request stream stays open until the result arrives.
    let (mut requests, outbound) = futures::channel::mpsc::channel(2);
    let start = AttestRequest {
        step: Some(RequestStep::Start(AttestStart {
            agent_public_key: agent_public_key.clone(),
            method: Some(method),
        })),
    };
    requests
        .send(start)
        .await
        .map_err(|_| Status::internal("the attestation stream closed"))?;
    let mut responses = client.attest(outbound).await?.into_inner();
    loop {
        match responses.message().await? {
            Some(response) => match response.step {
                Some(ResponseStep::Result(svid)) => return Ok(svid),
                Some(ResponseStep::Challenge(challenge)) => {
                    let NodeCredentials::X509Pop { key, .. } = credentials else {
                        return Err(Status::unknown(
                            "the hub sent an x509pop challenge to a join token attestation",
                        ));
                    };
                    let signature = sign_challenge(key, &challenge, &agent_public_key)?;
                    requests
                        .send(AttestRequest {
                            step: Some(RequestStep::ChallengeResponse(signature)),
                        })
                        .await
                        .map_err(|_| Status::internal("the attestation stream closed"))?;
                }
                None => return Err(Status::unknown("the hub sent an empty attestation step")),
            },
            None => {
                return Err(Status::unknown(
                    "the hub ended attestation without a result",
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use aws_lc_rs::signature::UnparsedPublicKey;

    use super::*;

    fn node_cert(key: &PrivateKey) -> String {
        let pair = key.rcgen_key_pair().unwrap();
        rcgen_cert(&pair)
    }

    fn rcgen_cert(pair: &rcgen::KeyPair) -> String {
        rcgen::CertificateParams::new(vec!["node1.test".to_owned()])
            .unwrap()
            .self_signed(pair)
            .unwrap()
            .pem()
    }

    fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn x509pop_files_load_when_key_and_certificate_match() {
        let dir = tempfile::tempdir().unwrap();
        let key = PrivateKey::generate(KeyType::EcP256).unwrap();
        let cert_file = write(dir.path(), "node.pem", &node_cert(&key));
        let key_file = write(dir.path(), "node.key", &key.to_pkcs8_pem());
        let loaded = NodeCredentials::load(&NodeAttestation::X509Pop {
            cert_file: cert_file.clone(),
            key_file: key_file.clone(),
        })
        .unwrap();
        assert_eq!(loaded.method(), "x509pop node certificate");

        let other = PrivateKey::generate(KeyType::EcP256).unwrap();
        let other_file = write(dir.path(), "other.key", &other.to_pkcs8_pem());
        let error = NodeCredentials::load(&NodeAttestation::X509Pop {
            cert_file: cert_file.clone(),
            key_file: other_file,
        })
        .unwrap_err();
        assert_eq!(error.key, "x509pop.key_file");
        assert!(error.message.contains("is not the key"), "{error}");

        let error = NodeCredentials::load(&NodeAttestation::X509Pop {
            cert_file: key_file.clone(),
            key_file: key_file.clone(),
        })
        .unwrap_err();
        assert_eq!(error.key, "x509pop.cert_file");
        assert!(error.message.contains("no CERTIFICATE"), "{error}");

        let error = NodeCredentials::load(&NodeAttestation::X509Pop {
            cert_file,
            key_file: dir.path().join("missing.key"),
        })
        .unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("x509pop.key_file: cannot read"),
            "{error}"
        );
    }

    #[test]
    fn challenge_signatures_verify_as_the_hub_checks_them() {
        let challenge = b"0123456789abcdef0123456789abcdef";
        let agent_key = PrivateKey::generate(KeyType::EcP256)
            .unwrap()
            .public_key_der()
            .unwrap();
        let other_agent_key = PrivateKey::generate(KeyType::EcP256)
            .unwrap()
            .public_key_der()
            .unwrap();
        for (key_type, algorithm) in [
            (
                KeyType::EcP256,
                &signature::ECDSA_P256_SHA256_ASN1 as &dyn signature::VerificationAlgorithm,
            ),
            (KeyType::EcP384, &signature::ECDSA_P384_SHA384_ASN1),
            (KeyType::Rsa2048, &signature::RSA_PKCS1_2048_8192_SHA256),
        ] {
            let key = PrivateKey::generate(key_type).unwrap();
            let signature = sign_challenge(&key, challenge, &agent_key).unwrap();
            let pem_text = node_cert(&key);
            let der = pem::parse(&pem_text).unwrap().into_contents();
            let (_, cert) = X509Certificate::from_der(&der).unwrap();
            let node_key =
                UnparsedPublicKey::new(algorithm, &cert.public_key().subject_public_key.data);
            node_key
                .verify(
                    &x509pop::challenge_message(challenge, &agent_key),
                    &signature,
                )
                .unwrap();
            // Bound to this agent key: useless over the bare challenge or for another key.
            assert!(
                node_key.verify(challenge, &signature).is_err(),
                "{key_type}"
            );
            assert!(
                node_key
                    .verify(
                        &x509pop::challenge_message(challenge, &other_agent_key),
                        &signature
                    )
                    .is_err(),
                "{key_type}"
            );
        }
    }

    #[test]
    fn challenges_of_another_length_are_refused_unsigned() {
        let key = PrivateKey::generate(KeyType::EcP256).unwrap();
        let agent_key = key.public_key_der().unwrap();
        for length in [
            0,
            16,
            x509pop::CHALLENGE_LEN - 1,
            x509pop::CHALLENGE_LEN + 1,
            4096,
        ] {
            let error = sign_challenge(&key, &vec![1u8; length], &agent_key).unwrap_err();
            assert_eq!(error.code(), tonic::Code::Unknown, "{length}");
            assert!(
                error
                    .message()
                    .contains(&format!("x509pop challenge of {length} bytes")),
                "{error:?}"
            );
        }
        sign_challenge(&key, &[1u8; x509pop::CHALLENGE_LEN], &agent_key).unwrap();
    }

    #[test]
    fn debug_hides_secrets() {
        let token = NodeCredentials::JoinToken(JoinToken::new("super-secret-token"));
        assert!(!format!("{token:?}").contains("super-secret"));
        assert!(token.fix().contains("fedhub token generate"));
    }
}
