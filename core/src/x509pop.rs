//! The x509pop proof of possession: the one rule for the message a node signs.
//!
//! In x509pop node attestation the hub sends a random challenge of [`CHALLENGE_LEN`] bytes and
//! the agent answers with its node key's signature over [`challenge_message`], never over the
//! bare challenge. The message binds the challenge to the agent key the attestation asks the
//! hub to certify (`AttestStart.agent_public_key`), so a challenge relayed from the real hub by
//! a man in the middle (possible while an agent bootstraps with `insecure_bootstrap`) yields a
//! signature that only verifies for the agent's own key, never for the relay's.

use aws_lc_rs::digest::{SHA256, SHA256_OUTPUT_LEN, digest};

/// The length of the hub's x509pop challenge, in bytes. An agent refuses any other length.
pub const CHALLENGE_LEN: usize = 32;

/// The fixed, versioned context that starts every signed message, NUL-terminated, so that an
/// x509pop signature can never be mistaken for a signature made for another purpose.
pub const CONTEXT: &[u8] = b"fedhub x509pop v1\0";

/// The length of [`challenge_message`]'s output: the context, the challenge and a SHA-256.
pub const MESSAGE_LEN: usize = CONTEXT.len() + CHALLENGE_LEN + SHA256_OUTPUT_LEN;

/// The message an x509pop node signs with its node key:
///
/// ```text
/// "fedhub x509pop v1" 0x00 || challenge (32 bytes) || SHA-256(agent_public_key) (32 bytes)
/// ```
///
/// `agent_public_key` is exactly the `AttestStart.agent_public_key` bytes of the same
/// attestation (the DER SubjectPublicKeyInfo of the key the agent SVID will certify), hashed
/// as sent, without re-encoding. Every part has a fixed length, so the message is always
/// [`MESSAGE_LEN`] (82) bytes and its parts cannot be shifted into one another.
///
/// The signature scheme follows the node key: ECDSA with the curve's hash (P-256 SHA-256,
/// P-384 SHA-384, P-521 SHA-512) as an ASN.1 DER signature, or RSA PKCS#1 v1.5 with SHA-256,
/// each over these bytes.
pub fn challenge_message(
    challenge: &[u8; CHALLENGE_LEN],
    agent_public_key: &[u8],
) -> [u8; MESSAGE_LEN] {
    let key_hash = digest(&SHA256, agent_public_key);
    let mut message = [0u8; MESSAGE_LEN];
    for (slot, byte) in message.iter_mut().zip(
        CONTEXT
            .iter()
            .chain(challenge)
            .chain(key_hash.as_ref().iter()),
    ) {
        *slot = *byte;
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_message_is_context_challenge_and_key_hash() {
        let challenge = [7u8; CHALLENGE_LEN];
        let key = b"an agent SPKI";
        let message = challenge_message(&challenge, key);
        assert_eq!(MESSAGE_LEN, 82);
        let (context, rest) = message.split_at(CONTEXT.len());
        let (bound_challenge, key_hash) = rest.split_at(CHALLENGE_LEN);
        assert_eq!(context, b"fedhub x509pop v1\0");
        assert_eq!(bound_challenge, challenge);
        assert_eq!(key_hash, digest(&SHA256, key).as_ref());
    }

    #[test]
    fn the_message_changes_with_the_key_and_the_challenge() {
        let challenge = [7u8; CHALLENGE_LEN];
        let message = challenge_message(&challenge, b"key A");
        assert_ne!(message, challenge_message(&challenge, b"key B"));
        assert_ne!(message, challenge_message(&[8u8; CHALLENGE_LEN], b"key A"));
        assert_eq!(message, challenge_message(&challenge, b"key A"));
    }
}
