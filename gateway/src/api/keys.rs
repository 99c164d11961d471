//! API keys: `ck_<key id>_<secret>`. The secret is shown once, when the key is made, and
//! kept only as its SHA-256; a key is looked up by its id and checked against the hash in
//! constant time. Keys live in the archive's database, which every node shares, so a revoked
//! key is refused at once everywhere.

use std::fmt;
use std::str::FromStr;

use rand::Rng;
use sha2::{Digest, Sha256};

use crate::archive::{KeyRecord, Store};
use crate::clock::now_ms;

/// What a key may do (see `api-v1.md`, "Who may call").
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    /// Every GET of its site.
    Read,
    /// Everything of its site.
    Admin,
    /// Read conversations, write as a bot, close, transfer, tag.
    Bot,
    /// Mint tokens for the site's staff and identified visitors.
    Tokens,
}

impl Scope {
    pub const ALL: [Scope; 4] = [Scope::Read, Scope::Admin, Scope::Bot, Scope::Tokens];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Admin => "admin",
            Scope::Bot => "bot",
            Scope::Tokens => "tokens",
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Scope {
    type Err = String;

    fn from_str(s: &str) -> Result<Scope, String> {
        Scope::ALL
            .into_iter()
            .find(|x| x.as_str() == s)
            .ok_or_else(|| format!("{s:?} is not a scope (read, admin, bot, tokens)"))
    }
}

/// Parses a comma-separated list of scopes (at least one).
pub fn parse_scopes(list: &[String]) -> Result<Vec<Scope>, String> {
    let mut out: Vec<Scope> = list
        .iter()
        .flat_map(|s| s.split(','))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(Scope::from_str)
        .collect::<Result<_, _>>()?;
    out.sort_unstable();
    out.dedup();
    if out.is_empty() {
        return Err("at least one scope is required (read, admin, bot, tokens)".into());
    }
    Ok(out)
}

/// The hash a key's secret is kept as.
pub fn hash_secret(secret: &str) -> String {
    hex(&Sha256::digest(secret.as_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// Splits `ck_<id>_<secret>` into its id and secret.
pub fn parse_key(key: &str) -> Option<(&str, &str)> {
    let (id, secret) = key.strip_prefix("ck_")?.split_once('_')?;
    let ok = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    (ok(id, ID_LEN) && ok(secret, SECRET_LEN)).then_some((id, secret))
}

const ID_LEN: usize = 12;
const SECRET_LEN: usize = 64;

/// Whether two hashes are equal, in time independent of where they differ.
pub fn same_hash(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// A new key: its record (with the hash) and the whole key, to be shown once.
pub fn new_key(site: Option<&str>, name: &str, scopes: &[Scope]) -> (KeyRecord, String) {
    let mut rng = rand::rng();
    let id = hex(&rng.random::<[u8; ID_LEN / 2]>());
    let secret = hex(&rng.random::<[u8; SECRET_LEN / 2]>());
    let record = KeyRecord {
        id: id.clone(),
        site: site.map(str::to_owned),
        name: name.to_owned(),
        scopes: scopes.iter().map(|s| s.as_str().to_owned()).collect(),
        hash: hash_secret(&secret),
        created_at: now_ms(),
        last_used_at: None,
    };
    (record, format!("ck_{id}_{secret}"))
}

/// Makes and stores a key; returns its record and the whole key.
pub async fn create(
    store: &dyn Store,
    site: Option<&str>,
    name: &str,
    scopes: &[Scope],
) -> crate::archive::Result<(KeyRecord, String)> {
    let (record, key) = new_key(site, name, scopes);
    store.put_key(&record).await?;
    Ok((record, key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_key_parses_back_and_matches_its_hash() {
        let (rec, key) = new_key(Some("demo"), "crm", &[Scope::Read]);
        let (id, secret) = parse_key(&key).expect("well-formed");
        assert_eq!(id, rec.id);
        assert!(same_hash(&hash_secret(secret), &rec.hash));
        assert!(!same_hash(&hash_secret("other"), &rec.hash));
    }

    #[test]
    fn malformed_keys_are_refused() {
        for k in [
            "",
            "ck_",
            "ck_abc_def",
            "xk_000000000000_00",
            "ck_zzzzzzzzzzzz_0",
        ] {
            assert!(parse_key(k).is_none(), "{k}");
        }
    }

    #[test]
    fn scopes_parse_from_lists() {
        assert_eq!(
            parse_scopes(&["read,bot".into(), "read".into()]).unwrap(),
            [Scope::Read, Scope::Bot]
        );
        assert!(parse_scopes(&["root".into()]).is_err());
        assert!(parse_scopes(&[]).is_err());
    }
}
