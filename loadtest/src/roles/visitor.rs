//! A visitor: `hello`, `start`, wait until an operator takes the conversation, then `send`
//! at its share of the rate. Every message it gets is checked against its ledger; operator
//! messages give the operator → visitor latency. When its socket drops (a drain, a storm
//! cut, a rate-limit close) it reconnects with its cursor, checks the replay, and re-sends
//! what was never acked under the same cid.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::time::sleep_until;

use super::{
    backoff, establish, latency_us, note_end, now_us, reconnect_delay, silence_limit, tick, until,
    wait_or_finish, OpenGuard, Phase, Schedule, Shared,
};
use crate::cli::LatencyFrom;
use crate::client::{Ended, Event, WsConn};
use crate::ledger::{Cid, ConvLedger, Role};
use crate::proto::{ClientFrame, ConvRef, Conversation, ServerFrame, Welcome};
use crate::stats::{C, H};

/// This visitor's part of the run.
pub struct Plan {
    /// Index among visitors (names the user and the cid sender).
    pub index: usize,
    /// Index among all sockets of the run (picks node and source address).
    pub socket: usize,
    /// Time between two messages; `None` = never sends.
    pub period: Option<Duration>,
}

enum Req {
    Start,
    Send { n: u64, at: Instant },
}

enum End {
    Finish,
    Cut,
    Closed(Ended),
}

struct Visitor {
    ctx: Shared,
    plan: Plan,
    tag: String,
    token: String,
    conv: Option<String>,
    ledger: ConvLedger,
    assigned: bool,
    rid: u64,
    pending: HashMap<u64, Req>,
    /// Messages sent and not yet acked, by counter: re-sent with the same cid on reconnect.
    unacked: BTreeMap<u64, String>,
    retry: VecDeque<(tokio::time::Instant, u64)>,
    start_retry: Option<tokio::time::Instant>,
    n: u64,
    ticker: Option<Schedule>,
    /// Seqs up to this one are a replay (no latency sample).
    replay_until: u64,
    /// Set while catching up after a reconnect: since when, and up to which seq.
    resume: Option<(Instant, u64)>,
    resume_from: Option<Instant>,
    cut_done: bool,
    snapshotted: bool,
    silence: Duration,
}

pub async fn run(ctx: Shared, plan: Plan) {
    let sub = format!("lt-{}-v{}", ctx.run_id, plan.index);
    let token = match ctx
        .minter
        .mint("visitor", &sub, &format!("Visitor {}", plan.index), None)
    {
        Ok(t) => t,
        Err(_) => return ctx.stats.error("token"),
    };
    let v = Visitor {
        tag: format!("v{}", plan.index),
        ctx,
        plan,
        token,
        conv: None,
        ledger: ConvLedger::default(),
        assigned: false,
        rid: 0,
        pending: HashMap::new(),
        unacked: BTreeMap::new(),
        retry: VecDeque::new(),
        start_retry: None,
        n: 0,
        ticker: None,
        replay_until: 0,
        resume: None,
        resume_from: None,
        cut_done: false,
        snapshotted: false,
        silence: Duration::from_secs(35),
    };
    v.run().await;
}

/// A task aborted at the end of the run (see `Env::finish`) still reports its ledger: the
/// report is what makes loss in its conversation countable. Whatever it sent that was never
/// acked nor refused by now is counted as unacked.
impl Drop for Visitor {
    fn drop(&mut self) {
        self.snapshot();
        self.ctx.stats.add(C::Unacked, self.unacked.len() as u64);
    }
}

impl Visitor {
    async fn run(mut self) {
        let mut phase_rx = self.ctx.phase.clone();
        let mut attempt = 0u32;
        loop {
            let phase = *phase_rx.borrow_and_update();
            if phase >= Phase::Finish {
                return self.snapshot();
            }
            if phase >= Phase::Snapshot {
                self.snapshot();
            }
            if phase == Phase::Cut && !self.cut_done {
                // Already disconnected when the cut came: it counts as cut.
                self.cut_done = true;
                self.ctx.stats.inc(C::Cut);
                self.pause_schedule();
            }
            if self.cut_done && phase < Phase::Resume {
                if phase_rx.changed().await.is_err() {
                    return;
                }
                continue;
            }
            if self.cut_done && self.resume_from.is_none() && phase >= Phase::Resume {
                self.resume_from = Some(Instant::now());
            }
            let cursors = match &self.conv {
                Some(c) => BTreeMap::from([(c.as_str(), self.ledger.cursor())]),
                None => BTreeMap::new(),
            };
            let established = establish(&self.ctx, self.plan.socket, &self.token, cursors).await;
            let (conn, welcome) = match established {
                Ok(ok) => ok,
                Err(_) => {
                    attempt += 1;
                    if !wait_or_finish(&mut phase_rx, backoff(attempt)).await {
                        return self.snapshot();
                    }
                    continue;
                }
            };
            attempt = 0;
            match self.session(conn, welcome, &mut phase_rx).await {
                End::Finish => return self.snapshot(),
                End::Cut => {
                    self.cut_done = true;
                    self.ctx.stats.inc(C::Cut);
                    self.pause_schedule();
                }
                End::Closed(end) => {
                    note_end(&self.ctx.stats, &end);
                    self.ctx.stats.inc(C::Reconnects);
                    self.resume_from = Some(Instant::now());
                    match reconnect_delay(&end, attempt) {
                        Some(d) => {
                            if !wait_or_finish(&mut phase_rx, d).await {
                                return self.snapshot();
                            }
                        }
                        None => {
                            // Told to stay away: wait for the end of the run.
                            while *phase_rx.borrow_and_update() < Phase::Finish {
                                if phase_rx.changed().await.is_err() {
                                    break;
                                }
                            }
                            return self.snapshot();
                        }
                    }
                }
            }
        }
    }

    fn snapshot(&mut self) {
        if self.snapshotted {
            return;
        }
        self.snapshotted = true;
        if let Some(conv) = &self.conv {
            self.ctx.report(self.ledger.report(conv, Role::Visitor));
        }
        self.ctx.stats.inc(C::Snapshots);
    }

    /// The run stops sending on purpose (a storm's cut, the end of the sending phase): a rate
    /// schedule measured from `scheduled` starts afresh when sending resumes, instead of
    /// making up the pause as a burst of "late" messages. (Measured from `sent`, the schedule
    /// just slides, as it always did.)
    fn pause_schedule(&mut self) {
        if self.ctx.latency_from == LatencyFrom::Scheduled {
            self.ticker = None;
        }
    }

    fn can_send(&self, phase: Phase) -> bool {
        self.plan.period.is_some()
            && self.assigned
            && self.conv.is_some()
            && self.resume.is_none()
            && (phase == Phase::Run || phase == Phase::Resume)
    }

    async fn session(
        &mut self,
        mut conn: WsConn,
        welcome: Welcome,
        phase_rx: &mut watch::Receiver<Phase>,
    ) -> End {
        let _open = OpenGuard::new(&self.ctx);
        self.silence = silence_limit(&welcome);
        if let Err(e) = self.on_welcome(&mut conn, welcome).await {
            return End::Closed(e);
        }
        let mut last_rx = tokio::time::Instant::now();
        loop {
            let phase = *phase_rx.borrow_and_update();
            if phase >= Phase::Snapshot {
                self.snapshot();
            }
            if phase >= Phase::Finish {
                self.close_conversation(&mut conn).await;
                conn.close().await;
                return End::Finish;
            }
            if phase == Phase::Cut && !self.cut_done {
                conn.cut(self.ctx.cut_mode);
                return End::Cut;
            }
            if phase != Phase::Run && phase != Phase::Resume {
                self.pause_schedule();
            }
            let can_send = self.can_send(phase);
            if can_send && self.ticker.is_none() {
                let period = self.plan.period.unwrap_or(Duration::from_secs(1));
                // A random phase spreads visitors evenly over the period.
                let offset = period.mul_f64(rand::random::<f64>());
                let first = tokio::time::Instant::now() + offset;
                self.ticker = Some(Schedule::new(first, period, self.ctx.latency_from));
            }
            let retry_at = self.retry.front().map(|r| r.0);
            let result = tokio::select! {
                ev = conn.recv() => {
                    last_rx = tokio::time::Instant::now();
                    match ev {
                        Event::Frame(f) => self.on_frame(&mut conn, f).await,
                        Event::Undecodable => {
                            self.ctx.stats.error("decode");
                            Ok(())
                        }
                        Event::Closed(e) => Err(e),
                    }
                }
                late = tick(&mut self.ticker), if can_send => self.send_new(&mut conn, late).await,
                _ = until(retry_at), if retry_at.is_some() => self.resend_due(&mut conn).await,
                _ = until(self.start_retry), if self.start_retry.is_some() => {
                    self.start_retry = None;
                    self.send_start(&mut conn).await
                }
                r = phase_rx.changed() => match r {
                    Ok(()) => Ok(()),
                    Err(_) => {
                        conn.close().await;
                        return End::Finish;
                    }
                },
                _ = sleep_until(last_rx + self.silence) => Err(Ended::other("silent")),
            };
            if let Err(e) = result {
                return End::Closed(e);
            }
        }
    }

    /// Ends the conversation at the end of the run, so that a gateway used for many runs
    /// does not collect their conversations in its queue. Waits briefly for the answer.
    async fn close_conversation(&mut self, conn: &mut WsConn) {
        let Some(conv) = self.conv.clone() else {
            return;
        };
        self.rid += 1;
        let rid = self.rid;
        if conn
            .send(&ClientFrame::Close { rid, conv: &conv })
            .await
            .is_err()
        {
            return;
        }
        let _ = tokio::time::timeout(Duration::from_secs(3), async {
            loop {
                match conn.recv().await {
                    Event::Frame(ServerFrame::Ok(ok))
                        if ok.rid.as_ref().and_then(|r| r.num()) == Some(rid) =>
                    {
                        return
                    }
                    Event::Frame(ServerFrame::Error(e))
                        if e.rid.as_ref().and_then(|r| r.num()) == Some(rid) =>
                    {
                        return self.ctx.stats.error(&format!("conv_close:{}", e.code));
                    }
                    Event::Frame(ServerFrame::Ping) => {
                        let _ = conn.send(&ClientFrame::Pong).await;
                    }
                    Event::Closed(_) => return,
                    Event::Frame(_) | Event::Undecodable => {}
                }
            }
        })
        .await;
    }

    async fn on_welcome(&mut self, conn: &mut WsConn, welcome: Welcome) -> Result<(), Ended> {
        // Requests in flight on the old socket died with it.
        for (_, req) in self.pending.drain() {
            if let Req::Send { n, .. } = req {
                self.retry.push_back((tokio::time::Instant::now(), n));
            }
        }
        let Some(conv) = self.conv.clone() else {
            // `start` is idempotent: a start lost with the old socket is simply asked again.
            return self.send_start(conn).await;
        };
        match welcome.conversations.iter().find(|c| c.id == conv) {
            Some(c) if c.recovered != Some(false) => {
                self.replay_until = c.last_seq;
                self.note_assignment(c);
                let from = self.resume_from.take().unwrap_or_else(Instant::now);
                self.resume = Some((from, c.last_seq));
                self.check_resumed();
            }
            Some(_) => {
                self.ctx.stats.inc(C::NotRecovered);
                self.ctx.stats.error("resume:not_recovered");
                self.resume_from = None;
            }
            None => {
                self.ctx.stats.error("resume:conversation_missing");
                self.resume_from = None;
            }
        }
        Ok(())
    }

    async fn send_start(&mut self, conn: &mut WsConn) -> Result<(), Ended> {
        self.rid += 1;
        self.pending.insert(self.rid, Req::Start);
        let queue = Some(self.ctx.queue.as_str());
        conn.send(&ClientFrame::Start {
            rid: self.rid,
            queue,
        })
        .await
    }

    fn note_assignment(&mut self, c: &Conversation) {
        if !self.assigned && c.state == "active" && c.operator.is_some() {
            self.assigned = true;
            self.ctx.stats.inc(C::Assigned);
        }
    }

    fn check_resumed(&mut self) {
        if let Some((from, target)) = self.resume {
            if self.ledger.cursor() >= target {
                self.resume = None;
                self.ctx.stats.record(H::Resume, from.elapsed());
                self.ctx.stats.inc(C::Resumed);
            }
        }
    }

    /// Sends the next message, stamped `late` before now (the time the rate schedule called
    /// for it when latency is measured from `scheduled`, else now).
    async fn send_new(&mut self, conn: &mut WsConn, late: Duration) -> Result<(), Ended> {
        self.n += 1;
        let stamp = now_us().saturating_sub(late.as_micros() as u64);
        let cid = Cid::format(&self.tag, self.n, stamp);
        self.unacked.insert(self.n, cid);
        self.ctx.stats.inc(C::Sent);
        let at = Instant::now();
        self.send_msg(conn, self.n, at.checked_sub(late).unwrap_or(at))
            .await
    }

    /// Sends message `n`; its ack time counts from `at`.
    async fn send_msg(&mut self, conn: &mut WsConn, n: u64, at: Instant) -> Result<(), Ended> {
        let (Some(conv), Some(cid)) = (&self.conv, self.unacked.get(&n)) else {
            return Ok(());
        };
        self.rid += 1;
        self.pending.insert(self.rid, Req::Send { n, at });
        let frame = ClientFrame::Send {
            rid: self.rid,
            conv,
            cid,
            text: &self.ctx.text,
        };
        conn.send(&frame).await
    }

    async fn resend_due(&mut self, conn: &mut WsConn) -> Result<(), Ended> {
        let now = tokio::time::Instant::now();
        while let Some(&(at, n)) = self.retry.front() {
            if at > now {
                break;
            }
            self.retry.pop_front();
            if self.unacked.contains_key(&n) {
                self.ctx.stats.inc(C::Resent);
                self.send_msg(conn, n, Instant::now()).await?;
            }
        }
        Ok(())
    }

    async fn on_frame(&mut self, conn: &mut WsConn, f: ServerFrame) -> Result<(), Ended> {
        match f {
            ServerFrame::Ping => return conn.send(&ClientFrame::Pong).await,
            ServerFrame::Ok(ok) => {
                let Some(req) = ok
                    .rid
                    .and_then(|r| r.num())
                    .and_then(|r| self.pending.remove(&r))
                else {
                    return Ok(());
                };
                match req {
                    Req::Start => {
                        if let Some(ConvRef::Full(c)) = ok.conv {
                            if self.conv.is_none() {
                                self.ctx.stats.inc(C::Started);
                                self.ledger.attach(c.last_seq);
                                self.conv = Some(c.id.clone());
                            }
                            self.note_assignment(&c);
                        }
                    }
                    Req::Send { n, at } => {
                        // The ack must name the message and conversation it answers.
                        let cid_ok = ok.cid.is_none() || ok.cid.as_ref() == self.unacked.get(&n);
                        let conv_ok = match &ok.conv {
                            Some(ConvRef::Id(c)) => self.conv.as_ref() == Some(c),
                            _ => true,
                        };
                        if !(cid_ok && conv_ok) {
                            self.ctx.stats.error("ack:mismatch");
                        }
                        if let (Some(seq), Some(_)) = (ok.seq, self.unacked.remove(&n)) {
                            self.ctx.stats.record(H::Ack, at.elapsed());
                            self.ctx.stats.inc(C::Acked);
                            self.ledger.on_ack(seq);
                        }
                    }
                }
            }
            ServerFrame::Error(e) => {
                let req = e
                    .rid
                    .and_then(|r| r.num())
                    .and_then(|r| self.pending.remove(&r));
                let retryable = matches!(e.code.as_str(), "rate_limited" | "unavailable");
                match req {
                    Some(Req::Send { n, .. }) if retryable => {
                        self.ctx.stats.error(&format!("send:{}", e.code));
                        let at = tokio::time::Instant::now() + Duration::from_millis(300);
                        self.retry.push_back((at, n));
                    }
                    Some(Req::Send { n, .. }) => {
                        self.ctx.stats.error(&format!("send:{}", e.code));
                        if self.unacked.remove(&n).is_some() {
                            self.ctx.stats.inc(C::Refused);
                        }
                    }
                    Some(Req::Start) => {
                        self.ctx.stats.error(&format!("start:{}", e.code));
                        self.start_retry =
                            Some(tokio::time::Instant::now() + Duration::from_secs(1));
                    }
                    None => self.ctx.stats.error(&format!("frame:{}", e.code)),
                }
            }
            ServerFrame::Msg(m) => {
                if self.conv.as_deref() != Some(m.conv.as_str()) {
                    return Ok(());
                }
                let arrival = self.ledger.on_msg(m.seq, m.cid.as_deref());
                let stats = &self.ctx.stats;
                if arrival.redelivered {
                    stats.inc(C::Redelivered);
                    return Ok(());
                }
                if arrival.out_of_order {
                    stats.inc(C::OutOfOrder);
                }
                if arrival.duplicated {
                    stats.inc(C::Duplicated);
                }
                let replay = m.seq <= self.replay_until;
                if replay {
                    stats.inc(C::Replayed);
                }
                if m.from.role == "operator" {
                    stats.inc(C::RecvO2v);
                    if !self.assigned {
                        self.assigned = true;
                        stats.inc(C::Assigned);
                    }
                    if !replay {
                        if let Some(cid) = m.cid.as_deref().and_then(Cid::parse) {
                            stats.record_us(H::O2v, latency_us(cid.sent_us));
                        }
                    }
                }
                self.check_resumed();
            }
            ServerFrame::Conv(ev) => {
                if self.conv.as_deref() == Some(ev.conv.id.as_str()) {
                    self.note_assignment(&ev.conv);
                    if ev.conv.state == "closed" {
                        self.ctx.stats.error("conversation_closed");
                    }
                }
            }
            ServerFrame::Notice(n) => self.ctx.stats.error(&format!("notice:{}", n.code)),
            ServerFrame::Welcome(_)
            | ServerFrame::Queue(_)
            | ServerFrame::Offer(_)
            | ServerFrame::Other => {}
        }
        Ok(())
    }
}
