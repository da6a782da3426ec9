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
            let admin = Admin::locate(global)?;
            admin.register_all(client, count).await?
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

impl Admin {
    /// From `--admin-url`/`--admin-token`, or the files a node writes into its data directory.
    fn locate(global: &Global) -> Result<Self> {
        let from_dir = |file: &str| -> Result<String> {
            let dir = global.tern_data.as_deref().ok_or_else(|| {
                anyhow!("--provision admin needs --tern-data DIR, or --admin-url and --admin-token")
            })?;
            read_trimmed(&dir.join(file))
        };
        let address = match &global.admin_url {
            Some(url) => url
                .trim_start_matches("http://")
                .trim_end_matches('/')
                .parse()
                .with_context(|| format!("--admin-url {url}: want http://HOST:PORT"))?,
            None => {
                let text = from_dir("admin.addr")?;
                text.parse()
                    .with_context(|| format!("admin.addr holds {text:?}, not HOST:PORT"))?
            }
        };
        let token = match &global.admin_token {
            Some(token) => token.clone(),
            None => from_dir("admin.token")?,
        };
        Ok(Self { address, token })
    }

    async fn register_all(&self, client: &Arc<Client>, count: usize) -> Result<(usize, usize)> {
        let gate = Arc::new(Semaphore::new(ADMIN_PARALLEL));
        let mut set = JoinSet::new();
        for start in (0..count).step_by(BATCH) {
            let indices: Vec<usize> = (start..(start + BATCH).min(count)).collect();
            let (admin, client, gate) = (self.clone(), client.clone(), gate.clone());
            set.spawn(async move {
                let _permit = gate.acquire_owned().await;
                admin.register_batch(&client, &indices).await
            });
        }
        let (mut created, mut existed) = (0, 0);
        while let Some(joined) = set.join_next().await {
            let (c, e) = joined??;
            created += c;
            existed += e;
        }
        Ok((created, existed))
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
    fn dechunks_bodies() {
        assert_eq!(
            dechunk("5\r\nhello\r\n6;x=y\r\n world\r\n0\r\n\r\n").expect("body"),
            "hello world"
        );
        assert!(dechunk("5\r\nhel").is_err());
    }
}
