//! Why a bundle document, bundle map or PEM input was rejected as a whole, and how untrusted
//! text is quoted in those messages.

/// Why a bundle document, bundle map or PEM input was rejected as a whole.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BundleError {
    /// The input is larger than the limit.
    #[error("bundle document is {size} bytes, over the {limit}-byte limit; refusing to parse it")]
    TooLarge {
        /// Size of the input in bytes.
        size: usize,
        /// The limit in bytes.
        limit: usize,
    },
    /// The input is not JSON (syntax error, truncation, trailing data, number out of range).
    #[error("bundle is not valid JSON: {0}")]
    Json(String),
    /// A JSON object names the same member twice.
    #[error(
        "bundle JSON repeats the object key {key:?} (line {line}, column {column}); each member may appear only once"
    )]
    DuplicateKey {
        /// The repeated key.
        key: String,
        /// Line of the repetition (1-based).
        line: usize,
        /// Column of the repetition (1-based).
        column: usize,
    },
    /// A bundle or the `trust_domains` member is not a JSON object.
    #[error("bundle JSON has the wrong shape: {0}")]
    WrongType(String),
    /// The document has no `keys` member (BUN-2).
    #[error(
        "bundle has no \"keys\" member; a SPIFFE bundle is a JSON object with a \"keys\" array (use [] for no keys)"
    )]
    MissingKeys,
    /// `keys` is not an array (BUN-1).
    #[error("bundle \"keys\" must be an array of JWK objects, found {0}")]
    KeysNotArray(&'static str),
    /// An element of `keys` is not an object.
    #[error("bundle keys[{index}] must be a JWK object, found {found}")]
    EntryNotObject {
        /// Position in `keys`.
        index: usize,
        /// The JSON type found.
        found: &'static str,
    },
    /// `spiffe_sequence` is not an integer in `0..=u64::MAX` (BUN-5).
    #[error(
        "bundle \"spiffe_sequence\" must be a non-negative integer that fits in 64 bits, found {0}"
    )]
    InvalidSequence(String),
    /// The refresh hint is not a non-negative integer number of seconds (BUN-6).
    #[error(
        "bundle refresh hint must be a non-negative integer number of seconds (at most 2^63-1), found {0}"
    )]
    InvalidRefreshHint(String),
    /// An `x509-svid` entry's `x5c` is malformed or its first certificate is not a usable DER
    /// certificate in standard base64.
    #[error(
        "bundle keys[{index}] (x509-svid): \"x5c\" must be an array whose first element is a standard-base64 DER CA certificate: {reason}"
    )]
    InvalidX5c {
        /// Position in `keys`.
        index: usize,
        /// What is wrong.
        reason: String,
    },
    /// An `x509-svid` entry's key parameters differ from the public key of `x5c[0]` (BUN-13).
    #[error(
        "bundle keys[{index}] (x509-svid): the JWK key parameters do not match the public key of the certificate in x5c[0]: {reason}"
    )]
    X509KeyMismatch {
        /// Position in `keys`.
        index: usize,
        /// What differs.
        reason: String,
    },
    /// Bytes that should be a certificate are not a DER X.509 certificate with an EC or RSA key.
    #[error(
        "not a usable DER X.509 certificate (expected one certificate with an EC P-256/P-384/P-521 or RSA key): {0}"
    )]
    InvalidCertificate(String),
    /// A bundle map has no `trust_domains` member (BMAP-1).
    #[error(
        "bundle map has no \"trust_domains\" member; write {{\"trust_domains\": {{}}}} for an empty map"
    )]
    MissingTrustDomains,
    /// A bundle map key is not a bare trust domain name (BMAP-2).
    #[error(
        "bundle map key {key:?} is not a trust domain name (write \"example.org\", not \"spiffe://example.org\"): {reason}"
    )]
    InvalidMapKey {
        /// The key as found (shortened).
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// One bundle inside a bundle map is invalid.
    #[error("bundle of trust domain {trust_domain} in the bundle map: {error}")]
    MapBundle {
        /// The trust domain name the bundle is listed under.
        trust_domain: String,
        /// Why that bundle was rejected.
        error: Box<BundleError>,
    },
    /// PEM input is not well-formed PEM.
    #[error("PEM input is malformed: {0}")]
    Pem(String),
    /// PEM input holds no block at all.
    #[error(
        "no PEM CERTIFICATE block found; expected one or more \"-----BEGIN CERTIFICATE-----\" blocks"
    )]
    EmptyPem,
    /// A PEM block is not a `CERTIFICATE`.
    #[error(
        "PEM block {index} is {tag:?}, not CERTIFICATE; a bundle holds CA certificates only (never private keys)"
    )]
    NotCertificatePem {
        /// Position of the block (0-based).
        index: usize,
        /// The block's label.
        tag: String,
    },
    /// A PEM `CERTIFICATE` block does not hold a usable certificate.
    #[error("PEM block {index}: {reason}")]
    InvalidPemCertificate {
        /// Position of the block (0-based).
        index: usize,
        /// What is wrong.
        reason: String,
    },
    /// A bundle file is neither bundle JSON nor PEM.
    #[error(
        "bundle file is neither SPIFFE bundle JSON (a JSON object) nor PEM certificates (\"-----BEGIN CERTIFICATE-----\")"
    )]
    UnknownFormat,
}

/// Untrusted strings quoted in errors and logs are cut to this many characters.
const SHOWN_CHARS: usize = 64;

/// Quotes an untrusted string for an error or log message, cut to [`SHOWN_CHARS`].
pub(super) fn shorten(s: &str) -> String {
    match s.char_indices().nth(SHOWN_CHARS) {
        Some((end, _)) => format!("{}…", &s[..end]),
        None => s.to_owned(),
    }
}
