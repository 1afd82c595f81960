//! Key types, key generation, and public keys in the forms SPIFFE needs (SPKI DER and JWK).

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use x509_parser::prelude::FromDer;
use x509_parser::x509::SubjectPublicKeyInfo;
use zeroize::Zeroizing;

/// Why a key could not be generated, loaded or converted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The private key bytes are not a PKCS#8 key of a supported type.
    #[error("private key is not a supported PKCS#8 key (EC P-256, EC P-384 or RSA): {0}")]
    BadPrivateKey(String),
    /// The public key bytes are not a DER SubjectPublicKeyInfo of a supported type.
    #[error("public key is not a supported SubjectPublicKeyInfo (EC P-256, EC P-384 or RSA): {0}")]
    BadPublicKey(String),
    /// The key type name in configuration is not one fedhub knows.
    #[error("unknown key type {0:?}: use \"ec-p256\", \"ec-p384\" or \"rsa-2048\"")]
    UnknownKeyType(String),
    /// The crypto backend failed to generate a key.
    #[error("key generation failed: {0}")]
    Generation(String),
}

/// The kinds of key fedhub generates for CAs, SVIDs and JWT signing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub enum KeyType {
    /// ECDSA on NIST P-256 with SHA-256 (the default).
    #[default]
    #[serde(rename = "ec-p256")]
    EcP256,
    /// ECDSA on NIST P-384 with SHA-384.
    #[serde(rename = "ec-p384")]
    EcP384,
    /// RSA 2048-bit, signing with PKCS#1 v1.5 and SHA-256.
    #[serde(rename = "rsa-2048")]
    Rsa2048,
}

impl KeyType {
    /// The configuration name: `ec-p256`, `ec-p384` or `rsa-2048`.
    pub fn name(self) -> &'static str {
        match self {
            Self::EcP256 => "ec-p256",
            Self::EcP384 => "ec-p384",
            Self::Rsa2048 => "rsa-2048",
        }
    }

    /// The rcgen signature algorithm used when this key signs certificates.
    pub fn rcgen_algorithm(self) -> &'static rcgen::SignatureAlgorithm {
        match self {
            Self::EcP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            Self::EcP384 => &rcgen::PKCS_ECDSA_P384_SHA384,
            Self::Rsa2048 => &rcgen::PKCS_RSA_SHA256,
        }
    }
}

impl fmt::Display for KeyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for KeyType {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "ec-p256" => Ok(Self::EcP256),
            "ec-p384" => Ok(Self::EcP384),
            "rsa-2048" => Ok(Self::Rsa2048),
            other => Err(KeyError::UnknownKeyType(other.to_owned())),
        }
    }
}

/// A private key held as PKCS#8 DER, wiped from memory on drop and never printed.
#[derive(Clone)]
pub struct PrivateKey {
    key_type: KeyType,
    pkcs8: Zeroizing<Vec<u8>>,
}

impl PrivateKey {
    /// Generates a fresh key of the given type.
    ///
    /// # Errors
    /// [`KeyError::Generation`] if the crypto backend fails.
    pub fn generate(key_type: KeyType) -> Result<Self, KeyError> {
        let pair = match key_type {
            KeyType::Rsa2048 => rcgen::KeyPair::generate_rsa_for(
                key_type.rcgen_algorithm(),
                rcgen::RsaKeySize::_2048,
            ),
            _ => rcgen::KeyPair::generate_for(key_type.rcgen_algorithm()),
        }
        .map_err(|e| KeyError::Generation(e.to_string()))?;
        Ok(Self {
            key_type,
            pkcs8: Zeroizing::new(pair.serialize_der()),
        })
    }

    /// Loads a PKCS#8 DER private key, detecting its type.
    ///
    /// # Errors
    /// [`KeyError::BadPrivateKey`] if the bytes are not a supported PKCS#8 key.
    pub fn from_pkcs8_der(der: &[u8]) -> Result<Self, KeyError> {
        let pkcs8 = rustls_pki_types::PrivatePkcs8KeyDer::from(der);
        let pair =
            rcgen::KeyPair::try_from(&pkcs8).map_err(|e| KeyError::BadPrivateKey(e.to_string()))?;
        let key_type = key_type_of(&pair)?;
        Ok(Self {
            key_type,
            pkcs8: Zeroizing::new(der.to_vec()),
        })
    }

    /// Loads a PEM `PRIVATE KEY` (PKCS#8).
    ///
    /// # Errors
    /// [`KeyError::BadPrivateKey`] if the PEM does not hold a supported PKCS#8 key.
    pub fn from_pkcs8_pem(pem_text: &str) -> Result<Self, KeyError> {
        let block = pem::parse(pem_text).map_err(|e| KeyError::BadPrivateKey(e.to_string()))?;
        if block.tag() != crate::pem::PRIVATE_KEY {
            return Err(KeyError::BadPrivateKey(format!(
                "expected a PEM \"PRIVATE KEY\" (PKCS#8) block, found {:?}",
                block.tag()
            )));
        }
        Self::from_pkcs8_der(block.contents())
    }

    /// The key type.
    pub fn key_type(&self) -> KeyType {
        self.key_type
    }

    /// The PKCS#8 DER bytes. Handle with care: this is the secret.
    pub fn pkcs8_der(&self) -> &[u8] {
        &self.pkcs8
    }

    /// The key as PEM `PRIVATE KEY` text, for writing to a 0600 file.
    pub fn to_pkcs8_pem(&self) -> Zeroizing<String> {
        Zeroizing::new(crate::pem::encode_block(
            crate::pem::PRIVATE_KEY,
            &self.pkcs8,
        ))
    }

    /// The rcgen key pair, for signing certificates.
    ///
    /// # Errors
    /// [`KeyError::BadPrivateKey`] if the backend refuses the key (not expected for keys built
    /// through this type).
    pub fn rcgen_key_pair(&self) -> Result<rcgen::KeyPair, KeyError> {
        let pkcs8 = rustls_pki_types::PrivatePkcs8KeyDer::from(self.pkcs8.as_slice());
        rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&pkcs8, self.key_type.rcgen_algorithm())
            .map_err(|e| KeyError::BadPrivateKey(e.to_string()))
    }

    /// The DER SubjectPublicKeyInfo of the matching public key.
    ///
    /// # Errors
    /// [`KeyError::BadPrivateKey`] if the backend refuses the key.
    pub fn public_key_der(&self) -> Result<Vec<u8>, KeyError> {
        Ok(rcgen::PublicKeyData::subject_public_key_info(
            &self.rcgen_key_pair()?,
        ))
    }
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PrivateKey({}, <redacted>)", self.key_type)
    }
}

fn key_type_of(pair: &rcgen::KeyPair) -> Result<KeyType, KeyError> {
    let alg = pair.algorithm();
    if alg == &rcgen::PKCS_ECDSA_P256_SHA256 {
        Ok(KeyType::EcP256)
    } else if alg == &rcgen::PKCS_ECDSA_P384_SHA384 {
        Ok(KeyType::EcP384)
    } else if alg == &rcgen::PKCS_RSA_SHA256 {
        Ok(KeyType::Rsa2048)
    } else {
        Err(KeyError::BadPrivateKey(format!(
            "unsupported algorithm {alg:?}"
        )))
    }
}

/// Elliptic curves a JWK may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EcCurve {
    /// NIST P-256 (`"P-256"`).
    P256,
    /// NIST P-384 (`"P-384"`).
    P384,
    /// NIST P-521 (`"P-521"`).
    P521,
}

impl EcCurve {
    /// The JWK `crv` name.
    pub fn jwk_name(self) -> &'static str {
        match self {
            Self::P256 => "P-256",
            Self::P384 => "P-384",
            Self::P521 => "P-521",
        }
    }

    /// Parses a JWK `crv` name.
    pub fn from_jwk_name(name: &str) -> Option<Self> {
        match name {
            "P-256" => Some(Self::P256),
            "P-384" => Some(Self::P384),
            "P-521" => Some(Self::P521),
            _ => None,
        }
    }

    /// Length in bytes of one coordinate.
    pub fn coordinate_len(self) -> usize {
        match self {
            Self::P256 => 32,
            Self::P384 => 48,
            Self::P521 => 66,
        }
    }
}

/// A public key in JWK terms: the parameters that appear in a bundle's JWK entries.
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum PublicKey {
    /// An elliptic-curve key with its affine coordinates (big-endian, fixed length).
    Ec {
        /// The curve.
        curve: EcCurve,
        /// X coordinate.
        x: Vec<u8>,
        /// Y coordinate.
        y: Vec<u8>,
    },
    /// An RSA key with modulus and public exponent (big-endian, no leading zeros).
    Rsa {
        /// Modulus.
        n: Vec<u8>,
        /// Public exponent.
        e: Vec<u8>,
    },
}

const OID_EC_PUBLIC_KEY: &str = "1.2.840.10045.2.1";
const OID_RSA_ENCRYPTION: &str = "1.2.840.113549.1.1.1";
const OID_P256: &str = "1.2.840.10045.3.1.7";
const OID_P384: &str = "1.3.132.0.34";
const OID_P521: &str = "1.3.132.0.35";

impl PublicKey {
    /// Reads a DER SubjectPublicKeyInfo (see [`PublicKey::from_spki`]). The bytes must also
    /// read as one to the crypto backend (strict DER) and to rcgen (an algorithm identifier
    /// in its canonical form: rsaEncryption with NULL parameters, or id-ecPublicKey with the
    /// named curve), as they do when a certificate is minted for the key: x509-parser lets
    /// some misencodings pass, such as an outer tag other than SEQUENCE.
    ///
    /// # Errors
    /// [`KeyError::BadPublicKey`] if it is not a usable EC (P-256/384/521) or RSA key.
    pub fn from_spki_der(der: &[u8]) -> Result<Self, KeyError> {
        let (rest, spki) = SubjectPublicKeyInfo::from_der(der)
            .map_err(|e| KeyError::BadPublicKey(e.to_string()))?;
        if !rest.is_empty() {
            return Err(KeyError::BadPublicKey(
                "trailing bytes after the key".into(),
            ));
        }
        let key = Self::from_spki(&spki)?;
        aws_lc_rs::signature::ParsedPublicKey::new(key.verification_algorithm(), der)
            .map_err(|e| KeyError::BadPublicKey(format!("not a DER SubjectPublicKeyInfo: {e}")))?;
        rcgen::SubjectPublicKeyInfo::from_der(der).map_err(|e| {
            KeyError::BadPublicKey(format!("not a canonical algorithm identifier: {e}"))
        })?;
        Ok(key)
    }

    /// The signature verification the key serves: ECDSA with its curve's hash, or RSA
    /// PKCS#1 v1.5 with SHA-256.
    #[must_use]
    pub fn verification_algorithm(
        &self,
    ) -> &'static dyn aws_lc_rs::signature::VerificationAlgorithm {
        use aws_lc_rs::signature as sig;
        match self {
            Self::Ec {
                curve: EcCurve::P256,
                ..
            } => &sig::ECDSA_P256_SHA256_ASN1,
            Self::Ec {
                curve: EcCurve::P384,
                ..
            } => &sig::ECDSA_P384_SHA384_ASN1,
            Self::Ec {
                curve: EcCurve::P521,
                ..
            } => &sig::ECDSA_P521_SHA512_ASN1,
            Self::Rsa { .. } => &sig::RSA_PKCS1_2048_8192_SHA256,
        }
    }

    /// Reads a parsed SubjectPublicKeyInfo (as found in a certificate). The key must be usable
    /// for verification (see [`PublicKey::check_usable`]), as the JWK entries of a bundle must:
    /// a key read here is one fedhub can publish in a bundle, certify and verify with.
    ///
    /// # Errors
    /// [`KeyError::BadPublicKey`] if it is not an EC (P-256/384/521) or RSA key, or not a
    /// usable one.
    pub fn from_spki(spki: &SubjectPublicKeyInfo<'_>) -> Result<Self, KeyError> {
        let key = Self::from_spki_unchecked(spki)?;
        key.check_usable()?;
        Ok(key)
    }

    /// Checks that the key can verify signatures: an EC point on its curve, or an RSA modulus
    /// and exponent the crypto backend accepts. The same rule decodes the JWK entries of a
    /// bundle, so a key that passes always survives the bundle's JSON round trip.
    ///
    /// # Errors
    /// [`KeyError::BadPublicKey`] saying what is wrong.
    pub fn check_usable(&self) -> Result<(), KeyError> {
        use aws_lc_rs::signature as sig;
        match self {
            Self::Ec { curve, x, y } => {
                let point = [&[0x04][..], x, y].concat();
                sig::ParsedPublicKey::new(self.verification_algorithm(), &point)
                    .map(drop)
                    .map_err(|_| {
                        KeyError::BadPublicKey(format!(
                            "the EC point is not on curve {}",
                            curve.jwk_name()
                        ))
                    })
            }
            Self::Rsa { n, e } => sig::RsaPublicKeyComponents { n, e }
                .to_parsed_public_key(&sig::RSA_PKCS1_2048_8192_SHA256)
                .map(drop)
                .map_err(|_| {
                    KeyError::BadPublicKey(format!(
                        "not a usable RSA public key (modulus of {} bits, exponent of {} bytes)",
                        n.len() * 8,
                        e.len()
                    ))
                }),
        }
    }

    fn from_spki_unchecked(spki: &SubjectPublicKeyInfo<'_>) -> Result<Self, KeyError> {
        let alg = spki.algorithm.algorithm.to_id_string();
        let bits: &[u8] = &spki.subject_public_key.data;
        match alg.as_str() {
            OID_EC_PUBLIC_KEY => {
                let curve_oid = spki
                    .algorithm
                    .parameters
                    .as_ref()
                    .and_then(|p| p.as_oid().ok())
                    .map(|o| o.to_id_string())
                    .ok_or_else(|| KeyError::BadPublicKey("EC key without a named curve".into()))?;
                let curve = match curve_oid.as_str() {
                    OID_P256 => EcCurve::P256,
                    OID_P384 => EcCurve::P384,
                    OID_P521 => EcCurve::P521,
                    other => {
                        return Err(KeyError::BadPublicKey(format!("unsupported curve {other}")));
                    }
                };
                let len = curve.coordinate_len();
                if bits.len() != 1 + 2 * len || bits[0] != 0x04 {
                    return Err(KeyError::BadPublicKey(
                        "EC point is not an uncompressed point of the curve's size".into(),
                    ));
                }
                Ok(Self::Ec {
                    curve,
                    x: bits[1..=len].to_vec(),
                    y: bits[1 + len..].to_vec(),
                })
            }
            OID_RSA_ENCRYPTION => {
                let parsed = spki
                    .parsed()
                    .map_err(|e| KeyError::BadPublicKey(e.to_string()))?;
                let x509_parser::public_key::PublicKey::RSA(rsa) = parsed else {
                    return Err(KeyError::BadPublicKey("malformed RSA key".into()));
                };
                Ok(Self::Rsa {
                    n: strip_leading_zeros(rsa.modulus).to_vec(),
                    e: strip_leading_zeros(rsa.exponent).to_vec(),
                })
            }
            other => Err(KeyError::BadPublicKey(format!(
                "unsupported key algorithm {other}"
            ))),
        }
    }

    /// The JWK `kty`: `EC` or `RSA`.
    pub fn kty(&self) -> &'static str {
        match self {
            Self::Ec { .. } => "EC",
            Self::Rsa { .. } => "RSA",
        }
    }

    /// The key parameters as base64url strings, as they appear in a JWK:
    /// `[("crv", ..), ("x", ..), ("y", ..)]` or `[("n", ..), ("e", ..)]`.
    pub fn jwk_params(&self) -> Vec<(&'static str, String)> {
        match self {
            Self::Ec { curve, x, y } => vec![
                ("crv", curve.jwk_name().to_owned()),
                ("x", URL_SAFE_NO_PAD.encode(x)),
                ("y", URL_SAFE_NO_PAD.encode(y)),
            ],
            Self::Rsa { n, e } => vec![
                ("n", URL_SAFE_NO_PAD.encode(n)),
                ("e", URL_SAFE_NO_PAD.encode(e)),
            ],
        }
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ec { curve, .. } => write!(f, "PublicKey(EC {})", curve.jwk_name()),
            Self::Rsa { n, .. } => write!(f, "PublicKey(RSA {} bits)", n.len() * 8),
        }
    }
}

fn strip_leading_zeros(bytes: &[u8]) -> &[u8] {
    let first = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    &bytes[first..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_round_trip_and_expose_jwk_params() {
        for key_type in [KeyType::EcP256, KeyType::EcP384, KeyType::Rsa2048] {
            let key = PrivateKey::generate(key_type).unwrap();
            assert_eq!(key.key_type(), key_type);
            let pem_text = key.to_pkcs8_pem();
            assert!(!pem_text.contains('\r'), "PEM uses LF line endings");
            let reloaded = PrivateKey::from_pkcs8_pem(&pem_text).unwrap();
            assert_eq!(reloaded.key_type(), key_type);
            let spki = key.public_key_der().unwrap();
            assert_eq!(spki, reloaded.public_key_der().unwrap());
            let public = PublicKey::from_spki_der(&spki).unwrap();
            match (key_type, &public) {
                (KeyType::EcP256, PublicKey::Ec { curve, x, y }) => {
                    assert_eq!(*curve, EcCurve::P256);
                    assert_eq!((x.len(), y.len()), (32, 32));
                }
                (KeyType::EcP384, PublicKey::Ec { curve, .. }) => assert_eq!(*curve, EcCurve::P384),
                (KeyType::Rsa2048, PublicKey::Rsa { n, e }) => {
                    assert_eq!(n.len(), 256);
                    assert_eq!(e.as_slice(), &[1, 0, 1]);
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    /// DER of `tag` and `contents` (short or two-byte lengths are enough here).
    fn der(tag: u8, contents: &[u8]) -> Vec<u8> {
        let len = u16::try_from(contents.len()).unwrap().to_be_bytes();
        let mut out = vec![tag];
        if contents.len() < 0x80 {
            out.push(len[1]);
        } else {
            out.extend([0x82, len[0], len[1]]);
        }
        out.extend_from_slice(contents);
        out
    }

    /// Found by the `node_public_key` and `bundle` fuzz targets: keys that parse but cannot
    /// verify were accepted, and then refused by minting and by the bundle's JWK decoding.
    #[test]
    fn unusable_keys_are_refused() {
        let key = PrivateKey::generate(KeyType::EcP256).unwrap();
        let mut spki = key.public_key_der().unwrap();
        *spki.last_mut().unwrap() ^= 1;
        let error = PublicKey::from_spki_der(&spki).unwrap_err();
        assert!(error.to_string().contains("not on curve P-256"), "{error}");
        *spki.last_mut().unwrap() ^= 1;
        PublicKey::from_spki_der(&spki).unwrap();
        let mut misencoded = spki.clone();
        misencoded[0] = 0xb0; // not SEQUENCE: x509-parser reads it, the backend does not
        let error = PublicKey::from_spki_der(&misencoded).unwrap_err();
        assert!(
            error.to_string().contains("not a DER SubjectPublicKeyInfo"),
            "{error}"
        );

        let rsa_algorithm = der(
            0x30,
            &[
                &der(
                    0x06,
                    &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01],
                )[..],
                &[5, 0],
            ]
            .concat(),
        );
        let rsa_spki = |exponent: &[u8]| {
            let mut n = vec![0xc5; 256];
            n.insert(0, 0);
            let key = der(0x30, &[der(0x02, &n), der(0x02, exponent)].concat());
            der(
                0x30,
                &[rsa_algorithm.clone(), der(0x03, &[&[0][..], &key].concat())].concat(),
            )
        };
        let error = PublicKey::from_spki_der(&rsa_spki(&[0])).unwrap_err();
        assert!(error.to_string().contains("not a usable RSA"), "{error}");
        let good = rsa_spki(&[1, 0, 1]);
        assert!(matches!(
            PublicKey::from_spki_der(&good),
            Ok(PublicKey::Rsa { .. })
        ));
        // rsaEncryption's parameters must be NULL (05 00); rcgen refuses anything else.
        let params = good.windows(2).position(|w| w == [5, 0]).unwrap();
        let mut odd = good.clone();
        odd[params] = 0x26;
        let error = PublicKey::from_spki_der(&odd).unwrap_err();
        assert!(
            error.to_string().contains("canonical algorithm identifier"),
            "{error}"
        );
    }

    #[test]
    fn debug_never_shows_key_material() {
        let key = PrivateKey::generate(KeyType::EcP256).unwrap();
        let shown = format!("{key:?}");
        assert_eq!(shown, "PrivateKey(ec-p256, <redacted>)");
    }

    #[test]
    fn rejects_garbage_keys_with_clear_errors() {
        assert!(matches!(
            PrivateKey::from_pkcs8_der(b"nope"),
            Err(KeyError::BadPrivateKey(_))
        ));
        assert!(matches!(
            PublicKey::from_spki_der(b"nope"),
            Err(KeyError::BadPublicKey(_))
        ));
        let err = "ed25519".parse::<KeyType>().unwrap_err();
        assert!(err.to_string().contains("ec-p256"), "{err}");
        let rsa_pem = "-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n";
        let err = PrivateKey::from_pkcs8_pem(rsa_pem).unwrap_err();
        assert!(err.to_string().contains("PKCS#8"), "{err}");
    }
}
