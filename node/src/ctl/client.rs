//! A minimal blocking HTTP/1.1 client for the admin API: one request per connection
//! (`Connection: close`), JSON in and out, over [`std::net::TcpStream`].
//!
//! The admin API is on loopback and answers small bodies, so the client reads the whole answer,
//! then splits status, headers and body; it understands `Content-Length` and chunked bodies.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use serde_json::Value;

use super::discovery::Target;
use super::error::{CtlError, connect_reason};

/// How long to wait for the connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long to wait for an answer (password hashing and shutdown take a moment).
const IO_TIMEOUT: Duration = Duration::from_secs(60);
/// Largest answer read.
const MAX_RESPONSE_BYTES: u64 = 64 * 1024 * 1024;
/// How much of an unexpected body an error message shows.
const BODY_EXCERPT_CHARS: usize = 300;

/// An HTTP answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HttpResponse {
    /// The status code.
    pub(crate) status: u16,
    /// Header names (lowercase) and values, in order.
    pub(crate) headers: Vec<(String, String)>,
    /// The body, de-chunked.
    pub(crate) body: Vec<u8>,
}

impl HttpResponse {
    /// The first header called `name` (lowercase).
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as text (invalid UTF-8 replaced).
    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// The admin API of one node.
#[derive(Debug, Clone)]
pub(crate) struct AdminClient {
    address: SocketAddr,
    token: String,
    token_source: String,
}

impl AdminClient {
    /// A client for the node `target` names.
    pub(crate) fn new(target: &Target) -> Self {
        Self {
            address: target.address,
            token: target.token.clone(),
            token_source: target.token_source.clone(),
        }
    }

    /// A client for `address` with `token`; `token_source` says where the token came from.
    #[cfg(test)]
    pub(crate) fn with_token(address: SocketAddr, token: &str, token_source: &str) -> Self {
        Self {
            address,
            token: token.to_owned(),
            token_source: token_source.to_owned(),
        }
    }

    /// Runs a GraphQL operation and returns its `data`. GraphQL errors become
    /// [`CtlError::Refused`] with the node's messages and the first error's code.
    pub(crate) fn graphql(&self, query: &str, variables: Value) -> Result<Value, CtlError> {
        let body = serde_json::json!({ "query": query, "variables": variables });
        let response = request(
            self.address,
            "POST",
            "/api/graphql",
            Some(&self.token),
            Some(body.to_string().as_bytes()),
        )?;
        match response.status {
            200 => {}
            401 => {
                return Err(CtlError::TokenRefused {
                    token_file: self.token_source.clone(),
                });
            }
            status => {
                return Err(CtlError::Http {
                    status,
                    body: excerpt(&response.text()),
                });
            }
        }
        let answer: Value = serde_json::from_slice(&response.body)
            .map_err(|e| CtlError::BadResponse(format!("the body is not JSON: {e}")))?;
        if let Some(errors) = answer.get("errors").and_then(Value::as_array)
            && !errors.is_empty()
        {
            return Err(refused(errors));
        }
        match answer.get("data") {
            Some(data) if !data.is_null() => Ok(data.clone()),
            _ => Err(CtlError::BadResponse("no data and no errors".to_owned())),
        }
    }

    /// `GET path`, without a token.
    #[cfg(test)]
    pub(crate) fn get(&self, path: &str) -> Result<HttpResponse, CtlError> {
        request(self.address, "GET", path, None, None)
    }
}

/// The GraphQL `errors` as one [`CtlError::Refused`].
fn refused(errors: &[Value]) -> CtlError {
    let message = errors
        .iter()
        .map(|e| {
            e.get("message")
                .and_then(Value::as_str)
                .unwrap_or("the node sent an error without a message")
        })
        .collect::<Vec<_>>()
        .join("; ");
    let code = errors
        .first()
        .and_then(|e| e.pointer("/extensions/code"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    CtlError::Refused { message, code }
}

/// Sends one request and reads the whole answer. `token` goes in `Authorization: Bearer`;
/// `body` is sent as JSON.
pub(crate) fn request(
    address: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&[u8]>,
) -> Result<HttpResponse, CtlError> {
    let mut stream = TcpStream::connect_timeout(&address, CONNECT_TIMEOUT).map_err(|e| {
        CtlError::Unreachable {
            address,
            reason: connect_reason(&e),
        }
    })?;
    let exchange = |source| CtlError::Exchange { address, source };
    stream
        .set_read_timeout(Some(IO_TIMEOUT))
        .map_err(exchange)?;
    stream
        .set_write_timeout(Some(IO_TIMEOUT))
        .map_err(exchange)?;
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\
         User-Agent: tern-ctl/{}\r\nAccept: application/json\r\n",
        env!("CARGO_PKG_VERSION")
    );
    if let Some(token) = token {
        head.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    if let Some(body) = body {
        head.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).map_err(exchange)?;
    if let Some(body) = body {
        stream.write_all(body).map_err(exchange)?;
    }
    stream.flush().map_err(exchange)?;
    let mut raw = Vec::new();
    stream
        .take(MAX_RESPONSE_BYTES)
        .read_to_end(&mut raw)
        .map_err(exchange)?;
    parse_response(&raw)
}

/// Splits a complete HTTP/1.1 answer into status, headers and body.
pub(crate) fn parse_response(raw: &[u8]) -> Result<HttpResponse, CtlError> {
    let bad = |what: &str| CtlError::BadResponse(what.to_owned());
    let end = find(raw, b"\r\n\r\n").ok_or_else(|| bad("the headers do not end"))?;
    let head = std::str::from_utf8(&raw[..end]).map_err(|_| bad("the headers are not UTF-8"))?;
    let rest = &raw[end + 4..];
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        return Err(bad("the answer is not HTTP/1.x"));
    }
    let status = parts
        .next()
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| bad("the status line has no status code"))?;
    let mut headers = Vec::new();
    for line in lines {
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| bad("a header line has no colon"))?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
    }
    let mut response = HttpResponse {
        status,
        headers,
        body: Vec::new(),
    };
    let chunked = response
        .header("transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    response.body = if chunked {
        dechunk(rest)?
    } else if let Some(length) = response.header("content-length") {
        let length: usize = length
            .parse()
            .map_err(|_| bad("the content length is not a number"))?;
        rest.get(..length)
            .ok_or_else(|| bad("the body is shorter than its content length"))?
            .to_vec()
    } else {
        rest.to_vec()
    };
    Ok(response)
}

/// Decodes a chunked body (RFC 9112 §7.1); trailers are ignored.
fn dechunk(mut rest: &[u8]) -> Result<Vec<u8>, CtlError> {
    let bad = |what: &str| CtlError::BadResponse(what.to_owned());
    let mut body = Vec::new();
    loop {
        let line_end = find(rest, b"\r\n").ok_or_else(|| bad("a chunk size line does not end"))?;
        let line = std::str::from_utf8(&rest[..line_end]).map_err(|_| bad("bad chunk size"))?;
        let size_text = line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16).map_err(|_| bad("bad chunk size"))?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Ok(body);
        }
        let chunk = rest
            .get(..size)
            .ok_or_else(|| bad("a chunk is shorter than its size"))?;
        body.extend_from_slice(chunk);
        rest = rest
            .get(size..)
            .and_then(|r| r.strip_prefix(b"\r\n"))
            .ok_or_else(|| bad("a chunk does not end with CRLF"))?;
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The start of a text, on one line, for error messages.
fn excerpt(text: &str) -> String {
    let one_line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() <= BODY_EXCERPT_CHARS {
        return one_line;
    }
    let cut: String = one_line.chars().take(BODY_EXCERPT_CHARS).collect();
    format!("{cut}…")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_content_length_answer() {
        let raw = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
                    Content-Length: 11\r\n\r\n{\"data\":{}}";
        let r = parse_response(raw).unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert_eq!(r.text(), "{\"data\":{}}");
    }

    #[test]
    fn parses_a_chunked_answer() {
        let raw = b"HTTP/1.1 401 Unauthorized\r\nTransfer-Encoding: chunked\r\n\r\n\
                    5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\n";
        let r = parse_response(raw).unwrap();
        assert_eq!(r.status, 401);
        assert_eq!(r.text(), "hello world");
    }

    #[test]
    fn rejects_broken_answers() {
        for raw in [
            &b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n"[..],
            b"SMTP 220 hello\r\n\r\n",
            b"HTTP/1.1 OK\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\nshort",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        ] {
            assert!(
                matches!(parse_response(raw), Err(CtlError::BadResponse(_))),
                "{}",
                String::from_utf8_lossy(raw)
            );
        }
    }

    #[test]
    fn graphql_errors_become_refused_with_the_first_code() {
        let errors = serde_json::json!([
            { "message": "account a@localhost already exists", "extensions": { "code": "USER_EXISTS" } },
            { "message": "second" }
        ]);
        let e = refused(errors.as_array().unwrap());
        assert_eq!(e.code(), Some("USER_EXISTS"));
        assert_eq!(e.to_string(), "account a@localhost already exists; second");
    }

    #[test]
    fn connection_refused_is_reported_as_unreachable() {
        // A port that was just free: nothing listens there.
        let address = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let e = request(address, "GET", "/health", None, None).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "cannot reach the admin API at {address}: is `tern serve` running? \
                 (connection refused)"
            )
        );
    }

    #[test]
    fn long_bodies_are_cut_in_messages() {
        let text = "word ".repeat(200);
        let cut = excerpt(&text);
        assert!(cut.ends_with('…'));
        assert_eq!(cut.chars().count(), BODY_EXCERPT_CHARS + 1);
        assert_eq!(excerpt("a\n b"), "a b");
    }
}
