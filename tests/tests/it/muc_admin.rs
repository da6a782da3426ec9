//! `tern ctl muc` against a running node: rooms made, changed and destroyed with the command
//! line, and what raw clients joined to them see.

use tern_tests::client::RawClient;
use tern_tests::server::{TestServer, ctl_ok, ctl_refused};

const ROOM: &str = "team@muc.localhost";

/// Sends an XEP-0199 ping to the server and waits for the answer: everything the client sent
/// before has been handled.
async fn sync(client: &mut RawClient, id: &str) {
    client
        .send(&format!(
            "<iq type='get' id='{id}' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>"
        ))
        .await;
    client.read_until(&format!("id='{id}'")).await;
}

/// POSTs a GraphQL `query` to the server's admin API with its token; returns the JSON answer.
async fn graphql(server: &TestServer, query: &str) -> serde_json::Value {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let token = std::fs::read_to_string(server.dir.join("data").join("admin.token"))
        .expect("the admin token");
    let body = serde_json::json!({ "query": query }).to_string();
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", server.admin_port))
        .await
        .expect("connect to the admin API");
    let request = format!(
        "POST /api/graphql HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
         Authorization: Bearer {}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        token.trim(),
        body.len()
    );
    s.write_all(request.as_bytes()).await.expect("send");
    let mut answer = String::new();
    s.read_to_string(&mut answer).await.expect("read");
    let (_, json) = answer.split_once("\r\n\r\n").expect("an HTTP answer");
    serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {answer}"))
}

/// The value of attribute `name` in the first element of `xml` that has it.
fn attr<'a>(xml: &'a str, name: &str) -> &'a str {
    let start = xml
        .find(&format!(" {name}='"))
        .unwrap_or_else(|| panic!("no {name} in {xml}"))
        + name.len()
        + 3;
    let end = start + xml[start..].find('\'').expect("a closing quote");
    &xml[start..end]
}

#[tokio::test]
async fn muc_commands_drive_rooms_that_clients_see() {
    let server = TestServer::start("admin-muc", "");
    for user in ["alice", "bob"] {
        server.register(user, "localhost", "pw");
    }

    let created = ctl_ok(
        &server,
        &[
            "muc",
            "create-room",
            "--room",
            ROOM,
            "--owner",
            "boss@localhost",
            "--name",
            "Team",
        ],
    );
    assert_eq!(created, "created room team@muc.localhost\n");
    let refused = ctl_refused(
        &server,
        &[
            "muc",
            "create-room",
            "--room",
            ROOM,
            "--owner",
            "boss@localhost",
        ],
    );
    assert!(refused.contains("exists already"), "{refused}");
    assert_eq!(
        ctl_ok(&server, &["muc", "list-rooms"]),
        "team@muc.localhost occupants=0 persistent=yes public=yes name=Team\n"
    );

    // Alice joins; the room is open at once.
    let mut alice = RawClient::login(server.starttls_port, "localhost", "alice", "pw", "a").await;
    alice
        .send(&format!(
            "<presence to='{ROOM}/al'><x xmlns='http://jabber.org/protocol/muc'/></presence>"
        ))
        .await;
    let joined = alice.read_until("code='110'").await;
    assert!(joined.contains("from='team@muc.localhost/al'"), "{joined}");
    // The subject follows the join.
    alice.read_until("</message>").await;
    assert_eq!(
        ctl_ok(&server, &["muc", "list-room-users", "--room", ROOM]),
        "al alice@localhost/a role=participant affiliation=none\n"
    );
    assert_eq!(
        ctl_ok(
            &server,
            &["muc", "list-rooms", "--service", "muc.localhost"]
        ),
        "team@muc.localhost occupants=1 persistent=yes public=yes name=Team\n"
    );

    // A message for Alice reaches her as a groupchat message from her nick.
    let sent = ctl_ok(
        &server,
        &[
            "muc",
            "send-message-to-room",
            "--room",
            ROOM,
            "--from",
            "alice@localhost",
            "--body",
            "hello room",
        ],
    );
    assert_eq!(
        sent,
        "sent a message from alice@localhost to team@muc.localhost\n"
    );
    let got = alice.read_until("</message>").await;
    assert!(
        got.contains("type='groupchat'")
            && got.contains("from='team@muc.localhost/al'")
            && got.contains("<body>hello room</body>"),
        "{got}"
    );
    let stanza_id = &got[got.find("<stanza-id").expect("a stanza id")..];
    assert_eq!(attr(stanza_id, "by"), ROOM);
    let stanza_id = attr(stanza_id, "id");
    let refused = ctl_refused(
        &server,
        &[
            "muc",
            "send-message-to-room",
            "--room",
            ROOM,
            "--from",
            "bob@localhost",
            "--body",
            "hi",
        ],
    );
    assert!(
        refused.contains("error: occupant bob@localhost of team@muc.localhost not found"),
        "{refused}"
    );

    // The archive has it, stamped with the time of its id.
    let printed = ctl_ok(&server, &["muc", "get-room-messages", "--room", ROOM]);
    let line = printed.trim_end();
    assert_eq!(printed.lines().count(), 1, "{printed}");
    assert!(
        line.ends_with(" team@muc.localhost/al: hello room"),
        "{printed}"
    );
    let timestamp = line.split(' ').next().expect("a timestamp");
    assert!(
        timestamp.len() == 27 && timestamp.ends_with('Z'),
        "{printed}"
    );
    let printed = ctl_ok(
        &server,
        &[
            "--json",
            "muc",
            "get-room-messages",
            "--room",
            ROOM,
            "--limit",
            "1",
        ],
    );
    let data: serde_json::Value = serde_json::from_str(&printed).expect("JSON");
    let message = &data["muc"]["getRoomMessages"][0];
    assert_eq!(message["id"], stanza_id, "{printed}");
    assert_eq!(message["timestamp"], timestamp, "{printed}");
    assert_eq!(message["sender"], "team@muc.localhost/al");
    assert_eq!(message["body"], "hello room");
    assert_eq!(
        ctl_ok(
            &server,
            &[
                "muc",
                "get-room-messages",
                "--room",
                ROOM,
                "--before",
                timestamp,
            ],
        ),
        ""
    );

    // Bob, available, is invited on Alice's behalf.
    let mut bob = RawClient::login(server.starttls_port, "localhost", "bob", "pw", "b").await;
    bob.send("<presence/>").await;
    sync(&mut bob, "sync1").await;
    let invited = ctl_ok(
        &server,
        &[
            "muc",
            "invite-user",
            "--room",
            ROOM,
            "--sender",
            "alice@localhost",
            "--recipient",
            "bob@localhost",
            "--reason",
            "come in",
        ],
    );
    assert_eq!(
        invited,
        "invited bob@localhost to team@muc.localhost on behalf of alice@localhost\n"
    );
    let invitation = bob.read_until("</message>").await;
    assert!(
        invitation.contains("from='team@muc.localhost'")
            && invitation.contains("<invite from='alice@localhost'>")
            && invitation.contains("come in"),
        "{invitation}"
    );

    // Kicked: an unavailable presence with status 307.
    let kicked = ctl_ok(
        &server,
        &[
            "muc",
            "kick-user",
            "--room",
            ROOM,
            "--nick",
            "al",
            "--reason",
            "bye",
        ],
    );
    assert_eq!(kicked, "kicked al from team@muc.localhost\n");
    let presence = alice.read_until("</presence>").await;
    assert!(
        presence.contains("type='unavailable'") && presence.contains("code='307'"),
        "{presence}"
    );
    assert_eq!(
        ctl_ok(&server, &["muc", "list-room-users", "--room", ROOM]),
        ""
    );
    let refused = ctl_refused(
        &server,
        &["muc", "kick-user", "--room", ROOM, "--nick", "al"],
    );
    assert!(refused.contains("not found"), "{refused}");

    // Banned: joining again is refused with <forbidden/>.
    let banned = ctl_ok(
        &server,
        &[
            "muc",
            "set-affiliation",
            "--room",
            ROOM,
            "--user",
            "alice@localhost",
            "--affiliation",
            "outcast",
        ],
    );
    assert_eq!(
        banned,
        "set the affiliation of alice@localhost with team@muc.localhost to outcast\n"
    );
    alice
        .send(&format!(
            "<presence to='{ROOM}/al'><x xmlns='http://jabber.org/protocol/muc'/></presence>"
        ))
        .await;
    let refusal = alice.read_until("</presence>").await;
    assert!(
        refusal.contains("type='error'") && refusal.contains("<forbidden"),
        "{refusal}"
    );

    // Renamed: disco#info of the room and list-rooms show the new name.
    let changed = ctl_ok(
        &server,
        &[
            "muc",
            "change-room-configuration",
            "--room",
            ROOM,
            "--field",
            "roomname=Renamed Team",
            "--field",
            "muc#roomconfig_publicroom=0",
        ],
    );
    assert_eq!(
        changed,
        "changed muc#roomconfig_roomname, muc#roomconfig_publicroom of team@muc.localhost\n"
    );
    bob.send(&format!(
        "<iq type='get' id='info1' to='{ROOM}'>\
         <query xmlns='http://jabber.org/protocol/disco#info'/></iq>"
    ))
    .await;
    let info = bob.read_until("</iq>").await;
    assert!(info.contains("name='Renamed Team'"), "{info}");
    assert_eq!(
        ctl_ok(&server, &["muc", "list-rooms"]),
        "team@muc.localhost occupants=0 persistent=yes public=no name=\"Renamed Team\"\n"
    );
    let refused = ctl_refused(
        &server,
        &[
            "muc",
            "change-room-configuration",
            "--room",
            ROOM,
            "--field",
            "colour=blue",
        ],
    );
    assert!(
        refused.contains("unknown room configuration field"),
        "{refused}"
    );

    // Deleted: no rooms left, and the room is unknown.
    let deleted = ctl_ok(
        &server,
        &["muc", "delete-room", "--room", ROOM, "--reason", "done"],
    );
    assert_eq!(deleted, "deleted room team@muc.localhost\n");
    assert_eq!(ctl_ok(&server, &["muc", "list-rooms"]), "");
    let refused = ctl_refused(&server, &["muc", "list-room-users", "--room", ROOM]);
    assert!(
        refused.contains("error: room team@muc.localhost not found"),
        "{refused}"
    );
    let refused = ctl_refused(
        &server,
        &["muc", "get-room-messages", "--room", "ghost@muc.localhost"],
    );
    assert!(
        refused.contains("error: room ghost@muc.localhost not found"),
        "{refused}"
    );
    let answer = graphql(
        &server,
        "{ muc { listRoomUsers(room: \"team@muc.localhost\") { nick } } }",
    )
    .await;
    assert_eq!(
        answer["errors"][0]["extensions"]["code"], "NOT_FOUND",
        "{answer}"
    );
    assert_eq!(
        answer["errors"][0]["message"], "room team@muc.localhost not found",
        "{answer}"
    );
    let refused = ctl_refused(
        &server,
        &["muc", "list-room-users", "--room", "team@localhost"],
    );
    assert!(
        refused.contains("localhost is not a MUC service of this server"),
        "{refused}"
    );
}
