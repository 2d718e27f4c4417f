//! The egress guard: which destinations a delivery may reach.
//!
//! Targets are typed in by the people who configure webhooks, so without a guard the sidecar
//! would be a way into the private network (cloud metadata at 169.254.169.254, an admin port on
//! 127.0.0.1). Every address that is not globally routable is denied unless an operator opened
//! an exception. Pure decisions on values: ingest calls [`EgressPolicy::check_url`] on IP-literal
//! targets, and the sender's resolver calls [`EgressPolicy::filter_addrs`] on what a name
//! resolved to, so the connection goes only to an address that was checked (DNS rebinding cannot
//! swap it afterwards). This module never resolves names and never opens a connection.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// What happens to a destination the guard denies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Refuse it.
    Enforce,
    /// Log and count it, then let it through (to audit a rollout).
    Report,
}

/// Why a destination is denied. Typed so the sender can find it in an error's source chain.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EgressDenied {
    #[error("{ip} is in a denied range ({range})")]
    Address { ip: IpAddr, range: String },
    #[error("{host} resolves only to denied addresses ({first})")]
    AllResolved {
        host: String,
        first: Box<EgressDenied>,
    },
    #[error("only https:// targets are allowed (egress.https_only)")]
    NotHttps,
}

/// The validated `[egress]` section.
#[derive(Debug, Clone)]
pub struct EgressPolicy {
    pub mode: Mode,
    pub https_only: bool,
    /// Exceptions: an address in one of these is allowed even if a built-in range denies it
    /// (not if `deny_cidrs` does).
    pub allow_cidrs: Vec<IpNet>,
    /// Exceptions by name (lower case, exact): no address check for these hosts.
    pub allow_hosts: Vec<String>,
    /// Denied in addition to the built-in ranges, whatever `allow_cidrs` opens: an operator's
    /// deny inside an allowed range (a network opened but for one subnet) holds.
    pub deny_cidrs: Vec<IpNet>,
}

/// The host of a target after URL parsing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetHost {
    /// An IP literal, in any of the forms the URL standard normalizes (`2130706433`, `0x7f.1`,
    /// `127.1`, `[::ffff:127.0.0.1]`).
    Ip(IpAddr),
    /// A name, to be checked after it is resolved.
    Name(String),
}

/// Ranges that are never globally routable, with the name a log line shows.
const DENIED_V4: &[(&str, &str)] = &[
    ("0.0.0.0/8", "this network"),
    ("10.0.0.0/8", "private (RFC 1918)"),
    ("100.64.0.0/10", "carrier-grade NAT"),
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local (cloud metadata)"),
    ("172.16.0.0/12", "private (RFC 1918)"),
    ("192.0.0.0/24", "IETF protocol assignments"),
    ("192.0.2.0/24", "documentation"),
    ("192.88.99.0/24", "6to4 relay anycast"),
    ("192.168.0.0/16", "private (RFC 1918)"),
    ("198.18.0.0/15", "benchmarking"),
    ("198.51.100.0/24", "documentation"),
    ("203.0.113.0/24", "documentation"),
    ("224.0.0.0/4", "multicast"),
    ("240.0.0.0/4", "reserved and broadcast"),
];

const DENIED_V6: &[(&str, &str)] = &[
    // IPv4-compatible (deprecated) includes :: and ::1.
    ("::/96", "unspecified, loopback, IPv4-compatible"),
    ("::ffff:0:0:0/96", "IPv4-translated (SIIT)"),
    ("64:ff9b:1::/48", "local-use NAT64"),
    ("100::/64", "discard"),
    ("100:0:0:1::/64", "dummy prefix"),
    ("2001:2::/48", "benchmarking"),
    ("2001:10::/28", "ORCHID (deprecated)"),
    ("2001:db8::/32", "documentation"),
    ("3fff::/20", "documentation"),
    ("5f00::/16", "SRv6 SIDs"),
    ("fc00::/7", "unique local"),
    ("fe80::/10", "link-local"),
    ("fec0::/10", "site-local (deprecated)"),
    ("ff00::/8", "multicast"),
];

impl EgressPolicy {
    /// Allows every routable address and nothing else; no exceptions.
    pub fn strict() -> EgressPolicy {
        EgressPolicy {
            mode: Mode::Enforce,
            https_only: false,
            allow_cidrs: Vec::new(),
            allow_hosts: Vec::new(),
            deny_cidrs: Vec::new(),
        }
    }

    /// Checks one address. `deny_cidrs` is looked at first, for the address itself and the
    /// IPv4 address an IPv6 form embeds; then an allow exception covers either of them; then
    /// the built-in ranges.
    pub fn check_ip(&self, ip: IpAddr) -> Result<(), EgressDenied> {
        let ip = canonical(ip);
        let embedded = match ip {
            IpAddr::V6(v6) => embedded_v4(v6),
            IpAddr::V4(_) => None,
        };
        let denied = |range: &str| EgressDenied::Address {
            ip,
            range: range.to_string(),
        };
        let operator_denied = |a: IpAddr| self.deny_cidrs.iter().find(|n| n.contains(&a));
        if let Some(net) = operator_denied(ip) {
            return Err(denied(&format!("egress.deny_cidrs {net}")));
        }
        if let Some(v4) = embedded
            && let Some(net) = operator_denied(IpAddr::V4(v4))
        {
            return Err(denied(&format!("embeds {v4}: egress.deny_cidrs {net}")));
        }
        let allowed = |a: IpAddr| self.allow_cidrs.iter().any(|n| n.contains(&a));
        if allowed(ip) || embedded.is_some_and(|v4| allowed(IpAddr::V4(v4))) {
            return Ok(());
        }
        if let Some(range) = builtin_denied(ip) {
            return Err(denied(range));
        }
        if let Some(v4) = embedded
            && let Err(EgressDenied::Address { range, .. }) = self.check_ip(IpAddr::V4(v4))
        {
            return Err(denied(&format!("embeds {v4}: {range}")));
        }
        Ok(())
    }

    /// Checks what can be known from the URL alone: the scheme, and the address if the host is
    /// an IP literal. A name is returned for the resolver to check.
    pub fn check_url(&self, url: &url::Url) -> Result<TargetHost, EgressDenied> {
        if self.https_only && url.scheme() != "https" {
            return Err(EgressDenied::NotHttps);
        }
        let host = target_host(url).ok_or_else(|| EgressDenied::Address {
            ip: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            range: "no host".into(),
        })?;
        if let TargetHost::Ip(ip) = host {
            self.check_ip(ip)?;
        }
        Ok(host)
    }

    /// Whether `host` (a name) was opened as an exception.
    pub fn host_allowed(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.');
        self.allow_hosts
            .iter()
            .any(|h| h.eq_ignore_ascii_case(host))
    }

    /// Keeps the resolved addresses that may be reached. None left: the error for the first.
    pub fn filter_addrs(
        &self,
        host: &str,
        addrs: Vec<SocketAddr>,
    ) -> Result<Vec<SocketAddr>, EgressDenied> {
        if self.host_allowed(host) {
            return Ok(addrs);
        }
        let mut first_denied = None;
        let kept: Vec<SocketAddr> = addrs
            .into_iter()
            .filter(|a| match self.check_ip(a.ip()) {
                Ok(()) => true,
                Err(e) => {
                    first_denied.get_or_insert(e);
                    false
                }
            })
            .collect();
        match (kept.is_empty(), first_denied) {
            (true, Some(first)) => Err(EgressDenied::AllResolved {
                host: host.to_string(),
                first: Box::new(first),
            }),
            _ => Ok(kept),
        }
    }
}

/// The host of an http(s) URL as the URL standard parses it (which already turns `2130706433`,
/// `0x7f.1` and `127.1` into 127.0.0.1).
pub fn target_host(url: &url::Url) -> Option<TargetHost> {
    match url.host()? {
        url::Host::Ipv4(v4) => Some(TargetHost::Ip(IpAddr::V4(v4))),
        url::Host::Ipv6(v6) => Some(TargetHost::Ip(IpAddr::V6(v6))),
        url::Host::Domain(d) => Some(TargetHost::Name(d.to_ascii_lowercase())),
    }
}

/// IPv4-mapped IPv6 (`::ffff:a.b.c.d`) is the IPv4 address for every purpose.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => ip,
        },
        v4 => v4,
    }
}

/// The IPv4 address an IPv6 address carries through a transition mechanism: NAT64
/// (64:ff9b::/96), 6to4 (2002::/16) and Teredo (2001::/32, the client address, inverted).
pub fn embedded_v4(v6: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = v6.segments();
    let from = |hi: u16, lo: u16| Ipv4Addr::from(((hi as u32) << 16) | lo as u32);
    if let Some(v4) = v6.to_ipv4_mapped() {
        return Some(v4);
    }
    match s {
        [0x64, 0xff9b, 0, 0, 0, 0, hi, lo] => Some(from(hi, lo)),
        [0x2002, hi, lo, ..] => Some(from(hi, lo)),
        [0x2001, 0, _, _, _, _, hi, lo] => Some(from(!hi, !lo)),
        _ => None,
    }
}

fn builtin_denied(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => DENIED_V4.iter().find_map(|(net, name)| {
            let net: Ipv4Net = net.parse().expect("built-in range");
            net.contains(&v4).then_some(*name)
        }),
        IpAddr::V6(v6) => DENIED_V6.iter().find_map(|(net, name)| {
            let net: Ipv6Net = net.parse().expect("built-in range");
            net.contains(&v6).then_some(*name)
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(allow: &[&str]) -> EgressPolicy {
        EgressPolicy {
            allow_cidrs: allow.iter().map(|c| c.parse().unwrap()).collect(),
            ..EgressPolicy::strict()
        }
    }

    /// Every case is a decision only: no test sends a packet outside 127.0.0.0/8 or ::1.
    #[test]
    fn url_table() {
        let strict = EgressPolicy::strict();
        let cases: &[(&str, bool)] = &[
            ("http://2130706433/", false),
            ("http://0x7f.1/", false),
            ("http://0x7f000001/", false),
            ("http://0177.0.0.1/", false),
            ("http://127.1/", false),
            ("http://127.0.0.1./", false),
            ("http://[::ffff:127.0.0.1]/", false),
            ("http://[::ffff:7f00:1]/", false),
            ("http://[::1]/", false),
            ("http://[::]/", false),
            ("http://0/", false),
            ("http://0.0.0.0:8080/", false),
            ("http://10.0.0.1/", false),
            ("http://10.255.255.255/", false),
            ("http://172.16.0.1/", false),
            ("http://172.31.255.255/", false),
            ("http://192.168.1.1/", false),
            ("http://169.254.169.254/latest/meta-data", false),
            ("http://100.64.0.1/", false),
            ("http://100.127.255.255/", false),
            ("http://224.0.0.1/", false),
            ("http://239.255.255.250/", false),
            ("http://255.255.255.255/", false),
            ("http://240.0.0.1/", false),
            ("http://192.0.2.1/", false),
            ("http://198.51.100.7/", false),
            ("http://203.0.113.9/", false),
            ("http://198.18.0.1/", false),
            ("http://[fc00::1]/", false),
            ("http://[fd12:3456::1]/", false),
            ("http://[fe80::1]/", false),
            ("http://[ff02::1]/", false),
            ("http://[2001:db8::1]/", false),
            ("http://[3fff::1]/", false),
            // SIIT's IPv4-translated form of 127.0.0.1 and of 169.254.169.254.
            ("http://[::ffff:0:127.0.0.1]/", false),
            ("http://[::ffff:0:a9fe:a9fe]/", false),
            ("http://[100:0:0:1::1]/", false),
            ("http://[2001:2::1]/", false),
            ("http://[2001:10::1]/", false),
            ("http://[5f00::1]/", false),
            // NAT64 of 10.0.0.1 and of 169.254.169.254.
            ("http://[64:ff9b::a00:1]/", false),
            ("http://[64:ff9b::a9fe:a9fe]/", false),
            // 6to4 of 127.0.0.1 and of 192.168.0.1.
            ("http://[2002:7f00:1::]/", false),
            ("http://[2002:c0a8:1::1]/", false),
            // Teredo with client 10.0.0.1 (stored inverted: f5ff:fffe).
            ("http://[2001:0:4136:e378:8000:63bf:f5ff:fffe]/", false),
            // Routable addresses and their embedded forms pass.
            ("http://8.8.8.8/", true),
            ("https://1.1.1.1/", true),
            ("http://172.32.0.1/", true),
            ("http://100.128.0.1/", true),
            ("http://[2606:4700::1111]/", true),
            ("http://[::ffff:8.8.8.8]/", true),
            ("http://[64:ff9b::808:808]/", true),
            ("http://[2002:808:808::]/", true),
            ("http://[2001:0:4136:e378:8000:63bf:f7f7:f7f7]/", true),
            // Names are checked after resolution, not here.
            ("http://localhost/", true),
            ("https://receiver.example.com/hooks", true),
        ];
        for (target, ok) in cases {
            let url = url::Url::parse(target).unwrap();
            let got = strict.check_url(&url);
            assert_eq!(got.is_ok(), *ok, "{target}: {got:?}");
        }
    }

    #[test]
    fn url_standard_normalizes_ipv4_forms() {
        for t in [
            "http://2130706433/",
            "http://0x7f.1/",
            "http://127.1/",
            "http://0177.0.0.1/",
        ] {
            let url = url::Url::parse(t).unwrap();
            assert_eq!(
                target_host(&url),
                Some(TargetHost::Ip("127.0.0.1".parse().unwrap())),
                "{t}"
            );
        }
        let url = url::Url::parse("http://[::ffff:127.0.0.1]/").unwrap();
        assert_eq!(
            canonical(match target_host(&url) {
                Some(TargetHost::Ip(ip)) => ip,
                other => panic!("{other:?}"),
            }),
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        );
    }

    #[test]
    fn exceptions_and_extra_denies() {
        let p = policy(&["127.0.0.0/8", "::1/128"]);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(p.check_ip(ip("127.0.0.1")).is_ok());
        assert!(p.check_ip(ip("::ffff:127.0.0.1")).is_ok());
        assert!(p.check_ip(ip("::1")).is_ok());
        assert!(p.check_ip(ip("10.0.0.1")).is_err());
        let p = EgressPolicy {
            deny_cidrs: vec!["8.8.8.0/24".parse().unwrap()],
            ..EgressPolicy::strict()
        };
        assert!(p.check_ip(ip("8.8.8.8")).is_err());
        assert!(p.check_ip(ip("::ffff:8.8.8.8")).is_err());
        assert!(p.check_ip(ip("64:ff9b::808:808")).is_err());
        assert!(p.check_ip(ip("8.8.4.4")).is_ok());
        // A deny inside an allowed range holds, in every form of the address.
        let p = EgressPolicy {
            allow_cidrs: vec!["10.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()],
            deny_cidrs: vec!["10.0.0.0/24".parse().unwrap(), "2002::/16".parse().unwrap()],
            ..EgressPolicy::strict()
        };
        assert!(p.check_ip(ip("10.1.0.1")).is_ok());
        for denied in [
            "10.0.0.5",
            "::ffff:10.0.0.5",
            "64:ff9b::a00:5",
            "2002:a01:1::",
        ] {
            let err = p.check_ip(ip(denied)).unwrap_err();
            assert!(
                err.to_string().contains("egress.deny_cidrs"),
                "{denied}: {err}"
            );
        }
        let https = EgressPolicy {
            https_only: true,
            ..EgressPolicy::strict()
        };
        let u = |s: &str| url::Url::parse(s).unwrap();
        assert_eq!(
            https.check_url(&u("http://8.8.8.8/")),
            Err(EgressDenied::NotHttps)
        );
        assert!(https.check_url(&u("https://8.8.8.8/")).is_ok());
    }

    #[test]
    fn resolved_addresses_are_filtered() {
        let strict = EgressPolicy::strict();
        let sa = |s: &str| s.parse::<SocketAddr>().unwrap();
        // A name resolving to 10.0.0.1 only is refused.
        let err = strict
            .filter_addrs("internal.example", vec![sa("10.0.0.1:443")])
            .unwrap_err();
        assert!(matches!(err, EgressDenied::AllResolved { .. }), "{err}");
        // Mixed answers keep only the routable address: the connection goes there.
        let kept = strict
            .filter_addrs(
                "mixed.example",
                vec![
                    sa("127.0.0.1:80"),
                    sa("93.184.215.14:80"),
                    sa("[fd00::1]:80"),
                ],
            )
            .unwrap();
        assert_eq!(kept, vec![sa("93.184.215.14:80")]);
        // allow_hosts skips the check for that name only.
        let p = EgressPolicy {
            allow_hosts: vec!["internal.example".into()],
            ..EgressPolicy::strict()
        };
        assert!(
            p.filter_addrs("Internal.Example.", vec![sa("10.0.0.1:443")])
                .is_ok()
        );
        assert!(
            p.filter_addrs("other.example", vec![sa("10.0.0.1:443")])
                .is_err()
        );
    }

    #[test]
    fn embedded_addresses() {
        let e = |s: &str| embedded_v4(s.parse().unwrap()).map(|v| v.to_string());
        assert_eq!(e("::ffff:10.1.2.3").as_deref(), Some("10.1.2.3"));
        assert_eq!(e("64:ff9b::7f00:1").as_deref(), Some("127.0.0.1"));
        assert_eq!(e("2002:a9fe:a9fe::1").as_deref(), Some("169.254.169.254"));
        assert_eq!(
            e("2001:0:4136:e378:8000:63bf:3fff:fdd2").as_deref(),
            Some("192.0.2.45")
        );
        assert_eq!(e("2606:4700::1111"), None);
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            /// Every IPv4 address and every IPv6 form carrying it get the same verdict.
            #[test]
            fn embedded_forms_agree_with_their_ipv4_address(bits in any::<u32>()) {
                let strict = EgressPolicy::strict();
                let v4 = Ipv4Addr::from(bits);
                let want = strict.check_ip(IpAddr::V4(v4)).is_ok();
                let [a, b, c, d] = v4.octets();
                let hi = u16::from_be_bytes([a, b]);
                let lo = u16::from_be_bytes([c, d]);
                for v6 in [
                    v4.to_ipv6_mapped(),
                    Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, hi, lo),
                    Ipv6Addr::new(0x2002, hi, lo, 0, 0, 0, 0, 1),
                    Ipv6Addr::new(0x2001, 0, 0x4136, 0xe378, 0x8000, 0x63bf, !hi, !lo),
                ] {
                    // A denied IPv4 address is denied in every form; an allowed one is allowed
                    // unless the IPv6 prefix itself is denied (none of these are).
                    prop_assert_eq!(strict.check_ip(IpAddr::V6(v6)).is_ok(), want, "{} via {}", v4, v6);
                }
            }

            #[test]
            fn parsing_any_host_never_panics(host in "[a-zA-Z0-9.:\\[\\]%x-]{0,40}") {
                if let Ok(url) = url::Url::parse(&format!("http://{host}/")) {
                    let _ = EgressPolicy::strict().check_url(&url);
                }
            }
        }
    }
}
