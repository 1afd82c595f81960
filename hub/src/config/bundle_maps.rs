//! `[[bundle_endpoint.bundle_maps]]`: bundle maps served by the bundle endpoint beside the
//! own bundle, each at its own path, holding the own bundle and the stored bundles of a list
//! of trust domains or of a federation group's members.

use std::collections::BTreeSet;

use fedhub_config::{ConfigError, invalid};
use fedhub_core::TrustDomain;
use serde::Deserialize;

/// The configuration key every bundle map problem is reported under.
const KEY: &str = "bundle_endpoint.bundle_maps";

/// The most bundle maps one bundle endpoint serves.
pub const MAX_BUNDLE_MAPS: usize = 64;

/// The most trust domains one bundle map may list.
pub const MAX_LISTED_TRUST_DOMAINS: usize = 1024;

/// The longest bundle map path, in bytes.
const MAX_PATH_LEN: usize = 256;

/// Which foreign bundles a bundle map holds besides the own bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BundleMapMembers {
    /// These trust domains (sorted, without repeats).
    TrustDomains(Vec<TrustDomain>),
    /// The members of this federation group, as they are when the map is built.
    Group(String),
}

/// One validated bundle map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleMapConfig {
    /// Its HTTP path on the bundle endpoint.
    pub path: String,
    /// The foreign trust domains whose stored bundles it holds; one without a stored bundle
    /// is left out. The own bundle is always in the map.
    pub members: BundleMapMembers,
}

/// One `[[bundle_endpoint.bundle_maps]]` table as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct BundleMapSettings {
    path: String,
    trust_domains: Option<Vec<String>>,
    group: Option<String>,
}

/// Validates the bundle maps: paths start with `/`, are not `/` nor the bundle's own path and
/// do not repeat; each map has exactly one of `trust_domains` and `group`.
pub(super) fn validate(
    settings: Vec<BundleMapSettings>,
    bundle_path: &str,
) -> Result<Vec<BundleMapConfig>, ConfigError> {
    if settings.len() > MAX_BUNDLE_MAPS {
        return Err(invalid(
            KEY,
            format!(
                "{} bundle maps configured; at most {MAX_BUNDLE_MAPS} are served",
                settings.len()
            ),
        ));
    }
    let mut paths = BTreeSet::new();
    settings
        .into_iter()
        .map(|map| {
            let path = map.path;
            let problem = |message: String| invalid(KEY, format!("map {path:?}: {message}"));
            if !path.starts_with('/') || path.len() > MAX_PATH_LEN {
                return Err(problem(format!(
                    "path must start with / and be at most {MAX_PATH_LEN} bytes, \
                     e.g. \"/maps/partners\""
                )));
            }
            if path == "/" || path == bundle_path {
                return Err(problem(format!(
                    "path is where the own bundle is served (bundle_endpoint.path = \
                     {bundle_path:?}); give the map a path of its own, e.g. \"/maps/partners\""
                )));
            }
            if path.contains(['?', '#']) || path.chars().any(char::is_whitespace) {
                return Err(problem(
                    "path may not hold a query, fragment or whitespace".into(),
                ));
            }
            if !paths.insert(path.clone()) {
                return Err(problem("path is given to two bundle maps".into()));
            }
            let members = match (map.trust_domains, map.group) {
                (Some(names), None) => {
                    if names.len() > MAX_LISTED_TRUST_DOMAINS {
                        return Err(problem(format!(
                            "lists {} trust domains; at most {MAX_LISTED_TRUST_DOMAINS} (use a \
                             federation group for more)",
                            names.len()
                        )));
                    }
                    let listed = names
                        .iter()
                        .map(|name| trust_domain(name).map_err(&problem))
                        .collect::<Result<BTreeSet<_>, _>>()?;
                    BundleMapMembers::TrustDomains(listed.into_iter().collect())
                }
                (None, Some(group)) => {
                    if group.is_empty() {
                        return Err(problem("group is empty; name a federation group".into()));
                    }
                    BundleMapMembers::Group(group)
                }
                (Some(_), Some(_)) | (None, None) => {
                    return Err(problem(
                        "give exactly one of trust_domains = [\"partner.example\", …] and \
                         group = \"<federation group>\""
                            .into(),
                    ));
                }
            };
            Ok(BundleMapConfig {
                path: path.clone(),
                members,
            })
        })
        .collect()
}

/// A listed trust domain: a bare name, not a SPIFFE ID.
fn trust_domain(name: &str) -> Result<TrustDomain, String> {
    match TrustDomain::new(name) {
        Ok(td) if td.name() == name => Ok(td),
        Ok(td) => Err(format!(
            "trust_domains holds {name:?}; give the bare name {:?}",
            td.name()
        )),
        Err(e) => Err(format!(
            "trust_domains holds {name:?}, which is not valid: {e}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use fedhub_tests::td;

    use super::*;
    use crate::config::HubConfig;

    fn maps(toml: &str) -> Result<Vec<BundleMapConfig>, String> {
        HubConfig::from_toml(&format!(
            "trust_domain = \"own.test\"\n[bundle_endpoint]\npath = \"/bundle\"\n{toml}"
        ))
        .map(|config| config.bundle_endpoint.unwrap().bundle_maps)
        .map_err(|e| e.to_string())
    }

    #[test]
    fn none_by_default_and_listed_or_grouped_when_configured() {
        assert_eq!(maps(""), Ok(vec![]));
        let configured = maps(
            "[[bundle_endpoint.bundle_maps]]\npath = \"/maps/partners\"\n\
             trust_domains = [\"b.test\", \"a.test\", \"b.test\"]\n\
             [[bundle_endpoint.bundle_maps]]\npath = \"/maps/eu\"\ngroup = \"eu\"\n",
        )
        .unwrap();
        assert_eq!(
            configured,
            [
                BundleMapConfig {
                    path: "/maps/partners".into(),
                    members: BundleMapMembers::TrustDomains(vec![td("a.test"), td("b.test")]),
                },
                BundleMapConfig {
                    path: "/maps/eu".into(),
                    members: BundleMapMembers::Group("eu".into()),
                },
            ]
        );
    }

    #[test]
    fn bad_maps_are_refused_naming_the_key_the_map_and_the_fix() {
        let one = |body: &str| format!("[[bundle_endpoint.bundle_maps]]\n{body}\n");
        for (toml, expected) in [
            (one("path = \"maps\"\ngroup = \"g\""), "must start with /"),
            (
                one("path = \"/\"\ngroup = \"g\""),
                "where the own bundle is served",
            ),
            (
                one("path = \"/bundle\"\ngroup = \"g\""),
                "a path of its own",
            ),
            (one("path = \"/m?x=1\"\ngroup = \"g\""), "query"),
            (one("path = \"/m\""), "exactly one of trust_domains"),
            (
                one("path = \"/m\"\ngroup = \"g\"\ntrust_domains = []"),
                "exactly one of trust_domains",
            ),
            (
                one("path = \"/m\"\ngroup = \"\""),
                "name a federation group",
            ),
            (
                one("path = \"/m\"\ntrust_domains = [\"spiffe://a.test\"]"),
                "give the bare name \"a.test\"",
            ),
            (
                one("path = \"/m\"\ntrust_domains = [\"A.test\"]"),
                "not valid",
            ),
            (
                format!(
                    "{}{}",
                    one("path = \"/m\"\ngroup = \"g\""),
                    one("path = \"/m\"\ngroup = \"h\"")
                ),
                "given to two bundle maps",
            ),
            (one("path = \"/m\"\ngroup = \"g\"\ngrup = \"x\""), "grup"),
        ] {
            let error = maps(&toml).unwrap_err();
            assert!(error.contains(expected), "{toml}: {error}");
            if !expected.contains("grup") {
                assert!(error.contains("bundle_endpoint.bundle_maps"), "{error}");
            }
        }
        let many: String = (0..=MAX_BUNDLE_MAPS)
            .map(|n| one(&format!("path = \"/m{n}\"\ngroup = \"g\"")))
            .collect();
        assert!(maps(&many).unwrap_err().contains("at most 64"));
    }
}
