//! Where the executor may send a request. A task's URL is hostile until checked: only public
//! addresses are called, checked after resolution (the connection goes to the very address that
//! was checked, so a second lookup cannot rebind it) and again on every redirect hop; private
//! destinations only through an allowlist of exact `host:port`s.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;

use reqwest::Url;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// A destination the executor refuses to call. Not retried: the same URL is refused again.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Forbidden(pub String);

/// The exact `host:port`s that may be called although their addresses are not public, from
/// the `HttpAllowedDestinations` template parameter (for example a service in the VPC, or on the
/// local stage the demo's loopback echo server).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Allowlist(Vec<(String, u16)>);

impl Allowlist {
    /// Parses a comma-separated list of `host:port` (IPv6 hosts in brackets); blanks are skipped.
    pub fn parse(list: &str) -> Result<Self, String> {
        let mut allowed = Vec::new();
        for entry in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let url = Url::parse(&format!("http://{entry}/"))
                .map_err(|e| format!("`{entry}` is not a host:port: {e}"))?;
            match (url.host_str(), url.port()) {
                (Some(host), Some(port)) if url.path() == "/" && url.username().is_empty() => {
                    allowed.push((host.to_ascii_lowercase(), port));
                }
                _ => return Err(format!("`{entry}` is not a host:port")),
            }
        }
        Ok(Self(allowed))
    }

    fn allows(&self, host: &str, port: u16) -> bool {
        self.0.iter().any(|(h, p)| h == host && *p == port)
    }

    /// Whether `host` is named by an entry, on whatever port.
    fn names(&self, host: &str) -> bool {
        self.0.iter().any(|(h, _)| h == host)
    }
}

/// Whether `ip` is an address on the public internet: not loopback, private (RFC 1918), shared
/// (CGNAT), link-local (the metadata services), unique-local, multicast, documentation,
/// benchmarking, reserved or unspecified, and not an IPv6 form of one of those (IPv4-mapped or
/// -compatible, NAT64, 6to4).
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => public_v4(v4),
        IpAddr::V6(v6) => public_v6(v6),
    }
}

fn public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_multicast()
        || ip.is_broadcast()
        || ip.is_documentation()
        || a == 0 // "this network"
        || (a == 100 && (64..128).contains(&b)) // shared address space (CGNAT)
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 198 && (18..20).contains(&b)) // benchmarking
        || a >= 240) // reserved
}

fn public_v6(ip: Ipv6Addr) -> bool {
    let segments = ip.segments();
    let embedded = |high: usize| {
        Ipv4Addr::from((u32::from(segments[high]) << 16) | u32::from(segments[high + 1]))
    };
    match segments {
        // IPv4-mapped and IPv4-compatible forms: refused whatever they embed.
        [0, 0, 0, 0, 0, 0xffff, _, _] | [0, 0, 0, 0, 0, 0, _, _] => false,
        // NAT64 (64:ff9b::/96) reaches the IPv4 address it embeds.
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] => public_v4(embedded(6)),
        // 6to4 (2002::/16) embeds an IPv4 address in its second and third segments.
        [0x2002, _, _, ..] => public_v4(embedded(1)),
        _ => {
            let first = segments[0];
            !(ip.is_multicast()
                || (first & 0xfe00) == 0xfc00 // unique local
                || (first & 0xffc0) == 0xfe80 // link-local
                || (first & 0xffc0) == 0xfec0 // site-local (deprecated)
                || (first == 0x2001 && segments[1] == 0x0db8) // documentation
                || (first == 0x2001 && segments[1] < 0x0200) // IETF protocol assignments, Teredo
                || (first == 0x0100 && segments[1..4] == [0, 0, 0])) // discard-only
        }
    }
}

/// Checks a URL before any connection is made to it (the task's, and each redirect's): an
/// `http` or `https` scheme, a host, and either an allowlisted `host:port`, or a public address
/// when the host is one, or a host name the allowlist does not name on another port. A name's
/// addresses are checked when it is resolved ([`GuardedResolver`]).
pub fn check_url(url: &Url, allowlist: &Allowlist) -> Result<(), Forbidden> {
    if !matches!(url.scheme(), "http" | "https") {
        return Err(Forbidden(format!(
            "scheme `{}` is refused: use http or https",
            url.scheme()
        )));
    }
    let (Some(host), Some(port)) = (url.host(), url.port_or_known_default()) else {
        return Err(Forbidden(format!("`{url}` names no host")));
    };
    let name = url.host_str().unwrap_or_default().to_ascii_lowercase();
    if allowlist.allows(&name, port) {
        return Ok(());
    }
    let ip = match host {
        url::Host::Ipv4(ip) => IpAddr::V4(ip),
        url::Host::Ipv6(ip) => IpAddr::V6(ip),
        url::Host::Domain(_) if allowlist.names(&name) => {
            return Err(Forbidden(format!(
                "{name} is allowlisted on other ports than {port}"
            )));
        }
        url::Host::Domain(_) => return Ok(()),
    };
    match is_public(ip) {
        true => Ok(()),
        false => Err(Forbidden(format!("{ip} is not a public address"))),
    }
}

/// How a host name is turned into addresses: the system's resolver, or a stand-in in tests.
pub type Lookup = Arc<
    dyn Fn(String) -> Pin<Box<dyn Future<Output = std::io::Result<Vec<IpAddr>>> + Send>>
        + Send
        + Sync,
>;

/// The system's resolver (getaddrinfo, through tokio).
pub fn system_lookup() -> Lookup {
    Arc::new(|host: String| {
        Box::pin(async move {
            let addrs = tokio::net::lookup_host((host.as_str(), 0)).await?;
            Ok(addrs.map(|addr| addr.ip()).collect())
        })
    })
}

/// The client's resolver: resolves a name and hands the connector only addresses that passed
/// the check, so the connection goes to an address that was checked. A name with any address
/// that is not public is refused whole (unless the allowlist names it; [`check_url`] then holds
/// it to its allowlisted ports).
pub struct GuardedResolver {
    lookup: Lookup,
    allowlist: Allowlist,
}

impl GuardedResolver {
    /// Resolves with `lookup`, letting through the names `allowlist` holds.
    pub fn new(lookup: Lookup, allowlist: Allowlist) -> Self {
        Self { lookup, allowlist }
    }
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_ascii_lowercase();
        let allowlisted = self.allowlist.names(&host);
        let lookup = (self.lookup)(host.clone());
        Box::pin(async move {
            let ips = lookup.await?;
            if ips.is_empty() {
                return Err(format!("{host} has no address").into());
            }
            if let Some(ip) = ips.iter().find(|ip| !is_public(**ip))
                && !allowlisted
            {
                return Err(Box::new(Forbidden(format!(
                    "{host} resolves to {ip}, which is not a public address"
                ))) as _);
            }
            let addrs: Addrs = Box::new(ips.into_iter().map(|ip| SocketAddr::new(ip, 0)));
            Ok(addrs)
        })
    }
}

/// Follows at most `max` redirects, each to a URL [`check_url`] accepts.
pub fn redirects(max: usize, allowlist: Allowlist) -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(move |attempt| {
        if attempt.previous().len() > max {
            return attempt.error(format!("more than {max} redirects"));
        }
        match check_url(attempt.url(), &allowlist) {
            Ok(()) => attempt.follow(),
            Err(forbidden) => attempt.error(forbidden),
        }
    })
}

/// The refusal behind a failed request, if the guard refused it (the resolver or a redirect).
pub fn forbidden_in<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a Forbidden> {
    let mut current = Some(error);
    while let Some(error) = current {
        if let Some(forbidden) = error.downcast_ref::<Forbidden>() {
            return Some(forbidden);
        }
        current = error.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn only_public_addresses_are_public() {
        for private in [
            "127.0.0.1",
            "127.8.9.10",
            "10.0.0.1",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "0.1.2.3",
            "192.0.0.192",
            "198.18.0.1",
            "224.0.0.1",
            "240.0.0.1",
            "255.255.255.255",
            "192.0.2.1",
            "::1",
            "::",
            "fc00::1",
            "fd00:ec2::254",
            "fe80::1",
            "fec0::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:8.8.8.8",
            "::127.0.0.1",
            "64:ff9b::a00:1",
            "2002:7f00:1::",
            "2002:a9fe:a9fe::",
            "2001:db8::1",
            "2001::1",
            "100::1",
        ] {
            assert!(!is_public(ip(private)), "{private}");
        }
        for public in [
            "8.8.8.8",
            "1.1.1.1",
            "100.128.0.1",
            "172.32.0.1",
            "2606:4700::1111",
            "64:ff9b::808:808",
            "2002:808:808::",
        ] {
            assert!(is_public(ip(public)), "{public}");
        }
    }

    #[test]
    fn urls_naming_private_addresses_are_refused_in_every_spelling() {
        let none = Allowlist::default();
        for url in [
            "http://127.0.0.1:4566/",
            "http://2130706433/",
            "http://0x7f.1/",
            "http://0177.0.0.1/",
            "http://[::1]:8080/",
            "http://[::ffff:127.0.0.1]/",
            "http://169.254.169.254/latest/meta-data/",
            "http://10.0.0.1/",
            "http://0/",
            "ftp://example.com/",
            "file:///etc/passwd",
        ] {
            let url = Url::parse(url).unwrap();
            assert!(check_url(&url, &none).is_err(), "{url}");
        }
        let named = Url::parse("https://example.com/hook").unwrap();
        assert_eq!(check_url(&named, &none), Ok(()));
    }

    #[test]
    fn the_allowlist_opens_exact_host_and_port_pairs_only() {
        let allowlist = Allowlist::parse("127.0.0.1:4597, internal.svc:8080,[::1]:9000").unwrap();
        let check = |url: &str| check_url(&Url::parse(url).unwrap(), &allowlist);
        assert_eq!(check("http://127.0.0.1:4597/echo"), Ok(()));
        assert_eq!(check("http://[::1]:9000/"), Ok(()));
        assert_eq!(check("http://INTERNAL.svc:8080/"), Ok(()));
        assert!(check("http://127.0.0.1:4598/").is_err());
        assert!(check("http://internal.svc:9090/").is_err());
        assert!(check("http://internal.svc/").is_err());
        for bad in ["127.0.0.1", "http://x:1", "host:port", "a:1/path"] {
            assert!(Allowlist::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(Allowlist::parse(""), Ok(Allowlist::default()));
    }

    fn stand_in(answers: &'static [(&'static str, &'static str)]) -> Lookup {
        Arc::new(move |host: String| {
            let ips = answers
                .iter()
                .filter(|(name, _)| *name == host)
                .map(|(_, ip)| ip.parse().unwrap())
                .collect();
            Box::pin(async move { Ok(ips) })
        })
    }

    #[tokio::test]
    async fn a_name_resolving_to_any_private_address_is_refused_at_resolution() {
        let lookup = stand_in(&[
            ("public.example", "8.8.8.8"),
            ("rebind.example", "127.0.0.1"),
            ("mixed.example", "8.8.8.8"),
            ("mixed.example", "10.0.0.1"),
            ("internal.svc", "10.1.2.3"),
        ]);
        let resolver = GuardedResolver::new(lookup, Allowlist::parse("internal.svc:8080").unwrap());
        let resolve = |name: &str| resolver.resolve(name.parse().unwrap());
        let addrs: Vec<SocketAddr> = resolve("public.example").await.unwrap().collect();
        assert_eq!(addrs, [SocketAddr::new(ip("8.8.8.8"), 0)]);
        for refused in ["rebind.example", "mixed.example"] {
            let Err(error) = resolve(refused).await else {
                panic!("{refused} resolved");
            };
            assert!(forbidden_in(error.as_ref()).is_some(), "{refused}: {error}");
        }
        assert!(resolve("internal.svc").await.is_ok());
        assert!(resolve("nowhere.example").await.is_err());
    }
}
