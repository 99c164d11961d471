//! Site data: operators' drafts, settings changed at runtime, bans.

use std::collections::BTreeMap;

use serde_json::Value as Json;

use super::codec::{garbled, ttl_secs};
use super::{keys, RedisEngine, OPEN_TTL};
use crate::core::{ConvId, Millis, OperatorId, QueueId, SiteId, VisitorId};
use crate::engine::{EngineError, SiteData};

impl SiteData for RedisEngine {
    async fn set_draft(
        &self,
        site: &SiteId,
        op: &OperatorId,
        conv: &ConvId,
        text: Option<String>,
    ) -> Result<(), EngineError> {
        let key = keys::drafts(site, op);
        match text {
            Some(t) => {
                let mut p = redis::pipe();
                p.atomic()
                    .cmd("HSET")
                    .arg(&key)
                    .arg(conv.as_str())
                    .arg(t)
                    .ignore()
                    .cmd("EXPIRE")
                    .arg(&key)
                    .arg(ttl_secs(OPEN_TTL))
                    .ignore();
                let mut c = self.inner.conn.clone();
                self.inner.deadline(p.query_async::<()>(&mut c)).await
            }
            None => {
                self.inner
                    .run::<()>(redis::cmd("HDEL").arg(&key).arg(conv.as_str()))
                    .await
            }
        }
    }

    async fn drafts(
        &self,
        site: &SiteId,
        op: &OperatorId,
    ) -> Result<Vec<(ConvId, String)>, EngineError> {
        let all: BTreeMap<String, String> = self
            .inner
            .run(redis::cmd("HGETALL").arg(keys::drafts(site, op)))
            .await?;
        Ok(all.into_iter().map(|(c, t)| (ConvId(c), t)).collect())
    }

    async fn save_settings(&self, site: &SiteId, settings: &Json) -> Result<(), EngineError> {
        self.inner
            .run::<()>(
                redis::cmd("SET")
                    .arg(keys::settings(site))
                    .arg(settings.to_string()),
            )
            .await
    }

    async fn load_settings(&self, site: &SiteId) -> Result<Option<Json>, EngineError> {
        let v: Option<String> = self
            .inner
            .run(redis::cmd("GET").arg(keys::settings(site)))
            .await?;
        match v {
            Some(s) => serde_json::from_str(&s)
                .map(Some)
                .map_err(|e| garbled(format!("stored settings: {e}"))),
            None => Ok(None),
        }
    }

    async fn set_ban(
        &self,
        site: &SiteId,
        visitor: &VisitorId,
        until: Option<Millis>,
    ) -> Result<(), EngineError> {
        let key = keys::ban(site, visitor);
        match until {
            // The key expires when the ban does (Redis' clock); the value says until when.
            Some(t) => {
                self.inner
                    .run::<()>(redis::cmd("SET").arg(&key).arg(t).arg("PXAT").arg(t))
                    .await
            }
            None => self.inner.run::<()>(redis::cmd("DEL").arg(&key)).await,
        }
    }

    async fn banned_until(
        &self,
        site: &SiteId,
        visitor: &VisitorId,
        now: Millis,
    ) -> Result<Option<Millis>, EngineError> {
        let until: Option<u64> = self
            .inner
            .run(redis::cmd("GET").arg(keys::ban(site, visitor)))
            .await?;
        Ok(until.filter(|&t| t > now))
    }

    async fn claim_listing(
        &self,
        site: &SiteId,
        queue: &QueueId,
        ms: u64,
    ) -> Result<bool, EngineError> {
        let set: Option<String> = self
            .inner
            .run(
                redis::cmd("SET")
                    .arg(keys::listing(site, queue))
                    .arg(1)
                    .arg("NX")
                    .arg("PX")
                    .arg(ms.max(1)),
            )
            .await?;
        Ok(set.is_some())
    }
}
