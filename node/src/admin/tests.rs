//! Test fixtures for the admin API and `tern ctl` (a node on a temporary redb database, fake
//! sessions), and the in-process test that drives the admin API over HTTP with `tern ctl`'s
//! client.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use jid::{BareJid, FullJid};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use super::{ADDR_FILE, serve};
use crate::ctl::{AdminClient, CtlError, request};
use crate::metrics::Transport;
use crate::node::Node;
use crate::sm::{Outbound, Outbox, Session};
use crate::storage::RedbStorage;

/// The admin token of test nodes.
pub(crate) const TOKEN: &str = "test-admin-token-0123456789";

/// A fresh directory under the system temp dir, removed on drop.
pub(crate) struct TempDir(PathBuf);

impl TempDir {
    /// A new, empty (not yet created) directory named after `tag`.
    pub(crate) fn new(tag: &str) -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "tern-admin-{tag}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        Self(path)
    }

    /// The directory.
    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A node serving `localhost` with its data (and redb database) in a fresh temp dir.
pub(crate) async fn test_node(tag: &str) -> (Arc<Node>, TempDir) {
    let dir = TempDir::new(tag);
    let node = node_with(tern_config::Config::embedded_default(), &dir).await;
    (node, dir)
}

/// A node with `config`, its data (redb database and routing table) in `dir`.
pub(crate) async fn node_with(mut config: tern_config::Config, dir: &TempDir) -> Arc<Node> {
    config.general.data_dir = dir.path().to_path_buf();
    config.auth.scram_iterations = tern_config::MIN_SCRAM_ITERATIONS;
    let storage = RedbStorage::open(&dir.path().join("tern.redb")).unwrap();
    let opened = crate::grt::open(&config).await.unwrap();
    let node = Arc::new(Node::new(
        Arc::new(config),
        Arc::new(storage),
        opened.grt,
        TOKEN.to_owned(),
    ));
    crate::grt::declare(&node, None).await.unwrap();
    node
}

/// A bound session for `jid`, registered in the node's session manager.
pub(crate) fn test_session(node: &Node, jid: &str) -> (Arc<Session>, Outbox) {
    let (session, rx) = Session::new(
        FullJid::new(jid).unwrap(),
        node.conn_id(),
        Transport::StartTls,
        "127.0.0.1:40000".parse().unwrap(),
        16,
    );
    node.sm.register(session.clone());
    (session, rx)
}

/// Creates the account `jid` with the password `pw`.
pub(crate) async fn create_account(node: &Arc<Node>, jid: &str) {
    crate::accounts::register(node, &BareJid::new(jid).unwrap(), "pw", None)
        .await
        .unwrap();
}

/// The next stanza queued for a session, as text.
pub(crate) async fn next_stanza(rx: &mut Outbox) -> String {
    let Outbound::Stanza(bytes) = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("a stanza within 5 s")
        .expect("the queue is open");
    String::from_utf8(bytes.to_vec()).unwrap()
}

/// Starts the admin API of `node` on 127.0.0.1:0; returns its address once it is up.
pub(crate) async fn start_admin(node: &Arc<Node>) -> (SocketAddr, JoinHandle<std::io::Result<()>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let task = tokio::spawn(serve(node.clone(), listener));
    for _ in 0..500 {
        if let Some(address) = node.admin_address.get() {
            return (*address, task);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the admin API did not start");
}

/// Runs blocking client code off the runtime's worker threads.
pub(crate) async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_api_requires_the_token() {
    let (node, _dir) = test_node("http-auth").await;
    let (address, _task) = start_admin(&node).await;
    blocking(move || {
        let body = json!({ "query": "{ server { status { version } } }" }).to_string();
        let r = request(address, "POST", "/api/graphql", None, Some(body.as_bytes())).unwrap();
        assert_eq!(r.status, 401);
        assert_eq!(r.header("www-authenticate"), Some("Bearer"));
        let answer: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(answer["errors"][0]["extensions"]["code"], "UNAUTHORIZED");

        let wrong = AdminClient::with_token(address, "not-the-token-at-all", "/x/admin.token");
        let e = wrong
            .graphql("{ server { status { version } } }", json!({}))
            .unwrap_err();
        assert!(matches!(e, CtlError::TokenRefused { .. }), "{e:?}");
        assert_eq!(
            e.to_string(),
            "the admin token was refused (check /x/admin.token or admin.token in the config)"
        );

        let right = AdminClient::with_token(address, TOKEN, "test");
        let data = right
            .graphql("{ server { status { version } } }", json!({}))
            .unwrap();
        assert_eq!(
            data["server"]["status"]["version"],
            env!("CARGO_PKG_VERSION")
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn account_round_trip_over_http() {
    let (node, _dir) = test_node("http-accounts").await;
    let (address, _task) = start_admin(&node).await;
    blocking(move || {
        let c = AdminClient::with_token(address, TOKEN, "test");
        let register = "mutation($d: String!, $u: String!, $p: String!) \
                        { account { registerUser(domain: $d, username: $u, password: $p) { jid } } }";
        let vars = json!({ "d": "localhost", "u": "alice", "p": "first" });
        let data = c.graphql(register, vars.clone()).unwrap();
        assert_eq!(data["account"]["registerUser"]["jid"], "alice@localhost");

        let e = c.graphql(register, vars).unwrap_err();
        assert_eq!(e.code(), Some("USER_EXISTS"));
        assert_eq!(e.to_string(), "account alice@localhost already exists");

        let data = c
            .graphql("{ account { listUsers(domain: \"localhost\") countUsers(domain: \"localhost\") } }", json!({}))
            .unwrap();
        assert_eq!(data["account"]["listUsers"], json!(["alice@localhost"]));
        assert_eq!(data["account"]["countUsers"], 1);

        let check = "query($p: String!) { account { checkPassword(user: \"alice@localhost\", \
                     password: $p) { correct message } } }";
        let data = c.graphql(check, json!({ "p": "first" })).unwrap();
        assert_eq!(data["account"]["checkPassword"]["correct"], true);
        let data = c.graphql(check, json!({ "p": "wrong" })).unwrap();
        assert_eq!(data["account"]["checkPassword"]["correct"], false);

        c.graphql(
            "mutation { account { changePassword(user: \"alice@localhost\", \
             newPassword: \"second\") { message } } }",
            json!({}),
        )
        .unwrap();
        let data = c.graphql(check, json!({ "p": "second" })).unwrap();
        assert_eq!(data["account"]["checkPassword"]["correct"], true);

        c.graphql(
            "mutation { account { removeUser(user: \"alice@localhost\") { jid } } }",
            json!({}),
        )
        .unwrap();
        let data = c
            .graphql("{ account { countUsers(domain: \"localhost\") } }", json!({}))
            .unwrap();
        assert_eq!(data["account"]["countUsers"], 0);
        let e = c.graphql(check, json!({ "p": "second" })).unwrap_err();
        assert_eq!(e.code(), Some("NOT_FOUND"));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn domain_round_trip_over_http() {
    let (node, _dir) = test_node("http-domains").await;
    let (address, _task) = start_admin(&node).await;
    let served = node.clone();
    blocking(move || {
        let c = AdminClient::with_token(address, TOKEN, "test");
        let add = "mutation($d: String!, $t: String!) \
                   { domain { addDomain(domain: $d, hostType: $t) { domain changed message } } }";
        let data = c
            .graphql(add, json!({ "d": "Muc.Example", "t": "default" }))
            .unwrap();
        assert_eq!(data["domain"]["addDomain"]["domain"], "muc.example");
        assert_eq!(data["domain"]["addDomain"]["changed"], true);
        assert!(served.serves("muc.example"));

        let e = c
            .graphql(add, json!({ "d": "localhost", "t": "default" }))
            .unwrap_err();
        assert_eq!(e.code(), Some("CONFLICT"));

        let register = "mutation($h: String) { account { registerUser(domain: \"muc.example\", \
                        username: \"amy\", password: \"pw\", home: $h) { jid } } }";
        let data = c.graphql(register, json!({ "h": "local" })).unwrap();
        assert_eq!(data["account"]["registerUser"]["jid"], "amy@muc.example");
        let e = c.graphql(register, json!({ "h": "nowhere" })).unwrap_err();
        assert_eq!(e.code(), Some("BAD_INPUT"));

        let data = c
            .graphql(
                "{ domain { listDomains { domain hostType status dynamic serving accounts } \
                 domainDetails(domain: \"muc.example\") { accounts version } } }",
                json!({}),
            )
            .unwrap();
        assert_eq!(
            data["domain"]["listDomains"],
            json!([
                { "domain": "localhost", "hostType": "localhost", "status": "enabled",
                  "dynamic": false, "serving": [], "accounts": 0 },
                { "domain": "muc.example", "hostType": "default", "status": "enabled",
                  "dynamic": true, "serving": [], "accounts": 1 },
            ])
        );
        assert_eq!(data["domain"]["domainDetails"]["accounts"], 1);
        assert!(data["domain"]["domainDetails"]["version"].as_u64().unwrap() > 0);

        let data = c
            .graphql(
                "mutation { domain { disableDomain(domain: \"muc.example\") { changed } } }",
                json!({}),
            )
            .unwrap();
        assert_eq!(data["domain"]["disableDomain"]["changed"], true);
        assert!(!served.serves("muc.example"));

        let remove = "mutation { domain { removeDomain(domain: \"muc.example\") \
                      { accounts rosters routingEntries } } }";
        let data = c.graphql(remove, json!({})).unwrap();
        assert_eq!(
            data["domain"]["removeDomain"],
            json!({ "accounts": 1, "rosters": 0, "routingEntries": 1 })
        );
        let e = c.graphql(remove, json!({})).unwrap_err();
        assert_eq!(e.code(), Some("NOT_FOUND"));
        assert_eq!(e.to_string(), "domain muc.example does not exist");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_health_need_no_token() {
    let (node, _dir) = test_node("http-metrics").await;
    let (address, _task) = start_admin(&node).await;
    blocking(move || {
        let c = AdminClient::with_token(address, "", "test");
        let r = c.get("/metrics").unwrap();
        assert_eq!(r.status, 200);
        assert!(
            r.header("content-type")
                .is_some_and(|t| t.starts_with("text/plain; version=0.0.4")),
            "{:?}",
            r.header("content-type")
        );
        assert!(r.text().contains("tern_sm_sessions"), "{}", r.text());
        let r = c.get("/health").unwrap();
        assert_eq!((r.status, r.text().as_str()), (200, "ok"));
        let r = c.get("/nowhere").unwrap();
        assert_eq!(r.status, 404);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_json_errors() {
    let (node, _dir) = test_node("http-malformed").await;
    let (address, _task) = start_admin(&node).await;
    blocking(move || {
        let r = request(
            address,
            "POST",
            "/api/graphql",
            Some(TOKEN),
            Some(b"{not json"),
        )
        .unwrap();
        assert_eq!(r.status, 400);
        let answer: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(answer["errors"][0]["extensions"]["code"], "BAD_REQUEST");
        let c = AdminClient::with_token(address, TOKEN, "test");
        let e = c.graphql("{ account { nope } }", json!({})).unwrap_err();
        assert!(matches!(e, CtlError::Refused { .. }), "{e:?}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_stop_shuts_the_admin_api_down() {
    let (node, dir) = test_node("http-stop").await;
    let (address, task) = start_admin(&node).await;
    let addr_file = dir.path().join(ADDR_FILE);
    assert_eq!(
        std::fs::read_to_string(&addr_file).unwrap().trim(),
        address.to_string()
    );
    let data = blocking(move || {
        AdminClient::with_token(address, TOKEN, "test")
            .graphql("mutation { server { stop } }", json!({}))
            .unwrap()
    })
    .await;
    assert_eq!(data["server"]["stop"], "the node is stopping");
    assert!(node.is_shutting_down());
    let result = tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("the admin API stops")
        .unwrap();
    assert!(result.is_ok(), "{result:?}");
    assert!(!addr_file.exists());
}
