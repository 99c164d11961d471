//! Every metric name, in one place, with its description. Labels are low-cardinality only
//! (role, kind, code); never a conversation, site or user id.

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
    describe_counter!(
        SLOW_CLOSES,
        "Connections closed with 4008 because their outbound queue overflowed"
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
}
