//! An idle socket: authenticate, then only answer pings until the run finishes. Used by
//! `idle` (memory per socket) and `ramp` (connections per second). An idle socket that the
//! gateway closes is an error and is not reopened: the point is to see who stays up.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::{establish, note_end, OpenGuard, Phase, Shared};
use crate::client::Event;
use crate::proto::{ClientFrame, ServerFrame};

pub struct Plan {
    pub socket: usize,
    /// `visitor` or `operator`.
    pub role: &'static str,
    /// Leave this long after the welcome (churn); `None`: stay until the run finishes.
    pub stay: Option<Duration>,
    /// Start a conversation after the welcome, and close it before leaving.
    pub chat: bool,
}

/// Whether socket `i` is one of the `share` (0 to 1) that chat: spread evenly over the
/// sockets whatever their stride.
pub fn chats(i: usize, share: f64) -> bool {
    let spread = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 54; // 0..1024
    (spread as f64) < share * 1024.0
}

/// Waits for the answer to request `rid`: the conversation it names, or the error's code.
async fn answer(conn: &mut crate::client::WsConn, rid: u64) -> Result<Option<String>, String> {
    loop {
        match conn.recv().await {
            Event::Frame(ServerFrame::Ok(ok))
                if ok.rid.as_ref().and_then(|r| r.num()) == Some(rid) =>
            {
                return Ok(ok.conv.map(|c| match c {
                    crate::proto::ConvRef::Id(id) => id,
                    crate::proto::ConvRef::Full(c) => c.id,
                }))
            }
            Event::Frame(ServerFrame::Error(e))
                if e.rid.as_ref().and_then(|r| r.num()) == Some(rid) =>
            {
                return Err(e.code)
            }
            Event::Frame(ServerFrame::Ping) => conn
                .send(&ClientFrame::Pong)
                .await
                .map_err(|_| "closed".to_string())?,
            Event::Frame(_) => {}
            Event::Undecodable => return Err("decode".into()),
            Event::Closed(_) => return Err("closed".into()),
        }
    }
}

/// Runs one idle socket; `ready` learns the connect + welcome time (or the failure).
pub async fn run(ctx: Shared, plan: Plan, ready: impl FnOnce(Result<Duration, String>)) {
    let sub = format!("lt-{}-i{}", ctx.run_id, plan.socket);
    let token = match ctx
        .minter
        .mint(plan.role, &sub, &format!("Idle {}", plan.socket), None)
    {
        Ok(t) => t,
        Err(e) => {
            ctx.stats.error("token");
            return ready(Err(e.to_string()));
        }
    };
    let t0 = Instant::now();
    let (mut conn, _welcome) = match establish(&ctx, plan.socket, &token, BTreeMap::new()).await {
        Ok(ok) => ok,
        Err(kind) => return ready(Err(kind)),
    };
    let conv = if plan.chat {
        let started = match conn
            .send(&ClientFrame::Start {
                rid: 1,
                queue: None,
            })
            .await
        {
            Ok(()) => answer(&mut conn, 1).await,
            Err(_) => Err("closed".into()),
        };
        match started {
            Ok(Some(conv)) => Some(conv),
            Ok(None) | Err(_) => {
                ctx.stats.error("start");
                return ready(Err("start".into()));
            }
        }
    } else {
        None
    };
    ready(Ok(t0.elapsed()));
    let _open = OpenGuard::new(&ctx);
    let mut phase_rx = ctx.phase.clone();
    let leave = tokio::time::sleep(plan.stay.unwrap_or(Duration::MAX / 4));
    tokio::pin!(leave);
    loop {
        if *phase_rx.borrow_and_update() >= Phase::Finish {
            return conn.close().await;
        }
        tokio::select! {
            () = &mut leave, if plan.stay.is_some() => {
                if let Some(conv) = &conv {
                    let closed = match conn.send(&ClientFrame::Close { rid: 2, conv }).await {
                        Ok(()) => answer(&mut conn, 2).await.map(|_| ()),
                        Err(_) => Err("closed".into()),
                    };
                    if closed.is_err() {
                        ctx.stats.error("close");
                    }
                }
                return conn.close().await;
            }
            ev = conn.recv() => match ev {
                Event::Frame(ServerFrame::Ping) => {
                    if let Err(end) = conn.send(&ClientFrame::Pong).await {
                        return note_end(&ctx.stats, &end);
                    }
                }
                Event::Frame(_) => {}
                Event::Undecodable => ctx.stats.error("decode"),
                Event::Closed(end) => return note_end(&ctx.stats, &end),
            },
            r = phase_rx.changed() => if r.is_err() {
                return conn.close().await;
            },
        }
    }
}
