//! The RADIUS client table: which source addresses may talk to the server, and with
//! which shared secret and policy.
//!
//! A datagram's source address is matched against every client's network; the longest
//! prefix wins (a `/32` for one concentrator beats the `/24` of its building), so an
//! operator can carve exceptions out of a wide range. IPv4-mapped IPv6 sources (a
//! dual-stack socket bound to `[::]`) are matched as the IPv4 addresses they are.
//!
//! The table is immutable; a reload (SIGHUP) builds a new one and swaps it in whole
//! through a `tokio::sync::watch` channel, so a request never sees half a table.

use std::net::IpAddr;
use std::sync::Arc;

use otpgate_config::RadiusClient;
use otpgate_radius_proto::{Policy, Secret};

/// One client, ready for use: its configuration and its secret in the codec's type.
pub struct Client {
    /// Name, network and policy, as configured.
    pub config: RadiusClient,
    /// The shared secret, converted once (not per datagram).
    pub secret: Secret,
}

impl Client {
    /// The Message-Authenticator and Proxy-State policy that decoding applies.
    pub fn policy(&self) -> Policy {
        Policy {
            require_message_authenticator: self.config.require_message_authenticator,
            limit_proxy_state: self.config.limit_proxy_state,
        }
    }
}

impl std::fmt::Debug for Client {
    /// Shows the name and network; never the secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("name", &self.config.name)
            .field("network", &self.config.network)
            .finish_non_exhaustive()
    }
}

/// Why a client table could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientTableError {
    /// A client's shared secret is empty; the configuration loader refuses this too, so
    /// seeing it means a table was built by hand. Fix the client's secret.
    #[error("client `{0}`: the shared secret is empty")]
    EmptySecret(String),
    /// Two clients have the same network, so which secret applies would depend on the
    /// order in the file. Give one of them a different address.
    #[error("clients `{0}` and `{1}` have the same network {2}")]
    SameNetwork(String, String, String),
}

/// The clients, most specific network first.
#[derive(Debug, Default)]
pub struct ClientTable {
    /// Sorted by prefix length, longest first, so the first match is the best match.
    clients: Vec<Arc<Client>>,
}

impl ClientTable {
    /// Builds a table from configured clients.
    ///
    /// # Errors
    ///
    /// [`ClientTableError`] for an empty secret or two clients with the same network.
    pub fn new(clients: &[RadiusClient]) -> Result<Self, ClientTableError> {
        let mut out: Vec<Arc<Client>> = Vec::with_capacity(clients.len());
        for c in clients {
            if let Some(other) = out.iter().find(|o| o.config.network == c.network.trunc()) {
                return Err(ClientTableError::SameNetwork(
                    other.config.name.clone(),
                    c.name.clone(),
                    c.network.to_string(),
                ));
            }
            let secret = Secret::new(c.secret.expose().to_vec())
                .map_err(|_| ClientTableError::EmptySecret(c.name.clone()))?;
            let mut config = c.clone();
            config.network = c.network.trunc();
            out.push(Arc::new(Client { config, secret }));
        }
        out.sort_by_key(|c| std::cmp::Reverse(c.config.network.prefix_len()));
        Ok(Self { clients: out })
    }

    /// The client whose network holds `source` most specifically, if any.
    pub fn lookup(&self, source: IpAddr) -> Option<&Arc<Client>> {
        let source = source.to_canonical();
        self.clients
            .iter()
            .find(|c| c.config.network.contains(&source))
    }

    /// How many clients there are.
    pub fn len(&self) -> usize {
        self.clients.len()
    }

    /// Whether there are none (every datagram will be dropped).
    pub fn is_empty(&self) -> bool {
        self.clients.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use otpgate_config::{IpNet, SecretBytes};

    fn client(name: &str, net: &str) -> RadiusClient {
        RadiusClient {
            name: name.into(),
            network: net.parse::<IpNet>().unwrap(),
            secret: SecretBytes::new(format!("secret-of-{name}").into_bytes()),
            require_message_authenticator: true,
            password_checked_by_client: false,
            trust_calling_station: false,
            reject_reasons: false,
            limit_proxy_state: true,
            pam_host: false,
        }
    }

    fn name(t: &ClientTable, ip: &str) -> Option<String> {
        t.lookup(ip.parse().unwrap()).map(|c| c.config.name.clone())
    }

    #[test]
    fn longest_prefix_wins_whatever_the_order() {
        let clients = [
            client("campus", "10.0.0.0/8"),
            client("vpn", "10.1.2.3/32"),
            client("building", "10.1.2.0/24"),
        ];
        let t = ClientTable::new(&clients).unwrap();
        assert_eq!(name(&t, "10.1.2.3").as_deref(), Some("vpn"));
        assert_eq!(name(&t, "10.1.2.4").as_deref(), Some("building"));
        assert_eq!(name(&t, "10.9.9.9").as_deref(), Some("campus"));
        assert_eq!(name(&t, "192.0.2.1"), None);
        assert_eq!(name(&t, "::1"), None);
    }

    #[test]
    fn ipv4_mapped_sources_match_ipv4_networks() {
        let t = ClientTable::new(&[client("lo", "127.0.0.1/32")]).unwrap();
        assert_eq!(name(&t, "::ffff:127.0.0.1").as_deref(), Some("lo"));
        assert_eq!(name(&t, "::ffff:127.0.0.2"), None);
    }

    #[test]
    fn ipv6_networks() {
        let t =
            ClientTable::new(&[client("v6", "2001:db8::/32"), client("lo", "::1/128")]).unwrap();
        assert_eq!(name(&t, "2001:db8::5").as_deref(), Some("v6"));
        assert_eq!(name(&t, "::1").as_deref(), Some("lo"));
        assert_eq!(name(&t, "2001:db9::5"), None);
    }

    #[test]
    fn host_bits_are_ignored_and_duplicates_refused() {
        let t = ClientTable::new(&[client("a", "10.1.2.77/24")]).unwrap();
        assert_eq!(name(&t, "10.1.2.1").as_deref(), Some("a"));
        let err = ClientTable::new(&[client("a", "10.1.2.0/24"), client("b", "10.1.2.9/24")])
            .unwrap_err();
        assert!(matches!(err, ClientTableError::SameNetwork(..)), "{err}");
    }

    #[test]
    fn empty_table_matches_nothing() {
        let t = ClientTable::new(&[]).unwrap();
        assert!(t.is_empty());
        assert_eq!(name(&t, "127.0.0.1"), None);
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let t = ClientTable::new(&[client("vpn", "10.0.0.0/8")]).unwrap();
        let shown = format!("{:?}", t);
        assert!(shown.contains("vpn"));
        assert!(!shown.contains("secret-of"), "{shown}");
    }
}
