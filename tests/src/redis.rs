//! Throwaway `redis-server`s: a standalone one ([`Redis`]), a 3-master cluster
//! ([`RedisCluster`]) and a master with a replica under a Sentinel ([`RedisSentinel`]), with a tiny RESP client ([`resp_command`]) for probing and for
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
use crate::tls::TestCa;

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

/// How a standalone [`Redis`] runs, beyond the defaults (no persistence, plain TCP,
/// the `default` user without a password).
#[derive(Debug, Clone, Default)]
pub struct RedisOptions {
    /// AOF persistence (`--appendonly yes --appendfsync always`): data survives a kill.
    pub aof: bool,
    /// TLS only (`--port 0 --tls-port P`), with a certificate from a [`TestCa`] made in
    /// the server's directory (`--tls-auth-clients no`).
    pub tls: bool,
    /// ACL users, each the rest of a `--user` line after the name, e.g.
    /// `("otp", "on >PASS ~otpgate:* +@all")`. With any, `default` is switched off and
    /// the harness talks as [`Redis::ADMIN`].
    pub users: Vec<(String, String)>,
    /// Further `--name value` arguments, e.g. `["--maxmemory-policy", "allkeys-lru"]`.
    pub extra: Vec<String>,
}

/// A running standalone redis-server (no persistence unless asked), killed and reaped
/// on drop.
#[derive(Debug)]
pub struct Redis {
    /// The server; `None` while stopped. Declared first: killed before `dir` goes.
    process: Option<ServerProcess>,
    /// The loopback port, kept across restarts.
    port: u16,
    /// redis-server.
    binary: PathBuf,
    /// How it runs.
    options: RedisOptions,
    /// The CA and server certificate, with [`RedisOptions::tls`].
    ca: Option<TestCa>,
    /// Its working directory and `redis.log`.
    dir: TempDir,
}

impl Redis {
    /// The harness's own ACL user (all commands and keys) when [`RedisOptions::users`]
    /// switches `default` off: `(name, password)`.
    pub const ADMIN: (&'static str, &'static str) = ("harness", "harness-password");

    /// Starts `redis-server --bind 127.0.0.1 --port P --save '' --appendonly no` and
    /// waits for PONG.
    pub fn start() -> Result<Self> {
        Self::start_with(RedisOptions::default())
    }

    /// Starts a redis-server run as `options` say, and waits until it answers.
    pub fn start_with(options: RedisOptions) -> Result<Self> {
        let binary = require_binary("redis-server", PACKAGES)?;
        let dir = temp_dir("otpgate-redis-")?;
        let ca = if options.tls {
            Some(TestCa::create(dir.path())?)
        } else {
            None
        };
        let mut redis = Self {
            process: None,
            port: 0,
            binary,
            options,
            ca,
            dir,
        };
        let (port, process) = start_on_free_port(|port| Ok((port, redis.spawn(port)?)))?;
        redis.port = port;
        redis.process = Some(process);
        Ok(redis)
    }

    fn spawn(&self, port: u16) -> Result<ServerProcess> {
        let mut extra: Vec<String> = Vec::new();
        if self.options.aof {
            extra.extend(["--appendonly", "yes", "--appendfsync", "always"].map(String::from));
        }
        if let Some(ca) = &self.ca {
            extra.extend([
                "--port".into(),
                "0".into(),
                "--tls-port".into(),
                port.to_string(),
            ]);
            for (flag, path) in [
                ("--tls-cert-file", &ca.server_cert),
                ("--tls-key-file", &ca.server_key),
                ("--tls-ca-cert-file", &ca.ca_cert),
            ] {
                extra.push(flag.into());
                extra.push(path.display().to_string());
            }
            extra.extend(["--tls-auth-clients", "no"].map(String::from));
        }
        if !self.options.users.is_empty() {
            // Each rule its own argument: redis-server joins the words after `--user`.
            let (name, password) = Self::ADMIN;
            let admin = format!("{name} on >{password} ~* &* +@all");
            let users = std::iter::once(admin.as_str())
                .chain(std::iter::once("default off"))
                .map(String::from)
                .chain(self.options.users.iter().map(|(u, r)| format!("{u} {r}")));
            for user in users.collect::<Vec<_>>() {
                extra.push("--user".into());
                extra.extend(user.split_whitespace().map(String::from));
            }
        }
        extra.extend(self.options.extra.iter().cloned());
        if self.ca.is_none() && self.options.users.is_empty() {
            let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
            return spawn(&self.binary, self.dir.path(), port, &extra);
        }
        let mut command = Command::new(&self.binary);
        command
            .args(["--bind", "127.0.0.1", "--port", &port.to_string(), "--dir"])
            .arg(self.dir.path())
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .args(&extra);
        let mut process =
            ServerProcess::spawn("redis-server", command, &self.dir.path().join("redis.log"))?;
        process.wait_ready(|| {
            self.cli_on(port, &["PING"])
                .is_ok_and(|out| out.trim() == "PONG")
        })?;
        Ok(process)
    }

    /// `redis-cli` against this server (TLS and the harness's user as configured);
    /// its standard output.
    pub fn cli(&self, args: &[&str]) -> Result<String> {
        self.cli_on(self.port, args)
    }

    fn cli_on(&self, port: u16, args: &[&str]) -> Result<String> {
        let cli = require_binary("redis-cli", PACKAGES)?;
        let mut command = Command::new(cli);
        command.args(["-h", "127.0.0.1", "-p", &port.to_string()]);
        if let Some(ca) = &self.ca {
            command.arg("--tls").arg("--cacert").arg(&ca.ca_cert);
        }
        if !self.options.users.is_empty() {
            let (name, password) = Self::ADMIN;
            command.args(["--user", name, "--pass", password, "--no-auth-warning"]);
        }
        command.args(args);
        let out = binary::run(&mut command, None)?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The CA certificate clients must trust, with [`RedisOptions::tls`].
    pub fn ca_cert(&self) -> Option<&Path> {
        self.ca.as_ref().map(|ca| ca.ca_cert.as_path())
    }

    /// `rediss://127.0.0.1:PORT/0` with TLS, else [`Redis::url`].
    pub fn tls_url(&self) -> String {
        if self.ca.is_some() {
            format!("rediss://127.0.0.1:{}/0", self.port)
        } else {
            self.url()
        }
    }

    /// redis-server's process id, if running.
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(ServerProcess::id)
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
        self.process = Some(self.spawn(self.port)?);
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

/// How long a Sentinel failover may take.
const FAILOVER_TIMEOUT: Duration = Duration::from_secs(30);

/// A master, one replica and one Sentinel (quorum 1) watching them, killed and reaped on
/// drop: enough to test that the store follows the master the Sentinel names, across a
/// failover.
#[derive(Debug)]
pub struct RedisSentinel {
    /// The master, the replica and the Sentinel, held only to be killed on drop;
    /// declared first: killed before `dir` goes.
    _processes: Vec<ServerProcess>,
    /// The Sentinel's port.
    sentinel: u16,
    /// The first master's port (a replica after [`RedisSentinel::failover`]).
    first: u16,
    /// The first replica's port (the master after a failover).
    second: u16,
    /// `sentinel.conf` (Sentinel rewrites it) and each server's `redis.log`.
    dir: TempDir,
}

impl RedisSentinel {
    /// The name the Sentinel monitors the master under.
    pub const MASTER_NAME: &'static str = "otpgate-test";

    /// Starts the master, a replica of it, and a Sentinel that monitors the master, and
    /// waits until the replica is in sync and the Sentinel knows it.
    pub fn start() -> Result<Self> {
        let binary = require_binary("redis-server", PACKAGES)?;
        let dir = temp_dir("otpgate-redis-sentinel-")?;
        let mut processes = Vec::new();
        let first_dir = dir.path().join("first");
        let second_dir = dir.path().join("second");
        for sub in [&first_dir, &second_dir] {
            std::fs::create_dir(sub)
                .map_err(|err| HarnessError::io(format!("creating {}", sub.display()), err))?;
        }
        let (first, master) =
            start_on_free_port(|port| Ok((port, spawn(&binary, &first_dir, port, &[])?)))?;
        processes.push(master);
        let first_text = first.to_string();
        let (second, replica) = start_on_free_port(|port| {
            let extra = ["--replicaof", "127.0.0.1", &first_text];
            Ok((port, spawn(&binary, &second_dir, port, &extra)?))
        })?;
        processes.push(replica);
        let synced =
            || info(second, "replication").is_some_and(|i| i.contains("master_link_status:up"));
        if !wait_until(FAILOVER_TIMEOUT, synced) {
            return Err(HarnessError::Protocol(format!(
                "the replica on port {second} did not sync with the master on port {first}"
            )));
        }
        let (sentinel, process) = start_on_free_port(|port| {
            let conf = dir.path().join("sentinel.conf");
            let text = format!(
                "bind 127.0.0.1\nport {port}\ndir {}\n\
                 sentinel monitor {} 127.0.0.1 {first} 1\n\
                 sentinel down-after-milliseconds {} 2000\n\
                 sentinel failover-timeout {} 10000\n",
                dir.path().display(),
                Self::MASTER_NAME,
                Self::MASTER_NAME,
                Self::MASTER_NAME,
            );
            std::fs::write(&conf, text)
                .map_err(|err| HarnessError::io(format!("writing {}", conf.display()), err))?;
            let mut command = Command::new(&binary);
            command.arg(&conf).arg("--sentinel");
            let mut process =
                ServerProcess::spawn("redis-sentinel", command, &dir.path().join("sentinel.log"))?;
            process.wait_ready(|| ping(port))?;
            Ok((port, process))
        })?;
        processes.push(process);
        let this = Self {
            _processes: processes,
            sentinel,
            first,
            second,
            dir,
        };
        let knows_replica = || {
            matches!(
                resp_command(sentinel, &["SENTINEL", "REPLICAS", Self::MASTER_NAME]),
                Ok(Resp::Array(Some(replicas))) if !replicas.is_empty()
            )
        };
        if !wait_until(FAILOVER_TIMEOUT, knows_replica) {
            return Err(HarnessError::Protocol(
                "the sentinel did not discover the replica".into(),
            ));
        }
        Ok(this)
    }

    /// `redis://127.0.0.1:PORT` of the Sentinel.
    pub fn sentinel_urls(&self) -> Vec<String> {
        vec![format!("redis://127.0.0.1:{}", self.sentinel)]
    }

    /// The port of the master the Sentinel names now.
    pub fn master_port(&self) -> Result<u16> {
        match resp_command(
            self.sentinel,
            &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", Self::MASTER_NAME],
        )? {
            Resp::Array(Some(addr)) => addr
                .get(1)
                .and_then(Resp::as_text)
                .and_then(|port| port.parse().ok())
                .ok_or_else(|| HarnessError::Protocol(format!("sentinel answered {addr:?}"))),
            other => Err(HarnessError::Protocol(format!(
                "sentinel answered {other:?}"
            ))),
        }
    }

    /// Waits until the replica has every write the master has acknowledged, so a
    /// failover loses nothing (Redis replicates asynchronously).
    pub fn wait_replicated(&self) -> Result<()> {
        let offset = |port: u16, key: &str| {
            info(port, "replication").and_then(|i| {
                i.lines()
                    .find_map(|line| line.strip_prefix(key))
                    .and_then(|v| v.trim().parse::<u64>().ok())
            })
        };
        let caught_up = || match (
            offset(self.first, "master_repl_offset:"),
            offset(self.second, "slave_repl_offset:"),
        ) {
            (Some(master), Some(replica)) => replica >= master,
            _ => false,
        };
        if wait_until(FAILOVER_TIMEOUT, caught_up) {
            Ok(())
        } else {
            Err(HarnessError::Protocol(
                "the replica did not catch up".into(),
            ))
        }
    }

    /// Asks the Sentinel to fail over and waits until it names the replica as master
    /// and the replica says it is one. The Sentinel refuses (`NOGOODSLAVE`) until it has
    /// read the replica's own INFO, so the request is repeated until it is taken.
    pub fn failover(&self) -> Result<()> {
        let mut last = None;
        let taken =
            || match resp_command(self.sentinel, &["SENTINEL", "FAILOVER", Self::MASTER_NAME]) {
                Ok(Resp::Simple(ok)) if ok == "OK" => true,
                other => {
                    last = Some(other);
                    false
                }
            };
        if !wait_until(FAILOVER_TIMEOUT, taken) {
            return Err(HarnessError::Protocol(format!(
                "SENTINEL FAILOVER was not taken within {FAILOVER_TIMEOUT:?}: {last:?}"
            )));
        }
        let done = || {
            self.master_port().ok() == Some(self.second)
                && info(self.second, "replication").is_some_and(|i| i.contains("role:master"))
        };
        if wait_until(FAILOVER_TIMEOUT, done) {
            Ok(())
        } else {
            Err(HarnessError::Protocol(format!(
                "no failover to port {} within {FAILOVER_TIMEOUT:?}",
                self.second
            )))
        }
    }

    /// The ports of the first master and of its replica.
    pub fn server_ports(&self) -> [u16; 2] {
        [self.first, self.second]
    }

    /// The temporary directory (the logs, `sentinel.conf`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// `INFO section` of the server on `port`, if it answers.
fn info(port: u16, section: &str) -> Option<String> {
    resp_command(port, &["INFO", section])
        .ok()
        .and_then(|reply| reply.as_text())
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
