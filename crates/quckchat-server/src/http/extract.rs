//! Extractors shared by the REST handlers.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use ipnet::IpNet;

use super::error::ApiError;
use crate::auth::{Principal, strip_bearer};
use crate::state::AppState;

/// The authenticated caller: a valid access token whose session still stands.
#[derive(Debug, Clone, Copy)]
pub struct AuthUser(pub Principal);

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let header =
            parts.headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok()).ok_or_else(ApiError::unauthorized)?;
        let token = strip_bearer(header).ok_or_else(ApiError::unauthorized)?;
        Ok(Self(state.auth.verify(token).await?))
    }
}

/// The client's address: the TCP peer, or, when the peer is one of `TRUSTED_PROXIES`,
/// the address that proxy reports in `X-Forwarded-For` (the right-most entry that is not
/// itself a trusted proxy, as nginx's `$proxy_add_x_forwarded_for` appends). A header from
/// anyone else is ignored: a client cannot pick the address it is throttled under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub IpAddr);

impl FromRequestParts<AppState> for ClientAddr {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip())
            .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
        let forwarded = parts.headers.get_all("x-forwarded-for").iter().filter_map(|v| v.to_str().ok());
        Ok(Self(client_address(peer, forwarded, &state.config.trusted_proxies)))
    }
}

/// See [`ClientAddr`]. `forwarded` are the `X-Forwarded-For` header values in order.
pub fn client_address<'a>(peer: IpAddr, forwarded: impl Iterator<Item = &'a str>, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(&canonical(*ip)));
    if !is_trusted(&peer) {
        return canonical(peer);
    }
    // From the right: each trusted proxy appended the address it saw. The first entry that
    // is not a trusted proxy is the client; anything left of it is the client's own claim.
    // An entry that does not parse ends the walk (the peer is then the answer): it cannot
    // have been written by a proxy we trust.
    let hops: Vec<&str> = forwarded.flat_map(|v| v.split(',')).map(str::trim).collect();
    for hop in hops.iter().rev() {
        match hop.parse::<IpAddr>() {
            Ok(ip) if is_trusted(&ip) => continue,
            Ok(ip) => return canonical(ip),
            Err(_) => break,
        }
    }
    canonical(peer)
}

/// `::ffff:a.b.c.d` is `a.b.c.d`.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|n| n.parse().unwrap()).collect()
    }

    #[test]
    fn forwarded_for_is_read_only_from_trusted_proxies() {
        let peer: IpAddr = "127.0.0.1".parse().unwrap();
        let header = ["203.0.113.9, 198.51.100.7"];
        // Not trusted: the header is the client's own claim.
        assert_eq!(client_address(peer, header.into_iter(), &[]), peer);
        // nginx on loopback appended the real peer (the last entry); earlier ones are the client's.
        let trusted = nets(&["127.0.0.1/32"]);
        assert_eq!(client_address(peer, header.into_iter(), &trusted), "198.51.100.7".parse::<IpAddr>().unwrap());
        // Two trusted hops: skip both.
        let trusted = nets(&["127.0.0.1/32", "198.51.100.0/24"]);
        assert_eq!(client_address(peer, header.into_iter(), &trusted), "203.0.113.9".parse::<IpAddr>().unwrap());
        // A client's junk left of the real entry cannot choose its address.
        let junk = ["203.0.113.77, x, 198.51.100.7"];
        let trusted = nets(&["127.0.0.1/32"]);
        assert_eq!(client_address(peer, junk.into_iter(), &trusted), "198.51.100.7".parse::<IpAddr>().unwrap());
        assert_eq!(client_address(peer, ["203.0.113.77, x"].into_iter(), &trusted), peer);
        // Garbage stops the walk; no header at all is the peer.
        assert_eq!(client_address(peer, ["nonsense"].into_iter(), &nets(&["127.0.0.0/8"])), peer);
        assert_eq!(client_address(peer, std::iter::empty(), &nets(&["127.0.0.0/8"])), peer);
        // A v4-mapped peer is matched as v4.
        let mapped: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        assert_eq!(
            client_address(mapped, ["192.0.2.1"].into_iter(), &nets(&["127.0.0.1/32"])),
            "192.0.2.1".parse::<IpAddr>().unwrap()
        );
    }
}
