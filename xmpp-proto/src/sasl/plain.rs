//! PLAIN (RFC 4616) on the server side: parse `authzid NUL authcid NUL passwd`, ask the caller
//! for the account, check the password against the stored SHA-256 keys.
//!
//! Outcomes: a missing NUL, an empty authcid or password, a NUL inside the password or text
//! that is not UTF-8 is `malformed-request`; an authzid other than the authcid or a bare JID
//! `authcid@domain` is `invalid-authzid`; an unknown user or a wrong password is
//! `not-authorized`. For an unknown user the PBKDF2 work is still done against decoy keys, so
//! the answer takes as long as for a real account. The password is used as its UTF-8 bytes
//! (no SASLprep).

use super::credentials::{Decoy, ScramHash, Secret, StoredCredentials};
use super::{SaslFailure, SaslStep, authzid_allowed};

/// One PLAIN authentication attempt.
#[derive(Debug)]
pub(crate) struct PlainExchange {
    state: State,
    /// Makes up keys for unknown users so they cost the same PBKDF2 work.
    decoy: Decoy,
    /// Only feeds the decoy (when it has no secret).
    nonce: String,
}

#[derive(Debug)]
enum State {
    /// `start` not called yet.
    Initial,
    /// The client sent no initial response; waiting for it in a `<response/>`.
    AwaitingResponse,
    /// Message parsed; waiting for `provide_credentials`.
    AwaitingCredentials { authcid: String, password: Secret },
    /// Authenticated as `username`.
    Succeeded { username: String },
    /// The exchange failed or was driven out of order; every further step fails.
    Failed,
}

impl PlainExchange {
    /// A fresh exchange.
    pub(crate) fn new(decoy: Decoy, nonce: String) -> Self {
        Self {
            state: State::Initial,
            decoy,
            nonce,
        }
    }

    /// Replaces how keys for unknown users are made up.
    pub(crate) fn set_decoy(&mut self, decoy: Decoy) {
        self.decoy = decoy;
    }

    /// Handles the `<auth/>` payload; an empty one asks for the message in a challenge.
    pub(crate) fn start(&mut self, initial: &[u8]) -> SaslStep {
        if !matches!(self.state, State::Initial) {
            return self.fail(SaslFailure::MalformedRequest);
        }
        if initial.is_empty() {
            self.state = State::AwaitingResponse;
            return SaslStep::Challenge(Vec::new());
        }
        self.handle_message(initial)
    }

    /// Handles a `<response/>` payload.
    pub(crate) fn respond(&mut self, data: &[u8]) -> SaslStep {
        if !matches!(self.state, State::AwaitingResponse) {
            return self.fail(SaslFailure::MalformedRequest);
        }
        self.handle_message(data)
    }

    /// Checks the password against the looked-up account.
    pub(crate) fn provide_credentials(&mut self, creds: Option<&StoredCredentials>) -> SaslStep {
        if !matches!(self.state, State::AwaitingCredentials { .. }) {
            return self.fail(SaslFailure::MalformedRequest);
        }
        // Checked just above; the else branch keeps a failure rather than a panic.
        let State::AwaitingCredentials { authcid, password } =
            std::mem::replace(&mut self.state, State::Failed)
        else {
            return SaslStep::Failure(SaslFailure::MalformedRequest);
        };
        let hash = ScramHash::Sha256;
        let valid = match creds {
            Some(creds) => hash.verify_password(creds.keys(hash), password.as_bytes()),
            None => {
                // Same PBKDF2 cost as a real account; the result is thrown away.
                let decoy = self.decoy.keys(hash, &authcid, &self.nonce);
                std::hint::black_box(hash.verify_password(&decoy, password.as_bytes()));
                false
            }
        };
        if valid {
            self.state = State::Succeeded { username: authcid };
            SaslStep::Success(Vec::new())
        } else {
            SaslStep::Failure(SaslFailure::NotAuthorized)
        }
    }

    /// The authenticated username, once the exchange succeeded.
    pub(crate) fn username(&self) -> Option<&str> {
        match &self.state {
            State::Succeeded { username } => Some(username),
            _ => None,
        }
    }

    fn handle_message(&mut self, message: &[u8]) -> SaslStep {
        match parse(message) {
            Ok((authcid, password)) => {
                let step = SaslStep::NeedCredentials {
                    username: authcid.clone(),
                };
                self.state = State::AwaitingCredentials { authcid, password };
                step
            }
            Err(failure) => self.fail(failure),
        }
    }

    /// Ends the exchange with `failure`; a finished success keeps its username.
    fn fail(&mut self, failure: SaslFailure) -> SaslStep {
        if !matches!(self.state, State::Succeeded { .. }) {
            self.state = State::Failed;
        }
        SaslStep::Failure(failure)
    }
}

/// Splits and checks a PLAIN message, returning the authcid and the password.
fn parse(message: &[u8]) -> Result<(String, Secret), SaslFailure> {
    let mut parts = message.splitn(3, |&b| b == 0);
    let (Some(authzid), Some(authcid), Some(password)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(SaslFailure::MalformedRequest);
    };
    if authcid.is_empty() || password.is_empty() || password.contains(&0) {
        return Err(SaslFailure::MalformedRequest);
    }
    let authzid = std::str::from_utf8(authzid).map_err(|_| SaslFailure::MalformedRequest)?;
    let authcid = std::str::from_utf8(authcid).map_err(|_| SaslFailure::MalformedRequest)?;
    if std::str::from_utf8(password).is_err() {
        return Err(SaslFailure::MalformedRequest);
    }
    if !authzid_allowed(authzid, authcid) {
        return Err(SaslFailure::InvalidAuthzid);
    }
    Ok((authcid.to_owned(), Secret::new(password.to_vec())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds() -> StoredCredentials {
        StoredCredentials::derive("pencil", b"sha1 salt", b"sha256 salt", 16)
    }

    fn exchange() -> PlainExchange {
        PlainExchange::new(Decoy::default(), "nonce".to_owned())
    }

    fn need(username: &str) -> SaslStep {
        SaslStep::NeedCredentials {
            username: username.to_owned(),
        }
    }

    fn failure(f: SaslFailure) -> SaslStep {
        SaslStep::Failure(f)
    }

    #[test]
    fn good_password_succeeds() {
        let mut ex = exchange();
        assert_eq!(ex.start(b"\0user\0pencil"), need("user"));
        assert_eq!(ex.username(), None);
        assert_eq!(
            ex.provide_credentials(Some(&creds())),
            SaslStep::Success(Vec::new())
        );
        assert_eq!(ex.username(), Some("user"));
    }

    #[test]
    fn wrong_password_is_not_authorized() {
        let mut ex = exchange();
        assert_eq!(ex.start(b"\0user\0pencil2"), need("user"));
        assert_eq!(
            ex.provide_credentials(Some(&creds())),
            failure(SaslFailure::NotAuthorized)
        );
        assert_eq!(ex.username(), None);
    }

    #[test]
    fn unknown_user_is_not_authorized() {
        let mut ex = exchange();
        assert_eq!(ex.start(b"\0ghost\0pencil"), need("ghost"));
        assert_eq!(
            ex.provide_credentials(None),
            failure(SaslFailure::NotAuthorized)
        );
        assert_eq!(ex.username(), None);
    }

    #[test]
    fn empty_initial_response_asks_for_the_message() {
        let mut ex = exchange();
        assert_eq!(ex.start(b""), SaslStep::Challenge(Vec::new()));
        assert_eq!(ex.respond(b"\0user\0pencil"), need("user"));
        assert_eq!(
            ex.provide_credentials(Some(&creds())),
            SaslStep::Success(Vec::new())
        );
    }

    #[test]
    fn authzid_equal_to_authcid_or_its_bare_jid_is_accepted() {
        for message in [
            &b"user\0user\0pencil"[..],
            b"user@example.org\0user\0pencil",
        ] {
            let mut ex = exchange();
            assert_eq!(ex.start(message), need("user"));
            assert_eq!(
                ex.provide_credentials(Some(&creds())),
                SaslStep::Success(Vec::new())
            );
        }
    }

    #[test]
    fn foreign_authzid_is_rejected() {
        for message in [
            &b"admin\0user\0pencil"[..],
            b"admin@example.org\0user\0pencil",
            b"userx\0user\0pencil",
            b"user@\0user\0pencil",
            b"user@example.org/res\0user\0pencil",
            b"user@a@b\0user\0pencil",
        ] {
            let mut ex = exchange();
            assert_eq!(
                ex.start(message),
                failure(SaslFailure::InvalidAuthzid),
                "{message:?}"
            );
        }
    }

    #[test]
    fn malformed_messages_are_rejected() {
        for message in [
            &b"userpencil"[..],
            b"\0userpencil",
            b"\0\0pencil",
            b"\0user\0",
            b"\0user\0pen\0cil",
            b"\0us\xffer\0pencil",
            b"\xff\0user\0pencil",
            b"\0user\0pen\xffcil",
        ] {
            let mut ex = exchange();
            assert_eq!(
                ex.start(message),
                failure(SaslFailure::MalformedRequest),
                "{message:?}"
            );
        }
    }

    #[test]
    fn empty_response_after_empty_initial_is_malformed() {
        let mut ex = exchange();
        assert_eq!(ex.start(b""), SaslStep::Challenge(Vec::new()));
        assert_eq!(ex.respond(b""), failure(SaslFailure::MalformedRequest));
    }

    #[test]
    fn steps_out_of_order_fail() {
        let mut ex = exchange();
        assert_eq!(
            ex.respond(b"\0user\0pencil"),
            failure(SaslFailure::MalformedRequest)
        );
        assert_eq!(
            ex.start(b"\0user\0pencil"),
            failure(SaslFailure::MalformedRequest)
        );

        let mut ex = exchange();
        assert_eq!(
            ex.provide_credentials(Some(&creds())),
            failure(SaslFailure::MalformedRequest)
        );

        let mut ex = exchange();
        assert_eq!(ex.start(b"\0user\0pencil"), need("user"));
        assert_eq!(
            ex.respond(b"\0user\0pencil"),
            failure(SaslFailure::MalformedRequest)
        );
        assert_eq!(
            ex.provide_credentials(Some(&creds())),
            failure(SaslFailure::MalformedRequest)
        );

        let mut ex = exchange();
        assert_eq!(ex.start(b"\0user\0pencil"), need("user"));
        assert_eq!(
            ex.provide_credentials(Some(&creds())),
            SaslStep::Success(Vec::new())
        );
        assert_eq!(
            ex.provide_credentials(Some(&creds())),
            failure(SaslFailure::MalformedRequest)
        );
        assert_eq!(ex.respond(b""), failure(SaslFailure::MalformedRequest));
        assert_eq!(ex.username(), Some("user"));
    }
}
