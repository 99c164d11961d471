//! Deliveries — e-mails and webhook calls on their way out — and their attempts: the
//! statements (the same SQL on both databases).

use sqlx::Row as _;

use super::rows::{i, opt_u, u, Sql};
use super::{Attempt, Delivery, DeliveryLog, NewDelivery, Result, SqlStore};

impl SqlStore {
    pub(super) async fn deliveries_add(&self, items: &[NewDelivery], now: u64) -> Result<u64> {
        let mut added = 0;
        for chunk in items.chunks(super::rows::ROWS_PER_INSERT) {
            let mut q = Sql::new(
                "INSERT INTO deliveries (id, site, kind, target, body, created_at, due_at) VALUES ",
            );
            let mut rows = Vec::with_capacity(chunk.len());
            for d in chunk {
                let vals = [
                    q.bind(d.id.clone()),
                    q.bind(d.site.clone()),
                    q.bind(d.kind.clone()),
                    q.bind(d.target.clone()),
                    q.bind(d.body.clone()),
                    q.bind(i(now)),
                    q.bind(i(d.due_at)),
                ];
                rows.push(format!("({})", vals.join(", ")));
            }
            q.push(&rows.join(", "));
            q.push(" ON CONFLICT (id) DO NOTHING");
            added += sqlx::query_with(&q.text, q.args)
                .execute(&self.pool)
                .await?
                .rows_affected();
        }
        Ok(added)
    }

    pub(super) async fn deliveries_claim(
        &self,
        now: u64,
        lease_ms: u64,
        limit: usize,
    ) -> Result<Vec<Delivery>> {
        let mut q = Sql::new("");
        let n = q.bind(i(now));
        let lim = q.bind(limit as i64);
        q.push(&format!(
            "SELECT id FROM deliveries WHERE done_at IS NULL AND failed_at IS NULL \
             AND due_at <= {n} AND lease_until <= {n} ORDER BY due_at LIMIT {lim}"
        ));
        let ids: Vec<String> = sqlx::query_with(&q.text, q.args)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|r| r.try_get::<String, _>(0))
            .collect::<std::result::Result<_, _>>()?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            // A claim is a compare-and-set on the lease: of two senders, one wins.
            let mut q = Sql::new("");
            let (until, n, p) = (q.bind(i(now + lease_ms)), q.bind(i(now)), q.bind(id));
            q.push(&format!(
                "UPDATE deliveries SET lease_until = {until} \
                 WHERE id = {p} AND lease_until <= {n} AND done_at IS NULL AND failed_at IS NULL \
                 RETURNING id, site, kind, target, body, created_at, attempts"
            ));
            if let Some(r) = sqlx::query_with(&q.text, q.args)
                .fetch_optional(&self.pool)
                .await?
            {
                out.push(Delivery {
                    id: r.try_get(0)?,
                    site: r.try_get(1)?,
                    kind: r.try_get(2)?,
                    target: r.try_get(3)?,
                    body: r.try_get(4)?,
                    created_at: u(r.try_get(5)?),
                    attempts: u(r.try_get::<i64, _>(6)?) as u32,
                });
            }
        }
        Ok(out)
    }

    /// Records an attempt: done, given up, or due again at `retry_at`.
    pub(super) async fn deliveries_attempted(
        &self,
        id: &str,
        a: &Attempt,
        retry_at: Option<u64>,
    ) -> Result<()> {
        let mut tx = self.write_tx().await?;
        let mut q = Sql::new("");
        let vals = [
            q.bind(i(a.at)),
            q.bind(i64::from(a.ok)),
            q.bind(a.status.map(i64::from)),
            q.bind(a.error.clone()),
            q.bind(i(a.ms)),
        ];
        let p = q.bind(id.to_owned());
        q.push(&format!(
            "INSERT INTO delivery_attempts (delivery, n, at, ok, status, error, ms) \
             SELECT id, attempts + 1, {} FROM deliveries WHERE id = {p}",
            vals.join(", ")
        ));
        sqlx::query_with(&q.text, q.args).execute(&mut *tx).await?;
        let mut q = Sql::new("");
        let (p, at, err) = (
            q.bind(id.to_owned()),
            q.bind(i(a.at)),
            q.bind(a.error.clone()),
        );
        let set = if a.ok {
            format!("done_at = {at}, last_error = NULL")
        } else {
            match retry_at {
                Some(t) => format!("due_at = {}, last_error = {err}", q.bind(i(t))),
                None => format!("failed_at = {at}, last_error = {err}"),
            }
        };
        q.push(&format!(
            "UPDATE deliveries SET attempts = attempts + 1, lease_until = 0, {set} WHERE id = {p}"
        ));
        sqlx::query_with(&q.text, q.args).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(())
    }

    pub(super) async fn deliveries_of(
        &self,
        site: &str,
        target: &str,
        limit: usize,
    ) -> Result<Vec<DeliveryLog>> {
        let mut q = Sql::new("");
        let (s, t, lim) = (
            q.bind(site.to_owned()),
            q.bind(target.to_owned()),
            q.bind(limit as i64),
        );
        q.push(&format!(
            "SELECT id, body, created_at, due_at, attempts, done_at, failed_at, last_error \
             FROM deliveries WHERE site = {s} AND target = {t} \
             ORDER BY created_at DESC, id DESC LIMIT {lim}"
        ));
        sqlx::query_with(&q.text, q.args)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|r| {
                Ok(DeliveryLog {
                    id: r.try_get(0)?,
                    body: r.try_get(1)?,
                    created_at: u(r.try_get(2)?),
                    next_at: u(r.try_get(3)?),
                    attempts: u(r.try_get::<i64, _>(4)?) as u32,
                    done_at: opt_u(r.try_get(5)?),
                    failed_at: opt_u(r.try_get(6)?),
                    last_error: r.try_get(7)?,
                })
            })
            .collect()
    }

    pub(super) async fn deliveries_last_done(
        &self,
        site: &str,
        target: &str,
    ) -> Result<Option<u64>> {
        let mut q = Sql::new("");
        let (s, t) = (q.bind(site.to_owned()), q.bind(target.to_owned()));
        q.push(&format!(
            "SELECT MAX(done_at) FROM deliveries WHERE site = {s} AND target = {t}"
        ));
        let row = sqlx::query_with(&q.text, q.args)
            .fetch_one(&self.pool)
            .await?;
        Ok(opt_u(row.try_get(0)?))
    }

    pub(super) async fn delivery_attempts(&self, id: &str) -> Result<Vec<Attempt>> {
        let mut q = Sql::new("");
        let p = q.bind(id.to_owned());
        q.push(&format!(
            "SELECT at, ok, status, error, ms FROM delivery_attempts WHERE delivery = {p} ORDER BY n"
        ));
        sqlx::query_with(&q.text, q.args)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|r| {
                Ok(Attempt {
                    at: u(r.try_get(0)?),
                    ok: r.try_get::<i64, _>(1)? != 0,
                    status: r.try_get::<Option<i64>, _>(2)?.map(|s| s as u16),
                    error: r.try_get(3)?,
                    ms: u(r.try_get(4)?),
                })
            })
            .collect()
    }
}
