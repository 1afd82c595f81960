//! Whether a fetched foreign bundle may replace the stored one. Pure logic, no I/O.
//!
//! A bundle that parsed and came from an authenticated endpoint is still refused when:
//!
//! - it holds no authority at all, unless the relationship opted in to empty bundles: an empty
//!   document is far more often a broken or compromised endpoint than a deliberate revocation
//!   of everything (FED-31 is applied only with `accept_empty`);
//! - its `spiffe_sequence` is lower than the stored one's (a possible rollback, FED-30);
//! - it has no `spiffe_sequence` while the stored one has, and the relationship requires
//!   sequences ([`AcceptancePolicy::require_sequence`]);
//! - an X.509 authority is not a CA certificate, cannot be parsed, or carries a SPIFFE ID of
//!   another trust domain in its URI SAN (a bundle for another trust domain). Authorities
//!   without a SPIFFE URI SAN (e.g. a Web PKI style root) are fine.
//!
//! Freshness follows FED-30: when either side has no sequence, or both have the same one, the
//! most recently fetched bundle counts as current, so a changed bundle replaces the stored one
//! even without a higher sequence. A bundle without a sequence that follows one with a
//! sequence is accepted that way too, but reported as [`Acceptance::SequenceDropped`]: a peer
//! that stops sending sequences also stops rollbacks from being detected, which the operator
//! should hear about. A bundle identical to the stored one (same authorities, same sequence,
//! same refresh hint) is reported [`Acceptance::Unchanged`] so that nothing is rewritten or
//! pushed.

use fedhub_core::{Bundle, SpiffeId, TrustDomain};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::FromDer as _;

/// A relationship's choices about fetched bundles; everything off by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AcceptancePolicy {
    /// Apply a bundle with no authority at all, as a revocation of every key (FED-31), rather
    /// than refuse it.
    pub accept_empty: bool,
    /// Refuse a bundle without `spiffe_sequence` while the stored bundle has one, rather than
    /// apply it as the most recent fetch (FED-30) and report [`Acceptance::SequenceDropped`].
    pub require_sequence: bool,
}

/// What to do with a fetched bundle that passed the checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acceptance {
    /// Same authorities, sequence and refresh hint as the stored bundle: keep the stored one,
    /// write nothing.
    Unchanged,
    /// Store the fetched bundle in place of the current one (or as the first one).
    Replace,
    /// Store the fetched bundle in place of the current one, as the most recent fetch (FED-30),
    /// although it has no `spiffe_sequence` while the stored one has: the peer stopped sending
    /// sequences, and from now on a rollback cannot be told from an update. Worth a warning.
    SequenceDropped {
        /// The stored bundle's sequence.
        stored: u64,
    },
}

/// Why a fetched bundle was refused; the last good bundle stays.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Rejection {
    /// The bundle is labelled for another trust domain than the relationship's.
    #[error(
        "bundle belongs to trust domain {found}, not to the relationship's trust domain {expected}"
    )]
    MislabeledBundle {
        /// The relationship's trust domain.
        expected: TrustDomain,
        /// The bundle's trust domain.
        found: TrustDomain,
    },
    /// The bundle has no authority at all.
    #[error(
        "the endpoint served a bundle with no keys; the last good bundle is kept (set accept_empty_bundle = true to apply an empty bundle as a revocation of every key)"
    )]
    Empty,
    /// The fetched `spiffe_sequence` is lower than the stored one.
    #[error(
        "fetched bundle has spiffe_sequence {fetched}, lower than the stored {stored}: possible rollback, not applied"
    )]
    Rollback {
        /// The stored bundle's sequence.
        stored: u64,
        /// The fetched bundle's sequence.
        fetched: u64,
    },
    /// The fetched bundle has no `spiffe_sequence` while the stored one has, and the
    /// relationship requires sequences.
    #[error(
        "peer {trust_domain} stopped sending spiffe_sequence: the fetched bundle has none, the stored bundle has sequence {stored}; refused because the relationship requires sequences, the last good bundle is kept (set require_sequence = false to apply bundles without a sequence)"
    )]
    SequenceDropped {
        /// The relationship's trust domain.
        trust_domain: TrustDomain,
        /// The stored bundle's sequence.
        stored: u64,
    },
    /// An X.509 authority is not a CA certificate.
    #[error(
        "x509 authority {index} of the bundle is not a CA certificate (basicConstraints cA is not set)"
    )]
    NotCa {
        /// Position among the bundle's X.509 authorities.
        index: usize,
    },
    /// An X.509 authority names a SPIFFE ID of another trust domain.
    #[error(
        "x509 authority {index} of the bundle carries the SPIFFE ID {found}, which is not in the relationship's trust domain {expected}"
    )]
    ForeignTrustDomain {
        /// Position among the bundle's X.509 authorities.
        index: usize,
        /// The SPIFFE ID found in the URI SAN.
        found: SpiffeId,
        /// The relationship's trust domain.
        expected: TrustDomain,
    },
    /// An X.509 authority could not be parsed.
    #[error("x509 authority {index} of the bundle cannot be parsed: {reason}")]
    UnparseableAuthority {
        /// Position among the bundle's X.509 authorities.
        index: usize,
        /// What is wrong.
        reason: String,
    },
}

/// Decides whether `fetched`, the bundle just fetched for the relationship with
/// `trust_domain`, may replace `current`, the stored one (if any), under the relationship's
/// `policy`.
///
/// # Errors
/// [`Rejection`] when the bundle must not be applied.
pub fn check_fetched(
    trust_domain: &TrustDomain,
    current: Option<&Bundle>,
    fetched: &Bundle,
    policy: AcceptancePolicy,
) -> Result<Acceptance, Rejection> {
    if fetched.trust_domain() != trust_domain {
        return Err(Rejection::MislabeledBundle {
            expected: trust_domain.clone(),
            found: fetched.trust_domain().clone(),
        });
    }
    if fetched.is_empty() && !policy.accept_empty {
        return Err(Rejection::Empty);
    }
    for (index, authority) in fetched.x509_authorities().iter().enumerate() {
        check_authority(trust_domain, index, authority.der())?;
    }
    let Some(current) = current else {
        return Ok(Acceptance::Replace);
    };
    match (current.sequence(), fetched.sequence()) {
        (Some(stored), Some(fetched)) if fetched < stored => {
            return Err(Rejection::Rollback { stored, fetched });
        }
        (Some(stored), None) if policy.require_sequence => {
            return Err(Rejection::SequenceDropped {
                trust_domain: trust_domain.clone(),
                stored,
            });
        }
        (Some(stored), None) => return Ok(Acceptance::SequenceDropped { stored }),
        _ => {}
    }
    if current.same_authorities(fetched)
        && current.sequence() == fetched.sequence()
        && current.refresh_hint() == fetched.refresh_hint()
    {
        Ok(Acceptance::Unchanged)
    } else {
        Ok(Acceptance::Replace)
    }
}

fn check_authority(trust_domain: &TrustDomain, index: usize, der: &[u8]) -> Result<(), Rejection> {
    let unparseable = |reason: String| Rejection::UnparseableAuthority { index, reason };
    let (_, cert) = X509Certificate::from_der(der).map_err(|e| unparseable(e.to_string()))?;
    if !cert.is_ca() {
        return Err(Rejection::NotCa { index });
    }
    let Some(san) = cert
        .subject_alternative_name()
        .map_err(|e| unparseable(format!("subjectAltName: {e}")))?
    else {
        return Ok(());
    };
    for name in &san.value.general_names {
        let GeneralName::URI(uri) = name else {
            continue;
        };
        let is_spiffe = uri
            .split_once(':')
            .is_some_and(|(scheme, _)| scheme.eq_ignore_ascii_case("spiffe"));
        if !is_spiffe {
            continue;
        }
        let id = SpiffeId::parse(uri)
            .map_err(|e| unparseable(format!("URI SAN {uri:?} is not a valid SPIFFE ID: {e}")))?;
        if !id.is_member_of(trust_domain) {
            return Err(Rejection::ForeignTrustDomain {
                index,
                found: id,
                expected: trust_domain.clone(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
