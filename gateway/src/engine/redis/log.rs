//! Conversation logs and records: the append script, replay, history, records and activity.

use std::sync::Arc;

use bytes::Bytes;

use super::bus::Replayer;
use super::codec::{
    array, as_bytes, as_str, as_u64, decode, decode_msg, encode, garbled, msg_frame_parts,
    state_str, ttl_secs,
};
use super::{keys, scripts, Inner, RedisEngine, OPEN_TTL, SEQ_ARG_MAX};
use crate::bus::{Channel, Outbound};
use crate::core::{Activity, ConvId, SiteId, VisitorId};
use crate::engine::{
    AppendOutcome, AppendRefusal, Appended, ConvLog, ConvMeta, EngineError, HistoryPage,
    NewMessage, Replay, Summary,
};
use crate::metrics as m;
use crate::protocol::{ConvState, LastMessage, Msg, ReadMarks};

impl Inner {
    /// Reads a log after a cursor as `(seq, frame bytes)`; `None` when it no longer reaches.
    async fn replay_raw(
        &self,
        conv: &ConvId,
        after: u64,
    ) -> Result<Option<Vec<(u64, Bytes)>>, EngineError> {
        let out = self
            .script(
                scripts::REPLAY
                    .key(keys::conv_meta(conv))
                    .key(keys::conv_log(conv))
                    .arg(after),
            )
            .await?;
        let parts = array(out)?;
        match parts.first().and_then(as_str) {
            Some("ok") => {
                let mut frames = Vec::with_capacity(parts.len() / 2);
                for pair in parts[1..].chunks(2) {
                    let [s, f] = pair else {
                        return Err(garbled("replay pair"));
                    };
                    let seq = as_u64(s).ok_or_else(|| garbled("replay seq"))?;
                    let frame = as_bytes(f).ok_or_else(|| garbled("replay frame"))?;
                    frames.push((seq, Bytes::copy_from_slice(frame)));
                }
                Ok(Some(frames))
            }
            Some("lost") => Ok(None),
            other => Err(garbled(format!("replay answered {other:?}"))),
        }
    }
}

impl Replayer for Inner {
    async fn replay_frames(&self, conv: &ConvId, after: u64) -> Option<Vec<(u64, Arc<Outbound>)>> {
        match self.replay_raw(conv, after).await {
            Ok(Some(frames)) => Some(
                frames
                    .into_iter()
                    .map(|(seq, f)| (seq, Outbound::from_msgpack(f)))
                    .collect(),
            ),
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(conv = %conv, error = %e, "replay read failed");
                None
            }
        }
    }
}

/// `seq`, `v_text`, `v_ts`, `rv`, `rs` of a conversation's record.
/// XRANGE's answer: entries of (id, [(field, value)]).
type StreamEntries = Vec<(String, Vec<(String, Vec<u8>)>)>;

type SummaryFields = (
    Option<u64>,
    Option<String>,
    Option<u64>,
    Option<u64>,
    Option<u64>,
);

impl ConvLog for RedisEngine {
    async fn append(&self, m: NewMessage) -> Result<AppendOutcome, EngineError> {
        let role = m.from.role;
        let ckey = m
            .cid
            .as_ref()
            .map(|c| format!("{}:{}:{c}", role.as_str(), m.from.id))
            .unwrap_or_default();
        let conv = m.conv.clone();
        let site = m.site.clone();
        let msg = m.into_msg(0);
        let (prefix, suffix) = msg_frame_parts(&msg);
        // The bus envelope around the frame (see `bus::wire`): kind, audience, except, then
        // `seq` (added by the script), then `ts`.
        let mut middle = Vec::with_capacity(9);
        rmp::encode::write_uint(&mut middle, msg.ts).expect("writing to a Vec cannot fail");
        let channel = keys::channel(&Channel::Conv(conv.clone()));
        let mut inv = scripts::APPEND.prepare_invoke();
        inv.key(keys::conv_meta(&conv))
            .key(keys::conv_log(&conv))
            .key(keys::conv_cids(&conv))
            .arg(site.as_str())
            .arg(role.as_str())
            .arg(&msg.from.id)
            .arg(&ckey)
            // Kind, audience "all", no connection excepted (msgpack nil).
            .arg(&b"Fa\xc0"[..])
            .arg(middle)
            .arg(prefix)
            .arg(suffix)
            .arg(self.inner.opts.max_log)
            .arg(msg.ts)
            .arg(ttl_secs(OPEN_TTL))
            .arg(&channel)
            .arg(if self.inner.conn.is_cluster() {
                "1"
            } else {
                "0"
            })
            .arg(crate::engine::last_message_text(&msg.text))
            .arg(if self.inner.opts.archive { "1" } else { "0" });
        let out = array(self.inner.script(&inv).await?)?;
        match out.first().and_then(as_str) {
            Some("ok") => {
                metrics::counter!(m::BUS_OUT, "kind" => "msg").increment(1);
                let seq = out.get(1).and_then(as_u64).ok_or_else(|| garbled("seq"))?;
                let conv_state = match out.get(2).and_then(as_str) {
                    Some("queued") => ConvState::Queued,
                    Some("offered") => ConvState::Offered,
                    Some("active") => ConvState::Active,
                    Some("closed") => ConvState::Closed,
                    other => return Err(garbled(format!("conversation state {other:?}"))),
                };
                let started_unanswered = out.get(3).and_then(as_u64) == Some(1);
                Ok(AppendOutcome::Stored(Appended {
                    msg: Msg { seq, ..msg },
                    conv_state,
                    started_unanswered,
                }))
            }
            Some("dup") => {
                let frame = out
                    .get(1)
                    .and_then(as_bytes)
                    .ok_or_else(|| garbled("dup"))?;
                Ok(AppendOutcome::Duplicate(decode_msg(frame)?))
            }
            Some("dup_gone") => {
                // The retry carries the same text; the stored copy was trimmed.
                let seq = out
                    .get(1)
                    .and_then(as_u64)
                    .ok_or_else(|| garbled("dup seq"))?;
                Ok(AppendOutcome::Duplicate(Msg { seq, ..msg }))
            }
            Some("nf") => Ok(AppendOutcome::Refused(AppendRefusal::NotFound)),
            Some("closed") => Ok(AppendOutcome::Refused(AppendRefusal::Closed)),
            Some("forbidden") => Ok(AppendOutcome::Refused(AppendRefusal::Forbidden)),
            other => Err(garbled(format!("append answered {other:?}"))),
        }
    }

    async fn replay(&self, conv: &ConvId, after: u64) -> Result<Replay, EngineError> {
        match self.inner.replay_raw(conv, after).await? {
            Some(frames) => Ok(Replay::Recovered(
                frames
                    .iter()
                    .map(|(_, f)| decode_msg(f))
                    .collect::<Result<_, _>>()?,
            )),
            None => Ok(Replay::Lost),
        }
    }

    async fn history(
        &self,
        conv: &ConvId,
        before: Option<u64>,
        limit: usize,
    ) -> Result<HistoryPage, EngineError> {
        let out = array(
            self.inner
                .script(
                    scripts::HISTORY
                        .key(keys::conv_log(conv))
                        .arg(before.map_or(-1, |b| b.min(SEQ_ARG_MAX) as i64))
                        .arg(limit.max(1)),
                )
                .await?,
        )?;
        let complete = out.first().and_then(as_u64) == Some(1);
        let messages = out
            .iter()
            .skip(1)
            .map(|f| {
                as_bytes(f)
                    .ok_or_else(|| garbled("history frame"))
                    .and_then(decode_msg)
            })
            .collect::<Result<_, _>>()?;
        Ok(HistoryPage { messages, complete })
    }

    async fn last_seq(&self, conv: &ConvId) -> Result<u64, EngineError> {
        let v: Option<u64> = self
            .inner
            .run(redis::cmd("HGET").arg(keys::conv_meta(conv)).arg("seq"))
            .await?;
        Ok(v.unwrap_or(0))
    }

    async fn last_seqs(&self, convs: &[ConvId]) -> Result<Vec<u64>, EngineError> {
        // Concurrent single-key reads share the multiplexed connection (a pipeline would
        // have to be split by slot on a cluster).
        let reads = convs.iter().map(|c| self.last_seq(c));
        futures_util::future::try_join_all(reads).await
    }

    async fn meta(&self, conv: &ConvId) -> Result<Option<ConvMeta>, EngineError> {
        let snap: Option<Vec<u8>> = self
            .inner
            .run(redis::cmd("HGET").arg(keys::conv_meta(conv)).arg("snap"))
            .await?;
        match snap {
            Some(b) => Ok(Some(ConvMeta::from_snapshot(&decode(&b)?))),
            None => Ok(None),
        }
    }

    async fn put_meta(
        &self,
        conv: &ConvId,
        meta: ConvMeta,
        version: u64,
    ) -> Result<(), EngineError> {
        // With an archive, a closed conversation's keys expire once it is archived whole
        // (`mark_archived`), not before.
        let ttl = if meta.state == ConvState::Closed && !self.inner.opts.archive {
            self.inner.opts.retention
        } else {
            OPEN_TTL
        };
        self.inner
            .script(
                scripts::PUT_META
                    .key(keys::conv_meta(conv))
                    .key(keys::conv_log(conv))
                    .key(keys::conv_cids(conv))
                    .arg(version)
                    .arg(meta.site.as_str())
                    .arg(meta.visitor.as_str())
                    .arg(meta.operator.as_ref().map(|o| o.as_str()).unwrap_or(""))
                    .arg(state_str(meta.state))
                    .arg(encode(&meta.snapshot))
                    .arg(ttl_secs(ttl)),
            )
            .await?;
        Ok(())
    }

    async fn set_read(&self, conv: &ConvId, visitor: bool, seq: u64) -> Result<(), EngineError> {
        self.inner
            .script(
                scripts::SET_READ
                    .key(keys::conv_meta(conv))
                    .arg(if visitor { "rv" } else { "rs" })
                    .arg(seq.min(SEQ_ARG_MAX)),
            )
            .await?;
        Ok(())
    }

    async fn summaries(&self, convs: &[ConvId]) -> Result<Vec<Summary>, EngineError> {
        // Concurrent single-key reads share the multiplexed connection (a pipeline would
        // have to be split by slot on a cluster).
        let reads = convs.iter().map(|c| async move {
            let f: SummaryFields = self
                .inner
                .run(
                    redis::cmd("HMGET")
                        .arg(keys::conv_meta(c))
                        .arg(&["seq", "v_text", "v_ts", "rv", "rs"]),
                )
                .await?;
            Ok::<_, EngineError>(Summary {
                last_seq: f.0.unwrap_or(0),
                last_visitor: f.1.map(|text| LastMessage {
                    text,
                    ts: f.2.unwrap_or(0),
                }),
                read: ReadMarks {
                    visitor: f.3.unwrap_or(0),
                    staff: f.4.unwrap_or(0),
                },
            })
        });
        futures_util::future::try_join_all(reads).await
    }

    async fn read_log(
        &self,
        conv: &ConvId,
        after: u64,
        max: usize,
    ) -> Result<Vec<Msg>, EngineError> {
        let entries: StreamEntries = self
            .inner
            .run(
                redis::cmd("XRANGE")
                    .arg(keys::conv_log(conv))
                    .arg(format!("{}-0", after.min(SEQ_ARG_MAX) + 1))
                    .arg("+")
                    .arg("COUNT")
                    .arg(max.max(1)),
            )
            .await?;
        entries
            .iter()
            .filter_map(|(_, fields)| fields.iter().find(|(k, _)| k == "f"))
            .map(|(_, frame)| decode_msg(frame))
            .collect()
    }

    async fn mark_archived(
        &self,
        conv: &ConvId,
        seq: u64,
        closed: bool,
    ) -> Result<(), EngineError> {
        self.inner
            .script(
                scripts::MARK_ARCHIVED
                    .key(keys::conv_meta(conv))
                    .key(keys::conv_log(conv))
                    .key(keys::conv_cids(conv))
                    .arg(seq.min(SEQ_ARG_MAX))
                    .arg(self.inner.opts.max_log)
                    .arg(if closed { "1" } else { "0" })
                    .arg(ttl_secs(self.inner.opts.retention)),
            )
            .await?;
        Ok(())
    }

    async fn activity(&self, conv: &ConvId) -> Result<Activity, EngineError> {
        let f: Vec<Option<u64>> = self
            .inner
            .run(
                redis::cmd("HMGET")
                    .arg(keys::conv_meta(conv))
                    .arg(&["last_ts", "unans", "op_ts", "v_ts", "v1_ts", "op1_ts"]),
            )
            .await?;
        let at = |i: usize| f.get(i).copied().flatten().filter(|&t| t > 0);
        Ok(Activity {
            last_ts: at(0).unwrap_or(0),
            unanswered_since: at(1),
            operator_ts: at(2),
            visitor_ts: at(3),
            first_visitor_ts: at(4),
            first_operator_ts: at(5),
        })
    }

    async fn visitor_latest(
        &self,
        site: &SiteId,
        visitor: &VisitorId,
    ) -> Result<Option<ConvId>, EngineError> {
        let v: Option<String> = self
            .inner
            .run(redis::cmd("GET").arg(keys::visitor_latest(site, visitor)))
            .await?;
        Ok(v.map(ConvId))
    }

    async fn set_visitor_latest(
        &self,
        site: &SiteId,
        visitor: &VisitorId,
        conv: &ConvId,
    ) -> Result<(), EngineError> {
        self.inner
            .run::<()>(
                redis::cmd("SET")
                    .arg(keys::visitor_latest(site, visitor))
                    .arg(conv.as_str())
                    .arg("EX")
                    .arg(ttl_secs(OPEN_TTL)),
            )
            .await
    }

    async fn forget_visitor(
        &self,
        site: &SiteId,
        visitor: &VisitorId,
        convs: &[ConvId],
    ) -> Result<(), EngineError> {
        self.inner
            .run::<()>(redis::cmd("DEL").arg(keys::visitor_latest(site, visitor)))
            .await?;
        for c in convs {
            // One conversation's keys share a hash slot: one DEL each.
            let Some(meta) = self.meta(c).await? else {
                continue;
            };
            if &meta.site != site {
                continue;
            }
            self.inner
                .run::<()>(
                    redis::cmd("DEL")
                        .arg(keys::conv_meta(c))
                        .arg(keys::conv_log(c))
                        .arg(keys::conv_cids(c)),
                )
                .await?;
        }
        Ok(())
    }
}
