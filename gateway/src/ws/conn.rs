//! One WebSocket connection: `hello`, `welcome` with replay, then frames in and out until
//! either side closes.
//!
//! The loop is generic over any `Sink`/`Stream` of tungstenite messages, so tests can drive it
//! with channels; production hands it a tokio-tungstenite stream. Requests are handled one at
//! a time, in arrival order, each in a boxed future: an idle connection's task holds only the
//! loop's small state, not the largest request's.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::pin::Pin;
use std::sync::Arc;

use futures_util::future::FusedFuture;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tracing::Instrument;

use crate::auth::Principal;
use crate::clock::now_ms;
use crate::core::{ConvId, VisitorProfile};
use crate::engine::{Engine, Replay};
use crate::hub::{Channel, ConnShared, Out, Outbox};
use crate::metrics as m;
use crate::protocol::{
    ClientFrame, CloseReason, Conversation, DecodeError, Encoding, ErrorCode, Me, OkBody, Rid,
    Role, ServerFrame,
};
use crate::service::{preview_from, user_channel, Access, Gateway, ServiceError};

/// What the HTTP upgrade learned about the client.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub encoding: Encoding,
    pub ip: IpAddr,
    pub origin: Option<String>,
    pub user_agent: Option<String>,
    pub language: Option<String>,
    pub country: Option<String>,
}

/// Consecutive rate-limited frames after which the connection is closed with 4029.
const RATE_STRIKES: u32 = 20;
/// Messages written per flush.
const WRITE_BATCH: usize = 64;

/// Runs a connection to its end.
pub async fn run<E, S>(gw: Arc<Gateway<E>>, ws: S, info: ConnInfo)
where
    E: Engine,
    S: Stream<Item = Result<Message, WsError>> + Sink<Message, Error = WsError> + Unpin + Send,
{
    // The handshake's future is boxed and gone once the client is known: the connection's
    // task then carries only what its session needs, for the rest of its life.
    let Some((live, sink, stream, cursors, span)) = Box::pin(open(gw, ws, info)).await else {
        return;
    };
    Box::pin(live.run(sink, stream, cursors))
        .instrument(span)
        .await
}

/// What `open` hands to the session: the client, the connection's halves, the cursors of its
/// `hello`, and the span its life is traced in.
type Opened<E, S> = (
    Live<E>,
    SplitSink<S, Message>,
    SplitStream<S>,
    Cursors,
    tracing::Span,
);

/// Waits for `hello` and checks it; `None` once a refused client has been closed.
async fn open<E, S>(gw: Arc<Gateway<E>>, ws: S, info: ConnInfo) -> Option<Opened<E, S>>
where
    E: Engine,
    S: Stream<Item = Result<Message, WsError>> + Sink<Message, Error = WsError> + Unpin + Send,
{
    let (mut sink, mut stream) = ws.split();
    if gw.refuses_clients() {
        close(
            &mut sink,
            &mut stream,
            CloseReason::Restarting,
            "node is restarting",
        )
        .await;
        return None;
    }
    let (principal, cursors) = match hello(&gw, &mut stream, &info).await {
        Ok(h) => h,
        Err((reason, text)) => {
            close(&mut sink, &mut stream, reason, text).await;
            return None;
        }
    };
    let id = gw.next_conn_id();
    let span = tracing::info_span!(
        "conn",
        node = %gw.node,
        conn = id.0,
        site = %principal.site,
        role = principal.role.as_str(),
    );
    let live = Live {
        gw,
        id,
        principal,
        info,
    };
    Some((live, sink, stream, cursors, span))
}

/// An authenticated connection, from `welcome` to its close.
struct Live<E: Engine> {
    gw: Arc<Gateway<E>>,
    id: crate::core::ConnId,
    principal: Principal,
    info: ConnInfo,
}

impl<E: Engine> Live<E> {
    async fn run<W, R>(self, mut sink: W, mut stream: R, cursors: Cursors)
    where
        W: Sink<Message, Error = WsError> + Unpin,
        R: Stream<Item = Result<Message, WsError>> + Unpin,
    {
        let Live {
            gw,
            id,
            principal,
            info,
        } = self;
        let (conn, rx) = ConnShared::new(
            id,
            principal.role,
            info.encoding,
            principal.queues.clone(),
            gw.cfg.outbound_max_bytes,
            now_ms(),
        );
        let role = principal.role.as_str();
        metrics::counter!(m::CONNS_OPENED, "role" => role).increment(1);
        metrics::gauge!(m::CONNS_ACTIVE, "role" => role).increment(1.0);
        let mut counted = None;
        let reason = session(
            &gw,
            &conn,
            rx,
            &mut sink,
            &mut stream,
            &principal,
            cursors,
            &info,
            &mut counted,
        )
        .await;
        gw.hub.unregister(id);
        metrics::gauge!(m::CONNS_ACTIVE, "role" => role).decrement(1.0);
        metrics::counter!(m::CONNS_CLOSED, "role" => role, "reason" => reason.map(|r| r.label()).unwrap_or("client")).increment(1);
        // The client hears first; the presence change may wait on the site's other work.
        if let Some(r) = reason {
            Box::pin(close(&mut sink, &mut stream, r, r.label())).await;
        }
        // Only a connection that was counted is taken out of the count (boxed: a transition's
        // future is large, and an idle connection's task should not carry it inline).
        if let Some(life) = counted {
            Box::pin(gw.disconnected(&principal, life)).await;
        }
        tracing::debug!(?reason, "closed");
    }
}

type Cursors = BTreeMap<String, u64>;

/// A request being handled; see `Live::run`.
type Request<'a> = Pin<Box<dyn Future<Output = Result<(), CloseReason>> + Send + 'a>>;

/// Waits for a valid `hello`.
async fn hello<E: Engine, R>(
    gw: &Gateway<E>,
    stream: &mut R,
    info: &ConnInfo,
) -> Result<(Principal, Cursors), (CloseReason, &'static str)>
where
    R: Stream<Item = Result<Message, WsError>> + Unpin,
{
    let first = tokio::time::timeout(gw.cfg.hello_timeout, next_data(stream, info.encoding))
        .await
        .map_err(|_| (CloseReason::Unauthorized, "no hello in time"))?;
    let data = match first {
        Next::Data(d) => d,
        Next::Closed => return Err((CloseReason::Normal, "closed")),
        Next::Bad(reason, text) => return Err((reason, text)),
    };
    metrics::counter!(m::FRAMES_IN, "type" => "hello").increment(1);
    let (token, cursors) = match ClientFrame::decode(info.encoding, &data) {
        Ok(ClientFrame::Hello { token, cursors }) => (token, cursors),
        Ok(_) | Err(DecodeError::Invalid { .. }) => {
            return Err((CloseReason::Unauthorized, "the first frame must be hello"))
        }
        Err(DecodeError::Malformed(_)) => return Err((CloseReason::Malformed, "malformed frame")),
    };
    let principal = gw.auth.verify(&token).map_err(|e| {
        tracing::debug!(error = %e, "token refused");
        (CloseReason::Unauthorized, "invalid or expired token")
    })?;
    let site = gw
        .site(&principal.site)
        .ok_or((CloseReason::Forbidden, "unknown site"))?;
    if !site.settings().origin_allowed(info.origin.as_deref()) {
        return Err((CloseReason::Forbidden, "origin not allowed"));
    }
    if principal.role == Role::Visitor && gw.is_banned(&principal.site, &principal.id).await {
        return Err((CloseReason::Forbidden, "banned"));
    }
    if cursors.len() > 100 {
        return Err((CloseReason::Malformed, "too many cursors"));
    }
    Ok((principal, cursors))
}

enum Next {
    Data(bytes::Bytes),
    Closed,
    Bad(CloseReason, &'static str),
}

/// The next data frame of the connection's encoding, skipping control frames.
async fn next_data<R>(stream: &mut R, enc: Encoding) -> Next
where
    R: Stream<Item = Result<Message, WsError>> + Unpin,
{
    loop {
        match stream.next().await {
            None => return Next::Closed,
            Some(Err(WsError::Capacity(_))) => {
                return Next::Bad(CloseReason::Malformed, "frame too large")
            }
            Some(Err(_)) => return Next::Closed,
            Some(Ok(msg)) => {
                if let Some(n) = classify(msg, enc) {
                    return n;
                }
            }
        }
    }
}

fn classify(msg: Message, enc: Encoding) -> Option<Next> {
    match (msg, enc) {
        (Message::Text(t), Encoding::Json) => Some(Next::Data(t.into())),
        (Message::Binary(b), Encoding::MsgPack) => Some(Next::Data(b)),
        (Message::Text(_), Encoding::MsgPack) | (Message::Binary(_), Encoding::Json) => {
            Some(Next::Bad(
                CloseReason::Malformed,
                "frame type does not match the subprotocol",
            ))
        }
        (Message::Close(_), _) => Some(Next::Closed),
        _ => None,
    }
}

#[allow(clippy::too_many_arguments)]
async fn session<E, W, R>(
    gw: &Arc<Gateway<E>>,
    conn: &Arc<ConnShared>,
    rx: Outbox,
    sink: &mut W,
    stream: &mut R,
    p: &Principal,
    cursors: Cursors,
    info: &ConnInfo,
    counted: &mut Option<crate::core::NodeId>,
) -> Option<CloseReason>
where
    E: Engine,
    W: Sink<Message, Error = WsError> + Unpin,
    R: Stream<Item = Result<Message, WsError>> + Unpin,
{
    // Subscribe first, read the log second: a message stored in between arrives twice at
    // worst (clients drop duplicates by seq), never not at all.
    gw.hub.register(conn.clone());
    gw.hub
        .subscribe(conn.id, user_channel(&p.site, p.role, &p.id));
    if p.role.is_staff() {
        gw.hub.subscribe(conn.id, Channel::Staff(p.site.clone()));
    }
    let opening = match Box::pin(opening(gw, conn, p, cursors, counted)).await {
        Ok(frames) => frames,
        Err(e) => {
            tracing::warn!(error = ?e, "welcome failed");
            let (code, message) = e.client_error();
            let _ = sink
                .send(encode(
                    conn.encoding,
                    &ServerFrame::error(None, code, message),
                ))
                .await;
            return Some(CloseReason::TryAgainLater);
        }
    };
    for f in &opening {
        if sink.feed(encode(conn.encoding, f)).await.is_err() {
            return None;
        }
    }
    if sink.flush().await.is_err() {
        return None;
    }
    metrics::counter!(m::FRAMES_OUT).increment(opening.len() as u64);
    drop(opening);

    let limiter = rate_limiter(gw.cfg.rate_per_sec, gw.cfg.rate_burst);
    let mut strikes = 0u32;
    // The request being handled. Requests are handled one at a time, in arrival order (the
    // next frame is read only after), but the writer goes on while one waits on the engine.
    let mut inflight: Option<Request<'_>> = None;
    // The batch being written, which holds the outbound queue until it is done. The reader
    // goes on while a write waits on a full socket: a client that is slow to read is still
    // heard (its pongs count, its requests are handled) until its budget runs out (4008).
    let mut idle = Some((rx, sink));
    let writing = futures_util::future::Fuse::terminated();
    tokio::pin!(writing);
    loop {
        tokio::select! {
            biased;
            // First, so that a close interrupts a write stuck on a slow socket.
            reason = conn.closed() => return Some(reason),
            done = async { inflight.as_mut().expect("guarded").await }, if inflight.is_some() => {
                inflight = None;
                if let Err(reason) = done {
                    return Some(reason);
                }
            }
            (queue, sink, written) = &mut writing, if !writing.is_terminated() => {
                let written: Result<(), ()> = written;
                if written.is_err() {
                    return None;
                }
                idle = Some((queue, sink));
            }
            out = async { idle.as_mut().expect("guarded").0.recv().await }, if idle.is_some() => {
                let out = out?;
                let (queue, sink) = idle.take().expect("guarded");
                writing.set(futures_util::FutureExt::fuse(write_batch(conn, queue, sink, out)));
            }
            next = next_data(stream, conn.encoding), if inflight.is_none() => {
                let data = match next {
                    Next::Data(d) => d,
                    Next::Closed => return None,
                    Next::Bad(reason, text) => {
                        tracing::debug!(text, "bad frame");
                        return Some(reason);
                    }
                };
                conn.touch(now_ms());
                if limiter.check().is_err() {
                    metrics::counter!(m::FRAMES_IN, "type" => "rate_limited").increment(1);
                    metrics::counter!(m::RATE_LIMITED).increment(1);
                    strikes += 1;
                    if strikes >= RATE_STRIKES {
                        return Some(CloseReason::RateLimited);
                    }
                    let rid = ClientFrame::decode(conn.encoding, &data).ok().and_then(|f| f.rid().cloned());
                    conn.push(encode(conn.encoding, &ServerFrame::error(rid, ErrorCode::RateLimited, "slow down")));
                    continue;
                }
                strikes = 0;
                match ClientFrame::decode(conn.encoding, &data) {
                    Ok(frame) => inflight = Some(Box::pin(handle(gw, conn, p, info, frame))),
                    Err(DecodeError::Malformed(detail)) => {
                        metrics::counter!(m::FRAMES_IN, "type" => "malformed").increment(1);
                        tracing::debug!(%detail, "malformed frame");
                        return Some(CloseReason::Malformed);
                    }
                    Err(DecodeError::Invalid { rid, message }) => {
                        metrics::counter!(m::FRAMES_IN, "type" => "invalid").increment(1);
                        metrics::counter!(m::ERRORS, "code" => "bad_request").increment(1);
                        conn.push(encode(conn.encoding, &ServerFrame::Error { rid, code: ErrorCode::BadRequest, message }));
                    }
                }
            }
        }
    }
}

fn rate_limiter(rate: NonZeroU32, burst: NonZeroU32) -> DefaultDirectRateLimiter {
    RateLimiter::direct(Quota::per_second(rate).allow_burst(burst))
}

/// Writes one queued message and whatever else is queued (up to a batch), then flushes once,
/// and hands the queue and the sink back.
async fn write_batch<'s, W>(
    conn: &ConnShared,
    mut rx: Outbox,
    sink: &'s mut W,
    first: Out,
) -> (Outbox, &'s mut W, Result<(), ()>)
where
    W: Sink<Message, Error = WsError> + Unpin,
{
    let mut next = Some(first);
    let mut n = 0;
    let mut bytes = 0;
    while let Some(msg) = next.take() {
        bytes += msg_len(&msg);
        if sink.feed(msg).await.is_err() {
            return (rx, sink, Err(()));
        }
        n += 1;
        if n < WRITE_BATCH {
            next = rx.try_recv();
        }
    }
    if sink.flush().await.is_err() {
        return (rx, sink, Err(()));
    }
    conn.written(bytes);
    metrics::counter!(m::FRAMES_OUT).increment(n as u64);
    (rx, sink, Ok(()))
}

fn msg_len(m: &Message) -> usize {
    match m {
        Message::Text(t) => t.len(),
        Message::Binary(b) => b.len(),
        _ => 0,
    }
}

fn encode(enc: Encoding, f: &ServerFrame) -> Message {
    match enc {
        Encoding::Json => Message::Text(f.to_json_string().into()),
        Encoding::MsgPack => Message::Binary(f.encode(Encoding::MsgPack)),
    }
}

/// `welcome`, the missed messages of recovered conversations, and the staff lists.
async fn opening<E: Engine>(
    gw: &Gateway<E>,
    conn: &ConnShared,
    p: &Principal,
    cursors: Cursors,
    counted: &mut Option<crate::core::NodeId>,
) -> Result<Vec<ServerFrame>, ServiceError> {
    // The user's own channel is live before the connection counts: whatever is decided for
    // them from then on (an assignment, an offer) reaches this socket.
    let mut live = vec![user_channel(&p.site, p.role, &p.id)];
    if p.role.is_staff() {
        live.push(Channel::Staff(p.site.clone()));
    }
    gw.engine.wait_subscribed(&live).await?;
    *counted = gw.connected(p).await?;
    let (mut live, offers) = gw.own_conversations(p).await?;
    let mut ids: Vec<ConvId> = offers.iter().map(|(id, _)| id.clone()).collect();
    // Conversations named in cursors that the principal may read are recovered too (a
    // visitor's just-closed conversation, say); visitors and supervisors also follow them
    // live, an operator only what they hold.
    for c in cursors.keys() {
        let id = ConvId(c.clone());
        if live.contains(&id) || ids.contains(&id) {
            continue;
        }
        if gw.authorize(p, c, Access::Read).await.is_ok() {
            if p.role == Role::Operator {
                ids.push(id);
            } else {
                live.push(id);
            }
        }
    }
    let conv_channels: Vec<Channel> = live.iter().map(|id| Channel::Conv(id.clone())).collect();
    ids.splice(0..0, live);
    for ch in &conv_channels {
        gw.hub.subscribe(conn.id, ch.clone());
    }
    gw.engine.wait_subscribed(&conv_channels).await?;
    let drafts = gw.drafts_of(p).await?;
    let mut conversations: Vec<Conversation> = Vec::with_capacity(ids.len());
    let mut replays = Vec::new();
    for id in &ids {
        let Some(meta) = gw.engine.meta(id).await? else {
            continue;
        };
        let mut c = gw.snapshot_for(p, &meta, &drafts).await?;
        let mut known = c.last_seq;
        if let Some(&after) = cursors.get(id.as_str()) {
            match gw.replay(id, after).await? {
                Replay::Recovered(msgs) => {
                    c.recovered = Some(true);
                    known = known.max(msgs.last().map_or(0, |m| m.seq));
                    replays.extend(msgs.into_iter().map(ServerFrame::Msg));
                }
                Replay::Lost => c.recovered = Some(false),
            }
        }
        // A replay after a bus outage starts from here, not from the first message.
        gw.hub.note_seq(id, known);
        conversations.push(c);
    }
    // Pending offers again as `offer` frames after `welcome`: it lists them, but only an
    // offer carries its deadline, which a console needs to count down and drop it on time.
    let offered: Vec<ServerFrame> = offers
        .iter()
        .filter_map(|(id, expires_at)| {
            let c = conversations.iter().find(|c| c.id == id.as_str())?;
            Some(ServerFrame::Offer {
                conv: Box::new(c.clone()),
                expires_at: *expires_at,
            })
        })
        .collect();
    let mut frames = vec![ServerFrame::Welcome {
        conn: gw.conn_name(conn.id),
        node: gw.node.to_string(),
        me: Me {
            role: p.role,
            id: p.id.clone(),
            site: p.site.to_string(),
            name: p.name.clone(),
        },
        conversations,
        settings: gw.client_settings(p),
    }];
    frames.extend(replays);
    frames.extend(offered);
    if p.role.is_staff() {
        frames.extend(gw.staff_snapshot(p).await?);
    }
    Ok(frames)
}

/// Handles one frame. `Err` closes the connection.
async fn handle<E: Engine>(
    gw: &Gateway<E>,
    conn: &Arc<ConnShared>,
    p: &Principal,
    info: &ConnInfo,
    frame: ClientFrame,
) -> Result<(), CloseReason> {
    let kind = frame_kind(&frame);
    metrics::counter!(m::FRAMES_IN, "type" => kind).increment(1);
    let rid = frame.rid().cloned();
    let result: Result<Option<OkBody>, ServiceError> = match frame {
        ClientFrame::Hello { .. } => return Err(CloseReason::Malformed),
        ClientFrame::Ping {} => {
            conn.push(encode(conn.encoding, &ServerFrame::Pong {}));
            Ok(None)
        }
        ClientFrame::Pong {} => Ok(None),
        ClientFrame::Send {
            conv, cid, text, ..
        } => {
            let sent = gw.send(p, &conv, cid, text).await;
            if let Err(ServiceError::Engine(_)) = &sent {
                // The message cannot reach anyone now: the visitor is told in words too.
                if let Some(notice) = gw.unavailable_notice(p, &conv) {
                    conn.push(encode(conn.encoding, &notice));
                }
            }
            sent.map(|m| {
                Some(OkBody::Sent {
                    conv: m.conv,
                    cid: m.cid.unwrap_or_default(),
                    seq: m.seq,
                    ts: m.ts,
                })
            })
        }
        ClientFrame::History {
            conv,
            before,
            limit,
            ..
        } => gw.history(p, &conv, before, limit).await.map(|h| {
            Some(OkBody::History {
                conv,
                messages: h.messages,
                complete: h.complete,
            })
        }),
        ClientFrame::Typing { conv, on, preview } => gw
            .typing(p, gw.conn_ref(conn.id), &conv, on, preview)
            .await
            .map(|_| None),
        ClientFrame::Read { conv, seq } => gw
            .read(p, gw.conn_ref(conn.id), &conv, seq)
            .await
            .map(|_| None),
        ClientFrame::Start {
            queue,
            prechat,
            params,
            page,
            ..
        } => {
            let page = page.unwrap_or_default();
            let params = params.unwrap_or_default();
            if let Err(e) = check_params(&params) {
                Err(e)
            } else {
                let [name, email, phone] = contact(prechat.unwrap_or_default());
                let profile = VisitorProfile {
                    name,
                    email,
                    phone,
                    params,
                    preview: Some(preview_from(
                        info.user_agent.as_deref(),
                        info.language.as_deref(),
                        info.country.clone(),
                        &clip(page.url.unwrap_or_default(), 2000),
                        &clip(page.referrer.unwrap_or_default(), 2000),
                    )),
                };
                gw.start(p, queue, profile, None).await.map(|c| {
                    gw.hub.attach(conn, ConvId(c.id.clone()), c.last_seq);
                    Some(OkBody::Conv { conv: Box::new(c) })
                })
            }
        }
        ClientFrame::Identify {
            conv,
            prechat,
            params,
            ..
        } => {
            let params = params.unwrap_or_default();
            match check_params(&params) {
                Err(e) => Err(e),
                Ok(()) => gw
                    .identify(
                        p,
                        conv.as_deref(),
                        contact(prechat.unwrap_or_default()),
                        params,
                    )
                    .await
                    .map(|c| Some(OkBody::Conv { conv: Box::new(c) })),
            }
        }
        ClientFrame::Close {
            conv,
            outcome,
            tags,
            ..
        } => gw
            .close(p, &conv, outcome, tags.unwrap_or_default())
            .await
            .map(|c| c.map(|c| OkBody::Conv { conv: Box::new(c) })),
        ClientFrame::Status { status, .. } => gw
            .status(p, status)
            .await
            .map(|s| Some(OkBody::Status { status: s })),
        ClientFrame::Accept { conv, .. } => gw
            .accept(p, &conv)
            .await
            .map(|c| Some(OkBody::Conv { conv: Box::new(c) })),
        ClientFrame::Decline { conv, .. } => gw
            .decline(p, &conv)
            .await
            .map(|c| Some(OkBody::Conv { conv: Box::new(c) })),
        ClientFrame::Transfer { conv, to, note, .. } => gw
            .transfer(p, &conv, to, note)
            .await
            .map(|c| Some(OkBody::Conv { conv: Box::new(c) })),
        ClientFrame::Tag {
            conv, add, remove, ..
        } => gw
            .tag(p, &conv, add, remove)
            .await
            .map(|c| Some(OkBody::Conv { conv: Box::new(c) })),
        ClientFrame::Draft { conv, text } => gw
            .draft(p, gw.conn_ref(conn.id), &conv, text)
            .await
            .map(|_| None),
        ClientFrame::Assign { conv, operator, .. } => gw
            .assign(p, &conv, operator)
            .await
            .map(|c| Some(OkBody::Conv { conv: Box::new(c) })),
        ClientFrame::Ban {
            conv,
            duration,
            reason,
            ..
        } => gw
            .ban(p, &conv, duration, reason.map(|r| clip(r, 500)))
            .await
            .map(|(visitor, until)| {
                Some(OkBody::Ban {
                    visitor: visitor.0,
                    until,
                })
            }),
        ClientFrame::Unban { visitor, .. } => gw.unban(p, &visitor).await.map(|_| None),
        ClientFrame::Watch { conv, on, .. } => {
            if p.role != Role::Supervisor {
                Err(ServiceError::Rejected(crate::core::Reject {
                    code: ErrorCode::Forbidden,
                    message: "supervisors only",
                }))
            } else {
                match gw.authorize(p, &conv, Access::Read).await {
                    Ok(meta) => match gw.snapshot_for(p, &meta, &BTreeMap::new()).await {
                        Ok(c) => {
                            let id = ConvId(conv.clone());
                            if on {
                                gw.hub.attach(conn, id, c.last_seq);
                            } else {
                                gw.hub.unsubscribe(conn.id, &Channel::Conv(id));
                            }
                            Ok(Some(OkBody::Conv { conv: Box::new(c) }))
                        }
                        Err(e) => Err(e),
                    },
                    Err(e) => Err(e),
                }
            }
        }
    };
    reply(conn, rid, result);
    Ok(())
}

fn reply(conn: &ConnShared, rid: Option<Rid>, result: Result<Option<OkBody>, ServiceError>) {
    let frame = match result {
        Ok(body) => {
            // Fire-and-forget frames (typing, read, draft) without rid need no answer.
            if rid.is_none() && body.is_none() {
                return;
            }
            ServerFrame::Ok {
                rid,
                body: body.unwrap_or(OkBody::Empty {}),
            }
        }
        Err(e) => {
            if let ServiceError::Engine(err) = &e {
                metrics::counter!(m::ENGINE_ERRORS).increment(1);
                tracing::warn!(error = %err, "engine error");
            }
            let (code, message) = e.client_error();
            metrics::counter!(m::ERRORS, "code" => code_label(code)).increment(1);
            ServerFrame::error(rid, code, message)
        }
    };
    conn.push(encode(conn.encoding, &frame));
}

fn code_label(c: ErrorCode) -> &'static str {
    match c {
        ErrorCode::BadRequest => "bad_request",
        ErrorCode::Unauthorized => "unauthorized",
        ErrorCode::Forbidden => "forbidden",
        ErrorCode::NotFound => "not_found",
        ErrorCode::Taken => "taken",
        ErrorCode::Capacity => "capacity",
        ErrorCode::RateLimited => "rate_limited",
        ErrorCode::TooLarge => "too_large",
        ErrorCode::Unavailable => "unavailable",
        ErrorCode::Banned => "banned",
        ErrorCode::Conflict => "conflict",
    }
}

fn frame_kind(f: &ClientFrame) -> &'static str {
    match f {
        ClientFrame::Hello { .. } => "hello",
        ClientFrame::Ping {} => "ping",
        ClientFrame::Pong {} => "pong",
        ClientFrame::Send { .. } => "send",
        ClientFrame::History { .. } => "history",
        ClientFrame::Typing { .. } => "typing",
        ClientFrame::Read { .. } => "read",
        ClientFrame::Start { .. } => "start",
        ClientFrame::Identify { .. } => "identify",
        ClientFrame::Close { .. } => "close",
        ClientFrame::Status { .. } => "status",
        ClientFrame::Accept { .. } => "accept",
        ClientFrame::Decline { .. } => "decline",
        ClientFrame::Transfer { .. } => "transfer",
        ClientFrame::Tag { .. } => "tag",
        ClientFrame::Draft { .. } => "draft",
        ClientFrame::Assign { .. } => "assign",
        ClientFrame::Watch { .. } => "watch",
        ClientFrame::Ban { .. } => "ban",
        ClientFrame::Unban { .. } => "unban",
    }
}

/// A visitor's name, email and phone as given, clipped; empty ones are absent.
fn contact(p: crate::protocol::Prechat) -> [Option<String>; 3] {
    let field = |v: Option<String>, max| v.map(|v| clip(v, max)).filter(|v| !v.is_empty());
    [field(p.name, 100), field(p.email, 200), field(p.phone, 50)]
}

/// The limits of a visitor's custom parameters.
fn check_params(params: &BTreeMap<String, String>) -> Result<(), ServiceError> {
    if params.len() > crate::core::MAX_PARAMS
        || params.iter().any(|(k, v)| k.len() > 64 || v.len() > 1024)
    {
        return Err(ServiceError::Rejected(crate::core::Reject {
            code: ErrorCode::TooLarge,
            message: "too many or too long params",
        }));
    }
    Ok(())
}

fn clip(s: String, max: usize) -> String {
    if s.len() <= max {
        return s;
    }
    let mut cut = max;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    s[..cut].to_owned()
}

/// Sends a close frame, giving up after a moment on a socket that does not take it.
async fn close<W, R>(sink: &mut W, stream: &mut R, reason: CloseReason, text: &str)
where
    W: Sink<Message, Error = WsError> + Unpin,
    R: Stream<Item = Result<Message, WsError>> + Unpin,
{
    let frame = CloseFrame {
        code: CloseCode::from(reason.code()),
        reason: text.to_owned().into(),
    };
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
        if sink.send(Message::Close(Some(frame))).await.is_err() {
            return;
        }
        // The closing handshake: read (and drop) what the client still sends until its own
        // close. Closing a socket with unread data makes the kernel reset the connection, and
        // a reset can destroy the close frame before the client reads it.
        while let Some(Ok(m)) = stream.next().await {
            if m.is_close() {
                break;
            }
        }
        let _ = sink.close().await;
    })
    .await;
}

/// How long a close frame may take to leave.
const CLOSE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);
