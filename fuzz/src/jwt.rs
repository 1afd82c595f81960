//! JWT-SVID fixtures: the bundles a token is validated against, and a signer for arbitrary
//! header and payload bytes, so that fuzzed claims get past the signature check.

use aws_lc_rs::encoding::AsDer as _;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self, EcdsaKeyPair, EcdsaSigningAlgorithm, KeyPair as _, RsaKeyPair};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use fedhub_core::keys::EcCurve;
use fedhub_core::{Bundle, BundleSet, JwtAuthority, PublicKey, TrustDomain};

use crate::{PARTNER_TRUST_DOMAIN, TRUST_DOMAIN, fixture};

/// The audience the targets validate for (checklist §11.5).
pub const AUDIENCE: &str = "reports";

/// One JWT key of the fixtures: (`kid`, fixture file, algorithm).
pub struct Key {
    /// The key id in the bundle.
    pub kid: &'static str,
    /// The PKCS#8 DER file under `fuzz/fixtures/`.
    pub file: &'static str,
    /// The JWS `alg` it signs with.
    pub alg: &'static str,
}

/// The JWT authorities of [`TRUST_DOMAIN`].
pub const KEYS: [Key; 4] = [
    Key {
        kid: "k1",
        file: "jwt-p256.pk8",
        alg: "ES256",
    },
    Key {
        kid: "k384",
        file: "jwt-p384.pk8",
        alg: "ES384",
    },
    Key {
        kid: "k521",
        file: "jwt-p521.pk8",
        alg: "ES512",
    },
    Key {
        kid: "krsa",
        file: "jwt-rsa.pk8",
        alg: "RS256",
    },
];

/// [`PARTNER_TRUST_DOMAIN`]'s only key: P-256 under the `kid` `k1`, like [`TRUST_DOMAIN`]'s
/// (checklist §11.5 vector 20: bundles are never pooled).
pub const PARTNER_KEY: Key = Key {
    kid: "k1",
    file: "jwt-partner-p256.pk8",
    alg: "ES256",
};

fn ecdsa_algorithm(alg: &str) -> Option<&'static EcdsaSigningAlgorithm> {
    match alg {
        "ES256" => Some(&signature::ECDSA_P256_SHA256_FIXED_SIGNING),
        "ES384" => Some(&signature::ECDSA_P384_SHA384_FIXED_SIGNING),
        "ES512" => Some(&signature::ECDSA_P521_SHA512_FIXED_SIGNING),
        _ => None,
    }
}

/// The public key of a fixture key, in JWK terms.
///
/// # Panics
/// When the fixture is missing or unreadable.
pub fn public_key(key: &Key) -> PublicKey {
    let der = fixture(key.file);
    if let Some(algorithm) = ecdsa_algorithm(key.alg) {
        let pair = EcdsaKeyPair::from_pkcs8(algorithm, &der).expect("EC fixture key");
        let point = pair.public_key().as_ref();
        let curve = match key.alg {
            "ES256" => EcCurve::P256,
            "ES384" => EcCurve::P384,
            _ => EcCurve::P521,
        };
        let len = curve.coordinate_len();
        PublicKey::Ec {
            curve,
            x: point[1..=len].to_vec(),
            y: point[1 + len..].to_vec(),
        }
    } else {
        let pair = RsaKeyPair::from_pkcs8(&der).expect("RSA fixture key");
        PublicKey::from_spki_der(pair.public_key().as_der().expect("RSA SPKI").as_ref())
            .expect("RSA fixture public key")
    }
}

/// The bundles of [`TRUST_DOMAIN`] ([`KEYS`]) and [`PARTNER_TRUST_DOMAIN`] ([`PARTNER_KEY`]).
///
/// # Panics
/// When a fixture is missing.
pub fn bundles() -> BundleSet {
    let mut own = Bundle::new(TrustDomain::new(TRUST_DOMAIN).expect("trust domain"));
    for key in &KEYS {
        own.add_jwt_authority(JwtAuthority::new(key.kid, public_key(key)));
    }
    let mut partner = Bundle::new(TrustDomain::new(PARTNER_TRUST_DOMAIN).expect("trust domain"));
    partner.add_jwt_authority(JwtAuthority::new(PARTNER_KEY.kid, public_key(&PARTNER_KEY)));
    [own, partner].into_iter().collect()
}

/// ECDSA signers for the fixture keys of [`TRUST_DOMAIN`], by `alg`.
pub struct Signers {
    ecdsa: Vec<(&'static str, EcdsaKeyPair)>,
    rsa: RsaKeyPair,
    rng: SystemRandom,
}

impl Signers {
    /// Loads the fixture keys.
    ///
    /// # Panics
    /// When a fixture is missing.
    pub fn load() -> Self {
        let ecdsa = KEYS
            .iter()
            .filter_map(|key| {
                let algorithm = ecdsa_algorithm(key.alg)?;
                let pair = EcdsaKeyPair::from_pkcs8(algorithm, &fixture(key.file))
                    .expect("EC fixture key");
                Some((key.alg, pair))
            })
            .collect();
        let rsa = RsaKeyPair::from_pkcs8(&fixture("jwt-rsa.pk8")).expect("RSA fixture key");
        Self {
            ecdsa,
            rsa,
            rng: SystemRandom::new(),
        }
    }

    /// The compact JWS of `header` and `payload` (raw bytes, base64url-encoded here), signed
    /// with the fixture key of `alg`: ES256, ES384 and ES512 with their EC keys; RS256 with the
    /// RSA key only when `rsa` is set (RSA signing is slow); anything else with the P-256 key,
    /// which then fails verification.
    ///
    /// # Panics
    /// When the crypto backend fails to sign.
    pub fn sign(&self, alg: &str, header: &[u8], payload: &[u8], rsa: bool) -> String {
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(payload)
        );
        let signature = if rsa && alg == "RS256" {
            let mut out = vec![0; self.rsa.public_modulus_len()];
            self.rsa
                .sign(
                    &signature::RSA_PKCS1_SHA256,
                    &self.rng,
                    input.as_bytes(),
                    &mut out,
                )
                .expect("RSA signature");
            out
        } else {
            let pair = self
                .ecdsa
                .iter()
                .find(|(name, _)| *name == alg)
                .or_else(|| self.ecdsa.first())
                .map(|(_, pair)| pair)
                .expect("an EC fixture key");
            pair.sign(&self.rng, input.as_bytes())
                .expect("ECDSA signature")
                .as_ref()
                .to_vec()
        };
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature))
    }
}
