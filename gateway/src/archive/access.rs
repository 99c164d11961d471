//! API keys and remembered idempotent answers: their statements (the same SQL on both
//! databases).

use sqlx::Row as _;

use super::rows::*;
use super::{ArchiveError, KeyRecord, Remembered, Result, SqlStore};

impl SqlStore {
    pub(super) async fn key_put(&self, k: &KeyRecord) -> Result<()> {
        let mut q = Sql::new("");
        let vals = [
            q.bind(k.id.clone()),
            q.bind(k.site.clone()),
            q.bind(k.name.clone()),
            q.bind(k.scopes.join(",")),
            q.bind(k.hash.clone()),
            q.bind(i(k.created_at)),
        ];
        q.push(&format!(
            "INSERT INTO api_keys (id, site, name, scopes, hash, created_at) VALUES ({})",
            vals.join(", ")
        ));
        sqlx::query_with(&q.text, q.args)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub(super) async fn key_get(&self, id: &str) -> Result<Option<KeyRecord>> {
        let mut q = Sql::new("");
        let p = q.bind(id.to_owned());
        q.push(&format!(
            "SELECT id, site, name, scopes, hash, created_at, last_used_at FROM api_keys \
             WHERE id = {p} AND revoked_at IS NULL"
        ));
        sqlx::query_with(&q.text, q.args)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(key_of)
            .transpose()
    }

    pub(super) async fn keys_list(&self, site: Option<&str>) -> Result<Vec<KeyRecord>> {
        let mut q = Sql::new("");
        let cond = match site {
            Some(s) => format!("site = {}", q.bind(s.to_owned())),
            None => "site IS NULL".to_owned(),
        };
        q.push(&format!(
            "SELECT id, site, name, scopes, hash, created_at, last_used_at FROM api_keys \
             WHERE {cond} AND revoked_at IS NULL ORDER BY created_at, id"
        ));
        sqlx::query_with(&q.text, q.args)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(key_of)
            .collect()
    }

    pub(super) async fn key_revoke(&self, site: Option<&str>, id: &str) -> Result<bool> {
        let mut q = Sql::new("");
        let (now, idp) = (q.bind(i(crate::clock::now_ms())), q.bind(id.to_owned()));
        let cond = match site {
            Some(s) => format!("site = {}", q.bind(s.to_owned())),
            None => "site IS NULL".to_owned(),
        };
        q.push(&format!(
            "UPDATE api_keys SET revoked_at = {now} WHERE id = {idp} AND {cond} \
             AND revoked_at IS NULL"
        ));
        Ok(sqlx::query_with(&q.text, q.args)
            .execute(&self.pool)
            .await?
            .rows_affected()
            > 0)
    }

    pub(super) async fn key_touch(&self, id: &str, now: u64) -> Result<()> {
        let mut q = Sql::new("");
        let (n, p) = (q.bind(i(now)), q.bind(id.to_owned()));
        q.push(&format!(
            "UPDATE api_keys SET last_used_at = {n} WHERE id = {p}"
        ));
        sqlx::query_with(&q.text, q.args)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub(super) async fn remembered_get(
        &self,
        scope: &str,
        key: &str,
        since: u64,
    ) -> Result<Option<Remembered>> {
        let mut q = Sql::new("");
        let (s, k, t) = (
            q.bind(scope.to_owned()),
            q.bind(key.to_owned()),
            q.bind(i(since)),
        );
        q.push(&format!(
            "SELECT status, body FROM idempotency WHERE scope = {s} AND key = {k} \
             AND created_at >= {t}"
        ));
        sqlx::query_with(&q.text, q.args)
            .fetch_optional(&self.pool)
            .await?
            .map(|r| {
                Ok::<_, ArchiveError>(Remembered {
                    status: u16::try_from(r.try_get::<i64, _>(0)?).unwrap_or(500),
                    body: r.try_get(1)?,
                })
            })
            .transpose()
    }

    pub(super) async fn remembered_put(
        &self,
        scope: &str,
        key: &str,
        r: &Remembered,
        now: u64,
    ) -> Result<bool> {
        let mut q = Sql::new("");
        let vals = [
            q.bind(scope.to_owned()),
            q.bind(key.to_owned()),
            q.bind(i64::from(r.status)),
            q.bind(r.body.clone()),
            q.bind(i(now)),
        ];
        q.push(&format!(
            "INSERT INTO idempotency (scope, key, status, body, created_at) VALUES ({}) \
             ON CONFLICT (scope, key) DO NOTHING",
            vals.join(", ")
        ));
        Ok(sqlx::query_with(&q.text, q.args)
            .execute(&self.pool)
            .await?
            .rows_affected()
            > 0)
    }

    pub(super) async fn remembered_settle(
        &self,
        scope: &str,
        key: &str,
        r: Option<&Remembered>,
    ) -> Result<()> {
        let mut q = Sql::new("");
        match r {
            Some(r) => {
                let (st, b, s, k) = (
                    q.bind(i64::from(r.status)),
                    q.bind(r.body.clone()),
                    q.bind(scope.to_owned()),
                    q.bind(key.to_owned()),
                );
                q.push(&format!(
                    "UPDATE idempotency SET status = {st}, body = {b} WHERE scope = {s} AND key = {k}"
                ));
            }
            None => {
                let (s, k) = (q.bind(scope.to_owned()), q.bind(key.to_owned()));
                q.push(&format!(
                    "DELETE FROM idempotency WHERE scope = {s} AND key = {k}"
                ));
            }
        }
        sqlx::query_with(&q.text, q.args)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub(super) async fn remembered_forget(&self, before: u64) -> Result<u64> {
        let mut q = Sql::new("");
        let b = q.bind(i(before));
        q.push(&format!("DELETE FROM idempotency WHERE created_at < {b}"));
        Ok(sqlx::query_with(&q.text, q.args)
            .execute(&self.pool)
            .await?
            .rows_affected())
    }
}
