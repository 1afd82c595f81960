//! The SPIFFE bundle endpoint as both sides of federation name it: its URL (FED-14) and the
//! names of its two profiles.
//!
//! [`BundleEndpointUrl`] is the one home of the URL rule ("`https`, a host, no user info"):
//! the registry stores it, the admin API and the bundle endpoint client build it, and all of
//! them report a bad URL with the wording of [`EndpointUrlError`]. [`ProfileName`] names a
//! profile; what the profile carries depends on the side: the hub serves its own endpoint with
//! a serving profile (certificate files, or its SVID), and fetches a foreign one with a fetch
//! profile (extra roots, or the endpoint's SPIFFE ID).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use url::Url;

/// The URL of a SPIFFE bundle endpoint: `https`, naming a host, without a user name or
/// password (FED-14). Path, port and query are free.
///
/// Built only through [`parse`](Self::parse) (or `TryFrom<Url>`, `FromStr`, `Deserialize`),
/// so holding one means the checks passed.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BundleEndpointUrl(Url);

/// Why a text is not a bundle endpoint URL. The messages never repeat the URL, which may hold a
/// password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EndpointUrlError {
    /// The text does not parse as a URL.
    #[error("bundle endpoint URL is not a URL ({0}); give one like https://example.org/bundle")]
    NotAUrl(url::ParseError),
    /// The scheme is not `https`.
    #[error("bundle endpoint URL must start with https:// (its scheme is {scheme})")]
    NotHttps {
        /// The scheme given.
        scheme: String,
    },
    /// The URL names no host.
    #[error("bundle endpoint URL must name a host")]
    NoHost,
    /// The URL carries a user name or password.
    #[error(
        "bundle endpoint URL must not carry a user name or password (user:password@); a bundle \
         endpoint needs no credentials"
    )]
    Credentials,
}

impl BundleEndpointUrl {
    /// Parses and checks `text`.
    ///
    /// # Errors
    /// [`EndpointUrlError`] naming the broken rule.
    pub fn parse(text: &str) -> Result<Self, EndpointUrlError> {
        Url::parse(text)
            .map_err(EndpointUrlError::NotAUrl)
            .and_then(Self::try_from)
    }

    /// The URL.
    pub fn as_url(&self) -> &Url {
        &self.0
    }

    /// The URL as text.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    /// The host, never empty.
    pub fn host(&self) -> &str {
        self.0.host_str().unwrap_or_default()
    }

    /// The URL, giving up the guarantee.
    pub fn into_url(self) -> Url {
        self.0
    }
}

impl TryFrom<Url> for BundleEndpointUrl {
    type Error = EndpointUrlError;

    fn try_from(url: Url) -> Result<Self, EndpointUrlError> {
        if url.scheme() != "https" {
            return Err(EndpointUrlError::NotHttps {
                scheme: url.scheme().to_owned(),
            });
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(EndpointUrlError::Credentials);
        }
        // The URL parser refuses an https URL without a host; checked all the same.
        if url.host_str().is_none_or(str::is_empty) {
            return Err(EndpointUrlError::NoHost);
        }
        Ok(Self(url))
    }
}

impl FromStr for BundleEndpointUrl {
    type Err = EndpointUrlError;

    fn from_str(text: &str) -> Result<Self, EndpointUrlError> {
        Self::parse(text)
    }
}

impl fmt::Display for BundleEndpointUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl AsRef<Url> for BundleEndpointUrl {
    fn as_ref(&self) -> &Url {
        &self.0
    }
}

impl Serialize for BundleEndpointUrl {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for BundleEndpointUrl {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// The name of a SPIFFE bundle endpoint profile: how the endpoint is authenticated. On the
/// wire and in configuration `https_web` or `https_spiffe`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProfileName {
    /// `https_web`: a Web PKI certificate for the URL host.
    HttpsWeb,
    /// `https_spiffe`: an X509-SVID of the endpoint's SPIFFE ID.
    HttpsSpiffe,
}

/// A text that names no profile.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a profile: use \"https_spiffe\" or \"https_web\"")]
pub struct UnknownProfile(pub String);

impl ProfileName {
    /// The name as written in configuration and on the wire.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::HttpsWeb => "https_web",
            Self::HttpsSpiffe => "https_spiffe",
        }
    }
}

impl fmt::Display for ProfileName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ProfileName {
    type Err = UnknownProfile;

    fn from_str(text: &str) -> Result<Self, UnknownProfile> {
        match text {
            "https_web" => Ok(Self::HttpsWeb),
            "https_spiffe" => Ok(Self::HttpsSpiffe),
            other => Err(UnknownProfile(other.to_owned())),
        }
    }
}

/// Where a federation relationship takes its foreign bundle from: on the wire `direct` (the
/// default) or `relay`.
///
/// `direct`: the bundle endpoint serves the trust domain's own bundle. `relay`: the endpoint
/// is a relay that serves a SPIFFE bundle map (TDB §5) holding the bundles of several trust
/// domains; the relationship takes the entry of its own trust domain from it, and nothing
/// else. The profile then authenticates the relay itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FetchSource {
    /// The endpoint serves the trust domain's bundle.
    #[default]
    Direct,
    /// The endpoint is a relay serving a bundle map.
    Relay,
}

/// A text that names no [`FetchSource`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a bundle source: use \"direct\" or \"relay\"")]
pub struct UnknownSource(pub String);

impl FetchSource {
    /// The name as written on the wire and stored.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Direct => "direct",
            Self::Relay => "relay",
        }
    }
}

impl fmt::Display for FetchSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for FetchSource {
    type Err = UnknownSource;

    fn from_str(text: &str) -> Result<Self, UnknownSource> {
        match text {
            "direct" => Ok(Self::Direct),
            "relay" => Ok(Self::Relay),
            other => Err(UnknownSource(other.to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(text: &str) -> String {
        BundleEndpointUrl::parse(text)
            .map(|url| panic!("{text}: accepted as {url}"))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn urls_must_be_https_with_a_host_and_no_credentials() {
        assert!(refused("http://example.org/bundle").contains("must start with https://"));
        assert!(refused("ftp://example.org/").contains("its scheme is ftp"));
        let credentials = refused("https://admin:s3cret@example.org/");
        assert!(
            credentials.contains("user name or password"),
            "{credentials}"
        );
        assert!(
            !credentials.contains("s3cret"),
            "password leaked: {credentials}"
        );
        assert!(refused("https://user@example.org/").contains("user name or password"));
        assert!(refused("not a url").contains("is not a URL"));
        assert!(refused("https://").contains("is not a URL"));
        assert_eq!(
            BundleEndpointUrl::try_from(Url::parse("mailto:a@example.org").unwrap()),
            Err(EndpointUrlError::NotHttps {
                scheme: "mailto".into()
            })
        );
    }

    #[test]
    fn other_url_parts_are_free() {
        for text in [
            "https://example.org",
            "https://example.org:8443/a/b?x=1",
            "https://127.0.0.1/",
            "https://[::1]:9/bundle",
        ] {
            let url = BundleEndpointUrl::parse(text).unwrap();
            assert!(!url.host().is_empty());
            assert_eq!(url, url.as_str().parse().unwrap());
        }
    }

    #[test]
    fn urls_are_strings_in_serde_and_checked_on_the_way_in() {
        let url = BundleEndpointUrl::parse("https://example.org/b").unwrap();
        let json = serde_json::to_string(&url).unwrap();
        assert_eq!(json, "\"https://example.org/b\"");
        assert_eq!(
            serde_json::from_str::<BundleEndpointUrl>(&json).unwrap(),
            url
        );
        let error = serde_json::from_str::<BundleEndpointUrl>("\"http://example.org/\"")
            .unwrap_err()
            .to_string();
        assert!(error.contains("must start with https://"), "{error}");
    }

    #[test]
    fn profile_names_round_trip() {
        for name in [ProfileName::HttpsWeb, ProfileName::HttpsSpiffe] {
            assert_eq!(name.as_str().parse::<ProfileName>(), Ok(name));
            assert_eq!(serde_json::to_string(&name).unwrap(), format!("\"{name}\""));
        }
        let error = "https".parse::<ProfileName>().unwrap_err().to_string();
        assert_eq!(
            error,
            "\"https\" is not a profile: use \"https_spiffe\" or \"https_web\""
        );
    }

    #[test]
    fn fetch_sources_round_trip_and_default_to_direct() {
        for source in [FetchSource::Direct, FetchSource::Relay] {
            assert_eq!(source.as_str().parse::<FetchSource>(), Ok(source));
            assert_eq!(
                serde_json::to_string(&source).unwrap(),
                format!("\"{source}\"")
            );
        }
        assert_eq!(FetchSource::default(), FetchSource::Direct);
        let error = "map".parse::<FetchSource>().unwrap_err().to_string();
        assert_eq!(
            error,
            "\"map\" is not a bundle source: use \"direct\" or \"relay\""
        );
    }
}
