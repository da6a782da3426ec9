//! The `muc` category: multi-user chat rooms (XEP-0045) homed in this node's datacenter, in the
//! style of `mongooseimctl muc`. List rooms and their occupants, read a room's archive; create,
//! configure and delete rooms, invite, kick, change affiliations, speak for an occupant.
//!
//! The room logic is [`crate::modules::muc`]'s (its "Administration" functions): occupants see
//! what the admin does exactly as if a room owner had done it. Here the arguments are parsed and
//! checked, and [`MucAdminError`] becomes the admin error codes (see
//! [`AdminError::from_muc`]). A room homed in another datacenter is `NOT_FOUND` naming that
//! datacenter, as for accounts.

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use async_graphql::{Context, InputObject, Object, Result, SimpleObject};
use jid::BareJid;

use super::args::micros_of;
use super::args::{any_jid, bare_user};
use super::error::{AdminError, AdminResult, graphql};
use super::schema::node;
use crate::modules::muc::{self, MucAdminError, OccupantSummary, RoomMessage, RoomSummary};
use crate::node::Node;

/// Messages `getRoomMessages` returns when the caller names no limit.
const DEFAULT_LIMIT: u64 = 50;
/// The most messages `getRoomMessages` returns.
const MAX_LIMIT: u64 = 500;

/// A room as `listRooms` shows it.
#[derive(Debug, SimpleObject)]
pub(crate) struct MucRoom {
    /// The room's bare JID.
    jid: String,
    /// Its name (`muc#roomconfig_roomname`); empty when it has none.
    name: String,
    /// How many occupants (nicks) it has now.
    occupants: u64,
    /// Whether it outlives its last occupant and restarts (`muc#roomconfig_persistentroom`).
    persistent: bool,
    /// Whether the service lists it (`muc#roomconfig_publicroom`).
    public: bool,
}

impl From<RoomSummary> for MucRoom {
    fn from(room: RoomSummary) -> Self {
        Self {
            jid: room.jid,
            name: room.name,
            occupants: u64::try_from(room.occupants).unwrap_or(u64::MAX),
            persistent: room.persistent,
            public: room.public,
        }
    }
}

/// An occupant as `listRoomUsers` shows it.
#[derive(Debug, SimpleObject)]
pub(crate) struct MucOccupant {
    /// The occupant's nick in the room.
    nick: String,
    /// The full JID of (the first session of) the user behind the nick.
    jid: String,
    /// Its role: `moderator`, `participant` or `visitor`.
    role: String,
    /// The user's affiliation with the room: `owner`, `admin`, `member` or `none`.
    affiliation: String,
}

impl From<OccupantSummary> for MucOccupant {
    fn from(occupant: OccupantSummary) -> Self {
        Self {
            nick: occupant.nick,
            jid: occupant.jid,
            role: occupant.role.to_owned(),
            affiliation: occupant.affiliation.to_owned(),
        }
    }
}

/// One message of a room's archive.
#[derive(Debug, SimpleObject)]
pub(crate) struct MucMessage {
    /// The archive id: the XEP-0359 stanza id the room gave the message
    /// (`<stanza-id by='ROOM'>`), microseconds since the Unix epoch.
    id: String,
    /// When the room broadcast it, RFC 3339 in UTC with microseconds (from the id).
    timestamp: String,
    /// The sender's occupant JID, `room@service/nick`.
    sender: String,
    /// The text of its `<body/>`.
    body: String,
    /// The message as broadcast, XML.
    stanza: String,
}

impl From<RoomMessage> for MucMessage {
    fn from(message: RoomMessage) -> Self {
        Self {
            id: message.id.to_string(),
            timestamp: humantime::format_rfc3339_micros(
                UNIX_EPOCH + Duration::from_micros(message.id),
            )
            .to_string(),
            sender: message.from,
            body: message.body,
            stanza: message.stanza,
        }
    }
}

/// What a `muc` mutation did.
#[derive(Debug, SimpleObject)]
pub(crate) struct MucPayload {
    /// The room's bare JID.
    room: String,
    /// A sentence saying what was done.
    message: String,
}

/// One field of a room configuration form.
#[derive(Debug, Clone, InputObject)]
pub(crate) struct MucConfigField {
    /// The field: a `muc#roomconfig_*` name (`muc#roomconfig_roomname`), `muc#maxhistoryfetch`,
    /// or the same without its prefix (`roomname`).
    var: String,
    /// Its new value; booleans are `1`/`0`, `true`/`false` or `yes`/`no`.
    value: String,
}

/// `query { muc { ... } }`.
pub(crate) struct MucQuery;

#[Object]
impl MucQuery {
    /// The rooms homed here, sorted by JID; only those of the MUC service `service`
    /// (`muc.localhost`) when given.
    async fn list_rooms(&self, ctx: &Context<'_>, service: Option<String>) -> Result<Vec<MucRoom>> {
        graphql(list_rooms(node(ctx)?, service.as_deref()).await)
    }

    /// The occupants of `room` (a bare JID), sorted by nick.
    async fn list_room_users(&self, ctx: &Context<'_>, room: String) -> Result<Vec<MucOccupant>> {
        graphql(list_room_users(node(ctx)?, &room).await)
    }

    /// The newest messages of the archive of `room`, oldest first: at most `limit` (default
    /// 50, at most 500), only those sent before `before` (RFC 3339) when given.
    async fn get_room_messages(
        &self,
        ctx: &Context<'_>,
        room: String,
        limit: Option<u64>,
        before: Option<String>,
    ) -> Result<Vec<MucMessage>> {
        graphql(get_room_messages(node(ctx)?, &room, limit, before.as_deref()).await)
    }
}

/// `mutation { muc { ... } }`.
pub(crate) struct MucMutation;

#[Object]
impl MucMutation {
    /// Creates `room` (a bare JID on a MUC service of this server), homed in this datacenter,
    /// persistent and open, owned by `owner` (a bare JID), named `name` when given.
    async fn create_room(
        &self,
        ctx: &Context<'_>,
        room: String,
        owner: String,
        name: Option<String>,
    ) -> Result<MucPayload> {
        graphql(create_room(node(ctx)?, &room, &owner, name.as_deref()).await)
    }

    /// Sends `recipient` a mediated invitation (XEP-0045 §7.8.2) to `room` from `sender`
    /// (bare JIDs), with `reason` when given.
    async fn invite_user(
        &self,
        ctx: &Context<'_>,
        room: String,
        sender: String,
        recipient: String,
        reason: Option<String>,
    ) -> Result<MucPayload> {
        graphql(invite_user(node(ctx)?, &room, &sender, &recipient, reason.as_deref()).await)
    }

    /// Kicks the occupant `nick` out of `room` (status 307), with `reason` when given.
    async fn kick_user(
        &self,
        ctx: &Context<'_>,
        room: String,
        nick: String,
        reason: Option<String>,
    ) -> Result<MucPayload> {
        graphql(kick_user(node(ctx)?, &room, &nick, reason.as_deref()).await)
    }

    /// Sets the affiliation of `user` (a bare JID) with `room`: `owner`, `admin`, `member`,
    /// `outcast` (banned: removed from the room, refused when joining) or `none`.
    async fn set_user_affiliation(
        &self,
        ctx: &Context<'_>,
        room: String,
        user: String,
        affiliation: String,
    ) -> Result<MucPayload> {
        graphql(set_user_affiliation(node(ctx)?, &room, &user, &affiliation).await)
    }

    /// Sends `body` to `room` as a groupchat message of `from` (a user's JID, compared bare),
    /// who must be an occupant.
    async fn send_message_to_room(
        &self,
        ctx: &Context<'_>,
        room: String,
        from: String,
        body: String,
    ) -> Result<MucPayload> {
        graphql(send_message_to_room(node(ctx)?, &room, &from, &body).await)
    }

    /// Destroys `room`: its occupants are told, with `reason` and the `alternate` room (a bare
    /// JID) when given, and it is forgotten.
    async fn delete_room(
        &self,
        ctx: &Context<'_>,
        room: String,
        reason: Option<String>,
        alternate: Option<String>,
    ) -> Result<MucPayload> {
        graphql(delete_room(node(ctx)?, &room, reason.as_deref(), alternate.as_deref()).await)
    }

    /// Changes fields of the configuration of `room`, as an owner's submitted form would.
    async fn change_room_configuration(
        &self,
        ctx: &Context<'_>,
        room: String,
        fields: Vec<MucConfigField>,
    ) -> Result<MucPayload> {
        graphql(change_room_configuration(node(ctx)?, &room, &fields).await)
    }
}

async fn list_rooms(node: &Arc<Node>, service: Option<&str>) -> AdminResult<Vec<MucRoom>> {
    check_enabled(node)?;
    let service = service.map(|s| muc_service(node, s)).transpose()?;
    let rooms = muc::admin_list_rooms(node, service.as_deref()).await;
    Ok(rooms.into_iter().map(MucRoom::from).collect())
}

async fn list_room_users(node: &Arc<Node>, room: &str) -> AdminResult<Vec<MucOccupant>> {
    let room = room_jid(node, room)?;
    let occupants = muc::admin_occupants(node, &room)
        .await
        .map_err(AdminError::from_muc)?;
    Ok(occupants.into_iter().map(MucOccupant::from).collect())
}

async fn get_room_messages(
    node: &Arc<Node>,
    room: &str,
    limit: Option<u64>,
    before: Option<&str>,
) -> AdminResult<Vec<MucMessage>> {
    let room = room_jid(node, room)?;
    let limit = limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(AdminError::BadInput(format!(
            "the limit must be between 1 and {MAX_LIMIT}, not {limit}"
        )));
    }
    // Archive ids are microseconds since the Unix epoch: "before T" is "id < T".
    let before = before.map(micros_of).transpose()?;
    // At most MAX_LIMIT, so it fits.
    let max = usize::try_from(limit).unwrap_or(usize::MAX);
    let messages = muc::admin_messages(node, &room, max, before)
        .await
        .map_err(AdminError::from_muc)?;
    if before == Some(0) {
        return Ok(Vec::new());
    }
    Ok(messages.into_iter().map(MucMessage::from).collect())
}

async fn create_room(
    node: &Arc<Node>,
    room: &str,
    owner: &str,
    name: Option<&str>,
) -> AdminResult<MucPayload> {
    let room = room_jid(node, room)?;
    let owner = bare_user(owner)?;
    let name = name.filter(|n| !n.is_empty());
    muc::admin_create_room(node, &room, &owner, name)
        .await
        .map_err(AdminError::from_muc)?;
    tracing::info!(room = %room, owner = %owner, "room created through the admin API");
    Ok(payload(&room, format!("created room {room}")))
}

async fn invite_user(
    node: &Arc<Node>,
    room: &str,
    sender: &str,
    recipient: &str,
    reason: Option<&str>,
) -> AdminResult<MucPayload> {
    let room = room_jid(node, room)?;
    let sender = bare_user(sender)?;
    let recipient = bare_user(recipient)?;
    muc::admin_invite(node, &room, &sender, &recipient, reason)
        .await
        .map_err(AdminError::from_muc)?;
    tracing::info!(room = %room, recipient = %recipient, "room invitation sent through the admin API");
    Ok(payload(
        &room,
        format!("invited {recipient} to {room} on behalf of {sender}"),
    ))
}

async fn kick_user(
    node: &Arc<Node>,
    room: &str,
    nick: &str,
    reason: Option<&str>,
) -> AdminResult<MucPayload> {
    let room = room_jid(node, room)?;
    if nick.trim().is_empty() {
        return Err(AdminError::BadInput(
            "the nick must not be empty".to_owned(),
        ));
    }
    muc::admin_kick(node, &room, nick, reason)
        .await
        .map_err(AdminError::from_muc)?;
    tracing::info!(room = %room, "occupant kicked through the admin API");
    Ok(payload(&room, format!("kicked {nick} from {room}")))
}

async fn set_user_affiliation(
    node: &Arc<Node>,
    room: &str,
    user: &str,
    affiliation: &str,
) -> AdminResult<MucPayload> {
    let room = room_jid(node, room)?;
    let user = bare_user(user)?;
    muc::admin_set_affiliation(node, &room, &user, affiliation)
        .await
        .map_err(AdminError::from_muc)?;
    tracing::info!(room = %room, user = %user, affiliation, "room affiliation set through the admin API");
    Ok(payload(
        &room,
        format!("set the affiliation of {user} with {room} to {affiliation}"),
    ))
}

async fn send_message_to_room(
    node: &Arc<Node>,
    room: &str,
    from: &str,
    body: &str,
) -> AdminResult<MucPayload> {
    let room = room_jid(node, room)?;
    let sender = any_jid("sender", from)?.to_bare();
    if sender.node().is_none() {
        return Err(AdminError::BadInput(format!(
            "{from:?} is not a user JID (user@domain)"
        )));
    }
    if body.is_empty() {
        return Err(AdminError::BadInput(
            "the body must not be empty".to_owned(),
        ));
    }
    let limit = node.config.limits.max_stanza_size;
    if body.len() > limit {
        return Err(AdminError::BadInput(format!(
            "the body is {} bytes, more than limits.max_stanza_size ({limit})",
            body.len()
        )));
    }
    muc::admin_send_message(node, &room, &sender, body)
        .await
        .map_err(AdminError::from_muc)?;
    Ok(payload(
        &room,
        format!("sent a message from {sender} to {room}"),
    ))
}

async fn delete_room(
    node: &Arc<Node>,
    room: &str,
    reason: Option<&str>,
    alternate: Option<&str>,
) -> AdminResult<MucPayload> {
    let room = room_jid(node, room)?;
    let alternate = alternate
        .map(|a| any_jid("alternate room", a).map(|j| j.to_bare().to_string()))
        .transpose()?;
    muc::admin_destroy_room(node, &room, reason, alternate.as_deref())
        .await
        .map_err(AdminError::from_muc)?;
    tracing::info!(room = %room, "room destroyed through the admin API");
    Ok(payload(&room, format!("deleted room {room}")))
}

async fn change_room_configuration(
    node: &Arc<Node>,
    room: &str,
    fields: &[MucConfigField],
) -> AdminResult<MucPayload> {
    let room = room_jid(node, room)?;
    if fields.is_empty() {
        return Err(AdminError::BadInput(
            "name at least one field to change".to_owned(),
        ));
    }
    let mut changes: Vec<(String, String)> = Vec::with_capacity(fields.len());
    for field in fields {
        let (var, value) = config_change(&field.var, &field.value)?;
        if changes.iter().any(|(v, _)| *v == var) {
            return Err(AdminError::BadInput(format!(
                "{var} is named twice; name each field once"
            )));
        }
        changes.push((var, value));
    }
    muc::admin_configure(node, &room, &changes)
        .await
        .map_err(AdminError::from_muc)?;
    let names: Vec<&str> = changes.iter().map(|(var, _)| var.as_str()).collect();
    tracing::info!(room = %room, fields = %names.join(","), "room configured through the admin API");
    Ok(payload(
        &room,
        format!("changed {} of {room}", names.join(", ")),
    ))
}

/// What a room configuration field holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FieldKind {
    /// Any text.
    Text,
    /// `1` or `0`.
    Boolean,
    /// A whole number.
    Number,
    /// `anyone` or `moderators`.
    Whois,
    /// Roles separated by commas (`moderator,participant`), possibly none.
    Roles,
}

/// The configuration fields a room accepts (XEP-0045 §10.2 and §15.5.3), with their kinds.
const CONFIG_FIELDS: [(&str, FieldKind); 15] = [
    ("muc#roomconfig_roomname", FieldKind::Text),
    ("muc#roomconfig_roomdesc", FieldKind::Text),
    ("muc#roomconfig_persistentroom", FieldKind::Boolean),
    ("muc#roomconfig_publicroom", FieldKind::Boolean),
    ("muc#roomconfig_membersonly", FieldKind::Boolean),
    ("muc#roomconfig_moderatedroom", FieldKind::Boolean),
    ("muc#roomconfig_passwordprotectedroom", FieldKind::Boolean),
    ("muc#roomconfig_roomsecret", FieldKind::Text),
    ("muc#roomconfig_maxusers", FieldKind::Number),
    ("muc#roomconfig_whois", FieldKind::Whois),
    ("muc#roomconfig_allowinvites", FieldKind::Boolean),
    ("muc#roomconfig_changesubject", FieldKind::Boolean),
    ("muc#maxhistoryfetch", FieldKind::Number),
    ("muc#roomconfig_presencebroadcast", FieldKind::Roles),
    ("muc#roomconfig_getmemberlist", FieldKind::Roles),
];

/// A field of a configuration change, by its full name, with its value checked and booleans
/// written `1`/`0`. A name without `#` stands for `muc#roomconfig_NAME` (or `muc#NAME`).
fn config_change(var: &str, value: &str) -> AdminResult<(String, String)> {
    let full = if var.contains('#') {
        var.to_owned()
    } else if CONFIG_FIELDS
        .iter()
        .any(|(name, _)| name.strip_prefix("muc#") == Some(var))
    {
        format!("muc#{var}")
    } else {
        format!("muc#roomconfig_{var}")
    };
    let Some((_, kind)) = CONFIG_FIELDS.iter().find(|(name, _)| *name == full) else {
        let known: Vec<&str> = CONFIG_FIELDS.iter().map(|(name, _)| *name).collect();
        return Err(AdminError::BadInput(format!(
            "unknown room configuration field {var:?}: the fields are {}",
            known.join(", ")
        )));
    };
    let bad = |expected: &str| {
        AdminError::BadInput(format!(
            "invalid value {value:?} for {full}: expected {expected}"
        ))
    };
    let value = match kind {
        FieldKind::Text => value.to_owned(),
        FieldKind::Boolean => match value.to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" => "1".to_owned(),
            "0" | "false" | "no" => "0".to_owned(),
            _ => return Err(bad("1 or 0 (true or false, yes or no)")),
        },
        FieldKind::Number => value
            .trim()
            .parse::<u32>()
            .map_err(|_| bad("a whole number"))?
            .to_string(),
        FieldKind::Whois => match value {
            "anyone" | "moderators" => value.to_owned(),
            _ => return Err(bad("anyone or moderators")),
        },
        FieldKind::Roles => {
            let roles: Vec<&str> = value
                .split(',')
                .map(str::trim)
                .filter(|r| !r.is_empty())
                .collect();
            if let Some(other) = roles
                .iter()
                .find(|r| !matches!(**r, "moderator" | "participant" | "visitor"))
            {
                return Err(bad(&format!(
                    "roles separated by commas (moderator, participant, visitor), not {other:?}"
                )));
            }
            roles.join(",")
        }
    };
    Ok((full, value))
}

/// UNAVAILABLE when the MUC service is off.
fn check_enabled(node: &Node) -> AdminResult<()> {
    if node.config.modules.muc.enabled {
        Ok(())
    } else {
        Err(AdminError::from_muc(MucAdminError::Unavailable(
            "the MUC service is off ([modules.muc] enabled = false)".to_owned(),
        )))
    }
}

/// A MUC service domain of this server (`muc.localhost`), normalized.
fn muc_service(node: &Node, service: &str) -> AdminResult<String> {
    let jid = any_jid("service", service)?;
    if jid.node().is_some() || jid.resource().is_some() {
        return Err(AdminError::BadInput(format!(
            "expected a MUC service domain (like muc.localhost), found the JID {service:?}"
        )));
    }
    let domain = jid.domain().as_str().to_owned();
    if !muc::is_service(node, &domain) {
        return Err(not_a_service(&domain));
    }
    Ok(domain)
}

/// A room's bare JID (`room@muc.localhost`) on a MUC service of this server; the room may or
/// may not exist.
fn room_jid(node: &Node, room: &str) -> AdminResult<BareJid> {
    check_enabled(node)?;
    let jid = any_jid("room", room)?;
    if jid.resource().is_some() {
        return Err(AdminError::BadInput(format!(
            "expected a room's bare JID (room@service), found the occupant JID {room:?}"
        )));
    }
    if jid.node().is_none() {
        return Err(AdminError::BadInput(format!(
            "{room:?} is not a room JID (room@service)"
        )));
    }
    if !muc::is_service(node, jid.domain().as_str()) {
        return Err(not_a_service(jid.domain().as_str()));
    }
    Ok(jid.to_bare())
}

fn not_a_service(domain: &str) -> AdminError {
    AdminError::BadInput(format!("{domain} is not a MUC service of this server"))
}

fn payload(room: &BareJid, message: String) -> MucPayload {
    MucPayload {
        room: room.to_string(),
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::tests::{TempDir, next_stanza, node_with, test_node, test_session};
    use crate::sm::{Outbox, Session};
    use tern_xmpp_proto::stanza::Stanza;
    use tern_xmpp_proto::{Element, ns};

    const ROOM: &str = "team@muc.localhost";

    /// The next stanza queued for a session that contains `needle`; the ones before it are
    /// skipped.
    async fn stanza_with(rx: &mut Outbox, needle: &str) -> String {
        for _ in 0..20 {
            let xml = next_stanza(rx).await;
            if xml.contains(needle) {
                return xml;
            }
        }
        panic!("no stanza with {needle:?}");
    }

    /// Routes `xml` (a `jabber:client` stanza) as if its sender had sent it.
    async fn route(node: &Arc<Node>, xml: &str) {
        let element = Element::parse(xml.as_bytes(), ns::CLIENT).unwrap();
        node.route(Stanza::from_element(&element, ns::CLIENT).unwrap())
            .await;
    }

    /// A session of `full` that joined `ROOM` as `nick` (its own presence arrived).
    async fn join(node: &Arc<Node>, full: &str, nick: &str) -> (Arc<Session>, Outbox) {
        let (session, mut rx) = test_session(node, full);
        route(
            node,
            &format!(
                "<presence from='{full}' to='{ROOM}/{nick}'>\
                 <x xmlns='http://jabber.org/protocol/muc'/></presence>"
            ),
        )
        .await;
        stanza_with(&mut rx, "code='110'").await;
        (session, rx)
    }

    #[tokio::test]
    async fn rooms_are_created_listed_and_deleted() {
        let (node, _dir) = test_node("muc-admin-rooms").await;
        assert!(list_rooms(&node, None).await.unwrap().is_empty());
        let done = create_room(&node, "Team@MUC.localhost", "boss@localhost", Some("Team"))
            .await
            .unwrap();
        assert_eq!(done.message, "created room team@muc.localhost");
        assert_eq!(done.room, ROOM);
        create_room(&node, "quiet@muc.localhost", "boss@localhost", Some(""))
            .await
            .unwrap();
        let e = create_room(&node, ROOM, "boss@localhost", None)
            .await
            .unwrap_err();
        assert_eq!(e.code(), "CONFLICT");
        assert_eq!(e.to_string(), "room team@muc.localhost exists already");

        let rooms = list_rooms(&node, Some("muc.localhost")).await.unwrap();
        let listed: Vec<(&str, &str, u64, bool, bool)> = rooms
            .iter()
            .map(|r| {
                (
                    r.jid.as_str(),
                    r.name.as_str(),
                    r.occupants,
                    r.persistent,
                    r.public,
                )
            })
            .collect();
        assert_eq!(
            listed,
            [
                ("quiet@muc.localhost", "", 0, true, true),
                (ROOM, "Team", 0, true, true),
            ]
        );
        let e = list_rooms(&node, Some("localhost")).await.unwrap_err();
        assert_eq!(e.code(), "BAD_INPUT");
        assert_eq!(
            e.to_string(),
            "localhost is not a MUC service of this server"
        );
        let e = list_rooms(&node, Some("a@muc.localhost"))
            .await
            .unwrap_err();
        assert_eq!(e.code(), "BAD_INPUT");

        let done = delete_room(&node, ROOM, Some("done"), Some("quiet@muc.localhost"))
            .await
            .unwrap();
        assert_eq!(done.message, "deleted room team@muc.localhost");
        let rooms = list_rooms(&node, None).await.unwrap();
        assert_eq!(rooms.len(), 1);
        assert_eq!(rooms[0].jid, "quiet@muc.localhost");
        let e = delete_room(&node, ROOM, None, None).await.unwrap_err();
        assert_eq!(e.code(), "NOT_FOUND");
        assert_eq!(e.to_string(), "room team@muc.localhost not found");
    }

    #[tokio::test]
    async fn room_jids_are_checked() {
        let (node, _dir) = test_node("muc-admin-jids").await;
        for bad in [
            "muc.localhost",
            "team@muc.localhost/nick",
            "team@localhost",
            "team@muc.example.org",
            "team@@muc.localhost",
            "",
        ] {
            let e = list_room_users(&node, bad).await.unwrap_err();
            assert_eq!(e.code(), "BAD_INPUT", "{bad}: {e}");
            let e = create_room(&node, bad, "boss@localhost", None)
                .await
                .unwrap_err();
            assert_eq!(e.code(), "BAD_INPUT", "{bad}: {e}");
        }
        for bad_owner in ["localhost", "boss@localhost/desk", "@localhost"] {
            let e = create_room(&node, ROOM, bad_owner, None).await.unwrap_err();
            assert_eq!(e.code(), "BAD_INPUT", "{bad_owner}: {e}");
        }
        assert!(list_rooms(&node, None).await.unwrap().is_empty());
        let e = list_room_users(&node, "ghost@muc.localhost")
            .await
            .unwrap_err();
        assert_eq!(e.code(), "NOT_FOUND");
        for e in [
            kick_user(&node, "ghost@muc.localhost", "al", None)
                .await
                .unwrap_err(),
            set_user_affiliation(&node, "ghost@muc.localhost", "a@localhost", "member")
                .await
                .unwrap_err(),
            send_message_to_room(&node, "ghost@muc.localhost", "a@localhost", "hi")
                .await
                .unwrap_err(),
            invite_user(
                &node,
                "ghost@muc.localhost",
                "a@localhost",
                "b@localhost",
                None,
            )
            .await
            .unwrap_err(),
            get_room_messages(&node, "ghost@muc.localhost", None, None)
                .await
                .unwrap_err(),
            change_room_configuration(
                &node,
                "ghost@muc.localhost",
                &[MucConfigField {
                    var: "roomname".into(),
                    value: "x".into(),
                }],
            )
            .await
            .unwrap_err(),
        ] {
            assert_eq!(e.code(), "NOT_FOUND", "{e}");
        }
    }

    #[tokio::test]
    async fn occupants_are_listed_kicked_and_banned() {
        let (node, _dir) = test_node("muc-admin-occupants").await;
        create_room(&node, ROOM, "boss@localhost", None)
            .await
            .unwrap();
        let (_alice, mut alice_rx) = join(&node, "alice@localhost/desk", "Al Ice").await;
        let (_boss, mut boss_rx) = join(&node, "boss@localhost/phone", "boss").await;
        stanza_with(&mut alice_rx, "from='team@muc.localhost/boss'").await;
        let users = list_room_users(&node, ROOM).await.unwrap();
        let shown: Vec<(&str, &str, &str, &str)> = users
            .iter()
            .map(|u| {
                (
                    u.nick.as_str(),
                    u.jid.as_str(),
                    u.role.as_str(),
                    u.affiliation.as_str(),
                )
            })
            .collect();
        assert_eq!(
            shown,
            [
                ("Al Ice", "alice@localhost/desk", "participant", "none"),
                ("boss", "boss@localhost/phone", "moderator", "owner"),
            ]
        );
        assert_eq!(list_rooms(&node, None).await.unwrap()[0].occupants, 2);

        let done = kick_user(&node, ROOM, "Al Ice", Some("spam"))
            .await
            .unwrap();
        assert_eq!(done.message, "kicked Al Ice from team@muc.localhost");
        let kicked = stanza_with(&mut alice_rx, "type='unavailable'").await;
        assert!(kicked.contains("code='307'"), "{kicked}");
        assert!(kicked.contains("<reason>spam</reason>"), "{kicked}");
        let seen = stanza_with(&mut boss_rx, "type='unavailable'").await;
        assert!(seen.contains("code='307'"), "{seen}");
        let e = kick_user(&node, ROOM, "Al Ice", None).await.unwrap_err();
        assert_eq!(e.code(), "NOT_FOUND");
        let e = kick_user(&node, ROOM, " ", None).await.unwrap_err();
        assert_eq!(e.code(), "BAD_INPUT");

        let done = set_user_affiliation(&node, ROOM, "alice@localhost", "outcast")
            .await
            .unwrap();
        assert_eq!(
            done.message,
            "set the affiliation of alice@localhost with team@muc.localhost to outcast"
        );
        route(
            &node,
            "<presence from='alice@localhost/desk' to='team@muc.localhost/again'>\
             <x xmlns='http://jabber.org/protocol/muc'/></presence>",
        )
        .await;
        let refused = stanza_with(&mut alice_rx, "type='error'").await;
        assert!(refused.contains("<forbidden"), "{refused}");
        let e = set_user_affiliation(&node, ROOM, "alice@localhost", "king")
            .await
            .unwrap_err();
        assert_eq!(e.code(), "BAD_INPUT");
        let e = set_user_affiliation(&node, ROOM, "boss@localhost", "member")
            .await
            .unwrap_err();
        assert_eq!(e.code(), "BAD_INPUT");
        assert!(e.to_string().contains("only owner"), "{e}");
    }

    #[tokio::test]
    async fn messages_reach_occupants_and_the_archive() {
        let (node, _dir) = test_node("muc-admin-messages").await;
        create_room(&node, ROOM, "boss@localhost", None)
            .await
            .unwrap();
        let (_alice, mut alice_rx) = join(&node, "alice@localhost/desk", "al").await;
        let e = send_message_to_room(&node, ROOM, "bob@localhost", "hi")
            .await
            .unwrap_err();
        assert_eq!(e.code(), "NOT_FOUND");
        assert!(e.to_string().contains("bob@localhost"), "{e}");
        for n in 1..=3 {
            let done = send_message_to_room(&node, ROOM, "alice@localhost/other", &format!("m{n}"))
                .await
                .unwrap();
            assert_eq!(
                done.message,
                "sent a message from alice@localhost to team@muc.localhost"
            );
            let got = stanza_with(&mut alice_rx, &format!("<body>m{n}</body>")).await;
            assert!(got.contains("type='groupchat'"), "{got}");
            assert!(got.contains("from='team@muc.localhost/al'"), "{got}");
        }
        let e = send_message_to_room(&node, ROOM, "alice@localhost", "")
            .await
            .unwrap_err();
        assert_eq!(e.code(), "BAD_INPUT");
        let e = send_message_to_room(&node, ROOM, "muc.localhost", "hi")
            .await
            .unwrap_err();
        assert_eq!(e.code(), "BAD_INPUT");

        let all = get_room_messages(&node, ROOM, None, None).await.unwrap();
        let bodies: Vec<&str> = all.iter().map(|m| m.body.as_str()).collect();
        assert_eq!(bodies, ["m1", "m2", "m3"]);
        assert!(all.iter().all(|m| m.sender == "team@muc.localhost/al"));
        let first = &all[0];
        assert!(first.stanza.contains("<body>m1</body>"), "{}", first.stanza);
        let micros: u64 = first.id.parse().unwrap();
        assert_eq!(
            first.timestamp,
            humantime::format_rfc3339_micros(UNIX_EPOCH + Duration::from_micros(micros))
                .to_string()
        );
        assert_eq!(micros_of(&first.timestamp).unwrap(), micros);
        let last = get_room_messages(&node, ROOM, Some(2), None).await.unwrap();
        let bodies: Vec<&str> = last.iter().map(|m| m.body.as_str()).collect();
        assert_eq!(bodies, ["m2", "m3"]);
        let before = get_room_messages(&node, ROOM, None, Some(&all[2].timestamp))
            .await
            .unwrap();
        let bodies: Vec<&str> = before.iter().map(|m| m.body.as_str()).collect();
        assert_eq!(bodies, ["m1", "m2"]);
        let none = get_room_messages(&node, ROOM, None, Some("1970-01-01T00:00:00Z"))
            .await
            .unwrap();
        assert!(none.is_empty());
        for limit in [0, MAX_LIMIT + 1] {
            let e = get_room_messages(&node, ROOM, Some(limit), None)
                .await
                .unwrap_err();
            assert_eq!(e.code(), "BAD_INPUT", "{limit}");
        }
        let e = get_room_messages(&node, ROOM, None, Some("yesterday"))
            .await
            .unwrap_err();
        assert_eq!(e.code(), "BAD_INPUT");

        // An invitation reaches the invitee from the room.
        let (bob, mut bob_rx) = test_session(&node, "bob@localhost/desk");
        bob.update_presence(|p| p.available = Some("<presence/>".into()));
        let done = invite_user(
            &node,
            ROOM,
            "alice@localhost",
            "bob@localhost",
            Some("join us"),
        )
        .await
        .unwrap();
        assert_eq!(
            done.message,
            "invited bob@localhost to team@muc.localhost on behalf of alice@localhost"
        );
        let invite = stanza_with(&mut bob_rx, "<invite").await;
        assert!(invite.contains("from='team@muc.localhost'"), "{invite}");
        assert!(invite.contains("from='alice@localhost'"), "{invite}");
        assert!(invite.contains("join us"), "{invite}");
    }

    #[tokio::test]
    async fn configuration_fields_are_checked_and_applied() {
        let (node, _dir) = test_node("muc-admin-config").await;
        create_room(&node, ROOM, "boss@localhost", None)
            .await
            .unwrap();
        let field = |var: &str, value: &str| MucConfigField {
            var: var.into(),
            value: value.into(),
        };
        let done = change_room_configuration(
            &node,
            ROOM,
            &[
                field("roomname", "Renamed"),
                field("muc#roomconfig_publicroom", "no"),
                field("maxhistoryfetch", "5"),
            ],
        )
        .await
        .unwrap();
        assert_eq!(
            done.message,
            "changed muc#roomconfig_roomname, muc#roomconfig_publicroom, muc#maxhistoryfetch \
             of team@muc.localhost"
        );
        let room = &list_rooms(&node, None).await.unwrap()[0];
        assert_eq!((room.name.as_str(), room.public), ("Renamed", false));
        for fields in [
            vec![],
            vec![field("colour", "blue")],
            vec![field("muc#roomconfig_colour", "blue")],
            vec![field("publicroom", "maybe")],
            vec![field("maxusers", "many")],
            vec![field("maxusers", "0")],
            vec![field("whois", "everyone")],
            vec![
                field("roomname", "a"),
                field("muc#roomconfig_roomname", "b"),
            ],
        ] {
            let e = change_room_configuration(&node, ROOM, &fields)
                .await
                .unwrap_err();
            assert_eq!(e.code(), "BAD_INPUT", "{fields:?}: {e}");
        }
        let room = &list_rooms(&node, None).await.unwrap()[0];
        assert_eq!(room.name, "Renamed", "a refused change changes nothing");
        assert_eq!(
            config_change("persistentroom", "TRUE").unwrap(),
            ("muc#roomconfig_persistentroom".to_owned(), "1".to_owned())
        );
        assert_eq!(
            config_change("muc#roomconfig_whois", "anyone").unwrap(),
            ("muc#roomconfig_whois".to_owned(), "anyone".to_owned())
        );
        assert_eq!(
            config_change("presencebroadcast", "moderator, participant").unwrap(),
            (
                "muc#roomconfig_presencebroadcast".to_owned(),
                "moderator,participant".to_owned()
            )
        );
        assert!(matches!(
            config_change("getmemberlist", "moderator,owner"),
            Err(AdminError::BadInput(m)) if m.contains("\"owner\"")
        ));
        assert_eq!(
            config_change("getmemberlist", "").unwrap(),
            ("muc#roomconfig_getmemberlist".to_owned(), String::new())
        );
    }

    #[tokio::test]
    async fn a_disabled_service_is_unavailable() {
        let dir = TempDir::new("muc-admin-off");
        let mut config = tern_config::Config::embedded_default();
        config.modules.muc.enabled = false;
        let node = node_with(config, &dir).await;
        let e = list_rooms(&node, None).await.unwrap_err();
        assert_eq!(e.code(), "UNAVAILABLE");
        let e = create_room(&node, ROOM, "boss@localhost", None)
            .await
            .unwrap_err();
        assert_eq!(e.code(), "UNAVAILABLE");
    }

    /// The fields and codes a GraphQL client sees.
    #[tokio::test]
    async fn graphql_names_and_error_codes() {
        let (node, _dir) = test_node("muc-admin-graphql").await;
        let schema = crate::admin::schema::build(node.clone());
        let run = |query: &str| {
            let schema = schema.clone();
            let query = query.to_owned();
            async move { schema.execute(query.as_str()).await }
        };
        let answer = run(
            "mutation { muc { createRoom(room: \"team@muc.localhost\", owner: \"boss@localhost\", \
             name: \"Team\") { room message } } }",
        )
        .await;
        assert!(answer.errors.is_empty(), "{:?}", answer.errors);
        let data = answer.data.into_json().unwrap();
        assert_eq!(data["muc"]["createRoom"]["room"], ROOM);
        let answer = run(
            "mutation { muc { changeRoomConfiguration(room: \"team@muc.localhost\", \
             fields: [{ var: \"roomname\", value: \"Renamed\" }]) { message } } }",
        )
        .await;
        assert!(answer.errors.is_empty(), "{:?}", answer.errors);
        let answer = run(
            "{ muc { listRooms(service: \"muc.localhost\") { jid name occupants persistent public } \
             listRoomUsers(room: \"team@muc.localhost\") { nick jid role affiliation } \
             getRoomMessages(room: \"team@muc.localhost\", limit: 5) { id timestamp sender body stanza } } }",
        )
        .await;
        assert!(answer.errors.is_empty(), "{:?}", answer.errors);
        let data = answer.data.into_json().unwrap();
        assert_eq!(
            data["muc"]["listRooms"],
            serde_json::json!([{ "jid": ROOM, "name": "Renamed", "occupants": 0,
                                 "persistent": true, "public": true }])
        );
        assert_eq!(data["muc"]["listRoomUsers"], serde_json::json!([]));
        let answer = run(
            "mutation { muc { kickUser(room: \"ghost@muc.localhost\", nick: \"x\") { message } } }",
        )
        .await;
        let e = &answer.errors[0];
        assert_eq!(e.message, "room ghost@muc.localhost not found");
        let code = e.extensions.as_ref().and_then(|x| x.get("code")).cloned();
        assert_eq!(code, Some(async_graphql::Value::from("NOT_FOUND")));
        for mutation in [
            "inviteUser(room: \"team@muc.localhost\", sender: \"a@localhost\", \
             recipient: \"b@localhost\", reason: \"r\")",
            "setUserAffiliation(room: \"team@muc.localhost\", user: \"m@localhost\", \
             affiliation: \"member\")",
            "deleteRoom(room: \"team@muc.localhost\", reason: \"bye\", alternate: \"x@muc.localhost\")",
        ] {
            let answer = run(&format!(
                "mutation {{ muc {{ {mutation} {{ room message }} }} }}"
            ))
            .await;
            assert!(answer.errors.is_empty(), "{mutation}: {:?}", answer.errors);
        }
        let answer = run(
            "mutation { muc { sendMessageToRoom(room: \"x@muc.localhost\", from: \"a@localhost\", \
             body: \"hi\") { message } } }",
        )
        .await;
        assert_eq!(answer.errors.len(), 1, "{:?}", answer.errors);
    }
}
