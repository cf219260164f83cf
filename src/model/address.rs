//! A slot's or node's address, parsed once when the config loads.
//!
//! **The rule** (the same for every router): an address names a server, `http://HOST[:PORT]`
//! or `https://HOST[:PORT]`, nothing more. The port defaults to the scheme's (80, 443); a
//! trailing `/` is allowed and dropped. A path, a query, a fragment or credentials are
//! refused: every router forwards a request to the server with the request's own path, and
//! cutover's probes add the health and version paths to the address. (Before this rule the
//! embedded proxy prefixed a path and the other routers refused one.)

use std::fmt;

/// An `http(s)://host[:port]` address. Display gives the address as written, without a
/// trailing `/` (what messages and router state show).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Address {
    url: url::Url,
    /// `scheme://host[:port]` as written, without a trailing `/`.
    text: String,
}

impl Address {
    /// Parse an address by [the rule](self). The error says what is wrong, in a sentence
    /// that names the address.
    pub fn parse(s: &str) -> Result<Address, String> {
        let trimmed = s.trim();
        if !(trimmed.starts_with("http://") || trimmed.starts_with("https://")) {
            return Err(format!("`{s}` is not an http:// or https:// address"));
        }
        let url = url::Url::parse(trimmed).map_err(|e| match e {
            url::ParseError::EmptyHost => format!("`{s}` has no host"),
            url::ParseError::InvalidPort => format!("`{s}` has a bad port"),
            e => format!("`{s}` is not a usable address: {e}"),
        })?;
        let host = url.host_str().unwrap_or_default();
        if host.is_empty() {
            return Err(format!("`{s}` has no host"));
        }
        // Hosts go into proxy config files and commands: letters, digits, `.`, `-`, `_`, or
        // an IPv6 literal in brackets; nothing a config language would read as syntax.
        let safe = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_');
        let v6 = host.starts_with('[') && host.ends_with(']');
        if !(v6 || host.chars().all(safe)) {
            return Err(format!("`{s}` has no usable host"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(format!(
                "`{s}` holds credentials; an address is http(s)://HOST[:PORT] only"
            ));
        }
        if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
            return Err(format!(
                "`{s}` has a path; an address is http(s)://HOST[:PORT] only (routers forward \
                 each request's own path; put a path in the health or version URL instead)"
            ));
        }
        let text = trimmed.trim_end_matches('/').to_string();
        Ok(Address { url, text })
    }

    /// `http` or `https`.
    pub fn scheme(&self) -> &str {
        self.url.scheme()
    }

    pub fn is_https(&self) -> bool {
        self.url.scheme() == "https"
    }

    /// The host as written in a URL: `127.0.0.1`, `blue.internal`, `[::1]`.
    pub fn host(&self) -> &str {
        self.url.host_str().unwrap_or_default()
    }

    /// The host without IPv6 brackets (`::1`), for commands that take a bare host.
    pub fn bare_host(&self) -> &str {
        let h = self.host();
        h.strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(h)
    }

    /// The port, the scheme's default when none is written.
    pub fn port(&self) -> u16 {
        self.url.port_or_known_default().unwrap_or(80)
    }

    /// `host:port`, always with the port (what a proxy's upstream line takes).
    pub fn authority(&self) -> String {
        format!("{}:{}", self.host(), self.port())
    }

    /// The address followed by `path` (which starts with `/`).
    pub fn join(&self, path: &str) -> String {
        format!("{}{path}", self.text)
    }

    /// The address as written, without a trailing `/`.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    pub fn url(&self) -> &url::Url {
        &self.url
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl std::str::FromStr for Address {
    type Err = String;
    fn from_str(s: &str) -> Result<Address, String> {
        Address::parse(s)
    }
}

impl PartialEq<str> for Address {
    fn eq(&self, other: &str) -> bool {
        self.text == other.trim_end_matches('/')
    }
}

impl PartialEq<&str> for Address {
    fn eq(&self, other: &&str) -> bool {
        *self == **other
    }
}

impl serde::Serialize for Address {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> serde::Deserialize<'de> for Address {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Address, D::Error> {
        let s = String::deserialize(d)?;
        Address::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_is_scheme_host_and_port() {
        let a = Address::parse("http://127.0.0.1:9001/").expect("valid");
        assert_eq!(a.as_str(), "http://127.0.0.1:9001");
        assert_eq!(a.authority(), "127.0.0.1:9001");
        assert_eq!(a.join("/healthz"), "http://127.0.0.1:9001/healthz");
        let a = Address::parse("https://blue.internal").expect("valid");
        assert_eq!(
            (a.port(), a.authority().as_str()),
            (443, "blue.internal:443")
        );
        let a = Address::parse("http://[::1]:8080").expect("valid");
        assert_eq!((a.host(), a.bare_host(), a.port()), ("[::1]", "::1", 8080));
    }

    #[test]
    fn paths_credentials_and_other_schemes_are_refused_with_a_reason() {
        for (bad, why) in [
            ("http://127.0.0.1:9001/app", "has a path"),
            ("http://127.0.0.1:9001/?a=1", "has a path"),
            ("ftp://127.0.0.1", "not an http"),
            ("127.0.0.1:9001", "not an http"),
            ("http://", "no host"),
            ("http://127.0.0.1:99999", "bad port"),
            ("http://u:p@127.0.0.1", "credentials"),
            ("http://a;b{c}:80", "no usable host"),
            ("http://$host:80", "no usable host"),
        ] {
            let e = Address::parse(bad).expect_err(bad);
            assert!(e.contains(why), "{bad}: {e}");
        }
    }
}
