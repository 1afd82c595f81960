//! The SDS secrets of one caller view, by resource name (see the naming rules in
//! [`crate::sds`]).

use std::collections::BTreeSet;

use envoy_types::pb::envoy::config::core::v3::data_source::Specifier;
use envoy_types::pb::envoy::config::core::v3::{DataSource, TypedExtensionConfig};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::spiffe_cert_validator_config::TrustDomain as ValidatorTrustDomain;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, Secret, SpiffeCertValidatorConfig, TlsCertificate, secret,
};
use envoy_types::util::pack_any;
use fedhub_core::Bundle;

use super::{ALL_BUNDLES, DEFAULT_SVID, ROOT_CA, SPIFFE_VALIDATOR};
use crate::cache::{CallerView, Identity};

/// The secrets named in `names` that the caller may have, in name order; names that are
/// unknown or not the caller's are left out (xDS: the client waits for them). No names means
/// every SVID of the caller by its SPIFFE ID and every bundle it holds by `spiffe://<td>`.
pub(crate) fn secrets(view: &CallerView<'_>, names: &BTreeSet<String>) -> Vec<Secret> {
    if names.is_empty() {
        let svids = view
            .identities()
            .iter()
            .map(|identity| tls_certificate(identity.spiffe_id.as_str(), identity));
        let bundles = view
            .bundles()
            .filter_map(|bundle| trusted_ca(&bundle.trust_domain().id_string(), bundle));
        return svids.chain(bundles).collect();
    }
    names.iter().filter_map(|name| secret(view, name)).collect()
}

/// The secret called `name`, if the caller has it.
fn secret(view: &CallerView<'_>, name: &str) -> Option<Secret> {
    match name {
        DEFAULT_SVID => view
            .identities()
            .first()
            .map(|identity| tls_certificate(name, identity)),
        ROOT_CA => trusted_ca(name, view.own_bundle()),
        ALL_BUNDLES => spiffe_validator(name, view.bundles()),
        _ => match view
            .identities()
            .iter()
            .find(|identity| identity.spiffe_id.as_str() == name)
        {
            Some(identity) => Some(tls_certificate(name, identity)),
            None => view
                .bundles()
                .find(|bundle| bundle.trust_domain().id_string() == name)
                .and_then(|bundle| trusted_ca(name, bundle)),
        },
    }
}

/// A `tls_certificate`: the identity's chain (leaf first) and PKCS#8 key, as inline PEM.
fn tls_certificate(name: &str, identity: &Identity) -> Secret {
    crate::health::count_served("x509", 1);
    let svid = &identity.svid;
    let certificate = TlsCertificate {
        certificate_chain: Some(inline(svid.chain_pem().into_bytes())),
        private_key: Some(inline(svid.key().to_pkcs8_pem().as_bytes().to_vec())),
        ..TlsCertificate::default()
    };
    named(name, secret::Type::TlsCertificate(certificate))
}

/// A `validation_context` trusting the bundle's X.509 authorities (`trusted_ca`); none for a
/// bundle without any, which Envoy would reject.
fn trusted_ca(name: &str, bundle: &Bundle) -> Option<Secret> {
    let context = CertificateValidationContext {
        trusted_ca: Some(inline(x509_pem(bundle)?)),
        ..CertificateValidationContext::default()
    };
    Some(named(name, secret::Type::ValidationContext(context)))
}

/// A `validation_context` with Envoy's SPIFFE certificate validator: one trust domain entry
/// per bundle with X.509 authorities, each anchoring only its own trust domain's SVIDs.
fn spiffe_validator<'a>(name: &str, bundles: impl Iterator<Item = &'a Bundle>) -> Option<Secret> {
    let trust_domains: Vec<ValidatorTrustDomain> = bundles
        .filter_map(|bundle| {
            Some(ValidatorTrustDomain {
                name: bundle.trust_domain().name().to_owned(),
                trust_bundle: Some(inline(x509_pem(bundle)?)),
                ..ValidatorTrustDomain::default()
            })
        })
        .collect();
    if trust_domains.is_empty() {
        return None;
    }
    let config = SpiffeCertValidatorConfig {
        trust_domains,
        trust_bundles: None,
    };
    let context = CertificateValidationContext {
        custom_validator_config: Some(TypedExtensionConfig {
            name: SPIFFE_VALIDATOR.to_owned(),
            typed_config: Some(pack_any(config)),
        }),
        ..CertificateValidationContext::default()
    };
    Some(named(name, secret::Type::ValidationContext(context)))
}

/// The bundle's X.509 authorities as PEM, `None` when it has none.
fn x509_pem(bundle: &Bundle) -> Option<Vec<u8>> {
    (!bundle.x509_authorities().is_empty()).then(|| bundle.x509_authorities_pem().into_bytes())
}

fn named(name: &str, kind: secret::Type) -> Secret {
    Secret {
        name: name.to_owned(),
        r#type: Some(kind),
    }
}

fn inline(bytes: Vec<u8>) -> DataSource {
    DataSource {
        specifier: Some(Specifier::InlineBytes(bytes)),
        watched_directory: None,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use fedhub_core::Bundle;
    use prost::{Message, Name};

    use super::*;
    use crate::attest::Selectors;
    use crate::cache::Snapshot;
    use crate::testing::{domain, identity, td};

    /// own.test with two identities for uid 1 (federating with a.test) and one for uid 2;
    /// a.test and b.test held, c.test held without X.509 authorities.
    fn snapshot() -> Snapshot {
        let (ca, own) = domain("own.test");
        let federated = [
            domain("a.test").1,
            domain("b.test").1,
            Bundle::new(td("c.test")),
        ]
        .into_iter()
        .map(|bundle| (bundle.trust_domain().clone(), Arc::new(bundle)))
        .collect::<BTreeMap<_, _>>();
        Snapshot {
            own_bundle: Arc::new(own),
            federated,
            identities: vec![
                identity(&ca, "/web", &["unix:uid:1"], &["a.test", "c.test"]),
                identity(&ca, "/api", &["unix:uid:1"], &[]),
                identity(&ca, "/db", &["unix:uid:2"], &["b.test"]),
            ],
        }
    }

    fn uid1() -> Selectors {
        ["unix:uid:1"].into_iter().collect()
    }

    fn names(list: &[&str]) -> BTreeSet<String> {
        list.iter().map(|name| (*name).to_owned()).collect()
    }

    fn listed(secrets: &[Secret]) -> Vec<&str> {
        secrets.iter().map(|s| s.name.as_str()).collect()
    }

    fn pem_ders(source: Option<&DataSource>) -> Vec<Vec<u8>> {
        let Some(Specifier::InlineBytes(bytes)) = source.and_then(|s| s.specifier.as_ref()) else {
            panic!("not inline bytes: {source:?}");
        };
        pem::parse_many(bytes)
            .unwrap()
            .into_iter()
            .map(pem::Pem::into_contents)
            .collect()
    }

    fn validation_context(secret: &Secret) -> &CertificateValidationContext {
        match &secret.r#type {
            Some(secret::Type::ValidationContext(context)) => context,
            other => panic!("not a validation context: {other:?}"),
        }
    }

    fn roots(bundle: &Bundle) -> Vec<Vec<u8>> {
        bundle
            .x509_authorities()
            .iter()
            .map(|a| a.der().to_vec())
            .collect()
    }

    #[test]
    fn svids_are_served_by_spiffe_id_and_the_default_name() {
        let snapshot = snapshot();
        let view = snapshot.caller_view(&uid1());
        let secrets = secrets(
            &view,
            &names(&["spiffe://own.test/api", "default", "spiffe://own.test/db"]),
        );
        assert_eq!(listed(&secrets), ["default", "spiffe://own.test/api"]);
        let key_of = |secret: &Secret| match &secret.r#type {
            Some(secret::Type::TlsCertificate(cert)) => cert.private_key.clone(),
            other => panic!("not a certificate: {other:?}"),
        };
        let web = &snapshot.identities[0].svid;
        let Some(Specifier::InlineBytes(key)) = key_of(&secrets[0]).unwrap().specifier else {
            panic!("key not inline");
        };
        assert_eq!(key, web.key().to_pkcs8_pem().as_bytes(), "default = first");
        let Some(secret::Type::TlsCertificate(api)) = &secrets[1].r#type else {
            panic!("not a certificate");
        };
        assert_eq!(
            pem_ders(api.certificate_chain.as_ref()),
            snapshot.identities[1].svid.chain()
        );
    }

    #[test]
    fn bundles_are_served_as_trusted_cas_by_trust_domain_id_and_rootca() {
        let snapshot = snapshot();
        let view = snapshot.caller_view(&uid1());
        let secrets = secrets(
            &view,
            &names(&[
                "ROOTCA",
                "spiffe://a.test",
                "spiffe://b.test",
                "spiffe://c.test",
                "spiffe://own.test",
            ]),
        );
        // b.test is not the caller's; c.test has no X.509 authorities.
        assert_eq!(
            listed(&secrets),
            ["ROOTCA", "spiffe://a.test", "spiffe://own.test"]
        );
        let own = roots(&snapshot.own_bundle);
        assert_eq!(
            pem_ders(validation_context(&secrets[0]).trusted_ca.as_ref()),
            own
        );
        assert_eq!(
            pem_ders(validation_context(&secrets[2]).trusted_ca.as_ref()),
            own
        );
        let a = roots(&snapshot.federated[&td("a.test")]);
        assert_eq!(
            pem_ders(validation_context(&secrets[1]).trusted_ca.as_ref()),
            a
        );
        assert!(
            validation_context(&secrets[1])
                .custom_validator_config
                .is_none()
        );
    }

    #[test]
    fn all_is_a_spiffe_validator_with_one_entry_per_trust_domain() {
        let snapshot = snapshot();
        let view = snapshot.caller_view(&uid1());
        let secrets = secrets(&view, &names(&["ALL"]));
        let context = validation_context(&secrets[0]);
        assert!(context.trusted_ca.is_none());
        let custom = context.custom_validator_config.as_ref().unwrap();
        assert_eq!(custom.name, "envoy.tls.cert_validator.spiffe");
        let any = custom.typed_config.as_ref().unwrap();
        assert_eq!(any.type_url, SpiffeCertValidatorConfig::type_url());
        let config = SpiffeCertValidatorConfig::decode(any.value.as_slice()).unwrap();
        let tds: Vec<&str> = config
            .trust_domains
            .iter()
            .map(|t| t.name.as_str())
            .collect();
        assert_eq!(
            tds,
            ["own.test", "a.test"],
            "c.test has no X.509 authorities"
        );
        assert_eq!(
            pem_ders(config.trust_domains[1].trust_bundle.as_ref()),
            roots(&snapshot.federated[&td("a.test")])
        );
    }

    #[test]
    fn no_names_means_every_svid_and_every_bundle_by_id() {
        let snapshot = snapshot();
        let view = snapshot.caller_view(&uid1());
        assert_eq!(
            listed(&secrets(&view, &BTreeSet::new())),
            [
                "spiffe://own.test/web",
                "spiffe://own.test/api",
                "spiffe://own.test",
                "spiffe://a.test"
            ]
        );
    }

    #[test]
    fn unknown_names_are_left_out() {
        let snapshot = snapshot();
        let view = snapshot.caller_view(&uid1());
        let wanted = names(&[
            "nope",
            "spiffe://own.test/nope",
            "spiffe://zzz.test",
            "rootca",
        ]);
        assert!(secrets(&view, &wanted).is_empty());
    }

    #[test]
    fn resources_pack_as_secrets() {
        let snapshot = snapshot();
        let view = snapshot.caller_view(&uid1());
        let secret = secrets(&view, &names(&["ROOTCA"])).remove(0);
        let any = pack_any(secret.clone());
        assert_eq!(any.type_url, super::super::SECRET_TYPE_URL);
        assert_eq!(Secret::decode(any.value.as_slice()).unwrap(), secret);
    }
}
