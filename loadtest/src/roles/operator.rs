//! An operator: `hello`, `status: active`, then take conversations whichever way the site
//! routes them — `accept` from `queue` frames (manual), `accept` of `offer` frames (offer),
//! or adopt on `conv`/`assigned` (auto) — and answer every visitor message. In the storm's
//! push phase it writes messages into every conversation it holds while the visitors are
//! away. Accepts and pushes are paced (`--op-pace`) to stay under the gateway's rate limit.
//!
//! In manual routing every operator sees the whole queue. Each conversation has a preferred
//! operator (a hash of its id), which accepts it at once; the others step in only when it is
//! still waiting a second later, so `taken` races stay rare.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::time::sleep_until;

use super::{
    backoff, establish, fnv1a, latency_us, note_end, now_us, reconnect_delay, silence_limit, until,
    wait_or_finish, OpenGuard, Pacer, Phase, Shared,
};
use crate::client::{Ended, Event, WsConn};
use crate::ledger::{Cid, ConvLedger, Role};
use crate::proto::{ClientFrame, ConvRef, Conversation, ServerFrame, Welcome};
use crate::stats::{C, H};

/// How long a waiting conversation is left to its preferred operator.
const STEAL_AFTER: Duration = Duration::from_secs(1);

pub struct Plan {
    /// Index among operators.
    pub index: usize,
    /// Index among all sockets of the run.
    pub socket: usize,
}

enum Req {
    Status,
    Accept(String),
    Decline,
    Send {
        cid: String,
        at: Instant,
        push: bool,
    },
}

enum End {
    Finish,
    Closed(Ended),
}

#[derive(Default)]
struct OpConv {
    ledger: ConvLedger,
    /// Messages this operator wrote into the conversation (cid counter).
    n: u64,
    replay_until: u64,
}

/// A message not acked yet: conversation and whether it is a storm push.
struct Unacked {
    conv: String,
    push: bool,
}

struct Operator {
    ctx: Shared,
    plan: Plan,
    tag: String,
    token: String,
    me: String,
    convs: HashMap<String, OpConv>,
    rid: u64,
    pending: HashMap<u64, Req>,
    unacked: HashMap<String, Unacked>,
    retry: VecDeque<(tokio::time::Instant, String)>,
    accept_q: VecDeque<String>,
    accepting: HashSet<String>,
    first_seen: HashMap<String, Instant>,
    push_q: VecDeque<String>,
    push_outstanding: u64,
    push_started: bool,
    push_done: bool,
    pacer: Pacer,
    active: bool,
    snapshotted: bool,
    silence: Duration,
}

pub async fn run(ctx: Shared, plan: Plan) {
    let sub = format!("lt-{}-o{}", ctx.run_id, plan.index);
    let name = format!("Operator {}", plan.index);
    let token = match ctx
        .minter
        .mint("operator", &sub, &name, Some(ctx.max_chats))
    {
        Ok(t) => t,
        Err(_) => return ctx.stats.error("token"),
    };
    let op = Operator {
        tag: format!("o{}", plan.index),
        pacer: Pacer::new(ctx.op_pace),
        ctx,
        plan,
        token,
        me: sub,
        convs: HashMap::new(),
        rid: 0,
        pending: HashMap::new(),
        unacked: HashMap::new(),
        retry: VecDeque::new(),
        accept_q: VecDeque::new(),
        accepting: HashSet::new(),
        first_seen: HashMap::new(),
        push_q: VecDeque::new(),
        push_outstanding: 0,
        push_started: false,
        push_done: false,
        active: false,
        snapshotted: false,
        silence: Duration::from_secs(35),
    };
    op.run().await;
}

/// A task aborted at the end of the run (see `Env::finish`) still reports its ledgers: the
/// reports are what make loss in its conversations countable. Whatever it sent that was
/// never acked nor refused by now is counted as unacked.
impl Drop for Operator {
    fn drop(&mut self) {
        self.snapshot();
        self.ctx.stats.add(C::Unacked, self.unacked.len() as u64);
    }
}

impl Operator {
    async fn run(mut self) {
        let mut phase_rx = self.ctx.phase.clone();
        let mut attempt = 0u32;
        loop {
            let phase = *phase_rx.borrow_and_update();
            if phase >= Phase::Snapshot {
                self.snapshot();
            }
            if phase >= Phase::Finish {
                return;
            }
            let cursors = self
                .convs
                .iter()
                .map(|(id, c)| (id.as_str(), c.ledger.cursor()))
                .collect();
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
                End::Closed(end) => {
                    note_end(&self.ctx.stats, &end);
                    self.ctx.stats.inc(C::Reconnects);
                    let Some(d) = reconnect_delay(&end, attempt) else {
                        while *phase_rx.borrow_and_update() < Phase::Finish {
                            if phase_rx.changed().await.is_err() {
                                break;
                            }
                        }
                        return self.snapshot();
                    };
                    if !wait_or_finish(&mut phase_rx, d).await {
                        return self.snapshot();
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
        for (id, c) in &self.convs {
            self.ctx.report(c.ledger.report(id, Role::Operator));
        }
        self.ctx.stats.inc(C::Snapshots);
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
                conn.close().await;
                return End::Finish;
            }
            if phase == Phase::Push && !self.push_started {
                self.start_push();
            }
            let paced_work = !self.accept_q.is_empty() || !self.push_q.is_empty();
            let retry_at = self.retry.front().map(|r| r.0);
            let result = tokio::select! {
                ev = conn.recv() => {
                    last_rx = tokio::time::Instant::now();
                    match ev {
                        Event::Frame(f) => self.on_frame(&mut conn, f, phase).await,
                        Event::Undecodable => {
                            self.ctx.stats.error("decode");
                            Ok(())
                        }
                        Event::Closed(e) => Err(e),
                    }
                }
                _ = sleep_until(self.pacer.ready_at()), if paced_work => {
                    self.pacer.take();
                    self.paced_step(&mut conn).await
                }
                _ = until(retry_at), if retry_at.is_some() => self.resend_due(&mut conn).await,
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

    async fn on_welcome(&mut self, conn: &mut WsConn, welcome: Welcome) -> Result<(), Ended> {
        self.me = welcome.me.id.clone();
        // Requests in flight on the old socket died with it.
        for (_, req) in self.pending.drain() {
            match req {
                Req::Send { cid, .. } => self.retry.push_back((tokio::time::Instant::now(), cid)),
                Req::Accept(conv) => {
                    self.accepting.remove(&conv);
                }
                Req::Status | Req::Decline => {}
            }
        }
        for c in &welcome.conversations {
            match self.convs.get_mut(&c.id) {
                Some(known) if c.recovered == Some(false) => {
                    known.replay_until = c.last_seq;
                    self.ctx.stats.inc(C::NotRecovered);
                    self.ctx.stats.error("resume:not_recovered");
                }
                Some(known) if known.ledger.is_attached() => known.replay_until = c.last_seq,
                _ if !self.ctx.is_ours(c) => {}
                // A pending offer: take it first.
                _ if c.state == "offered" => {
                    if self.accepting.insert(c.id.clone()) {
                        self.accept_q.push_front(c.id.clone());
                    }
                }
                // Tracked while its accept was in flight, and the answer died with the old
                // socket: the welcome says it is ours after all.
                Some(known) => {
                    known.replay_until = c.last_seq;
                    self.adopt(c);
                }
                None => self.adopt(c),
            }
        }
        self.rid += 1;
        self.pending.insert(self.rid, Req::Status);
        conn.send(&ClientFrame::Status {
            rid: self.rid,
            status: "active",
        })
        .await
    }

    /// Takes a conversation assigned to this operator (accept answer, auto routing, or a
    /// conversation listed in `welcome`).
    fn adopt(&mut self, c: &Conversation) {
        self.accepting.remove(&c.id);
        let entry = self.convs.entry(c.id.clone()).or_default();
        if !entry.ledger.is_attached() {
            entry.ledger.attach(c.last_seq);
            self.ctx.stats.inc(C::Accepted);
        }
    }

    fn start_push(&mut self) {
        self.push_started = true;
        for id in self.convs.keys() {
            for _ in 0..self.ctx.push_per_conv {
                self.push_q.push_back(id.clone());
            }
        }
        self.check_push_done();
    }

    fn check_push_done(&mut self) {
        if self.push_started
            && !self.push_done
            && self.push_q.is_empty()
            && self.push_outstanding == 0
        {
            self.push_done = true;
            self.ctx.stats.inc(C::PushDone);
        }
    }

    /// One paced action: an accept first (a visitor is waiting), else a push.
    async fn paced_step(&mut self, conn: &mut WsConn) -> Result<(), Ended> {
        if let Some(conv) = self.accept_q.pop_front() {
            if self
                .convs
                .get(&conv)
                .is_some_and(|c| c.ledger.is_attached())
            {
                return Ok(());
            }
            self.rid += 1;
            self.pending.insert(self.rid, Req::Accept(conv.clone()));
            return conn
                .send(&ClientFrame::Accept {
                    rid: self.rid,
                    conv: &conv,
                })
                .await;
        }
        if let Some(conv) = self.push_q.pop_front() {
            self.push_outstanding += 1;
            return self.send_new(conn, &conv, true).await;
        }
        Ok(())
    }

    async fn send_new(&mut self, conn: &mut WsConn, conv: &str, push: bool) -> Result<(), Ended> {
        let c = self.convs.entry(conv.to_owned()).or_default();
        c.n += 1;
        let cid = Cid::format(&self.tag, c.n, now_us());
        self.unacked.insert(
            cid.clone(),
            Unacked {
                conv: conv.to_owned(),
                push,
            },
        );
        self.ctx.stats.inc(C::Sent);
        self.send_msg(conn, cid).await
    }

    async fn send_msg(&mut self, conn: &mut WsConn, cid: String) -> Result<(), Ended> {
        let Some(u) = self.unacked.get(&cid) else {
            return Ok(());
        };
        self.rid += 1;
        let frame = ClientFrame::Send {
            rid: self.rid,
            conv: &u.conv,
            cid: &cid,
            text: &self.ctx.text,
        };
        let push = u.push;
        let sent = conn.send(&frame).await;
        self.pending.insert(
            self.rid,
            Req::Send {
                cid,
                at: Instant::now(),
                push,
            },
        );
        sent
    }

    async fn resend_due(&mut self, conn: &mut WsConn) -> Result<(), Ended> {
        let now = tokio::time::Instant::now();
        while self.retry.front().is_some_and(|r| r.0 <= now) {
            let Some((_, cid)) = self.retry.pop_front() else {
                break;
            };
            if self.unacked.contains_key(&cid) {
                self.ctx.stats.inc(C::Resent);
                self.send_msg(conn, cid).await?;
            }
        }
        Ok(())
    }

    /// Queues accepts for the waiting conversations this operator should take now.
    fn on_queue(&mut self, waiting: &[Conversation]) {
        let now = Instant::now();
        let operators = self.ctx.operators.max(1) as u64;
        let mut seen = HashMap::with_capacity(waiting.len());
        for c in waiting.iter().filter(|c| self.ctx.is_ours(c)) {
            let first = self.first_seen.get(&c.id).copied().unwrap_or(now);
            seen.insert(c.id.clone(), first);
            if self.convs.contains_key(&c.id) || self.accepting.contains(&c.id) {
                continue;
            }
            let mine = fnv1a(&c.id) % operators == self.plan.index as u64;
            if mine || now.duration_since(first) >= STEAL_AFTER {
                self.accepting.insert(c.id.clone());
                self.accept_q.push_back(c.id.clone());
            }
        }
        self.first_seen = seen;
    }

    async fn on_frame(
        &mut self,
        conn: &mut WsConn,
        f: ServerFrame,
        phase: Phase,
    ) -> Result<(), Ended> {
        match f {
            ServerFrame::Ping => return conn.send(&ClientFrame::Pong).await,
            ServerFrame::Queue(q) => self.on_queue(&q.waiting),
            ServerFrame::Offer(o) => {
                if !self.ctx.is_ours(&o.conv) {
                    // Another run's leftover: pass it on at once rather than let it lapse.
                    self.pacer.take();
                    self.rid += 1;
                    self.pending.insert(self.rid, Req::Decline);
                    return conn
                        .send(&ClientFrame::Decline {
                            rid: self.rid,
                            conv: &o.conv.id,
                        })
                        .await;
                }
                if !self.convs.contains_key(&o.conv.id) && self.accepting.insert(o.conv.id.clone())
                {
                    // An offer expires: take it before anything else.
                    self.accept_q.push_front(o.conv.id);
                }
            }
            ServerFrame::Conv(ev) => {
                let mine = ev.conv.operator.as_ref().is_some_and(|p| p.id == self.me);
                if ev.event == "assigned" && mine && self.ctx.is_ours(&ev.conv) {
                    self.adopt(&ev.conv);
                }
            }
            ServerFrame::Ok(ok) => {
                let Some(req) = ok
                    .rid
                    .and_then(|r| r.num())
                    .and_then(|r| self.pending.remove(&r))
                else {
                    return Ok(());
                };
                match req {
                    Req::Decline => {}
                    Req::Status => {
                        if !self.active {
                            self.active = true;
                            self.ctx.stats.inc(C::OperatorsActive);
                        }
                    }
                    Req::Accept(conv) => {
                        self.accepting.remove(&conv);
                        if let Some(ConvRef::Full(c)) = ok.conv {
                            self.adopt(&c);
                        }
                    }
                    Req::Send { cid, at, push } => {
                        if let (Some(seq), Some(u)) = (ok.seq, self.unacked.remove(&cid)) {
                            self.ctx.stats.record(H::Ack, at.elapsed());
                            self.ctx.stats.inc(C::Acked);
                            if let Some(c) = self.convs.get_mut(&u.conv) {
                                c.ledger.on_ack(seq);
                            }
                            if push {
                                self.ctx.stats.inc(C::PushAcked);
                                self.push_outstanding -= 1;
                                self.check_push_done();
                            }
                        }
                    }
                }
            }
            ServerFrame::Error(e) => {
                let req = e
                    .rid
                    .and_then(|r| r.num())
                    .and_then(|r| self.pending.remove(&r));
                let code = e.code.as_str();
                match req {
                    Some(Req::Accept(conv)) => {
                        self.accepting.remove(&conv);
                        match code {
                            // Someone else was first, or it is gone: normal in manual mode.
                            "taken" | "not_found" => self.ctx.stats.inc(C::AcceptTaken),
                            "rate_limited" => {
                                self.ctx.stats.error("accept:rate_limited");
                                self.accepting.insert(conv.clone());
                                self.accept_q.push_back(conv);
                            }
                            _ => self.ctx.stats.error(&format!("accept:{code}")),
                        }
                    }
                    Some(Req::Send { cid, .. }) => {
                        self.ctx.stats.error(&format!("send:{code}"));
                        if matches!(code, "rate_limited" | "unavailable") {
                            let at = tokio::time::Instant::now() + Duration::from_millis(300);
                            self.retry.push_back((at, cid));
                        } else if let Some(u) = self.unacked.remove(&cid) {
                            self.ctx.stats.inc(C::Refused);
                            if u.push {
                                self.push_outstanding -= 1;
                                self.check_push_done();
                            }
                        }
                    }
                    Some(Req::Status) => self.ctx.stats.error(&format!("status:{code}")),
                    // The offer was gone already.
                    Some(Req::Decline) => {}
                    None => self.ctx.stats.error(&format!("frame:{code}")),
                }
            }
            ServerFrame::Msg(m) => {
                let tracked = self.convs.contains_key(&m.conv) || self.accepting.contains(&m.conv);
                if !tracked {
                    return Ok(());
                }
                let c = self.convs.entry(m.conv.clone()).or_default();
                let arrival = c.ledger.on_msg(m.seq, m.cid.as_deref());
                let replay = m.seq <= c.replay_until;
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
                if replay {
                    stats.inc(C::Replayed);
                }
                if m.from.role == "visitor" {
                    stats.inc(C::RecvV2o);
                    if !replay {
                        if let Some(cid) = m.cid.as_deref().and_then(Cid::parse) {
                            stats.record_us(H::V2o, latency_us(cid.sent_us));
                        }
                    }
                    // Every visitor message gets an answer until sending stops, at once (its
                    // latency is measured); it uses up a paced slot, so accepts and pushes
                    // make room and the connection stays under the gateway's rate limit.
                    if phase < Phase::Stop {
                        self.pacer.take();
                        return self.send_new(conn, &m.conv, false).await;
                    }
                }
            }
            ServerFrame::Notice(n) => self.ctx.stats.error(&format!("notice:{}", n.code)),
            ServerFrame::Welcome(_) | ServerFrame::Other => {}
        }
        Ok(())
    }
}
