//! PEM text as fedhub writes it: LF line endings, as Unix tools expect.
//!
//! The one home of the PEM rules that keys, X509-SVIDs and bundles share. The external `pem`
//! crate is named `::pem` here to tell it apart from this module.

/// The label of a PEM block holding one DER X.509 certificate.
pub(crate) const CERTIFICATE: &str = "CERTIFICATE";
/// The label of a PEM block holding one PKCS#8 private key.
pub(crate) const PRIVATE_KEY: &str = "PRIVATE KEY";

/// DER certificates as PEM `CERTIFICATE` blocks with LF line endings, in order.
pub fn certificates_pem<'a>(ders: impl IntoIterator<Item = &'a [u8]>) -> String {
    let blocks: Vec<::pem::Pem> = ders
        .into_iter()
        .map(|der| ::pem::Pem::new(CERTIFICATE, der))
        .collect();
    ::pem::encode_many_config(&blocks, encode_config())
}

/// One PEM block labelled `tag` with LF line endings.
pub(crate) fn encode_block(tag: &str, contents: &[u8]) -> String {
    ::pem::encode_config(&::pem::Pem::new(tag, contents), encode_config())
}

/// How fedhub writes PEM: LF line endings, as Unix tools expect.
fn encode_config() -> ::pem::EncodeConfig {
    ::pem::EncodeConfig::new().set_line_ending(::pem::LineEnding::LF)
}

/// Why a text is not a list of PEM certificates.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertificatesPemError {
    /// The text is not PEM.
    #[error("not valid PEM: {0}")]
    Malformed(String),
    /// The text holds no PEM block at all.
    #[error(
        "no PEM CERTIFICATE block found; expected one or more \"-----BEGIN CERTIFICATE-----\" blocks"
    )]
    Empty,
    /// A block is not a `CERTIFICATE` (e.g. a private key).
    #[error(
        "PEM block {index} is {tag:?}, not CERTIFICATE; give CA certificates only (never private keys)"
    )]
    NotCertificate {
        /// Position of the block (0-based).
        index: usize,
        /// The block's label, cut to 64 characters.
        tag: String,
    },
}

/// The DER contents of PEM text that holds one or more `CERTIFICATE` blocks and nothing else:
/// the one rule for CA certificates given as PEM (bundle files, `extra_ca_pem`, CA files).
///
/// # Errors
/// [`CertificatesPemError`] when the text is not PEM, holds no block, or holds a block of
/// another type.
pub fn certificates_der(pem_text: impl AsRef<[u8]>) -> Result<Vec<Vec<u8>>, CertificatesPemError> {
    let blocks =
        ::pem::parse_many(pem_text).map_err(|e| CertificatesPemError::Malformed(e.to_string()))?;
    if blocks.is_empty() {
        return Err(CertificatesPemError::Empty);
    }
    blocks
        .into_iter()
        .enumerate()
        .map(|(index, block)| {
            if block.tag() == CERTIFICATE {
                Ok(block.into_contents())
            } else {
                Err(CertificatesPemError::NotCertificate {
                    index,
                    tag: block.tag().chars().take(64).collect(),
                })
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificates_der_takes_certificate_blocks_only() {
        let two = certificates_pem([b"one".as_slice(), b"two".as_slice()]);
        assert_eq!(
            certificates_der(&two).unwrap(),
            vec![b"one".to_vec(), b"two".to_vec()]
        );
        assert_eq!(certificates_der(""), Err(CertificatesPemError::Empty));
        assert!(matches!(
            certificates_der(
                "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n"
            ),
            Err(CertificatesPemError::Malformed(_))
        ));
        let with_key = format!("{two}{}", encode_block(PRIVATE_KEY, b"secret"));
        assert_eq!(
            certificates_der(&with_key),
            Err(CertificatesPemError::NotCertificate {
                index: 2,
                tag: PRIVATE_KEY.into()
            })
        );
    }
}
