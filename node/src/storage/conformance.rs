//! The checks every [`Storage`] backend must pass, run against each backend: `redb` (always)
//! and `postgres` (against the server named by `TERN_TEST_POSTGRES_URL`).
//!
//! Each check is a function of a [`Harness`], which opens fresh stores of one backend; the
//! `conformance!` macro turns every check into a test of that backend. The PostgreSQL tests
//! need a server: `tests/services/postgres.sh start DIR` starts one and prints its URL, which
//! `test.sh` exports as `TERN_TEST_POSTGRES_URL` for `cargo test`. Without the variable the
//! test `postgres::postgres_server_is_configured` fails and says so (the others return at
//! once); `TERN_TEST_POSTGRES_URL=skip` skips the PostgreSQL runs on purpose.
//!
//! Every test gets its own stores: a temporary directory for redb, a schema of its own for
//! PostgreSQL (`search_path`), dropped when the test passes.

use std::sync::Arc;

use bytes::Bytes;
use jid::BareJid;

use super::types::{RosterItem, ScramRecord, Subscription};
use super::{
    ArchivePage, ArchiveQuery, ArchivedMessage, DomainRemoval, Error, OfflineStored, Roster,
    SharedStorage, UserRecord,
};

/// Opens stores of one backend for one test.
#[async_trait::async_trait]
pub(super) trait Harness: Send + Sync {
    /// Store `n` of this test: a new, empty store the first time; the same data again when
    /// opened after the earlier handle was dropped.
    async fn open(&self, n: usize) -> SharedStorage;

    /// Removes what the test stored (called when it passed).
    async fn finish(&self);
}

/// Turns every check into a `#[tokio::test]` of the harness type `$harness`, which has
/// `async fn new(test: &str) -> Option<Self>` (`None`: this backend is not available here).
macro_rules! conformance {
    ($harness:ty) => {
        conformance!(@tests $harness;
            accounts_are_created_once,
            credentials_change_replaces_the_record,
            accounts_are_listed_per_domain_in_byte_order,
            removing_an_account_removes_everything_of_it,
            removing_a_domain_removes_only_that_domain,
            rosters_are_modified_in_place,
            a_roster_needs_an_account,
            concurrent_roster_modifications_lose_no_update,
            offline_messages_come_back_in_order_once,
            the_offline_limit_stores_nothing_more,
            concurrent_offline_stores_keep_the_limit,
            items_are_kept_per_kind_and_key,
            item_owners_are_sorted_by_domain_then_localpart,
            rooms_are_stored_replaced_and_deleted,
            the_archive_pages_both_ways_and_filters,
            the_archive_keeps_the_last_append_of_an_id,
            the_archive_is_pruned_and_removed_per_owner,
            an_exported_account_imports_the_same_elsewhere,
            data_persists_across_reopen,
        );
    };
    (@tests $harness:ty; $($check:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $check() {
                let Some(harness) = <$harness>::new(stringify!($check)).await else {
                    return;
                };
                super::$check(&harness).await;
                harness.finish().await;
            }
        )*
    };
}

fn jid(s: &str) -> BareJid {
    BareJid::new(s).unwrap()
}

fn scram(seed: u8) -> ScramRecord {
    ScramRecord {
        salt: vec![seed; 16],
        iterations: 4096,
        stored_key: vec![seed.wrapping_add(1); 32],
        server_key: vec![seed.wrapping_add(2); 32],
    }
}

fn record(seed: u8) -> UserRecord {
    UserRecord {
        sha1: scram(seed),
        sha256: scram(seed.wrapping_add(10)),
        created_unix: 1_700_000_000 + u64::from(seed),
    }
}

fn contact(jid: &str, subscription: Subscription) -> RosterItem {
    RosterItem {
        name: Some("Nick".to_owned()),
        groups: vec!["Friends".to_owned(), "Work".to_owned()],
        subscription,
        ask: true,
        ..RosterItem::new(jid)
    }
}

fn msg(body: &str) -> Bytes {
    Bytes::from(format!("<message><body>{body}</body></message>"))
}

fn archived(with: &str, body: &str) -> ArchivedMessage {
    ArchivedMessage {
        with: with.to_owned(),
        incoming: true,
        stanza: format!("<message><body>{body}</body></message>").into_bytes(),
    }
}

fn ids(page: &ArchivePage) -> Vec<u64> {
    page.messages.iter().map(|(id, _)| *id).collect()
}

/// The whole archive of an owner, any size.
fn everything() -> ArchiveQuery {
    ArchiveQuery {
        to: u64::MAX,
        max: usize::MAX,
        ..ArchiveQuery::default()
    }
}

async fn accounts_are_created_once(h: &dyn Harness) {
    let store = h.open(0).await;
    let alice = jid("alice@a.example");
    assert_eq!(store.get_user(&alice).await.unwrap(), None);
    store.create_user(&alice, record(1)).await.unwrap();
    assert_eq!(store.get_user(&alice).await.unwrap(), Some(record(1)));
    let err = store.create_user(&alice, record(2)).await.unwrap_err();
    assert!(
        matches!(err, Error::UserExists { ref jid } if jid == "alice@a.example"),
        "{err:?}"
    );
    assert_eq!(store.get_user(&alice).await.unwrap(), Some(record(1)));
    assert_eq!(store.count_users("a.example").await.unwrap(), 1);

    let err = store
        .create_user(&jid("b.example"), record(1))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NoLocalpart { .. }), "{err:?}");
    assert_eq!(store.count_users("b.example").await.unwrap(), 0);
}

async fn credentials_change_replaces_the_record(h: &dyn Harness) {
    let store = h.open(0).await;
    let alice = jid("alice@a.example");
    let err = store
        .set_user_credentials(&alice, record(5))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::UserNotFound { .. }), "{err:?}");
    assert_eq!(store.get_user(&alice).await.unwrap(), None);
    store.create_user(&alice, record(1)).await.unwrap();
    store.set_user_credentials(&alice, record(5)).await.unwrap();
    assert_eq!(store.get_user(&alice).await.unwrap(), Some(record(5)));
    assert_eq!(store.count_users("a.example").await.unwrap(), 1);
}

async fn accounts_are_listed_per_domain_in_byte_order(h: &dyn Harness) {
    let store = h.open(0).await;
    // A locale collation would put "émile" before "zed" and could mix digits and letters;
    // the order is that of the UTF-8 bytes.
    for name in [
        "zed@a.example",
        "émile@a.example",
        "carol@a.example",
        "9@a.example",
        "alice@a.example",
        "10@a.example",
        "bob@a.example",
    ] {
        store.create_user(&jid(name), record(1)).await.unwrap();
    }
    for name in ["zed@b.example", "amy@b.example"] {
        store.create_user(&jid(name), record(2)).await.unwrap();
    }
    // A domain that extends another one's name must not leak into it.
    store
        .create_user(&jid("dan@a.example.org"), record(3))
        .await
        .unwrap();
    let listed: Vec<String> = store
        .list_users("a.example")
        .await
        .unwrap()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        listed,
        [
            "10@a.example",
            "9@a.example",
            "alice@a.example",
            "bob@a.example",
            "carol@a.example",
            "zed@a.example",
            "émile@a.example",
        ]
    );
    assert_eq!(
        store.list_users("b.example").await.unwrap(),
        vec![jid("amy@b.example"), jid("zed@b.example")]
    );
    assert_eq!(store.count_users("a.example").await.unwrap(), 7);
    assert_eq!(store.count_users("b.example").await.unwrap(), 2);
    assert_eq!(store.count_users("a.example.org").await.unwrap(), 1);
    assert_eq!(store.count_users("c.example").await.unwrap(), 0);
    assert!(store.list_users("c.example").await.unwrap().is_empty());
}

async fn removing_an_account_removes_everything_of_it(h: &dyn Harness) {
    let store = h.open(0).await;
    let alice = jid("alice@a.example");
    let bob = jid("bob@a.example");
    store.create_user(&alice, record(1)).await.unwrap();
    store.create_user(&bob, record(2)).await.unwrap();
    for user in [&alice, &bob] {
        store
            .modify_roster(user, &mut |roster| {
                roster.version = 3;
                let item = contact("carol@b.example", Subscription::Both);
                roster.items.insert(item.jid.clone(), item);
            })
            .await
            .unwrap();
        store.store_offline(user, msg("1"), 10).await.unwrap();
        store.store_offline(user, msg("2"), 10).await.unwrap();
        store
            .put_item(user, "vcard", "", Some(b"<vCard/>".to_vec()))
            .await
            .unwrap();
        store
            .archive_append(user, 7, archived("carol@b.example", "hi"))
            .await
            .unwrap();
    }

    assert!(store.remove_user(&alice).await.unwrap());
    assert!(!store.remove_user(&alice).await.unwrap());
    assert_eq!(store.get_user(&alice).await.unwrap(), None);
    assert_eq!(store.get_roster(&alice).await.unwrap(), Roster::default());
    assert_eq!(store.count_offline(&alice).await.unwrap(), 0);
    assert_eq!(store.get_item(&alice, "vcard", "").await.unwrap(), None);
    assert_eq!(
        store
            .archive_query(&alice, everything())
            .await
            .unwrap()
            .count,
        0
    );
    assert_eq!(
        store.list_users("a.example").await.unwrap(),
        vec![bob.clone()]
    );
    assert_eq!(store.count_users("a.example").await.unwrap(), 1);

    // Bob keeps everything.
    assert_eq!(store.get_roster(&bob).await.unwrap().version, 3);
    assert_eq!(store.count_offline(&bob).await.unwrap(), 2);
    assert!(store.get_item(&bob, "vcard", "").await.unwrap().is_some());
    assert_eq!(
        store.archive_query(&bob, everything()).await.unwrap().count,
        1
    );

    // A new account under the same name starts empty.
    store.create_user(&alice, record(3)).await.unwrap();
    assert_eq!(store.get_user(&alice).await.unwrap(), Some(record(3)));
    assert_eq!(store.get_roster(&alice).await.unwrap(), Roster::default());
    assert!(store.take_offline(&alice).await.unwrap().is_empty());
}

async fn removing_a_domain_removes_only_that_domain(h: &dyn Harness) {
    let store = h.open(0).await;
    for who in [
        "a@gone.example",
        "b@gone.example",
        "c@kept.example",
        "d@gone.example.org",
    ] {
        store.create_user(&jid(who), record(1)).await.unwrap();
    }
    store
        .modify_roster(&jid("a@gone.example"), &mut |r: &mut Roster| r.version += 1)
        .await
        .unwrap();
    store
        .modify_roster(&jid("c@kept.example"), &mut |r: &mut Roster| r.version += 1)
        .await
        .unwrap();
    for who in [
        "a@gone.example",
        "a@gone.example",
        "b@gone.example",
        "c@kept.example",
        "d@gone.example.org",
    ] {
        store.store_offline(&jid(who), msg(who), 10).await.unwrap();
    }
    for who in ["a@gone.example", "c@kept.example", "d@gone.example.org"] {
        store
            .put_item(&jid(who), "private", "ns", Some(vec![1]))
            .await
            .unwrap();
    }
    for (who, id) in [
        ("a@gone.example", 1),
        ("b@gone.example", 2),
        ("c@kept.example", 3),
    ] {
        store
            .archive_append(&jid(who), id, archived("x@y.example", "m"))
            .await
            .unwrap();
    }

    let removal = store.remove_domain("gone.example").await.unwrap();
    assert_eq!(
        removal,
        DomainRemoval {
            accounts: 2,
            rosters: 1,
            offline: 3,
            items: 1,
            archived: 2,
        }
    );
    assert_eq!(store.count_users("gone.example").await.unwrap(), 0);
    assert!(store.list_users("gone.example").await.unwrap().is_empty());
    assert_eq!(
        store.count_offline(&jid("a@gone.example")).await.unwrap(),
        0
    );
    // After removal, a new account of the removed domain starts empty.
    store
        .create_user(&jid("a@gone.example"), record(2))
        .await
        .unwrap();
    assert!(
        store
            .take_offline(&jid("a@gone.example"))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store
            .get_item(&jid("a@gone.example"), "private", "ns")
            .await
            .unwrap(),
        None
    );

    for kept in ["c@kept.example", "d@gone.example.org"] {
        let kept = jid(kept);
        assert!(store.get_user(&kept).await.unwrap().is_some());
        assert_eq!(store.count_offline(&kept).await.unwrap(), 1);
        assert!(
            store
                .get_item(&kept, "private", "ns")
                .await
                .unwrap()
                .is_some()
        );
    }
    assert_eq!(
        store
            .get_roster(&jid("c@kept.example"))
            .await
            .unwrap()
            .version,
        1
    );
    assert_eq!(
        store
            .archive_query(&jid("c@kept.example"), everything())
            .await
            .unwrap()
            .count,
        1
    );
    assert_eq!(store.count_users("kept.example").await.unwrap(), 1);
    assert_eq!(store.count_users("gone.example.org").await.unwrap(), 1);

    store.remove_user(&jid("a@gone.example")).await.unwrap();
    assert_eq!(
        store.remove_domain("gone.example").await.unwrap(),
        DomainRemoval::default()
    );
}

async fn rosters_are_modified_in_place(h: &dyn Harness) {
    let store = h.open(0).await;
    let alice = jid("alice@a.example");
    store.create_user(&alice, record(1)).await.unwrap();
    assert_eq!(store.get_roster(&alice).await.unwrap(), Roster::default());

    let stored = store
        .modify_roster(&alice, &mut |roster| {
            roster.version += 1;
            let item = contact("bob@b.example", Subscription::To);
            roster.items.insert(item.jid.clone(), item);
            roster.pending_in.insert(
                "eve@c.example".to_owned(),
                "<presence type='subscribe' from='eve@c.example'/>".to_owned(),
            );
        })
        .await
        .unwrap();
    assert_eq!(stored.version, 1);
    assert_eq!(store.get_roster(&alice).await.unwrap(), stored);

    let stored = store
        .modify_roster(&alice, &mut |roster| {
            roster.version += 1;
            roster.pending_in.clear();
            if let Some(item) = roster.items.get_mut("bob@b.example") {
                item.subscription = Subscription::Both;
                item.ask = false;
            }
        })
        .await
        .unwrap();
    let read = store.get_roster(&alice).await.unwrap();
    assert_eq!(read, stored);
    assert_eq!(read.version, 2);
    assert!(read.pending_in.is_empty());
    let item = &read.items["bob@b.example"];
    assert_eq!(item.subscription, Subscription::Both);
    assert_eq!(item.groups, ["Friends", "Work"]);
    assert!(!item.ask);
}

async fn a_roster_needs_an_account(h: &dyn Harness) {
    let store = h.open(0).await;
    let ghost = jid("ghost@a.example");
    let mut called = false;
    let err = store
        .modify_roster(&ghost, &mut |roster| {
            called = true;
            roster.version = 9;
        })
        .await
        .unwrap_err();
    assert!(matches!(err, Error::UserNotFound { .. }), "{err:?}");
    assert!(!called);
    assert_eq!(store.get_roster(&ghost).await.unwrap(), Roster::default());
}

async fn concurrent_roster_modifications_lose_no_update(h: &dyn Harness) {
    let store = h.open(0).await;
    let alice = jid("alice@a.example");
    store.create_user(&alice, record(1)).await.unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..50u32 {
        let store = Arc::clone(&store);
        let alice = alice.clone();
        tasks.spawn(async move {
            store
                .modify_roster(&alice, &mut |roster| {
                    roster.version += 1;
                    let contact = format!("c{n}@b.example");
                    roster
                        .items
                        .insert(contact.clone(), RosterItem::new(contact));
                })
                .await
                .unwrap()
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    let roster = store.get_roster(&alice).await.unwrap();
    assert_eq!(roster.version, 50);
    assert_eq!(roster.items.len(), 50);
}

async fn offline_messages_come_back_in_order_once(h: &dyn Harness) {
    let store = h.open(0).await;
    let alice = jid("alice@a.example");
    let bob = jid("bob@a.example");
    assert_eq!(store.count_offline(&alice).await.unwrap(), 0);
    assert!(store.take_offline(&alice).await.unwrap().is_empty());
    // More than ten, so an ordering by string instead of number would show.
    for n in 0..12 {
        let stored = store
            .store_offline(&alice, msg(&format!("a{n}")), 100)
            .await
            .unwrap();
        assert_eq!(stored, OfflineStored::Stored(n + 1));
    }
    store.store_offline(&bob, msg("b0"), 100).await.unwrap();
    assert_eq!(store.count_offline(&alice).await.unwrap(), 12);
    assert_eq!(store.count_offline(&bob).await.unwrap(), 1);

    let taken = store.take_offline(&alice).await.unwrap();
    let expected: Vec<Bytes> = (0..12).map(|n| msg(&format!("a{n}"))).collect();
    assert_eq!(taken, expected);
    assert_eq!(store.count_offline(&alice).await.unwrap(), 0);
    assert!(store.take_offline(&alice).await.unwrap().is_empty());
    assert_eq!(store.take_offline(&bob).await.unwrap(), vec![msg("b0")]);

    // Storing again after a take starts a fresh, ordered list.
    store.store_offline(&alice, msg("x"), 100).await.unwrap();
    store.store_offline(&alice, msg("y"), 100).await.unwrap();
    assert_eq!(
        store.take_offline(&alice).await.unwrap(),
        vec![msg("x"), msg("y")]
    );
}

async fn the_offline_limit_stores_nothing_more(h: &dyn Harness) {
    let store = h.open(0).await;
    let alice = jid("alice@a.example");
    for n in 0..3 {
        let stored = store
            .store_offline(&alice, msg(&n.to_string()), 3)
            .await
            .unwrap();
        assert_eq!(stored, OfflineStored::Stored(n + 1));
    }
    assert_eq!(
        store.store_offline(&alice, msg("over"), 3).await.unwrap(),
        OfflineStored::Full
    );
    assert_eq!(store.count_offline(&alice).await.unwrap(), 3);
    assert_eq!(
        store.take_offline(&alice).await.unwrap(),
        vec![msg("0"), msg("1"), msg("2")]
    );
    assert_eq!(
        store.store_offline(&alice, msg("again"), 3).await.unwrap(),
        OfflineStored::Stored(1)
    );
    assert_eq!(
        store.store_offline(&alice, msg("none"), 0).await.unwrap(),
        OfflineStored::Full
    );
}

async fn concurrent_offline_stores_keep_the_limit(h: &dyn Harness) {
    let store = h.open(0).await;
    let alice = jid("alice@a.example");
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..30u32 {
        let store = Arc::clone(&store);
        let alice = alice.clone();
        tasks.spawn(async move {
            store
                .store_offline(&alice, msg(&n.to_string()), 10)
                .await
                .unwrap()
        });
    }
    let mut counts = Vec::new();
    let mut full = 0;
    while let Some(done) = tasks.join_next().await {
        match done.unwrap() {
            OfflineStored::Stored(n) => counts.push(n),
            OfflineStored::Full => full += 1,
        }
    }
    counts.sort_unstable();
    assert_eq!(counts, (1..=10).collect::<Vec<u64>>());
    assert_eq!(full, 20);
    assert_eq!(store.count_offline(&alice).await.unwrap(), 10);
    let taken = store.take_offline(&alice).await.unwrap();
    assert_eq!(taken.len(), 10);
    let distinct: std::collections::HashSet<&Bytes> = taken.iter().collect();
    assert_eq!(distinct.len(), 10);
}

async fn items_are_kept_per_kind_and_key(h: &dyn Harness) {
    let store = h.open(0).await;
    let alice = jid("alice@a.example");
    let bob = jid("bob@a.example");
    assert!(matches!(
        store.put_item(&alice, "vcard", "", Some(vec![1])).await,
        Err(Error::UserNotFound { .. })
    ));
    for user in [&alice, &bob] {
        store.create_user(user, record(1)).await.unwrap();
    }
    for (kind, key, value) in [
        ("private", "b", "two"),
        ("private", "a", "one"),
        ("private", "é", "accent"),
        ("private", "Z", "capital"),
        ("privatex", "z", "other kind"),
        ("privat", "a", "shorter kind"),
    ] {
        store
            .put_item(&alice, kind, key, Some(value.as_bytes().to_vec()))
            .await
            .unwrap();
    }
    store
        .put_item(&bob, "private", "a", Some(b"bob's".to_vec()))
        .await
        .unwrap();
    assert_eq!(
        store.list_items(&alice, "private").await.unwrap(),
        vec![
            ("Z".into(), b"capital".to_vec()),
            ("a".into(), b"one".to_vec()),
            ("b".into(), b"two".to_vec()),
            ("é".into(), b"accent".to_vec()),
        ]
    );
    // Replacing keeps one item.
    store
        .put_item(&alice, "private", "a", Some(b"uno".to_vec()))
        .await
        .unwrap();
    assert_eq!(
        store.get_item(&alice, "private", "a").await.unwrap(),
        Some(b"uno".to_vec())
    );
    assert_eq!(store.list_items(&alice, "private").await.unwrap().len(), 4);
    assert_eq!(
        store.get_item(&bob, "private", "a").await.unwrap(),
        Some(b"bob's".to_vec())
    );
    // Deleting, also what is not there.
    store.put_item(&alice, "private", "a", None).await.unwrap();
    store
        .put_item(&alice, "private", "missing", None)
        .await
        .unwrap();
    assert_eq!(store.get_item(&alice, "private", "a").await.unwrap(), None);
    assert_eq!(store.list_items(&alice, "private").await.unwrap().len(), 3);
    assert_eq!(store.list_items(&alice, "privat").await.unwrap().len(), 1);
    assert!(store.list_items(&alice, "vcard").await.unwrap().is_empty());
}

async fn item_owners_are_sorted_by_domain_then_localpart(h: &dyn Harness) {
    let store = h.open(0).await;
    for who in [
        "zed@a.example",
        "amy@b.example",
        "bob@a.example",
        "cat@a.example.org",
        "dan@a.example",
    ] {
        store.create_user(&jid(who), record(1)).await.unwrap();
    }
    for who in ["zed@a.example", "amy@b.example", "cat@a.example.org"] {
        for key in ["1", "2"] {
            store
                .put_item(&jid(who), "privacy", key, Some(vec![0]))
                .await
                .unwrap();
        }
    }
    store
        .put_item(&jid("bob@a.example"), "vcard", "", Some(vec![0]))
        .await
        .unwrap();
    assert_eq!(
        store.item_owners("privacy").await.unwrap(),
        vec![
            jid("zed@a.example"),
            jid("cat@a.example.org"),
            jid("amy@b.example"),
        ]
    );
    assert_eq!(
        store.item_owners("vcard").await.unwrap(),
        vec![jid("bob@a.example")]
    );
    assert!(store.item_owners("pep").await.unwrap().is_empty());
    // Removing an account takes it off the owners.
    assert!(store.remove_user(&jid("zed@a.example")).await.unwrap());
    assert_eq!(store.item_owners("privacy").await.unwrap().len(), 2);
}

async fn rooms_are_stored_replaced_and_deleted(h: &dyn Harness) {
    let store = h.open(0).await;
    assert!(store.list_rooms().await.unwrap().is_empty());
    for (room, state) in [
        ("tea@muc.b.example", "1"),
        ("coffee@muc.b.example", "2"),
        ("zoo@muc.a.example", "3"),
    ] {
        store
            .put_room(&jid(room), Some(state.as_bytes().to_vec()))
            .await
            .unwrap();
    }
    store
        .put_room(&jid("tea@muc.b.example"), Some(b"4".to_vec()))
        .await
        .unwrap();
    store
        .put_room(&jid("zoo@muc.a.example"), None)
        .await
        .unwrap();
    store
        .put_room(&jid("none@muc.a.example"), None)
        .await
        .unwrap();
    assert_eq!(
        store.list_rooms().await.unwrap(),
        vec![
            ("coffee@muc.b.example".to_owned(), b"2".to_vec()),
            ("tea@muc.b.example".to_owned(), b"4".to_vec()),
        ]
    );
}

async fn the_archive_pages_both_ways_and_filters(h: &dyn Harness) {
    let store = h.open(0).await;
    let alice = jid("alice@a.example");
    store.create_user(&alice, record(1)).await.unwrap();
    for id in 1..=10u64 {
        let with = if id % 2 == 0 {
            "bob@a.example"
        } else {
            "carol@a.example"
        };
        store
            .archive_append(&alice, id, archived(with, &id.to_string()))
            .await
            .unwrap();
    }
    // Another owner's messages stay out of alice's pages.
    store
        .archive_append(&jid("bob@a.example"), 5, archived("alice@a.example", "b"))
        .await
        .unwrap();
    let all = ArchiveQuery {
        to: u64::MAX,
        max: 4,
        ..ArchiveQuery::default()
    };
    // Appends are visible to the next query.
    let first = store.archive_query(&alice, all.clone()).await.unwrap();
    assert_eq!(ids(&first), [1, 2, 3, 4]);
    assert!(!first.complete);
    assert_eq!(first.count, 10);
    assert_eq!(first.messages[0].1, archived("carol@a.example", "1"));

    let last = store
        .archive_query(
            &alice,
            ArchiveQuery {
                from_end: true,
                ..all.clone()
            },
        )
        .await
        .unwrap();
    assert_eq!(ids(&last), [7, 8, 9, 10], "the newest page, oldest first");
    assert!(!last.complete);

    let tail = store
        .archive_query(
            &alice,
            ArchiveQuery {
                from: 9,
                ..all.clone()
            },
        )
        .await
        .unwrap();
    assert_eq!(ids(&tail), [9, 10]);
    assert!(tail.complete);
    assert_eq!(tail.count, 2);

    let window = store
        .archive_query(
            &alice,
            ArchiveQuery {
                from: 3,
                to: 8,
                max: 2,
                from_end: true,
                ..ArchiveQuery::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(ids(&window), [7, 8]);
    assert_eq!(window.count, 6);

    let bob = store
        .archive_query(
            &alice,
            ArchiveQuery {
                with: Some("bob@a.example".into()),
                max: 100,
                ..all.clone()
            },
        )
        .await
        .unwrap();
    assert_eq!(ids(&bob), [2, 4, 6, 8, 10]);
    assert!(bob.complete);

    let picked = store
        .archive_query(
            &alice,
            ArchiveQuery {
                ids: Some(vec![3, 5, 42, u64::MAX]),
                ..all.clone()
            },
        )
        .await
        .unwrap();
    assert_eq!(ids(&picked), [3, 5]);
    assert_eq!(picked.count, 2);
    let none = store
        .archive_query(
            &alice,
            ArchiveQuery {
                ids: Some(Vec::new()),
                ..all.clone()
            },
        )
        .await
        .unwrap();
    assert_eq!((none.count, none.complete), (0, true));

    let counted = store
        .archive_query(
            &alice,
            ArchiveQuery {
                max: 0,
                ..all.clone()
            },
        )
        .await
        .unwrap();
    assert!(counted.messages.is_empty());
    assert_eq!((counted.count, counted.complete), (10, false));

    let backwards = store
        .archive_query(
            &alice,
            ArchiveQuery {
                from: 8,
                to: 3,
                ..all.clone()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        backwards,
        ArchivePage {
            complete: true,
            ..ArchivePage::default()
        }
    );
    let beyond = store
        .archive_query(
            &alice,
            ArchiveQuery {
                from: u64::MAX,
                ..all.clone()
            },
        )
        .await
        .unwrap();
    assert_eq!((beyond.count, beyond.complete), (0, true));
}

async fn the_archive_keeps_the_last_append_of_an_id(h: &dyn Harness) {
    let store = h.open(0).await;
    let room = jid("tea@muc.a.example");
    store
        .archive_append(&room, 5, archived("x@a.example", "first"))
        .await
        .unwrap();
    store
        .archive_append(&room, 5, archived("y@a.example", "second"))
        .await
        .unwrap();
    let page = store.archive_query(&room, everything()).await.unwrap();
    assert_eq!(page.messages, [(5, archived("y@a.example", "second"))]);
    store
        .archive_append(&room, 5, archived("z@a.example", "third"))
        .await
        .unwrap();
    let page = store.archive_query(&room, everything()).await.unwrap();
    assert_eq!(page.messages, [(5, archived("z@a.example", "third"))]);
}

async fn the_archive_is_pruned_and_removed_per_owner(h: &dyn Harness) {
    let store = h.open(0).await;
    let alice = jid("alice@a.example");
    let room = jid("tea@muc.a.example");
    store.create_user(&alice, record(1)).await.unwrap();
    for id in 1..=10u64 {
        store
            .archive_append(&alice, id, archived("bob@a.example", "a"))
            .await
            .unwrap();
        store
            .archive_append(&room, id + 4, archived("x@a.example", "r"))
            .await
            .unwrap();
    }
    // Ids below 6, of every owner: alice's 1..=5 and the room's 5.
    assert_eq!(store.archive_prune(6).await.unwrap(), 6);
    assert_eq!(
        ids(&store.archive_query(&alice, everything()).await.unwrap()),
        [6, 7, 8, 9, 10]
    );
    assert_eq!(
        ids(&store.archive_query(&room, everything()).await.unwrap()),
        [6, 7, 8, 9, 10, 11, 12, 13, 14]
    );
    // Destroying the room takes its archive only.
    store.archive_remove(&room).await.unwrap();
    assert_eq!(
        store
            .archive_query(&room, everything())
            .await
            .unwrap()
            .count,
        0
    );
    assert_eq!(
        store
            .archive_query(&alice, everything())
            .await
            .unwrap()
            .count,
        5
    );
    // Past every id: everything goes.
    assert_eq!(store.archive_prune(u64::MAX).await.unwrap(), 5);
    assert_eq!(
        store
            .archive_query(&alice, everything())
            .await
            .unwrap()
            .count,
        0
    );
}

async fn an_exported_account_imports_the_same_elsewhere(h: &dyn Harness) {
    let a = h.open(0).await;
    let b = h.open(1).await;
    let alice = jid("alice@example.com");
    a.create_user(&alice, record(1)).await.unwrap();
    a.modify_roster(&alice, &mut |r| {
        r.version = 4;
        let item = contact("bob@example.com", Subscription::Both);
        r.items.insert(item.jid.clone(), item);
    })
    .await
    .unwrap();
    for body in ["one", "two", "three"] {
        a.store_offline(&alice, msg(body), 10).await.unwrap();
    }
    a.put_item(&alice, "vcard", "", Some(b"<vCard/>".to_vec()))
        .await
        .unwrap();
    a.put_item(&alice, "private", "b", Some(b"2".to_vec()))
        .await
        .unwrap();
    a.put_item(&alice, "private", "a", Some(b"1".to_vec()))
        .await
        .unwrap();
    for id in [30u64, 10, 20] {
        a.archive_append(&alice, id, archived("bob@example.com", &id.to_string()))
            .await
            .unwrap();
    }
    assert_eq!(
        a.export_user(&jid("nobody@example.com")).await.unwrap(),
        None
    );
    let data = a.export_user(&alice).await.unwrap().expect("exported");
    assert_eq!(data.offline.len(), 3);
    let items: Vec<(&str, &str)> = data
        .items
        .iter()
        .map(|item| (item.kind.as_str(), item.key.as_str()))
        .collect();
    assert_eq!(items, [("private", "a"), ("private", "b"), ("vcard", "")]);
    let archive: Vec<u64> = data.archive.iter().map(|(id, _)| *id).collect();
    assert_eq!(archive, [10, 20, 30]);
    // Exporting takes nothing away.
    assert_eq!(a.count_offline(&alice).await.unwrap(), 3);

    // The destination had an older copy: it is replaced, not merged.
    b.create_user(&alice, record(9)).await.unwrap();
    b.store_offline(&alice, msg("stale"), 10).await.unwrap();
    b.put_item(&alice, "private", "stale", Some(vec![1]))
        .await
        .unwrap();
    b.archive_append(&alice, 5, archived("old@example.com", "stale"))
        .await
        .unwrap();
    b.import_user(&alice, data.clone()).await.unwrap();
    assert_eq!(b.get_item(&alice, "private", "stale").await.unwrap(), None);
    assert_eq!(b.export_user(&alice).await.unwrap(), Some(data.clone()));
    assert_eq!(b.count_users("example.com").await.unwrap(), 1);
    assert_eq!(
        b.take_offline(&alice).await.unwrap(),
        vec![msg("one"), msg("two"), msg("three")]
    );
    // Offline messages stored after an import come after the imported ones.
    b.import_user(&alice, data.clone()).await.unwrap();
    b.store_offline(&alice, msg("four"), 10).await.unwrap();
    assert_eq!(
        b.take_offline(&alice).await.unwrap(),
        vec![msg("one"), msg("two"), msg("three"), msg("four")]
    );

    // Into an empty store: the account counts.
    drop(b);
    let c = h.open(2).await;
    c.import_user(&alice, data.clone()).await.unwrap();
    assert_eq!(c.count_users("example.com").await.unwrap(), 1);
    assert_eq!(c.get_user(&alice).await.unwrap(), Some(record(1)));
    assert_eq!(c.get_roster(&alice).await.unwrap(), data.roster);
    // A bare domain cannot be imported as an account.
    let err = c.import_user(&jid("example.com"), data).await.unwrap_err();
    assert!(matches!(err, Error::NoLocalpart { .. }), "{err:?}");
}

async fn data_persists_across_reopen(h: &dyn Harness) {
    let alice = jid("alice@a.example");
    {
        let store = h.open(0).await;
        store.create_user(&alice, record(1)).await.unwrap();
        store
            .modify_roster(&alice, &mut |roster| {
                roster.version = 41;
                let item = contact("bob@b.example", Subscription::From);
                roster.items.insert(item.jid.clone(), item);
            })
            .await
            .unwrap();
        store.store_offline(&alice, msg("kept"), 10).await.unwrap();
        store
            .put_room(&jid("tea@muc.a.example"), Some(vec![7]))
            .await
            .unwrap();
        store
            .archive_append(&alice, 3, archived("bob@b.example", "m"))
            .await
            .unwrap();
        // An archive append is written before the store is dropped when a read waits for it.
        assert_eq!(
            store
                .archive_query(&alice, everything())
                .await
                .unwrap()
                .count,
            1
        );
    }
    let store = h.open(0).await;
    assert_eq!(store.get_user(&alice).await.unwrap(), Some(record(1)));
    assert_eq!(store.count_users("a.example").await.unwrap(), 1);
    let roster = store.get_roster(&alice).await.unwrap();
    assert_eq!(roster.version, 41);
    assert_eq!(
        roster.items["bob@b.example"].subscription,
        Subscription::From
    );
    assert_eq!(store.take_offline(&alice).await.unwrap(), vec![msg("kept")]);
    assert_eq!(store.list_rooms().await.unwrap().len(), 1);
    assert_eq!(
        store
            .archive_query(&alice, everything())
            .await
            .unwrap()
            .count,
        1
    );
}

/// The redb backend: one temporary directory per test, `N.redb` per store.
mod redb {
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::Harness;
    use crate::storage::{RedbStorage, SharedStorage};

    pub(super) struct RedbHarness {
        dir: PathBuf,
    }

    impl RedbHarness {
        pub(super) async fn new(test: &str) -> Option<Self> {
            static NEXT: AtomicU32 = AtomicU32::new(0);
            let dir = std::env::temp_dir().join(format!(
                "tern-conformance-{test}-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = std::fs::remove_dir_all(&dir);
            Some(Self { dir })
        }
    }

    impl Drop for RedbHarness {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    #[async_trait::async_trait]
    impl Harness for RedbHarness {
        async fn open(&self, n: usize) -> SharedStorage {
            let path = self.dir.join(format!("{n}.redb"));
            // The previous handle's archive thread lets go of the file right after a drop.
            let mut tries = 0;
            loop {
                match RedbStorage::open(&path) {
                    Ok(store) => return std::sync::Arc::new(store),
                    Err(_) if tries < 50 => {
                        tries += 1;
                        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                    }
                    Err(e) => panic!("cannot open {}: {e}", path.display()),
                }
            }
        }

        async fn finish(&self) {}
    }

    conformance!(RedbHarness);
}

/// The PostgreSQL backend: one schema per store of each test, in the database of
/// `TERN_TEST_POSTGRES_URL`.
mod postgres {
    use std::str::FromStr;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::Duration;

    use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

    use super::{Harness, jid, record};
    use crate::storage::{Error, PostgresStorage, SharedStorage, Storage};

    /// The variable naming the test server.
    const URL_VAR: &str = "TERN_TEST_POSTGRES_URL";

    /// The server's URL; `None` when unset or `skip`.
    fn server_url() -> Option<String> {
        std::env::var(URL_VAR)
            .ok()
            .filter(|url| !url.is_empty() && url != "skip")
    }

    /// Fails unless the PostgreSQL runs have a server or are skipped on purpose: the other
    /// PostgreSQL tests pass vacuously without one, this one does not.
    #[test]
    fn postgres_server_is_configured() {
        match std::env::var(URL_VAR) {
            Ok(url) if url == "skip" => {
                eprintln!("{URL_VAR}=skip: the PostgreSQL storage tests were skipped");
            }
            Ok(url) if !url.is_empty() => {}
            _ => panic!(
                "{URL_VAR} is not set, so the PostgreSQL storage backend was not tested. \
                 Start a server with `tests/services/postgres.sh start DIR`, export the URL it \
                 prints as {URL_VAR} and run the tests again (test.sh does this), or set \
                 {URL_VAR}=skip to skip these tests on purpose."
            ),
        }
    }

    pub(super) struct PgHarness {
        url: String,
        admin: PgPool,
        base: String,
        schemas: std::sync::Mutex<Vec<String>>,
    }

    impl PgHarness {
        pub(super) async fn new(_test: &str) -> Option<Self> {
            static NEXT: AtomicU32 = AtomicU32::new(0);
            let url = server_url()?;
            let admin = PgPoolOptions::new()
                .max_connections(1)
                .acquire_timeout(Duration::from_secs(30))
                .connect(&url)
                .await
                .unwrap_or_else(|e| panic!("cannot connect to {URL_VAR}: {e}"));
            let base = format!(
                "tern_t{}_{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            );
            Some(Self {
                url,
                admin,
                base,
                schemas: std::sync::Mutex::new(Vec::new()),
            })
        }

        /// Opens store `n` without applying migrations.
        async fn connect(&self, n: usize) -> PostgresStorage {
            let schema = format!("{}_{n}", self.base);
            let known = {
                let mut schemas = self.schemas.lock().unwrap();
                let known = schemas.contains(&schema);
                if !known {
                    schemas.push(schema.clone());
                }
                known
            };
            if !known {
                sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
                    .execute(&self.admin)
                    .await
                    .unwrap();
            }
            let options = PgConnectOptions::from_str(&self.url)
                .unwrap()
                .options([("search_path", schema.as_str())]);
            PostgresStorage::connect_with(options, 8, Duration::from_secs(30))
                .await
                .unwrap()
        }
    }

    #[async_trait::async_trait]
    impl Harness for PgHarness {
        async fn open(&self, n: usize) -> SharedStorage {
            let store = self.connect(n).await;
            store.migrate().await.unwrap();
            std::sync::Arc::new(store)
        }

        async fn finish(&self) {
            let schemas = std::mem::take(&mut *self.schemas.lock().unwrap());
            for schema in schemas {
                sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
                    .execute(&self.admin)
                    .await
                    .unwrap();
            }
        }
    }

    conformance!(PgHarness);

    /// Runs `check` with a harness when a server is configured.
    async fn with_harness(test: &str, check: impl AsyncFnOnce(&PgHarness)) {
        let Some(harness) = PgHarness::new(test).await else {
            return;
        };
        check(&harness).await;
        harness.finish().await;
    }

    #[tokio::test]
    async fn migrations_apply_once_and_are_recorded() {
        with_harness("migrations", async |h| {
            let store = h.connect(0).await;
            let known = PostgresStorage::known_migrations();
            assert!(!known.is_empty());
            let first = store.migrate().await.unwrap();
            assert_eq!(first.applied, known.len());
            assert_eq!(Some(&first.version), known.last());
            let again = store.migrate().await.unwrap();
            assert_eq!(again.applied, 0);
            assert_eq!(again.version, first.version);
            let tables: Vec<String> = sqlx::query_scalar(
                "SELECT table_name::text FROM information_schema.tables \
                 WHERE table_schema = current_schema() ORDER BY table_name",
            )
            .fetch_all(store.pool())
            .await
            .unwrap();
            assert_eq!(
                tables,
                [
                    "_sqlx_migrations",
                    "account_item",
                    "archive",
                    "jid_roster",
                    "jid_user",
                    "muc_room",
                    "offline_msg",
                    "offline_seq",
                ]
            );
        })
        .await;
    }

    #[tokio::test]
    async fn corrupt_values_are_errors_and_nothing_is_lost() {
        with_harness("corrupt", async |h| {
            let store = h.connect(0).await;
            store.migrate().await.unwrap();
            let alice = jid("alice@a.example");
            store.create_user(&alice, record(1)).await.unwrap();
            store
                .modify_roster(&alice, &mut |r| r.version = 1)
                .await
                .unwrap();
            store
                .store_offline(&alice, bytes::Bytes::from_static(b"<message/>"), 10)
                .await
                .unwrap();
            store
                .store_offline(&alice, bytes::Bytes::from_static(b"<message/>"), 10)
                .await
                .unwrap();
            for statement in [
                "UPDATE jid_user SET record = '\\x01ffff'::bytea",
                "UPDATE jid_roster SET roster = '\\x4d0102'::bytea",
                "UPDATE offline_msg SET message = '\\x0901'::bytea WHERE seq = 1",
            ] {
                sqlx::query(statement).execute(store.pool()).await.unwrap();
            }
            let err = store.get_user(&alice).await.unwrap_err();
            assert!(
                matches!(
                    err,
                    Error::Decode {
                        table: "jid_user",
                        ..
                    }
                ),
                "{err:?}"
            );
            let err = store.get_roster(&alice).await.unwrap_err();
            assert!(
                matches!(
                    err,
                    Error::UnknownFormat {
                        table: "jid_roster",
                        version: 77,
                        ..
                    }
                ),
                "{err:?}"
            );
            let err = store
                .modify_roster(&alice, &mut |r| r.version += 1)
                .await
                .unwrap_err();
            assert!(matches!(err, Error::UnknownFormat { .. }), "{err:?}");
            let err = store.take_offline(&alice).await.unwrap_err();
            assert!(
                matches!(
                    err,
                    Error::UnknownFormat {
                        table: "offline_msg",
                        version: 9,
                        ..
                    }
                ),
                "{err:?}"
            );
            // The failed take deleted nothing.
            assert_eq!(store.count_offline(&alice).await.unwrap(), 2);
        })
        .await;
    }

    #[tokio::test]
    async fn archive_ids_past_bigint_are_refused() {
        with_harness("archive-range", async |h| {
            let store = h.open(0).await;
            let alice = jid("alice@a.example");
            let err = store
                .archive_append(
                    &alice,
                    u64::MAX,
                    crate::storage::ArchivedMessage {
                        with: "bob@a.example".into(),
                        incoming: false,
                        stanza: Vec::new(),
                    },
                )
                .await
                .unwrap_err();
            assert!(
                matches!(
                    err,
                    Error::OutOfRange {
                        value: u64::MAX,
                        ..
                    }
                ),
                "{err:?}"
            );
            let largest = u64::try_from(i64::MAX).unwrap();
            store
                .archive_append(
                    &alice,
                    largest,
                    crate::storage::ArchivedMessage {
                        with: "bob@a.example".into(),
                        incoming: false,
                        stanza: Vec::new(),
                    },
                )
                .await
                .unwrap();
            let page = store
                .archive_query(&alice, super::everything())
                .await
                .unwrap();
            assert_eq!(super::ids(&page), [largest]);
        })
        .await;
    }

    #[tokio::test]
    async fn an_unreachable_server_fails_at_connect() {
        if server_url().is_none() {
            return;
        }
        // Port 1 on loopback: nothing listens there.
        let options = PgConnectOptions::from_str("postgres://tern@127.0.0.1:1/tern").unwrap();
        let err = PostgresStorage::connect_with(options, 1, Duration::from_secs(2))
            .await
            .unwrap_err();
        assert!(
            matches!(err, Error::Postgres { op: "connect", .. }),
            "{err:?}"
        );
        assert!(err.is_retryable(), "{err:?}");
    }
}
