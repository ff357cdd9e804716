//! How replica names become addresses: asynchronously, at connect time and for every health
//! probe, through one [`Resolve`] implementation, so a name that stops resolving (a deleted
//! pod's DNS record) fails the probe and the connection attempt cleanly instead of blocking a
//! proxy thread in `getaddrinfo` (pingora's `HttpPeer::new` resolves a name synchronously and
//! panics when that fails).

use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

/// A boxed future of one resolution.
pub type Resolving<'a> = Pin<Box<dyn Future<Output = io::Result<SocketAddr>> + Send + 'a>>;
/// A boxed future of every address of a name.
pub type ResolvingAll<'a> = Pin<Box<dyn Future<Output = io::Result<Vec<SocketAddr>>> + Send + 'a>>;

/// Resolves `host:port` to socket addresses.
pub trait Resolve: Send + Sync + fmt::Debug {
    /// The address to connect to for `authority` (`host:port`, an IPv6 host in brackets).
    fn resolve<'a>(&'a self, authority: &'a str) -> Resolving<'a>;

    /// Every address of `authority`, without duplicates, in the resolver's order (DNS
    /// discovery: one replica per address). By default the one [`Resolve::resolve`] gives.
    fn resolve_all<'a>(&'a self, authority: &'a str) -> ResolvingAll<'a> {
        Box::pin(async move { Ok(vec![self.resolve(authority).await?]) })
    }
}

/// The operating system's resolver (`/etc/hosts`, DNS), run off the async threads by tokio.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemResolver;

impl Resolve for SystemResolver {
    fn resolve<'a>(&'a self, authority: &'a str) -> Resolving<'a> {
        Box::pin(async move {
            tokio::net::lookup_host(authority)
                .await?
                .next()
                .ok_or_else(|| {
                    io::Error::new(
                        io::ErrorKind::NotFound,
                        format!("`{authority}` has no address"),
                    )
                })
        })
    }

    fn resolve_all<'a>(&'a self, authority: &'a str) -> ResolvingAll<'a> {
        Box::pin(async move {
            let mut all: Vec<SocketAddr> = Vec::new();
            for addr in tokio::net::lookup_host(authority).await? {
                if !all.contains(&addr) {
                    all.push(addr);
                }
            }
            Ok(all)
        })
    }
}

/// Lets reqwest (the health probes) resolve through the same [`Resolve`] as the proxy.
#[derive(Debug, Clone)]
pub struct ForReqwest(pub Arc<dyn Resolve>);

impl reqwest::dns::Resolve for ForReqwest {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let resolver = self.0.clone();
        // reqwest puts the URL's port on the address itself.
        let authority = if name.as_str().contains(':') {
            format!("[{}]:0", name.as_str())
        } else {
            format!("{}:0", name.as_str())
        };
        Box::pin(async move {
            let addr = resolver.resolve(&authority).await?;
            let addrs: reqwest::dns::Addrs = Box::new(std::iter::once(addr));
            Ok(addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn addresses_resolve_and_unknown_names_fail_without_panicking() {
        let r = SystemResolver;
        assert_eq!(
            r.resolve("127.0.0.1:8080").await.unwrap(),
            "127.0.0.1:8080".parse().unwrap()
        );
        assert_eq!(
            r.resolve("[::1]:9").await.unwrap(),
            "[::1]:9".parse().unwrap()
        );
        assert!(r.resolve("localhost:80").await.unwrap().ip().is_loopback());
        // `.invalid` never resolves (RFC 6761).
        assert!(r.resolve("replica-0.framecast.invalid:8000").await.is_err());
        assert!(r.resolve("no port").await.is_err());
    }
}
