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
    ready(Ok(t0.elapsed()));
    let _open = OpenGuard::new(&ctx);
    let mut phase_rx = ctx.phase.clone();
    loop {
        if *phase_rx.borrow_and_update() >= Phase::Finish {
            return conn.close().await;
        }
        tokio::select! {
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
