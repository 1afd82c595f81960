//! x509pop fixtures and the input format of the `x509pop` target.
//!
//! Input: one mode byte, then `AttestRequest` messages as the agent streams them, each
//! length-delimited (protobuf varint length, then the message): `start`, then
//! `challenge_response`. With an odd mode byte the first certificate of the chain is taken as a
//! TBSCertificate and signed here with the fixture CA's key, so that fuzzed certificate
//! contents reach the code behind the chain verification.

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair};
use fedhub_core::x509pop::CHALLENGE_LEN;
use fedhub_hub::node::fuzzing::X509Pop;
use fedhub_proto::node::AttestRequest;
use prost::Message as _;

use crate::{der, fixture};

/// The challenge the target's "hub" sends.
pub const CHALLENGE: [u8; CHALLENGE_LEN] = [0x5a; CHALLENGE_LEN];

/// The node CA (`x509pop-ca.der`, P-256, self-signed): the `ca_bundle_file` of the target.
pub const CA: &str = "x509pop-ca";
/// An intermediate CA under [`CA`] (P-384).
pub const INTERMEDIATE: &str = "x509pop-intermediate";
/// A node certificate (P-256) issued by [`CA`], with a CN and DNS SANs.
pub const NODE_EC: &str = "x509pop-node-ec";
/// A node certificate (RSA 2048) issued by [`INTERMEDIATE`].
pub const NODE_RSA: &str = "x509pop-node-rsa";
/// The agent key a node asks the hub to certify (DER SubjectPublicKeyInfo, P-256).
pub const AGENT_SPKI: &str = "agent-p256.spki";

/// The verifier of the fixture CA, loaded as the hub loads `ca_bundle_file`.
///
/// # Panics
/// When the fixture is missing or the file cannot be written.
pub fn verifier() -> X509Pop {
    let pem = format!(
        "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
        base64_lines(&fixture(&format!("{CA}.der")))
    );
    let path = std::env::temp_dir().join(format!("fedhub-fuzz-x509pop-{}.pem", std::process::id()));
    std::fs::write(&path, pem).expect("temporary CA bundle file");
    let verifier = X509Pop::load(&path);
    let _ = std::fs::remove_file(&path);
    verifier.expect("the fixture CA loads")
}

fn base64_lines(der: &[u8]) -> String {
    use base64::Engine as _;
    let text = base64::engine::general_purpose::STANDARD.encode(der);
    text.as_bytes()
        .chunks(64)
        .map(|line| String::from_utf8_lossy(line).into_owned())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Signs TBSCertificates with the fixture CA's key (ECDSA P-256, SHA-256).
pub struct CaSigner {
    key: EcdsaKeyPair,
    rng: SystemRandom,
}

impl CaSigner {
    /// Loads the CA key.
    ///
    /// # Panics
    /// When the fixture is missing.
    pub fn load() -> Self {
        let key = EcdsaKeyPair::from_pkcs8(
            &ECDSA_P256_SHA256_ASN1_SIGNING,
            &fixture(&format!("{CA}.pk8")),
        )
        .expect("the CA fixture key");
        Self {
            key,
            rng: SystemRandom::new(),
        }
    }

    /// A certificate of `tbs` signed by the CA.
    ///
    /// # Panics
    /// When the crypto backend fails to sign.
    pub fn certificate(&self, tbs: &[u8]) -> Vec<u8> {
        let signature = self.key.sign(&self.rng, tbs).expect("ECDSA signature");
        der::certificate(tbs, signature.as_ref())
    }
}

/// Splits an input into the mode byte and the messages it holds (as many as decode).
pub fn decode(data: &[u8]) -> Option<(u8, Vec<AttestRequest>)> {
    let (&mode, mut rest) = data.split_first()?;
    let mut messages = Vec::new();
    while !rest.is_empty() && messages.len() < 2 {
        let Ok(message) = AttestRequest::decode_length_delimited(&mut rest) else {
            break;
        };
        messages.push(message);
    }
    Some((mode, messages))
}

/// The input of `messages` under `mode` (the inverse of [`decode`]).
pub fn encode(mode: u8, messages: &[AttestRequest]) -> Vec<u8> {
    let mut out = vec![mode];
    for message in messages {
        message
            .encode_length_delimited(&mut out)
            .expect("a Vec grows as needed");
    }
    out
}
