//! SASL on the client side: PLAIN and SCRAM-SHA-1 / SCRAM-SHA-256 without channel binding, for
//! the load harness and tests (they speak XMPP to any server, like a real client).
//!
//! Sans-IO like the server side: the caller moves the base64-decoded payloads and picks the
//! client nonce. The expensive step of SCRAM, `Hi()` (PBKDF2), is the caller's choice through
//! [`ScramClient::respond`]: real clients cache the salted password per account, and so may the
//! harness, so that a login costs the client a few hashes like it costs the server.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use super::Mechanism;
use super::credentials::ScramHash;

/// Why a server's SCRAM message is refused by the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScramClientError {
    /// The mechanism is not a SCRAM mechanism without channel binding.
    #[error("{0} is not supported by the client")]
    Unsupported(&'static str),
    /// The server-first message breaks the RFC 5802 grammar.
    #[error("malformed server-first message: {0}")]
    MalformedServerFirst(&'static str),
    /// The server's nonce does not start with the client's (RFC 5802 §5.1).
    #[error("server nonce does not extend the client nonce")]
    NonceMismatch,
    /// The server-final message carries an error or a wrong server signature.
    #[error("server signature refused: {0}")]
    BadServerFinal(String),
    /// [`ScramClient::verify_server_final`] was called before [`ScramClient::respond`].
    #[error("exchange driven out of order")]
    OutOfOrder,
}

/// The initial response of PLAIN (RFC 4616) for `username` and `password`, no authzid.
pub fn plain_initial(username: &str, password: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(username.len() + password.len() + 2);
    out.push(0);
    out.extend_from_slice(username.as_bytes());
    out.push(0);
    out.extend_from_slice(password.as_bytes());
    out
}

/// Salt and iteration count of a server-first message: what a client cache of salted passwords
/// is keyed by.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SaltParams {
    /// The decoded `s=` value.
    pub salt: Vec<u8>,
    /// The `i=` value.
    pub iterations: u32,
}

/// One SCRAM exchange on the client side.
#[derive(Debug)]
pub struct ScramClient {
    hash: ScramHash,
    password: String,
    client_nonce: String,
    first_bare: String,
    /// `HMAC(ServerKey, AuthMessage)`, known once the client-final message is built.
    expected_signature: Option<Vec<u8>>,
}

impl ScramClient {
    /// Starts an exchange; `client_nonce` must be printable ASCII without `,`.
    pub fn new(
        mechanism: Mechanism,
        username: &str,
        password: &str,
        client_nonce: &str,
    ) -> Result<Self, ScramClientError> {
        let hash = match mechanism {
            Mechanism::ScramSha1 => ScramHash::Sha1,
            Mechanism::ScramSha256 => ScramHash::Sha256,
            other => return Err(ScramClientError::Unsupported(other.name())),
        };
        let escaped = username.replace('=', "=3D").replace(',', "=2C");
        Ok(Self {
            hash,
            password: password.to_owned(),
            client_nonce: client_nonce.to_owned(),
            first_bare: format!("n={escaped},r={client_nonce}"),
            expected_signature: None,
        })
    }

    /// The client-first message (gs2 header `n,,`: no channel binding, no authzid).
    pub fn client_first(&self) -> Vec<u8> {
        format!("n,,{}", self.first_bare).into_bytes()
    }

    /// Reads salt and iteration count off a server-first message.
    pub fn salt_params(server_first: &[u8]) -> Result<SaltParams, ScramClientError> {
        let fields = Fields::parse(server_first)?;
        Ok(SaltParams {
            salt: fields.salt,
            iterations: fields.iterations,
        })
    }

    /// `Hi(password, salt, iterations)` for this exchange's hash: the costly step, to cache.
    pub fn salted_password(&self, params: &SaltParams) -> Vec<u8> {
        self.hash
            .salted_password(self.password.as_bytes(), &params.salt, params.iterations)
    }

    /// Answers the server-first message with the client-final message. `salted` returns the
    /// salted password for the server's salt and iteration count (from a cache, or by calling
    /// [`ScramClient::salted_password`]).
    pub fn respond(
        &mut self,
        server_first: &[u8],
        salted: impl FnOnce(&Self, &SaltParams) -> Vec<u8>,
    ) -> Result<Vec<u8>, ScramClientError> {
        let fields = Fields::parse(server_first)?;
        if !fields.nonce.starts_with(&self.client_nonce) || fields.nonce == self.client_nonce {
            return Err(ScramClientError::NonceMismatch);
        }
        let params = SaltParams {
            salt: fields.salt,
            iterations: fields.iterations,
        };
        let salted = salted(self, &params);
        let client_key = self.hash.hmac(&salted, &[b"Client Key"]);
        let stored_key = self.hash.hash(&client_key);
        // `c=` is base64 of the gs2 header "n,,".
        let without_proof = format!("c=biws,r={}", fields.nonce);
        let auth_message = [
            self.first_bare.as_bytes(),
            b",",
            server_first,
            b",",
            without_proof.as_bytes(),
        ];
        let signature = self.hash.hmac(&stored_key, &auth_message);
        let proof: Vec<u8> = client_key
            .iter()
            .zip(&signature)
            .map(|(key, sig)| key ^ sig)
            .collect();
        let server_key = self.hash.hmac(&salted, &[b"Server Key"]);
        self.expected_signature = Some(self.hash.hmac(&server_key, &auth_message));
        Ok(format!("{without_proof},p={}", STANDARD.encode(proof)).into_bytes())
    }

    /// Checks the server-final message (the `<success/>` payload): `v=` must be the server
    /// signature, proving the server knows the keys.
    pub fn verify_server_final(&self, server_final: &[u8]) -> Result<(), ScramClientError> {
        let expected = self
            .expected_signature
            .as_ref()
            .ok_or(ScramClientError::OutOfOrder)?;
        let text = String::from_utf8_lossy(server_final);
        if let Some(error) = text.strip_prefix("e=") {
            return Err(ScramClientError::BadServerFinal(error.to_owned()));
        }
        let value = text
            .split(',')
            .find_map(|field| field.strip_prefix("v="))
            .ok_or_else(|| ScramClientError::BadServerFinal("no v= attribute".to_owned()))?;
        match STANDARD.decode(value) {
            Ok(signature) if signature == *expected => Ok(()),
            _ => Err(ScramClientError::BadServerFinal(
                "server signature does not match".to_owned(),
            )),
        }
    }
}

/// The attributes of a server-first message.
struct Fields {
    nonce: String,
    salt: Vec<u8>,
    iterations: u32,
}

impl Fields {
    fn parse(server_first: &[u8]) -> Result<Self, ScramClientError> {
        let text = std::str::from_utf8(server_first)
            .map_err(|_| ScramClientError::MalformedServerFirst("not UTF-8"))?;
        let (mut nonce, mut salt, mut iterations) = (None, None, None);
        for field in text.split(',') {
            match field.split_at_checked(2) {
                Some(("r=", value)) => nonce = Some(value),
                Some(("s=", value)) => salt = Some(value),
                Some(("i=", value)) => iterations = Some(value),
                Some(("m=", _)) => {
                    return Err(ScramClientError::MalformedServerFirst(
                        "mandatory extension",
                    ));
                }
                _ => {}
            }
        }
        let nonce = nonce.ok_or(ScramClientError::MalformedServerFirst("no r="))?;
        let salt = STANDARD
            .decode(salt.ok_or(ScramClientError::MalformedServerFirst("no s="))?)
            .map_err(|_| ScramClientError::MalformedServerFirst("s= is not base64"))?;
        let iterations = iterations
            .ok_or(ScramClientError::MalformedServerFirst("no i="))?
            .parse::<u32>()
            .ok()
            .filter(|&i| i > 0)
            .ok_or(ScramClientError::MalformedServerFirst(
                "i= is not a positive integer",
            ))?;
        if salt.is_empty() {
            return Err(ScramClientError::MalformedServerFirst("empty salt"));
        }
        Ok(Self {
            nonce: nonce.to_owned(),
            salt,
            iterations,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sasl::{SaslServer, SaslStep, StoredCredentials};

    /// RFC 7677 §3: the SCRAM-SHA-256 example exchange, byte for byte.
    #[test]
    fn rfc7677_example() {
        let mut client = ScramClient::new(
            Mechanism::ScramSha256,
            "user",
            "pencil",
            "rOprNGfwEbeRWgbNEkqO",
        )
        .expect("scram");
        assert_eq!(client.client_first(), b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO");
        let server_first = b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
        let client_final = client
            .respond(server_first, ScramClient::salted_password)
            .expect("respond");
        assert_eq!(
            String::from_utf8(client_final).expect("utf-8"),
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
        );
        client
            .verify_server_final(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
            .expect("server signature");
        assert!(
            client
                .verify_server_final(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G5=")
                .is_err()
        );
    }

    #[test]
    fn talks_to_the_server_side_for_both_hashes() {
        for mechanism in [Mechanism::ScramSha1, Mechanism::ScramSha256] {
            let creds = StoredCredentials::derive("secret", b"salt-one", b"salt-two", 64);
            let mut server = SaslServer::new(mechanism, None, false, "server-nonce-123".to_owned());
            let mut client =
                ScramClient::new(mechanism, "alice", "secret", "client-nonce").expect("scram");
            assert!(matches!(
                server.start(&client.client_first()),
                SaslStep::NeedCredentials { .. }
            ));
            let SaslStep::Challenge(first) = server.provide_credentials(Some(&creds)) else {
                panic!("no challenge");
            };
            // A cached salted password gives the same answer as a computed one.
            let params = ScramClient::salt_params(&first).expect("params");
            let cached = client.salted_password(&params);
            let reply = client.respond(&first, |_, _| cached).expect("respond");
            let SaslStep::Success(last) = server.respond(&reply) else {
                panic!("{mechanism:?} refused");
            };
            client.verify_server_final(&last).expect("server signature");
        }
    }

    #[test]
    fn refuses_bad_server_first() {
        let mut client = ScramClient::new(Mechanism::ScramSha256, "u", "p", "abc").expect("scram");
        for bad in [
            &b"r=xyz,s=c2FsdA==,i=4096"[..],
            b"r=abc,s=c2FsdA==,i=4096",
            b"r=abcd,s=!!,i=4096",
            b"r=abcd,s=c2FsdA==,i=0",
            b"r=abcd,i=4096",
            b"m=ext,r=abcd,s=c2FsdA==,i=1",
        ] {
            assert!(
                client.respond(bad, ScramClient::salted_password).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(
            ScramClient::new(Mechanism::ScramSha256Plus, "u", "p", "n").err(),
            Some(ScramClientError::Unsupported("SCRAM-SHA-256-PLUS"))
        );
        assert_eq!(plain_initial("u", "p"), b"\0u\0p");
    }
}
