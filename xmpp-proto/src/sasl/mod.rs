//! SASL on the server side (RFC 6120 §6): mechanism names, the step type the stream state
//! machine drives, the RFC 6120 §6.5 failure conditions and one exchange per attempt.
//!
//! # Layout
//! - `credentials`: [`StoredCredentials`] / [`ScramKeys`] (salted keys, never
//!   the password) and the hash primitives.
//! - [`client`]: the client side of PLAIN and SCRAM (for the load harness and tests).
//! - `plain`: PLAIN (RFC 4616).
//! - `scram`: SCRAM-SHA-1 / SCRAM-SHA-256 (RFC 5802, RFC 7677) and their -PLUS variants with
//!   the RFC 9266 `tls-exporter` channel binding.
//!
//! Sans-IO: payloads arrive base64-decoded, nonces and decoy secrets come from the caller, the
//! account lookup is a step ([`SaslStep::NeedCredentials`]) the caller answers with
//! [`SaslServer::provide_credentials`]. Nothing here reads a clock, a socket or an RNG.
//!
//! Passwords and usernames are used as sent (UTF-8 bytes, no SASLprep); the caller normalises
//! the username when it looks the account up.

pub mod client;
mod credentials;
mod plain;
mod scram;

use std::fmt;

pub use credentials::{DEFAULT_ITERATIONS, ScramKeys, StoredCredentials};

use credentials::{Decoy, ScramHash};
use plain::PlainExchange;
use scram::ScramExchange;

/// A SASL mechanism this server implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mechanism {
    /// PLAIN (RFC 4616); only sensible over TLS.
    Plain,
    /// SCRAM-SHA-1 (RFC 5802).
    ScramSha1,
    /// SCRAM-SHA-1-PLUS (RFC 5802) with `tls-exporter` channel binding (RFC 9266).
    ScramSha1Plus,
    /// SCRAM-SHA-256 (RFC 7677).
    ScramSha256,
    /// SCRAM-SHA-256-PLUS (RFC 7677) with `tls-exporter` channel binding (RFC 9266).
    ScramSha256Plus,
}

impl Mechanism {
    /// Every mechanism, strongest first (the order to advertise them in).
    pub const ALL: [Self; 5] = [
        Self::ScramSha256Plus,
        Self::ScramSha1Plus,
        Self::ScramSha256,
        Self::ScramSha1,
        Self::Plain,
    ];

    /// The IANA name sent in `<mechanism/>` and `<auth mechanism=…/>`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Plain => "PLAIN",
            Self::ScramSha1 => "SCRAM-SHA-1",
            Self::ScramSha1Plus => "SCRAM-SHA-1-PLUS",
            Self::ScramSha256 => "SCRAM-SHA-256",
            Self::ScramSha256Plus => "SCRAM-SHA-256-PLUS",
        }
    }

    /// The mechanism with this exact (upper-case) name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.name() == name)
    }

    /// Whether this is a -PLUS (channel binding) mechanism.
    pub fn is_plus(self) -> bool {
        matches!(self, Self::ScramSha1Plus | Self::ScramSha256Plus)
    }

    /// The SCRAM hash of this mechanism, `None` for PLAIN.
    fn scram_hash(self) -> Option<ScramHash> {
        match self {
            Self::Plain => None,
            Self::ScramSha1 | Self::ScramSha1Plus => Some(ScramHash::Sha1),
            Self::ScramSha256 | Self::ScramSha256Plus => Some(ScramHash::Sha256),
        }
    }
}

impl fmt::Display for Mechanism {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What the caller must do after feeding the exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub enum SaslStep {
    /// Look `username` up, then call [`SaslServer::provide_credentials`].
    NeedCredentials {
        /// The authentication identity as the client sent it.
        username: String,
    },
    /// Send `<challenge/>` with this payload (the caller base64-encodes it).
    Challenge(Vec<u8>),
    /// Send `<success/>` with this additional data (may be empty); the attempt succeeded.
    Success(Vec<u8>),
    /// Send `<failure/>` with this condition; the attempt is over.
    Failure(SaslFailure),
}

/// A SASL failure condition (RFC 6120 §6.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum SaslFailure {
    /// The client sent `<abort/>` (§6.5.1).
    #[error("authentication aborted by the client")]
    Aborted,
    /// The client's data was not valid base64 (§6.5.5).
    #[error("incorrect base64 encoding")]
    IncorrectEncoding,
    /// The authorization identity is not one this user may act as (§6.5.6).
    #[error("invalid authorization identity")]
    InvalidAuthzid,
    /// Unknown mechanism, or one not offered on this stream (§6.5.7).
    #[error("invalid or unsupported mechanism")]
    InvalidMechanism,
    /// The request could not be parsed or came out of order (§6.5.8).
    #[error("malformed sasl request")]
    MalformedRequest,
    /// The mechanism is weaker than policy allows for this account (§6.5.9).
    #[error("mechanism too weak")]
    MechanismTooWeak,
    /// Wrong credentials, unknown user, or a failed security check (§6.5.10).
    #[error("not authorized")]
    NotAuthorized,
    /// A server-side problem; the client may retry later (§6.5.11).
    #[error("temporary authentication failure")]
    TemporaryAuthFailure,
    /// The mechanism needs a TLS-protected stream (§6.5.4).
    #[error("encryption required")]
    EncryptionRequired,
    /// The credentials have expired (§6.5.3).
    #[error("credentials expired")]
    CredentialsExpired,
    /// The account is disabled (§6.5.2).
    #[error("account disabled")]
    AccountDisabled,
}

impl SaslFailure {
    /// Every condition.
    pub const ALL: [Self; 11] = [
        Self::Aborted,
        Self::IncorrectEncoding,
        Self::InvalidAuthzid,
        Self::InvalidMechanism,
        Self::MalformedRequest,
        Self::MechanismTooWeak,
        Self::NotAuthorized,
        Self::TemporaryAuthFailure,
        Self::EncryptionRequired,
        Self::CredentialsExpired,
        Self::AccountDisabled,
    ];

    /// The element name inside `<failure/>`.
    pub fn condition(&self) -> &'static str {
        match self {
            Self::Aborted => "aborted",
            Self::IncorrectEncoding => "incorrect-encoding",
            Self::InvalidAuthzid => "invalid-authzid",
            Self::InvalidMechanism => "invalid-mechanism",
            Self::MalformedRequest => "malformed-request",
            Self::MechanismTooWeak => "mechanism-too-weak",
            Self::NotAuthorized => "not-authorized",
            Self::TemporaryAuthFailure => "temporary-auth-failure",
            Self::EncryptionRequired => "encryption-required",
            Self::CredentialsExpired => "credentials-expired",
            Self::AccountDisabled => "account-disabled",
        }
    }

    /// The condition with this element name.
    pub fn from_condition(condition: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.condition() == condition)
    }
}

/// One server-side SASL authentication attempt.
///
/// Drive it with [`start`](Self::start), answer [`SaslStep::NeedCredentials`] with
/// [`provide_credentials`](Self::provide_credentials), feed `<response/>` payloads to
/// [`respond`](Self::respond). A step out of order fails with
/// [`SaslFailure::MalformedRequest`]; after a failure every step fails.
#[derive(Debug)]
pub struct SaslServer {
    mechanism: Mechanism,
    exchange: Exchange,
}

#[derive(Debug)]
enum Exchange {
    Plain(PlainExchange),
    Scram(ScramExchange),
}

impl SaslServer {
    /// A new attempt with `mechanism`.
    ///
    /// `channel_binding`: the RFC 9266 `tls-exporter` value of this TLS connection (32 bytes)
    /// or `None` without TLS.
    /// `plus_offered`: whether -PLUS mechanisms were advertised on this stream (for the `y`
    /// downgrade check).
    /// `nonce`: server nonce part (printable ASCII without `,`), supplied by the caller from a
    /// secure random source; an invalid one fails the attempt with
    /// [`SaslFailure::TemporaryAuthFailure`].
    ///
    /// Unknown users get decoy SCRAM salts derived from the username and `nonce`; use
    /// [`with_decoy`](Self::with_decoy) so they stay stable across attempts.
    pub fn new(
        mechanism: Mechanism,
        channel_binding: Option<Vec<u8>>,
        plus_offered: bool,
        nonce: String,
    ) -> Self {
        let exchange = match mechanism.scram_hash() {
            None => Exchange::Plain(PlainExchange::new(Decoy::default(), nonce)),
            Some(hash) => Exchange::Scram(ScramExchange::new(
                hash,
                mechanism.is_plus(),
                channel_binding,
                plus_offered,
                nonce,
                Decoy::default(),
            )),
        };
        Self {
            mechanism,
            exchange,
        }
    }

    /// Makes the keys shown for unknown users depend on `secret` (a random value the node
    /// keeps for its lifetime) instead of the nonce, announcing `iterations` (the count new
    /// accounts get). A client retrying with a made-up username then sees the same salt every
    /// time, as it would for a real account. Call before [`start`](Self::start).
    pub fn with_decoy(mut self, secret: &[u8], iterations: u32) -> Self {
        let decoy = Decoy::with_secret(secret, iterations);
        match &mut self.exchange {
            Exchange::Plain(plain) => plain.set_decoy(decoy),
            Exchange::Scram(scram) => scram.set_decoy(decoy),
        }
        self
    }

    /// The mechanism of this attempt.
    pub fn mechanism(&self) -> Mechanism {
        self.mechanism
    }

    /// Handles the `<auth/>` payload (already base64-decoded; empty if the client sent none).
    pub fn start(&mut self, initial: &[u8]) -> SaslStep {
        match &mut self.exchange {
            Exchange::Plain(plain) => plain.start(initial),
            Exchange::Scram(scram) => scram.start(initial),
        }
    }

    /// The result of looking up the username of [`SaslStep::NeedCredentials`] (`None`: no
    /// such user).
    pub fn provide_credentials(&mut self, creds: Option<&StoredCredentials>) -> SaslStep {
        match &mut self.exchange {
            Exchange::Plain(plain) => plain.provide_credentials(creds),
            Exchange::Scram(scram) => scram.provide_credentials(creds),
        }
    }

    /// Handles a `<response/>` payload (base64-decoded).
    pub fn respond(&mut self, data: &[u8]) -> SaslStep {
        match &mut self.exchange {
            Exchange::Plain(plain) => plain.respond(data),
            Exchange::Scram(scram) => scram.respond(data),
        }
    }

    /// The authenticated username (the localpart as sent), after [`SaslStep::Success`].
    pub fn username(&self) -> Option<&str> {
        match &self.exchange {
            Exchange::Plain(plain) => plain.username(),
            Exchange::Scram(scram) => scram.username(),
        }
    }
}

/// Whether a client authenticating as `authcid` may name `authzid` as its authorization
/// identity: empty, `authcid` itself, or the bare JID `authcid@domain` (the domain is not
/// known here, so any domain without a resource is accepted).
pub(crate) fn authzid_allowed(authzid: &str, authcid: &str) -> bool {
    if authzid.is_empty() || authzid == authcid {
        return true;
    }
    authzid
        .strip_prefix(authcid)
        .and_then(|rest| rest.strip_prefix('@'))
        .is_some_and(|domain| !domain.is_empty() && !domain.contains(['@', '/']))
}

#[cfg(test)]
mod tests {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;

    use super::*;

    fn rfc_creds() -> StoredCredentials {
        StoredCredentials::derive(
            "pencil",
            &STANDARD.decode("QSXCR+Q6sek8bf92").unwrap(),
            &STANDARD.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap(),
            4096,
        )
    }

    fn need(username: &str) -> SaslStep {
        SaslStep::NeedCredentials {
            username: username.to_owned(),
        }
    }

    #[test]
    fn mechanism_names_round_trip() {
        let names = [
            (Mechanism::Plain, "PLAIN"),
            (Mechanism::ScramSha1, "SCRAM-SHA-1"),
            (Mechanism::ScramSha1Plus, "SCRAM-SHA-1-PLUS"),
            (Mechanism::ScramSha256, "SCRAM-SHA-256"),
            (Mechanism::ScramSha256Plus, "SCRAM-SHA-256-PLUS"),
        ];
        for (mechanism, name) in names {
            assert_eq!(mechanism.name(), name);
            assert_eq!(mechanism.to_string(), name);
            assert_eq!(Mechanism::from_name(name), Some(mechanism));
            assert!(Mechanism::ALL.contains(&mechanism));
        }
        assert_eq!(Mechanism::from_name("scram-sha-1"), None);
        assert_eq!(Mechanism::from_name("DIGEST-MD5"), None);
        assert_eq!(Mechanism::from_name(""), None);
    }

    #[test]
    fn only_plus_mechanisms_are_plus() {
        let plus: Vec<Mechanism> = Mechanism::ALL.into_iter().filter(|m| m.is_plus()).collect();
        assert_eq!(plus, [Mechanism::ScramSha256Plus, Mechanism::ScramSha1Plus]);
    }

    #[test]
    fn failure_conditions_round_trip() {
        let mut seen = std::collections::HashSet::new();
        for failure in SaslFailure::ALL {
            assert!(seen.insert(failure.condition()));
            assert_eq!(
                SaslFailure::from_condition(failure.condition()),
                Some(failure)
            );
        }
        assert_eq!(SaslFailure::NotAuthorized.condition(), "not-authorized");
        assert_eq!(
            SaslFailure::TemporaryAuthFailure.condition(),
            "temporary-auth-failure"
        );
        assert_eq!(SaslFailure::from_condition("bad-auth"), None);
        assert_eq!(SaslFailure::NotAuthorized.to_string(), "not authorized");
    }

    #[test]
    fn authzid_rules() {
        assert!(authzid_allowed("", "user"));
        assert!(authzid_allowed("user", "user"));
        assert!(authzid_allowed("user@example.org", "user"));
        assert!(!authzid_allowed("admin", "user"));
        assert!(!authzid_allowed("user2", "user"));
        assert!(!authzid_allowed("user@", "user"));
        assert!(!authzid_allowed("user@example.org/res", "user"));
        assert!(!authzid_allowed("user@a@b", "user"));
        assert!(!authzid_allowed("useR@example.org", "user"));
    }

    #[test]
    fn scram_sha1_rfc_example_through_the_server() {
        let mut sasl = SaslServer::new(
            Mechanism::ScramSha1,
            None,
            false,
            "3rfcNHYJY1ZVvWVs7j".to_owned(),
        );
        assert_eq!(sasl.mechanism(), Mechanism::ScramSha1);
        assert_eq!(
            sasl.start(b"n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL"),
            need("user")
        );
        assert_eq!(
            sasl.provide_credentials(Some(&rfc_creds())),
            SaslStep::Challenge(
                b"r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096".to_vec()
            )
        );
        assert_eq!(sasl.username(), None);
        assert_eq!(
            sasl.respond(
                b"c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts="
            ),
            SaslStep::Success(b"v=rmF9pqV8S7suAoZWja4dJRkFsKQ=".to_vec())
        );
        assert_eq!(sasl.username(), Some("user"));
    }

    #[test]
    fn scram_sha256_rfc_example_through_the_server() {
        let mut sasl = SaslServer::new(
            Mechanism::ScramSha256,
            Some(vec![7; 32]),
            false,
            "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0".to_owned(),
        );
        assert_eq!(
            sasl.start(b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO"),
            need("user")
        );
        assert_eq!(
            sasl.provide_credentials(Some(&rfc_creds())),
            SaslStep::Challenge(
                b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
                    .to_vec()
            )
        );
        assert_eq!(
            sasl.respond(
                b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
                  p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
            ),
            SaslStep::Success(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=".to_vec())
        );
        assert_eq!(sasl.username(), Some("user"));
    }

    #[test]
    fn plain_through_the_server() {
        let creds = StoredCredentials::derive("pencil", b"s1", b"s2", 16);
        let mut sasl = SaslServer::new(Mechanism::Plain, None, false, "n".to_owned());
        assert_eq!(sasl.start(b"\0user\0pencil"), need("user"));
        assert_eq!(
            sasl.provide_credentials(Some(&creds)),
            SaslStep::Success(Vec::new())
        );
        assert_eq!(sasl.username(), Some("user"));

        let mut sasl = SaslServer::new(Mechanism::Plain, None, false, "n".to_owned());
        assert_eq!(sasl.start(b"\0user\0pencil"), need("user"));
        assert_eq!(
            sasl.provide_credentials(None),
            SaslStep::Failure(SaslFailure::NotAuthorized)
        );
        assert_eq!(sasl.username(), None);
    }

    #[test]
    fn plus_mechanism_without_tls_is_invalid() {
        for mechanism in [Mechanism::ScramSha1Plus, Mechanism::ScramSha256Plus] {
            let mut sasl = SaslServer::new(mechanism, None, true, "nonce".to_owned());
            assert_eq!(
                sasl.start(b"p=tls-exporter,,n=user,r=abc"),
                SaslStep::Failure(SaslFailure::InvalidMechanism)
            );
        }
    }

    #[test]
    fn decoy_secret_fixes_the_unknown_user_challenge() {
        let challenge = |nonce: &str| {
            let mut sasl = SaslServer::new(Mechanism::ScramSha256, None, false, nonce.to_owned())
                .with_decoy(b"node secret", 10_000);
            assert_eq!(sasl.start(b"n,,n=ghost,r=abc"), need("ghost"));
            match sasl.provide_credentials(None) {
                SaslStep::Challenge(data) => String::from_utf8(data).unwrap(),
                other => panic!("expected a challenge, got {other:?}"),
            }
        };
        let a = challenge("one");
        let b = challenge("two");
        assert_eq!(
            a.split_once(",s=").unwrap().1,
            b.split_once(",s=").unwrap().1
        );
        assert!(a.ends_with(",i=10000"));
    }

    #[test]
    fn steps_out_of_order_fail_for_every_mechanism() {
        let malformed = SaslStep::Failure(SaslFailure::MalformedRequest);
        for mechanism in Mechanism::ALL {
            let new = || SaslServer::new(mechanism, Some(vec![1; 32]), true, "nonce".to_owned());

            let mut sasl = new();
            assert_eq!(sasl.respond(b"anything"), malformed, "{mechanism}");
            assert_eq!(sasl.start(b"anything"), malformed, "{mechanism}");

            let mut sasl = new();
            assert_eq!(sasl.provide_credentials(None), malformed, "{mechanism}");
            assert_eq!(sasl.provide_credentials(None), malformed, "{mechanism}");

            let mut sasl = new();
            assert_eq!(
                sasl.start(b""),
                SaslStep::Challenge(Vec::new()),
                "{mechanism}"
            );
            assert_eq!(sasl.start(b""), malformed, "{mechanism}");
            assert_eq!(sasl.respond(b""), malformed, "{mechanism}");
            assert_eq!(sasl.username(), None);
        }
    }
}
