//! Node attestation (`Attest`): join tokens and x509pop, then the agent SVID.

use std::time::SystemTime;

use fedhub_core::x509pop::CHALLENGE_LEN;
use fedhub_core::{PublicKey, SpiffeId};
use fedhub_proto::node::attest_request::Step as RequestStep;
use fedhub_proto::node::attest_response::Step as ResponseStep;
use fedhub_proto::node::attest_start::Method;
use fedhub_proto::node::{AgentSvid, AttestRequest, AttestResponse, X509PopStart};
use fedhub_registry::{AgentAttestation, MAX_JOIN_TOKEN_LEN, RegistryError, Selector};
use time::OffsetDateTime;
use tokio::sync::mpsc;
use tonic::{Status, Streaming};

use super::service::NodeApi;
use super::status;

/// Who an agent proved to be.
struct Attested {
    spiffe_id: SpiffeId,
    attestation_type: &'static str,
    selectors: Vec<Selector>,
}

/// Refuses anything but a DER SubjectPublicKeyInfo of a supported key. A PKCS#10 request is
/// recognised by its outer structure (never parsed) and refused with a pointed message.
pub(super) fn check_public_key(field: &str, der: &[u8]) -> Result<(), Status> {
    if looks_like_csr(der) {
        return Err(Status::invalid_argument(format!(
            "{field}: send a public key, not a CSR (a DER SubjectPublicKeyInfo; the hub never \
             reads certificate requests)"
        )));
    }
    PublicKey::from_spki_der(der).map(drop).map_err(|e| {
        Status::invalid_argument(format!(
            "{field} is not a DER SubjectPublicKeyInfo of an EC (P-256/P-384/P-521) or RSA key: {e}"
        ))
    })
}

/// Whether `bytes` look like a certification request: PEM with a request label, or DER
/// `SEQUENCE { SEQUENCE { INTEGER 0, SEQUENCE (subject), … }, … }`. An SPKI starts with
/// `SEQUENCE { SEQUENCE { OID …`, so the two cannot be confused.
fn looks_like_csr(bytes: &[u8]) -> bool {
    let text = bytes.trim_ascii_start();
    if text.starts_with(b"-----BEGIN CERTIFICATE REQUEST-----")
        || text.starts_with(b"-----BEGIN NEW CERTIFICATE REQUEST-----")
    {
        return true;
    }
    let Some((0x30, outer, _)) = der_element(bytes) else {
        return false;
    };
    let Some((0x30, info, _)) = der_element(outer) else {
        return false;
    };
    match der_element(info) {
        Some((0x02, [0], rest)) => matches!(der_element(rest), Some((0x30, _, _))),
        _ => false,
    }
}

/// Splits one DER element off `input`: (tag, contents, rest). Definite lengths up to 4 bytes.
fn der_element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || rest.len() < count {
            return None;
        }
        let (len_bytes, rest) = rest.split_at(count);
        let len = len_bytes
            .iter()
            .fold(0usize, |len, &b| (len << 8) | usize::from(b));
        (len, rest)
    };
    (rest.len() >= len).then(|| {
        let (contents, rest) = rest.split_at(len);
        (tag, contents, rest)
    })
}

async fn next_step(inbound: &mut Streaming<AttestRequest>) -> Result<RequestStep, Status> {
    match inbound.message().await? {
        Some(AttestRequest { step: Some(step) }) => Ok(step),
        Some(AttestRequest { step: None }) => Err(Status::invalid_argument(
            "attest message carries no step: send start, then challenge_response",
        )),
        None => Err(Status::cancelled(
            "the agent closed the attestation stream before it finished",
        )),
    }
}

impl NodeApi {
    /// Runs one attestation on `inbound`, sending the x509pop challenge on `outbound`, and
    /// returns the agent SVID; `method` is set to the method the agent chose (the `method`
    /// label of [`crate::metrics::NODE_ATTESTATIONS_TOTAL`]) as soon as it is known.
    pub(super) async fn attest(
        &self,
        inbound: &mut Streaming<AttestRequest>,
        outbound: &mpsc::Sender<Result<AttestResponse, Status>>,
        method: &mut &'static str,
    ) -> Result<AgentSvid, Status> {
        let RequestStep::Start(start) = next_step(inbound).await? else {
            return Err(Status::invalid_argument(
                "the first attest message must be start, not a challenge response",
            ));
        };
        *method = match &start.method {
            Some(Method::JoinToken(_)) => "join_token",
            Some(Method::X509pop(_)) => "x509pop",
            None => "none",
        };
        // Checked before a join token is used up, so a bad key does not waste the token.
        check_public_key("agent_public_key", &start.agent_public_key)?;
        let attested = match start.method {
            Some(Method::JoinToken(token)) => self.attest_join_token(&token).await?,
            Some(Method::X509pop(pop)) => {
                self.attest_x509pop(pop, &start.agent_public_key, inbound, outbound)
                    .await?
            }
            None => {
                return Err(Status::invalid_argument(
                    "start names no attestation method: send join_token or x509pop",
                ));
            }
        };
        self.issue_agent_svid(&attested, &start.agent_public_key)
            .await
    }

    async fn attest_join_token(&self, token: &str) -> Result<Attested, Status> {
        let trust_domain = self.hub.trust_domain();
        if token.len() > MAX_JOIN_TOKEN_LEN {
            return Err(status::registry(RegistryError::JoinTokenUnknown));
        }
        let grant = self
            .hub
            .registry()
            .consume_join_token(token, OffsetDateTime::now_utc())
            .await
            .map_err(status::registry)?;
        let spiffe_id = match grant.spiffe_id {
            Some(id) if super::is_agent_id(trust_domain, &id) => id,
            Some(id) => {
                return Err(Status::failed_precondition(format!(
                    "the join token names {id}, which is not an agent ID of this trust domain \
                     (spiffe://{trust_domain}{}…); generate a new token",
                    super::AGENT_ID_PREFIX
                )));
            }
            None => super::join_token_agent_id(trust_domain, token),
        };
        Ok(Attested {
            spiffe_id,
            attestation_type: "join_token",
            selectors: Vec::new(),
        })
    }

    /// Verifies the node's chain, sends a random challenge, and checks the node key's
    /// signature over the challenge bound to `agent_public_key` (the key this attestation
    /// certifies, see [`fedhub_core::x509pop::challenge_message`]).
    async fn attest_x509pop(
        &self,
        start: X509PopStart,
        agent_public_key: &[u8],
        inbound: &mut Streaming<AttestRequest>,
        outbound: &mpsc::Sender<Result<AttestResponse, Status>>,
    ) -> Result<Attested, Status> {
        let verifier = self
            .x509pop
            .as_ref()
            .ok_or_else(|| Status::failed_precondition("x509pop is not configured on this hub"))?;
        let node = verifier.verify(&start.cert_chain, SystemTime::now())?;
        let mut challenge = [0u8; CHALLENGE_LEN];
        aws_lc_rs::rand::fill(&mut challenge)
            .map_err(|_| Status::internal("no randomness for the challenge"))?;
        outbound
            .send(Ok(AttestResponse {
                step: Some(ResponseStep::Challenge(challenge.to_vec())),
            }))
            .await
            .map_err(|_| Status::cancelled("the agent left during attestation"))?;
        let RequestStep::ChallengeResponse(response) = next_step(inbound).await? else {
            return Err(Status::invalid_argument(
                "expected challenge_response after the challenge",
            ));
        };
        node.verify_challenge(&challenge, agent_public_key, &response)?;
        Ok(Attested {
            spiffe_id: node.agent_id(self.hub.trust_domain())?,
            attestation_type: "x509pop",
            selectors: node.selectors(),
        })
    }

    /// Mints the agent SVID for `public_key` and records the agent with its serial; a banned
    /// agent gets nothing.
    async fn issue_agent_svid(
        &self,
        attested: &Attested,
        public_key: &[u8],
    ) -> Result<AgentSvid, Status> {
        let registry = self.hub.registry();
        let known = registry
            .get_agent(&attested.spiffe_id)
            .await
            .map_err(status::registry)?;
        if known.is_some_and(|agent| agent.banned) {
            return Err(status::registry(RegistryError::AgentBanned {
                spiffe_id: attested.spiffe_id.clone(),
            }));
        }
        let svid = self.mint_agent_svid(&attested.spiffe_id, public_key)?;
        registry
            .upsert_agent(&AgentAttestation {
                spiffe_id: attested.spiffe_id.clone(),
                attestation_type: attested.attestation_type.to_owned(),
                serial: svid.serial.clone(),
                svid_expires_at: OffsetDateTime::from(svid.expires_at),
                selectors: attested.selectors.clone(),
            })
            .await
            .map_err(status::registry)?;
        self.notify_changed().await;
        tracing::info!(
            agent.spiffe_id = %attested.spiffe_id,
            attestation.type = attested.attestation_type,
            "agent attested"
        );
        Ok(self.agent_svid_message(&attested.spiffe_id, svid.chain))
    }
}

#[cfg(test)]
mod tests {
    use fedhub_core::{KeyType, PrivateKey};

    use super::*;

    #[test]
    fn spki_passes_and_csr_is_recognised() {
        let key = PrivateKey::generate(KeyType::EcP256).unwrap();
        let spki = key.public_key_der().unwrap();
        assert!(!looks_like_csr(&spki));
        check_public_key("k", &spki).unwrap();

        let pair = key.rcgen_key_pair().unwrap();
        let csr = rcgen::CertificateParams::new(vec!["node.test".to_owned()])
            .unwrap()
            .serialize_request(&pair)
            .unwrap();
        assert!(looks_like_csr(csr.der()));
        assert!(looks_like_csr(csr.pem().unwrap().as_bytes()));
        let error = check_public_key("k", csr.der()).unwrap_err();
        assert_eq!(error.code(), tonic::Code::InvalidArgument);
        assert!(error.message().contains("send a public key, not a CSR"));

        let cert = rcgen::CertificateParams::new(vec!["node.test".to_owned()])
            .unwrap()
            .self_signed(&pair)
            .unwrap();
        assert!(!looks_like_csr(cert.der()), "a certificate is not a CSR");
        let error = check_public_key("k", cert.der()).unwrap_err();
        assert!(error.message().contains("not a DER SubjectPublicKeyInfo"));
    }

    #[test]
    fn der_reader_refuses_truncated_input() {
        assert_eq!(der_element(&[0x30, 0x03, 1, 2]), None);
        assert_eq!(der_element(&[0x30, 0x82, 0x01]), None);
        assert_eq!(
            der_element(&[0x02, 0x81, 0x01, 7, 9]),
            Some((0x02, &[7u8][..], &[9u8][..]))
        );
    }
}
