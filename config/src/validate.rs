//! Stage two of loading: a [`RawConfig`] into a typed [`Config`]. Runs every section reader
//! (each applies its own per-key rules), reports unknown top-level keys, then runs the checks
//! that span several keys: listener addresses must not collide (the admin listener included),
//! and `tls.cert_file` / `tls.key_file` come as a pair.

use std::net::{IpAddr, SocketAddr};

use crate::error::ConfigErrors;
use crate::raw::RawConfig;
use crate::reader::{Diagnostics, Section};
use crate::tls::Tls;
use crate::{
    Config, admin, auth, cluster, general, http, limits, listener, mesh, modules, storage, tls,
};

/// Validates `raw`, collecting every problem before returning.
pub(crate) fn validate(raw: &RawConfig) -> Result<Config, ConfigErrors> {
    let mut d = Diagnostics::new(raw.file());
    let mut root = Section::root(raw.table());
    let general = general::read(root.section(&mut d, "general"), &mut d);
    let listen = listener::read(root.section(&mut d, "listen"), &mut d);
    let admin = admin::read(root.section(&mut d, "admin"), &mut d);
    let tls = tls::read(root.section(&mut d, "tls"), &mut d);
    let auth = auth::read(root.section(&mut d, "auth"), &mut d);
    let limits = limits::read(root.section(&mut d, "limits"), &mut d);
    let modules = modules::read(root.section(&mut d, "modules"), &mut d);
    let storage = storage::read(root.section(&mut d, "storage"), &mut d, &general.data_dir);
    let cluster = cluster::read(root.section(&mut d, "cluster"), &mut d);
    let mesh = mesh::read(root.section(&mut d, "mesh"), &mut d);
    let http = http::read(root.section(&mut d, "http"), &mut d);
    root.finish(&mut d);

    let config = Config {
        general,
        listen,
        admin,
        tls,
        auth,
        limits,
        modules,
        storage,
        cluster,
        mesh,
        http,
    };
    check_addresses(&config, &mut d);
    check_tls_files(&config.tls, &mut d);
    d.into_result(config)
}

/// Every listener a node binds (client listeners, then the admin listener when enabled) must
/// be bindable next to the others: no two on the same port where their IPs overlap. Port 0
/// (a free port chosen at bind time) never collides. Each collision is reported on the later
/// key, naming the earlier one.
fn check_addresses(config: &Config, d: &mut Diagnostics) {
    let c2s = config
        .listen
        .c2s
        .iter()
        .enumerate()
        .map(|(i, l)| (format!("listen.c2s[{i}].address"), l.address));
    let http = config
        .listen
        .http
        .iter()
        .enumerate()
        .map(|(i, l)| (format!("listen.http[{i}].address"), l.address));
    let admin = config
        .admin
        .enabled
        .then(|| ("admin.address".to_owned(), config.admin.address));
    let mut earlier: Vec<(String, SocketAddr)> = Vec::new();
    for (key, address) in c2s.chain(http).chain(admin) {
        if d.has_error_at(&key) {
            continue;
        }
        let clash = earlier.iter().find(|(_, other)| collides(address, *other));
        if let Some((other_key, other)) = clash {
            let rule = if address == *other {
                format!("\"{address}\" is already used by {other_key}")
            } else {
                format!("\"{address}\" overlaps \"{other}\" used by {other_key}")
            };
            d.report(&key, rule);
        }
        earlier.push((key, address));
    }
}

/// Whether binding both addresses would fail: same non-zero port and the same IP, or one of
/// them a wildcard covering the other. `0.0.0.0` covers every IPv4 address; `[::]` covers
/// every address, because IPv6 wildcard sockets accept IPv4 too unless `IPV6_V6ONLY` is set.
fn collides(a: SocketAddr, b: SocketAddr) -> bool {
    if a.port() != b.port() || a.port() == 0 {
        return false;
    }
    a.ip() == b.ip() || covers(a.ip(), b.ip()) || covers(b.ip(), a.ip())
}

fn covers(wildcard: IpAddr, other: IpAddr) -> bool {
    match wildcard {
        IpAddr::V6(ip) => ip.is_unspecified(),
        IpAddr::V4(ip) => ip.is_unspecified() && other.is_ipv4(),
    }
}

/// `tls.cert_file` and `tls.key_file` are given together or not at all; the error names the
/// missing one. Skipped when either key already has an error.
fn check_tls_files(tls: &Tls, d: &mut Diagnostics) {
    if d.has_error_at("tls.cert_file") || d.has_error_at("tls.key_file") {
        return;
    }
    match (&tls.cert_file, &tls.key_file) {
        (Some(_), None) => d.report("tls.key_file", "required when tls.cert_file is set"),
        (None, Some(_)) => d.report("tls.cert_file", "required when tls.key_file is set"),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixture::{config, errors};

    fn addr(text: &str) -> SocketAddr {
        text.parse().expect("socket address")
    }

    #[test]
    fn collision_rules() {
        assert!(collides(addr("0.0.0.0:5222"), addr("0.0.0.0:5222")));
        assert!(collides(addr("0.0.0.0:5222"), addr("127.0.0.1:5222")));
        assert!(collides(addr("127.0.0.1:5222"), addr("0.0.0.0:5222")));
        assert!(collides(addr("[::]:5222"), addr("127.0.0.1:5222")));
        assert!(collides(addr("[::]:5222"), addr("0.0.0.0:5222")));
        assert!(collides(addr("[::]:5222"), addr("[::1]:5222")));
        assert!(!collides(addr("0.0.0.0:5222"), addr("[::1]:5222")));
        assert!(!collides(addr("127.0.0.1:5222"), addr("127.0.0.2:5222")));
        assert!(!collides(addr("0.0.0.0:5222"), addr("0.0.0.0:5223")));
        assert!(!collides(addr("127.0.0.1:0"), addr("127.0.0.1:0")));
    }

    #[test]
    fn rejects_duplicate_listener_address() {
        assert_eq!(
            errors(
                "[[listen.c2s]]\naddress = \"0.0.0.0:5222\"\n\n\
                 [[listen.c2s]]\naddress = \"0.0.0.0:5222\"\ntls = \"direct\"\n"
            ),
            [
                "tern.toml: listen.c2s[1].address: \"0.0.0.0:5222\" is already used by \
              listen.c2s[0].address"
            ]
        );
    }

    #[test]
    fn rejects_overlapping_listener_address() {
        assert_eq!(
            errors(
                "[[listen.c2s]]\naddress = \"0.0.0.0:5222\"\n\n\
                 [[listen.c2s]]\naddress = \"127.0.0.1:5222\"\n"
            ),
            [
                "tern.toml: listen.c2s[1].address: \"127.0.0.1:5222\" overlaps \"0.0.0.0:5222\" \
              used by listen.c2s[0].address"
            ]
        );
    }

    #[test]
    fn admin_address_takes_part_in_uniqueness() {
        assert_eq!(
            errors("[admin]\naddress = \"127.0.0.1:5222\"\n"),
            [
                "tern.toml: admin.address: \"127.0.0.1:5222\" overlaps \"0.0.0.0:5222\" used by \
              listen.c2s[0].address"
            ]
        );
        assert_eq!(
            errors("[[listen.c2s]]\naddress = \"127.0.0.1:5551\"\n"),
            [
                "tern.toml: admin.address: \"127.0.0.1:5551\" is already used by \
              listen.c2s[0].address"
            ]
        );
    }

    #[test]
    fn disabled_admin_does_not_take_part() {
        let c = config("[admin]\nenabled = false\naddress = \"127.0.0.1:5222\"\n");
        assert!(!c.admin.enabled);
    }

    #[test]
    fn port_zero_listeners_may_repeat() {
        let c = config(
            "[[listen.c2s]]\naddress = \"127.0.0.1:0\"\n\n\
             [[listen.c2s]]\naddress = \"127.0.0.1:0\"\ntls = \"direct\"\n\n\
             [admin]\naddress = \"127.0.0.1:0\"\n",
        );
        assert_eq!(c.listen.c2s.len(), 2);
    }

    #[test]
    fn invalid_addresses_are_not_compared() {
        assert_eq!(
            errors(
                "[[listen.c2s]]\naddress = \"0.0.0.0:5222\"\n\n\
                 [[listen.c2s]]\naddress = \"nowhere\"\n\n[[listen.c2s]]\ntls = \"direct\"\n"
            ),
            [
                "tern.toml: listen.c2s[1].address: invalid socket address \"nowhere\": expected \
                 IP:port such as \"0.0.0.0:5222\" or \"[::]:5222\"",
                "tern.toml: listen.c2s[2].address: missing required key",
            ]
        );
    }
}
