//! Tokens: verification of every `hello`, minting of visitor tokens and of the CLI's tokens.
//!
//! HS256 with `GATEWAY_JWT_SECRET` by default; RS256 or EdDSA with a public key as an option.
//! The algorithm is pinned by configuration: a token that names another algorithm (`none`
//! included) is refused, and so is a token without `exp`.

use jsonwebtoken::{decode, encode, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::core::{BotId, OperatorId, QueueId, SiteId, SupervisorId, VisitorId};
use crate::protocol::Role;

/// The claims of protocol v1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub site: String,
    pub role: Role,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queues: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_chats: Option<u32>,
    /// Staff who signed in with a password: their session, revocable (see
    /// `api/sessions.rs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
}

/// A user of a site, by role, with the id of that role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum User {
    Visitor(VisitorId),
    Operator(OperatorId),
    Supervisor(SupervisorId),
    /// An integration calling the HTTP API with a key (never from a token).
    Bot(BotId),
}

impl User {
    pub fn role(&self) -> Role {
        match self {
            User::Visitor(_) => Role::Visitor,
            User::Operator(_) => Role::Operator,
            User::Supervisor(_) => Role::Supervisor,
            User::Bot(_) => Role::Bot,
        }
    }

    pub fn id(&self) -> &str {
        match self {
            User::Visitor(v) => v.as_str(),
            User::Operator(o) => o.as_str(),
            User::Supervisor(s) => s.as_str(),
            User::Bot(b) => b.as_str(),
        }
    }
}

/// Who a verified token says the connection is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub site: SiteId,
    pub user: User,
    pub name: Option<String>,
    /// Operators: the queues they serve (`None`: every queue of the site).
    pub queues: Option<Vec<QueueId>>,
    /// Operators: their limit of concurrent conversations (`None`: the site's).
    pub max_chats: Option<u32>,
    /// The sign-in session the token belongs to (checked on every use: revocable).
    pub session: Option<String>,
}

impl Principal {
    pub fn role(&self) -> Role {
        self.user.role()
    }

    pub fn id(&self) -> &str {
        self.user.id()
    }

    /// Operators and supervisors: the site's staff.
    pub fn is_staff(&self) -> bool {
        self.role().is_staff()
    }

    pub fn visitor(&self) -> Option<&VisitorId> {
        match &self.user {
            User::Visitor(v) => Some(v),
            _ => None,
        }
    }

    pub fn operator(&self) -> Option<&OperatorId> {
        match &self.user {
            User::Operator(o) => Some(o),
            _ => None,
        }
    }

    pub fn is_supervisor(&self) -> bool {
        matches!(self.user, User::Supervisor(_))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("invalid token")]
    Invalid(#[source] jsonwebtoken::errors::Error),
    #[error("token claims are not acceptable: {0}")]
    Claims(&'static str),
    #[error("this gateway verifies tokens with a public key and cannot mint them")]
    CannotMint,
}

/// Longest accepted id in a token (`sub`, `site`).
const MAX_ID_LEN: usize = 128;

pub struct Auth {
    decoding: DecodingKey,
    encoding: Option<EncodingKey>,
    algorithm: Algorithm,
    validation: Validation,
}

impl Auth {
    /// HS256 with a shared secret: verifies and mints.
    pub fn hs256(secret: &[u8]) -> Auth {
        Auth::new(
            Algorithm::HS256,
            DecodingKey::from_secret(secret),
            Some(EncodingKey::from_secret(secret)),
        )
    }

    /// RS256 or EdDSA with a PEM public key: verifies only (tokens come from the customer).
    pub fn public_key(algorithm: Algorithm, pem: &[u8]) -> Result<Auth, AuthError> {
        let key = match algorithm {
            Algorithm::RS256 => DecodingKey::from_rsa_pem(pem),
            Algorithm::EdDSA => DecodingKey::from_ed_pem(pem),
            _ => return Err(AuthError::Claims("unsupported algorithm")),
        }
        .map_err(AuthError::Invalid)?;
        Ok(Auth::new(algorithm, key, None))
    }

    fn new(algorithm: Algorithm, decoding: DecodingKey, encoding: Option<EncodingKey>) -> Auth {
        let mut validation = Validation::new(algorithm);
        validation.algorithms = vec![algorithm];
        validation.set_required_spec_claims(&["exp", "sub"]);
        validation.validate_exp = true;
        validation.leeway = 5;
        Auth {
            decoding,
            encoding,
            algorithm,
            validation,
        }
    }

    /// Verifies signature, algorithm, expiry and the shape of the claims.
    pub fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        let claims = decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(AuthError::Invalid)?
            .claims;
        principal(claims)
    }

    /// Verifies a token whose expiry may have passed, but not by more than `max_age_ms`
    /// (a returning visitor keeps their id).
    pub fn verify_allow_expired(
        &self,
        token: &str,
        now_ms: u64,
        max_age_ms: u64,
    ) -> Result<Principal, AuthError> {
        let mut v = self.validation.clone();
        v.validate_exp = false;
        let claims = decode::<Claims>(token, &self.decoding, &v)
            .map_err(AuthError::Invalid)?
            .claims;
        if claims.exp.saturating_mul(1000).saturating_add(max_age_ms) < now_ms {
            return Err(AuthError::Claims("token expired too long ago"));
        }
        principal(claims)
    }

    pub fn mint(&self, claims: &Claims) -> Result<String, AuthError> {
        let key = self.encoding.as_ref().ok_or(AuthError::CannotMint)?;
        encode(&Header::new(self.algorithm), claims, key).map_err(AuthError::Invalid)
    }
}

/// Whether the gateway would accept these claims (their shape, not their signature).
pub fn check_claims(c: Claims) -> Result<Principal, AuthError> {
    principal(c)
}

fn principal(c: Claims) -> Result<Principal, AuthError> {
    // Ids become parts of keys, channel names and log lines: no control characters (a newline
    // would split a change list), and no braces (they are Redis Cluster hash tags).
    let clean = |id: &str| {
        !id.is_empty()
            && id.len() <= MAX_ID_LEN
            && !id
                .chars()
                .any(|ch| ch.is_control() || ch == '{' || ch == '}')
    };
    if !clean(&c.sub) || !clean(&c.site) || c.sid.as_deref().is_some_and(|s| !clean(s)) {
        return Err(AuthError::Claims(
            "sub and site must be 1 to 128 bytes without control characters or braces",
        ));
    }
    let name = c
        .name
        .map(|n| {
            n.chars()
                .filter(|ch| !ch.is_control())
                .take(100)
                .collect::<String>()
        })
        .filter(|n| !n.is_empty());
    let user = match c.role {
        Role::Visitor => User::Visitor(VisitorId(c.sub)),
        Role::Operator => User::Operator(OperatorId(c.sub)),
        Role::Supervisor => User::Supervisor(SupervisorId(c.sub)),
        Role::System | Role::Bot => {
            return Err(AuthError::Claims("roles system and bot are not users"))
        }
    };
    Ok(Principal {
        site: SiteId(c.site),
        user,
        name,
        queues: c.queues.map(|q| q.into_iter().map(QueueId).collect()),
        max_chats: c.max_chats.filter(|m| *m > 0),
        session: c.sid,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp: u64) -> Claims {
        Claims {
            sid: None,
            sub: "op1".into(),
            site: "demo".into(),
            role: Role::Operator,
            name: Some("Olga".into()),
            exp,
            iat: None,
            queues: None,
            max_chats: Some(3),
        }
    }

    fn far() -> u64 {
        crate::clock::now_ms() / 1000 + 3600
    }

    #[test]
    fn round_trip() {
        let a = Auth::hs256(b"secret");
        let p = a.verify(&a.mint(&claims(far())).unwrap()).unwrap();
        assert_eq!(p.id(), "op1");
        assert_eq!(p.role(), Role::Operator);
        assert_eq!(p.max_chats, Some(3));
    }

    #[test]
    fn forged_expired_and_alg_none_are_refused() {
        let a = Auth::hs256(b"secret");
        let other = Auth::hs256(b"other");
        assert!(a.verify(&other.mint(&claims(far())).unwrap()).is_err());
        assert!(a.verify(&a.mint(&claims(1000)).unwrap()).is_err());
        // alg none: header {"alg":"none"} with an empty signature.
        use base64_like as b;
        let none = format!(
            "{}.{}.",
            b::encode(br#"{"alg":"none","typ":"JWT"}"#),
            b::encode(serde_json::to_string(&claims(far())).unwrap().as_bytes())
        );
        assert!(a.verify(&none).is_err());
        // HS512 signed with the right secret: still refused (algorithm pinned).
        let t = encode(
            &Header::new(Algorithm::HS512),
            &claims(far()),
            &EncodingKey::from_secret(b"secret"),
        )
        .unwrap();
        assert!(a.verify(&t).is_err());
    }

    #[test]
    fn token_without_exp_is_refused() {
        let a = Auth::hs256(b"secret");
        let t = encode(
            &Header::new(Algorithm::HS256),
            &serde_json::json!({"sub":"x","site":"demo","role":"visitor"}),
            &EncodingKey::from_secret(b"secret"),
        )
        .unwrap();
        assert!(a.verify(&t).is_err());
    }

    #[test]
    fn expired_visitor_token_keeps_id_within_max_age() {
        let a = Auth::hs256(b"secret");
        let now = crate::clock::now_ms();
        let t = a.mint(&claims(now / 1000 - 60)).unwrap();
        assert!(a.verify(&t).is_err());
        assert!(a.verify_allow_expired(&t, now, 3_600_000).is_ok());
        assert!(a.verify_allow_expired(&t, now, 1_000).is_err());
    }

    #[test]
    fn ids_with_control_characters_or_braces_are_refused() {
        let a = Auth::hs256(b"secret");
        for bad in ["op\n1", "{op1}", "", &"x".repeat(129)] {
            let mut c = claims(far());
            c.sub = bad.to_string();
            assert!(a.verify(&a.mint(&c).unwrap()).is_err(), "sub {bad:?}");
            let mut c = claims(far());
            c.site = bad.to_string();
            assert!(a.verify(&a.mint(&c).unwrap()).is_err(), "site {bad:?}");
        }
        let mut c = claims(far());
        c.name = Some("Ol\u{7}ga\r\n".into());
        assert_eq!(
            a.verify(&a.mint(&c).unwrap()).unwrap().name.as_deref(),
            Some("Olga")
        );
        c.name = Some("\n".into());
        assert_eq!(a.verify(&a.mint(&c).unwrap()).unwrap().name, None);
    }

    /// Unpadded base64url, enough to forge a token in a test.
    mod base64_like {
        const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        pub fn encode(data: &[u8]) -> String {
            let mut out = String::new();
            for chunk in data.chunks(3) {
                let b = [
                    chunk[0],
                    *chunk.get(1).unwrap_or(&0),
                    *chunk.get(2).unwrap_or(&0),
                ];
                let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
                for i in 0..=chunk.len() {
                    out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
                }
            }
            out
        }
    }
}
