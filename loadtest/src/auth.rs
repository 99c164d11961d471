//! Mints HS256 tokens with the claims of protocol v1 (`sub`, `site`, `role`, `name`, `exp`,
//! `iat`, and `max_chats` for operators), as a customer's login system would.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde::Serialize;

#[derive(Debug, Serialize)]
struct Claims<'a> {
    sub: &'a str,
    site: &'a str,
    role: &'a str,
    name: &'a str,
    exp: u64,
    iat: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_chats: Option<u32>,
}

pub struct Minter {
    key: EncodingKey,
    site: String,
    ttl: Duration,
}

impl Minter {
    /// `ttl` should outlast the whole run, reconnects included.
    pub fn new(secret: &str, site: &str, ttl: Duration) -> Minter {
        Minter {
            key: EncodingKey::from_secret(secret.as_bytes()),
            site: site.to_owned(),
            ttl,
        }
    }

    pub fn mint(
        &self,
        role: &str,
        sub: &str,
        name: &str,
        max_chats: Option<u32>,
    ) -> Result<String> {
        let iat = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
        let claims = Claims {
            sub,
            site: &self.site,
            role,
            name,
            exp: iat + self.ttl.as_secs().max(60),
            iat,
            max_chats,
        };
        encode(&Header::new(Algorithm::HS256), &claims, &self.key).context("minting a token")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{decode, DecodingKey, Validation};

    #[test]
    fn tokens_verify_with_the_same_secret_and_carry_the_claims() {
        let m = Minter::new("0123456789abcdef-secret", "demo", Duration::from_secs(600));
        let t = m.mint("operator", "op-1", "Olga", Some(1000)).unwrap();
        let mut v = Validation::new(Algorithm::HS256);
        v.set_required_spec_claims(&["exp"]);
        let got = decode::<serde_json::Value>(
            &t,
            &DecodingKey::from_secret(b"0123456789abcdef-secret"),
            &v,
        )
        .unwrap()
        .claims;
        assert_eq!(got["sub"], "op-1");
        assert_eq!(got["site"], "demo");
        assert_eq!(got["role"], "operator");
        assert_eq!(got["name"], "Olga");
        assert_eq!(got["max_chats"], 1000);
        assert!(got["exp"].as_u64().unwrap() > got["iat"].as_u64().unwrap());
        let visitor = m.mint("visitor", "v-1", "Vic", None).unwrap();
        let got = decode::<serde_json::Value>(
            &visitor,
            &DecodingKey::from_secret(b"0123456789abcdef-secret"),
            &v,
        )
        .unwrap()
        .claims;
        assert!(got.get("max_chats").is_none());
        assert!(decode::<serde_json::Value>(&t, &DecodingKey::from_secret(b"wrong"), &v).is_err());
    }
}
