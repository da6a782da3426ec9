//! Each `tern ctl` command as a GraphQL operation ([`plan`]) and its answer as text or JSON
//! ([`render`]). Arguments always travel as GraphQL variables, never pasted into the query.

use std::io::{BufRead, Write};
use std::process::ExitCode;
use std::time::Duration;

use serde_json::{Value, json};

use super::error::{CtlError, EXIT_REFUSED};
use super::{
    AccountCommand, CtlCommand, DomainCommand, LastCommand, MeshCommand, MucCommand,
    OfflineCommand, PrivateCommand, RosterCommand, ServerCommand, SessionCommand, StanzaCommand,
    VcardCommand,
};

/// How an answer is printed as text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Output {
    /// A list: one line per item (a string, or an object's `jid`).
    Lines,
    /// A number.
    Count,
    /// An object's `message`.
    Message,
    /// `checkPassword`: the message, and exit 1 when the password is wrong.
    CheckPassword,
    /// `server status`: `key: value` lines.
    Status,
    /// A string.
    Text,
    /// `domain list`: one line per domain.
    Domains,
    /// `domain details`: `key: value` lines.
    DomainDetails,
    /// `mesh status`: `key: value` lines.
    MeshStatus,
    /// `mesh home`: one line.
    UserHome,
    /// `last get`: one line.
    Last,
    /// `roster get-contact`: one line.
    Contact,
    /// `stanza get-last-messages`: one line per message.
    Messages,
    /// `muc list-rooms`: one line per room.
    Rooms,
    /// `muc list-room-users`: one line per occupant.
    Occupants,
    /// `muc get-room-messages`: one line per message.
    RoomMessages,
}

/// The fields of a domain that `domain list` and `domain details` ask for.
macro_rules! domain_fields {
    () => {
        "{ domain hostType status dynamic serving accounts version }"
    };
}

/// One command, ready to send.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Call {
    /// The GraphQL document.
    pub(crate) query: &'static str,
    /// Its variables.
    pub(crate) variables: Value,
    /// Where the answer is in `data`: category, then field.
    path: [&'static str; 2],
    output: Output,
}

impl Call {
    fn new(query: &'static str, variables: Value, path: [&'static str; 2], output: Output) -> Self {
        Self {
            query,
            variables,
            path,
            output,
        }
    }
}

/// The GraphQL operation for `command`. Arguments given as `-` (passwords, stanzas) are read
/// from `input`.
pub(crate) fn plan(command: &CtlCommand, input: &mut dyn BufRead) -> Result<Call, CtlError> {
    use Output::{
        CheckPassword, Contact, Count, DomainDetails, Domains, Last, Lines, MeshStatus, Message,
        Messages, Occupants, RoomMessages, Rooms, Status, Text, UserHome,
    };
    Ok(match command {
        CtlCommand::Account(c) => match c {
            AccountCommand::Register {
                username,
                domain,
                password,
                home,
            } => Call::new(
                "mutation($domain: String!, $username: String!, $password: String!, \
                 $home: String) { account { registerUser(domain: $domain, \
                 username: $username, password: $password, home: $home) { jid message } } }",
                json!({ "domain": domain, "username": username,
                        "password": secret(password, input)?, "home": home }),
                ["account", "registerUser"],
                Message,
            ),
            AccountCommand::Remove { user } => Call::new(
                "mutation($user: String!) { account { removeUser(user: $user) { jid message } } }",
                json!({ "user": user }),
                ["account", "removeUser"],
                Message,
            ),
            AccountCommand::List { domain } => Call::new(
                "query($domain: String!) { account { listUsers(domain: $domain) } }",
                json!({ "domain": domain }),
                ["account", "listUsers"],
                Lines,
            ),
            AccountCommand::Count { domain } => Call::new(
                "query($domain: String!) { account { countUsers(domain: $domain) } }",
                json!({ "domain": domain }),
                ["account", "countUsers"],
                Count,
            ),
            AccountCommand::CheckPassword { user, password } => Call::new(
                "query($user: String!, $password: String!) \
                 { account { checkPassword(user: $user, password: $password) \
                 { correct message } } }",
                json!({ "user": user, "password": secret(password, input)? }),
                ["account", "checkPassword"],
                CheckPassword,
            ),
            AccountCommand::ChangePassword { user, password } => Call::new(
                "mutation($user: String!, $password: String!) \
                 { account { changePassword(user: $user, newPassword: $password) \
                 { jid message } } }",
                json!({ "user": user, "password": secret(password, input)? }),
                ["account", "changePassword"],
                Message,
            ),
        },
        CtlCommand::Session(c) => match c {
            SessionCommand::List { domain } => Call::new(
                "query($domain: String) { session { listSessions(domain: $domain) \
                 { jid user resource transport peer datacenter connectedSince connectedSeconds \
                 available priority } } }",
                json!({ "domain": domain }),
                ["session", "listSessions"],
                Lines,
            ),
            SessionCommand::Count { domain } => Call::new(
                "query($domain: String) { session { countSessions(domain: $domain) } }",
                json!({ "domain": domain }),
                ["session", "countSessions"],
                Count,
            ),
            SessionCommand::Kick { user, reason } => Call::new(
                "mutation($user: String!, $reason: String) \
                 { session { kickUser(user: $user, reason: $reason) { jid message } } }",
                json!({ "user": user, "reason": reason }),
                ["session", "kickUser"],
                Message,
            ),
        },
        CtlCommand::Stanza(c) => match c {
            StanzaCommand::SendMessage { from, to, body } => Call::new(
                "mutation($from: String!, $to: String!, $body: String!) \
                 { stanza { sendMessage(from: $from, to: $to, body: $body) { id message } } }",
                json!({ "from": from, "to": to, "body": body }),
                ["stanza", "sendMessage"],
                Message,
            ),
            StanzaCommand::SendStanza { stanza } => Call::new(
                "mutation($stanza: String!) \
                 { stanza { sendStanza(stanza: $stanza) { id message } } }",
                json!({ "stanza": document(stanza, input)? }),
                ["stanza", "sendStanza"],
                Message,
            ),
            StanzaCommand::GetLastMessages {
                caller,
                with,
                limit,
                before,
            } => Call::new(
                "query($caller: String!, $with: String, $limit: Int, $before: String) \
                 { stanza { getLastMessages(caller: $caller, with: $with, limit: $limit, \
                 before: $before) { id timestamp sender recipient body stanza } } }",
                json!({ "caller": caller, "with": with, "limit": limit, "before": before }),
                ["stanza", "getLastMessages"],
                Messages,
            ),
        },
        CtlCommand::Offline(c) => match c {
            OfflineCommand::Count { user } => Call::new(
                "query($user: String!) { offline { countMessages(user: $user) } }",
                json!({ "user": user }),
                ["offline", "countMessages"],
                Count,
            ),
            OfflineCommand::Delete { user } => Call::new(
                "mutation($user: String!) { offline { deleteMessages(user: $user) \
                 { message count } } }",
                json!({ "user": user }),
                ["offline", "deleteMessages"],
                Message,
            ),
        },
        CtlCommand::Vcard(c) => match c {
            VcardCommand::Get { user } => Call::new(
                "query($user: String!) { vcard { getVcard(user: $user) } }",
                json!({ "user": user }),
                ["vcard", "getVcard"],
                Text,
            ),
            VcardCommand::Set { user, vcard } => Call::new(
                "mutation($user: String!, $vcard: String!) \
                 { vcard { setVcard(user: $user, vcard: $vcard) { message count } } }",
                json!({ "user": user, "vcard": document(vcard, input)? }),
                ["vcard", "setVcard"],
                Message,
            ),
        },
        CtlCommand::Last(c) => match c {
            LastCommand::Get { user } => Call::new(
                "query($user: String!) { last { getLast(user: $user) \
                 { user online timestamp seconds status } } }",
                json!({ "user": user }),
                ["last", "getLast"],
                Last,
            ),
            LastCommand::Set {
                user,
                timestamp,
                status,
            } => Call::new(
                "mutation($user: String!, $timestamp: Int, $status: String) \
                 { last { setLast(user: $user, timestamp: $timestamp, status: $status) \
                 { message count } } }",
                json!({ "user": user, "timestamp": timestamp, "status": status }),
                ["last", "setLast"],
                Message,
            ),
        },
        CtlCommand::Private(c) => match c {
            PrivateCommand::Get {
                user,
                element,
                namespace,
            } => Call::new(
                "query($user: String!, $element: String!, $namespace: String!) \
                 { private { getPrivate(user: $user, element: $element, namespace: $namespace) } }",
                json!({ "user": user, "element": element, "namespace": namespace }),
                ["private", "getPrivate"],
                Text,
            ),
            PrivateCommand::Set { user, xml } => Call::new(
                "mutation($user: String!, $xml: String!) \
                 { private { setPrivate(user: $user, xml: $xml) { message count } } }",
                json!({ "user": user, "xml": document(xml, input)? }),
                ["private", "setPrivate"],
                Message,
            ),
        },
        CtlCommand::Roster(c) => match c {
            RosterCommand::List { user } => Call::new(
                "query($user: String!) { roster { listContacts(user: $user) \
                 { jid name groups subscription ask pendingIn approved } } }",
                json!({ "user": user }),
                ["roster", "listContacts"],
                Lines,
            ),
            RosterCommand::AddContact {
                user,
                contact,
                name,
                groups,
            } => Call::new(
                "mutation($user: String!, $contact: String!, $name: String, $groups: [String!]) \
                 { roster { addContact(user: $user, contact: $contact, name: $name, \
                 groups: $groups) { message } } }",
                json!({ "user": user, "contact": contact, "name": name, "groups": groups }),
                ["roster", "addContact"],
                Message,
            ),
            RosterCommand::SetMutualSubscription { user_a, user_b } => Call::new(
                "mutation($userA: String!, $userB: String!) \
                 { roster { setMutualSubscription(userA: $userA, userB: $userB) { message } } }",
                json!({ "userA": user_a, "userB": user_b }),
                ["roster", "setMutualSubscription"],
                Message,
            ),
            RosterCommand::GetContact { user, contact } => Call::new(
                "query($user: String!, $contact: String!) \
                 { roster { getContact(user: $user, contact: $contact) \
                 { jid name groups subscription ask pendingIn approved } } }",
                json!({ "user": user, "contact": contact }),
                ["roster", "getContact"],
                Contact,
            ),
            RosterCommand::DeleteContact { user, contact } => Call::new(
                "mutation($user: String!, $contact: String!) \
                 { roster { deleteContact(user: $user, contact: $contact) { message } } }",
                json!({ "user": user, "contact": contact }),
                ["roster", "deleteContact"],
                Message,
            ),
            RosterCommand::SubscribeAllToAll { users } => Call::new(
                "mutation($users: [String!]!) \
                 { roster { subscribeAllToAll(users: $users) { message } } }",
                json!({ "users": users }),
                ["roster", "subscribeAllToAll"],
                Message,
            ),
        },
        CtlCommand::Server(c) => match c {
            ServerCommand::Status => Call::new(
                "query { server { status { status nodeName version uptimeSeconds startedAt \
                 domains sessionsOnline registeredUsers adminAddress dataDir } } }",
                json!({}),
                ["server", "status"],
                Status,
            ),
            ServerCommand::Stop => Call::new(
                "mutation { server { stop } }",
                json!({}),
                ["server", "stop"],
                Text,
            ),
        },
        CtlCommand::Mesh(c) => match c {
            MeshCommand::Status => Call::new(
                "query { mesh { status { nodeId dc role leader term lastLogIndex appliedIndex \
                 snapshotIndex voters { id dc address } learners { id dc address } users \
                 datacenters bridges { peer connected rttMs queued inFlight connects \
                 unreachableSeconds } } } }",
                json!({}),
                ["mesh", "status"],
                MeshStatus,
            ),
            MeshCommand::AddLearner { node, dc, address } => Call::new(
                "mutation($node: Int!, $dc: String!, $address: String!) { mesh { \
                 addLearner(node: $node, dc: $dc, address: $address) { index message } } }",
                json!({ "node": node, "dc": dc, "address": address }),
                ["mesh", "addLearner"],
                Message,
            ),
            MeshCommand::Promote { nodes } => Call::new(
                "mutation($nodes: [Int!]!) { mesh { promote(nodes: $nodes) { index message } } }",
                json!({ "nodes": nodes }),
                ["mesh", "promote"],
                Message,
            ),
            MeshCommand::Demote { nodes } => Call::new(
                "mutation($nodes: [Int!]!) { mesh { demote(nodes: $nodes) { index message } } }",
                json!({ "nodes": nodes }),
                ["mesh", "demote"],
                Message,
            ),
            MeshCommand::Remove { nodes } => Call::new(
                "mutation($nodes: [Int!]!) { mesh { removeNodes(nodes: $nodes) { index message } } }",
                json!({ "nodes": nodes }),
                ["mesh", "removeNodes"],
                Message,
            ),
            MeshCommand::RemoveDc { dc } => Call::new(
                "mutation($dc: String!) { mesh { removeDc(dc: $dc) { index message } } }",
                json!({ "dc": dc }),
                ["mesh", "removeDc"],
                Message,
            ),
            MeshCommand::Rehome { jid, dc } => Call::new(
                "mutation($jid: String!, $dc: String!) { mesh { rehomeUser(jid: $jid, dc: $dc) \
                 { jid from dc offlineMessages heldStanzas message } } }",
                json!({ "jid": jid, "dc": dc }),
                ["mesh", "rehomeUser"],
                Message,
            ),
            MeshCommand::Home { jid } => Call::new(
                "query($jid: String!) { mesh { userHome(jid: $jid) { jid dc version asOf } } }",
                json!({ "jid": jid }),
                ["mesh", "userHome"],
                UserHome,
            ),
        },
        CtlCommand::Muc(c) => match c {
            MucCommand::CreateRoom { room, owner, name } => Call::new(
                "mutation($room: String!, $owner: String!, $name: String) \
                 { muc { createRoom(room: $room, owner: $owner, name: $name) \
                 { room message } } }",
                json!({ "room": room, "owner": owner, "name": name }),
                ["muc", "createRoom"],
                Message,
            ),
            MucCommand::ListRooms { service } => Call::new(
                "query($service: String) { muc { listRooms(service: $service) \
                 { jid name occupants persistent public } } }",
                json!({ "service": service }),
                ["muc", "listRooms"],
                Rooms,
            ),
            MucCommand::ListRoomUsers { room } => Call::new(
                "query($room: String!) { muc { listRoomUsers(room: $room) \
                 { nick jid role affiliation } } }",
                json!({ "room": room }),
                ["muc", "listRoomUsers"],
                Occupants,
            ),
            MucCommand::InviteUser {
                room,
                sender,
                recipient,
                reason,
            } => Call::new(
                "mutation($room: String!, $sender: String!, $recipient: String!, \
                 $reason: String) { muc { inviteUser(room: $room, sender: $sender, \
                 recipient: $recipient, reason: $reason) { room message } } }",
                json!({ "room": room, "sender": sender, "recipient": recipient,
                        "reason": reason }),
                ["muc", "inviteUser"],
                Message,
            ),
            MucCommand::KickUser { room, nick, reason } => Call::new(
                "mutation($room: String!, $nick: String!, $reason: String) \
                 { muc { kickUser(room: $room, nick: $nick, reason: $reason) \
                 { room message } } }",
                json!({ "room": room, "nick": nick, "reason": reason }),
                ["muc", "kickUser"],
                Message,
            ),
            MucCommand::SetAffiliation {
                room,
                user,
                affiliation,
            } => Call::new(
                "mutation($room: String!, $user: String!, $affiliation: String!) \
                 { muc { setUserAffiliation(room: $room, user: $user, \
                 affiliation: $affiliation) { room message } } }",
                json!({ "room": room, "user": user, "affiliation": affiliation }),
                ["muc", "setUserAffiliation"],
                Message,
            ),
            MucCommand::SendMessageToRoom { room, from, body } => Call::new(
                "mutation($room: String!, $from: String!, $body: String!) \
                 { muc { sendMessageToRoom(room: $room, from: $from, body: $body) \
                 { room message } } }",
                json!({ "room": room, "from": from, "body": body }),
                ["muc", "sendMessageToRoom"],
                Message,
            ),
            MucCommand::DeleteRoom {
                room,
                reason,
                alternate,
            } => Call::new(
                "mutation($room: String!, $reason: String, $alternate: String) \
                 { muc { deleteRoom(room: $room, reason: $reason, alternate: $alternate) \
                 { room message } } }",
                json!({ "room": room, "reason": reason, "alternate": alternate }),
                ["muc", "deleteRoom"],
                Message,
            ),
            MucCommand::GetRoomMessages {
                room,
                limit,
                before,
            } => Call::new(
                "query($room: String!, $limit: Int, $before: String) \
                 { muc { getRoomMessages(room: $room, limit: $limit, before: $before) \
                 { id timestamp sender body stanza } } }",
                json!({ "room": room, "limit": limit, "before": before }),
                ["muc", "getRoomMessages"],
                RoomMessages,
            ),
            MucCommand::ChangeRoomConfiguration { room, fields } => Call::new(
                "mutation($room: String!, $fields: [MucConfigField!]!) \
                 { muc { changeRoomConfiguration(room: $room, fields: $fields) \
                 { room message } } }",
                json!({
                    "room": room,
                    "fields": fields
                        .iter()
                        .map(|(var, value)| json!({ "var": var, "value": value }))
                        .collect::<Vec<_>>(),
                }),
                ["muc", "changeRoomConfiguration"],
                Message,
            ),
        },
        CtlCommand::Domain(c) => match c {
            DomainCommand::Add { domain, host_type } => Call::new(
                "mutation($domain: String!, $hostType: String!) \
                 { domain { addDomain(domain: $domain, hostType: $hostType) \
                 { domain changed message } } }",
                json!({ "domain": domain, "hostType": host_type }),
                ["domain", "addDomain"],
                Message,
            ),
            DomainCommand::Remove { domain } => Call::new(
                "mutation($domain: String!) { domain { removeDomain(domain: $domain) \
                 { domain accounts rosters routingEntries message } } }",
                json!({ "domain": domain }),
                ["domain", "removeDomain"],
                Message,
            ),
            DomainCommand::Enable { domain } => Call::new(
                "mutation($domain: String!) { domain { enableDomain(domain: $domain) \
                 { domain changed message } } }",
                json!({ "domain": domain }),
                ["domain", "enableDomain"],
                Message,
            ),
            DomainCommand::Disable { domain } => Call::new(
                "mutation($domain: String!) { domain { disableDomain(domain: $domain) \
                 { domain changed message } } }",
                json!({ "domain": domain }),
                ["domain", "disableDomain"],
                Message,
            ),
            DomainCommand::List => Call::new(
                concat!("query { domain { listDomains ", domain_fields!(), " } }"),
                json!({}),
                ["domain", "listDomains"],
                Domains,
            ),
            DomainCommand::Details { domain } => Call::new(
                concat!(
                    "query($domain: String!) { domain { domainDetails(domain: $domain) ",
                    domain_fields!(),
                    " } }"
                ),
                json!({ "domain": domain }),
                ["domain", "domainDetails"],
                DomainDetails,
            ),
        },
    })
}

/// A secret argument: itself, or the first line of `input` when it is `-`.
fn secret(value: &str, input: &mut dyn BufRead) -> Result<String, CtlError> {
    if value != "-" {
        return Ok(value.to_owned());
    }
    let mut line = String::new();
    input.read_line(&mut line).map_err(CtlError::Stdin)?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

/// A document argument: itself, or all of `input` when it is `-`.
fn document(value: &str, input: &mut dyn BufRead) -> Result<String, CtlError> {
    if value != "-" {
        return Ok(value.to_owned());
    }
    let mut text = String::new();
    input.read_to_string(&mut text).map_err(CtlError::Stdin)?;
    Ok(text.trim().to_owned())
}

/// Prints the answer `data` of `call` to `out` and returns the exit code.
pub(crate) fn render(
    call: &Call,
    data: &Value,
    json: bool,
    out: &mut dyn Write,
) -> Result<ExitCode, CtlError> {
    let [category, field] = call.path;
    let value = data
        .get(category)
        .and_then(|c| c.get(field))
        .ok_or_else(|| CtlError::BadResponse(format!("the answer has no {category}.{field}")))?;
    let code = match call.output {
        Output::CheckPassword if value.get("correct") != Some(&Value::Bool(true)) => {
            ExitCode::from(EXIT_REFUSED)
        }
        _ => ExitCode::SUCCESS,
    };
    let text = if json {
        serde_json::to_string_pretty(data).unwrap_or_else(|_| data.to_string())
    } else {
        as_text(call.output, value)
    };
    // A closed standard output (`| head`) is not the command's failure.
    if !text.is_empty() {
        let _ = writeln!(out, "{text}");
    }
    Ok(code)
}

/// The text form of an answer; empty for an empty list.
fn as_text(output: Output, value: &Value) -> String {
    match output {
        Output::Lines => value
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .map(|item| plain(item.get("jid").unwrap_or(item)))
                    .collect::<Vec<_>>()
                    .join("\n")
            })
            .unwrap_or_else(|| plain(value)),
        Output::Count | Output::Text => plain(value),
        Output::Message | Output::CheckPassword => plain(value.get("message").unwrap_or(value)),
        Output::Status => status_lines(value),
        Output::Domains => value
            .as_array()
            .map(|items| items.iter().map(domain_line).collect::<Vec<_>>().join("\n"))
            .unwrap_or_else(|| plain(value)),
        Output::DomainDetails => domain_details(value),
        Output::MeshStatus => mesh_status(value),
        Output::Last => last_line(value),
        Output::Contact => contact_line(value),
        Output::Messages => value
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .map(message_line)
                    .collect::<Vec<_>>()
                    .join("\n")
            })
            .unwrap_or_else(|| plain(value)),
        Output::Rooms => each_line(value, room_line),
        Output::Occupants => each_line(value, occupant_line),
        Output::RoomMessages => each_line(value, room_message_line),
        Output::UserHome => format!(
            "{}: {} (version {}, as of {})",
            plain(value.get("jid").unwrap_or(&Value::Null)),
            plain(value.get("dc").unwrap_or(&Value::Null)),
            plain(value.get("version").unwrap_or(&Value::Null)),
            plain(value.get("asOf").unwrap_or(&Value::Null)),
        ),
    }
}

/// One domain of `domain list`: `NAME STATUS KIND host_type=T accounts=N serving=DCS`, the
/// name first so that `awk '{print $1}'` lists the names.
fn domain_line(domain: &Value) -> String {
    let field = |name: &str| plain(domain.get(name).unwrap_or(&Value::Null));
    format!(
        "{} {} {} host_type={} accounts={} serving={}",
        field("domain"),
        field("status"),
        domain_kind(domain),
        field("hostType"),
        field("accounts"),
        serving(domain)
    )
}

/// `static` or `dynamic`.
fn domain_kind(domain: &Value) -> &'static str {
    if domain.get("dynamic") == Some(&Value::Bool(true)) {
        "dynamic"
    } else {
        "static"
    }
}

/// The datacenters serving a domain, comma-separated; `all` for an empty list.
fn serving(domain: &Value) -> String {
    match domain.get("serving").and_then(Value::as_array) {
        Some(dcs) if !dcs.is_empty() => dcs.iter().map(plain).collect::<Vec<_>>().join(","),
        _ => "all".to_owned(),
    }
}

/// `domain details` as `key: value` lines.
fn domain_details(domain: &Value) -> String {
    let field = |name: &str| plain(domain.get(name).unwrap_or(&Value::Null));
    [
        format!("domain: {}", field("domain")),
        format!("host_type: {}", field("hostType")),
        format!("status: {}", field("status")),
        format!("kind: {}", domain_kind(domain)),
        format!("serving: {}", serving(domain)),
        format!("accounts: {}", field("accounts")),
        format!("version: {}", field("version")),
    ]
    .join("\n")
}

/// Raft members as `id (dc address)`, comma separated; `-` for none.
fn members(value: Option<&Value>) -> String {
    let list: Vec<String> = value
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .map(|m| {
                    let field = |k: &str| plain(m.get(k).unwrap_or(&Value::Null));
                    let address = field("address");
                    if address.is_empty() {
                        format!("{} ({})", field("id"), field("dc"))
                    } else {
                        format!("{} ({} {address})", field("id"), field("dc"))
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    if list.is_empty() {
        "-".to_owned()
    } else {
        list.join(", ")
    }
}

/// Bridges as `peer up rtt=1.2ms queued=0 in_flight=0 connects=1` (or `down for 3.0s`), comma
/// separated;
/// `-` for none.
fn bridges(value: Option<&Value>) -> String {
    let list: Vec<String> = value
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .map(|b| {
                    let field = |k: &str| plain(b.get(k).unwrap_or(&Value::Null));
                    let state = if b.get("connected") == Some(&Value::Bool(true)) {
                        let rtt = b.get("rttMs").and_then(Value::as_f64).unwrap_or(0.0);
                        format!("up rtt={rtt:.1}ms")
                    } else {
                        let down = b
                            .get("unreachableSeconds")
                            .and_then(Value::as_f64)
                            .unwrap_or(0.0);
                        format!("down for {down:.1}s")
                    };
                    format!(
                        "{} {state} queued={} in_flight={} connects={}",
                        field("peer"),
                        field("queued"),
                        field("inFlight"),
                        field("connects")
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    if list.is_empty() {
        "-".to_owned()
    } else {
        list.join(", ")
    }
}

/// `mesh status` as `key: value` lines.
fn mesh_status(value: &Value) -> String {
    let field = |k: &str| plain(value.get(k).unwrap_or(&Value::Null));
    let datacenters = value
        .get("datacenters")
        .and_then(Value::as_array)
        .map(|items| items.iter().map(plain).collect::<Vec<_>>().join(", "))
        .unwrap_or_default();
    [
        format!("node: {} ({})", field("nodeId"), field("dc")),
        format!("role: {}", field("role")),
        format!("leader: {}", field("leader")),
        format!("term: {}", field("term")),
        format!("last_log_index: {}", field("lastLogIndex")),
        format!("applied_index: {}", field("appliedIndex")),
        format!("snapshot_index: {}", field("snapshotIndex")),
        format!("voters: {}", members(value.get("voters"))),
        format!("learners: {}", members(value.get("learners"))),
        format!("users: {}", field("users")),
        format!("datacenters: {datacenters}"),
        format!("bridges: {}", bridges(value.get("bridges"))),
    ]
    .join("\n")
}

/// `server status` as `key: value` lines.
fn status_lines(value: &Value) -> String {
    const FIELDS: [(&str, &str); 10] = [
        ("status", "status"),
        ("nodeName", "node"),
        ("version", "version"),
        ("uptimeSeconds", "uptime"),
        ("startedAt", "started_at"),
        ("domains", "domains"),
        ("sessionsOnline", "sessions_online"),
        ("registeredUsers", "registered_users"),
        ("adminAddress", "admin_address"),
        ("dataDir", "data_dir"),
    ];
    FIELDS
        .iter()
        .map(|(field, key)| {
            let v = value.get(*field).unwrap_or(&Value::Null);
            let shown = match (*field, v) {
                ("uptimeSeconds", Value::Number(n)) => n.as_u64().map_or_else(
                    || n.to_string(),
                    |s| humantime::format_duration(Duration::from_secs(s)).to_string(),
                ),
                (_, Value::Array(items)) => items.iter().map(plain).collect::<Vec<_>>().join(", "),
                _ => plain(v),
            };
            format!("{key}: {shown}")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// `roster get-contact` as one line:
/// `JID subscription=S name=N groups=G1,G2 ask=subscribe|none`, with `-` for no name or no
/// groups; a name or group that is empty or holds spaces, commas, `=` or quotes is quoted.
fn contact_line(value: &Value) -> String {
    let name = match value.get("name") {
        Some(Value::String(name)) => token(name),
        _ => "-".to_owned(),
    };
    let groups = value
        .get("groups")
        .and_then(Value::as_array)
        .filter(|groups| !groups.is_empty())
        .map_or_else(
            || "-".to_owned(),
            |groups| {
                groups
                    .iter()
                    .map(|g| token(&plain(g)))
                    .collect::<Vec<_>>()
                    .join(",")
            },
        );
    let ask = if value.get("ask") == Some(&Value::Bool(true)) {
        "subscribe"
    } else {
        "none"
    };
    format!(
        "{} subscription={} name={name} groups={groups} ask={ask}",
        plain(value.get("jid").unwrap_or(&Value::Null)),
        plain(value.get("subscription").unwrap_or(&Value::Null)),
    )
}

/// `text` as one `key=value` token: itself, or quoted with escapes when it is empty or holds
/// whitespace, commas, `=`, quotes or control characters.
fn token(text: &str) -> String {
    let plain_enough = !text.is_empty()
        && !text
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || matches!(c, ',' | '=' | '"'));
    if plain_enough {
        text.to_owned()
    } else {
        format!("{text:?}")
    }
}

/// One message of `stanza get-last-messages`: `TIMESTAMP FROM -> TO: BODY`, line breaks of the
/// body written `\n` (and `\r`) so that each message stays on one line; `-` for no body.
fn message_line(message: &Value) -> String {
    let field = |k: &str| plain(message.get(k).unwrap_or(&Value::Null));
    let body = field("body").replace('\r', "\\r").replace('\n', "\\n");
    format!(
        "{} {} -> {}: {body}",
        field("timestamp"),
        field("sender"),
        field("recipient")
    )
}

/// The items of a list answer, one line each as `line` prints them.
fn each_line(value: &Value, line: fn(&Value) -> String) -> String {
    value
        .as_array()
        .map(|items| items.iter().map(line).collect::<Vec<_>>().join("\n"))
        .unwrap_or_else(|| plain(value))
}

/// `yes` for true, `no` otherwise.
fn yes_no(value: Option<&Value>) -> &'static str {
    if value == Some(&Value::Bool(true)) {
        "yes"
    } else {
        "no"
    }
}

/// One room of `muc list-rooms`:
/// `JID occupants=N persistent=yes|no public=yes|no name=NAME`, the JID first; `-` for no name,
/// quoted as in `roster get-contact` when it holds spaces and the like.
fn room_line(room: &Value) -> String {
    let field = |k: &str| plain(room.get(k).unwrap_or(&Value::Null));
    let name = match room.get("name") {
        Some(Value::String(name)) if !name.is_empty() => token(name),
        _ => "-".to_owned(),
    };
    format!(
        "{} occupants={} persistent={} public={} name={name}",
        field("jid"),
        field("occupants"),
        yes_no(room.get("persistent")),
        yes_no(room.get("public")),
    )
}

/// One occupant of `muc list-room-users`: `NICK JID role=R affiliation=A`, the nick quoted
/// when it holds spaces and the like; `-` for no JID.
fn occupant_line(occupant: &Value) -> String {
    let field = |k: &str| plain(occupant.get(k).unwrap_or(&Value::Null));
    let jid = match field("jid") {
        jid if jid.is_empty() => "-".to_owned(),
        jid => jid,
    };
    format!(
        "{} {jid} role={} affiliation={}",
        token(&field("nick")),
        field("role"),
        field("affiliation")
    )
}

/// One message of `muc get-room-messages`: `TIMESTAMP FROM: BODY`, line breaks of the body
/// written `\n` (and `\r`) as in `stanza get-last-messages`.
fn room_message_line(message: &Value) -> String {
    let field = |k: &str| plain(message.get(k).unwrap_or(&Value::Null));
    let body = field("body").replace('\r', "\\r").replace('\n', "\\n");
    format!("{} {}: {body}", field("timestamp"), field("sender"))
}

/// `last get` as one line: `U: online`, `U: last seen T (N s ago): STATUS`, or
/// `U: no activity recorded`.
fn last_line(value: &Value) -> String {
    let field = |k: &str| value.get(k).unwrap_or(&Value::Null);
    let user = plain(field("user"));
    if field("online") == &Value::Bool(true) {
        return format!("{user}: online");
    }
    match field("timestamp") {
        Value::String(at) => {
            let mut line = format!("{user}: last seen {at} ({} s ago)", plain(field("seconds")));
            if let Value::String(status) = field("status") {
                line.push_str(": ");
                line.push_str(status);
            }
            line
        }
        _ => format!("{user}: no activity recorded"),
    }
}

/// A JSON value as plain text: strings without quotes, null as `-`.
fn plain(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => "-".to_owned(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan_of(command: CtlCommand) -> Call {
        plan(&command, &mut std::io::empty()).unwrap()
    }

    fn text_of(call: &Call, data: Value) -> (String, ExitCode) {
        let mut out = Vec::new();
        let code = render(call, &data, false, &mut out).unwrap();
        (String::from_utf8(out).unwrap(), code)
    }

    #[test]
    fn register_sends_arguments_as_variables() {
        let call = plan_of(CtlCommand::Account(AccountCommand::Register {
            username: "al'ice".into(),
            domain: "localhost".into(),
            password: "p\"w".into(),
            home: None,
        }));
        assert!(call.query.contains("registerUser(domain: $domain"));
        assert_eq!(
            call.variables,
            json!({ "domain": "localhost", "username": "al'ice", "password": "p\"w",
                    "home": null })
        );
        let call = plan_of(CtlCommand::Account(AccountCommand::Register {
            username: "alice".into(),
            domain: "localhost".into(),
            password: "pw".into(),
            home: Some("eu-west".into()),
        }));
        assert!(call.query.contains("home: $home"), "{}", call.query);
        assert_eq!(call.variables["home"], "eu-west");
    }

    #[test]
    fn domain_commands_send_their_arguments_as_variables() {
        let d = || "chat.example".to_owned();
        let cases = [
            (
                DomainCommand::Add {
                    domain: d(),
                    host_type: "default".into(),
                },
                "addDomain(domain: $domain, hostType: $hostType)",
                json!({ "domain": "chat.example", "hostType": "default" }),
            ),
            (
                DomainCommand::Remove { domain: d() },
                "removeDomain(domain: $domain)",
                json!({ "domain": "chat.example" }),
            ),
            (
                DomainCommand::Enable { domain: d() },
                "enableDomain(domain: $domain)",
                json!({ "domain": "chat.example" }),
            ),
            (
                DomainCommand::Disable { domain: d() },
                "disableDomain(domain: $domain)",
                json!({ "domain": "chat.example" }),
            ),
            (DomainCommand::List, "listDomains {", json!({})),
            (
                DomainCommand::Details { domain: d() },
                "domainDetails(domain: $domain) {",
                json!({ "domain": "chat.example" }),
            ),
        ];
        for (command, field, variables) in cases {
            let call = plan_of(CtlCommand::Domain(command));
            assert!(call.query.contains(field), "{field}: {}", call.query);
            assert_eq!(call.variables, variables, "{field}");
        }
    }

    #[test]
    fn mesh_commands_ask_and_print_the_routing_table() {
        let call = plan_of(CtlCommand::Mesh(MeshCommand::Home {
            jid: "ann@localhost".into(),
        }));
        assert!(call.query.contains("userHome(jid: $jid)"), "{}", call.query);
        assert_eq!(call.variables, json!({ "jid": "ann@localhost" }));
        let data = json!({ "mesh": { "userHome": {
            "jid": "ann@localhost", "dc": "eu-west", "version": 7, "asOf": 9
        } } });
        let (text, code) = text_of(&call, data);
        assert_eq!(text.trim(), "ann@localhost: eu-west (version 7, as of 9)");
        assert_eq!(code, ExitCode::SUCCESS);

        let call = plan_of(CtlCommand::Mesh(MeshCommand::Promote { nodes: vec![2, 3] }));
        assert!(
            call.query.contains("promote(nodes: $nodes)"),
            "{}",
            call.query
        );
        assert_eq!(call.variables, json!({ "nodes": [2, 3] }));

        let call = plan_of(CtlCommand::Mesh(MeshCommand::Status));
        let data = json!({ "mesh": { "status": {
            "nodeId": 1, "dc": "eu", "role": "follower", "leader": 2, "term": 3,
            "lastLogIndex": 10, "appliedIndex": 10, "snapshotIndex": null,
            "voters": [{ "id": 1, "dc": "eu", "address": "127.0.0.1:7001" },
                       { "id": 2, "dc": "us", "address": "127.0.0.1:7002" }],
            "learners": [], "users": 5, "datacenters": ["eu", "us"]
        } } });
        let (text, _) = text_of(&call, data);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines.contains(&"leader: 2"), "{text}");
        assert!(lines.contains(&"snapshot_index: -"), "{text}");
        assert!(
            lines.contains(&"voters: 1 (eu 127.0.0.1:7001), 2 (us 127.0.0.1:7002)"),
            "{text}"
        );
        assert!(lines.contains(&"learners: -"), "{text}");
        assert!(lines.contains(&"datacenters: eu, us"), "{text}");
    }

    #[test]
    fn domains_print_one_line_each_and_details_as_key_values() {
        let call = plan_of(CtlCommand::Domain(DomainCommand::List));
        let data = json!({ "domain": { "listDomains": [
            { "domain": "chat.example", "hostType": "default", "status": "disabled",
              "dynamic": true, "serving": [], "accounts": 3, "version": 12 },
            { "domain": "localhost", "hostType": "localhost", "status": "enabled",
              "dynamic": false, "serving": ["eu", "us"], "accounts": 0, "version": 4 }
        ] } });
        let (text, code) = text_of(&call, data);
        assert_eq!(code, ExitCode::SUCCESS);
        assert_eq!(
            text,
            "chat.example disabled dynamic host_type=default accounts=3 serving=all\n\
             localhost enabled static host_type=localhost accounts=0 serving=eu,us\n"
        );
        let call = plan_of(CtlCommand::Domain(DomainCommand::Details {
            domain: "chat.example".into(),
        }));
        let data = json!({ "domain": { "domainDetails":
            { "domain": "chat.example", "hostType": "default", "status": "enabled",
              "dynamic": true, "serving": [], "accounts": 1, "version": 9 } } });
        assert_eq!(
            text_of(&call, data).0,
            "domain: chat.example\nhost_type: default\nstatus: enabled\nkind: dynamic\n\
             serving: all\naccounts: 1\nversion: 9\n"
        );
        let call = plan_of(CtlCommand::Domain(DomainCommand::Remove {
            domain: "chat.example".into(),
        }));
        let data = json!({ "domain": { "removeDomain": { "domain": "chat.example",
            "accounts": 1, "rosters": 0, "routingEntries": 1,
            "message": "removed domain chat.example: deleted 1 account, 0 rosters and 1 routing table entry" } } });
        assert_eq!(
            text_of(&call, data).0,
            "removed domain chat.example: deleted 1 account, 0 rosters and 1 routing table entry\n"
        );
    }

    #[test]
    fn dash_reads_the_password_from_input() {
        let command = CtlCommand::Account(AccountCommand::ChangePassword {
            user: "a@localhost".into(),
            password: "-".into(),
        });
        let call = plan(&command, &mut &b"from stdin\r\nignored\n"[..]).unwrap();
        assert_eq!(call.variables["password"], "from stdin");
    }

    #[test]
    fn dash_reads_the_whole_stanza_from_input() {
        let command = CtlCommand::Stanza(StanzaCommand::SendStanza { stanza: "-".into() });
        let call = plan(&command, &mut &b"<presence\n to='a@b'/>\n"[..]).unwrap();
        assert_eq!(call.variables["stanza"], "<presence\n to='a@b'/>");
    }

    #[test]
    fn optional_arguments_are_null() {
        let call = plan_of(CtlCommand::Session(SessionCommand::List { domain: None }));
        assert_eq!(call.variables, json!({ "domain": null }));
    }

    #[test]
    fn lists_print_one_jid_per_line() {
        let call = plan_of(CtlCommand::Account(AccountCommand::List {
            domain: "d".into(),
        }));
        let (text, code) = text_of(&call, json!({ "account": { "listUsers": ["a@d", "b@d"] } }));
        assert_eq!(text, "a@d\nb@d\n");
        assert_eq!(code, ExitCode::SUCCESS);
        let (text, _) = text_of(&call, json!({ "account": { "listUsers": [] } }));
        assert_eq!(text, "");
        let call = plan_of(CtlCommand::Roster(RosterCommand::List {
            user: "a@d".into(),
        }));
        let data = json!({ "roster": { "listContacts": [
            { "jid": "b@d", "subscription": "both" }, { "jid": "c@e", "subscription": "none" }
        ] } });
        assert_eq!(text_of(&call, data).0, "b@d\nc@e\n");
    }

    #[test]
    fn roster_commands_send_variables_and_print_one_line() {
        let call = plan_of(CtlCommand::Roster(RosterCommand::GetContact {
            user: "a@d".into(),
            contact: "b@d".into(),
        }));
        assert!(
            call.query
                .contains("getContact(user: $user, contact: $contact)"),
            "{}",
            call.query
        );
        assert_eq!(call.variables, json!({ "user": "a@d", "contact": "b@d" }));
        let data = json!({ "roster": { "getContact": {
            "jid": "b@d", "name": "Bob", "groups": ["Friends", "Work"],
            "subscription": "both", "ask": false, "pendingIn": false, "approved": false
        } } });
        assert_eq!(
            text_of(&call, data).0,
            "b@d subscription=both name=Bob groups=Friends,Work ask=none\n"
        );
        let data = json!({ "roster": { "getContact": {
            "jid": "c@d", "name": "Carol \"C\" Smith", "groups": ["Close friends"],
            "subscription": "none", "ask": true
        } } });
        assert_eq!(
            text_of(&call, data).0,
            "c@d subscription=none name=\"Carol \\\"C\\\" Smith\" \
             groups=\"Close friends\" ask=subscribe\n"
        );
        let data = json!({ "roster": { "getContact": {
            "jid": "e@d", "name": null, "groups": [], "subscription": "to", "ask": false
        } } });
        assert_eq!(
            text_of(&call, data).0,
            "e@d subscription=to name=- groups=- ask=none\n"
        );

        let call = plan_of(CtlCommand::Roster(RosterCommand::DeleteContact {
            user: "a@d".into(),
            contact: "b@d".into(),
        }));
        assert!(
            call.query
                .contains("deleteContact(user: $user, contact: $contact)"),
            "{}",
            call.query
        );
        let data = json!({ "roster": { "deleteContact": {
            "message": "removed b@d from the roster of a@d" } } });
        assert_eq!(
            text_of(&call, data).0,
            "removed b@d from the roster of a@d\n"
        );

        let call = plan_of(CtlCommand::Roster(RosterCommand::SubscribeAllToAll {
            users: vec!["a@d".into(), "b@d".into(), "c@d".into()],
        }));
        assert!(
            call.query.contains("subscribeAllToAll(users: $users)"),
            "{}",
            call.query
        );
        assert_eq!(call.variables, json!({ "users": ["a@d", "b@d", "c@d"] }));
    }

    #[test]
    fn last_messages_print_one_line_each() {
        let call = plan_of(CtlCommand::Stanza(StanzaCommand::GetLastMessages {
            caller: "a@d".into(),
            with: None,
            limit: Some(2),
            before: Some("2025-01-01T00:00:00Z".into()),
        }));
        assert!(
            call.query.contains(
                "getLastMessages(caller: $caller, with: $with, limit: $limit, before: $before)"
            ),
            "{}",
            call.query
        );
        assert_eq!(
            call.variables,
            json!({ "caller": "a@d", "with": null, "limit": 2,
                    "before": "2025-01-01T00:00:00Z" })
        );
        let data = json!({ "stanza": { "getLastMessages": [
            { "id": "1", "timestamp": "2024-12-31T23:59:58.000000Z", "sender": "b@d/phone",
              "recipient": "a@d", "body": "two\nlines", "stanza": "<message/>" },
            { "id": "2", "timestamp": "2024-12-31T23:59:59.000000Z", "sender": "a@d",
              "recipient": "b@d", "body": null, "stanza": "<message/>" },
        ] } });
        assert_eq!(
            text_of(&call, data).0,
            "2024-12-31T23:59:58.000000Z b@d/phone -> a@d: two\\nlines\n\
             2024-12-31T23:59:59.000000Z a@d -> b@d: -\n"
        );
        let (text, code) = text_of(&call, json!({ "stanza": { "getLastMessages": [] } }));
        assert_eq!((text.as_str(), code), ("", ExitCode::SUCCESS));
    }

    #[test]
    fn muc_commands_send_their_arguments_as_variables() {
        let r = || "team@muc.localhost".to_owned();
        let cases = [
            (
                MucCommand::CreateRoom {
                    room: r(),
                    owner: "boss@localhost".into(),
                    name: Some("Team".into()),
                },
                "createRoom(room: $room, owner: $owner, name: $name)",
                json!({ "room": r(), "owner": "boss@localhost", "name": "Team" }),
            ),
            (
                MucCommand::ListRooms { service: None },
                "listRooms(service: $service)",
                json!({ "service": null }),
            ),
            (
                MucCommand::ListRoomUsers { room: r() },
                "listRoomUsers(room: $room)",
                json!({ "room": r() }),
            ),
            (
                MucCommand::InviteUser {
                    room: r(),
                    sender: "a@localhost".into(),
                    recipient: "b@localhost".into(),
                    reason: None,
                },
                "inviteUser(room: $room, sender: $sender, recipient: $recipient, reason: $reason)",
                json!({ "room": r(), "sender": "a@localhost", "recipient": "b@localhost",
                        "reason": null }),
            ),
            (
                MucCommand::KickUser {
                    room: r(),
                    nick: "al".into(),
                    reason: Some("spam".into()),
                },
                "kickUser(room: $room, nick: $nick, reason: $reason)",
                json!({ "room": r(), "nick": "al", "reason": "spam" }),
            ),
            (
                MucCommand::SetAffiliation {
                    room: r(),
                    user: "a@localhost".into(),
                    affiliation: "outcast".into(),
                },
                "setUserAffiliation(room: $room, user: $user, affiliation: $affiliation)",
                json!({ "room": r(), "user": "a@localhost", "affiliation": "outcast" }),
            ),
            (
                MucCommand::SendMessageToRoom {
                    room: r(),
                    from: "a@localhost".into(),
                    body: "hi \"all\"".into(),
                },
                "sendMessageToRoom(room: $room, from: $from, body: $body)",
                json!({ "room": r(), "from": "a@localhost", "body": "hi \"all\"" }),
            ),
            (
                MucCommand::DeleteRoom {
                    room: r(),
                    reason: None,
                    alternate: Some("new@muc.localhost".into()),
                },
                "deleteRoom(room: $room, reason: $reason, alternate: $alternate)",
                json!({ "room": r(), "reason": null, "alternate": "new@muc.localhost" }),
            ),
            (
                MucCommand::GetRoomMessages {
                    room: r(),
                    limit: Some(5),
                    before: None,
                },
                "getRoomMessages(room: $room, limit: $limit, before: $before)",
                json!({ "room": r(), "limit": 5, "before": null }),
            ),
            (
                MucCommand::ChangeRoomConfiguration {
                    room: r(),
                    fields: vec![
                        ("roomname".into(), "Team = A".into()),
                        ("muc#roomconfig_publicroom".into(), "0".into()),
                    ],
                },
                "changeRoomConfiguration(room: $room, fields: $fields)",
                json!({ "room": r(), "fields": [
                    { "var": "roomname", "value": "Team = A" },
                    { "var": "muc#roomconfig_publicroom", "value": "0" },
                ] }),
            ),
        ];
        for (command, field, variables) in cases {
            let call = plan_of(CtlCommand::Muc(command));
            assert!(call.query.contains(field), "{field}: {}", call.query);
            assert!(call.query.contains("{ muc { "), "{}", call.query);
            assert_eq!(call.variables, variables, "{field}");
        }
    }

    #[test]
    fn muc_lists_print_one_line_each() {
        let call = plan_of(CtlCommand::Muc(MucCommand::ListRooms {
            service: Some("muc.localhost".into()),
        }));
        let data = json!({ "muc": { "listRooms": [
            { "jid": "a@muc.localhost", "name": "", "occupants": 0, "persistent": true,
              "public": false },
            { "jid": "b@muc.localhost", "name": "Team B", "occupants": 3, "persistent": false,
              "public": true },
        ] } });
        let (text, code) = text_of(&call, data);
        assert_eq!(code, ExitCode::SUCCESS);
        assert_eq!(
            text,
            "a@muc.localhost occupants=0 persistent=yes public=no name=-\n\
             b@muc.localhost occupants=3 persistent=no public=yes name=\"Team B\"\n"
        );
        let (text, _) = text_of(&call, json!({ "muc": { "listRooms": [] } }));
        assert_eq!(text, "");

        let call = plan_of(CtlCommand::Muc(MucCommand::ListRoomUsers {
            room: "a@muc.localhost".into(),
        }));
        let data = json!({ "muc": { "listRoomUsers": [
            { "nick": "Al Ice", "jid": "alice@localhost/desk", "role": "participant",
              "affiliation": "none" },
            { "nick": "boss", "jid": "boss@localhost/phone", "role": "moderator",
              "affiliation": "owner" },
        ] } });
        assert_eq!(
            text_of(&call, data).0,
            "\"Al Ice\" alice@localhost/desk role=participant affiliation=none\n\
             boss boss@localhost/phone role=moderator affiliation=owner\n"
        );

        let call = plan_of(CtlCommand::Muc(MucCommand::GetRoomMessages {
            room: "a@muc.localhost".into(),
            limit: None,
            before: None,
        }));
        let data = json!({ "muc": { "getRoomMessages": [
            { "id": "1", "timestamp": "2025-01-01T00:00:00.000001Z",
              "sender": "a@muc.localhost/al", "body": "two\nlines", "stanza": "<message/>" },
            { "id": "2", "timestamp": "2025-01-01T00:00:00.000002Z",
              "sender": "a@muc.localhost/boss", "body": "ok", "stanza": "<message/>" },
        ] } });
        assert_eq!(
            text_of(&call, data).0,
            "2025-01-01T00:00:00.000001Z a@muc.localhost/al: two\\nlines\n\
             2025-01-01T00:00:00.000002Z a@muc.localhost/boss: ok\n"
        );

        let call = plan_of(CtlCommand::Muc(MucCommand::CreateRoom {
            room: "a@muc.localhost".into(),
            owner: "boss@localhost".into(),
            name: None,
        }));
        let data = json!({ "muc": { "createRoom":
            { "room": "a@muc.localhost", "message": "created room a@muc.localhost" } } });
        assert_eq!(text_of(&call, data).0, "created room a@muc.localhost\n");
    }

    #[test]
    fn check_password_exits_one_when_wrong() {
        let call = plan_of(CtlCommand::Account(AccountCommand::CheckPassword {
            user: "a@d".into(),
            password: "p".into(),
        }));
        let wrong = json!({ "account": { "checkPassword":
            { "correct": false, "message": "the password of a@d is wrong" } } });
        let (text, code) = text_of(&call, wrong);
        assert_eq!(text, "the password of a@d is wrong\n");
        assert_eq!(code, ExitCode::from(EXIT_REFUSED));
        let right = json!({ "account": { "checkPassword":
            { "correct": true, "message": "the password of a@d is correct" } } });
        assert_eq!(text_of(&call, right).1, ExitCode::SUCCESS);
    }

    #[test]
    fn status_prints_key_value_lines() {
        let call = plan_of(CtlCommand::Server(ServerCommand::Status));
        let data = json!({ "server": { "status": {
            "status": "running", "nodeName": "tern@host", "version": "0.1.0",
            "uptimeSeconds": 3723, "startedAt": "2025-01-01T00:00:00Z",
            "domains": ["localhost", "example.org"], "sessionsOnline": 2,
            "registeredUsers": 5, "adminAddress": null, "dataDir": "tern-data"
        } } });
        let (text, _) = text_of(&call, data);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "status: running");
        assert!(lines.contains(&"uptime: 1h 2m 3s"), "{text}");
        assert!(lines.contains(&"domains: localhost, example.org"), "{text}");
        assert!(lines.contains(&"sessions_online: 2"), "{text}");
        assert!(lines.contains(&"admin_address: -"), "{text}");
    }

    #[test]
    fn json_prints_the_raw_data() {
        let call = plan_of(CtlCommand::Account(AccountCommand::Count {
            domain: "d".into(),
        }));
        let data = json!({ "account": { "countUsers": 7 } });
        let mut out = Vec::new();
        render(&call, &data, true, &mut out).unwrap();
        let printed: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(printed, data);
    }

    #[test]
    fn missing_answer_is_a_bad_response() {
        let call = plan_of(CtlCommand::Server(ServerCommand::Stop));
        let e = render(&call, &json!({ "server": {} }), false, &mut Vec::new()).unwrap_err();
        assert!(matches!(e, CtlError::BadResponse(_)), "{e:?}");
    }
}
