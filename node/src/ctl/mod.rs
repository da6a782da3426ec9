//! `tern ctl`: the admin API's command-line client, in the `mongooseimctl` style
//! (`tern ctl <category> <command> --arg value`). The reference is `docs/admin.md`.
//!
//! # Layout
//! - this file: the command line ([`CtlArgs`] and the category enums) and [`run`].
//! - `discovery`: finding the node's admin address and token from its configuration.
//! - `client`: a small blocking HTTP/1.1 client that posts GraphQL.
//! - `command`: each command's GraphQL operation and how its answer is printed.
//! - `error`: [`CtlError`] and the exit codes.
//!
//! Exit codes: 0 success; 1 the node refused the command (or `check-password` found the
//! password wrong); 2 bad command line (from clap); 3 the node could not be reached or
//! authenticated, or the configuration is wrong.

mod client;
mod command;
mod discovery;
mod error;

use std::io::{self, BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;

pub(crate) use self::client::AdminClient;
#[cfg(test)]
pub(crate) use self::client::request;
pub use self::error::{CtlError, EXIT_REFUSED, EXIT_UNAVAILABLE};

/// Administer a running node through its admin API.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct CtlArgs {
    /// The node's configuration file; without it, the defaults of `tern serve` (data in
    /// ./tern-data, admin API on 127.0.0.1:5551).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Print the data the admin API returned as JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    /// The category.
    #[command(subcommand)]
    pub command: CtlCommand,
}

/// The command categories.
#[derive(Debug, Clone, PartialEq, Eq, clap::Subcommand)]
pub enum CtlCommand {
    /// Accounts: register, remove, list, count, check or change passwords.
    #[command(subcommand)]
    Account(AccountCommand),
    /// Sessions (bound resources): list, count, kick.
    #[command(subcommand)]
    Session(SessionCommand),
    /// Send messages and raw stanzas; read an account's last archived messages.
    #[command(subcommand)]
    Stanza(StanzaCommand),
    /// Rosters: list, get, add and delete contacts, set mutual subscriptions.
    #[command(subcommand)]
    Roster(RosterCommand),
    /// The node: status, stop.
    #[command(subcommand)]
    Server(ServerCommand),
    /// Domains: add, remove, enable, disable dynamic domains; list them.
    #[command(subcommand)]
    Domain(DomainCommand),
    /// The global routing table: this node's view of its Raft group, users' homes.
    #[command(subcommand)]
    Mesh(MeshCommand),
    /// Multi-user chat rooms (XEP-0045): create, list, configure, delete; occupants, messages.
    #[command(subcommand)]
    Muc(MucCommand),
    /// Offline messages (XEP-0160): count, delete.
    #[command(subcommand)]
    Offline(OfflineCommand),
    /// vCards (XEP-0054): get, set.
    #[command(subcommand)]
    Vcard(VcardCommand),
    /// Last activity (XEP-0012): get, set.
    #[command(subcommand)]
    Last(LastCommand),
    /// Private XML storage (XEP-0049): get, set.
    #[command(subcommand)]
    Private(PrivateCommand),
}

/// `tern ctl offline ...`.
#[derive(Debug, Clone, PartialEq, Eq, clap::Subcommand)]
pub enum OfflineCommand {
    /// Print how many offline messages are stored for an account.
    Count {
        /// The account's bare JID.
        #[arg(long)]
        user: String,
    },
    /// Delete every offline message stored for an account.
    Delete {
        /// The account's bare JID.
        #[arg(long)]
        user: String,
    },
}

/// `tern ctl vcard ...`.
#[derive(Debug, Clone, PartialEq, Eq, clap::Subcommand)]
pub enum VcardCommand {
    /// Print an account's vCard as XML (`-` when none is stored).
    Get {
        /// The account's bare JID.
        #[arg(long)]
        user: String,
    },
    /// Replace an account's vCard.
    Set {
        /// The account's bare JID.
        #[arg(long)]
        user: String,
        /// The `<vCard xmlns='vcard-temp'>` document; `-` reads it from standard input.
        #[arg(long)]
        vcard: String,
    },
}

/// `tern ctl last ...`.
#[derive(Debug, Clone, PartialEq, Eq, clap::Subcommand)]
pub enum LastCommand {
    /// Print when an account was last available, and the status it left.
    Get {
        /// The account's bare JID.
        #[arg(long)]
        user: String,
    },
    /// Record an account's last activity.
    Set {
        /// The account's bare JID.
        #[arg(long)]
        user: String,
        /// Seconds since the Unix epoch (default: now).
        #[arg(long)]
        timestamp: Option<u64>,
        /// The status text.
        #[arg(long)]
        status: Option<String>,
    },
}

/// `tern ctl private ...`.
#[derive(Debug, Clone, PartialEq, Eq, clap::Subcommand)]
pub enum PrivateCommand {
    /// Print an account's private XML stored under one element name and namespace.
    Get {
        /// The account's bare JID.
        #[arg(long)]
        user: String,
        /// The element's name (`storage`).
        #[arg(long)]
        element: String,
        /// The element's namespace (`storage:bookmarks`).
        #[arg(long)]
        namespace: String,
    },
    /// Store one element of private XML for an account.
    Set {
        /// The account's bare JID.
        #[arg(long)]
        user: String,
        /// The element, as XML; `-` reads it from standard input.
        #[arg(long)]
        xml: String,
    },
}

/// `tern ctl account ...`.
#[derive(Debug, Clone, PartialEq, Eq, clap::Subcommand)]
pub enum AccountCommand {
    /// Create the account USERNAME@DOMAIN.
    Register {
        /// The localpart of the new account.
        #[arg(long)]
        username: String,
        /// A domain served by the node.
        #[arg(long)]
        domain: String,
        /// The password; `-` reads it from the first line of standard input.
        #[arg(long)]
        password: String,
        /// The account's home datacenter (default: the node's own, `cluster.dc`).
        #[arg(long, value_name = "DC")]
        home: Option<String>,
    },
    /// Remove an account with its roster, ending its sessions.
    Remove {
        /// The account's bare JID.
        #[arg(long)]
        user: String,
    },
    /// List the accounts of a domain, one JID per line.
    List {
        /// A domain served by the node.
        #[arg(long)]
        domain: String,
    },
    /// Count the accounts of a domain.
    Count {
        /// A domain served by the node.
        #[arg(long)]
        domain: String,
    },
    /// Check a password: exit 0 if it is right, 1 if it is wrong.
    CheckPassword {
        /// The account's bare JID.
        #[arg(long)]
        user: String,
        /// The password to check; `-` reads it from standard input.
        #[arg(long)]
        password: String,
    },
    /// Replace an account's password.
    ChangePassword {
        /// The account's bare JID.
        #[arg(long)]
        user: String,
        /// The new password; `-` reads it from standard input.
        #[arg(long)]
        password: String,
    },
}

/// `tern ctl session ...`.
#[derive(Debug, Clone, PartialEq, Eq, clap::Subcommand)]
pub enum SessionCommand {
    /// List the sessions, one full JID per line.
    List {
        /// Only sessions of this domain.
        #[arg(long)]
        domain: Option<String>,
    },
    /// Count the sessions.
    Count {
        /// Only sessions of this domain.
        #[arg(long)]
        domain: Option<String>,
    },
    /// End a session with a policy-violation stream error.
    Kick {
        /// The session's full JID (user@domain/resource).
        #[arg(long)]
        user: String,
        /// The text sent to the client.
        #[arg(long)]
        reason: Option<String>,
    },
}

/// `tern ctl stanza ...`.
#[derive(Debug, Clone, PartialEq, Eq, clap::Subcommand)]
pub enum StanzaCommand {
    /// Send a chat message.
    SendMessage {
        /// The sender: a JID on a domain served by the node.
        #[arg(long)]
        from: String,
        /// The recipient.
        #[arg(long)]
        to: String,
        /// The message text.
        #[arg(long)]
        body: String,
    },
    /// Route a raw message, presence or iq stanza that has from and to attributes.
    SendStanza {
        /// The stanza's XML; `-` reads it from standard input.
        #[arg(long)]
        stanza: String,
    },
    /// Print the newest messages of an account's archive (XEP-0313), oldest first, one per
    /// line: `TIMESTAMP FROM -> TO: BODY`.
    GetLastMessages {
        /// The account's bare JID.
        #[arg(long)]
        caller: String,
        /// Only messages exchanged with this JID (compared bare).
        #[arg(long)]
        with: Option<String>,
        /// The most messages printed (default 50, at most 500).
        #[arg(long)]
        limit: Option<u64>,
        /// Only messages archived before this time (RFC 3339 in UTC, like
        /// 2025-01-31T09:30:00Z).
        #[arg(long, value_name = "TIMESTAMP")]
        before: Option<String>,
    },
}

/// `tern ctl roster ...`.
#[derive(Debug, Clone, PartialEq, Eq, clap::Subcommand)]
pub enum RosterCommand {
    /// List an account's contacts, one JID per line.
    List {
        /// The account's bare JID.
        #[arg(long)]
        user: String,
    },
    /// Add a contact to an account's roster, or update its name and groups.
    AddContact {
        /// The account's bare JID.
        #[arg(long)]
        user: String,
        /// The contact's bare JID.
        #[arg(long)]
        contact: String,
        /// The contact's display name.
        #[arg(long)]
        name: Option<String>,
        /// A roster group; repeat for several.
        #[arg(long = "group", value_name = "GROUP")]
        groups: Vec<String>,
    },
    /// Make two accounts subscribed to each other's presence.
    SetMutualSubscription {
        /// One account's bare JID.
        #[arg(long)]
        user_a: String,
        /// The other account's bare JID.
        #[arg(long)]
        user_b: String,
    },
    /// Print one contact of an account's roster on one line.
    GetContact {
        /// The account's bare JID.
        #[arg(long)]
        user: String,
        /// The contact's bare JID.
        #[arg(long)]
        contact: String,
    },
    /// Remove a contact from an account's roster, cancelling the subscriptions both ways.
    DeleteContact {
        /// The account's bare JID.
        #[arg(long)]
        user: String,
        /// The contact's bare JID.
        #[arg(long)]
        contact: String,
    },
    /// Make every two of 2 to 100 accounts subscribed to each other's presence.
    SubscribeAllToAll {
        /// An account's bare JID; repeat the flag for each account.
        #[arg(long = "user", value_name = "JID", required = true)]
        users: Vec<String>,
    },
}

/// `tern ctl server ...`.
#[derive(Debug, Clone, PartialEq, Eq, clap::Subcommand)]
pub enum ServerCommand {
    /// Show the node's status as `key: value` lines.
    Status,
    /// Stop the node gracefully.
    Stop,
}

/// `tern ctl mesh ...`.
#[derive(Debug, Clone, PartialEq, Eq, clap::Subcommand)]
pub enum MeshCommand {
    /// Show this node's view of the routing table's Raft group as `key: value` lines.
    Status,
    /// Show where the routing table says a user lives (exit 1 when it has no entry).
    Home {
        /// The user's bare JID.
        #[arg(long)]
        jid: String,
    },
    /// Add a node to the routing table's group as a learner (a non-voting member).
    AddLearner {
        /// Its Raft node id.
        #[arg(long)]
        node: u64,
        /// Its datacenter.
        #[arg(long)]
        dc: String,
        /// Where it answers Raft RPCs (`host:port`).
        #[arg(long)]
        address: String,
    },
    /// Make learners voters.
    Promote {
        /// Raft node ids (repeat the flag for several).
        #[arg(long = "node", required = true)]
        nodes: Vec<u64>,
    },
    /// Make voters learners.
    Demote {
        /// Raft node ids (repeat the flag for several).
        #[arg(long = "node", required = true)]
        nodes: Vec<u64>,
    },
    /// Remove members from the group (voters are demoted first).
    Remove {
        /// Raft node ids (repeat the flag for several).
        #[arg(long = "node", required = true)]
        nodes: Vec<u64>,
    },
    /// Remove a datacenter from the table's registry (refused while anything refers to it).
    RemoveDc {
        /// The datacenter's name.
        #[arg(long)]
        dc: String,
    },
    /// Move an account's home, with its data, to another datacenter.
    Rehome {
        /// The account's bare JID.
        #[arg(long)]
        jid: String,
        /// The datacenter it moves to.
        #[arg(long)]
        dc: String,
    },
}

/// `tern ctl muc ...`.
#[derive(Debug, Clone, PartialEq, Eq, clap::Subcommand)]
pub enum MucCommand {
    /// Create a persistent room homed in this node's datacenter.
    CreateRoom {
        /// The room's bare JID, on a MUC service of the node (`room@muc.localhost`).
        #[arg(long, value_name = "JID")]
        room: String,
        /// The room's owner: a user's bare JID.
        #[arg(long, value_name = "JID")]
        owner: String,
        /// The room's name.
        #[arg(long)]
        name: Option<String>,
    },
    /// List the rooms homed here, one per line:
    /// `JID occupants=N persistent=yes|no public=yes|no name=NAME`.
    ListRooms {
        /// Only rooms of this MUC service (`muc.localhost`).
        #[arg(long, value_name = "DOMAIN")]
        service: Option<String>,
    },
    /// List a room's occupants, one per line: `NICK JID role=R affiliation=A`.
    ListRoomUsers {
        /// The room's bare JID.
        #[arg(long, value_name = "JID")]
        room: String,
    },
    /// Invite a user to a room on behalf of another (a mediated invitation from the room).
    InviteUser {
        /// The room's bare JID.
        #[arg(long, value_name = "JID")]
        room: String,
        /// Who invites: a user's bare JID.
        #[arg(long, value_name = "JID")]
        sender: String,
        /// Who is invited: a user's bare JID.
        #[arg(long, value_name = "JID")]
        recipient: String,
        /// The text of the invitation.
        #[arg(long, value_name = "TEXT")]
        reason: Option<String>,
    },
    /// Kick an occupant out of a room (status 307).
    KickUser {
        /// The room's bare JID.
        #[arg(long, value_name = "JID")]
        room: String,
        /// The occupant's nick.
        #[arg(long)]
        nick: String,
        /// The text sent with the kick.
        #[arg(long, value_name = "TEXT")]
        reason: Option<String>,
    },
    /// Set a user's affiliation with a room (`outcast` bans).
    SetAffiliation {
        /// The room's bare JID.
        #[arg(long, value_name = "JID")]
        room: String,
        /// The user's bare JID.
        #[arg(long, value_name = "JID")]
        user: String,
        /// The affiliation.
        #[arg(long, value_parser = ["owner", "admin", "member", "outcast", "none"])]
        affiliation: String,
    },
    /// Send a groupchat message to a room as one of its occupants.
    SendMessageToRoom {
        /// The room's bare JID.
        #[arg(long, value_name = "JID")]
        room: String,
        /// The sender: a user's JID; it must be an occupant of the room.
        #[arg(long, value_name = "JID")]
        from: String,
        /// The message text.
        #[arg(long, value_name = "TEXT")]
        body: String,
    },
    /// Destroy a room, telling its occupants.
    DeleteRoom {
        /// The room's bare JID.
        #[arg(long, value_name = "JID")]
        room: String,
        /// The text sent to the occupants.
        #[arg(long, value_name = "TEXT")]
        reason: Option<String>,
        /// A room to go to instead (its bare JID), sent to the occupants.
        #[arg(long, value_name = "JID")]
        alternate: Option<String>,
    },
    /// Print the newest messages of a room's archive, oldest first, one per line:
    /// `TIMESTAMP FROM: BODY`.
    GetRoomMessages {
        /// The room's bare JID.
        #[arg(long, value_name = "JID")]
        room: String,
        /// The most messages printed (default 50, at most 500).
        #[arg(long, value_name = "N")]
        limit: Option<u64>,
        /// Only messages sent before this time (RFC 3339 in UTC, like 2025-01-31T09:30:00Z).
        #[arg(long, value_name = "TIMESTAMP")]
        before: Option<String>,
    },
    /// Change fields of a room's configuration.
    ChangeRoomConfiguration {
        /// The room's bare JID.
        #[arg(long, value_name = "JID")]
        room: String,
        /// A field and its value, `VAR=VALUE`: a `muc#roomconfig_*` name or the same without
        /// the prefix (`roomname=Team`); repeat for several.
        #[arg(long = "field", value_name = "VAR=VALUE", required = true,
              value_parser = config_field)]
        fields: Vec<(String, String)>,
    },
}

/// A `--field VAR=VALUE` argument, split at the first `=`.
fn config_field(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((var, value)) if !var.trim().is_empty() => {
            Ok((var.trim().to_owned(), value.to_owned()))
        }
        _ => Err(format!("expected VAR=VALUE, found {text:?}")),
    }
}

/// `tern ctl domain ...`.
#[derive(Debug, Clone, PartialEq, Eq, clap::Subcommand)]
pub enum DomainCommand {
    /// Add a dynamic domain (enabled) with a host type of `general.host_types`.
    Add {
        /// The domain name.
        #[arg(long)]
        domain: String,
        /// Its host type.
        #[arg(long)]
        host_type: String,
    },
    /// Remove a dynamic domain: close its sessions, delete its accounts and rosters.
    Remove {
        /// The domain name.
        #[arg(long)]
        domain: String,
    },
    /// Enable a disabled dynamic domain.
    Enable {
        /// The domain name.
        #[arg(long)]
        domain: String,
    },
    /// Disable a dynamic domain: close its sessions, refuse logins; its data is kept.
    Disable {
        /// The domain name.
        #[arg(long)]
        domain: String,
    },
    /// List every domain, static and dynamic, one per line.
    List,
    /// Show one domain as `key: value` lines.
    Details {
        /// The domain name.
        #[arg(long)]
        domain: String,
    },
}

/// Runs `tern ctl`: finds the node, sends the command, prints the answer to standard output
/// (errors to standard error, as `error: <message>`), and returns the exit code.
pub fn run(args: CtlArgs) -> ExitCode {
    let stdin = io::stdin();
    let mut input = stdin.lock();
    let stdout = io::stdout();
    let mut out = stdout.lock();
    match execute(&args, &mut input, &mut out) {
        Ok(code) => code,
        Err(e) => {
            let _ = out.flush();
            let _ = writeln!(io::stderr().lock(), "error: {}", error::Chain(&e));
            e.exit_code()
        }
    }
}

/// [`run`] with its input and output given.
fn execute(
    args: &CtlArgs,
    input: &mut dyn BufRead,
    out: &mut dyn Write,
) -> Result<ExitCode, CtlError> {
    let call = command::plan(&args.command, input)?;
    let target = discovery::discover(args.config.as_deref())?;
    let data = AdminClient::new(&target).graphql(call.query, call.variables.clone())?;
    command::render(&call, &data, args.json, out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    /// The shape of the `tern` binary's command line, as far as `ctl` goes.
    #[derive(Debug, Parser)]
    struct Cli {
        #[command(subcommand)]
        command: Top,
    }

    #[derive(Debug, clap::Subcommand)]
    enum Top {
        Ctl(CtlArgs),
    }

    fn parse(line: &str) -> Result<CtlArgs, clap::Error> {
        let words = std::iter::once("tern").chain(line.split_whitespace());
        Cli::try_parse_from(words).map(|cli| match cli.command {
            Top::Ctl(args) => args,
        })
    }

    #[test]
    fn parses_register_exactly_as_scripts_write_it() {
        let args =
            parse("ctl account register --username alice --domain localhost --password s3cret")
                .unwrap();
        assert_eq!(
            args,
            CtlArgs {
                config: None,
                json: false,
                command: CtlCommand::Account(AccountCommand::Register {
                    username: "alice".into(),
                    domain: "localhost".into(),
                    password: "s3cret".into(),
                    home: None,
                }),
            }
        );
        let args = parse(
            "ctl account register --username alice --domain localhost --password s3cret \
             --home eu-west",
        )
        .unwrap();
        assert!(matches!(
            args.command,
            CtlCommand::Account(AccountCommand::Register { home: Some(h), .. }) if h == "eu-west"
        ));
    }

    #[test]
    fn parses_domain_commands_exactly_as_scripts_write_them() {
        let d = || "chat.example".to_owned();
        let cases = [
            (
                "ctl domain add --domain chat.example --host-type default",
                DomainCommand::Add {
                    domain: d(),
                    host_type: "default".into(),
                },
            ),
            (
                "ctl domain remove --domain chat.example",
                DomainCommand::Remove { domain: d() },
            ),
            (
                "ctl domain enable --domain chat.example",
                DomainCommand::Enable { domain: d() },
            ),
            (
                "ctl domain disable --domain chat.example",
                DomainCommand::Disable { domain: d() },
            ),
            ("ctl domain list", DomainCommand::List),
            (
                "ctl domain details --domain chat.example",
                DomainCommand::Details { domain: d() },
            ),
        ];
        for (line, command) in cases {
            let args = parse(line).unwrap_or_else(|e| panic!("{line}: {e}"));
            assert_eq!(args.command, CtlCommand::Domain(command), "{line}");
        }
        for line in [
            "ctl domain add --domain chat.example",
            "ctl domain add --host-type default",
            "ctl domain remove",
            "ctl domain details",
            "ctl domain rename --domain chat.example",
        ] {
            assert!(parse(line).is_err(), "{line}");
        }
    }

    #[test]
    fn global_options_go_anywhere() {
        for line in [
            "ctl --config t.toml --json account list --domain d",
            "ctl account --json list --config t.toml --domain d",
            "ctl account list --domain d --config t.toml --json",
        ] {
            let args = parse(line).unwrap();
            assert_eq!(args.config, Some(PathBuf::from("t.toml")), "{line}");
            assert!(args.json, "{line}");
            assert_eq!(
                args.command,
                CtlCommand::Account(AccountCommand::List { domain: "d".into() })
            );
        }
    }

    #[test]
    fn parses_every_command() {
        let cases = [
            "ctl account remove --user a@d",
            "ctl account count --domain d",
            "ctl account check-password --user a@d --password p",
            "ctl account change-password --user a@d --password p",
            "ctl session list",
            "ctl session list --domain d",
            "ctl session count",
            "ctl session kick --user a@d/r --reason bye",
            "ctl stanza send-message --from a@d --to b@d --body hi",
            "ctl stanza send-stanza --stanza <presence/>",
            "ctl roster list --user a@d",
            "ctl roster add-contact --user a@d --contact b@d --name B --group x --group y",
            "ctl roster set-mutual-subscription --user-a a@d --user-b b@d",
            "ctl roster get-contact --user a@d --contact b@d",
            "ctl roster delete-contact --user a@d --contact b@d",
            "ctl roster subscribe-all-to-all --user a@d --user b@d --user c@d",
            "ctl stanza get-last-messages --caller a@d",
            "ctl stanza get-last-messages --caller a@d --with b@d --limit 5 \
             --before 2025-01-31T09:30:00Z",
            "ctl server status",
            "ctl server stop",
        ];
        for line in cases {
            assert!(parse(line).is_ok(), "{line}: {:?}", parse(line).err());
        }
        let args =
            parse("ctl roster add-contact --user a@d --contact b@d --group x --group y").unwrap();
        assert_eq!(
            args.command,
            CtlCommand::Roster(RosterCommand::AddContact {
                user: "a@d".into(),
                contact: "b@d".into(),
                name: None,
                groups: vec!["x".into(), "y".into()],
            })
        );
        let args = parse("ctl roster subscribe-all-to-all --user a@d --user b@d").unwrap();
        assert_eq!(
            args.command,
            CtlCommand::Roster(RosterCommand::SubscribeAllToAll {
                users: vec!["a@d".into(), "b@d".into()],
            })
        );
        let args = parse("ctl stanza get-last-messages --caller a@d --limit 7").unwrap();
        assert_eq!(
            args.command,
            CtlCommand::Stanza(StanzaCommand::GetLastMessages {
                caller: "a@d".into(),
                with: None,
                limit: Some(7),
                before: None,
            })
        );
    }

    #[test]
    fn parses_muc_commands_exactly_as_scripts_write_them() {
        let r = || "team@muc.localhost".to_owned();
        let cases = [
            (
                "ctl muc create-room --room team@muc.localhost --owner boss@localhost --name Team",
                MucCommand::CreateRoom {
                    room: r(),
                    owner: "boss@localhost".into(),
                    name: Some("Team".into()),
                },
            ),
            (
                "ctl muc list-rooms --service muc.localhost",
                MucCommand::ListRooms {
                    service: Some("muc.localhost".into()),
                },
            ),
            (
                "ctl muc list-rooms",
                MucCommand::ListRooms { service: None },
            ),
            (
                "ctl muc list-room-users --room team@muc.localhost",
                MucCommand::ListRoomUsers { room: r() },
            ),
            (
                "ctl muc invite-user --room team@muc.localhost --sender a@localhost \
                 --recipient b@localhost --reason come",
                MucCommand::InviteUser {
                    room: r(),
                    sender: "a@localhost".into(),
                    recipient: "b@localhost".into(),
                    reason: Some("come".into()),
                },
            ),
            (
                "ctl muc kick-user --room team@muc.localhost --nick al",
                MucCommand::KickUser {
                    room: r(),
                    nick: "al".into(),
                    reason: None,
                },
            ),
            (
                "ctl muc set-affiliation --room team@muc.localhost --user a@localhost \
                 --affiliation outcast",
                MucCommand::SetAffiliation {
                    room: r(),
                    user: "a@localhost".into(),
                    affiliation: "outcast".into(),
                },
            ),
            (
                "ctl muc send-message-to-room --room team@muc.localhost --from a@localhost \
                 --body hi",
                MucCommand::SendMessageToRoom {
                    room: r(),
                    from: "a@localhost".into(),
                    body: "hi".into(),
                },
            ),
            (
                "ctl muc delete-room --room team@muc.localhost --reason bye \
                 --alternate new@muc.localhost",
                MucCommand::DeleteRoom {
                    room: r(),
                    reason: Some("bye".into()),
                    alternate: Some("new@muc.localhost".into()),
                },
            ),
            (
                "ctl muc get-room-messages --room team@muc.localhost --limit 5 \
                 --before 2025-01-31T09:30:00Z",
                MucCommand::GetRoomMessages {
                    room: r(),
                    limit: Some(5),
                    before: Some("2025-01-31T09:30:00Z".into()),
                },
            ),
            (
                "ctl muc change-room-configuration --room team@muc.localhost \
                 --field roomname=A=B --field muc#roomconfig_publicroom=0 --field roomdesc=",
                MucCommand::ChangeRoomConfiguration {
                    room: r(),
                    fields: vec![
                        ("roomname".into(), "A=B".into()),
                        ("muc#roomconfig_publicroom".into(), "0".into()),
                        ("roomdesc".into(), String::new()),
                    ],
                },
            ),
        ];
        for (line, command) in cases {
            let args = parse(line).unwrap_or_else(|e| panic!("{line}: {e}"));
            assert_eq!(args.command, CtlCommand::Muc(command), "{line}");
        }
        for line in [
            "ctl muc create-room --room team@muc.localhost",
            "ctl muc list-room-users",
            "ctl muc kick-user --room team@muc.localhost",
            "ctl muc set-affiliation --room r@m --user a@d --affiliation king",
            "ctl muc send-message-to-room --room r@m --from a@d",
            "ctl muc get-room-messages --room r@m --limit lots",
            "ctl muc change-room-configuration --room r@m",
            "ctl muc change-room-configuration --room r@m --field roomname",
            "ctl muc change-room-configuration --room r@m --field =x",
            "ctl muc rename-room --room r@m",
        ] {
            assert!(parse(line).is_err(), "{line}");
        }
    }

    #[test]
    fn rejects_incomplete_commands() {
        for line in [
            "ctl account register --username alice --domain localhost",
            "ctl account",
            "ctl session kick",
            "ctl roster set-mutual-subscription --user-a a@d",
            "ctl roster get-contact --user a@d",
            "ctl roster delete-contact --contact b@d",
            "ctl roster subscribe-all-to-all",
            "ctl stanza get-last-messages --with b@d",
            "ctl stanza get-last-messages --caller a@d --limit many",
            "ctl server restart",
        ] {
            assert!(parse(line).is_err(), "{line}");
        }
    }

    /// Every command is documented in `docs/admin.md` with its full command line.
    #[test]
    fn docs_describe_every_command() {
        use clap::CommandFactory;
        let docs = include_str!("../../../docs/admin.md");
        let cli = Cli::command();
        let ctl = cli.find_subcommand("ctl").unwrap();
        let mut missing = Vec::new();
        for category in ctl.get_subcommands() {
            for command in category.get_subcommands() {
                let line = format!("tern ctl {} {}", category.get_name(), command.get_name());
                if !docs.contains(&line) {
                    missing.push(line);
                }
            }
        }
        assert!(missing.is_empty(), "not in docs/admin.md: {missing:?}");
    }

    /// Runs `tern ctl --config <config> <line>` and returns its result and standard output.
    fn ctl(config: &std::path::Path, line: &str) -> (Result<ExitCode, CtlError>, String) {
        let args = parse(&format!("ctl --config {} {line}", config.display())).unwrap();
        let mut out = Vec::new();
        let result = execute(&args, &mut io::empty(), &mut out);
        (result, String::from_utf8(out).unwrap())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn commands_drive_a_running_node() {
        use crate::admin::tests::{TOKEN, blocking, start_admin, test_node};
        let (node, dir) = test_node("ctl-e2e").await;
        let (_address, task) = start_admin(&node).await;
        let config = dir.path().join("tern.toml");
        std::fs::write(
            &config,
            format!(
                "[general]\ndata_dir = {:?}\n[admin]\ntoken = \"{TOKEN}\"\n",
                dir.path().display().to_string()
            ),
        )
        .unwrap();
        blocking(move || {
            let register = "account register --username bob --domain localhost --password pw1";
            let (r, out) = ctl(&config, register);
            assert_eq!(r.unwrap(), ExitCode::SUCCESS);
            assert_eq!(out, "registered bob@localhost\n");

            let e = ctl(&config, register).0.unwrap_err();
            assert_eq!(e.exit_code(), ExitCode::from(EXIT_REFUSED));
            assert_eq!(e.code(), Some("USER_EXISTS"));

            assert_eq!(
                ctl(&config, "account list --domain localhost").1,
                "bob@localhost\n"
            );
            assert_eq!(ctl(&config, "account count --domain localhost").1, "1\n");

            let (r, out) = ctl(
                &config,
                "account check-password --user bob@localhost --password x",
            );
            assert_eq!(r.unwrap(), ExitCode::from(EXIT_REFUSED));
            assert_eq!(out, "the password of bob@localhost is wrong\n");
            let (r, _) = ctl(
                &config,
                "account check-password --user bob@localhost --password pw1",
            );
            assert_eq!(r.unwrap(), ExitCode::SUCCESS);

            assert_eq!(ctl(&config, "session count").1, "0\n");
            let add = "roster add-contact --user bob@localhost --contact carol@example.org \
                       --name Carol --group Friends";
            assert_eq!(ctl(&config, add).0.unwrap(), ExitCode::SUCCESS);
            assert_eq!(
                ctl(&config, "roster list --user bob@localhost").1,
                "carol@example.org\n"
            );

            let (r, out) = ctl(&config, "server status --json");
            assert_eq!(r.unwrap(), ExitCode::SUCCESS);
            let data: serde_json::Value = serde_json::from_str(&out).unwrap();
            assert_eq!(data["server"]["status"]["status"], "running");
            assert_eq!(data["server"]["status"]["registeredUsers"], 1);

            let (r, out) = ctl(
                &config,
                "domain add --domain Chat.Example --host-type default",
            );
            assert_eq!(r.unwrap(), ExitCode::SUCCESS);
            assert_eq!(out, "added domain chat.example with host type default\n");
            let (r, out) = ctl(
                &config,
                "domain add --domain chat.example --host-type default",
            );
            assert_eq!(r.unwrap(), ExitCode::SUCCESS);
            assert_eq!(
                out,
                "domain chat.example already existed with host type default\n"
            );
            let e = ctl(
                &config,
                "domain add --domain other.example --host-type huge",
            )
            .0
            .unwrap_err();
            assert_eq!(e.code(), Some("BAD_INPUT"));
            assert_eq!(e.exit_code(), ExitCode::from(EXIT_REFUSED));
            let e = ctl(&config, "domain disable --domain localhost")
                .0
                .unwrap_err();
            assert_eq!(e.code(), Some("CONFLICT"));
            let e = ctl(&config, "domain enable --domain ghost.example")
                .0
                .unwrap_err();
            assert_eq!(e.code(), Some("NOT_FOUND"));

            let register = "account register --username dan --domain chat.example \
                            --password pw --home local";
            assert_eq!(ctl(&config, register).1, "registered dan@chat.example\n");
            let e = ctl(
                &config,
                "account register --username eve --domain chat.example --password pw \
                 --home nowhere",
            )
            .0
            .unwrap_err();
            assert_eq!(e.code(), Some("BAD_INPUT"));

            assert_eq!(
                ctl(&config, "domain list").1,
                "chat.example enabled dynamic host_type=default accounts=1 serving=all\n\
                 localhost enabled static host_type=localhost accounts=1 serving=all\n"
            );
            assert_eq!(
                ctl(&config, "domain disable --domain chat.example").1,
                "disabled domain chat.example\n"
            );
            let (r, out) = ctl(&config, "domain details --domain chat.example");
            assert_eq!(r.unwrap(), ExitCode::SUCCESS);
            assert!(out.contains("status: disabled\n"), "{out}");
            assert!(out.contains("accounts: 1\n"), "{out}");
            assert_eq!(
                ctl(&config, "domain enable --domain chat.example").1,
                "enabled domain chat.example\n"
            );
            let (r, out) = ctl(&config, "--json domain details --domain chat.example");
            assert_eq!(r.unwrap(), ExitCode::SUCCESS);
            let data: serde_json::Value = serde_json::from_str(&out).unwrap();
            assert_eq!(data["domain"]["domainDetails"]["hostType"], "default");
            assert_eq!(data["domain"]["domainDetails"]["dynamic"], true);
            assert_eq!(
                ctl(&config, "domain remove --domain chat.example").1,
                "removed domain chat.example: deleted 1 account, 0 rosters and \
                 1 routing table entry\n"
            );
            let e = ctl(&config, "domain details --domain chat.example")
                .0
                .unwrap_err();
            assert_eq!(e.code(), Some("NOT_FOUND"));

            assert_eq!(ctl(&config, "server stop").1, "the node is stopping\n");
        })
        .await;
        tokio::time::timeout(std::time::Duration::from_secs(10), task)
            .await
            .expect("the admin API stops")
            .unwrap()
            .unwrap();
    }

    #[test]
    fn unreachable_node_exits_with_three() {
        let dir = crate::admin::tests::TempDir::new("ctl-unreachable");
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        std::fs::write(data.join(crate::admin::TOKEN_FILE), "t-0123456789abcdef\n").unwrap();
        let free = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let config = dir.path().join("tern.toml");
        std::fs::write(
            &config,
            format!(
                "[general]\ndata_dir = {:?}\n[admin]\naddress = \"{free}\"\n",
                data.display().to_string()
            ),
        )
        .unwrap();
        let args = CtlArgs {
            config: Some(config),
            json: false,
            command: CtlCommand::Server(ServerCommand::Status),
        };
        let mut out = Vec::new();
        let e = execute(&args, &mut io::empty(), &mut out).unwrap_err();
        assert_eq!(e.exit_code(), ExitCode::from(EXIT_UNAVAILABLE));
        assert!(e.to_string().contains("is `tern serve` running?"), "{e}");
        assert!(out.is_empty());
    }
}
