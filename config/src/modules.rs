//! `[modules.*]`: settings of the optional XMPP modules: in-band registration (XEP-0077),
//! server pings (XEP-0199), software version (XEP-0092), offline messages (XEP-0160), private
//! XML storage (XEP-0049), vCards (XEP-0054), last activity (XEP-0012), entity time
//! (XEP-0202), message carbons (XEP-0280), blocking (XEP-0191 / XEP-0016) and client state
//! indication (XEP-0352).

use std::time::Duration;

use crate::reader::{ConfigValues, Diagnostics, Section};

/// The `[modules]` section: one sub-table per module.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Modules {
    /// `[modules.register]`.
    pub register: Register,
    /// `[modules.ping]`.
    pub ping: Ping,
    /// `[modules.version]`.
    pub version: Version,
    /// `[modules.offline]`.
    pub offline: Offline,
    /// `[modules.private]`: XEP-0049 private XML storage.
    pub private: Stored,
    /// `[modules.vcard]`: XEP-0054 vCard-temp (and XEP-0153 avatar hashes).
    pub vcard: Stored,
    /// `[modules.last]`: XEP-0012 last activity.
    pub last: Toggle,
    /// `[modules.time]`: XEP-0202 entity time.
    pub time: Toggle,
    /// `[modules.carbons]`: XEP-0280 message carbons.
    pub carbons: Toggle,
    /// `[modules.blocking]`: XEP-0191 blocking command and XEP-0016 privacy lists.
    pub blocking: Toggle,
    /// `[modules.csi]`: XEP-0352 client state indication.
    pub csi: Toggle,
    /// `[modules.mam]`: XEP-0313 message archive management.
    pub mam: Mam,
    /// `[modules.stream_management]`: XEP-0198 acknowledgements and resumption.
    pub stream_management: StreamManagement,
    /// `[modules.pep]`: XEP-0163 personal eventing (and XEP-0223, XEP-0402, XEP-0398).
    pub pep: Pep,
    /// `[modules.muc]`: XEP-0045 multi-user chat.
    pub muc: Muc,
}

/// `[modules.muc]`: XEP-0045.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Muc {
    /// Whether the service runs. Default `true`.
    pub enabled: bool,
    /// The service's domain for each served domain, `@HOST@` standing for it. Default
    /// `"muc.@HOST@"`.
    pub host: String,
    /// Messages a new room keeps for history on join (owners may lower it). 0..=1000,
    /// default 20.
    pub history: u32,
    /// Most occupants of a room (owners may lower it). 1..=100000, default 200.
    pub max_users: u32,
    /// Rooms one user may own. 1..=100000, default 100.
    pub max_rooms_per_user: u32,
    /// Largest message an occupant may send to a room or another occupant, in bytes: 256 B
    /// ..=16 MiB, default 16 KiB; a larger one gets `<not-acceptable/>`.
    pub max_message_size: usize,
    /// Messages per second one occupant may send (a burst of twice as many is allowed);
    /// faster ones get `<resource-constraint/>`. 1..=10000, default 10.
    pub max_messages_per_second: u32,
}

impl Default for Muc {
    fn default() -> Self {
        Self {
            enabled: true,
            host: "muc.@HOST@".to_owned(),
            history: 20,
            max_users: 200,
            max_rooms_per_user: 100,
            max_message_size: 16 * 1024,
            max_messages_per_second: 10,
        }
    }
}

/// `[modules.pep]`: XEP-0163.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pep {
    /// Whether accounts have a PEP service. Default `true`.
    pub enabled: bool,
    /// Most items a node keeps (what `pubsub#max_items = max` means). 1..=10000, default 1000.
    pub max_items: u32,
    /// Largest item payload, in bytes: 1 KiB..=16 MiB, default 256 KiB; a larger one is refused
    /// with `<not-acceptable/>` and `<payload-too-big/>`.
    pub max_item_size: usize,
}

impl Default for Pep {
    fn default() -> Self {
        Self {
            enabled: true,
            max_items: 1000,
            max_item_size: 256 * 1024,
        }
    }
}

/// `[modules.stream_management]`: XEP-0198.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamManagement {
    /// Whether clients may enable stream management. Default `true`.
    pub enabled: bool,
    /// How long a session whose connection was lost waits to be resumed; `None` (written
    /// `"0s"`) offers no resumption. Default 5m; clients may ask for less.
    pub resume_timeout: Option<Duration>,
    /// Most stanzas kept for a client that does not acknowledge them; past it the stream is
    /// closed with `<policy-violation/>`. 10..=100000, default 1000.
    pub max_unacked: usize,
}

impl Default for StreamManagement {
    fn default() -> Self {
        Self {
            enabled: true,
            resume_timeout: Some(Duration::from_secs(300)),
            max_unacked: 1000,
        }
    }
}

/// `[modules.mam]`: XEP-0313 message archives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mam {
    /// Whether 1:1 messages are archived and can be queried. Default `true`.
    pub enabled: bool,
    /// Archived messages older than this are deleted; `None` (written `"0s"`, the default)
    /// keeps them forever.
    pub retention: Option<Duration>,
}

impl Default for Mam {
    fn default() -> Self {
        Self {
            enabled: true,
            retention: None,
        }
    }
}

/// A module that is only on or off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Toggle {
    /// Whether the module runs. Default `true`.
    pub enabled: bool,
}

impl Default for Toggle {
    fn default() -> Self {
        Self { enabled: true }
    }
}

/// A module that stores documents per account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// Whether the module runs. Default `true`.
    pub enabled: bool,
    /// Largest document stored, in bytes: 1 KiB..=16 MiB, default 64 KiB; a larger one is
    /// refused with `<not-acceptable/>`.
    pub max_size: usize,
}

impl Default for Stored {
    fn default() -> Self {
        Self {
            enabled: true,
            max_size: 64 * 1024,
        }
    }
}

/// `[modules.register]`: XEP-0077 in-band registration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Register {
    /// Whether clients may create accounts over XMPP. Default `false`.
    pub enabled: bool,
}

/// `[modules.ping]`: XEP-0199 server-initiated pings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ping {
    /// Ping a client after this much silence; `None` (written `"0s"`) disables pings.
    /// Default 5m.
    pub idle_interval: Option<Duration>,
    /// Close the connection with `<connection-timeout/>` when no reply comes within this;
    /// greater than zero. Default 30s.
    pub timeout: Duration,
}

impl Default for Ping {
    fn default() -> Self {
        Self {
            idle_interval: Some(Duration::from_secs(5 * 60)),
            timeout: Duration::from_secs(30),
        }
    }
}

/// `[modules.version]`: XEP-0092 software version.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Version {
    /// Whether version replies include the operating system name. Default `false`.
    pub show_os: bool,
}

/// `[modules.offline]`: XEP-0160 offline message storage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offline {
    /// Whether chat and normal messages to an unavailable account are stored and delivered at
    /// its next initial presence. Default `true`.
    pub enabled: bool,
    /// Most messages stored per account; over it the sender gets `<resource-constraint/>`.
    /// 1..=100000, default 1000.
    pub max_messages: usize,
}

impl Default for Offline {
    fn default() -> Self {
        Self {
            enabled: true,
            max_messages: 1000,
        }
    }
}

/// Reads `[modules]` and its sub-tables; an unknown module name is an unknown key.
pub(crate) fn read(mut section: Section<'_>, d: &mut Diagnostics) -> Modules {
    let register = read_register(section.section(d, "register"), d);
    let ping = read_ping(section.section(d, "ping"), d);
    let version = read_version(section.section(d, "version"), d);
    let offline = read_offline(section.section(d, "offline"), d);
    let private = read_stored(section.section(d, "private"), d);
    let vcard = read_stored(section.section(d, "vcard"), d);
    let last = read_toggle(section.section(d, "last"), d);
    let time = read_toggle(section.section(d, "time"), d);
    let carbons = read_toggle(section.section(d, "carbons"), d);
    let blocking = read_toggle(section.section(d, "blocking"), d);
    let csi = read_toggle(section.section(d, "csi"), d);
    let mam = read_mam(section.section(d, "mam"), d);
    let stream_management = read_stream_management(section.section(d, "stream_management"), d);
    let pep = read_pep(section.section(d, "pep"), d);
    let muc = read_muc(section.section(d, "muc"), d);
    section.finish(d);
    Modules {
        register,
        ping,
        version,
        offline,
        private,
        vcard,
        last,
        time,
        carbons,
        blocking,
        csi,
        mam,
        stream_management,
        pep,
        muc,
    }
}

fn read_muc(mut section: Section<'_>, d: &mut Diagnostics) -> Muc {
    let defaults = Muc::default();
    let host = section
        .string(d, "host")
        .map_or_else(|| defaults.host.clone(), str::to_owned);
    if host.matches("@HOST@").count() != 1 || host == "@HOST@" {
        d.report(
            &section.key_path("host"),
            "must contain @HOST@ once, with something around it (such as \"muc.@HOST@\")",
        );
    }
    let muc = Muc {
        enabled: section.boolean(d, "enabled").unwrap_or(defaults.enabled),
        host,
        history: section
            .integer_in::<u32>(d, "history", 0, Some(1000))
            .unwrap_or(defaults.history),
        max_users: section
            .integer_in::<u32>(d, "max_users", 1, Some(100_000))
            .unwrap_or(defaults.max_users),
        max_rooms_per_user: section
            .integer_in::<u32>(d, "max_rooms_per_user", 1, Some(100_000))
            .unwrap_or(defaults.max_rooms_per_user),
        max_message_size: section
            .size_in(d, "max_message_size", 256, 16 * 1024 * 1024)
            .unwrap_or(defaults.max_message_size),
        max_messages_per_second: section
            .integer_in::<u32>(d, "max_messages_per_second", 1, Some(10_000))
            .unwrap_or(defaults.max_messages_per_second),
    };
    section.finish(d);
    muc
}

fn read_pep(mut section: Section<'_>, d: &mut Diagnostics) -> Pep {
    let defaults = Pep::default();
    let pep = Pep {
        enabled: section.boolean(d, "enabled").unwrap_or(defaults.enabled),
        max_items: section
            .integer_in::<u32>(d, "max_items", 1, Some(10_000))
            .unwrap_or(defaults.max_items),
        max_item_size: section
            .size_in(d, "max_item_size", 1024, 16 * 1024 * 1024)
            .unwrap_or(defaults.max_item_size),
    };
    section.finish(d);
    pep
}

fn read_stream_management(mut section: Section<'_>, d: &mut Diagnostics) -> StreamManagement {
    let defaults = StreamManagement::default();
    let sm = StreamManagement {
        enabled: section.boolean(d, "enabled").unwrap_or(defaults.enabled),
        resume_timeout: match section.duration(d, "resume_timeout") {
            Some(t) if t.is_zero() => None,
            Some(t) => Some(t),
            None => defaults.resume_timeout,
        },
        max_unacked: section
            .integer_in(d, "max_unacked", 10, Some(100_000))
            .unwrap_or(defaults.max_unacked),
    };
    section.finish(d);
    sm
}

fn read_mam(mut section: Section<'_>, d: &mut Diagnostics) -> Mam {
    let defaults = Mam::default();
    let mam = Mam {
        enabled: section.boolean(d, "enabled").unwrap_or(defaults.enabled),
        retention: match section.duration(d, "retention") {
            Some(r) if r.is_zero() => None,
            Some(r) => Some(r),
            None => defaults.retention,
        },
    };
    section.finish(d);
    mam
}

fn read_toggle(mut section: Section<'_>, d: &mut Diagnostics) -> Toggle {
    let toggle = Toggle {
        enabled: section
            .boolean(d, "enabled")
            .unwrap_or(Toggle::default().enabled),
    };
    section.finish(d);
    toggle
}

fn read_stored(mut section: Section<'_>, d: &mut Diagnostics) -> Stored {
    let defaults = Stored::default();
    let stored = Stored {
        enabled: section.boolean(d, "enabled").unwrap_or(defaults.enabled),
        max_size: section
            .size_in(d, "max_size", 1024, 16 * 1024 * 1024)
            .unwrap_or(defaults.max_size),
    };
    section.finish(d);
    stored
}

fn read_offline(mut section: Section<'_>, d: &mut Diagnostics) -> Offline {
    let defaults = Offline::default();
    let offline = Offline {
        enabled: section.boolean(d, "enabled").unwrap_or(defaults.enabled),
        max_messages: section
            .integer_in(d, "max_messages", 1, Some(100_000))
            .unwrap_or(defaults.max_messages),
    };
    section.finish(d);
    offline
}

fn read_register(mut section: Section<'_>, d: &mut Diagnostics) -> Register {
    let register = Register {
        enabled: section
            .boolean(d, "enabled")
            .unwrap_or(Register::default().enabled),
    };
    section.finish(d);
    register
}

fn read_ping(mut section: Section<'_>, d: &mut Diagnostics) -> Ping {
    let defaults = Ping::default();
    let idle_interval = match section.duration(d, "idle_interval") {
        Some(interval) if interval.is_zero() => None,
        Some(interval) => Some(interval),
        None => defaults.idle_interval,
    };
    let timeout = match section.duration(d, "timeout") {
        Some(timeout) if timeout.is_zero() => {
            d.report(&section.key_path("timeout"), "must be greater than 0s");
            defaults.timeout
        }
        Some(timeout) => timeout,
        None => defaults.timeout,
    };
    section.finish(d);
    Ping {
        idle_interval,
        timeout,
    }
}

fn read_version(mut section: Section<'_>, d: &mut Diagnostics) -> Version {
    let version = Version {
        show_os: section
            .boolean(d, "show_os")
            .unwrap_or(Version::default().show_os),
    };
    section.finish(d);
    version
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixture::{config, errors};

    #[test]
    fn reads_all_modules() {
        let c = config(
            "[modules.register]\nenabled = true\n\n[modules.ping]\nidle_interval = \"90s\"\n\
             timeout = \"200ms\"\n\n[modules.version]\nshow_os = true\n\n\
             [modules.offline]\nenabled = false\nmax_messages = 2\n",
        );
        assert_eq!(
            c.modules,
            Modules {
                register: Register { enabled: true },
                ping: Ping {
                    idle_interval: Some(Duration::from_secs(90)),
                    timeout: Duration::from_millis(200),
                },
                version: Version { show_os: true },
                offline: Offline {
                    enabled: false,
                    max_messages: 2,
                },
                ..Modules::default()
            }
        );
    }

    #[test]
    fn stream_management_settings() {
        let c = config("");
        assert_eq!(c.modules.stream_management, StreamManagement::default());
        let c = config("[modules.stream_management]\nresume_timeout = \"0s\"\nmax_unacked = 50\n");
        assert_eq!(c.modules.stream_management.resume_timeout, None);
        assert_eq!(c.modules.stream_management.max_unacked, 50);
        let e = errors("[modules.stream_management]\nmax_unacked = 5\nresume = true\n");
        assert!(
            e.iter()
                .any(|e| e.contains("modules.stream_management.max_unacked")),
            "{e:?}"
        );
        assert!(
            e.iter()
                .any(|e| e.contains("modules.stream_management.resume")),
            "{e:?}"
        );
    }

    #[test]
    fn muc_settings() {
        assert_eq!(config("").modules.muc, Muc::default());
        let c = config("[modules.muc]\nhost = \"conference.@HOST@\"\nhistory = 0\n");
        assert_eq!(c.modules.muc.host, "conference.@HOST@");
        assert_eq!(c.modules.muc.history, 0);
        let e = errors("[modules.muc]\nhost = \"muc.example.org\"\nmax_users = 0\n");
        assert!(e.iter().any(|e| e.contains("modules.muc.host")), "{e:?}");
        assert!(
            e.iter().any(|e| e.contains("modules.muc.max_users")),
            "{e:?}"
        );
    }

    #[test]
    fn pep_settings() {
        assert_eq!(config("").modules.pep, Pep::default());
        let c = config("[modules.pep]\nmax_items = 50\nmax_item_size = \"2KiB\"\n");
        assert_eq!(
            (c.modules.pep.max_items, c.modules.pep.max_item_size),
            (50, 2048)
        );
        let e = errors("[modules.pep]\nmax_items = 0\nmax_item_size = \"10B\"\n");
        assert!(
            e.iter().any(|e| e.contains("modules.pep.max_items")),
            "{e:?}"
        );
        assert!(
            e.iter().any(|e| e.contains("modules.pep.max_item_size")),
            "{e:?}"
        );
    }

    #[test]
    fn storage_modules_and_toggles() {
        let c = config("");
        assert!(c.modules.vcard.enabled && c.modules.private.enabled);
        assert_eq!(c.modules.vcard.max_size, 65_536);
        assert!(c.modules.last.enabled && c.modules.time.enabled);
        assert!(c.modules.carbons.enabled && c.modules.blocking.enabled);
        assert!(c.modules.mam.enabled && c.modules.mam.retention.is_none());
        let c = config("[modules.mam]\nretention = \"30d\"\n");
        assert_eq!(
            c.modules.mam.retention,
            Some(Duration::from_secs(30 * 86_400))
        );
        let c = config(
            "[modules.vcard]\nmax_size = \"1MiB\"\n\n[modules.carbons]\nenabled = false\n\n\
             [modules.private]\nenabled = false\n",
        );
        assert_eq!(c.modules.vcard.max_size, 1024 * 1024);
        assert!(!c.modules.carbons.enabled && !c.modules.private.enabled);
        assert_eq!(
            errors("[modules.vcard]\nmax_size = \"100\"\n\n[modules.time]\nenable = true\n"),
            [
                "tern.toml: modules.vcard.max_size: must be between 1KiB and 16MiB, found 100B",
                "tern.toml: modules.time.enable: unknown key (did you mean \"enabled\"?)",
            ]
        );
    }

    #[test]
    fn offline_defaults_to_on_with_a_thousand_messages() {
        let c = config("");
        assert_eq!(
            c.modules.offline,
            Offline {
                enabled: true,
                max_messages: 1000
            }
        );
        let c = config("[modules.offline]\nmax_messages = 100000\n");
        assert_eq!(c.modules.offline.max_messages, 100_000);
        assert!(c.modules.offline.enabled);
    }

    #[test]
    fn rejects_offline_limits_out_of_range() {
        for bad in ["0", "100001", "-1"] {
            let e = errors(&format!("[modules.offline]\nmax_messages = {bad}\n"));
            assert_eq!(e.len(), 1, "{bad}: {e:?}");
            assert!(
                e[0].starts_with("tern.toml: modules.offline.max_messages: "),
                "{bad}: {e:?}"
            );
        }
        assert_eq!(
            errors("[modules.offline]\nenabled = \"yes\"\n"),
            ["tern.toml: modules.offline.enabled: expected a boolean, found a string"]
        );
    }

    #[test]
    fn zero_idle_interval_disables_pings() {
        let c = config("[modules.ping]\nidle_interval = \"0s\"\n");
        assert_eq!(c.modules.ping.idle_interval, None);
        assert_eq!(c.modules.ping.timeout, Duration::from_secs(30));
    }

    #[test]
    fn rejects_zero_timeout_and_bad_durations() {
        assert_eq!(
            errors("[modules.ping]\nidle_interval = \"5 minutes please\"\ntimeout = \"0s\"\n"),
            [
                "tern.toml: modules.ping.idle_interval: invalid duration \"5 minutes please\"",
                "tern.toml: modules.ping.timeout: must be greater than 0s",
            ]
        );
    }

    #[test]
    fn rejects_unknown_module_and_module_keys() {
        assert_eq!(
            errors(
                "[modules.pubsub]\nenabled = true\n\n[modules.register]\nenable = true\n\n\
                 [modules.version]\nshow_os = \"no\"\n"
            ),
            [
                "tern.toml: modules.register.enable: unknown key (did you mean \"enabled\"?)",
                "tern.toml: modules.version.show_os: expected a boolean, found a string",
                "tern.toml: modules.pubsub: unknown key",
            ]
        );
    }
}
