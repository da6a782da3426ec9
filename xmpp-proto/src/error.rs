//! Protocol-visible errors: RFC 6120 stream errors (§4.9) and stanza errors (§8.3).
//!
//! These are sent on the wire, so they are their own types (STYLE.md §4): a condition enum plus
//! optional text, with builders for the XML.

use crate::element::Element;
use crate::ns;

/// RFC 6120 §4.9.3 stream error conditions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StreamCondition {
    /// `<bad-format/>`
    BadFormat,
    /// `<conflict/>`: a new session replaced this one.
    Conflict,
    /// `<connection-timeout/>`
    ConnectionTimeout,
    /// The domain of the stream is no longer served (a disabled or removed domain).
    HostGone,
    /// `<host-unknown/>`
    HostUnknown,
    /// `<internal-server-error/>`
    InternalServerError,
    /// `<invalid-namespace/>`
    InvalidNamespace,
    /// `<invalid-xml/>`
    InvalidXml,
    /// `<not-authorized/>`
    NotAuthorized,
    /// `<not-well-formed/>`
    NotWellFormed,
    /// `<policy-violation/>`
    PolicyViolation,
    /// `<remote-connection-failed/>`: a remote entity needed for authentication or
    /// authorization (here: the account's home datacenter) cannot be reached.
    RemoteConnectionFailed,
    /// `<reset/>`
    Reset,
    /// `<resource-constraint/>`
    ResourceConstraint,
    /// `<restricted-xml/>`
    RestrictedXml,
    /// `<system-shutdown/>`
    SystemShutdown,
    /// `<undefined-condition/>`
    UndefinedCondition,
    /// `<unsupported-encoding/>`
    UnsupportedEncoding,
    /// `<unsupported-stanza-type/>`
    UnsupportedStanzaType,
    /// `<unsupported-version/>`
    UnsupportedVersion,
}

impl StreamCondition {
    /// Every condition, for [`Self::from_name`].
    const ALL: [Self; 20] = [
        Self::BadFormat,
        Self::Conflict,
        Self::ConnectionTimeout,
        Self::HostGone,
        Self::HostUnknown,
        Self::InternalServerError,
        Self::InvalidNamespace,
        Self::InvalidXml,
        Self::NotAuthorized,
        Self::NotWellFormed,
        Self::PolicyViolation,
        Self::RemoteConnectionFailed,
        Self::Reset,
        Self::ResourceConstraint,
        Self::RestrictedXml,
        Self::SystemShutdown,
        Self::UndefinedCondition,
        Self::UnsupportedEncoding,
        Self::UnsupportedStanzaType,
        Self::UnsupportedVersion,
    ];

    /// The condition with element name `name`.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == name)
    }

    /// The condition element's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BadFormat => "bad-format",
            Self::Conflict => "conflict",
            Self::ConnectionTimeout => "connection-timeout",
            Self::HostGone => "host-gone",
            Self::HostUnknown => "host-unknown",
            Self::InternalServerError => "internal-server-error",
            Self::InvalidNamespace => "invalid-namespace",
            Self::InvalidXml => "invalid-xml",
            Self::NotAuthorized => "not-authorized",
            Self::NotWellFormed => "not-well-formed",
            Self::PolicyViolation => "policy-violation",
            Self::RemoteConnectionFailed => "remote-connection-failed",
            Self::Reset => "reset",
            Self::ResourceConstraint => "resource-constraint",
            Self::RestrictedXml => "restricted-xml",
            Self::SystemShutdown => "system-shutdown",
            Self::UndefinedCondition => "undefined-condition",
            Self::UnsupportedEncoding => "unsupported-encoding",
            Self::UnsupportedStanzaType => "unsupported-stanza-type",
            Self::UnsupportedVersion => "unsupported-version",
        }
    }
}

/// A stream error to send before closing the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamError {
    /// The condition.
    pub condition: StreamCondition,
    /// Human-readable text, if any.
    pub text: Option<String>,
}

impl StreamError {
    /// A stream error without text.
    pub fn new(condition: StreamCondition) -> Self {
        Self {
            condition,
            text: None,
        }
    }

    /// Builder: adds a text.
    pub fn with_text(mut self, text: impl Into<String>) -> Self {
        self.text = Some(text.into());
        self
    }

    /// The `<stream:error/>` XML.
    pub fn to_xml(&self) -> String {
        let mut e = Element::new("error", ns::STREAMS)
            .with_child(Element::new(self.condition.as_str(), ns::STREAM_ERRORS));
        if let Some(text) = &self.text {
            e.append_child(Element::new("text", ns::STREAM_ERRORS).with_text(text.clone()));
        }
        // The stream prefix is bound on our header; write the element with it.
        let inner = e.to_xml(ns::STREAMS);
        format!("<stream:{}", inner.trim_start_matches('<')).replacen(
            "</error>",
            "</stream:error>",
            1,
        )
    }
}

impl std::fmt::Display for StreamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.condition.as_str())?;
        if let Some(text) = &self.text {
            write!(f, ": {text}")?;
        }
        Ok(())
    }
}

/// RFC 6120 §8.3.2 error types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorType {
    /// Retry after providing credentials.
    Auth,
    /// Do not retry.
    Cancel,
    /// Proceed (the condition was only a warning).
    Continue,
    /// Retry after changing the data sent.
    Modify,
    /// Retry after waiting.
    Wait,
}

impl ErrorType {
    /// The `type` attribute value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auth => "auth",
            Self::Cancel => "cancel",
            Self::Continue => "continue",
            Self::Modify => "modify",
            Self::Wait => "wait",
        }
    }
}

/// RFC 6120 §8.3.3 stanza error conditions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StanzaCondition {
    /// `<bad-request/>`
    BadRequest,
    /// `<conflict/>`
    Conflict,
    /// `<feature-not-implemented/>`
    FeatureNotImplemented,
    /// `<forbidden/>`
    Forbidden,
    /// `<internal-server-error/>`
    InternalServerError,
    /// `<item-not-found/>`
    ItemNotFound,
    /// `<jid-malformed/>`
    JidMalformed,
    /// `<not-acceptable/>`
    NotAcceptable,
    /// `<not-allowed/>`
    NotAllowed,
    /// `<not-authorized/>`
    NotAuthorized,
    /// `<policy-violation/>`
    PolicyViolation,
    /// `<recipient-unavailable/>`
    RecipientUnavailable,
    /// `<registration-required/>`
    RegistrationRequired,
    /// `<remote-server-not-found/>`
    RemoteServerNotFound,
    /// `<remote-server-timeout/>`
    RemoteServerTimeout,
    /// `<resource-constraint/>`
    ResourceConstraint,
    /// `<service-unavailable/>`
    ServiceUnavailable,
    /// `<undefined-condition/>`
    UndefinedCondition,
    /// `<unexpected-request/>`
    UnexpectedRequest,
}

impl StanzaCondition {
    /// The condition element's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BadRequest => "bad-request",
            Self::Conflict => "conflict",
            Self::FeatureNotImplemented => "feature-not-implemented",
            Self::Forbidden => "forbidden",
            Self::InternalServerError => "internal-server-error",
            Self::ItemNotFound => "item-not-found",
            Self::JidMalformed => "jid-malformed",
            Self::NotAcceptable => "not-acceptable",
            Self::NotAllowed => "not-allowed",
            Self::NotAuthorized => "not-authorized",
            Self::PolicyViolation => "policy-violation",
            Self::RecipientUnavailable => "recipient-unavailable",
            Self::RegistrationRequired => "registration-required",
            Self::RemoteServerNotFound => "remote-server-not-found",
            Self::RemoteServerTimeout => "remote-server-timeout",
            Self::ResourceConstraint => "resource-constraint",
            Self::ServiceUnavailable => "service-unavailable",
            Self::UndefinedCondition => "undefined-condition",
            Self::UnexpectedRequest => "unexpected-request",
        }
    }

    /// The error type RFC 6120 §8.3.3 suggests for the condition.
    pub fn default_type(self) -> ErrorType {
        match self {
            Self::BadRequest | Self::JidMalformed | Self::NotAcceptable | Self::PolicyViolation => {
                ErrorType::Modify
            }
            Self::NotAuthorized | Self::Forbidden | Self::RegistrationRequired => ErrorType::Auth,
            Self::RecipientUnavailable
            | Self::RemoteServerTimeout
            | Self::ResourceConstraint
            | Self::UnexpectedRequest => ErrorType::Wait,
            _ => ErrorType::Cancel,
        }
    }
}

/// A stanza error: condition, type and optional text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StanzaError {
    /// The condition.
    pub condition: StanzaCondition,
    /// The error type.
    pub type_: ErrorType,
    /// Human-readable text.
    pub text: Option<String>,
    /// An application-specific condition element (RFC 6120 §8.3.4), such as XEP-0060's.
    pub app: Option<Box<Element>>,
}

impl StanzaError {
    /// An error with the condition's default type.
    pub fn new(condition: StanzaCondition) -> Self {
        Self {
            condition,
            type_: condition.default_type(),
            text: None,
            app: None,
        }
    }

    /// Builder: adds an application-specific condition element.
    pub fn with_app_element(mut self, element: Element) -> Self {
        self.app = Some(Box::new(element));
        self
    }

    /// Builder: adds a text.
    pub fn with_text(mut self, text: impl Into<String>) -> Self {
        self.text = Some(text.into());
        self
    }

    /// The `<error/>` child element (in `stanza_ns`, the stream's namespace).
    pub fn to_element(&self, stanza_ns: &str) -> Element {
        let mut e = Element::new("error", stanza_ns)
            .with_attr("type", self.type_.as_str())
            .with_child(Element::new(self.condition.as_str(), ns::STANZAS));
        if let Some(text) = &self.text {
            e.append_child(Element::new("text", ns::STANZAS).with_text(text.clone()));
        }
        if let Some(app) = &self.app {
            e.append_child((**app).clone());
        }
        e
    }

    /// The error reply to `original` (RFC 6120 §8.3.1): same kind and id, `type='error'`,
    /// addresses swapped, the original payload kept for messages and presences.
    pub fn reply_to(&self, original: &Element) -> Element {
        let mut reply = Element::new(original.name(), original.ns())
            .with_attr("type", "error")
            .with_attr_opt("id", original.attr("id"))
            .with_attr_opt("to", original.attr("from"))
            .with_attr_opt("from", original.attr("to"));
        if original.name() != "iq" {
            for child in original.children() {
                if !child.is("error", original.ns()) {
                    reply.append_child(child.clone());
                }
            }
        }
        reply.append_child(self.to_element(original.ns()));
        reply
    }
}

impl std::fmt::Display for StanzaError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.condition.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_conditions_round_trip_by_name() {
        for condition in StreamCondition::ALL {
            assert_eq!(
                StreamCondition::from_name(condition.as_str()),
                Some(condition)
            );
        }
        assert_eq!(StreamCondition::from_name("no-such-condition"), None);
    }

    #[test]
    fn stream_error_xml() {
        let e = StreamError::new(StreamCondition::PolicyViolation).with_text("too big");
        assert_eq!(
            e.to_xml(),
            "<stream:error><policy-violation xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>\
             <text xmlns='urn:ietf:params:xml:ns:xmpp-streams'>too big</text></stream:error>"
        );
        let parsed = Element::parse(e.to_xml().as_bytes(), ns::CLIENT).unwrap();
        assert!(parsed.is("error", ns::STREAMS));
        assert!(parsed.has_child("policy-violation", ns::STREAM_ERRORS));
    }

    #[test]
    fn stanza_error_reply_swaps_addresses() {
        let original = Element::parse(
            b"<message from='a@b/c' to='x@b' id='7' type='chat'><body>hi</body></message>",
            ns::CLIENT,
        )
        .unwrap();
        let reply = StanzaError::new(StanzaCondition::ServiceUnavailable).reply_to(&original);
        assert_eq!(reply.attr("type"), Some("error"));
        assert_eq!(reply.attr("to"), Some("a@b/c"));
        assert_eq!(reply.attr("from"), Some("x@b"));
        assert_eq!(reply.attr("id"), Some("7"));
        assert!(reply.has_child("body", ns::CLIENT));
        let error = reply.get_child("error", ns::CLIENT).unwrap();
        assert_eq!(error.attr("type"), Some("cancel"));
        assert!(error.has_child("service-unavailable", ns::STANZAS));
    }

    #[test]
    fn iq_error_reply_drops_payload() {
        let original = Element::parse(
            b"<iq from='a@b/c' to='b' id='q' type='get'><query xmlns='urn:nope'/></iq>",
            ns::CLIENT,
        )
        .unwrap();
        let reply = StanzaError::new(StanzaCondition::FeatureNotImplemented).reply_to(&original);
        assert!(!reply.has_child("query", "urn:nope"));
        assert!(reply.has_child("error", ns::CLIENT));
    }
}
