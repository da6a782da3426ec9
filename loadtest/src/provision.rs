//! Creating the accounts a run needs: through Tern's GraphQL admin API (many accounts per
//! request), or by XEP-0077 in-band registration on any server that allows it.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context as _, Result, anyhow, bail, ensure};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::cli::{Global, Provision};
use crate::client::Client;
use crate::report::ProvisionResult;
use crate::swarm::for_each_account;

/// Accounts per GraphQL request.
const BATCH: usize = 50;
/// GraphQL requests in flight at once.
const ADMIN_PARALLEL: usize = 4;

/// Creates accounts `0..count` with the chosen method; existing accounts are fine.
pub(crate) async fn provision(
    global: &Global,
    client: &Arc<Client>,
    count: usize,
) -> Result<Option<ProvisionResult>> {
    let started = Instant::now();
    let (created, existed) = match global.provision {
        Provision::None => return Ok(None),
        Provision::Admin => {
            let admins = Admin::locate_all(global)?;
            register_through(&admins, client, count).await?
        }
        Provision::Ibr => register_in_band(client, count, global.concurrency).await?,
    };
    let seconds = started.elapsed().as_secs_f64();
    Ok(Some(ProvisionResult {
        method: format!("{:?}", global.provision).to_lowercase(),
        accounts: count,
        created,
        existed,
        seconds,
        accounts_per_s: count as f64 / seconds.max(1e-9),
    }))
}

async fn register_in_band(
    client: &Arc<Client>,
    count: usize,
    concurrency: usize,
) -> Result<(usize, usize)> {
    let mut set = for_each_account(client, count, concurrency, |client, index| async move {
        client.register(index).await
    });
    let (mut created, mut existed) = (0, 0);
    while let Some(joined) = set.join_next().await {
        if joined?? {
            created += 1;
        } else {
            existed += 1;
        }
    }
    Ok((created, existed))
}

/// Tern's admin API.
#[derive(Debug, Clone)]
struct Admin {
    address: SocketAddr,
    token: String,
}

/// Which of `admins` registers account `index`: with one per server, the admin API of the
/// datacenter the account connects to (so it is homed there); with one, that one.
fn admin_for(admins: usize, index: usize) -> usize {
    index % admins.max(1)
}

/// Registers accounts `0..count`, each through [`admin_for`] its admin API, in batches of
/// [`BATCH`] with [`ADMIN_PARALLEL`] requests in flight.
async fn register_through(
    admins: &[Admin],
    client: &Arc<Client>,
    count: usize,
) -> Result<(usize, usize)> {
    let gate = Arc::new(Semaphore::new(ADMIN_PARALLEL));
    let mut set = JoinSet::new();
    for (which, admin) in admins.iter().enumerate() {
        let mine: Vec<usize> = (0..count)
            .filter(|&index| admin_for(admins.len(), index) == which)
            .collect();
        for batch in mine.chunks(BATCH) {
            let indices = batch.to_vec();
            let (admin, client, gate) = (admin.clone(), client.clone(), gate.clone());
            set.spawn(async move {
                let _permit = gate.acquire_owned().await;
                admin.register_batch(&client, &indices).await
            });
        }
    }
    let (mut created, mut existed) = (0, 0);
    while let Some(joined) = set.join_next().await {
        let (c, e) = joined??;
        created += c;
        existed += e;
    }
    Ok((created, existed))
}

impl Admin {
    /// From `--admin-url`/`--admin-token`, or the files nodes write into their data
    /// directories: one admin API, or one per server.
    fn locate_all(global: &Global) -> Result<Vec<Self>> {
        let admins = if global.admin_url.is_empty() {
            ensure!(
                !global.tern_data.is_empty(),
                "--provision admin needs --tern-data DIR, or --admin-url and --admin-token"
            );
            global
                .tern_data
                .iter()
                .map(|dir| Self::from_data_dir(dir, global.admin_token.first()))
                .collect::<Result<Vec<_>>>()?
        } else {
            let (urls, tokens) = (&global.admin_url, &global.admin_token);
            ensure!(
                tokens.len() == 1 || tokens.len() == urls.len(),
                "--admin-url names {} APIs and --admin-token {} tokens: give one token, or one per API",
                urls.len(),
                tokens.len()
            );
            urls.iter()
                .enumerate()
                .map(|(i, url)| {
                    let address = url
                        .trim_start_matches("http://")
                        .trim_end_matches('/')
                        .parse()
                        .with_context(|| format!("--admin-url {url}: want http://HOST:PORT"))?;
                    let token = tokens[i.min(tokens.len() - 1)].clone();
                    Ok(Self { address, token })
                })
                .collect::<Result<Vec<_>>>()?
        };
        let servers = global.server.len();
        ensure!(
            admins.len() == 1 || admins.len() == servers,
            "{} admin APIs for {servers} servers: give one, or one per server in the order of --server",
            admins.len()
        );
        Ok(admins)
    }

    /// The admin API a node's data directory names (`admin.addr`, `admin.token`); `token`
    /// overrides the file.
    fn from_data_dir(dir: &Path, token: Option<&String>) -> Result<Self> {
        let text = read_trimmed(&dir.join("admin.addr"))?;
        let address = text.parse().with_context(|| {
            format!(
                "{}: holds {text:?}, not HOST:PORT",
                dir.join("admin.addr").display()
            )
        })?;
        let token = match token {
            Some(token) => token.clone(),
            None => read_trimmed(&dir.join("admin.token"))?,
        };
        Ok(Self { address, token })
    }

    async fn register_batch(&self, client: &Client, indices: &[usize]) -> Result<(usize, usize)> {
        let mut query = String::from("mutation {");
        for &index in indices {
            query.push_str(&format!(
                " a{index}: account {{ registerUser(domain: {}, username: {}, password: {}) {{ jid }} }}",
                serde_json::to_string(&client.domain)?,
                serde_json::to_string(&client.user(index))?,
                serde_json::to_string(client.password())?,
            ));
        }
        query.push('}');
        let body = serde_json::json!({ "query": query }).to_string();
        let reply = self.post("/api/graphql", &body).await?;
        let value: serde_json::Value = serde_json::from_str(&reply)
            .with_context(|| format!("admin API answered with non-JSON: {reply:.200}"))?;
        let mut existed = 0;
        if let Some(errors) = value.get("errors").and_then(|e| e.as_array()) {
            for error in errors {
                let code = error
                    .pointer("/extensions/code")
                    .and_then(|c| c.as_str())
                    .unwrap_or("");
                if code == "USER_EXISTS" {
                    existed += 1;
                } else {
                    bail!("admin API refused a registration: {error}");
                }
            }
        }
        let created = indices
            .iter()
            .filter(|index| {
                value
                    .pointer(&format!("/data/a{index}/registerUser/jid"))
                    .is_some_and(|jid| jid.is_string())
            })
            .count();
        ensure!(
            created + existed == indices.len(),
            "admin API created {created} and found {existed} of {} accounts: {reply:.300}",
            indices.len()
        );
        Ok((created, existed))
    }

    /// One HTTP/1.1 POST with `Connection: close`; returns the body of a 200 answer.
    async fn post(&self, path: &str, body: &str) -> Result<String> {
        let mut stream = TcpStream::connect(self.address)
            .await
            .with_context(|| format!("connect to the admin API at {}", self.address))?;
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.address,
            self.token,
            body.len()
        );
        stream.write_all(request.as_bytes()).await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        let text = String::from_utf8_lossy(&response);
        let (head, rest) = text
            .split_once("\r\n\r\n")
            .ok_or_else(|| anyhow!("the admin API sent no HTTP header"))?;
        let status = head.lines().next().unwrap_or("");
        ensure!(
            status.split_whitespace().nth(1) == Some("200"),
            "admin API: {status}: {rest:.200}"
        );
        let chunked = head.lines().any(|l| {
            l.to_ascii_lowercase()
                .starts_with("transfer-encoding: chunked")
        });
        Ok(if chunked {
            dechunk(rest)?
        } else {
            rest.to_owned()
        })
    }
}

/// The body of a `Transfer-Encoding: chunked` message.
fn dechunk(mut text: &str) -> Result<String> {
    let mut out = String::new();
    loop {
        let (size, rest) = text
            .split_once("\r\n")
            .ok_or_else(|| anyhow!("truncated chunked body"))?;
        let size = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16)
            .context("chunk size")?;
        if size == 0 {
            return Ok(out);
        }
        let chunk = rest.get(..size).ok_or_else(|| anyhow!("truncated chunk"))?;
        out.push_str(chunk);
        text = rest.get(size + 2..).unwrap_or("");
    }
}

fn read_trimmed(path: &Path) -> Result<String> {
    Ok(std::fs::read_to_string(path)
        .with_context(|| format!("read {}", path.display()))?
        .trim()
        .to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_account_is_registered_where_it_connects() {
        // One admin API: all of them there.
        assert!((0..10).all(|i| admin_for(1, i) == 0));
        // One per server: account i connects to server i mod 3, and is registered there.
        let servers =
            crate::cli::Servers::parse("127.0.0.1:1,127.0.0.1:2,127.0.0.1:3").expect("servers");
        for index in 0..10 {
            assert_eq!(
                servers.for_account(index).port() as usize,
                admin_for(3, index) + 1
            );
        }
    }

    #[test]
    fn dechunks_bodies() {
        assert_eq!(
            dechunk("5\r\nhello\r\n6;x=y\r\n world\r\n0\r\n\r\n").expect("body"),
            "hello world"
        );
        assert!(dechunk("5\r\nhel").is_err());
    }
}
