//! One WebSocket connection: `hello`, `welcome` with replay, then frames in and out until
//! either side closes.
//!
//! The loop is generic over any `Sink`/`Stream` of tungstenite messages, so tests can drive it
//! with channels; production hands it a tokio-tungstenite stream. Requests are handled one at
//! a time, in arrival order, each in a boxed future: an idle connection's task holds only the
//! loop's small state, not the largest request's.

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
use crate::core::{OperatorId, QueueId, VisitorId, VisitorProfile};
use crate::hub::{Attention, ConnShared, Out, Outbox};
use crate::metrics as m;
use crate::protocol::Preview;
use crate::protocol::{
    ClientFrame, CloseReason, DecodeError, Encoding, ErrorCode, OkBody, Rid, ServerFrame,
};
use crate::service::{conv_id, preview_from, Engine, Gateway, ServiceError};

/// What the HTTP upgrade learned about the client.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub encoding: Encoding,
    pub ip: IpAddr,
    pub origin: Option<String>,
    pub user_agent: Option<String>,
    pub language: Option<String>,
    pub country: Option<String>,
    /// The widget's device id, from `hello`.
    pub device: Option<String>,
}

/// Consecutive rate-limited frames after which the connection is closed with 4029.
const RATE_STRIKES: u32 = 20;
/// Messages written per flush.
const WRITE_BATCH: usize = 64;

/// Runs a connection to its end.
///
/// The `hello` phase is boxed here, before the returned future exists, and is gone once the
/// client is known: the future captures only that box, where an `async fn` would keep the
/// socket and the client's details among its arguments for the connection's whole life. The
/// session that follows is boxed at its own size.
pub fn run<E, S>(gw: Arc<Gateway<E>>, ws: S, info: ConnInfo) -> impl Future<Output = ()>
where
    E: Engine,
    S: Stream<Item = Result<Message, WsError>> + Sink<Message, Error = WsError> + Unpin + Send,
{
    let opening = Box::pin(open(gw, ws, info));
    async move {
        let Some((live, sink, stream, cursors, span)) = opening.await else {
            return;
        };
        Box::pin(live.run(sink, stream, cursors))
            .instrument(span)
            .await
    }
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
async fn open<E, S>(gw: Arc<Gateway<E>>, ws: S, mut info: ConnInfo) -> Option<Opened<E, S>>
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
    let (principal, cursors) = match hello(&gw, &mut stream, &mut info).await {
        Ok(h) => h,
        Err((reason, text)) => {
            close(&mut sink, &mut stream, reason, text).await;
            return None;
        }
    };
    // The site's own cap on this node's connections (a tenant cannot take the node's).
    let Some(slot) = gw.site_slot(&principal.site) else {
        close(
            &mut sink,
            &mut stream,
            CloseReason::RateLimited,
            "the site's connection limit",
        )
        .await;
        return None;
    };
    let id = gw.next_conn_id();
    let span = tracing::info_span!(
        "conn",
        node = %gw.node(),
        conn = id.0,
        site = %principal.site,
        role = principal.role().as_str(),
    );
    let live = Live {
        gw,
        id,
        principal,
        info,
        _slot: slot,
    };
    Some((live, sink, stream, cursors, span))
}

/// An authenticated connection, from `welcome` to its close.
struct Live<E: Engine> {
    gw: Arc<Gateway<E>>,
    id: crate::core::ConnId,
    principal: Principal,
    info: ConnInfo,
    /// Counts the connection against its site's cap while it lives.
    _slot: crate::service::SiteSlot,
}

impl<E: Engine> Live<E> {
    /// The connection's life after `hello`. A plain function around one `async move` block,
    /// not an `async fn`: the block captures each value once, where an `async fn` would keep
    /// its arguments twice (as they came and as the bindings it moves them into), for as long
    /// as the connection lives (~400 bytes of every idle socket).
    #[allow(clippy::manual_async_fn)]
    fn run<W, R>(self, mut sink: W, mut stream: R, cursors: Cursors) -> impl Future<Output = ()>
    where
        W: Sink<Message, Error = WsError> + Unpin,
        R: Stream<Item = Result<Message, WsError>> + Unpin,
    {
        async move {
            // Moved whole into the block: a capture of only the fields used would drop the
            // site's slot (`_slot`) when `run` returns, before the connection lives.
            let this = self;
            let (gw, principal, info) = (&this.gw, &this.principal, &this.info);
            let (conn, rx) = gw.open_connection(this.id, principal, info.encoding);
            let role = principal.role().as_str();
            metrics::counter!(m::CONNS_OPENED, "role" => role).increment(1);
            metrics::gauge!(m::CONNS_ACTIVE, "role" => role).increment(1.0);
            let (reason, inflight) = session(
                gw,
                &conn,
                rx,
                &mut sink,
                &mut stream,
                principal,
                cursors,
                info,
            )
            .await;
            // A request in flight when the connection ends is finished, not dropped: a
            // transition it committed has its effects carried out, and where the connection
            // counts in the site's presence (a start, a recount) is recorded, so that its
            // disconnect takes it away. Every engine call has a deadline, so this ends.
            // (Awaited here rather than in `session`, whose state an idle connection carries.)
            if let Some(request) = inflight {
                let _ = request.await;
            }
            gw.close_connection(&conn);
            metrics::gauge!(m::CONNS_ACTIVE, "role" => role).decrement(1.0);
            metrics::counter!(m::CONNS_CLOSED, "role" => role, "reason" => reason.map(|r| r.label()).unwrap_or("client")).increment(1);
            // The client hears first; the presence change may wait on the site's other work.
            if let Some(r) = reason {
                Box::pin(close(&mut sink, &mut stream, r, r.label())).await;
            }
            // Only a connection that was counted is taken out of the count (boxed: a
            // transition's future is large, and an idle connection's task should not carry it
            // inline).
            if let Some(counted) = conn.counted() {
                Box::pin(gw.disconnected(principal, counted)).await;
            }
            tracing::debug!(?reason, "closed");
            // The site's connection count (`this._slot`) is given back as `this` drops, after
            // the disconnect is recorded.
        }
    }
}

use crate::service::Cursors;

/// A request being handled; see `Live::run`.
type Request<'a> = Pin<Box<dyn Future<Output = Result<(), CloseReason>> + Send + 'a>>;

/// Waits for a valid `hello`.
async fn hello<E: Engine, R>(
    gw: &Gateway<E>,
    stream: &mut R,
    info: &mut ConnInfo,
) -> Result<(Principal, Cursors), (CloseReason, &'static str)>
where
    R: Stream<Item = Result<Message, WsError>> + Unpin,
{
    let first = tokio::time::timeout(gw.config().hello_timeout, next_data(stream, info.encoding))
        .await
        .map_err(|_| (CloseReason::Unauthorized, "no hello in time"))?;
    let data = match first {
        Next::Data(d) => d,
        Next::Closed => return Err((CloseReason::Normal, "closed")),
        Next::Bad(reason, text) => return Err((reason, text)),
    };
    metrics::counter!(m::FRAMES_IN, "type" => "hello").increment(1);
    let (token, cursors) = match ClientFrame::decode(info.encoding, &data) {
        Ok(ClientFrame::Hello {
            token,
            cursors,
            lang,
            device,
        }) => {
            match device {
                Some(d) if !crate::protocol::device_id_ok(&d) => {
                    return Err((
                        CloseReason::Malformed,
                        "device: 8 to 64 letters, digits, '-' or '_'",
                    ))
                }
                d => info.device = d,
            }
            // The reader's language: what the page says, else what the browser asked for.
            if let Some(l) = lang.filter(|l| crate::i18n::primary(l).is_some()) {
                info.language = Some(l.chars().take(35).collect());
            }
            (token, cursors)
        }
        Ok(_) | Err(DecodeError::Invalid { .. }) => {
            return Err((CloseReason::Unauthorized, "the first frame must be hello"))
        }
        Err(DecodeError::Malformed(_)) => return Err((CloseReason::Malformed, "malformed frame")),
    };
    let principal = gw
        .authenticate(
            &token,
            info.origin.as_deref(),
            Some(info.ip),
            info.device.as_deref(),
            &cursors,
        )
        .await?;
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

/// Returns why the connection ended and the request that was in flight then, which the
/// caller finishes (see `Live::run`).
#[allow(clippy::too_many_arguments)]
async fn session<'a, E, W, R>(
    gw: &'a Arc<Gateway<E>>,
    conn: &'a Arc<ConnShared>,
    rx: Outbox,
    sink: &mut W,
    stream: &mut R,
    p: &'a Principal,
    cursors: Cursors,
    info: &'a ConnInfo,
) -> (Option<CloseReason>, Option<Request<'a>>)
where
    E: Engine,
    W: Sink<Message, Error = WsError> + Unpin,
    R: Stream<Item = Result<Message, WsError>> + Unpin,
{
    // The connection listens on its channels already (`open_connection`); the log is read
    // second: a message stored in between arrives twice at worst (clients drop duplicates by
    // seq), never not at all.
    let opening = match Box::pin(gw.welcome(conn, p, cursors, info.language.as_deref())).await {
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
            return (Some(CloseReason::TryAgainLater), None);
        }
    };
    for f in &opening {
        if sink.feed(encode(conn.encoding, f)).await.is_err() {
            return (None, None);
        }
    }
    if sink.flush().await.is_err() {
        return (None, None);
    }
    metrics::counter!(m::FRAMES_OUT).increment(opening.len() as u64);
    drop(opening);

    let limiter = rate_limiter(gw.config().rate_per_sec, gw.config().rate_burst);
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
    let outcome = loop {
        tokio::select! {
            biased;
            // First, so that a close interrupts a write stuck on a slow socket. A visitor
            // attached to a new conversation counts in its presence, between requests.
            attention = conn.attention(inflight.is_none()) => match attention {
                Attention::Close(reason) => break Some(reason),
                Attention::Recount => inflight = Some(Box::pin(recount(gw, conn, p))),
            },
            done = async { inflight.as_mut().expect("guarded").await }, if inflight.is_some() => {
                inflight = None;
                if let Err(reason) = done {
                    break Some(reason);
                }
            }
            (queue, sink, written) = &mut writing, if !writing.is_terminated() => {
                let written: Result<(), ()> = written;
                if written.is_err() {
                    break None;
                }
                idle = Some((queue, sink));
            }
            out = async { idle.as_mut().expect("guarded").0.recv().await }, if idle.is_some() => {
                let Some(out) = out else { break None };
                let (queue, sink) = idle.take().expect("guarded");
                writing.set(futures_util::FutureExt::fuse(write_batch(conn, queue, sink, out)));
            }
            next = next_data(stream, conn.encoding), if inflight.is_none() => {
                let data = match next {
                    Next::Data(d) => d,
                    Next::Closed => break None,
                    Next::Bad(reason, text) => {
                        tracing::debug!(text, "bad frame");
                        break Some(reason);
                    }
                };
                conn.touch(now_ms());
                if limiter.check().is_err() {
                    metrics::counter!(m::FRAMES_IN, "type" => "rate_limited").increment(1);
                    metrics::counter!(m::RATE_LIMITED).increment(1);
                    strikes += 1;
                    if strikes >= RATE_STRIKES {
                        break Some(CloseReason::RateLimited);
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
                        break Some(CloseReason::Malformed);
                    }
                    Err(DecodeError::Invalid { rid, message }) => {
                        metrics::counter!(m::FRAMES_IN, "type" => "invalid").increment(1);
                        metrics::counter!(m::ERRORS, "code" => "bad_request").increment(1);
                        conn.push(encode(conn.encoding, &ServerFrame::Error { rid, code: ErrorCode::BadRequest, message }));
                    }
                }
            }
        }
    };
    (outcome, inflight)
}

/// Counts a visitor's connection in the presence of the conversation it was attached to; a
/// connection that cannot be counted closes with 1013 and is counted when it comes back.
async fn recount<E: Engine>(
    gw: &Gateway<E>,
    conn: &ConnShared,
    p: &Principal,
) -> Result<(), CloseReason> {
    gw.count_visitor(p, conn).await.map_err(|e| {
        tracing::warn!(error = ?e, "visitor not counted in their conversation's presence");
        CloseReason::TryAgainLater
    })
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
    let result = match frame {
        ClientFrame::Hello { .. } => return Err(CloseReason::Malformed),
        ClientFrame::Ping {} => {
            conn.push(encode(conn.encoding, &ServerFrame::Pong {}));
            Ok(None)
        }
        ClientFrame::Pong {} => Ok(None),
        other => request(gw, conn, p, info, other).await,
    };
    reply(conn, rid, result);
    Ok(())
}

/// A request's answer: `ok` with a body, nothing (fire-and-forget frames), or an error.
type Answer = Result<Option<OkBody>, ServiceError>;

/// Handles a request frame: its `conv` (if any) is checked for shape first, then the service
/// authorises and carries it out.
async fn request<E: Engine>(
    gw: &Gateway<E>,
    conn: &Arc<ConnShared>,
    p: &Principal,
    info: &ConnInfo,
    frame: ClientFrame,
) -> Answer {
    let conv_body = |c| Some(OkBody::Conv { conv: Box::new(c) });
    match frame {
        ClientFrame::Send {
            conv, cid, text, ..
        } => {
            let sent = gw
                .send(p, Some(conn), &conv_id(conv.clone())?, cid, text)
                .await;
            if let Err(ServiceError::Engine(_)) = &sent {
                // The message cannot reach anyone now: the visitor is told in words too.
                if let Some(notice) = gw.unavailable_notice(p, info.language.as_deref(), &conv) {
                    conn.push(encode(conn.encoding, &notice));
                }
            }
            let m = sent?;
            Ok(Some(OkBody::Sent {
                conv: m.conv,
                cid: m.cid.unwrap_or_default(),
                seq: m.seq,
                ts: m.ts,
            }))
        }
        ClientFrame::History {
            conv,
            before,
            limit,
            ..
        } => {
            let id = conv_id(conv)?;
            let (h, read) = gw.history_with_marks(p, &id, before, limit).await?;
            Ok(Some(OkBody::History {
                conv: id.0,
                messages: h.messages,
                complete: h.complete,
                read: Some(read),
            }))
        }
        ClientFrame::Typing { conv, on, preview } => {
            let from = gw.conn_ref(conn.id);
            gw.typing(p, from, &conv_id(conv)?, on, preview).await?;
            Ok(None)
        }
        ClientFrame::Read { conv, seq } => {
            gw.read(p, gw.conn_ref(conn.id), &conv_id(conv)?, seq)
                .await?;
            Ok(None)
        }
        ClientFrame::Start {
            queue,
            prechat,
            params,
            page,
            offline,
            ..
        } => {
            let page = page.unwrap_or_default();
            let params = params.unwrap_or_default();
            let [name, email, phone] = contact(prechat.unwrap_or_default());
            let profile = VisitorProfile {
                name,
                email,
                phone,
                params,
                preview: Some(Preview {
                    ip: Some(info.ip.to_string()),
                    device_id: info.device.clone(),
                    ..preview_from(
                        info.user_agent.as_deref(),
                        info.language.as_deref(),
                        info.country.clone(),
                        &clip(page.url.unwrap_or_default(), crate::core::MAX_URL),
                        &clip(page.referrer.unwrap_or_default(), crate::core::MAX_URL),
                    )
                }),
            };
            let c = gw
                .start(p, Some(conn), queue.map(QueueId), profile, None, offline)
                .await?;
            gw.attach(conn, crate::core::ConvId(c.id.clone()), c.last_seq);
            Ok(conv_body(c))
        }
        ClientFrame::Identify {
            conv,
            prechat,
            params,
            ..
        } => {
            let params = params.unwrap_or_default();
            let conv = conv.map(conv_id).transpose()?;
            if p.is_staff() {
                // The staff change a conversation's parameters (not the visitor's details).
                let (Some(conv), None) = (conv, prechat) else {
                    return Err(ServiceError::refuse(
                        ErrorCode::BadRequest,
                        "staff send identify with conv and params only",
                    ));
                };
                return Ok(conv_body(gw.edit_params(p, &conv, params).await?));
            }
            let details = contact(prechat.unwrap_or_default());
            let c = gw.identify(p, conv.as_ref(), details, params).await?;
            Ok(conv_body(c))
        }
        ClientFrame::Close {
            conv,
            outcome,
            tags,
            ..
        } => {
            let id = conv_id(conv)?;
            let c = gw.close(p, &id, outcome, tags.unwrap_or_default()).await?;
            Ok(c.and_then(conv_body))
        }
        ClientFrame::Status { status, .. } => {
            let status = gw.status(p, status).await?;
            Ok(Some(OkBody::Status { status }))
        }
        ClientFrame::Accept { conv, .. } => Ok(conv_body(gw.accept(p, &conv_id(conv)?).await?)),
        ClientFrame::Decline { conv, .. } => Ok(conv_body(gw.decline(p, &conv_id(conv)?).await?)),
        ClientFrame::Transfer { conv, to, note, .. } => {
            Ok(conv_body(gw.transfer(p, &conv_id(conv)?, to, note).await?))
        }
        ClientFrame::Tag {
            conv, add, remove, ..
        } => Ok(conv_body(gw.tag(p, &conv_id(conv)?, add, remove).await?)),
        ClientFrame::Draft { conv, text } => {
            gw.draft(p, gw.conn_ref(conn.id), &conv_id(conv)?, text)
                .await?;
            Ok(None)
        }
        ClientFrame::Assign { conv, operator, .. } => {
            let c = gw.assign(p, &conv_id(conv)?, OperatorId(operator)).await?;
            Ok(conv_body(c))
        }
        ClientFrame::Ban {
            conv,
            duration,
            reason,
            ..
        } => {
            let reason = reason.map(|r| clip(r, 500));
            let (visitor, until) = gw.ban(p, &conv_id(conv)?, duration, reason).await?;
            Ok(Some(OkBody::Ban {
                visitor: visitor.0,
                until,
            }))
        }
        ClientFrame::Unban { visitor, .. } => {
            gw.unban(p, &VisitorId(visitor)).await?;
            Ok(None)
        }
        ClientFrame::MailTranscript { conv, email, .. } => {
            let lang = info.language.as_deref().and_then(crate::i18n::Lang::parse);
            gw.request_transcript_mail(p, &conv_id(conv)?, &email, lang)
                .await?;
            Ok(None)
        }
        ClientFrame::Action { conv, action, .. } => {
            let event = gw.run_action(p, &conv_id(conv)?, &action).await?;
            Ok(Some(OkBody::Event { event }))
        }
        ClientFrame::Active { .. } => {
            let (conversations, count) = gw.active(p).await?;
            Ok(Some(OkBody::Conversations {
                conversations,
                count: Some(count),
            }))
        }
        ClientFrame::Takeover { conv, .. } => {
            Ok(conv_body(gw.take_over(p, &conv_id(conv)?).await?))
        }
        ClientFrame::Get { conv, .. } => Ok(conv_body(gw.conversation(p, &conv_id(conv)?).await?)),
        ClientFrame::Watch { conv, on, .. } => {
            let c = gw.watch(p, conn, &conv_id(conv)?, on).await?;
            Ok(conv_body(c))
        }
        ClientFrame::Hello { .. } | ClientFrame::Ping {} | ClientFrame::Pong {} => Ok(None),
    }
}

fn reply(conn: &ConnShared, rid: Option<Rid>, result: Result<Option<OkBody>, ServiceError>) {
    let frame = match result {
        Ok(body) => {
            // Fire-and-forget frames (typing, read, draft) without rid need no answer.
            if rid.is_none() && body.is_none() {
                return;
            }
            ServerFrame::Ok {
                rid: rid.clone(),
                body: body.unwrap_or(OkBody::Empty {}),
            }
        }
        Err(e) => {
            if let ServiceError::Engine(err) = &e {
                err.count();
                tracing::warn!(error = %err, kind = err.kind(), "engine error");
            }
            let (code, message) = e.client_error();
            metrics::counter!(m::ERRORS, "code" => code_label(code)).increment(1);
            ServerFrame::error(rid.clone(), code, message)
        }
    };
    let ok = matches!(frame, ServerFrame::Ok { .. });
    if !conn.push(encode(conn.encoding, &frame)) && ok && !conn.is_closing() {
        // The answer is larger than the connection can be sent: the client hears why.
        metrics::counter!(m::ERRORS, "code" => "too_large").increment(1);
        let e = ServerFrame::error(rid, ErrorCode::TooLarge, "the answer is too large to send");
        conn.push(encode(conn.encoding, &e));
    }
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
        ClientFrame::MailTranscript { .. } => "mail_transcript",
        ClientFrame::Action { .. } => "action",
        ClientFrame::Get { .. } => "get",
        ClientFrame::Active { .. } => "active",
        ClientFrame::Takeover { .. } => "takeover",
    }
}

/// A visitor's name, email and phone as given, clipped; empty ones are absent.
fn contact(p: crate::protocol::Prechat) -> [Option<String>; 3] {
    use crate::core::{MAX_EMAIL, MAX_NAME, MAX_PHONE};
    let field = |v: Option<String>, max| v.map(|v| clip(v, max)).filter(|v| !v.is_empty());
    [
        field(p.name, MAX_NAME),
        field(p.email, MAX_EMAIL),
        field(p.phone, MAX_PHONE),
    ]
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
