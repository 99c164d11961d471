//! The archive on a SQL database, through sqlx's `Any` driver: one implementation of the
//! contract for SQLite and PostgreSQL, which differ only where their SQL does ([`Dialect`]:
//! full-text search). Statements use `$N` placeholders, which both databases understand.
use sqlx::{AnyPool, Row};

use super::rows::*;
use super::{
    fts5_terms, ArchiveError, ArchivedConversation, ArchivedEvent, ConvFilter, ConvPatch,
    ConvRecord, ConversationDetail, Figures, KeyRecord, OperatorRecord, Page, Patched, Prechat,
    Remembered, ReportQuery, ReportRow, Result, Store,
};
use crate::core::SiteId;
use crate::protocol::{ConvState, Msg};

/// Where SQLite and PostgreSQL part ways.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

/// The archive on a pool of either database.
pub struct SqlStore {
    pub(super) pool: AnyPool,
    pub(super) dialect: Dialect,
}

impl SqlStore {
    /// A transaction that writes. On SQLite it takes the write lock at its start
    /// (`BEGIN IMMEDIATE`), waiting its turn under the busy timeout: a deferred one holds a
    /// read snapshot from its first statement, and SQLite refuses the upgrade to a write at
    /// once ("database is locked", no wait) when another connection writes meanwhile.
    pub(super) async fn write_tx(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>> {
        Ok(match self.dialect {
            Dialect::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Dialect::Postgres => self.pool.begin().await?,
        })
    }

    /// Whether the visitor of a conversation created at `created_at` was erased after it.
    async fn erased(
        &self,
        tx: &mut sqlx::AnyConnection,
        site: &str,
        visitor: &str,
        created_at: u64,
    ) -> Result<bool> {
        let mut q = Sql::new("");
        let (s, v, t) = (
            q.bind(site.to_owned()),
            q.bind(visitor.to_owned()),
            q.bind(i(created_at)),
        );
        q.push(&format!(
            "SELECT 1 FROM erasures WHERE site = {s} AND visitor = {v} AND erased_at >= {t}"
        ));
        Ok(sqlx::query_with(&q.text, q.args)
            .fetch_optional(tx)
            .await?
            .is_some())
    }

    /// Whether a stored conversation belongs to a visitor erased after it began.
    /// Which of these conversations belong to a visitor erased after they started.
    async fn erased_of(&self, tx: &mut sqlx::AnyConnection, convs: &[&str]) -> Result<Vec<String>> {
        let mut q = Sql::new("");
        let list = in_list(&mut q, convs);
        q.push(&format!(
            "SELECT c.id FROM conversations c JOIN erasures e \
             ON e.site = c.site AND e.visitor = c.visitor_id \
             WHERE c.id IN ({list}) AND c.created_at <= e.erased_at"
        ));
        let rows = sqlx::query_with(&q.text, q.args).fetch_all(tx).await?;
        rows.iter()
            .map(|r| r.try_get::<String, _>(0).map_err(ArchiveError::from))
            .collect()
    }

    /// Recomputes conversations' figures from their stored messages (one statement for
    /// many): whichever of a record and its messages arrives first, the figures end up right.
    async fn refresh_figures(&self, tx: &mut sqlx::AnyConnection, convs: &[&str]) -> Result<()> {
        for chunk in convs.chunks(IN_CHUNK) {
            let mut q = Sql::new("");
            let list = in_list(&mut q, chunk);
            q.push(&format!(
                "UPDATE conversations SET \
                 message_count = (SELECT COUNT(*) FROM messages m WHERE m.conv = conversations.id), \
                 last_seq = (SELECT COALESCE(MAX(seq), 0) FROM messages m \
                     WHERE m.conv = conversations.id), \
                 first_visitor_ts = COALESCE(first_visitor_ts, (SELECT MIN(ts) FROM messages m \
                     WHERE m.conv = conversations.id AND m.role = 'visitor')), \
                 first_operator_ts = COALESCE(first_operator_ts, (SELECT MIN(ts) FROM messages m \
                     WHERE m.conv = conversations.id AND m.role IN ('operator', 'supervisor'))) \
                 WHERE id IN ({list})"
            ));
            sqlx::query_with(&q.text, q.args).execute(&mut *tx).await?;
        }
        Ok(())
    }

    /// The condition that a conversation matches a full-text search, or `None` when the
    /// query has no words.
    fn search_condition(&self, q: &mut Sql<'_>, site: &str, text: &str) -> Option<String> {
        match self.dialect {
            Dialect::Sqlite => {
                let terms = fts5_terms(text)?;
                let t = q.bind(terms);
                let s = q.bind(site.to_owned());
                Some(format!(
                    "(c.rowid IN (SELECT rowid FROM conversations_fts WHERE conversations_fts MATCH {t}) \
                     OR c.id IN (SELECT m.conv FROM messages m JOIN messages_fts f ON f.rowid = m.id \
                     WHERE m.site = {s} AND messages_fts MATCH {t}))"
                ))
            }
            Dialect::Postgres => {
                text.split_whitespace().next()?;
                let t = q.bind(text.chars().take(500).collect::<String>());
                let s = q.bind(site.to_owned());
                Some(format!(
                    "(c.search @@ plainto_tsquery('simple', {t}) \
                     OR c.id IN (SELECT conv FROM messages WHERE site = {s} \
                     AND search @@ plainto_tsquery('simple', {t})))"
                ))
            }
        }
    }
}

#[async_trait::async_trait]
impl Store for SqlStore {
    fn kind(&self) -> &'static str {
        match self.dialect {
            Dialect::Sqlite => "sqlite",
            Dialect::Postgres => "postgres",
        }
    }

    async fn record_conversation(&self, r: &ConvRecord) -> Result<()> {
        let mut tx = self.write_tx().await?;
        let mut stripped;
        let mut c = &r.conv;
        if self
            .erased(&mut tx, &c.site, &c.visitor.id, c.created_at)
            .await?
        {
            stripped = c.clone();
            strip_visitor(&mut stripped);
            c = &stripped;
        }
        let snapshot = serde_json::to_string(c).expect("a conversation serialises");
        let tags = serde_json::to_string(&c.tags).expect("tags serialise");
        let mut q = Sql::new("");
        let v = [
            q.bind(c.id.clone()),
            q.bind(c.site.clone()),
            q.bind(c.queue.clone()),
            q.bind(state_str(c.state).to_owned()),
            q.bind(c.visitor.id.clone()),
            q.bind(c.visitor.name.clone()),
            q.bind(c.visitor.email.clone()),
            q.bind(c.operator.as_ref().map(|o| o.id.clone())),
            q.bind(c.outcome.clone()),
            q.bind(tags),
            q.bind(i(c.created_at)),
            q.bind(i(r.version)),
            q.bind(snapshot),
        ];
        q.push(&format!(
            "INSERT INTO conversations (id, site, queue, state, visitor_id, visitor_name, \
             visitor_email, operator_id, outcome, tags, created_at, version, snapshot) \
             VALUES ({}) \
             ON CONFLICT (id) DO UPDATE SET queue = excluded.queue, state = excluded.state, \
             visitor_name = excluded.visitor_name, visitor_email = excluded.visitor_email, \
             operator_id = excluded.operator_id, outcome = excluded.outcome, \
             tags = excluded.tags, version = excluded.version, snapshot = excluded.snapshot \
             WHERE conversations.version < excluded.version",
            v.join(", ")
        ));
        let newer = sqlx::query_with(&q.text, q.args)
            .execute(&mut *tx)
            .await?
            .rows_affected()
            > 0;
        if newer {
            let mut d = Sql::new("");
            let conv = d.bind(c.id.clone());
            d.push(&format!(
                "DELETE FROM conversation_tags WHERE conv = {conv}"
            ));
            sqlx::query_with(&d.text, d.args).execute(&mut *tx).await?;
            for t in &c.tags {
                let mut q = Sql::new("");
                let vals = [
                    q.bind(c.id.clone()),
                    q.bind(c.site.clone()),
                    q.bind(t.clone()),
                ];
                q.push(&format!(
                    "INSERT INTO conversation_tags (conv, site, tag) VALUES ({}) \
                     ON CONFLICT DO NOTHING",
                    vals.join(", ")
                ));
                sqlx::query_with(&q.text, q.args).execute(&mut *tx).await?;
            }
        }
        // The first assignment and the close are kept whatever order the records arrive in.
        if c.operator.is_some() {
            let mut q = Sql::new("");
            let (id, ts) = (q.bind(c.id.clone()), q.bind(i(r.ts)));
            q.push(&format!(
                "UPDATE conversations SET assigned_at = {ts} WHERE id = {id} \
                 AND (assigned_at IS NULL OR assigned_at > {ts})"
            ));
            sqlx::query_with(&q.text, q.args).execute(&mut *tx).await?;
        }
        if c.state == ConvState::Closed {
            let mut q = Sql::new("");
            let (id, ts) = (q.bind(c.id.clone()), q.bind(i(r.ts)));
            q.push(&format!(
                "UPDATE conversations SET closed_at = {ts} WHERE id = {id} AND closed_at IS NULL"
            ));
            sqlx::query_with(&q.text, q.args).execute(&mut *tx).await?;
        }
        let mut q = Sql::new("");
        let vals = [
            q.bind(c.id.clone()),
            q.bind(r.key.clone()),
            q.bind(c.site.clone()),
            q.bind(r.event.clone()),
            q.bind(i(r.ts)),
            q.bind(c.operator.as_ref().map(|o| o.id.clone())),
            q.bind(r.reason.clone()),
        ];
        q.push(&format!(
            "INSERT INTO events (conv, key, site, type, ts, to_id, reason) VALUES ({}) \
             ON CONFLICT DO NOTHING",
            vals.join(", ")
        ));
        sqlx::query_with(&q.text, q.args).execute(&mut *tx).await?;
        self.refresh_figures(&mut tx, &[c.id.as_str()]).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn record_messages(&self, site: &SiteId, msgs: &[Msg]) -> Result<()> {
        if msgs.is_empty() {
            return Ok(());
        }
        let mut tx = self.write_tx().await?;
        let mut convs: Vec<&str> = msgs.iter().map(|m| m.conv.as_str()).collect();
        convs.sort_unstable();
        convs.dedup();
        let mut erased = Vec::new();
        for chunk in convs.chunks(IN_CHUNK) {
            erased.extend(self.erased_of(&mut tx, chunk).await?);
        }
        let keep: Vec<&Msg> = msgs.iter().filter(|m| !erased.contains(&m.conv)).collect();
        // Many rows per statement: one round trip (and one parse) per few hundred messages.
        for chunk in keep.chunks(ROWS_PER_INSERT) {
            let mut q = Sql::new("");
            let mut rows = Vec::with_capacity(chunk.len());
            for m in chunk {
                let vals = [
                    q.bind(m.conv.clone()),
                    q.bind(i(m.seq)),
                    q.bind(site.to_string()),
                    q.bind(m.from.role.as_str().to_owned()),
                    q.bind(m.from.id.clone()),
                    q.bind(m.from.name.clone()),
                    q.bind(m.text.clone()),
                    q.bind(i(m.ts)),
                    q.bind(m.cid.clone()),
                    q.bind(m.code.clone()),
                    q.bind(
                        m.args
                            .as_ref()
                            .map(|a| serde_json::to_string(a).expect("args serialise")),
                    ),
                ];
                rows.push(format!("({})", vals.join(", ")));
            }
            q.push(&format!(
                "INSERT INTO messages (conv, seq, site, role, author_id, author_name, text, ts, \
                 cid, code, args) VALUES {} ON CONFLICT (conv, seq) DO NOTHING",
                rows.join(", ")
            ));
            sqlx::query_with(&q.text, q.args).execute(&mut *tx).await?;
        }
        self.refresh_figures(&mut tx, &convs).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn record_operator(&self, r: &OperatorRecord) -> Result<()> {
        let mut q = Sql::new("");
        let vals = [
            q.bind(r.site.to_string()),
            q.bind(r.operator.clone()),
            q.bind(r.name.clone()),
            q.bind(r.status.clone()),
            q.bind(i64::from(r.online)),
            q.bind(i(r.ts)),
        ];
        q.push(&format!(
            "INSERT INTO operator_events (site, operator, name, status, online, ts) VALUES ({})",
            vals.join(", ")
        ));
        sqlx::query_with(&q.text, q.args)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn archived_seqs(&self, convs: &[&str]) -> Result<Vec<u64>> {
        let mut found = std::collections::HashMap::with_capacity(convs.len());
        for chunk in convs.chunks(IN_CHUNK) {
            let mut q = Sql::new("");
            let list = in_list(&mut q, chunk);
            q.push(&format!(
                "SELECT conv, MAX(seq) FROM messages WHERE conv IN ({list}) GROUP BY conv"
            ));
            for row in sqlx::query_with(&q.text, q.args)
                .fetch_all(&self.pool)
                .await?
            {
                found.insert(row.try_get::<String, _>(0)?, u(row.try_get(1)?));
            }
        }
        Ok(convs
            .iter()
            .map(|c| found.get(*c).copied().unwrap_or(0))
            .collect())
    }

    async fn conversations(
        &self,
        site: &SiteId,
        f: &ConvFilter,
        after: Option<(u64, String)>,
        limit: usize,
    ) -> Result<Page<ArchivedConversation>> {
        let mut q = Sql::new("");
        let s = q.bind(site.to_string());
        let mut conds = vec![format!("c.site = {s}")];
        let mut eq = |q: &mut Sql<'_>, col: &str, v: &Option<String>| {
            if let Some(v) = v {
                let p = q.bind(v.clone());
                conds.push(format!("{col} = {p}"));
            }
        };
        eq(&mut q, "c.state", &f.state);
        eq(&mut q, "c.queue", &f.queue);
        eq(&mut q, "c.operator_id", &f.operator);
        eq(&mut q, "c.visitor_id", &f.visitor);
        eq(&mut q, "c.outcome", &f.outcome);
        if let Some(tag) = &f.tag {
            let t = q.bind(tag.clone());
            conds.push(format!(
                "c.id IN (SELECT conv FROM conversation_tags WHERE site = {s} AND tag = {t})"
            ));
        }
        if let Some(from) = f.from {
            let p = q.bind(i(from));
            conds.push(format!("c.created_at >= {p}"));
        }
        if let Some(to) = f.to {
            let p = q.bind(i(to));
            conds.push(format!("c.created_at < {p}"));
        }
        if let Some((created, id)) = after {
            let (a, b) = (q.bind(i(created)), q.bind(id));
            conds.push(format!(
                "(c.created_at < {a} OR (c.created_at = {a} AND c.id < {b}))"
            ));
        }
        if let Some(text) = &f.q {
            match self.search_condition(&mut q, site.as_str(), text) {
                Some(cond) => conds.push(cond),
                None => conds.push("1 = 0".into()),
            }
        }
        let lim = q.bind(i(limit as u64 + 1));
        q.push(&format!(
            "SELECT {LIST_COLUMNS} FROM conversations c WHERE {} \
             ORDER BY c.created_at DESC, c.id DESC LIMIT {lim}",
            conds.join(" AND ")
        ));
        let rows = sqlx::query_with(&q.text, q.args)
            .fetch_all(&self.pool)
            .await?;
        let more = rows.len() > limit;
        let mut items = Vec::with_capacity(rows.len().min(limit));
        let mut last = None;
        for row in rows.iter().take(limit) {
            items.push(list_item(row)?);
            last = Some((u(row.try_get(7)?), row.try_get::<String, _>(8)?));
        }
        Ok(Page {
            items,
            next: if more { last } else { None },
        })
    }

    async fn conversation(&self, site: &SiteId, id: &str) -> Result<Option<ConversationDetail>> {
        let mut q = Sql::new("");
        let (s, c) = (q.bind(site.to_string()), q.bind(id.to_owned()));
        q.push(&format!(
            "SELECT {LIST_COLUMNS} FROM conversations c WHERE c.site = {s} AND c.id = {c}"
        ));
        let Some(row) = sqlx::query_with(&q.text, q.args)
            .fetch_optional(&self.pool)
            .await?
        else {
            return Ok(None);
        };
        let summary = list_item(&row)?;
        let mut q = Sql::new("");
        let c = q.bind(id.to_owned());
        q.push(&format!(
            "SELECT type, ts, by_id, to_id, reason FROM events WHERE conv = {c} ORDER BY ts, key"
        ));
        let events = sqlx::query_with(&q.text, q.args)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|r| {
                Ok(ArchivedEvent {
                    kind: r.try_get(0)?,
                    ts: u(r.try_get(1)?),
                    by: r.try_get(2)?,
                    to: r.try_get(3)?,
                    reason: r.try_get(4)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let v = &summary.conv.visitor;
        Ok(Some(ConversationDetail {
            params: v.params.clone(),
            prechat: Prechat {
                name: v.name.clone(),
                email: v.email.clone(),
                phone: v.phone.clone(),
            },
            events,
            summary,
        }))
    }

    async fn messages(
        &self,
        site: &SiteId,
        conv: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<Msg>> {
        let mut q = Sql::new("");
        let (s, c, a, l) = (
            q.bind(site.to_string()),
            q.bind(conv.to_owned()),
            q.bind(i(after)),
            q.bind(i(limit as u64)),
        );
        q.push(&format!(
            "SELECT conv, seq, role, author_id, author_name, text, ts, cid, code, args \
             FROM messages WHERE site = {s} AND conv = {c} AND seq > {a} ORDER BY seq LIMIT {l}"
        ));
        sqlx::query_with(&q.text, q.args)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(msg_of)
            .collect()
    }

    async fn erase_visitor(&self, site: &SiteId, visitor: &str, now: u64) -> Result<u64> {
        let mut tx = self.write_tx().await?;
        let mut q = Sql::new("");
        let vals = [
            q.bind(site.to_string()),
            q.bind(visitor.to_owned()),
            q.bind(i(now)),
        ];
        q.push(&format!(
            "INSERT INTO erasures (site, visitor, erased_at) VALUES ({}) \
             ON CONFLICT (site, visitor) DO UPDATE SET erased_at = excluded.erased_at",
            vals.join(", ")
        ));
        sqlx::query_with(&q.text, q.args).execute(&mut *tx).await?;
        let mut q = Sql::new("");
        let (s, v) = (q.bind(site.to_string()), q.bind(visitor.to_owned()));
        q.push(&format!(
            "SELECT id, snapshot FROM conversations WHERE site = {s} AND visitor_id = {v}"
        ));
        let rows = sqlx::query_with(&q.text, q.args)
            .fetch_all(&mut *tx)
            .await?;
        for row in &rows {
            let id: String = row.try_get(0)?;
            let mut c = snapshot_of(&row.try_get::<String, _>(1)?)?;
            strip_visitor(&mut c);
            let snapshot = serde_json::to_string(&c).expect("a conversation serialises");
            let mut q = Sql::new("");
            let (sn, idp) = (q.bind(snapshot), q.bind(id.clone()));
            q.push(&format!(
                "UPDATE conversations SET visitor_name = NULL, visitor_email = NULL, \
                 snapshot = {sn} WHERE id = {idp}"
            ));
            sqlx::query_with(&q.text, q.args).execute(&mut *tx).await?;
            // The messages go; the conversation keeps its counts for the reports.
            let mut q = Sql::new("");
            let idp = q.bind(id);
            q.push(&format!("DELETE FROM messages WHERE conv = {idp}"));
            sqlx::query_with(&q.text, q.args).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(rows.len() as u64)
    }

    async fn patch_conversation(&self, site: &SiteId, id: &str, p: &ConvPatch) -> Result<Patched> {
        let mut tx = self.write_tx().await?;
        let mut q = Sql::new("");
        let (s, c) = (q.bind(site.to_string()), q.bind(id.to_owned()));
        q.push(&format!(
            "SELECT state, snapshot FROM conversations WHERE site = {s} AND id = {c}"
        ));
        let Some(row) = sqlx::query_with(&q.text, q.args)
            .fetch_optional(&mut *tx)
            .await?
        else {
            return Ok(Patched::NotFound);
        };
        if row.try_get::<String, _>(0)? != "closed" {
            return Ok(Patched::Open);
        }
        let mut conv = snapshot_of(&row.try_get::<String, _>(1)?)?;
        if let Some(tags) = &p.tags {
            conv.tags = tags.clone();
        }
        let v = &mut conv.visitor;
        for (field, new) in [
            (&mut v.name, &p.name),
            (&mut v.email, &p.email),
            (&mut v.phone, &p.phone),
        ] {
            if let Some(n) = new {
                *field = Some(n.clone()).filter(|n| !n.is_empty());
            }
        }
        for (k, val) in &p.params {
            if val.is_empty() {
                v.params.remove(k);
            } else {
                v.params.insert(k.clone(), val.clone());
            }
        }
        let snapshot = serde_json::to_string(&conv).expect("a conversation serialises");
        let tags = serde_json::to_string(&conv.tags).expect("tags serialise");
        let mut q = Sql::new("");
        let vals = [
            q.bind(tags),
            q.bind(conv.visitor.name.clone()),
            q.bind(conv.visitor.email.clone()),
            q.bind(snapshot),
            q.bind(id.to_owned()),
        ];
        q.push(&format!(
            "UPDATE conversations SET tags = {}, visitor_name = {}, visitor_email = {}, \
             snapshot = {} WHERE id = {}",
            vals[0], vals[1], vals[2], vals[3], vals[4]
        ));
        sqlx::query_with(&q.text, q.args).execute(&mut *tx).await?;
        if p.tags.is_some() {
            let mut d = Sql::new("");
            let c = d.bind(id.to_owned());
            d.push(&format!("DELETE FROM conversation_tags WHERE conv = {c}"));
            sqlx::query_with(&d.text, d.args).execute(&mut *tx).await?;
            for t in &conv.tags {
                let mut q = Sql::new("");
                let vals = [
                    q.bind(id.to_owned()),
                    q.bind(site.to_string()),
                    q.bind(t.clone()),
                ];
                q.push(&format!(
                    "INSERT INTO conversation_tags (conv, site, tag) VALUES ({}) \
                     ON CONFLICT DO NOTHING",
                    vals.join(", ")
                ));
                sqlx::query_with(&q.text, q.args).execute(&mut *tx).await?;
            }
        }
        let mut q = Sql::new("");
        let vals = [
            q.bind(id.to_owned()),
            q.bind(format!("edit.{}.{:08x}", p.ts, rand::random::<u32>())),
            q.bind(site.to_string()),
            q.bind(i(p.ts)),
            q.bind(p.by.clone()),
        ];
        q.push(&format!(
            "INSERT INTO events (conv, key, site, type, ts, by_id, reason) \
             VALUES ({}, 'updated', {}, {}, 'edited')",
            vals[..3].join(", "),
            vals[3],
            vals[4]
        ));
        sqlx::query_with(&q.text, q.args).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(match self.conversation(site, id).await? {
            Some(d) => Patched::Done(Box::new(d)),
            None => Patched::NotFound,
        })
    }

    async fn report_rows(&self, site: &SiteId, rq: &ReportQuery) -> Result<Vec<ReportRow>> {
        let mut q = Sql::new("");
        let (s, from, to) = (
            q.bind(site.to_string()),
            q.bind(i(rq.from)),
            q.bind(i(rq.to)),
        );
        let mut conds = vec![
            format!("c.site = {s}"),
            format!("c.created_at >= {from}"),
            format!("c.created_at < {to}"),
        ];
        if let Some(queue) = &rq.queue {
            let p = q.bind(queue.clone());
            conds.push(format!("c.queue = {p}"));
        }
        if let Some(op) = &rq.operator {
            let p = q.bind(op.clone());
            conds.push(format!("c.operator_id = {p}"));
        }
        q.push(&format!(
            "SELECT c.created_at, c.queue, c.operator_id, c.outcome, c.tags, c.closed_at, \
             c.assigned_at, c.first_visitor_ts, c.first_operator_ts, c.message_count \
             FROM conversations c WHERE {} ORDER BY c.created_at",
            conds.join(" AND ")
        ));
        sqlx::query_with(&q.text, q.args)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|r| {
                let created = u(r.try_get(0)?);
                let outcome: Option<String> = r.try_get(3)?;
                let tags: String = r.try_get(4)?;
                let f = Figures {
                    closed_at: opt_u(r.try_get(5)?),
                    assigned_at: opt_u(r.try_get(6)?),
                    first_visitor_ts: opt_u(r.try_get(7)?),
                    first_operator_ts: opt_u(r.try_get(8)?),
                };
                Ok(ReportRow {
                    created_at: created,
                    queue: r.try_get(1)?,
                    operator: r.try_get(2)?,
                    abandoned: outcome.as_deref() == Some("abandoned"),
                    outcome,
                    tags: serde_json::from_str(&tags).unwrap_or_default(),
                    closed: f.closed_at.is_some(),
                    answered: f.first_operator_ts.is_some(),
                    messages: u(r.try_get(9)?),
                    first_response_ms: f.first_response_ms(),
                    wait_ms: f.assigned_at.map(|a| a.saturating_sub(created)),
                    duration_ms: f.closed_at.map(|c| c.saturating_sub(created)),
                })
            })
            .collect()
    }

    async fn operator_records(
        &self,
        site: &SiteId,
        rq: &ReportQuery,
    ) -> Result<Vec<OperatorRecord>> {
        let mut q = Sql::new("");
        let (s, from, to) = (
            q.bind(site.to_string()),
            q.bind(i(rq.from)),
            q.bind(i(rq.to)),
        );
        // Each operator's last change before the range says where they stood at its start.
        q.push(&format!(
            "SELECT site, operator, name, status, online, ts FROM operator_events e \
             WHERE site = {s} AND ts < {to} AND (ts >= {from} OR ts = (SELECT MAX(ts) \
             FROM operator_events p WHERE p.site = e.site AND p.operator = e.operator \
             AND p.ts < {from})) ORDER BY ts"
        ));
        sqlx::query_with(&q.text, q.args)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|r| {
                Ok(OperatorRecord {
                    site: SiteId(r.try_get(0)?),
                    operator: r.try_get(1)?,
                    name: r.try_get(2)?,
                    status: r.try_get(3)?,
                    online: r.try_get::<i64, _>(4)? != 0,
                    ts: u(r.try_get(5)?),
                })
            })
            .collect()
    }

    async fn sweep(&self, site: &SiteId, before: u64) -> Result<u64> {
        let mut tx = self.write_tx().await?;
        let mut total = 0;
        for table in ["messages", "events", "conversation_tags"] {
            let mut q = Sql::new("");
            let (s, b) = (q.bind(site.to_string()), q.bind(i(before)));
            q.push(&format!(
                "DELETE FROM {table} WHERE conv IN (SELECT id FROM conversations WHERE \
                 site = {s} AND closed_at IS NOT NULL AND closed_at < {b})"
            ));
            sqlx::query_with(&q.text, q.args).execute(&mut *tx).await?;
        }
        let mut q = Sql::new("");
        let (s, b) = (q.bind(site.to_string()), q.bind(i(before)));
        q.push(&format!(
            "DELETE FROM conversations WHERE site = {s} AND closed_at IS NOT NULL \
             AND closed_at < {b}"
        ));
        total += sqlx::query_with(&q.text, q.args)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        let mut q = Sql::new("");
        let (s, b) = (q.bind(site.to_string()), q.bind(i(before)));
        q.push(&format!(
            "DELETE FROM operator_events WHERE site = {s} AND ts < {b}"
        ));
        sqlx::query_with(&q.text, q.args).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(total)
    }

    async fn put_key(&self, k: &KeyRecord) -> Result<()> {
        self.key_put(k).await
    }

    async fn key(&self, id: &str) -> Result<Option<KeyRecord>> {
        self.key_get(id).await
    }

    async fn keys(&self, site: Option<&str>) -> Result<Vec<KeyRecord>> {
        self.keys_list(site).await
    }

    async fn revoke_key(&self, site: Option<&str>, id: &str) -> Result<bool> {
        self.key_revoke(site, id).await
    }

    async fn directory(&self, site: &SiteId) -> Result<(u64, Vec<crate::directory::Row>)> {
        self.dir_load(site).await
    }

    async fn put_entry(
        &self,
        site: &SiteId,
        kind: crate::directory::Kind,
        id: &str,
        body: &str,
        create: bool,
        now: u64,
    ) -> Result<super::Put> {
        self.dir_put(site, kind, id, body, create, now).await
    }

    async fn delete_entry(
        &self,
        site: &SiteId,
        kind: crate::directory::Kind,
        id: &str,
    ) -> Result<bool> {
        self.dir_delete(site, kind, id).await
    }

    async fn put_session(&self, s: &super::SessionRecord) -> Result<()> {
        self.session_put(s).await
    }

    async fn session(&self, id: &str) -> Result<Option<super::SessionRecord>> {
        self.session_get(id).await
    }

    async fn revoke_sessions(
        &self,
        site: &SiteId,
        id: Option<&str>,
        staff: Option<&str>,
        now: u64,
    ) -> Result<u64> {
        self.session_revoke(site, id, staff, now).await
    }

    async fn touch_key(&self, id: &str, now: u64) -> Result<()> {
        self.key_touch(id, now).await
    }

    async fn remembered(&self, scope: &str, key: &str, since: u64) -> Result<Option<Remembered>> {
        self.remembered_get(scope, key, since).await
    }

    async fn remember(&self, scope: &str, key: &str, r: &Remembered, now: u64) -> Result<bool> {
        self.remembered_put(scope, key, r, now).await
    }

    async fn settle_remembered(
        &self,
        scope: &str,
        key: &str,
        r: Option<&Remembered>,
    ) -> Result<()> {
        self.remembered_settle(scope, key, r).await
    }

    async fn forget_remembered(&self, before: u64) -> Result<u64> {
        self.remembered_forget(before).await
    }

    async fn add_deliveries(&self, items: &[super::NewDelivery], now: u64) -> Result<u64> {
        self.deliveries_add(items, now).await
    }

    async fn claim_deliveries(
        &self,
        now: u64,
        lease_ms: u64,
        limit: usize,
    ) -> Result<Vec<super::Delivery>> {
        self.deliveries_claim(now, lease_ms, limit).await
    }

    async fn delivery_attempted(
        &self,
        id: &str,
        a: &super::Attempt,
        retry_at: Option<u64>,
    ) -> Result<()> {
        self.deliveries_attempted(id, a, retry_at).await
    }

    async fn deliveries(
        &self,
        site: &str,
        target: &str,
        limit: usize,
    ) -> Result<Vec<super::DeliveryLog>> {
        self.deliveries_of(site, target, limit).await
    }

    async fn attempts(&self, id: &str) -> Result<Vec<super::Attempt>> {
        self.delivery_attempts(id).await
    }

    async fn last_delivered(&self, site: &str, target: &str) -> Result<Option<u64>> {
        self.deliveries_last_done(site, target).await
    }
}
