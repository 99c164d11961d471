//! Wire protocol v1: every client-facing frame type and its two encodings.
//!
//! This module is the only place that defines what crosses the WebSocket. The names are fixed by
//! `protocol-v1.md`; additions are optional fields and new frame types only. Both directions
//! derive `Serialize` and `Deserialize` so the load tester and the tests speak the protocol
//! through the same types the gateway uses.
//!
//! Encoding is chosen by subprotocol: `chat.v1.json` (text frames) or `chat.v1.msgpack` (binary
//! frames, maps with string keys).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Subprotocol name for JSON text frames (the default when a client offers none).
pub const SUBPROTOCOL_JSON: &str = "chat.v1.json";
/// Subprotocol name for MessagePack binary frames.
pub const SUBPROTOCOL_MSGPACK: &str = "chat.v1.msgpack";

/// Longest accepted client message id.
pub const MAX_CID_LEN: usize = 64;

/// The encoding of one connection, fixed at the upgrade.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Json,
    MsgPack,
}

impl Encoding {
    /// Picks the encoding from a `Sec-WebSocket-Protocol` offer: the first protocol we know wins;
    /// `None` when the client offered protocols but none of ours.
    pub fn negotiate(offer: Option<&str>) -> Option<(Encoding, Option<&'static str>)> {
        let Some(offer) = offer else {
            return Some((Encoding::Json, None));
        };
        for p in offer.split(',').map(str::trim) {
            if p == SUBPROTOCOL_JSON {
                return Some((Encoding::Json, Some(SUBPROTOCOL_JSON)));
            }
            if p == SUBPROTOCOL_MSGPACK {
                return Some((Encoding::MsgPack, Some(SUBPROTOCOL_MSGPACK)));
            }
        }
        None
    }

    pub fn subprotocol(self) -> &'static str {
        match self {
            Encoding::Json => SUBPROTOCOL_JSON,
            Encoding::MsgPack => SUBPROTOCOL_MSGPACK,
        }
    }
}

/// A request id chosen by the client: any JSON number or string, echoed verbatim.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Rid {
    Int(i64),
    /// Above `i64::MAX`: still an integer, echoed as one.
    UInt(u64),
    Float(f64),
    Str(String),
}

/// Roles of an authenticated principal. `System` and `Bot` (an integration writing through
/// the HTTP API) only appear as message authors; no token carries them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Visitor,
    Operator,
    Supervisor,
    System,
    Bot,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Visitor => "visitor",
            Role::Operator => "operator",
            Role::Supervisor => "supervisor",
            Role::System => "system",
            Role::Bot => "bot",
        }
    }

    /// Operators and supervisors: the site's staff.
    pub fn is_staff(self) -> bool {
        matches!(self, Role::Operator | Role::Supervisor)
    }
}

/// An operator's routing status, independent of whether they are connected.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum OperatorStatus {
    Active,
    Away,
    #[default]
    Inactive,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ConvState {
    Queued,
    Offered,
    Active,
    Closed,
}

/// Pre-chat form answers.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Prechat {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
}

/// The page a visitor starts from.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Page {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub referrer: Option<String>,
}

/// Where a transfer goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransferTarget {
    Operator(String),
    Queue(String),
}

/// Frames a client sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum ClientFrame {
    Hello {
        token: String,
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        cursors: BTreeMap<String, u64>,
        /// Addition: the reader's language (a BCP 47 tag, e.g. the page's `lang`): notices
        /// and the settings in `welcome` come in it when the site has words for it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        lang: Option<String>,
        /// Addition: the widget's device id (derived from what the browser is, not stored in
        /// it, so clearing the browser's storage keeps it): bans by device hold for it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        device: Option<String>,
    },
    Ping {},
    Pong {},
    Send {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rid: Option<Rid>,
        conv: String,
        cid: String,
        text: String,
    },
    History {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rid: Option<Rid>,
        conv: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        before: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<u32>,
    },
    Typing {
        conv: String,
        on: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        preview: Option<String>,
    },
    Read {
        conv: String,
        seq: u64,
    },
    Start {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rid: Option<Rid>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        queue: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        prechat: Option<Prechat>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        params: Option<BTreeMap<String, String>>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        page: Option<Page>,
        /// Addition: the widget's offline form sends it (nobody was available); staff see
        /// the conversation marked.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        offline: bool,
    },
    /// Addition (visitors): new contact details or parameters for the open conversation.
    Identify {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rid: Option<Rid>,
        /// The conversation (default: the visitor's open one).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        conv: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        prechat: Option<Prechat>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        params: Option<BTreeMap<String, String>>,
    },
    Close {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rid: Option<Rid>,
        conv: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        outcome: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tags: Option<Vec<String>>,
    },
    Status {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rid: Option<Rid>,
        status: OperatorStatus,
    },
    Accept {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rid: Option<Rid>,
        conv: String,
    },
    Decline {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rid: Option<Rid>,
        conv: String,
    },
    Transfer {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rid: Option<Rid>,
        conv: String,
        to: TransferTarget,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        note: Option<String>,
    },
    Tag {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rid: Option<Rid>,
        conv: String,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        add: Vec<String>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        remove: Vec<String>,
    },
    Draft {
        conv: String,
        text: String,
    },
    Assign {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rid: Option<Rid>,
        conv: String,
        operator: String,
    },
    Watch {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rid: Option<Rid>,
        conv: String,
        on: bool,
    },
    /// Addition: bans the visitor of a conversation (its operator, or a supervisor): the
    /// conversation ends, the visitor's connections close with 4003, and they cannot come back
    /// for `duration` (e.g. `"24h"`; default a day, at most a year).
    Ban {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rid: Option<Rid>,
        conv: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        duration: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// Addition: lifts a visitor's ban (supervisors).
    Unban {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rid: Option<Rid>,
        visitor: String,
    },
    /// Addition: e-mail the conversation's transcript to the visitor (the visitor, or the
    /// staff for them), once it is closed.
    MailTranscript {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rid: Option<Rid>,
        conv: String,
        email: String,
    },
    /// Addition (staff): run one of the site's actions on a conversation: its URL is called
    /// with the conversation, and the answer's note comes back as one of its `notes`.
    Action {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rid: Option<Rid>,
        conv: String,
        action: String,
    },
    /// Addition (supervisors): the site's active conversations with their timings; answered
    /// with `ok` and `conversations`.
    Active {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rid: Option<Rid>,
    },
    /// Addition (supervisors): take a conversation over — the supervisor becomes its operator
    /// (answered with `ok` and `conv`).
    Takeover {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rid: Option<Rid>,
        conv: String,
    },
    /// Addition: one conversation, whole (queue listings leave out the visitor's parameters),
    /// for whoever may read it; answered with `ok` and `conv`.
    Get {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rid: Option<Rid>,
        conv: String,
    },
}

/// Whether a widget's device id is well-formed: 8 to 64 letters, digits, `-` or `_`.
pub fn device_id_ok(d: &str) -> bool {
    (8..=64).contains(&d.len())
        && d.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl ClientFrame {
    /// The request id, for frames that carry one.
    pub fn rid(&self) -> Option<&Rid> {
        match self {
            ClientFrame::Send { rid, .. }
            | ClientFrame::History { rid, .. }
            | ClientFrame::Start { rid, .. }
            | ClientFrame::Identify { rid, .. }
            | ClientFrame::Close { rid, .. }
            | ClientFrame::Status { rid, .. }
            | ClientFrame::Accept { rid, .. }
            | ClientFrame::Decline { rid, .. }
            | ClientFrame::Transfer { rid, .. }
            | ClientFrame::Tag { rid, .. }
            | ClientFrame::Assign { rid, .. }
            | ClientFrame::Watch { rid, .. }
            | ClientFrame::Ban { rid, .. }
            | ClientFrame::Unban { rid, .. }
            | ClientFrame::MailTranscript { rid, .. }
            | ClientFrame::Action { rid, .. }
            | ClientFrame::Get { rid, .. }
            | ClientFrame::Active { rid }
            | ClientFrame::Takeover { rid, .. } => rid.as_ref(),
            _ => None,
        }
    }
}

/// Who wrote a message or is typing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Author {
    pub role: Role,
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// What an operator sees of a visitor before accepting.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Preview {
    pub browser: String,
    pub os: String,
    pub device: String,
    pub page_url: String,
    pub referrer: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    /// Addition: the address the visitor connected from and their widget's device id (what
    /// a ban from the conversation covers besides the visitor id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct VisitorView {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub online: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preview: Option<Preview>,
    /// Contact details and custom parameters (staff only): an addition to v1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub params: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OperatorRef {
    pub id: String,
    pub name: String,
}

/// A conversation as clients see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Conversation {
    pub id: String,
    pub site: String,
    pub queue: String,
    pub state: ConvState,
    pub visitor: VisitorView,
    pub operator: Option<OperatorRef>,
    pub last_seq: u64,
    pub tags: Vec<String>,
    pub created_at: u64,
    /// The conversation this one continues (a visitor wrote after close).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<String>,
    /// Set in `welcome` for conversations named in `cursors`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovered: Option<bool>,
    /// Outcome given at close (addition).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    /// The operator's saved draft (operators only; addition).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub draft: Option<String>,
    /// Addition: the visitor left it in the widget's offline form (nobody was available).
    #[serde(default, skip_serializing_if = "is_false")]
    pub offline: bool,
    /// Addition (staff only): what staff noted on it (a transfer's note), oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<StaffNote>,
    /// Addition: how far each side has read (in `welcome` and `get`, and history answers),
    /// so that read receipts survive a reload and a transfer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read: Option<ReadMarks>,
    /// Addition (staff only): the visitor's last message, shortened (queue listings show it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_message: Option<LastMessage>,
    /// Addition (staff only, in supervisors' `active` list): the conversation's timings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activity: Option<ActivityView>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// A note staff left on a conversation; visitors never see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StaffNote {
    /// Who wrote it: their name, and id.
    pub by: String,
    pub by_id: String,
    pub text: String,
    pub ts: u64,
    /// A link that goes with it (an action's answer, say).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
}

/// The last `seq` each side has read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ReadMarks {
    pub visitor: u64,
    /// The operator (or a supervisor who took the conversation over).
    pub staff: u64,
}

/// A conversation's last visitor message, shortened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LastMessage {
    pub text: String,
    pub ts: u64,
}

/// A conversation's timings, as supervisors watch them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ActivityView {
    /// The visitor waits for an answer since then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_since: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub visitor_ts: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operator_ts: Option<u64>,
    /// From the visitor's first message to the operator's first answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_response_ms: Option<u64>,
}

/// Who the token says the connection is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Me {
    pub role: Role,
    pub id: String,
    pub site: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// A stored message as delivered (`msg` frames and `history` results).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Msg {
    pub conv: String,
    pub seq: u64,
    pub from: Author,
    pub text: String,
    pub ts: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cid: Option<String>,
    /// Addition, system messages: what happened as a machine-readable code (`operator_joined`,
    /// `transferred`, `reassigned`, `closed`), which a client renders in its reader's language;
    /// `text` is the same in the site's language for clients that do not know the code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// Addition: the code's arguments (`name`, `queue`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<BTreeMap<String, String>>,
}

/// The site settings a client may read (subset of the full settings).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientSettings {
    pub routing: String,
    pub widget_when_away: String,
    pub show_operator_name: bool,
    pub ping_interval_ms: u64,
    /// The unavailability notice in the reader's language (the `hello`'s `lang`, else the
    /// browser's), else in the site's.
    pub unavailable_text: String,
    /// Addition: the site's language (`en`, `ru`, `cs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub queues: Vec<String>,
    /// Canned responses (staff only; addition).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub canned: Vec<Canned>,
    /// Addition (staff only): the site's active tags, when it keeps a catalogue (then staff
    /// add only these).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<TagOption>,
    /// Addition (staff only): the site's active outcomes, when it keeps a list (then staff
    /// close with one of these).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outcomes: Vec<OutcomeOption>,
    /// Addition (staff only): how the site's conversation parameters are labelled and shown.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub params: Vec<ParamOption>,
    /// Addition (staff only): the site's actions, the buttons of the conversation menu.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub actions: Vec<ActionOption>,
    /// Addition: the transcript may be asked for by e-mail (`mail_transcript`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub mail_transcripts: bool,
}

/// A tag staff may add (addition).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TagOption {
    pub name: String,
    pub color: String,
    pub text_color: String,
}

/// An outcome staff may close with (addition).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutcomeOption {
    pub id: String,
    pub name: String,
}

/// A conversation parameter's label and where it shows (addition).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParamOption {
    pub code: String,
    pub label: String,
    pub editable: bool,
    /// `preview`, `active`, `both` or `none`.
    pub show: String,
}

/// An action staff may run on a conversation (addition): a button of the conversation menu.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionOption {
    pub id: String,
    pub name: String,
    /// The lines whose conversations it is offered on (empty: every line).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub queues: Vec<String>,
}

/// A canned response offered to operators (`//shortcut`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Canned {
    pub shortcut: String,
    pub text: String,
    /// Addition: the lines it is offered in (empty: every line).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub queues: Vec<String>,
}

/// Answer payloads of `ok`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum OkBody {
    Sent {
        conv: String,
        cid: String,
        seq: u64,
        ts: u64,
    },
    History {
        conv: String,
        messages: Vec<Msg>,
        complete: bool,
        /// Addition: how far each side has read.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        read: Option<ReadMarks>,
    },
    Conv {
        conv: Box<Conversation>,
    },
    Status {
        status: OperatorStatus,
    },
    /// Addition: the answer to `active`: what fits in one frame (longest waiting first), and
    /// how many there are.
    Conversations {
        conversations: Vec<Conversation>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        count: Option<u64>,
    },
    /// Addition: the answer to `ban`.
    Ban {
        visitor: String,
        until: u64,
    },
    /// Addition: the answer to `action`: the id of the event its call carries.
    Event {
        event: String,
    },
    Empty {},
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    BadRequest,
    Unauthorized,
    Forbidden,
    NotFound,
    Taken,
    Capacity,
    RateLimited,
    TooLarge,
    Unavailable,
    Banned,
    Conflict,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConvEvent {
    Queued,
    Offered,
    Assigned,
    Transferred,
    Closed,
    Reopened,
    VisitorAway,
    VisitorBack,
    OperatorAway,
    OperatorBack,
    /// Addition: tags or other metadata changed.
    Updated,
}

/// Frames the server sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum ServerFrame {
    Welcome {
        conn: String,
        node: String,
        me: Me,
        conversations: Vec<Conversation>,
        settings: ClientSettings,
    },
    Ok {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rid: Option<Rid>,
        #[serde(flatten)]
        body: OkBody,
    },
    Error {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rid: Option<Rid>,
        code: ErrorCode,
        message: String,
    },
    Ping {},
    Pong {},
    Msg(Msg),
    Typing {
        conv: String,
        from: Author,
        on: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        preview: Option<String>,
    },
    Read {
        conv: String,
        by: Author,
        seq: u64,
    },
    Conv {
        event: ConvEvent,
        conv: Box<Conversation>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    Queue {
        queue: String,
        waiting: Vec<Conversation>,
        /// Addition: how many wait in all (`waiting` lists at most 100).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        count: Option<u64>,
    },
    Offer {
        conv: Box<Conversation>,
        expires_at: u64,
    },
    Operator {
        id: String,
        name: String,
        status: OperatorStatus,
        online: bool,
        load: u32,
        /// Addition: a supervisor (present to take conversations over; never routed to).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        supervisor: bool,
    },
    Notice {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        conv: Option<String>,
        code: String,
        text: String,
    },
    /// Addition: a draft saved on another connection of the same operator.
    Draft {
        conv: String,
        text: String,
    },
    /// Addition: the site's settings changed (to staff, at once).
    Settings {
        settings: ClientSettings,
    },
}

/// Why the server closes a connection; one-to-one with the close codes of protocol v1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// 1000: normal; stay closed.
    Normal,
    /// 1001: the client stopped answering pings; it may reconnect.
    PingTimeout,
    /// 1012: the node is draining; reconnect at once, with jitter, and resume.
    Restarting,
    /// 1013: the engine could not prepare `welcome` (Redis unreachable); reconnect with
    /// backoff and resume. Not 1012: a whole site's clients reconnecting at once would only
    /// hammer an engine that is already down.
    TryAgainLater,
    /// 4000: malformed frame or protocol violation.
    Malformed,
    /// 4001: missing, invalid or expired token (or no `hello` in time).
    Unauthorized,
    /// 4003: forbidden or banned; stay closed.
    Forbidden,
    /// 4008: the outbound queue overflowed; reconnect with backoff and resume.
    TooSlow,
    /// 4029: rate or connection limit; reconnect with backoff.
    RateLimited,
}

impl CloseReason {
    pub fn code(self) -> u16 {
        match self {
            CloseReason::Normal => 1000,
            CloseReason::PingTimeout => 1001,
            CloseReason::Restarting => 1012,
            CloseReason::TryAgainLater => 1013,
            CloseReason::Malformed => 4000,
            CloseReason::Unauthorized => 4001,
            CloseReason::Forbidden => 4003,
            CloseReason::TooSlow => 4008,
            CloseReason::RateLimited => 4029,
        }
    }

    pub fn from_code(code: u16) -> Option<CloseReason> {
        Some(match code {
            1000 => CloseReason::Normal,
            1001 => CloseReason::PingTimeout,
            1012 => CloseReason::Restarting,
            1013 => CloseReason::TryAgainLater,
            4000 => CloseReason::Malformed,
            4001 => CloseReason::Unauthorized,
            4003 => CloseReason::Forbidden,
            4008 => CloseReason::TooSlow,
            4029 => CloseReason::RateLimited,
            _ => return None,
        })
    }

    /// Whether a client should reconnect after this close: only 1000 (normal) and 4003
    /// (forbidden or banned) mean stay closed; after 4000 a client reconnects but does not
    /// send the offending frames again.
    pub fn should_reconnect(self) -> bool {
        !matches!(self, CloseReason::Normal | CloseReason::Forbidden)
    }

    /// A short, stable label for metrics and the close frame's reason text.
    pub fn label(self) -> &'static str {
        match self {
            CloseReason::Normal => "normal",
            CloseReason::PingTimeout => "ping_timeout",
            CloseReason::Restarting => "restarting",
            CloseReason::TryAgainLater => "try_again_later",
            CloseReason::Malformed => "malformed",
            CloseReason::Unauthorized => "unauthorized",
            CloseReason::Forbidden => "forbidden",
            CloseReason::TooSlow => "too_slow",
            CloseReason::RateLimited => "rate_limited",
        }
    }
}

mod codec;
pub use codec::DecodeError;
