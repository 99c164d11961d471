//! Every metric name, in one place, with its description. Labels are low-cardinality only
//! (role, kind, code); never a conversation or user id. A site's id labels only the
//! `gateway_site_*` gauges, and only for the first `GATEWAY_METRICS_SITES` sites.

use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};

pub const CONNS_OPENED: &str = "gateway_connections_opened_total";
pub const CONNS_CLOSED: &str = "gateway_connections_closed_total";
pub const CONNS_ACTIVE: &str = "gateway_connections";
pub const HUB_CONNS: &str = "gateway_hub_connections";
pub const FRAMES_IN: &str = "gateway_frames_in_total";
pub const FRAMES_OUT: &str = "gateway_frames_out_total";
pub const MESSAGES: &str = "gateway_messages_total";
pub const DELIVERY_LATENCY: &str = "gateway_delivery_latency_seconds";
pub const OUTBOUND_QUEUED_BYTES: &str = "gateway_outbound_queued_bytes";
pub const CONVERSATIONS: &str = "gateway_conversations";
pub const SLOW_CLOSES: &str = "gateway_slow_consumer_closes_total";
pub const OVERSIZE_FRAMES: &str = "gateway_oversize_frames_total";
pub const RATE_LIMITED: &str = "gateway_rate_limited_total";
pub const ERRORS: &str = "gateway_error_frames_total";
pub const TIMERS_FIRED: &str = "gateway_timers_fired_total";
pub const TIMERS_PENDING: &str = "gateway_timers_pending";
pub const ENGINE_ERRORS: &str = "gateway_engine_errors_total";
pub const DRAINING: &str = "gateway_draining";
pub const HUB_CHANNELS: &str = "gateway_hub_channels";
pub const BUS_IN: &str = "gateway_bus_messages_in_total";
pub const BUS_OUT: &str = "gateway_bus_messages_out_total";
pub const BUS_RESUBSCRIBES: &str = "gateway_bus_resubscribes_total";
pub const BUS_CATCHUP: &str = "gateway_bus_catchup_messages_total";
pub const TX_CONFLICTS: &str = "gateway_site_transition_conflicts_total";
pub const NODES_SWEPT: &str = "gateway_dead_nodes_swept_total";
pub const ARCHIVED: &str = "gateway_archived_entries_total";
pub const ARCHIVE_ERRORS: &str = "gateway_archive_errors_total";
pub const SITE_CONVERSATIONS: &str = "gateway_site_conversations";
pub const SLOW_REQUESTS: &str = "gateway_http_slow_requests_total";
pub const HTTP_REFUSED: &str = "gateway_http_connections_refused_total";
pub const SITE_CONNECTIONS: &str = "gateway_site_connections";

/// Every metric name.
pub const ALL: [&str; 31] = [
    CONNS_OPENED,
    CONNS_CLOSED,
    CONNS_ACTIVE,
    HUB_CONNS,
    FRAMES_IN,
    FRAMES_OUT,
    MESSAGES,
    DELIVERY_LATENCY,
    OUTBOUND_QUEUED_BYTES,
    CONVERSATIONS,
    SLOW_CLOSES,
    OVERSIZE_FRAMES,
    RATE_LIMITED,
    ERRORS,
    TIMERS_FIRED,
    TIMERS_PENDING,
    ENGINE_ERRORS,
    DRAINING,
    HUB_CHANNELS,
    BUS_IN,
    BUS_OUT,
    BUS_RESUBSCRIBES,
    BUS_CATCHUP,
    TX_CONFLICTS,
    NODES_SWEPT,
    ARCHIVED,
    ARCHIVE_ERRORS,
    SITE_CONVERSATIONS,
    SITE_CONNECTIONS,
    SLOW_REQUESTS,
    HTTP_REFUSED,
];

/// Registers descriptions with the installed recorder.
pub fn describe() {
    describe_counter!(CONNS_OPENED, "WebSocket connections authenticated, by role");
    describe_counter!(
        CONNS_CLOSED,
        "WebSocket connections closed, by role and close reason"
    );
    describe_gauge!(
        CONNS_ACTIVE,
        "Open authenticated WebSocket connections, by role"
    );
    describe_gauge!(HUB_CONNS, "Connections registered in the node's hub");
    describe_counter!(
        FRAMES_IN,
        "Frames received from clients, by frame type (and malformed, invalid, rate_limited)"
    );
    describe_counter!(FRAMES_OUT, "Frames written to clients");
    describe_counter!(MESSAGES, "Chat messages stored, by author role");
    describe_histogram!(
        DELIVERY_LATENCY,
        Unit::Seconds,
        "From a message's store to its hand-off to the recipients' outbound queues on a node \
         (1 ms resolution: messages carry millisecond times)"
    );
    describe_gauge!(
        OUTBOUND_QUEUED_BYTES,
        "Bytes waiting in all outbound queues of the node"
    );
    describe_gauge!(
        CONVERSATIONS,
        "Open conversations of every site by state (queued: waiting in a queue), as this node \
         last read the sites' state"
    );
    describe_gauge!(
        SITE_CONVERSATIONS,
        "Open conversations of a site by state (the first GATEWAY_METRICS_SITES sites by id; \
         the rest summed as site=\"other\")"
    );
    describe_gauge!(
        SITE_CONNECTIONS,
        "This node's connections of a site (the first GATEWAY_METRICS_SITES sites by id; the \
         rest summed as site=\"other\")"
    );
    describe_counter!(
        SLOW_REQUESTS,
        "HTTP requests cut because their headers or body did not arrive in time, by part"
    );
    describe_counter!(
        HTTP_REFUSED,
        "TCP connections closed at once: their address had GATEWAY_MAX_HTTP_CONNS_PER_IP open"
    );
    describe_counter!(
        SLOW_CLOSES,
        "Connections closed with 4008 because their outbound queue overflowed"
    );
    describe_counter!(
        OVERSIZE_FRAMES,
        "Frames not sent because they were larger than their connection could write"
    );
    describe_counter!(
        RATE_LIMITED,
        "Frames refused by the per-connection rate limit"
    );
    describe_counter!(ERRORS, "Error frames sent, by code");
    describe_counter!(TIMERS_FIRED, "Timers fired, by kind");
    describe_gauge!(TIMERS_PENDING, "Timers waiting in the engine");
    describe_counter!(
        ENGINE_ERRORS,
        "Engine operations that failed, by kind (timeout, connection, protocol, conflict)"
    );
    describe_gauge!(DRAINING, "1 while the node drains");
    describe_gauge!(
        HUB_CHANNELS,
        "Channels with at least one local listener (one bus subscription each)"
    );
    describe_counter!(BUS_IN, "Messages received from the bus (Redis pub/sub)");
    describe_counter!(BUS_OUT, "Messages published to the bus, by kind");
    describe_counter!(
        BUS_RESUBSCRIBES,
        "Times the node resubscribed every channel after losing its bus connection"
    );
    describe_counter!(
        BUS_CATCHUP,
        "Messages replayed from the log to close a gap in a channel's delivery"
    );
    describe_counter!(
        TX_CONFLICTS,
        "Site transitions retried because another node committed first"
    );
    describe_counter!(NODES_SWEPT, "Dead nodes whose connections were swept");
    describe_counter!(
        ARCHIVED,
        "Outbox entries written to the archive (conversation events, operator changes, \
         message batches)"
    );
    describe_counter!(
        ARCHIVE_ERRORS,
        "Archive writes that failed (retried: the database was down or slow)"
    );
}

/// Every label value each labelled metric takes, so that [`register`] can create each series
/// at zero.
const ROLES: [&str; 3] = ["visitor", "operator", "supervisor"];
const CLOSE_REASONS: [&str; 10] = [
    "normal",
    "ping_timeout",
    "restarting",
    "try_again_later",
    "malformed",
    "unauthorized",
    "forbidden",
    "too_slow",
    "rate_limited",
    "client",
];
const CONV_STATES: [&str; 3] = ["queued", "offered", "active"];
const TIMER_KINDS: [&str; 6] = [
    "offer",
    "reassign",
    "inactive",
    "callback",
    "visitor_grace",
    "operator_grace",
];
const ENGINE_ERROR_KINDS: [&str; 4] = ["timeout", "connection", "protocol", "conflict"];
const BUS_OUT_KINDS: [&str; 2] = ["event", "msg"];
/// The `type` label of frames received: every client frame type, and what is not one.
pub const FRAME_TYPES: [&str; 28] = [
    "hello",
    "ping",
    "pong",
    "send",
    "history",
    "typing",
    "read",
    "start",
    "identify",
    "close",
    "status",
    "accept",
    "decline",
    "transfer",
    "tag",
    "draft",
    "assign",
    "watch",
    "ban",
    "unban",
    "mail_transcript",
    "action",
    "get",
    "active",
    "takeover",
    "malformed",
    "invalid",
    "rate_limited",
];
/// The `code` label of error frames: every error code.
pub const ERROR_CODES: [&str; 11] = [
    "bad_request",
    "unauthorized",
    "forbidden",
    "not_found",
    "taken",
    "capacity",
    "rate_limited",
    "too_large",
    "unavailable",
    "banned",
    "conflict",
];

/// Creates every series at zero (counters and gauges with each label value they take), so
/// that a fresh node's `/metrics` already lists what dashboards and alerts look for: a series
/// that appears only after its first change looks like "no data", not like zero.
pub fn register() {
    use metrics::{counter, gauge, histogram};
    for role in ROLES {
        counter!(CONNS_OPENED, "role" => role).increment(0);
        gauge!(CONNS_ACTIVE, "role" => role).increment(0.0);
        counter!(MESSAGES, "role" => role).increment(0);
        for reason in CLOSE_REASONS {
            counter!(CONNS_CLOSED, "role" => role, "reason" => reason).increment(0);
        }
    }
    for t in FRAME_TYPES {
        counter!(FRAMES_IN, "type" => t).increment(0);
    }
    for code in ERROR_CODES {
        counter!(ERRORS, "code" => code).increment(0);
    }
    for state in CONV_STATES {
        gauge!(CONVERSATIONS, "state" => state).increment(0.0);
    }
    for kind in TIMER_KINDS {
        counter!(TIMERS_FIRED, "kind" => kind).increment(0);
    }
    for kind in ENGINE_ERROR_KINDS {
        counter!(ENGINE_ERRORS, "kind" => kind).increment(0);
    }
    for kind in BUS_OUT_KINDS {
        counter!(BUS_OUT, "kind" => kind).increment(0);
    }
    for part in ["headers", "body"] {
        counter!(SLOW_REQUESTS, "part" => part).increment(0);
    }
    for name in [
        FRAMES_OUT,
        SLOW_CLOSES,
        OVERSIZE_FRAMES,
        RATE_LIMITED,
        BUS_IN,
        BUS_RESUBSCRIBES,
        BUS_CATCHUP,
        TX_CONFLICTS,
        NODES_SWEPT,
        ARCHIVED,
        ARCHIVE_ERRORS,
        HTTP_REFUSED,
    ] {
        counter!(name).increment(0);
    }
    for name in [
        HUB_CONNS,
        OUTBOUND_QUEUED_BYTES,
        TIMERS_PENDING,
        DRAINING,
        HUB_CHANNELS,
    ] {
        gauge!(name).increment(0.0);
    }
    // A histogram without samples still exports its buckets, count and sum (all zero).
    let _ = histogram!(DELIVERY_LATENCY);
}
