//! The admin API: GraphQL over HTTP on the loopback admin listener, plus Prometheus text at
//! `/metrics` and a liveness probe at `/health`. `tern ctl` ([`crate::ctl`]) is its client;
//! the operator's reference is `docs/admin.md`.
//!
//! # Layout
//! - `token`: the bearer token ([`load_or_create_token`]): configured, or `<data_dir>/admin.token`
//!   made at first start.
//! - `http`: the axum router, bearer-token check and [`serve`]; writes `<data_dir>/admin.addr`.
//! - `schema`: the GraphQL schema root, one namespaced object per category in the
//!   `mongooseimctl` style (`account`, `session`, `stanza`, `roster`, `server`, `domain`,
//!   `mesh`, `muc`, and `offline`, `vcard`, `last`, `private` in `data`).
//! - `account`, `session`, `stanza` (sending, and the archive's last messages), `roster`,
//!   `server`, `domain`, `mesh`, `muc` (multi-user chat rooms), `data`: one category each (or a
//!   few), its query and mutation objects and the operations behind them.
//! - `args`: parsing and checking the JIDs and domains resolvers receive, and finding an
//!   account that lives in this datacenter.
//! - `error`: [`AdminError`], every failure a resolver reports, with its `extensions.code`.

mod account;
mod args;
mod data;
mod domain;
mod error;
mod http;
mod mesh;
mod muc;
mod roster;
mod schema;
mod server;
mod session;
mod stanza;
#[cfg(test)]
pub(crate) mod tests;
mod token;

pub use self::error::AdminError;
pub use self::http::{ADDR_FILE, serve};
pub use self::schema::sdl;
pub use self::token::{TOKEN_FILE, load_or_create_token};
