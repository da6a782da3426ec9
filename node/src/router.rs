//! The router: where a stanza goes (DESIGN.md "Data flow of one stanza", step 4).
//!
//! The router reads only the envelope (`to`, `from`, `type`) and forwards the raw bytes. Order of
//! decisions for a stanza addressed to `to`:
//!
//! 1. `to` is not a JID → `<jid-malformed/>` back to the sender.
//! 2. The domain is not served by this node → **remote**. Today that is the end of the line
//!    (`<remote-server-not-found/>`); the later targets plug in here, in this order: another
//!    node of this DC (session directory), another DC (global routing table → bridge), a
//!    foreign server (S2S). See [`Node::route_remote`].
//! 3. The domain itself (no localpart) → the server's modules ([`crate::modules`]).
//! 4. A local account → RFC 6121 §8.5 delivery rules: a full JID goes to that session, a bare JID
//!    to the account's available resources; subscription presence goes through the roster
//!    state machine ([`crate::modules::presence`]); IQs to a bare JID are answered by the server
//!    on the account's behalf.
//! 5. Nobody to deliver to → XEP-0160 offline storage ([`Node::undeliverable_message`],
//!    [`crate::modules::offline`]) or a stanza error. Never a silent drop of a message that asks
//!    for delivery.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use jid::{BareJid, FullJid, Jid};
use tern_xmpp_proto::stanza::Stanza;
use tern_xmpp_proto::{StanzaCondition, StanzaError, StanzaKind, ns};

use crate::modules;
use crate::node::Node;
use crate::sm::Session;

/// A boxed future, for the router's recursion (a bounce is routed too).
pub type BoxFuture<'a, T = ()> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

impl Node {
    /// Routes a stanza whose `from` is trusted: stamped by a client stream, or made by the server.
    pub fn route(self: &Arc<Self>, stanza: Stanza) -> BoxFuture<'_> {
        Box::pin(async move {
            let started = Instant::now();
            self.route_inner(stanza).await;
            self.metrics.routed(started.elapsed());
        })
    }

    /// Routes a stanza that came over a bridge, on this datacenter's own rules (never back onto
    /// the mesh by the recipient's home: the caller decided that).
    pub fn route_here(self: &Arc<Self>, stanza: Stanza) -> BoxFuture<'_> {
        Box::pin(async move {
            let started = Instant::now();
            self.route_inner_at(stanza, false).await;
            self.metrics.routed(started.elapsed());
        })
    }

    async fn route_inner(self: &Arc<Self>, stanza: Stanza) {
        self.route_inner_at(stanza, true).await;
    }

    async fn route_inner_at(self: &Arc<Self>, stanza: Stanza, mesh: bool) {
        let Some(to) = stanza.to() else {
            // Only server-made stanzas reach here without `to`; clients' are resolved by the
            // session first (RFC 6120 §8.1.1.1).
            return;
        };
        let Ok(to) = Jid::new(to) else {
            return self.bounce(&stanza, StanzaCondition::JidMalformed).await;
        };
        if modules::muc::is_service(self, to.domain().as_str()) {
            return modules::muc::route(self, stanza, to, mesh).await;
        }
        if !self.serves(to.domain().as_str()) {
            if self.domains.is_disabled(to.domain().as_str()) {
                // A disabled domain of ours: it exists, and serves nothing until enabled.
                return self
                    .bounce(&stanza, StanzaCondition::ServiceUnavailable)
                    .await;
            }
            if mesh
                && self.mesh.get().is_some()
                && let Some(serving) = self.domains.served_elsewhere(to.domain().as_str())
            {
                return self.route_to_served_elsewhere(stanza, to, serving).await;
            }
            return self.route_remote(stanza, to).await;
        }
        if to.node().is_none() {
            return modules::handle_server_stanza(self, stanza, to).await;
        }
        if mesh && let Some((dc, index)) = self.remote_home(&to.to_bare()) {
            // The user lives in another datacenter: its home applies the delivery rules.
            return self.route_to_dc(stanza, &to, &dc, index, None).await;
        }
        // An account being moved to another datacenter: held until the move is over. A move
        // waits for the deliveries already in progress (`_inside`).
        let _inside = self.moves.enter();
        let Some(stanza) = self.moves.hold(&to, stanza) else {
            return;
        };
        // XEP-0016 / XEP-0191: what the account's lists deny is answered there and stops.
        if self.privacy.any()
            && !modules::privacy::inbound_allowed(self, &to.to_bare(), &stanza).await
        {
            return;
        }
        // XEP-0313: a message is archived (and given its stanza id) as it enters its home.
        let stanza = if stanza.kind == StanzaKind::Message {
            modules::mam::archive_incoming(self, &to.to_bare(), stanza).await
        } else {
            stanza
        };
        match to.try_into_full() {
            Ok(full) => self.route_to_full(stanza, full).await,
            Err(bare) => self.route_to_bare(stanza, bare).await,
        }
    }

    /// A stanza for a domain of the mesh that other datacenters serve, not this one: to the
    /// user's home, or for the domain itself to the first datacenter serving it.
    async fn route_to_served_elsewhere(self: &Arc<Self>, stanza: Stanza, to: Jid, serving: String) {
        if to.node().is_none() {
            let index = self.grt.reader().with(|t| t.applied_index());
            return self.route_to_dc(stanza, &to, &serving, index, None).await;
        }
        match self.remote_home(&to.to_bare()) {
            Some((dc, index)) => self.route_to_dc(stanza, &to, &dc, index, None).await,
            // No such user (RFC 6121 §8.5.1): nothing to deliver to.
            None => {
                if stanza.kind != StanzaKind::Presence {
                    self.bounce(&stanza, StanzaCondition::ServiceUnavailable)
                        .await;
                }
            }
        }
    }

    /// A stanza for a domain this node does not serve. Later issues add, in this order: the
    /// other nodes of this DC, the other DCs of the mesh, and S2S to foreign servers.
    async fn route_remote(self: &Arc<Self>, stanza: Stanza, to: Jid) {
        tracing::debug!(to = %to, "no route to a remote domain");
        self.bounce(&stanza, StanzaCondition::RemoteServerNotFound)
            .await;
    }

    async fn route_to_full(self: &Arc<Self>, stanza: Stanza, to: FullJid) {
        if let Some(session) = self.sm.get(&to) {
            if stanza.kind == StanzaKind::Presence && is_subscription(&stanza) {
                // Subscription state lives on the bare JID (RFC 6121 §3).
                return modules::presence::inbound(self, stanza, to.to_bare()).await;
            }
            if stanza.kind == StanzaKind::Presence && stanza.is_type("probe") {
                return modules::presence::inbound(self, stanza, to.to_bare()).await;
            }
            // XEP-0016: the session's active list.
            if modules::privacy::filters_sessions(self, &to.to_bare())
                && !modules::privacy::session_accepts(self, &session, &stanza).await
            {
                if modules::privacy::refusal_answered(&stanza) {
                    self.bounce(&stanza, StanzaCondition::ServiceUnavailable)
                        .await;
                }
                return;
            }
            if !self.deliver(&session, &stanza) {
                self.bounce(&stanza, StanzaCondition::RecipientUnavailable)
                    .await;
                return;
            }
            modules::carbons::received(self, &to.to_bare(), &stanza, &[session.conn_id]);
            return;
        }
        let bare = to.to_bare();
        match stanza.kind {
            StanzaKind::Message => {
                if stanza.is_type("groupchat") {
                    return self
                        .bounce(&stanza, StanzaCondition::ServiceUnavailable)
                        .await;
                }
                // RFC 6121 §8.5.3.2.1: treated as if sent to the bare JID.
                self.route_to_bare(stanza, bare).await;
            }
            StanzaKind::Presence => {
                if is_subscription(&stanza) || stanza.is_type("probe") {
                    self.route_to_bare(stanza, bare).await;
                }
                // Directed available/unavailable presence to a gone resource: ignored (§8.5.3.2.2).
            }
            StanzaKind::Iq => {
                if stanza.is_type("get") || stanza.is_type("set") {
                    self.bounce(&stanza, StanzaCondition::ServiceUnavailable)
                        .await;
                }
            }
        }
    }

    async fn route_to_bare(self: &Arc<Self>, stanza: Stanza, to: BareJid) {
        if !self.account_exists(&to).await {
            // RFC 6121 §8.5.1: no such account.
            match stanza.kind {
                StanzaKind::Presence => {}
                StanzaKind::Message | StanzaKind::Iq => {
                    if !stanza.is_type("error") && !stanza.is_type("result") {
                        self.bounce(&stanza, StanzaCondition::ServiceUnavailable)
                            .await;
                    }
                }
            }
            return;
        }
        match stanza.kind {
            StanzaKind::Message => self.deliver_message_to_bare(stanza, &to).await,
            StanzaKind::Presence => {
                if is_subscription(&stanza) || stanza.is_type("probe") {
                    modules::presence::inbound(self, stanza, to).await;
                } else {
                    // XEP-0163: a contact's resource (and its capabilities) for PEP.
                    if let Some(from) = stanza.from().and_then(|f| FullJid::new(f).ok())
                        && (stanza.type_().is_none() || stanza.is_type("unavailable"))
                    {
                        let available = stanza.type_().is_none().then_some(&stanza);
                        modules::pep::presence_seen(self, &to, &from, available).await;
                    }
                    // Available/unavailable presence to a bare JID: every available resource.
                    let filter = modules::privacy::filters_sessions(self, &to);
                    for session in self.sm.resources(&to) {
                        if session.is_available()
                            && (!filter
                                || modules::privacy::session_accepts(self, &session, &stanza).await)
                        {
                            self.deliver(&session, &stanza);
                        }
                    }
                }
            }
            StanzaKind::Iq => modules::handle_account_iq(self, stanza, to).await,
        }
    }

    /// RFC 6121 §8.5.2.1.1: a message to a bare JID goes to the available resources with the
    /// highest non-negative priority (headlines to all non-negative ones).
    async fn deliver_message_to_bare(self: &Arc<Self>, stanza: Stanza, to: &BareJid) {
        if stanza.is_type("groupchat") {
            return self
                .bounce(&stanza, StanzaCondition::ServiceUnavailable)
                .await;
        }
        let candidates: Vec<(Arc<Session>, i8)> = self
            .sm
            .resources(to)
            .into_iter()
            .filter_map(|s| {
                let p = s.presence();
                (p.available.is_some() && p.priority >= 0).then_some((s, p.priority))
            })
            .collect();
        let top = candidates.iter().map(|(_, p)| *p).max();
        let filter = modules::privacy::filters_sessions(self, to);
        let mut delivered = Vec::new();
        let mut refused = false;
        for (session, priority) in &candidates {
            if !(stanza.is_type("headline") || Some(*priority) == top) {
                continue;
            }
            // XEP-0016: a session's active list may refuse what the account takes.
            if filter && !modules::privacy::session_accepts(self, session, &stanza).await {
                refused = true;
                continue;
            }
            if self.deliver(session, &stanza) {
                delivered.push(session.conn_id);
            }
        }
        if delivered.is_empty() {
            if refused {
                if modules::privacy::refusal_answered(&stanza) {
                    self.bounce(&stanza, StanzaCondition::ServiceUnavailable)
                        .await;
                }
                return;
            }
            return self.undeliverable_message(stanza, to).await;
        }
        modules::carbons::received(self, to, &stanza, &delivered);
    }

    /// A message to the existing local account `to` that no session can take now (RFC 6121
    /// §8.5.2.2.1). Errors and headlines are dropped as the RFC says; a chat or normal message
    /// goes to XEP-0160 offline storage when `[modules.offline]` is enabled, and is answered
    /// with `<service-unavailable/>` otherwise.
    pub async fn undeliverable_message(self: &Arc<Self>, stanza: Stanza, to: &BareJid) {
        if stanza.is_type("error") || stanza.is_type("headline") {
            return;
        }
        if self.config.modules.offline.enabled && modules::offline::storable(&stanza) {
            return modules::offline::store(self, stanza, to).await;
        }
        self.bounce(&stanza, StanzaCondition::ServiceUnavailable)
            .await;
    }

    /// Queues a stanza on a session; `false` when it could not be queued.
    pub fn deliver(&self, session: &Session, stanza: &Stanza) -> bool {
        let ok = session.deliver(stanza.raw().clone());
        if ok {
            self.metrics.stanza_out(stanza.kind);
        }
        ok
    }

    /// Answers `stanza` with a stanza error (never an error to an error).
    pub async fn bounce(self: &Arc<Self>, stanza: &Stanza, condition: StanzaCondition) {
        self.bounce_with(stanza, StanzaError::new(condition)).await;
    }

    /// Answers `stanza` with the given stanza error.
    pub async fn bounce_with(self: &Arc<Self>, stanza: &Stanza, error: StanzaError) {
        if stanza.is_type("error") || stanza.is_type("result") || stanza.from().is_none() {
            return;
        }
        let Ok(element) = stanza.element(ns::CLIENT) else {
            return;
        };
        self.metrics.stanza_bounced();
        let reply = error.reply_to(&element);
        if let Ok(reply) = Stanza::from_element(&reply, ns::CLIENT) {
            self.route(reply).await;
        }
    }
}

/// Whether a presence is a subscription management one (RFC 6121 §3).
pub fn is_subscription(stanza: &Stanza) -> bool {
    matches!(
        stanza.type_(),
        Some("subscribe" | "subscribed" | "unsubscribe" | "unsubscribed")
    )
}
