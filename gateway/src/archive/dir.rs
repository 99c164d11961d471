//! The directory's and staff sessions' statements (the same SQL on both databases).

use sqlx::Row as _;

use super::rows::{i, opt_u, u, Sql};
use super::{Put, Result, SessionRecord, SqlStore};
use crate::core::SiteId;
use crate::directory::{Kind, Row};

impl SqlStore {
    pub(super) async fn dir_load(&self, site: &SiteId) -> Result<(u64, Vec<Row>)> {
        // One transaction: the version and the rows agree.
        let mut tx = self.pool.begin().await?;
        let mut q = Sql::new("");
        let s = q.bind(site.to_string());
        q.push(&format!(
            "SELECT version FROM directory_versions WHERE site = {s}"
        ));
        let version = sqlx::query_with(&q.text, q.args)
            .fetch_optional(&mut *tx)
            .await?
            .map(|r| r.try_get::<i64, _>(0).map(u))
            .transpose()?
            .unwrap_or(0);
        let mut q = Sql::new("");
        let s = q.bind(site.to_string());
        q.push(&format!(
            "SELECT kind, id, body FROM directory WHERE site = {s} ORDER BY kind, id"
        ));
        let rows = sqlx::query_with(&q.text, q.args)
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(|r| {
                Ok(Row {
                    kind: r.try_get(0)?,
                    id: r.try_get(1)?,
                    body: r.try_get(2)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        tx.commit().await?;
        Ok((version, rows))
    }

    pub(super) async fn dir_put(
        &self,
        site: &SiteId,
        kind: Kind,
        id: &str,
        body: &str,
        create: bool,
        now: u64,
    ) -> Result<Put> {
        let mut tx = self.write_tx().await?;
        let mut q = Sql::new("");
        let (s, k, p, b, n) = (
            q.bind(site.to_string()),
            q.bind(kind.as_str().to_owned()),
            q.bind(id.to_owned()),
            q.bind(body.to_owned()),
            q.bind(i(now)),
        );
        q.push(&if create {
            format!(
                "INSERT INTO directory (site, kind, id, body, created_at, updated_at) \
                 VALUES ({s}, {k}, {p}, {b}, {n}, {n}) ON CONFLICT (site, kind, id) DO NOTHING"
            )
        } else {
            format!(
                "UPDATE directory SET body = {b}, updated_at = {n} \
                 WHERE site = {s} AND kind = {k} AND id = {p}"
            )
        });
        let changed = sqlx::query_with(&q.text, q.args)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if changed == 0 {
            return Ok(if create { Put::Exists } else { Put::Missing });
        }
        bump(&mut tx, site).await?;
        tx.commit().await?;
        Ok(Put::Done)
    }

    pub(super) async fn dir_delete(&self, site: &SiteId, kind: Kind, id: &str) -> Result<bool> {
        let mut tx = self.write_tx().await?;
        let mut q = Sql::new("");
        let (s, k, p) = (
            q.bind(site.to_string()),
            q.bind(kind.as_str().to_owned()),
            q.bind(id.to_owned()),
        );
        q.push(&format!(
            "DELETE FROM directory WHERE site = {s} AND kind = {k} AND id = {p}"
        ));
        let gone = sqlx::query_with(&q.text, q.args)
            .execute(&mut *tx)
            .await?
            .rows_affected()
            > 0;
        if gone {
            bump(&mut tx, site).await?;
        }
        tx.commit().await?;
        Ok(gone)
    }

    pub(super) async fn session_put(&self, r: &SessionRecord) -> Result<()> {
        let mut q = Sql::new("");
        let vals = [
            q.bind(r.id.clone()),
            q.bind(r.site.clone()),
            q.bind(r.staff.clone()),
            q.bind(i(r.created_at)),
            q.bind(i(r.expires_at)),
        ];
        q.push(&format!(
            "INSERT INTO staff_sessions (id, site, staff, created_at, expires_at) VALUES ({})",
            vals.join(", ")
        ));
        sqlx::query_with(&q.text, q.args)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub(super) async fn session_get(&self, id: &str) -> Result<Option<SessionRecord>> {
        let mut q = Sql::new("");
        let p = q.bind(id.to_owned());
        q.push(&format!(
            "SELECT id, site, staff, created_at, expires_at, revoked_at FROM staff_sessions \
             WHERE id = {p}"
        ));
        let Some(r) = sqlx::query_with(&q.text, q.args)
            .fetch_optional(&self.pool)
            .await?
        else {
            return Ok(None);
        };
        Ok(Some(SessionRecord {
            id: r.try_get(0)?,
            site: r.try_get(1)?,
            staff: r.try_get(2)?,
            created_at: u(r.try_get(3)?),
            expires_at: u(r.try_get(4)?),
            revoked_at: opt_u(r.try_get(5)?),
        }))
    }

    pub(super) async fn session_revoke(
        &self,
        site: &SiteId,
        id: Option<&str>,
        staff: Option<&str>,
        now: u64,
    ) -> Result<u64> {
        let mut q = Sql::new("");
        let (n, s) = (q.bind(i(now)), q.bind(site.to_string()));
        let mut cond = format!("site = {s} AND revoked_at IS NULL");
        if let Some(id) = id {
            cond.push_str(&format!(" AND id = {}", q.bind(id.to_owned())));
        }
        if let Some(staff) = staff {
            cond.push_str(&format!(" AND staff = {}", q.bind(staff.to_owned())));
        }
        q.push(&format!(
            "UPDATE staff_sessions SET revoked_at = {n} WHERE {cond}"
        ));
        Ok(sqlx::query_with(&q.text, q.args)
            .execute(&self.pool)
            .await?
            .rows_affected())
    }
}

/// Bumps a site's directory version within a change's transaction.
async fn bump(tx: &mut sqlx::AnyConnection, site: &SiteId) -> Result<()> {
    let mut q = Sql::new("");
    let s = q.bind(site.to_string());
    q.push(&format!(
        "INSERT INTO directory_versions (site, version) VALUES ({s}, 1) \
         ON CONFLICT (site) DO UPDATE SET version = directory_versions.version + 1"
    ));
    sqlx::query_with(&q.text, q.args).execute(tx).await?;
    Ok(())
}
