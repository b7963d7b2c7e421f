//! Throwaway `redis-server`s: a standalone one ([`Redis`]) and a 3-master cluster
//! ([`RedisCluster`]), with a tiny RESP client ([`resp_command`]) for probing and for
//! tests that inspect keys.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use tempfile::TempDir;

use crate::binary::{self, require_binary};
use crate::error::{HarnessError, Result};
use crate::ports::{free_tcp_port, start_on_free_port};
use crate::process::{ServerProcess, wait_until};

/// The Debian packages that provide redis-server and redis-cli.
const PACKAGES: &[&str] = &["redis-server", "redis-tools"];

/// How long a cluster may take to reach `cluster_state:ok`.
const CLUSTER_TIMEOUT: Duration = Duration::from_secs(20);

/// A reply in the Redis protocol (RESP2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resp {
    /// `+OK`
    Simple(String),
    /// `-ERR …`
    Error(String),
    /// `:42`
    Integer(i64),
    /// `$…`; `None` for the null bulk string.
    Bulk(Option<Vec<u8>>),
    /// `*…`; `None` for the null array.
    Array(Option<Vec<Resp>>),
}

impl Resp {
    /// The reply as text, for simple and bulk strings.
    pub fn as_text(&self) -> Option<String> {
        match self {
            Self::Simple(text) => Some(text.clone()),
            Self::Bulk(Some(bytes)) => Some(String::from_utf8_lossy(bytes).into_owned()),
            _ => None,
        }
    }
}

/// Sends one command to the Redis server at `127.0.0.1:port` over a fresh connection
/// and reads its reply.
pub fn resp_command(port: u16, args: &[&str]) -> Result<Resp> {
    let io = |err| HarnessError::io(format!("redis command {args:?} on port {port}"), err);
    let mut stream = TcpStream::connect(("127.0.0.1", port)).map_err(io)?;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(io)?;
    let mut request = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        request.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        request.extend_from_slice(arg.as_bytes());
        request.extend_from_slice(b"\r\n");
    }
    stream.write_all(&request).map_err(io)?;
    read_reply(&mut BufReader::new(stream))
}

fn read_reply(reader: &mut impl BufRead) -> Result<Resp> {
    let mut line = String::new();
    reader
        .read_line(&mut line)
        .map_err(|err| HarnessError::io("reading a redis reply", err))?;
    let line = line.trim_end_matches("\r\n");
    let bad = || HarnessError::Protocol(format!("bad redis reply line {line:?}"));
    let (kind, rest) = line.split_at_checked(1).ok_or_else(bad)?;
    let number = || rest.parse::<i64>().map_err(|_| bad());
    Ok(match kind {
        "+" => Resp::Simple(rest.to_owned()),
        "-" => Resp::Error(rest.to_owned()),
        ":" => Resp::Integer(number()?),
        "$" => match usize::try_from(number()?) {
            Err(_) => Resp::Bulk(None),
            Ok(len) => {
                let mut bytes = vec![0; len + 2];
                reader
                    .read_exact(&mut bytes)
                    .map_err(|err| HarnessError::io("reading a redis bulk string", err))?;
                bytes.truncate(len);
                Resp::Bulk(Some(bytes))
            }
        },
        "*" => match usize::try_from(number()?) {
            Err(_) => Resp::Array(None),
            Ok(len) => Resp::Array(Some(
                (0..len)
                    .map(|_| read_reply(reader))
                    .collect::<Result<_>>()?,
            )),
        },
        _ => return Err(bad()),
    })
}

/// Whether a Redis server on `port` answers PING with PONG.
pub fn ping(port: u16) -> bool {
    matches!(resp_command(port, &["PING"]), Ok(Resp::Simple(reply)) if reply == "PONG")
}

/// A running standalone redis-server (no persistence), killed and reaped on drop.
#[derive(Debug)]
pub struct Redis {
    /// The server; `None` while stopped. Declared first: killed before `dir` goes.
    process: Option<ServerProcess>,
    /// The loopback port, kept across restarts.
    port: u16,
    /// redis-server.
    binary: PathBuf,
    /// Its working directory and `redis.log`.
    dir: TempDir,
}

impl Redis {
    /// Starts `redis-server --bind 127.0.0.1 --port P --save '' --appendonly no` and
    /// waits for PONG.
    pub fn start() -> Result<Self> {
        let binary = require_binary("redis-server", PACKAGES)?;
        let dir = temp_dir("otpgate-redis-")?;
        let (port, process) =
            start_on_free_port(|port| Ok((port, spawn(&binary, dir.path(), port, &[])?)))?;
        Ok(Self {
            process: Some(process),
            port,
            binary,
            dir,
        })
    }

    /// `redis://127.0.0.1:PORT/0`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// The port (the same after [`Redis::start_again`]).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The working directory (holds `redis.log`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Kills the server (an outage). Its data is lost: it has no persistence.
    pub fn stop(&mut self) {
        self.process = None;
    }

    /// Writes the data to `dump.rdb` in the working directory (`SAVE`), then kills the
    /// server: an outage of a Redis that persists, whose data is back after
    /// [`Redis::start_again`].
    pub fn stop_keeping_data(&mut self) -> Result<()> {
        match self.command(&["SAVE"])? {
            Resp::Simple(ok) if ok == "OK" => {}
            other => {
                return Err(HarnessError::Usage(format!(
                    "redis SAVE answered {other:?}"
                )));
            }
        }
        self.stop();
        Ok(())
    }

    /// Starts the server again on the same port, after [`Redis::stop`] (empty) or
    /// [`Redis::stop_keeping_data`] (loading `dump.rdb`).
    pub fn start_again(&mut self) -> Result<()> {
        if self.process.is_some() {
            return Err(HarnessError::Usage(
                "redis-server is already running".into(),
            ));
        }
        self.process = Some(spawn(&self.binary, self.dir.path(), self.port, &[])?);
        Ok(())
    }

    /// Sends one command and returns the reply, e.g. `redis.command(&["KEYS", "*"])`.
    pub fn command(&self, args: &[&str]) -> Result<Resp> {
        resp_command(self.port, args)
    }

    /// Whether the server answers PING.
    pub fn ping(&self) -> bool {
        ping(self.port)
    }
}

/// A running Redis cluster of masters without replicas, killed and reaped on drop.
#[derive(Debug)]
pub struct RedisCluster {
    /// The nodes; declared first so they are killed before `dir` goes.
    nodes: Vec<ServerProcess>,
    /// The client ports of the nodes.
    ports: Vec<u16>,
    /// One subdirectory per node, with `nodes.conf` and `redis.log`.
    dir: TempDir,
}

impl RedisCluster {
    /// Starts `masters` (at least 3) cluster-enabled servers, joins them with
    /// `redis-cli --cluster create … --cluster-replicas 0` and waits until every node
    /// reports `cluster_state:ok`.
    pub fn start(masters: usize) -> Result<Self> {
        if masters < 3 {
            return Err(HarnessError::Usage(
                "a Redis cluster needs at least 3 masters".into(),
            ));
        }
        let server = require_binary("redis-server", PACKAGES)?;
        let cli = require_binary("redis-cli", PACKAGES)?;
        let dir = temp_dir("otpgate-redis-cluster-")?;
        let mut nodes = Vec::with_capacity(masters);
        let mut ports = Vec::with_capacity(masters);
        for index in 0..masters {
            let node_dir = dir.path().join(format!("node{index}"));
            std::fs::create_dir(&node_dir)
                .map_err(|err| HarnessError::io(format!("creating {}", node_dir.display()), err))?;
            let (port, process) = start_on_free_port(|port| {
                // The cluster bus port is picked too, not left at port + 10000.
                let bus = free_tcp_port()?.to_string();
                let config = node_dir.join("nodes.conf");
                let config = config.to_string_lossy();
                let extra = [
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    &config,
                    "--cluster-node-timeout",
                    "2000",
                    "--cluster-port",
                    &bus,
                ];
                Ok((port, spawn(&server, &node_dir, port, &extra)?))
            })?;
            nodes.push(process);
            ports.push(port);
        }
        let mut create = Command::new(&cli);
        create.arg("--cluster").arg("create");
        create.args(ports.iter().map(|port| format!("127.0.0.1:{port}")));
        create.args(["--cluster-replicas", "0", "--cluster-yes"]);
        binary::run(&mut create, None)?;

        let all_ok = || {
            ports.iter().all(|&port| {
                resp_command(port, &["CLUSTER", "INFO"])
                    .ok()
                    .and_then(|reply| reply.as_text())
                    .is_some_and(|info| info.contains("cluster_state:ok"))
            })
        };
        if !wait_until(CLUSTER_TIMEOUT, all_ok) {
            return Err(HarnessError::Protocol(format!(
                "redis cluster {ports:?} did not reach cluster_state:ok within {CLUSTER_TIMEOUT:?}"
            )));
        }
        Ok(Self { nodes, ports, dir })
    }

    /// `redis://127.0.0.1:PORT` for every node.
    pub fn urls(&self) -> Vec<String> {
        self.ports
            .iter()
            .map(|port| format!("redis://127.0.0.1:{port}"))
            .collect()
    }

    /// The nodes' client ports.
    pub fn ports(&self) -> &[u16] {
        &self.ports
    }

    /// The number of nodes running.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Never true: a cluster has at least 3 nodes.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The temporary directory holding the nodes' files.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

fn temp_dir(prefix: &str) -> Result<TempDir> {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .map_err(|err| HarnessError::io("creating a temporary directory", err))
}

/// Starts redis-server on `port` in `dir` and waits for PONG.
fn spawn(binary: &Path, dir: &Path, port: u16, extra: &[&str]) -> Result<ServerProcess> {
    let mut command = Command::new(binary);
    command
        .args(["--bind", "127.0.0.1", "--port", &port.to_string(), "--dir"])
        .arg(dir)
        .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
        .args(extra);
    let mut process = ServerProcess::spawn("redis-server", command, &dir.join("redis.log"))?;
    process.wait_ready(|| ping(port))?;
    Ok(process)
}
