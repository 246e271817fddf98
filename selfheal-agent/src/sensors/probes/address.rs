//! Where probes connect: `host:port` for TCP and `http://host[:port]/path` URLs, checked when
//! the config is read so a typo is a config error, not a probe that fails forever.

use std::fmt;

use serde::Deserialize;

/// A host (name, IPv4 address or bracketed IPv6 address) and a port.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct HostPort {
    /// Without brackets, ready for `TcpStream::connect((host, port))`.
    pub host: String,
    pub port: u16,
}

impl HostPort {
    /// `text` is `host:port` or `[v6]:port`; `default_port` fills in a missing port.
    fn parse(text: &str, default_port: Option<u16>) -> Result<HostPort, String> {
        let (host, port) = match text.strip_prefix('[') {
            Some(rest) => {
                let (host, after) = rest.split_once(']').ok_or("\"[\" without \"]\"")?;
                (host, after.strip_prefix(':'))
            }
            None if text.matches(':').count() > 1 => {
                return Err("an IPv6 address must be in brackets, as in \"[::1]:8080\"".into());
            }
            None => match text.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (text, None),
            },
        };
        if host.is_empty() {
            return Err("the host is missing".into());
        }
        if host.contains(|c: char| c.is_whitespace() || "/?#@".contains(c)) {
            return Err(format!("{host:?} is not a host name or address"));
        }
        let port = match (port, default_port) {
            (Some(port), _) => port
                .parse()
                .map_err(|_| format!("{port:?} is not a port number (1-65535)"))?,
            (None, Some(port)) => port,
            (None, None) => return Err("the port is missing".into()),
        };
        if port == 0 {
            return Err("port 0 is not a port one can connect to".into());
        }
        Ok(HostPort {
            host: host.to_owned(),
            port,
        })
    }
}

impl TryFrom<String> for HostPort {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        HostPort::parse(&text, None).map_err(|why| {
            format!(r#"expected an address such as "127.0.0.1:5432", found {text:?}: {why}"#)
        })
    }
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// A plain-HTTP URL. TLS is not spoken: the probe is a minimal HTTP/1.1 client, and an
/// `https://` URL is a config error that says to use an exec probe (curl) instead.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct HttpUrl {
    pub authority: HostPort,
    /// Path and query, starting with "/".
    pub path: String,
}

impl TryFrom<String> for HttpUrl {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        let expected =
            format!(r#"expected a URL such as "http://127.0.0.1:8080/health", found {text:?}"#);
        let rest = match text.split_once("://") {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => rest,
            Some((scheme, _)) if scheme.eq_ignore_ascii_case("https") => {
                return Err(format!(
                    "{expected}: https is not supported (the http probe speaks plain HTTP/1.1); \
                     use a kind = \"exec\" probe running curl for TLS endpoints"
                ));
            }
            _ => return Err(format!("{expected}: it must start with \"http://\"")),
        };
        // The fragment is never sent to the server.
        let rest = rest.split('#').next().unwrap_or_default();
        let split = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(split);
        if authority.contains('@') {
            return Err(format!(
                "{expected}: credentials in the URL are not supported"
            ));
        }
        let authority =
            HostPort::parse(authority, Some(80)).map_err(|why| format!("{expected}: {why}"))?;
        let path = match path {
            "" => "/".to_owned(),
            query if query.starts_with('?') => format!("/{query}"),
            path => path.to_owned(),
        };
        if path.contains(char::is_whitespace) {
            return Err(format!("{expected}: spaces must be written %20"));
        }
        Ok(HttpUrl { authority, path })
    }
}

impl fmt::Display for HttpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "http://{}{}", self.authority, self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(text: &str) -> Result<HttpUrl, String> {
        HttpUrl::try_from(text.to_owned())
    }

    fn address(text: &str) -> Result<HostPort, String> {
        HostPort::try_from(text.to_owned())
    }

    #[test]
    fn a_url_without_port_or_path_means_port_80_and_slash() {
        let parsed = url("http://localhost").unwrap();
        assert_eq!(parsed.authority.host, "localhost");
        assert_eq!(parsed.authority.port, 80);
        assert_eq!(parsed.path, "/");
    }

    #[test]
    fn a_url_keeps_its_path_and_query_but_not_its_fragment() {
        let parsed = url("http://127.0.0.1:8080/health?deep=1#top").unwrap();
        assert_eq!(parsed.authority.port, 8080);
        assert_eq!(parsed.path, "/health?deep=1");
        assert_eq!(url("http://h:1?x").unwrap().path, "/?x");
    }

    #[test]
    fn an_ipv6_url_host_is_bracketed_in_the_url_but_not_in_the_host() {
        let parsed = url("http://[::1]:9000/").unwrap();
        assert_eq!(parsed.authority.host, "::1");
        assert_eq!(parsed.to_string(), "http://[::1]:9000/");
    }

    #[test]
    fn https_is_refused_with_the_way_out() {
        let error = url("https://example.com/").unwrap_err();
        assert!(error.contains("https is not supported"), "{error}");
        assert!(error.contains("exec"), "{error}");
    }

    #[test]
    fn malformed_urls_are_refused() {
        for text in [
            "127.0.0.1:8080/health",
            "ftp://x/",
            "http://",
            "http://:80/",
            "http://host:http/",
            "http://host:0/",
            "http://user:pw@host/",
            "http://host/a b",
        ] {
            assert!(url(text).is_err(), "{text:?} should be refused");
        }
    }

    #[test]
    fn a_tcp_address_needs_a_host_and_a_port() {
        assert_eq!(
            address("db.local:5432").unwrap(),
            HostPort {
                host: "db.local".into(),
                port: 5432
            }
        );
        assert_eq!(address("[::1]:22").unwrap().host, "::1");
        for text in ["db.local", ":5432", "::1:22", "db:99999", "db:"] {
            assert!(address(text).is_err(), "{text:?} should be refused");
        }
    }
}
