//! SCRAM-SHA-1 / SCRAM-SHA-256 (RFC 5802, RFC 7677) on the server side, with the -PLUS variants
//! bound to the RFC 9266 `tls-exporter` channel binding only.
//!
//! Flow: client-first (gs2 header + `n=`, `r=`) -> `NeedCredentials` -> server-first challenge
//! (`r=`, `s=`, `i=`) -> client-final (`c=`, `r=`, `p=`) -> success with `v=ServerSignature`.
//!
//! Outcomes, in the order they are checked:
//!
//! | situation | failure |
//! |---|---|
//! | a -PLUS mechanism on a connection without channel binding data | `invalid-mechanism` |
//! | the caller's server nonce is empty or not printable ASCII without `,` | `temporary-auth-failure` |
//! | text that breaks the RFC 5802 grammar, not UTF-8, with NUL, or with `m=` | `malformed-request` |
//! | `p=` with a non-PLUS mechanism, `n`/`y` with a -PLUS one, a cb type other than `tls-exporter` | `malformed-request` |
//! | `y` while -PLUS was offered and channel binding is available (downgrade, RFC 5802 §6) | `not-authorized` |
//! | `a=` other than the username or `username@domain` | `invalid-authzid` |
//! | stored keys that cannot be used (no salt, 0 iterations, wrong key length) | `temporary-auth-failure` |
//! | `c=` not the gs2 header (+ exporter value), `r=` not the full nonce, wrong proof, unknown user | `not-authorized` |
//!
//! An unknown user gets decoy keys (a salt derived by a hash from the username and either the
//! server nonce or the caller's decoy secret), so the server-first message looks like a real
//! one and the exchange fails only at the end. Optional extensions other than `m=` are ignored
//! (RFC 5802 §5.1). Usernames are used as sent after `=2C`/`=3D` decoding (no SASLprep).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use super::credentials::{Decoy, ScramHash, ScramKeys, StoredCredentials, ct_eq};
use super::{SaslFailure, SaslStep, authzid_allowed};

/// The only channel binding type supported by the -PLUS mechanisms (RFC 9266).
pub(crate) const TLS_EXPORTER: &str = "tls-exporter";

/// Attribute names RFC 5802 defines; they are not accepted as optional extensions.
const RESERVED_ATTRIBUTES: &[u8] = b"acemnprsiv";

/// One SCRAM authentication attempt.
#[derive(Debug)]
pub(crate) struct ScramExchange {
    hash: ScramHash,
    /// Whether the mechanism is a -PLUS variant.
    plus: bool,
    /// The `tls-exporter` value of this connection, if it has TLS.
    channel_binding: Option<Vec<u8>>,
    /// Whether -PLUS mechanisms were advertised on this stream.
    plus_offered: bool,
    server_nonce: String,
    decoy: Decoy,
    state: State,
    /// Set once the exchange succeeded.
    authenticated: Option<String>,
}

#[derive(Debug)]
enum State {
    /// `start` not called yet.
    Initial,
    /// The client sent no initial response; waiting for client-first in a `<response/>`.
    AwaitingClientFirst,
    /// Client-first parsed; waiting for `provide_credentials`.
    AwaitingCredentials(ClientFirst),
    /// Server-first sent; waiting for client-final.
    AwaitingClientFinal(Box<Pending>),
    /// Authenticated; nothing more to do.
    Succeeded,
    /// The exchange failed or was driven out of order; every further step fails.
    Failed,
}

/// What the server keeps from a client-first message.
#[derive(Debug)]
struct ClientFirst {
    /// `gs2-header` exactly as sent, both commas included.
    gs2_header: String,
    /// `client-first-message-bare` exactly as sent.
    bare: String,
    username: String,
    client_nonce: String,
    /// Whether the client asked for `tls-exporter` channel binding (`p=`).
    uses_channel_binding: bool,
}

/// State between server-first and client-final.
#[derive(Debug)]
struct Pending {
    first: ClientFirst,
    server_first: String,
    /// `client nonce || server nonce`.
    nonce: String,
    keys: ScramKeys,
    /// False when `keys` are decoys for an unknown user.
    known_user: bool,
}

/// The gs2 channel binding flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CbFlag<'a> {
    /// `n`: the client does not support channel binding.
    NotSupported,
    /// `y`: the client supports it but thinks the server does not.
    ClientOnly,
    /// `p=name`: the client uses channel binding of type `name`.
    Used(&'a str),
}

/// A client-first message split into its fields.
#[derive(Debug)]
struct ParsedClientFirst<'a> {
    flag: CbFlag<'a>,
    authzid: Option<String>,
    gs2_header: &'a str,
    bare: &'a str,
    username: String,
    client_nonce: &'a str,
}

/// A client-final message split into its fields.
#[derive(Debug)]
struct ParsedClientFinal<'a> {
    without_proof: &'a str,
    channel_binding: Vec<u8>,
    nonce: &'a str,
    proof: Vec<u8>,
}

impl ScramExchange {
    /// A fresh exchange; see `SaslServer::new` for the arguments.
    pub(crate) fn new(
        hash: ScramHash,
        plus: bool,
        channel_binding: Option<Vec<u8>>,
        plus_offered: bool,
        server_nonce: String,
        decoy: Decoy,
    ) -> Self {
        Self {
            hash,
            plus,
            channel_binding,
            plus_offered,
            server_nonce,
            decoy,
            state: State::Initial,
            authenticated: None,
        }
    }

    /// Replaces how keys for unknown users are made up.
    pub(crate) fn set_decoy(&mut self, decoy: Decoy) {
        self.decoy = decoy;
    }

    /// Handles the `<auth/>` payload; an empty one asks for client-first in a challenge.
    pub(crate) fn start(&mut self, initial: &[u8]) -> SaslStep {
        if !matches!(self.state, State::Initial) {
            return self.fail(SaslFailure::MalformedRequest);
        }
        if self.plus && self.channel_binding.is_none() {
            return self.fail(SaslFailure::InvalidMechanism);
        }
        if !is_valid_nonce(&self.server_nonce) {
            return self.fail(SaslFailure::TemporaryAuthFailure);
        }
        if initial.is_empty() {
            self.state = State::AwaitingClientFirst;
            return SaslStep::Challenge(Vec::new());
        }
        self.handle_client_first(initial)
    }

    /// Handles a `<response/>` payload: client-first after an empty `<auth/>`, or client-final.
    pub(crate) fn respond(&mut self, data: &[u8]) -> SaslStep {
        match self.state {
            State::AwaitingClientFirst => self.handle_client_first(data),
            State::AwaitingClientFinal(_) => self.handle_client_final(data),
            _ => self.fail(SaslFailure::MalformedRequest),
        }
    }

    /// Answers with server-first, using the account's keys or decoys for an unknown user.
    pub(crate) fn provide_credentials(&mut self, creds: Option<&StoredCredentials>) -> SaslStep {
        if !matches!(self.state, State::AwaitingCredentials(_)) {
            return self.fail(SaslFailure::MalformedRequest);
        }
        // Checked just above; the else branch keeps a failure rather than a panic.
        let State::AwaitingCredentials(first) = std::mem::replace(&mut self.state, State::Failed)
        else {
            return SaslStep::Failure(SaslFailure::MalformedRequest);
        };
        let (keys, known_user) = match creds {
            Some(creds) => {
                let keys = creds.keys(self.hash);
                if !self.keys_usable(keys) {
                    return self.fail(SaslFailure::TemporaryAuthFailure);
                }
                (keys.clone(), true)
            }
            None => (
                self.decoy
                    .keys(self.hash, &first.username, &self.server_nonce),
                false,
            ),
        };
        let nonce = format!("{}{}", first.client_nonce, self.server_nonce);
        let server_first = format!(
            "r={nonce},s={},i={}",
            STANDARD.encode(&keys.salt),
            keys.iterations
        );
        let challenge = server_first.clone().into_bytes();
        self.state = State::AwaitingClientFinal(Box::new(Pending {
            first,
            server_first,
            nonce,
            keys,
            known_user,
        }));
        SaslStep::Challenge(challenge)
    }

    /// The authenticated username, once the exchange succeeded.
    pub(crate) fn username(&self) -> Option<&str> {
        self.authenticated.as_deref()
    }

    fn handle_client_first(&mut self, data: &[u8]) -> SaslStep {
        match self.check_client_first(data) {
            Ok(first) => {
                let step = SaslStep::NeedCredentials {
                    username: first.username.clone(),
                };
                self.state = State::AwaitingCredentials(first);
                step
            }
            Err(failure) => self.fail(failure),
        }
    }

    /// Parses client-first and applies the channel binding and authzid rules.
    fn check_client_first(&self, data: &[u8]) -> Result<ClientFirst, SaslFailure> {
        let parsed = parse_client_first(data)?;
        let uses_channel_binding = self.check_channel_binding(parsed.flag)?;
        if let Some(authzid) = &parsed.authzid
            && !authzid_allowed(authzid, &parsed.username)
        {
            return Err(SaslFailure::InvalidAuthzid);
        }
        Ok(ClientFirst {
            gs2_header: parsed.gs2_header.to_owned(),
            bare: parsed.bare.to_owned(),
            username: parsed.username,
            client_nonce: parsed.client_nonce.to_owned(),
            uses_channel_binding,
        })
    }

    /// Applies the RFC 5802 §6 / RFC 9266 rules to the gs2 flag; returns whether the client
    /// binds to the channel.
    fn check_channel_binding(&self, flag: CbFlag<'_>) -> Result<bool, SaslFailure> {
        match (flag, self.plus) {
            // `start` already refused a -PLUS mechanism without channel binding data.
            (CbFlag::Used(name), true) if name == TLS_EXPORTER => Ok(true),
            (CbFlag::Used(_), _) | (_, true) => Err(SaslFailure::MalformedRequest),
            (CbFlag::ClientOnly, false) => {
                if self.plus_offered && self.channel_binding.is_some() {
                    Err(SaslFailure::NotAuthorized)
                } else {
                    Ok(false)
                }
            }
            (CbFlag::NotSupported, false) => Ok(false),
        }
    }

    fn keys_usable(&self, keys: &ScramKeys) -> bool {
        !keys.salt.is_empty()
            && keys.iterations > 0
            && keys.stored_key.len() == self.hash.output_len()
            && keys.server_key.len() == self.hash.output_len()
    }

    fn handle_client_final(&mut self, data: &[u8]) -> SaslStep {
        // Only called from `respond` in this state.
        let State::AwaitingClientFinal(pending) = std::mem::replace(&mut self.state, State::Failed)
        else {
            return SaslStep::Failure(SaslFailure::MalformedRequest);
        };
        let message = match parse_client_final(data, self.hash.output_len()) {
            Ok(message) => message,
            Err(failure) => return self.fail(failure),
        };

        let mut expected_cbind = pending.first.gs2_header.as_bytes().to_vec();
        if pending.first.uses_channel_binding {
            match &self.channel_binding {
                Some(exporter) => expected_cbind.extend_from_slice(exporter),
                // `start` refuses to run a -PLUS exchange without channel binding data.
                None => return self.fail(SaslFailure::NotAuthorized),
            }
        }
        let cbind_ok = ct_eq(&message.channel_binding, &expected_cbind);
        let nonce_ok = message.nonce == pending.nonce;

        let auth_message = format!(
            "{},{},{}",
            pending.first.bare, pending.server_first, message.without_proof
        );
        let hash = self.hash;
        let keys = &pending.keys;
        let client_signature = hash.hmac(&keys.stored_key, &[auth_message.as_bytes()]);
        let client_key: Vec<u8> = message
            .proof
            .iter()
            .zip(&client_signature)
            .map(|(p, s)| p ^ s)
            .collect();
        let proof_ok = ct_eq(&hash.hash(&client_key), &keys.stored_key);

        if cbind_ok & nonce_ok & proof_ok & pending.known_user {
            let server_signature = hash.hmac(&keys.server_key, &[auth_message.as_bytes()]);
            self.state = State::Succeeded;
            self.authenticated = Some(pending.first.username);
            SaslStep::Success(format!("v={}", STANDARD.encode(server_signature)).into_bytes())
        } else {
            self.fail(SaslFailure::NotAuthorized)
        }
    }

    /// Ends the exchange with `failure`; a finished success stays authenticated.
    fn fail(&mut self, failure: SaslFailure) -> SaslStep {
        if !matches!(self.state, State::Succeeded) {
            self.state = State::Failed;
        }
        SaslStep::Failure(failure)
    }
}

/// Splits a client-first message (RFC 5802 §7 `client-first-message`).
fn parse_client_first(data: &[u8]) -> Result<ParsedClientFirst<'_>, SaslFailure> {
    const MALFORMED: SaslFailure = SaslFailure::MalformedRequest;
    let message = as_text(data)?;
    let (flag, rest) = message.split_once(',').ok_or(MALFORMED)?;
    let (authzid, bare) = rest.split_once(',').ok_or(MALFORMED)?;
    let gs2_header = &message[..message.len() - bare.len()];

    let flag = match flag {
        "n" => CbFlag::NotSupported,
        "y" => CbFlag::ClientOnly,
        other => {
            let name = other.strip_prefix("p=").ok_or(MALFORMED)?;
            let name_ok = !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-');
            if !name_ok {
                return Err(MALFORMED);
            }
            CbFlag::Used(name)
        }
    };
    let authzid = if authzid.is_empty() {
        None
    } else {
        let name = authzid.strip_prefix("a=").ok_or(MALFORMED)?;
        Some(decode_saslname(name).ok_or(MALFORMED)?)
    };

    let mut attributes = bare.split(',');
    // `split` always yields at least one item.
    let first = attributes.next().unwrap_or_default();
    if first.starts_with("m=") {
        // Mandatory extensions are not supported (RFC 5802 §5.1).
        return Err(MALFORMED);
    }
    let username = first
        .strip_prefix("n=")
        .and_then(decode_saslname)
        .ok_or(MALFORMED)?;
    let client_nonce = attributes
        .next()
        .and_then(|a| a.strip_prefix("r="))
        .filter(|n| is_valid_nonce(n))
        .ok_or(MALFORMED)?;
    check_extensions(attributes)?;

    Ok(ParsedClientFirst {
        flag,
        authzid,
        gs2_header,
        bare,
        username,
        client_nonce,
    })
}

/// Splits a client-final message (RFC 5802 §7 `client-final-message`); the proof must have
/// the hash's output length.
fn parse_client_final(data: &[u8], proof_len: usize) -> Result<ParsedClientFinal<'_>, SaslFailure> {
    const MALFORMED: SaslFailure = SaslFailure::MalformedRequest;
    let message = as_text(data)?;
    let (without_proof, proof) = message.rsplit_once(",p=").ok_or(MALFORMED)?;
    let proof = STANDARD.decode(proof).map_err(|_| MALFORMED)?;
    if proof.len() != proof_len {
        return Err(MALFORMED);
    }

    let mut attributes = without_proof.split(',');
    let channel_binding = attributes
        .next()
        .and_then(|a| a.strip_prefix("c="))
        .ok_or(MALFORMED)?;
    let channel_binding = STANDARD.decode(channel_binding).map_err(|_| MALFORMED)?;
    let nonce = attributes
        .next()
        .and_then(|a| a.strip_prefix("r="))
        .filter(|n| is_valid_nonce(n))
        .ok_or(MALFORMED)?;
    check_extensions(attributes)?;

    Ok(ParsedClientFinal {
        without_proof,
        channel_binding,
        nonce,
        proof,
    })
}

/// A SCRAM message as text: UTF-8 without NUL.
fn as_text(data: &[u8]) -> Result<&str, SaslFailure> {
    match std::str::from_utf8(data) {
        Ok(text) if !text.contains('\0') => Ok(text),
        _ => Err(SaslFailure::MalformedRequest),
    }
}

/// Checks optional extensions (`ALPHA "=" 1*value-char`), which are otherwise ignored.
fn check_extensions<'a>(attributes: impl Iterator<Item = &'a str>) -> Result<(), SaslFailure> {
    for attribute in attributes {
        let bytes = attribute.as_bytes();
        let ok = bytes.len() > 2
            && bytes[0].is_ascii_alphabetic()
            && !RESERVED_ATTRIBUTES.contains(&bytes[0])
            && bytes[1] == b'=';
        if !ok {
            return Err(SaslFailure::MalformedRequest);
        }
    }
    Ok(())
}

/// A nonce is non-empty printable ASCII without `,` (RFC 5802 §7 `printable`).
fn is_valid_nonce(nonce: &str) -> bool {
    !nonce.is_empty()
        && nonce
            .bytes()
            .all(|b| (0x21..=0x7e).contains(&b) && b != b',')
}

/// Decodes a `saslname` (`=2C` -> `,`, `=3D` -> `=`); `None` for an empty name or a bad escape.
fn decode_saslname(name: &str) -> Option<String> {
    if name.is_empty() {
        return None;
    }
    let mut out = String::with_capacity(name.len());
    let mut rest = name;
    while let Some(pos) = rest.find('=') {
        out.push_str(&rest[..pos]);
        let escape = rest.get(pos + 1..pos + 3)?;
        if escape.eq_ignore_ascii_case("2C") {
            out.push(',');
        } else if escape.eq_ignore_ascii_case("3D") {
            out.push('=');
        } else {
            return None;
        }
        rest = &rest[pos + 3..];
    }
    out.push_str(rest);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXPORTER: [u8; 32] = [0x5a; 32];

    fn b64(s: &str) -> Vec<u8> {
        STANDARD.decode(s).unwrap()
    }

    /// The account of RFC 5802 §5 / RFC 7677 §3: user "user", password "pencil".
    fn rfc_creds() -> StoredCredentials {
        StoredCredentials::derive(
            "pencil",
            &b64("QSXCR+Q6sek8bf92"),
            &b64("W22ZaJ0SNY7soEsUEjb6gQ=="),
            4096,
        )
    }

    /// Cheap credentials for the non-RFC tests.
    fn creds() -> StoredCredentials {
        StoredCredentials::derive("pencil", b"sha1-salt-16byte", b"sha256-salt-16by", 64)
    }

    fn failure(f: SaslFailure) -> SaslStep {
        SaslStep::Failure(f)
    }

    fn need(username: &str) -> SaslStep {
        SaslStep::NeedCredentials {
            username: username.to_owned(),
        }
    }

    fn challenge(step: SaslStep) -> Vec<u8> {
        match step {
            SaslStep::Challenge(data) => data,
            other => panic!("expected a challenge, got {other:?}"),
        }
    }

    /// A SCRAM client written for the tests.
    struct TestClient {
        hash: ScramHash,
        password: &'static str,
        gs2_header: String,
        /// Channel binding data appended to the gs2 header in `c=`.
        cb_data: Vec<u8>,
        bare: String,
    }

    impl TestClient {
        fn new(hash: ScramHash, gs2_header: &str, cb_data: &[u8]) -> Self {
            Self {
                hash,
                password: "pencil",
                gs2_header: gs2_header.to_owned(),
                cb_data: cb_data.to_vec(),
                bare: "n=user,r=clientnonce".to_owned(),
            }
        }

        fn first(&self) -> Vec<u8> {
            format!("{}{}", self.gs2_header, self.bare).into_bytes()
        }

        /// Client-final for `server_first`, and the server-final the client expects.
        fn finish(&self, server_first: &[u8]) -> (Vec<u8>, Vec<u8>) {
            let server_first = std::str::from_utf8(server_first).unwrap();
            let mut nonce = "";
            let mut salt = Vec::new();
            let mut iterations = 0;
            for attribute in server_first.split(',') {
                let (name, value) = attribute.split_once('=').unwrap();
                match name {
                    "r" => nonce = value,
                    "s" => salt = b64(value),
                    "i" => iterations = value.parse().unwrap(),
                    other => panic!("unexpected attribute {other}"),
                }
            }
            let hash = self.hash;
            let salted = hash.salted_password(self.password.as_bytes(), &salt, iterations);
            let client_key = hash.hmac(&salted, &[b"Client Key"]);
            let stored_key = hash.hash(&client_key);
            let server_key = hash.hmac(&salted, &[b"Server Key"]);
            let cbind = [self.gs2_header.as_bytes(), &self.cb_data].concat();
            let without_proof = format!("c={},r={nonce}", STANDARD.encode(cbind));
            let auth = format!("{},{server_first},{without_proof}", self.bare);
            let signature = hash.hmac(&stored_key, &[auth.as_bytes()]);
            let proof: Vec<u8> = client_key
                .iter()
                .zip(&signature)
                .map(|(a, b)| a ^ b)
                .collect();
            let server_signature = hash.hmac(&server_key, &[auth.as_bytes()]);
            (
                format!("{without_proof},p={}", STANDARD.encode(proof)).into_bytes(),
                format!("v={}", STANDARD.encode(server_signature)).into_bytes(),
            )
        }
    }

    fn exchange(
        hash: ScramHash,
        plus: bool,
        cb: Option<&[u8]>,
        plus_offered: bool,
    ) -> ScramExchange {
        ScramExchange::new(
            hash,
            plus,
            cb.map(<[u8]>::to_vec),
            plus_offered,
            "servernonce".to_owned(),
            Decoy::default(),
        )
    }

    /// Runs `client` against `server` with `creds` and returns the final step.
    fn run(
        server: &mut ScramExchange,
        client: &TestClient,
        creds: Option<&StoredCredentials>,
    ) -> SaslStep {
        assert_eq!(server.start(&client.first()), need("user"));
        let server_first = challenge(server.provide_credentials(creds));
        let (client_final, _) = client.finish(&server_first);
        server.respond(&client_final)
    }

    fn expect_success(server: &mut ScramExchange, client: &TestClient) {
        assert_eq!(server.start(&client.first()), need("user"));
        let server_first = challenge(server.provide_credentials(Some(&creds())));
        let (client_final, server_final) = client.finish(&server_first);
        assert_eq!(
            server.respond(&client_final),
            SaslStep::Success(server_final)
        );
        assert_eq!(server.username(), Some("user"));
    }

    #[test]
    fn rfc5802_sha1_example() {
        let mut server = ScramExchange::new(
            ScramHash::Sha1,
            false,
            None,
            false,
            "3rfcNHYJY1ZVvWVs7j".to_owned(),
            Decoy::default(),
        );
        assert_eq!(
            server.start(b"n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL"),
            need("user")
        );
        assert_eq!(
            server.provide_credentials(Some(&rfc_creds())),
            SaslStep::Challenge(
                b"r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096".to_vec()
            )
        );
        assert_eq!(
            server.respond(
                b"c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,\
                  p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts="
            ),
            SaslStep::Success(b"v=rmF9pqV8S7suAoZWja4dJRkFsKQ=".to_vec())
        );
        assert_eq!(server.username(), Some("user"));
    }

    #[test]
    fn rfc7677_sha256_example() {
        let mut server = ScramExchange::new(
            ScramHash::Sha256,
            false,
            None,
            false,
            "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0".to_owned(),
            Decoy::default(),
        );
        assert_eq!(
            server.start(b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO"),
            need("user")
        );
        assert_eq!(
            server.provide_credentials(Some(&rfc_creds())),
            SaslStep::Challenge(
                b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
                  s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
                    .to_vec()
            )
        );
        assert_eq!(
            server.respond(
                b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
                  p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
            ),
            SaslStep::Success(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=".to_vec())
        );
        assert_eq!(server.username(), Some("user"));
    }

    #[test]
    fn test_client_reproduces_the_rfc7677_exchange() {
        // Guards the test client itself against the RFC before it is used for -PLUS.
        let client = TestClient {
            hash: ScramHash::Sha256,
            password: "pencil",
            gs2_header: "n,,".to_owned(),
            cb_data: Vec::new(),
            bare: "n=user,r=rOprNGfwEbeRWgbNEkqO".to_owned(),
        };
        let (client_final, server_final) = client.finish(
            b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
        );
        assert_eq!(
            client_final,
            b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
              p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
        );
        assert_eq!(
            server_final,
            b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
        );
    }

    #[test]
    fn plus_variants_succeed_with_matching_exporter() {
        for hash in [ScramHash::Sha1, ScramHash::Sha256] {
            let mut server = exchange(hash, true, Some(&EXPORTER), true);
            expect_success(
                &mut server,
                &TestClient::new(hash, "p=tls-exporter,,", &EXPORTER),
            );
        }
    }

    #[test]
    fn plus_fails_with_mismatched_channel_binding() {
        let mut other = EXPORTER;
        other[31] ^= 1;
        for cb_data in [&other[..], &[], &EXPORTER[..31]] {
            let mut server = exchange(ScramHash::Sha256, true, Some(&EXPORTER), true);
            let client = TestClient::new(ScramHash::Sha256, "p=tls-exporter,,", cb_data);
            assert_eq!(
                run(&mut server, &client, Some(&creds())),
                failure(SaslFailure::NotAuthorized)
            );
            assert_eq!(server.username(), None);
        }
    }

    #[test]
    fn c_attribute_must_repeat_the_gs2_header() {
        // The client says "n" but sends the header of "y" (or with an authzid) in c=.
        for (sent, echoed) in [("n,,", "y,,"), ("n,,", "n,a=user,"), ("y,,", "n,,")] {
            let mut server = exchange(ScramHash::Sha1, false, None, false);
            let mut client = TestClient::new(ScramHash::Sha1, sent, &[]);
            assert_eq!(server.start(&client.first()), need("user"));
            let server_first = challenge(server.provide_credentials(Some(&creds())));
            client.gs2_header = echoed.to_owned();
            let (client_final, _) = client.finish(&server_first);
            assert_eq!(
                server.respond(&client_final),
                failure(SaslFailure::NotAuthorized),
                "{sent} / {echoed}"
            );
        }
    }

    #[test]
    fn y_is_a_downgrade_when_plus_was_offered() {
        let mut server = exchange(ScramHash::Sha256, false, Some(&EXPORTER), true);
        let client = TestClient::new(ScramHash::Sha256, "y,,", &[]);
        assert_eq!(
            server.start(&client.first()),
            failure(SaslFailure::NotAuthorized)
        );
    }

    #[test]
    fn y_is_accepted_when_plus_was_not_offered_or_unavailable() {
        for (cb, offered) in [(Some(&EXPORTER[..]), false), (None, false), (None, true)] {
            let mut server = exchange(ScramHash::Sha256, false, cb, offered);
            expect_success(&mut server, &TestClient::new(ScramHash::Sha256, "y,,", &[]));
        }
    }

    #[test]
    fn n_is_accepted_on_non_plus_even_with_tls() {
        let mut server = exchange(ScramHash::Sha1, false, Some(&EXPORTER), true);
        expect_success(&mut server, &TestClient::new(ScramHash::Sha1, "n,,", &[]));
    }

    #[test]
    fn p_on_a_non_plus_mechanism_is_rejected() {
        let mut server = exchange(ScramHash::Sha256, false, Some(&EXPORTER), true);
        let client = TestClient::new(ScramHash::Sha256, "p=tls-exporter,,", &EXPORTER);
        assert_eq!(
            server.start(&client.first()),
            failure(SaslFailure::MalformedRequest)
        );
    }

    #[test]
    fn plus_requires_p_with_tls_exporter() {
        for header in ["n,,", "y,,", "p=tls-unique,,", "p=tls-server-end-point,,"] {
            let mut server = exchange(ScramHash::Sha256, true, Some(&EXPORTER), true);
            let client = TestClient::new(ScramHash::Sha256, header, &EXPORTER);
            assert_eq!(
                server.start(&client.first()),
                failure(SaslFailure::MalformedRequest),
                "{header}"
            );
        }
    }

    #[test]
    fn plus_without_channel_binding_data_is_an_invalid_mechanism() {
        let mut server = exchange(ScramHash::Sha1, true, None, false);
        let client = TestClient::new(ScramHash::Sha1, "p=tls-exporter,,", &EXPORTER);
        assert_eq!(
            server.start(&client.first()),
            failure(SaslFailure::InvalidMechanism)
        );
    }

    #[test]
    fn unknown_user_fails_only_at_the_end() {
        let client = TestClient::new(ScramHash::Sha256, "n,,", &[]);
        let mut server = exchange(ScramHash::Sha256, false, None, false);
        assert_eq!(server.start(&client.first()), need("user"));
        let server_first = challenge(server.provide_credentials(None));
        let text = String::from_utf8(server_first.clone()).unwrap();
        let parts: Vec<&str> = text.split(',').collect();
        assert_eq!(parts.len(), 3);
        assert_eq!(parts[0], "r=clientnonceservernonce");
        assert_eq!(b64(parts[1].strip_prefix("s=").unwrap()).len(), 16);
        assert_eq!(parts[2], "i=4096");
        let (client_final, _) = client.finish(&server_first);
        assert_eq!(
            server.respond(&client_final),
            failure(SaslFailure::NotAuthorized)
        );
        assert_eq!(server.username(), None);
    }

    #[test]
    fn unknown_user_salt_is_deterministic() {
        let client = TestClient::new(ScramHash::Sha1, "n,,", &[]);
        let salts: Vec<Vec<u8>> = (0..2)
            .map(|_| {
                let mut server = exchange(ScramHash::Sha1, false, None, false);
                assert_eq!(server.start(&client.first()), need("user"));
                challenge(server.provide_credentials(None))
            })
            .collect();
        assert_eq!(salts[0], salts[1]);
    }

    #[test]
    fn decoy_secret_keeps_the_unknown_user_salt_across_nonces() {
        let client = TestClient::new(ScramHash::Sha1, "n,,", &[]);
        let salts: Vec<String> = ["nonce-a", "nonce-b"]
            .into_iter()
            .map(|nonce| {
                let mut server = ScramExchange::new(
                    ScramHash::Sha1,
                    false,
                    None,
                    false,
                    nonce.to_owned(),
                    Decoy::with_secret(b"node secret", 8192),
                );
                assert_eq!(server.start(&client.first()), need("user"));
                let first = String::from_utf8(challenge(server.provide_credentials(None))).unwrap();
                first.split_once(",s=").unwrap().1.to_owned()
            })
            .collect();
        assert_eq!(salts[0], salts[1]);
        assert!(salts[0].ends_with(",i=8192"));
    }

    #[test]
    fn wrong_password_fails() {
        let mut server = exchange(ScramHash::Sha256, false, None, false);
        let mut client = TestClient::new(ScramHash::Sha256, "n,,", &[]);
        client.password = "pencil!";
        assert_eq!(
            run(&mut server, &client, Some(&creds())),
            failure(SaslFailure::NotAuthorized)
        );
        assert_eq!(server.username(), None);
    }

    #[test]
    fn wrong_nonce_in_client_final_fails() {
        let mut server = exchange(ScramHash::Sha1, false, None, false);
        let client = TestClient::new(ScramHash::Sha1, "n,,", &[]);
        assert_eq!(server.start(&client.first()), need("user"));
        let server_first = challenge(server.provide_credentials(Some(&creds())));
        let forged = String::from_utf8(server_first)
            .unwrap()
            .replace("servernonce", "servernoncf");
        let (client_final, _) = client.finish(forged.as_bytes());
        assert_eq!(
            server.respond(&client_final),
            failure(SaslFailure::NotAuthorized)
        );
    }

    #[test]
    fn tampered_proof_fails() {
        let mut server = exchange(ScramHash::Sha1, false, None, false);
        let client = TestClient::new(ScramHash::Sha1, "n,,", &[]);
        assert_eq!(server.start(&client.first()), need("user"));
        let server_first = challenge(server.provide_credentials(Some(&creds())));
        let (client_final, _) = client.finish(&server_first);
        let text = String::from_utf8(client_final).unwrap();
        let (head, proof) = text.rsplit_once(",p=").unwrap();
        let mut proof = b64(proof);
        proof[0] ^= 0x80;
        let tampered = format!("{head},p={}", STANDARD.encode(proof));
        assert_eq!(
            server.respond(tampered.as_bytes()),
            failure(SaslFailure::NotAuthorized)
        );
    }

    #[test]
    fn authzid_of_the_user_is_accepted() {
        for header in ["n,a=user,", "n,a=user@example.org,"] {
            let mut server = exchange(ScramHash::Sha256, false, None, false);
            expect_success(
                &mut server,
                &TestClient::new(ScramHash::Sha256, header, &[]),
            );
        }
    }

    #[test]
    fn foreign_authzid_is_rejected() {
        for header in [
            "n,a=admin,",
            "n,a=admin@example.org,",
            "n,a=user@example.org/r,",
        ] {
            let mut server = exchange(ScramHash::Sha256, false, None, false);
            let client = TestClient::new(ScramHash::Sha256, header, &[]);
            assert_eq!(
                server.start(&client.first()),
                failure(SaslFailure::InvalidAuthzid),
                "{header}"
            );
        }
    }

    #[test]
    fn escaped_usernames_are_decoded() {
        let mut server = exchange(ScramHash::Sha1, false, None, false);
        assert_eq!(
            server.start(b"n,a=a=2Cb=3dc,n=a=2cb=3Dc,r=abc"),
            need("a,b=c")
        );
    }

    #[test]
    fn optional_extensions_are_ignored() {
        let mut server = exchange(ScramHash::Sha256, false, None, false);
        let mut client = TestClient::new(ScramHash::Sha256, "n,,", &[]);
        client.bare = "n=user,r=clientnonce,x=some value".to_owned();
        expect_success(&mut server, &client);
    }

    #[test]
    fn empty_initial_response_asks_for_client_first() {
        let mut server = exchange(ScramHash::Sha1, false, None, false);
        let client = TestClient::new(ScramHash::Sha1, "n,,", &[]);
        assert_eq!(server.start(b""), SaslStep::Challenge(Vec::new()));
        assert_eq!(server.respond(&client.first()), need("user"));
        let server_first = challenge(server.provide_credentials(Some(&creds())));
        let (client_final, server_final) = client.finish(&server_first);
        assert_eq!(
            server.respond(&client_final),
            SaslStep::Success(server_final)
        );
    }

    #[test]
    fn malformed_client_first_is_rejected() {
        let cases: &[&[u8]] = &[
            b"n",
            b"n,",
            b"n,,",
            b"x,,n=user,r=abc",
            b"p,,n=user,r=abc",
            b"p=,,n=user,r=abc",
            b"p=tls_exporter,,n=user,r=abc",
            b"n,b=user,n=user,r=abc",
            b"n,a=,n=user,r=abc",
            b"n,a=us=2Xer,n=user,r=abc",
            b"n,,m=ext,n=user,r=abc",
            b"n,,n=,r=abc",
            b"n,,n=us=er,r=abc",
            b"n,,n=user=2,r=abc",
            b"n,,n=user",
            b"n,,n=user,r=",
            b"n,,r=abc,n=user",
            b"n,,n=user,x=abc",
            b"n,,user,r=abc",
            b"n,,n=user,r=ab\x7fc",
            b"n,,n=user,r=ab c",
            b"n,,n=user,r=abc,",
            b"n,,n=user,r=abc,1=x",
            b"n,,n=user,r=abc,xy",
            b"n,,n=user,r=abc,x=",
            b"n,,n=user,r=abc,p=x",
            b"n,,n=user,r=abc,m=x",
            b"n,,n=us\xffer,r=abc",
            b"n,,n=us\0er,r=abc",
        ];
        for case in cases {
            let mut server = exchange(ScramHash::Sha1, false, None, false);
            assert_eq!(
                server.start(case),
                failure(SaslFailure::MalformedRequest),
                "{:?}",
                String::from_utf8_lossy(case)
            );
        }
    }

    #[test]
    fn malformed_client_final_is_rejected() {
        let nonce = "clientnonceservernonce";
        let proof = STANDARD.encode([0u8; 20]);
        let cases: Vec<Vec<u8>> = vec![
            Vec::new(),
            format!("c=biws,r={nonce}").into_bytes(),
            format!("r={nonce},c=biws,p={proof}").into_bytes(),
            format!("c=biws,p={proof}").into_bytes(),
            format!("c=b!ws,r={nonce},p={proof}").into_bytes(),
            format!("c=biw,r={nonce},p={proof}").into_bytes(),
            format!("c=biws,r={nonce},p=not base64!").into_bytes(),
            format!("c=biws,r={nonce},p={}", STANDARD.encode([0u8; 32])).into_bytes(),
            format!("c=biws,r={nonce},p=").into_bytes(),
            format!("c=biws,r=,p={proof}").into_bytes(),
            format!("c=biws,r={nonce},p={proof},x=y").into_bytes(),
            format!("c=biws,r={nonce},1x,p={proof}").into_bytes(),
            format!("c=biws,r={nonce},s=abc,p={proof}").into_bytes(),
            format!("biws,r={nonce},p={proof}").into_bytes(),
            format!("c=biws,r={nonce}\0,p={proof}").into_bytes(),
            [format!("c=biws,r={nonce},p=").as_bytes(), b"\xff\xfe"].concat(),
        ];
        for case in cases {
            let mut server = exchange(ScramHash::Sha1, false, None, false);
            assert_eq!(server.start(b"n,,n=user,r=clientnonce"), need("user"));
            challenge(server.provide_credentials(Some(&creds())));
            assert_eq!(
                server.respond(&case),
                failure(SaslFailure::MalformedRequest),
                "{:?}",
                String::from_utf8_lossy(&case)
            );
        }
    }

    #[test]
    fn invalid_server_nonce_is_a_temporary_failure() {
        for nonce in ["", "a,b", "caf\u{e9}", "a b"] {
            let mut server = ScramExchange::new(
                ScramHash::Sha1,
                false,
                None,
                false,
                nonce.to_owned(),
                Decoy::default(),
            );
            assert_eq!(
                server.start(b"n,,n=user,r=abc"),
                failure(SaslFailure::TemporaryAuthFailure),
                "{nonce:?}"
            );
        }
    }

    #[test]
    fn unusable_stored_keys_are_a_temporary_failure() {
        let mut broken = Vec::new();
        let mut c = creds();
        c.sha1.iterations = 0;
        broken.push(c);
        let mut c = creds();
        c.sha1.salt.clear();
        broken.push(c);
        let mut c = creds();
        c.sha1.stored_key.pop();
        broken.push(c);
        let mut c = creds();
        c.sha1.server_key = c.sha256.server_key.clone();
        broken.push(c);
        for c in &broken {
            let mut server = exchange(ScramHash::Sha1, false, None, false);
            assert_eq!(server.start(b"n,,n=user,r=abc"), need("user"));
            assert_eq!(
                server.provide_credentials(Some(c)),
                failure(SaslFailure::TemporaryAuthFailure)
            );
        }
    }

    #[test]
    fn steps_out_of_order_fail() {
        let client = TestClient::new(ScramHash::Sha1, "n,,", &[]);
        let malformed = failure(SaslFailure::MalformedRequest);

        let mut server = exchange(ScramHash::Sha1, false, None, false);
        assert_eq!(server.respond(&client.first()), malformed);
        assert_eq!(server.start(&client.first()), malformed);

        let mut server = exchange(ScramHash::Sha1, false, None, false);
        assert_eq!(server.provide_credentials(Some(&creds())), malformed);

        let mut server = exchange(ScramHash::Sha1, false, None, false);
        assert_eq!(server.start(&client.first()), need("user"));
        assert_eq!(server.start(&client.first()), malformed);
        assert_eq!(server.provide_credentials(Some(&creds())), malformed);

        let mut server = exchange(ScramHash::Sha1, false, None, false);
        assert_eq!(server.start(&client.first()), need("user"));
        assert_eq!(server.respond(b"c=biws,r=x,p=AAAA"), malformed);

        let mut server = exchange(ScramHash::Sha1, false, None, false);
        assert_eq!(server.start(&client.first()), need("user"));
        let server_first = challenge(server.provide_credentials(Some(&creds())));
        assert_eq!(server.provide_credentials(Some(&creds())), malformed);
        let (client_final, _) = client.finish(&server_first);
        assert_eq!(server.respond(&client_final), malformed);

        let mut server = exchange(ScramHash::Sha1, false, None, false);
        expect_success(&mut server, &client);
        let (client_final, _) = client.finish(b"r=clientnonceservernonce,s=AAAA,i=1");
        assert_eq!(server.respond(&client_final), malformed);
        assert_eq!(server.start(&client.first()), malformed);
        assert_eq!(server.provide_credentials(None), malformed);
        assert_eq!(server.username(), Some("user"));
    }

    #[test]
    fn saslname_decoding() {
        assert_eq!(decode_saslname("a=2Cb=3Dc").as_deref(), Some("a,b=c"));
        assert_eq!(decode_saslname("=2c=3d").as_deref(), Some(",="));
        assert_eq!(decode_saslname("plain").as_deref(), Some("plain"));
        assert_eq!(decode_saslname("caf\u{e9}").as_deref(), Some("caf\u{e9}"));
        assert_eq!(decode_saslname(""), None);
        assert_eq!(decode_saslname("a="), None);
        assert_eq!(decode_saslname("a=2"), None);
        assert_eq!(decode_saslname("a=2D"), None);
        assert_eq!(decode_saslname("a=\u{e9}x"), None);
    }
}
