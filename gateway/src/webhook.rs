//! Webhook calls as the Standard Webhooks specification describes them: a `POST` of the
//! event's JSON with `webhook-id`, `webhook-timestamp` (seconds) and `webhook-signature`
//! (`v1,` and the base64 HMAC-SHA256 of `{id}.{timestamp}.{body}` keyed with the secret's
//! bytes after `whsec_`, base64-decoded), so that a receiver can verify it with any Standard
//! Webhooks library. HTTP/1.1 over `hyper` with rustls for `https://`.

use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use hmac::{Hmac, Mac};
use http_body_util::{BodyExt, Full};
use std::net::{IpAddr, SocketAddr};

use hyper_util::client::legacy::connect::dns::Name;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// The most of an answer that is read.
pub const MAX_ANSWER: usize = 64 * 1024;

/// How long a receiver has to answer.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// The `webhook-signature` header's value for a message.
pub fn signature(secret: &str, id: &str, ts: u64, body: &[u8]) -> Option<String> {
    let key = base64::engine::general_purpose::STANDARD
        .decode(secret.strip_prefix("whsec_")?)
        .ok()?;
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&key).ok()?;
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(ts.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    Some(format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    ))
}

/// The host of an `http(s)://` URL, lower-cased (without port, user or brackets).
pub fn host_of(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split(['/', '?', '#']).next()?;
    let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if let Some(v6) = hostport.strip_prefix('[') {
        v6.split(']').next()?
    } else {
        hostport.split(':').next()?
    };
    (!host.is_empty()).then(|| host.to_ascii_lowercase())
}

/// Whether a URL's host is one webhooks and actions may call: one `GATEWAY_WEBHOOK_HOSTS`
/// lists; with no list, any host but an address of this machine or a private network (a name
/// is checked again when it is resolved, by [`Caller`]'s resolver, so that it cannot point
/// inward either).
pub fn host_allowed(allowed: &[String], url: &str) -> bool {
    let Some(host) = host_of(url) else {
        return false;
    };
    if allowed.contains(&host) {
        return true;
    }
    if !allowed.is_empty() {
        return false;
    }
    match host.parse::<IpAddr>() {
        Ok(ip) => is_public(ip),
        Err(_) => {
            let name = host.trim_end_matches('.');
            name != "localhost" && !name.ends_with(".localhost")
        }
    }
}

/// Whether an address is on the public internet: not this machine, not a private, shared,
/// link-local (the clouds' metadata service among them), multicast or reserved network.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b))
                || (a == 192 && b == 0)
                || (a == 198 && (18..20).contains(&b))
                || a >= 240)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
                || first == 0x2001 && v6.segments()[1] == 0x0db8
                || first == 0x0064 && v6.segments()[1] == 0xff9b)
        }
    }
}

/// Resolves the hosts webhooks and actions call, keeping only public addresses unless
/// `GATEWAY_WEBHOOK_HOSTS` names the host: a name cannot be pointed at this machine or the
/// private network after it was accepted.
#[derive(Clone)]
pub struct GuardedResolver {
    allowed: std::sync::Arc<Vec<String>>,
}

impl tower::Service<Name> for GuardedResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = std::io::Error;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let allowed = self.allowed.clone();
        Box::pin(async move {
            let host = name.as_str().to_ascii_lowercase();
            let listed = allowed.contains(&host);
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|a| listed || is_public(a.ip()))
                .collect();
            if addrs.is_empty() {
                return Err(std::io::Error::other(format!(
                    "{host} has no public address (GATEWAY_WEBHOOK_HOSTS may list it)"
                )));
            }
            Ok(addrs.into_iter())
        })
    }
}

/// How a call went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The receiver's status (2xx: delivered) and what it answered (its first
    /// [`MAX_ANSWER`] bytes).
    Status(u16, Bytes),
    /// No answer: the connection failed or it took too long.
    Failed(String),
}

type Https = hyper_rustls::HttpsConnector<HttpConnector<GuardedResolver>>;

/// Makes the calls (one connection pool for every webhook of the node).
pub struct Caller {
    client: Client<Https, Full<Bytes>>,
}

impl Caller {
    /// A caller that reaches public addresses, and the hosts `allowed` lists whatever their
    /// addresses (`GATEWAY_WEBHOOK_HOSTS`).
    pub fn new(allowed: Vec<String>) -> Caller {
        let mut http = HttpConnector::new_with_resolver(GuardedResolver {
            allowed: std::sync::Arc::new(allowed),
        });
        http.enforce_http(false);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_webpki_roots()
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        Caller {
            client: Client::builder(TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(30))
                .build(https),
        }
    }

    /// POSTs a signed event.
    pub async fn post(&self, url: &str, secret: &str, id: &str, ts: u64, body: Bytes) -> Answer {
        let Some(sig) = signature(secret, id, ts, &body) else {
            return Answer::Failed("the webhook's secret is not a whsec_ key".into());
        };
        let req = match hyper::Request::post(url)
            .header("content-type", "application/json")
            .header("user-agent", "chat-gateway-webhooks/1")
            .header("webhook-id", id)
            .header("webhook-timestamp", ts.to_string())
            .header("webhook-signature", sig)
            .body(Full::new(body))
        {
            Ok(r) => r,
            Err(e) => return Answer::Failed(format!("bad request: {e}")),
        };
        match tokio::time::timeout(CALL_TIMEOUT, async {
            let res = self.client.request(req).await?;
            let status = res.status().as_u16();
            // Read the answer (an action's note), so the connection can be used again too.
            let limited = http_body_util::Limited::new(res.into_body(), MAX_ANSWER);
            let answer = match tokio::time::timeout(Duration::from_secs(2), limited.collect()).await
            {
                Ok(Ok(b)) => b.to_bytes(),
                _ => Bytes::new(),
            };
            Ok::<_, hyper_util::client::legacy::Error>((status, answer))
        })
        .await
        {
            Ok(Ok((status, answer))) => Answer::Status(status, answer),
            Ok(Err(e)) => Answer::Failed(e.to_string()),
            Err(_) => Answer::Failed(format!("no answer within {CALL_TIMEOUT:?}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the Standard Webhooks specification's reference libraries.
    #[test]
    fn the_signature_is_the_specifications() {
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(
            signature(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body).as_deref(),
            Some("v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=")
        );
        assert_eq!(signature("nope", "id", 1, b""), None);
    }

    #[test]
    fn hosts_are_read_from_urls_and_checked() {
        assert_eq!(
            host_of("https://Hooks.Example.com:8443/x?y").as_deref(),
            Some("hooks.example.com")
        );
        assert_eq!(
            host_of("http://u:p@127.0.0.1/h").as_deref(),
            Some("127.0.0.1")
        );
        assert_eq!(host_of("http://[::1]:80/").as_deref(), Some("::1"));
        assert_eq!(host_of("http:///x"), None);
        let only = vec!["127.0.0.1".to_owned()];
        assert!(host_allowed(&only, "http://127.0.0.1:9/h"));
        assert!(!host_allowed(&only, "http://127.0.0.1.evil.example/h"));
        assert!(!host_allowed(&only, "http://evil.example/@127.0.0.1"));
        assert!(host_allowed(&[], "https://anything.example/"));
        // With no list: nothing of this machine or a private network.
        for inward in [
            "http://127.0.0.1/",
            "http://localhost:8080/",
            "http://10.1.2.3/",
            "http://169.254.169.254/latest/meta-data/",
            "http://[::1]/",
            "http://[fd00::1]/",
            "http://[::ffff:192.168.0.1]/",
            "http://100.64.0.1/",
            "http://0.0.0.0/",
        ] {
            assert!(!host_allowed(&[], inward), "{inward}");
        }
        assert!(host_allowed(&[], "https://93.184.215.14/hook"));
        assert!(host_allowed(&[], "https://[2606:4700::1111]/hook"));
    }

    #[tokio::test]
    async fn a_name_that_resolves_inward_is_refused_unless_listed() {
        use tower::Service;
        let mut open = GuardedResolver {
            allowed: std::sync::Arc::new(Vec::new()),
        };
        let name: Name = "localhost".parse().unwrap();
        assert!(open.call(name.clone()).await.is_err());
        let mut listed = GuardedResolver {
            allowed: std::sync::Arc::new(vec!["localhost".to_owned()]),
        };
        let addrs: Vec<SocketAddr> = listed.call(name).await.unwrap().collect();
        assert!(addrs.iter().all(|a| a.ip().is_loopback()), "{addrs:?}");
    }
}
