-- Tern's PostgreSQL schema, version 1: the same tables as the redb backend
-- (node/src/storage/mod.rs), one row per redb entry.
--
-- Owners are split into (domain, localpart): the localpart is '' for a bare domain. Values
-- are the storage codec's bytes (a format version byte, then postcard), exactly what redb
-- stores, so both backends read each other's values.
--
-- Portable to CockroachDB on purpose: no column collations (ordering by text is done by the
-- node), no sequences, serial types, triggers, functions or advisory locks, nothing beyond
-- TEXT, BIGINT and BYTEA.

-- Accounts: the versioned UserRecord (SCRAM credentials, creation time).
CREATE TABLE jid_user (
    domain    TEXT   NOT NULL,
    localpart TEXT   NOT NULL,
    record    BYTEA  NOT NULL,
    PRIMARY KEY (domain, localpart)
);

-- Rosters: the versioned Roster, one row per account that has one.
CREATE TABLE jid_roster (
    domain    TEXT   NOT NULL,
    localpart TEXT   NOT NULL,
    roster    BYTEA  NOT NULL,
    PRIMARY KEY (domain, localpart)
);

-- The next offline message sequence number of an owner. Its row is locked by every
-- store and take of that owner's offline messages, which makes the count-then-insert of a
-- store atomic with respect to the others.
CREATE TABLE offline_seq (
    domain    TEXT   NOT NULL,
    localpart TEXT   NOT NULL,
    next_seq  BIGINT NOT NULL,
    PRIMARY KEY (domain, localpart)
);

-- Offline messages (XEP-0160): the versioned OfflineMessage, in sequence order per owner.
CREATE TABLE offline_msg (
    domain    TEXT   NOT NULL,
    localpart TEXT   NOT NULL,
    seq       BIGINT NOT NULL,
    message   BYTEA  NOT NULL,
    PRIMARY KEY (domain, localpart, seq)
);

-- Per-account items of modules (vCard, private XML, last activity, privacy lists, PEP...):
-- the module's own bytes.
CREATE TABLE account_item (
    domain    TEXT   NOT NULL,
    localpart TEXT   NOT NULL,
    kind      TEXT   NOT NULL,
    item_key  TEXT   NOT NULL,
    value     BYTEA  NOT NULL,
    PRIMARY KEY (domain, localpart, kind, item_key)
);
-- Loading a module's state at start: every owner of one kind.
CREATE INDEX account_item_kind ON account_item (kind, domain, localpart);

-- Message archives (XEP-0313) of accounts and MUC rooms: the versioned ArchivedMessage;
-- with_jid repeats its bare JID of the other party so queries filter on it in SQL.
-- Ids are microseconds since the Unix epoch, made unique per node.
CREATE TABLE archive (
    domain    TEXT   NOT NULL,
    localpart TEXT   NOT NULL,
    id        BIGINT NOT NULL,
    with_jid  TEXT   NOT NULL,
    message   BYTEA  NOT NULL,
    PRIMARY KEY (domain, localpart, id)
);
-- Queries with a `with` filter.
CREATE INDEX archive_with ON archive (domain, localpart, with_jid, id);
-- Pruning by age across every owner.
CREATE INDEX archive_id ON archive (id);

-- Persistent MUC rooms: the MUC module's bytes under the room's bare JID.
CREATE TABLE muc_room (
    jid       TEXT   NOT NULL PRIMARY KEY,
    state     BYTEA  NOT NULL
);
