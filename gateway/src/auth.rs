//! Tokens: verification of every `hello`, minting of visitor tokens and of the CLI's tokens.
//!
//! HS256 with `GATEWAY_JWT_SECRET` by default; RS256 or EdDSA with a public key as an option.
//! The algorithm is pinned by configuration: a token that names another algorithm (`none`
//! included) is refused, and so is a token without `exp`.

use std::borrow::Cow;

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
    /// The gateway made this token for an anonymous visitor (`POST /v1/visitor/session`):
    /// only such a token is renewed after it expired. A site's own tokens (its logged-in
    /// customers) are not: the site's backend mints them again.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub anon: bool,
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
    /// The gateway's own secret (HS256): the root of every site's signing keys.
    master: Option<Vec<u8>>,
}

impl Auth {
    /// HS256 with a shared secret: verifies and mints.
    pub fn hs256(secret: &[u8]) -> Auth {
        let mut a = Auth::new(
            Algorithm::HS256,
            DecodingKey::from_secret(secret),
            Some(EncodingKey::from_secret(secret)),
        );
        a.master = Some(secret.to_vec());
        a
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
        // A token valid only from a later time is not valid now.
        validation.validate_nbf = true;
        validation.leeway = 5;
        Auth {
            decoding,
            encoding,
            algorithm,
            validation,
            master: None,
        }
    }

    /// A site's signing key `kid`: an HS256 secret (64 hex characters, used as they are)
    /// that the site's backend signs its users' tokens with, naming `kid` in the header.
    /// Derived from the gateway's secret, the site and the key id, so that the database
    /// holds no secret, and a site's key verifies only tokens for that site. `None` when the
    /// gateway verifies with a public key (it holds no secret to derive from).
    pub fn site_secret(&self, site: &str, kid: &str) -> Option<String> {
        use hmac::{Hmac, Mac};
        let master = self.master.as_ref()?;
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(master).expect("any key length");
        mac.update(b"chat-gateway site signing key v1\0");
        mac.update(site.as_bytes());
        mac.update(b"\0");
        mac.update(kid.as_bytes());
        Some(
            mac.finalize()
                .into_bytes()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect(),
        )
    }

    /// The key and rules a token is checked with: the gateway's own (no `kid`), or the
    /// signing key `kid` of the site the token names, if `key_ok(site, kid)` says that key
    /// is current. The site is read before the signature is checked only to choose the key;
    /// a token for another site than the key's fails the signature.
    fn key_for(
        &self,
        token: &str,
        key_ok: &dyn Fn(&str, &str) -> bool,
    ) -> Result<(Cow<'_, DecodingKey>, Cow<'_, Validation>), AuthError> {
        let header = jsonwebtoken::decode_header(token).map_err(AuthError::Invalid)?;
        let Some(kid) = header.kid else {
            return Ok((
                Cow::Borrowed(&self.decoding),
                Cow::Borrowed(&self.validation),
            ));
        };
        let site = unverified_site(token).ok_or(AuthError::Claims("no site in the token"))?;
        if !key_ok(&site, &kid) {
            return Err(AuthError::Claims("unknown or retired signing key"));
        }
        let secret = self
            .site_secret(&site, &kid)
            .ok_or(AuthError::Claims("this gateway has no site signing keys"))?;
        let mut validation = self.validation.clone();
        validation.algorithms = vec![Algorithm::HS256];
        Ok((
            Cow::Owned(DecodingKey::from_secret(secret.as_bytes())),
            Cow::Owned(validation),
        ))
    }

    /// [`Auth::verify`], also for tokens signed with a site's key (see [`Auth::key_for`]).
    pub fn verify_with(
        &self,
        token: &str,
        key_ok: &dyn Fn(&str, &str) -> bool,
    ) -> Result<Principal, AuthError> {
        let (key, validation) = self.key_for(token, key_ok)?;
        let claims = decode::<Claims>(token, &key, &validation)
            .map_err(AuthError::Invalid)?
            .claims;
        principal(claims)
    }

    /// Verifies signature, algorithm, expiry and the shape of the claims of a token signed
    /// with the gateway's own key (a token naming a site key is refused).
    pub fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        self.verify_with(token, &|_, _| false)
    }

    /// Verifies an anonymous visitor's token that the gateway made (`anon`), whose expiry
    /// may have passed, but not by more than `max_age_ms` (a returning visitor keeps their
    /// id). Any other token is refused here.
    pub fn verify_renewable(
        &self,
        token: &str,
        now_ms: u64,
        max_age_ms: u64,
        key_ok: &dyn Fn(&str, &str) -> bool,
    ) -> Result<Principal, AuthError> {
        let (key, v) = self.key_for(token, key_ok)?;
        let mut v = v.into_owned();
        v.validate_exp = false;
        let claims = decode::<Claims>(token, &key, &v)
            .map_err(AuthError::Invalid)?
            .claims;
        if !claims.anon || claims.role != Role::Visitor {
            return Err(AuthError::Claims("not a token the gateway renews"));
        }
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

/// The `site` claim of a token, read without checking anything.
fn unverified_site(token: &str) -> Option<String> {
    use base64::Engine as _;
    #[derive(Deserialize)]
    struct Site {
        site: String,
    }
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    serde_json::from_slice::<Site>(&bytes).ok().map(|s| s.site)
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
            anon: false,
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
    fn only_the_gateways_own_expired_visitor_token_keeps_its_id_within_max_age() {
        let a = Auth::hs256(b"secret");
        let now = crate::clock::now_ms();
        let mut c = claims(now / 1000 - 60);
        c.role = Role::Visitor;
        c.anon = true;
        let t = a.mint(&c).unwrap();
        assert!(a.verify(&t).is_err());
        assert!(a
            .verify_renewable(&t, now, 3_600_000, &|_, _| false)
            .is_ok());
        assert!(a.verify_renewable(&t, now, 1_000, &|_, _| false).is_err());
        // A site's own token for its customer, or staff: never renewed.
        c.anon = false;
        let site_minted = a.mint(&c).unwrap();
        assert!(a
            .verify_renewable(&site_minted, now, 3_600_000, &|_, _| false)
            .is_err());
        let mut staff = claims(now / 1000 - 60);
        staff.anon = true;
        let staff = a.mint(&staff).unwrap();
        assert!(a
            .verify_renewable(&staff, now, 3_600_000, &|_, _| false)
            .is_err());
    }

    #[test]
    fn a_token_valid_only_later_is_refused() {
        let a = Auth::hs256(b"secret");
        let later = crate::clock::now_ms() / 1000 + 3600;
        let mut v = serde_json::to_value(claims(far())).unwrap();
        v["nbf"] = serde_json::json!(later);
        let t = encode(
            &Header::new(Algorithm::HS256),
            &v,
            &EncodingKey::from_secret(b"secret"),
        )
        .unwrap();
        assert!(a.verify(&t).is_err());
        v["nbf"] = serde_json::json!(later - 7200);
        let t = encode(
            &Header::new(Algorithm::HS256),
            &v,
            &EncodingKey::from_secret(b"secret"),
        )
        .unwrap();
        assert!(a.verify(&t).is_ok());
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

    fn signed_by_site(site_secret: &str, kid: &str, c: &Claims) -> String {
        let mut h = Header::new(Algorithm::HS256);
        h.kid = Some(kid.into());
        encode(&h, c, &EncodingKey::from_secret(site_secret.as_bytes())).unwrap()
    }

    #[test]
    fn a_site_key_verifies_its_own_site_only_and_only_while_current() {
        let a = Auth::hs256(b"master secret");
        let demo = a.site_secret("demo", "k1").unwrap();
        assert_eq!(demo.len(), 64);
        assert_ne!(demo, a.site_secret("other", "k1").unwrap());
        assert_ne!(demo, a.site_secret("demo", "k2").unwrap());
        let current =
            |site: &str, kid: &str| (site, kid) == ("demo", "k1") || (site, kid) == ("other", "k1");
        let mut c = claims(far());
        let t = signed_by_site(&demo, "k1", &c);
        assert_eq!(a.verify_with(&t, &current).unwrap().site.as_str(), "demo");
        // The gateway's own key refuses it; a retired key is refused.
        assert!(a.verify(&t).is_err());
        assert!(a.verify_with(&t, &|_, _| false).is_err());
        // Demo's key cannot make a token for another site, even one whose key id matches.
        c.site = "other".into();
        let forged = signed_by_site(&demo, "k1", &c);
        assert!(a.verify_with(&forged, &current).is_err());
        // Public-key gateways have no site keys.
        assert!(
            Auth::new(Algorithm::HS256, DecodingKey::from_secret(b"x"), None)
                .site_secret("demo", "k1")
                .is_none()
        );
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
