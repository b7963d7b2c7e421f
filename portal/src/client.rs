//! The client's address behind trusted proxies (`[portal] trusted_proxies`).
//!
//! `Forwarded` (RFC 7239) or, without it, `X-Forwarded-For` is read only when the TCP
//! peer is a trusted proxy. The list is walked from the right (the hop nearest to us):
//! trusted proxies are skipped, and the first address that is not one is the client.
//! Anything a client could have written itself lies further left and is never reached
//! past an untrusted hop. A hop that cannot be read (`unknown`, an obfuscated name,
//! junk) stops the walk at the last address known: the proxy that added it.

use std::net::{IpAddr, SocketAddr};

use axum::http::{HeaderMap, header};
use otpgate_config::IpNet;

/// Entries read from the forwarding header at most (a longer chain is cut at the left,
/// which only moves the answer towards the proxies we trust).
const MAX_HOPS: usize = 32;

/// The address rate limits and audit records use for this request.
pub fn client_address(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(&canonical(*ip)));
    if !is_trusted(&peer) {
        return peer;
    }
    let hops = forwarded_for(headers);
    let mut client = peer;
    for hop in hops.iter().rev().take(MAX_HOPS) {
        let Some(ip) = hop else {
            return client;
        };
        client = canonical(*ip);
        if !is_trusted(&client) {
            return client;
        }
    }
    client
}

/// IPv4-mapped IPv6 addresses as IPv4, so one CIDR list covers both.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The `for` addresses, left to right (`None` for one that cannot be read): from
/// `Forwarded` when present, else from `X-Forwarded-For`.
fn forwarded_for(headers: &HeaderMap) -> Vec<Option<IpAddr>> {
    let joined = |name: header::HeaderName| -> Option<String> {
        let values: Vec<&str> = headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap_or("\u{0}"))
            .collect();
        (!values.is_empty()).then(|| values.join(","))
    };
    if let Some(forwarded) = joined(header::FORWARDED) {
        return forwarded
            .split(',')
            .map(|element| {
                element
                    .split(';')
                    .filter_map(|pair| pair.trim().split_once('='))
                    .find(|(k, _)| k.trim().eq_ignore_ascii_case("for"))
                    .and_then(|(_, v)| node(v.trim().trim_matches('"')))
            })
            .collect();
    }
    if let Some(xff) = joined(header::HeaderName::from_static("x-forwarded-for")) {
        return xff.split(',').map(|h| node(h.trim())).collect();
    }
    Vec::new()
}

/// An address as proxies write it: `192.0.2.1`, `192.0.2.1:4711`, `2001:db8::1`,
/// `[2001:db8::1]`, `[2001:db8::1]:4711`.
fn node(text: &str) -> Option<IpAddr> {
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(sa) = text.parse::<SocketAddr>() {
        return Some(sa.ip());
    }
    text.strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .and_then(|t| t.parse::<IpAddr>().ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|n| n.parse().unwrap()).collect()
    }

    fn with(name: &'static str, values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(name, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn headers_count_only_from_trusted_peers() {
        let h = with("x-forwarded-for", &["198.51.100.7"]);
        assert_eq!(client_address(ip("192.0.2.1"), &h, &[]), ip("192.0.2.1"));
        let trusted = nets(&["10.0.0.0/8"]);
        assert_eq!(
            client_address(ip("192.0.2.1"), &h, &trusted),
            ip("192.0.2.1")
        );
        assert_eq!(
            client_address(ip("10.1.2.3"), &h, &trusted),
            ip("198.51.100.7")
        );
    }

    #[test]
    fn the_rightmost_untrusted_hop_wins() {
        let trusted = nets(&["10.0.0.0/8", "127.0.0.1/32"]);
        // The client wrote "1.1.1.1" itself; the proxies added the rest.
        let h = with("x-forwarded-for", &["1.1.1.1, 198.51.100.7", "10.0.0.2"]);
        assert_eq!(
            client_address(ip("127.0.0.1"), &h, &trusted),
            ip("198.51.100.7")
        );
        // Only trusted hops: the leftmost of them.
        let h = with("x-forwarded-for", &["10.0.0.9, 10.0.0.2"]);
        assert_eq!(
            client_address(ip("127.0.0.1"), &h, &trusted),
            ip("10.0.0.9")
        );
        // No header: the peer.
        assert_eq!(
            client_address(ip("127.0.0.1"), &HeaderMap::new(), &trusted),
            ip("127.0.0.1")
        );
    }

    #[test]
    fn junk_stops_at_the_last_known_hop() {
        let trusted = nets(&["10.0.0.0/8"]);
        let h = with("x-forwarded-for", &["198.51.100.7, nonsense, 10.0.0.2"]);
        assert_eq!(client_address(ip("10.0.0.1"), &h, &trusted), ip("10.0.0.2"));
        let h = with("x-forwarded-for", &["nonsense"]);
        assert_eq!(client_address(ip("10.0.0.1"), &h, &trusted), ip("10.0.0.1"));
    }

    #[test]
    fn forwarded_wins_over_x_forwarded_for_and_takes_ports_and_brackets() {
        let trusted = nets(&["10.0.0.0/8"]);
        let mut h = with(
            "forwarded",
            &[r#"for=198.51.100.7;proto=https, for="[2001:db8::17]:4711";by=10.0.0.1"#],
        );
        h.append("x-forwarded-for", HeaderValue::from_static("203.0.113.9"));
        assert_eq!(
            client_address(ip("10.0.0.1"), &h, &trusted),
            ip("2001:db8::17")
        );
        let h = with("forwarded", &["for=198.51.100.7:80"]);
        assert_eq!(
            client_address(ip("10.0.0.1"), &h, &trusted),
            ip("198.51.100.7")
        );
        let h = with("forwarded", &["for=unknown"]);
        assert_eq!(client_address(ip("10.0.0.1"), &h, &trusted), ip("10.0.0.1"));
    }

    #[test]
    fn mapped_addresses_match_v4_lists() {
        let trusted = nets(&["127.0.0.1/32"]);
        let h = with("x-forwarded-for", &["198.51.100.7"]);
        assert_eq!(
            client_address(ip("::ffff:127.0.0.1"), &h, &trusted),
            ip("198.51.100.7")
        );
    }
}
