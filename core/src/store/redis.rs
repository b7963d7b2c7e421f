//! The Redis store: standalone, Cluster or Sentinel.
//!
//! Every decision is one Lua script (EVALSHA, loaded again by itself after a restart
//! flushed the script cache), and every script touches the keys of one user only, all
//! under the hash tag `{user}`, so it runs on one Cluster slot. The two global keys
//! (helpdesk queue, audit log) are touched by one script that touches user keys, the
//! login's step (`ACCEPT_STEP`, which appends the accept's audit record in the same
//! round trip), and only when the deployment is not a Cluster.
//!
//! Every command is bounded by the configured timeout; every failure is a
//! [`StoreError`], never a panic and never a success.
//!
//! Key TTLs are set relative to the caller's `now` (`EXPIRE expires_at - now`), not as
//! absolute `EXPIREAT` times: the Redis server's clock may differ from ours, and the
//! decision is always taken on the `expires_at` stored in the record, against `now`.
//! The TTL only makes sure nothing outlives its use.

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use ::redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use ::redis::{
    AsyncConnectionConfig, Cmd, ConnectionAddr, ConnectionInfo, ErrorKind, FromRedisValue,
    IntoConnectionInfo, RedisError, RedisResult, Script, ScriptInvocation, ServerErrorKind,
    TlsCertificates, TlsMode, cmd,
};
use otpgate_config::{RedisAuth, RedisConfig, RedisTarget, SecretBytes};

use super::keys;
use super::records::{FAILURES_TTL, audit_kept_from, from_json, is_live, to_json};
use super::{
    Account, ChallengeAnswer, Claim, CodeOutcome, CodeSlot, Counter, FailureOutcome,
    HelpdeskRequest, PoolEntry, StepCheck, StepDecision, StoreBackend, StoreError, StoredCode,
    StoredSession, Token, TrustedDevice, UserRecord, account_digest as account_digest_of,
};
use crate::clock::Timestamp;
use crate::user::UserName;

/// The error code a script answers with when a record it must read is not JSON.
const CORRUPT_CODE: &str = "OTPGATE_CORRUPT";

/// A Redis store. Cloning is cheap and shares the connection.
#[derive(Clone)]
pub struct RedisStore {
    conn: Arc<LazyConn>,
    prefix: Arc<str>,
    timeout: Duration,
}

/// The connection, made on first use (or at open) and kept: once made, each kind
/// reconnects by itself. Until it is made, every use tries again, so a store that was
/// down at start is used as soon as it is back.
struct LazyConn {
    config: RedisConfig,
    cell: tokio::sync::OnceCell<Conn>,
}

impl LazyConn {
    /// The connection, connecting (and checking the server) if there is none yet.
    async fn get(&self) -> Result<&Conn, StoreError> {
        if let Some(conn) = self.cell.get() {
            return Ok(conn);
        }
        // Boxed: the connect future is large and deep, and only the first use (or uses
        // while Redis is down) pays for it.
        self.cell
            .get_or_try_init(|| -> std::pin::Pin<Box<dyn Future<Output = Result<Conn, StoreError>> + Send + '_>> {
                Box::pin(async {
                let timeout = self.config.timeout;
                let conn = match tokio::time::timeout(timeout, Conn::open(&self.config)).await {
                    Ok(Ok(conn)) => conn,
                    Ok(Err(e)) if e.kind() == ErrorKind::AuthenticationFailed => {
                        return Err(auth_refused(&self.config, &e));
                    }
                    Ok(Err(e)) => return Err(map_err("connect", e)),
                    Err(_) => {
                        return Err(StoreError::Unavailable(format!(
                            "redis connect: no connection within {timeout:?}"
                        )));
                    }
                };
                check_server(&conn, &self.config).await?;
                Ok(conn)
                })
            })
            .await
    }
}

/// What `CONFIG GET` said about one setting.
enum Setting {
    Value(String),
    /// The ACL (or a managed service) does not allow `CONFIG GET`.
    NotPermitted(String),
}

async fn config_get(conn: &Conn, name: &str, timeout: Duration) -> Result<Setting, StoreError> {
    let answer: RedisResult<Vec<String>> =
        match tokio::time::timeout(timeout, conn.query(cmd("CONFIG").arg("GET").arg(name))).await {
            Ok(a) => a,
            Err(_) => {
                return Err(StoreError::Unavailable(format!(
                    "redis CONFIG GET {name}: no answer within {timeout:?}"
                )));
            }
        };
    match answer {
        Ok(pair) => Ok(match pair.as_slice() {
            [_, value] => Setting::Value(value.clone()),
            _ => Setting::NotPermitted(format!("CONFIG GET {name} answered {pair:?}")),
        }),
        Err(e) if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() => {
            Err(map_err("CONFIG GET", e))
        }
        // NOPERM from the ACL, an unknown or renamed command on a managed service, …
        Err(e) => Ok(Setting::NotPermitted(e.to_string())),
    }
}

/// Checks what the server lets us check of the settings otpgate's guarantees need
/// (README, "Redis"): `maxmemory-policy noeviction` (an evicting policy can forget a
/// used step or a lock: refused) and AOF persistence (a restart without it forgets
/// them: refused with `require_persistence`, else a warning). When `CONFIG GET` is not
/// allowed, a warning says that nothing could be checked.
async fn check_server(conn: &Conn, config: &RedisConfig) -> Result<(), StoreError> {
    match config_get(conn, "maxmemory-policy", config.timeout).await? {
        Setting::Value(policy) if policy != "noeviction" => {
            return Err(StoreError::Unsuitable(format!(
                "redis maxmemory-policy is `{policy}`: it can evict used steps and locks, \
                 and so reopen replays; set `maxmemory-policy noeviction`"
            )));
        }
        Setting::Value(_) => {}
        Setting::NotPermitted(why) => tracing::warn!(
            error = %why,
            "redis: cannot read maxmemory-policy (allow `CONFIG GET` to otpgate's user to have it \
             checked); otpgate needs `noeviction`, or used steps and locks can be evicted"
        ),
    }
    match config_get(conn, "appendonly", config.timeout).await? {
        Setting::Value(aof) if aof != "yes" => {
            let message = "redis runs without AOF persistence (`appendonly no`): a restart \
                           forgets used steps and locks, and so reopens replays";
            if config.require_persistence {
                return Err(StoreError::Unsuitable(format!(
                    "{message}; set `appendonly yes` (required by [store] require_persistence)"
                )));
            }
            tracing::warn!("{message}; set `appendonly yes`");
        }
        Setting::Value(_) => {}
        Setting::NotPermitted(why) => {
            if config.require_persistence {
                return Err(StoreError::Unsuitable(format!(
                    "cannot read redis `appendonly` ({why}), and [store] require_persistence \
                     is set: allow `CONFIG GET` to otpgate's user"
                )));
            }
            tracing::warn!(
                error = %why,
                "redis: cannot read appendonly (allow `CONFIG GET` to otpgate's user to have it \
                 checked); otpgate needs AOF persistence, or a restart reopens replays"
            );
        }
    }
    Ok(())
}

/// The connection, by deployment.
#[derive(Clone)]
enum Conn {
    /// Reconnects by itself after an I/O error.
    Single(ConnectionManager),
    /// Follows slot moves and reconnects by itself.
    Cluster(::redis::cluster_async::ClusterConnection),
    /// Asks the sentinels for the master again after a failure.
    Sentinel(Arc<SentinelConn>),
}

/// A connection to the master that the sentinels name. After an I/O error, a timeout or
/// a `READONLY` answer (the old master after a failover) the connection is dropped and
/// the next command asks the sentinels again.
struct SentinelConn {
    client: tokio::sync::Mutex<SentinelClient>,
    current: tokio::sync::Mutex<Option<MultiplexedConnection>>,
    config: AsyncConnectionConfig,
}

impl SentinelConn {
    async fn get(&self) -> RedisResult<MultiplexedConnection> {
        let mut current = self.current.lock().await;
        if let Some(conn) = current.as_ref() {
            return Ok(conn.clone());
        }
        let client = self.client.lock().await.async_get_client().await?;
        let conn = client
            .get_multiplexed_async_connection_with_config(&self.config)
            .await?;
        *current = Some(conn.clone());
        Ok(conn)
    }

    async fn forget(&self) {
        *self.current.lock().await = None;
    }

    async fn after<T>(&self, result: RedisResult<T>) -> RedisResult<T> {
        if let Err(e) = &result {
            if e.is_io_error()
                || e.is_connection_dropped()
                || e.is_timeout()
                || e.kind() == ErrorKind::Server(ServerErrorKind::ReadOnly)
            {
                self.forget().await;
            }
        }
        result
    }
}

impl Conn {
    async fn open(config: &RedisConfig) -> RedisResult<Conn> {
        let timeout = config.timeout;
        let certificates = || TlsCertificates {
            client_tls: None,
            root_cert: config.tls_ca.clone(),
        };
        match &config.target {
            RedisTarget::Standalone(url) => {
                let info = with_auth(url.as_str().into_connection_info()?, &config.auth)?;
                let client = if config.tls_ca.is_some() {
                    ::redis::Client::build_with_tls(info, certificates())?
                } else {
                    ::redis::Client::open(info)?
                };
                let manager = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(timeout))
                    .set_response_timeout(Some(timeout))
                    .set_number_of_retries(3)
                    .set_min_delay(Duration::from_millis(50))
                    .set_max_delay(Duration::from_millis(500));
                Ok(Conn::Single(
                    ConnectionManager::new_with_config(client, manager).await?,
                ))
            }
            RedisTarget::Cluster(urls) => {
                let mut builder = ::redis::cluster::ClusterClientBuilder::new(urls.clone())
                    .connection_timeout(timeout)
                    .response_timeout(timeout)
                    .retries(2);
                if let Some(password) = &config.auth.password {
                    builder = builder.password(secret_text(password)?);
                }
                if let Some(username) = &config.auth.username {
                    builder = builder.username(username);
                }
                if config.tls_ca.is_some() {
                    builder = builder.certs(certificates());
                }
                Ok(Conn::Cluster(
                    builder.build()?.get_async_connection().await?,
                ))
            }
            RedisTarget::Sentinel {
                master_name,
                urls,
                auth,
            } => {
                let mut addrs = Vec::with_capacity(urls.len());
                let mut tls = false;
                for url in urls {
                    let info = url.as_str().into_connection_info()?;
                    tls |= matches!(info.addr(), ConnectionAddr::TcpTls { .. });
                    addrs.push(info.addr().clone());
                }
                let mut builder =
                    SentinelClientBuilder::new(addrs, master_name, SentinelServerType::Master)?;
                if let Some(password) = &auth.password {
                    builder = builder.set_client_to_sentinel_password(secret_text(password)?);
                }
                if let Some(username) = &auth.username {
                    builder = builder.set_client_to_sentinel_username(username);
                }
                if let Some(password) = &config.auth.password {
                    builder = builder.set_client_to_redis_password(secret_text(password)?);
                }
                if let Some(username) = &config.auth.username {
                    builder = builder.set_client_to_redis_username(username);
                }
                if tls {
                    // The master is reached the way the sentinels are.
                    builder = builder
                        .set_client_to_sentinel_tls_mode(TlsMode::Secure)
                        .set_client_to_redis_tls_mode(TlsMode::Secure);
                    if config.tls_ca.is_some() {
                        builder = builder
                            .set_client_to_sentinel_certificates(certificates())
                            .set_client_to_redis_certificates(certificates());
                    }
                }
                let conn = SentinelConn {
                    client: tokio::sync::Mutex::new(builder.build()?),
                    current: tokio::sync::Mutex::new(None),
                    config: AsyncConnectionConfig::new()
                        .set_connection_timeout(Some(timeout))
                        .set_response_timeout(Some(timeout)),
                };
                conn.get().await?;
                Ok(Conn::Sentinel(Arc::new(conn)))
            }
        }
    }

    async fn invoke<T: FromRedisValue>(&self, inv: &ScriptInvocation<'_>) -> RedisResult<T> {
        match self {
            Conn::Single(m) => inv.invoke_async(&mut m.clone()).await,
            Conn::Cluster(c) => inv.invoke_async(&mut c.clone()).await,
            Conn::Sentinel(s) => {
                let result = match s.get().await {
                    Ok(mut c) => inv.invoke_async(&mut c).await,
                    Err(e) => Err(e),
                };
                s.after(result).await
            }
        }
    }

    async fn load(&self, script: &Script) -> RedisResult<()> {
        match self {
            Conn::Single(m) => script.load_async(&mut m.clone()).await.map(drop),
            Conn::Cluster(c) => script.load_async(&mut c.clone()).await.map(drop),
            Conn::Sentinel(s) => {
                let result = match s.get().await {
                    Ok(mut c) => script.load_async(&mut c).await.map(drop),
                    Err(e) => Err(e),
                };
                s.after(result).await
            }
        }
    }

    async fn query<T: FromRedisValue>(&self, cmd: &Cmd) -> RedisResult<T> {
        match self {
            Conn::Single(m) => cmd.query_async(&mut m.clone()).await,
            Conn::Cluster(c) => cmd.query_async(&mut c.clone()).await,
            Conn::Sentinel(s) => {
                let result = match s.get().await {
                    Ok(mut c) => cmd.query_async(&mut c).await,
                    Err(e) => Err(e),
                };
                s.after(result).await
            }
        }
    }

    async fn timed_out(&self) {
        if let Conn::Sentinel(s) = self {
            s.forget().await;
        }
    }
}

/// A password as the redis crate takes it (text).
fn secret_text(secret: &SecretBytes) -> RedisResult<&str> {
    std::str::from_utf8(secret.expose()).map_err(|_| {
        RedisError::from((
            ErrorKind::InvalidClientConfig,
            "the Redis password is not UTF-8",
        ))
    })
}

/// `info` with the ACL credentials of `auth`, if any.
fn with_auth(info: ConnectionInfo, auth: &RedisAuth) -> RedisResult<ConnectionInfo> {
    let Some(password) = &auth.password else {
        return Ok(info);
    };
    let mut settings = info
        .redis_settings()
        .clone()
        .set_password(secret_text(password)?);
    if let Some(username) = &auth.username {
        settings = settings.set_username(username);
    }
    Ok(info.set_redis_settings(settings))
}

/// A connection the server refused to authenticate (`WRONGPASS`, which the redis crate
/// reports without the server's text): says as whom, and where the credentials come
/// from, so an operator knows what to fix.
fn auth_refused(config: &RedisConfig, e: &RedisError) -> StoreError {
    let user = config.auth.username.as_deref().unwrap_or("default");
    StoreError::Unavailable(format!(
        "redis connect: authentication refused (WRONGPASS) for user `{user}`: check [store] \
         username and password_file/password_env (or the sentinels' credentials): {e}"
    ))
}

/// Maps a Redis error: unreadable answers are `Corrupt`, everything else `Unavailable`.
fn map_err(what: &str, e: RedisError) -> StoreError {
    if e.code() == Some(CORRUPT_CODE)
        || matches!(e.kind(), ErrorKind::Parse | ErrorKind::UnexpectedReturnType)
    {
        StoreError::Corrupt(format!("redis {what}: {e}"))
    } else {
        StoreError::Unavailable(format!("redis {what}: {e}"))
    }
}

/// Steps are stored zero-padded to 20 digits so that Lua compares them as strings,
/// exactly, for every `u64` (Lua numbers are doubles).
fn padded_step(step: u64) -> String {
    format!("{step:020}")
}

macro_rules! script {
    ($name:ident, $doc:literal, $code:literal) => {
        #[doc = $doc]
        static $name: LazyLock<Script> = LazyLock::new(|| Script::new($code));
    };
}

script!(
    LOAD,
    "KEYS: account, failures, lock, step, token steps → {version, json, failures, lock, step, {name, step, …}}.",
    r"
local acc = redis.call('HMGET', KEYS[1], 'version', 'json')
return {acc[1], acc[2], redis.call('GET', KEYS[2]), redis.call('GET', KEYS[3]),
        redis.call('GET', KEYS[4]), redis.call('HGETALL', KEYS[5])}
"
);

script!(
    SAVE_ACCOUNT,
    "KEYS: account. ARGV: expected version, new version, JSON → 1 saved, 0 conflict.",
    r"
local cur = redis.call('HGET', KEYS[1], 'version') or '0'
if cur ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'version', ARGV[2], 'json', ARGV[3])
return 1
"
);

script!(
    ACCEPT_STEP,
    "KEYS: lock, step (the app's string or the tokens' hash), failures, account[, audit log, audit seq]. ARGV: now, token ('' = the app), account digest ('' = any), n, n padded steps[, oldest kept, ttl, at, record] → {0, step, audited} accepted, {1} replay, {2, until} locked, {3} changed.",
    r"
local lock = redis.call('GET', KEYS[1])
if lock and tonumber(lock) > tonumber(ARGV[1]) then return {2, lock, false} end
if ARGV[3] ~= '' and redis.sha1hex(redis.call('HGET', KEYS[4], 'json') or '') ~= ARGV[3] then
  return {3, false, false}
end
local app = ARGV[2] == ''
local last
if app then last = redis.call('GET', KEYS[2]) else last = redis.call('HGET', KEYS[2], ARGV[2]) end
local n = tonumber(ARGV[4])
local step = false
for i = 5, 4 + n do
  if not last or ARGV[i] > last then step = ARGV[i] break end
end
if not step then return {1, false, false} end
if app then redis.call('SET', KEYS[2], step) else redis.call('HSET', KEYS[2], ARGV[2], step) end
redis.call('DEL', KEYS[3], KEYS[1])
local a = 5 + n
if not ARGV[a] then return {0, step, 0} end
local seq = redis.call('INCR', KEYS[6])
redis.call('ZADD', KEYS[5], ARGV[a + 2], string.format('%020d', seq) .. ':' .. ARGV[a + 3])
redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', '(' .. ARGV[a])
redis.call('EXPIRE', KEYS[5], ARGV[a + 1])
redis.call('EXPIRE', KEYS[6], ARGV[a + 1])
return {0, step, 1}
"
);

script!(
    POOL_ADD,
    "KEYS: pool, assigned. ARGV: serial, JSON, user ('' for none) → 1 added, 0 the serial exists.",
    r"
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
if ARGV[3] ~= '' then redis.call('HSET', KEYS[2], ARGV[1], ARGV[3]) end
return 1
"
);

script!(
    POOL_GET,
    "KEYS: pool, assigned. ARGV: serial → {JSON, user}.",
    r"
return {redis.call('HGET', KEYS[1], ARGV[1]), redis.call('HGET', KEYS[2], ARGV[1])}
"
);

script!(
    POOL_LIST,
    "KEYS: pool, assigned → {{serial, JSON, …}, {serial, user, …}}.",
    r"
return {redis.call('HGETALL', KEYS[1]), redis.call('HGETALL', KEYS[2])}
"
);

script!(
    POOL_CLAIM,
    "KEYS: pool, assigned. ARGV: serial, user → {0, nil} unknown, {1, JSON} claimed, {2, user} assigned.",
    r"
local json = redis.call('HGET', KEYS[1], ARGV[1])
if not json then return {0, false} end
local owner = redis.call('HGET', KEYS[2], ARGV[1])
if owner then return {2, owner} end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
return {1, json}
"
);

script!(
    POOL_RELEASE,
    "KEYS: assigned. ARGV: serial, user → 1 released, 0 not assigned to that user.",
    r"
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
return 1
"
);

script!(
    POOL_REMOVE,
    "KEYS: pool, assigned. ARGV: serial → 1 removed, 0 absent.",
    r"
redis.call('HDEL', KEYS[2], ARGV[1])
return redis.call('HDEL', KEYS[1], ARGV[1])
"
);

script!(
    RECORD_FAILURE,
    "KEYS: failures, lock. ARGV: now, max, new lock end, counter TTL, lock TTL → {count, until}.",
    r"
local lock = redis.call('GET', KEYS[2])
if lock and tonumber(lock) > tonumber(ARGV[1]) then
  return {tonumber(redis.call('GET', KEYS[1]) or '0'), lock}
end
local n = redis.call('INCR', KEYS[1])
redis.call('EXPIRE', KEYS[1], ARGV[4])
if n >= tonumber(ARGV[2]) then
  redis.call('SET', KEYS[2], ARGV[3], 'EX', ARGV[5])
  return {n, ARGV[3]}
end
return {n, false}
"
);

script!(
    CONSUME_CODE,
    "KEYS: code. ARGV: hash, now → the record if it matched (and is now deleted), else nil.",
    r"
local v = redis.call('GET', KEYS[1])
if not v then return false end
local ok, rec = pcall(cjson.decode, v)
if not ok or type(rec) ~= 'table' or type(rec.hash) ~= 'string'
   or tonumber(rec.expires_at) == nil then
  return redis.error_reply('OTPGATE_CORRUPT code record')
end
if tonumber(rec.expires_at) <= tonumber(ARGV[2]) then
  redis.call('DEL', KEYS[1])
  return false
end
-- A plain comparison is fine here: both sides are keyed hashes (HMAC) of codes, never
-- codes, so how long it takes tells nothing about any code; Lua has no constant-time
-- comparison.
if rec.hash ~= ARGV[1] then return false end
redis.call('DEL', KEYS[1])
return v
"
);

script!(
    CHECK_CODE,
    "KEYS: code, failures, lock. ARGV: hash, now, max, new lock end, counter TTL, lock TTL \
     → {0, record} consumed, {1, count, until} wrong (counted), {2, until} locked.",
    r"
local lock = redis.call('GET', KEYS[3])
if lock and tonumber(lock) > tonumber(ARGV[2]) then return {2, lock} end
local v = redis.call('GET', KEYS[1])
if v then
  local ok, rec = pcall(cjson.decode, v)
  if not ok or type(rec) ~= 'table' or type(rec.hash) ~= 'string'
     or tonumber(rec.expires_at) == nil then
    return redis.error_reply('OTPGATE_CORRUPT code record')
  end
  if tonumber(rec.expires_at) <= tonumber(ARGV[2]) then
    redis.call('DEL', KEYS[1])
  elseif rec.hash == ARGV[1] then
    -- Keyed hashes on both sides: see CONSUME_CODE on the plain comparison.
    redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
    return {0, v}
  end
end
local n = redis.call('INCR', KEYS[2])
redis.call('EXPIRE', KEYS[2], ARGV[5])
if n >= tonumber(ARGV[3]) then
  redis.call('SET', KEYS[3], ARGV[4], 'EX', ARGV[6])
  return {1, n, ARGV[4]}
end
return {1, n, false}
"
);

script!(
    PUT_CHALLENGE,
    "KEYS: challenge. ARGV: data, expires_at, ttl.",
    r"
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'data', ARGV[1], 'answers', '0', 'expires_at', ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1
"
);

script!(
    LOAD_SESSION,
    "KEYS: session. ARGV: now, idle → {version, data} or nil (the expiry slides).",
    r"
local exp = redis.call('HGET', KEYS[1], 'expires_at')
if not exp then return false end
if tonumber(exp) <= tonumber(ARGV[1]) then
  redis.call('DEL', KEYS[1])
  return false
end
redis.call('HSET', KEYS[1], 'expires_at', tonumber(ARGV[1]) + tonumber(ARGV[2]))
redis.call('EXPIRE', KEYS[1], ARGV[2])
return redis.call('HMGET', KEYS[1], 'version', 'data')
"
);

script!(
    SAVE_SESSION,
    "KEYS: session. ARGV: expected version, data, now, idle → new version, or 0 on a conflict.",
    r"
local cur = redis.call('HMGET', KEYS[1], 'version', 'expires_at')
local version = 0
if cur[1] and cur[2] and tonumber(cur[2]) > tonumber(ARGV[3]) then
  version = tonumber(cur[1])
end
if version ~= tonumber(ARGV[1]) then return 0 end
local new = version + 1
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'version', new, 'data', ARGV[2],
           'expires_at', tonumber(ARGV[3]) + tonumber(ARGV[4]))
redis.call('EXPIRE', KEYS[1], ARGV[4])
return new
"
);

script!(
    COUNT_HIT,
    "KEYS: counter. ARGV: now, window → the count in the window, this hit included.",
    r"
local ends = redis.call('HGET', KEYS[1], 'ends_at')
if not ends or tonumber(ends) <= tonumber(ARGV[1]) then
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[1], 'count', 1, 'ends_at', tonumber(ARGV[1]) + tonumber(ARGV[2]))
  redis.call('EXPIRE', KEYS[1], ARGV[2])
  return 1
end
return redis.call('HINCRBY', KEYS[1], 'count', 1)
"
);

script!(
    ANSWER_CHALLENGE,
    "KEYS: challenge. ARGV: max answers, now → {data, answers} or nil (deleted when over).",
    r"
local exp = redis.call('HGET', KEYS[1], 'expires_at')
if not exp then return false end
if tonumber(exp) <= tonumber(ARGV[2]) then
  redis.call('DEL', KEYS[1])
  return false
end
local n = redis.call('HINCRBY', KEYS[1], 'answers', 1)
if n > tonumber(ARGV[1]) then
  redis.call('DEL', KEYS[1])
  return false
end
return {redis.call('HGET', KEYS[1], 'data'), n}
"
);

script!(
    ADD_TRUSTED,
    "KEYS: trusted, account. ARGV: id, JSON, now, account version → 1 added, 0 the account \
     changed. Drops expired devices; TTL = the latest expiry.",
    r"
local cur = redis.call('HGET', KEYS[2], 'version') or '0'
if cur ~= ARGV[4] then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
local now = tonumber(ARGV[3])
local latest = 0
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  local ok, rec = pcall(cjson.decode, all[i + 1])
  if ok and type(rec) == 'table' and tonumber(rec.expires_at) then
    local exp = tonumber(rec.expires_at)
    if exp <= now then
      redis.call('HDEL', KEYS[1], all[i])
    elseif exp > latest then
      latest = exp
    end
  end
end
if latest > now then
  redis.call('EXPIRE', KEYS[1], string.format('%d', latest - now))
else
  redis.call('DEL', KEYS[1])
end
return 1
"
);

script!(
    REVOKE_ALL,
    "KEYS: trusted → how many devices there were.",
    r"
local n = redis.call('HLEN', KEYS[1])
redis.call('DEL', KEYS[1])
return n
"
);

script!(
    ENQUEUE_HELPDESK,
    "KEYS: queue. ARGV: user, JSON, ttl. The queue's TTL only grows.",
    r"
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
if redis.call('TTL', KEYS[1]) < tonumber(ARGV[3]) then
  redis.call('EXPIRE', KEYS[1], ARGV[3])
end
return 1
"
);

script!(
    LIST_HELPDESK,
    "KEYS: queue. ARGV: now → the unexpired JSON records; expired ones are dropped.",
    r"
local now = tonumber(ARGV[1])
local out = {}
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  local ok, rec = pcall(cjson.decode, all[i + 1])
  if ok and type(rec) == 'table' and tonumber(rec.expires_at)
     and tonumber(rec.expires_at) <= now then
    redis.call('HDEL', KEYS[1], all[i])
  else
    out[#out + 1] = all[i + 1]
  end
end
return out
"
);

script!(
    APPEND_AUDIT,
    "KEYS: log, seq. ARGV: oldest kept score, ttl, then (at, record) pairs. Member = 20-digit seq ':' record.",
    r"
local count = (#ARGV - 2) / 2
local n = redis.call('INCRBY', KEYS[2], count) - count
local members = {}
for i = 3, #ARGV, 2 do
  n = n + 1
  members[#members + 1] = ARGV[i]
  members[#members + 1] = string.format('%020d', n) .. ':' .. ARGV[i + 1]
end
redis.call('ZADD', KEYS[1], unpack(members))
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[2])
redis.call('EXPIRE', KEYS[2], ARGV[2])
return n
"
);

impl RedisStore {
    /// Connects to `target` with no credentials and checks the connection with a
    /// `PING`, within `timeout`, so a Redis that is down is an error. Every later
    /// command is bounded by `timeout` as well.
    pub async fn connect(
        target: &otpgate_config::RedisTarget,
        key_prefix: &str,
        timeout: Duration,
    ) -> Result<Self, StoreError> {
        Self::open(
            RedisConfig::plain(target.clone(), key_prefix, timeout),
            super::Connect::Now,
        )
        .await
    }

    /// Opens a store for `config`. With [`super::Connect::Now`] it connects, checks
    /// the server's settings and `PING`s here; with [`super::Connect::Lazily`] the
    /// first use does, and a Redis that is down is not an error yet.
    pub async fn open(config: RedisConfig, connect: super::Connect) -> Result<Self, StoreError> {
        let store = Self {
            prefix: Arc::from(config.key_prefix.as_str()),
            timeout: config.timeout,
            conn: Arc::new(LazyConn {
                config,
                cell: tokio::sync::OnceCell::new(),
            }),
        };
        if connect == super::Connect::Now {
            store.ping().await?;
        }
        Ok(store)
    }

    /// Probes the server as `check-config --connect` does: connects (checking the
    /// server's settings), `PING`s and loads every script.
    pub async fn probe(&self) -> Result<(), StoreError> {
        self.ping().await?;
        let conn = self.conn.get().await?;
        for script in [
            &*LOAD,
            &*SAVE_ACCOUNT,
            &*ACCEPT_STEP,
            &*POOL_ADD,
            &*POOL_GET,
            &*POOL_LIST,
            &*POOL_CLAIM,
            &*POOL_RELEASE,
            &*POOL_REMOVE,
            &*RECORD_FAILURE,
            &*CONSUME_CODE,
            &*CHECK_CODE,
            &*PUT_CHALLENGE,
            &*LOAD_SESSION,
            &*SAVE_SESSION,
            &*COUNT_HIT,
            &*ANSWER_CHALLENGE,
            &*ADD_TRUSTED,
            &*REVOKE_ALL,
            &*ENQUEUE_HELPDESK,
            &*LIST_HELPDESK,
            &*APPEND_AUDIT,
        ] {
            match tokio::time::timeout(self.timeout, conn.load(script)).await {
                Ok(r) => r.map_err(|e| map_err("SCRIPT LOAD", e))?,
                Err(_) => return Err(self.timed_out("SCRIPT LOAD").await),
            }
        }
        Ok(())
    }

    fn key(&self, user: &UserName, what: &str) -> String {
        keys::user_key(&self.prefix, user, what)
    }

    async fn script<T: FromRedisValue>(
        &self,
        what: &str,
        inv: &ScriptInvocation<'_>,
    ) -> Result<T, StoreError> {
        let conn = self.conn.get().await?;
        match tokio::time::timeout(self.timeout, conn.invoke(inv)).await {
            Ok(result) => result.map_err(|e| map_err(what, e)),
            Err(_) => Err(self.timed_out(what).await),
        }
    }

    async fn query<T: FromRedisValue>(&self, what: &str, cmd: &Cmd) -> Result<T, StoreError> {
        let conn = self.conn.get().await?;
        match tokio::time::timeout(self.timeout, conn.query(cmd)).await {
            Ok(result) => result.map_err(|e| map_err(what, e)),
            Err(_) => Err(self.timed_out(what).await),
        }
    }

    async fn timed_out(&self, what: &str) -> StoreError {
        if let Some(conn) = self.conn.cell.get() {
            conn.timed_out().await;
        }
        StoreError::Unavailable(format!("redis {what}: no answer within {:?}", self.timeout))
    }

    /// All of a user's trusted devices that can be read (undecodable ones are skipped
    /// and logged: they can only make a device untrusted, never trusted).
    async fn trusted_devices(
        &self,
        user: &UserName,
        now: Timestamp,
    ) -> Result<Vec<TrustedDevice>, StoreError> {
        let values: Vec<Vec<u8>> = self
            .query(
                "list trusted",
                cmd("HVALS").arg(self.key(user, keys::TRUSTED)),
            )
            .await?;
        let mut devices = Vec::with_capacity(values.len());
        for v in values {
            match from_json::<TrustedDevice>("trusted device", &v) {
                Ok(d) if is_live(d.expires_at, now) => devices.push(d),
                Ok(_) => {}
                Err(e) => tracing::warn!(%user, error = %e, "skipping a trusted device record"),
            }
        }
        devices.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(devices)
    }
}

#[cfg(any(test, feature = "conformance"))]
impl super::conformance::CorruptTrusted for RedisStore {
    async fn corrupt_trusted(&self, user: &UserName) {
        let written: Result<i64, StoreError> = self
            .query(
                "corrupt trusted device",
                cmd("HSET")
                    .arg(self.key(user, keys::TRUSTED))
                    .arg("corrupt")
                    .arg("not json"),
            )
            .await;
        assert!(written.is_ok(), "writing the corrupt record: {written:?}");
    }
}

#[cfg(any(test, feature = "conformance"))]
impl super::conformance::WriteRawAccount for RedisStore {
    async fn write_raw_account(&self, user: &UserName, version: u64, json: &str) {
        let written: Result<i64, StoreError> = self
            .query(
                "raw account",
                cmd("HSET")
                    .arg(self.key(user, keys::ACCOUNT))
                    .arg("version")
                    .arg(version)
                    .arg("json")
                    .arg(json),
            )
            .await;
        assert!(written.is_ok(), "writing the raw account: {written:?}");
    }
}

/// Reads CHECK_CODE's answer.
fn check_code_answer(answer: ::redis::Value) -> Result<CodeOutcome, StoreError> {
    use ::redis::Value;
    let bad = || StoreError::Corrupt("check code: unexpected answer".into());
    let Value::Array(items) = answer else {
        return Err(bad());
    };
    let text = |v: &Value| -> Option<String> {
        match v {
            Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
            Value::SimpleString(s) => Some(s.clone()),
            Value::Int(i) => Some(i.to_string()),
            _ => None,
        }
    };
    match items.as_slice() {
        [Value::Int(0), record] => {
            let json = text(record).ok_or_else(bad)?;
            Ok(CodeOutcome::Consumed(from_json("code", json.as_bytes())?))
        }
        [Value::Int(1), Value::Int(n), until, ..] => Ok(CodeOutcome::Wrong(FailureOutcome {
            failures: u32::try_from(*n).unwrap_or(u32::MAX),
            locked_until: text(until)
                .map(|u| parse_u64("lock", &u).map(Timestamp))
                .transpose()?,
        })),
        [Value::Int(1), Value::Int(n)] => Ok(CodeOutcome::Wrong(FailureOutcome {
            failures: u32::try_from(*n).unwrap_or(u32::MAX),
            locked_until: None,
        })),
        [Value::Int(2), until] => {
            let until = text(until).ok_or_else(bad)?;
            Ok(CodeOutcome::Locked(Timestamp(parse_u64("lock", &until)?)))
        }
        _ => Err(bad()),
    }
}

/// Seconds from `now` until `at`, if any.
fn ttl_until(now: Timestamp, at: Timestamp) -> Option<u64> {
    match now.seconds_until(at) {
        0 => None,
        s => Some(s),
    }
}

/// Reads ACCEPT_STEP's answer.
fn step_answer(answer: (i64, Option<String>, Option<i64>)) -> Result<StepDecision, StoreError> {
    match answer {
        (0, Some(step), audited) => Ok(StepDecision::Accepted {
            step: parse_u64("accepted step", &step)?,
            audited: audited == Some(1),
        }),
        (1, _, _) => Ok(StepDecision::Replay),
        (2, Some(u), _) => Ok(StepDecision::Locked(Timestamp(parse_u64("lock", &u)?))),
        (3, _, _) => Ok(StepDecision::Changed),
        _ => Err(StoreError::Corrupt("accept step: unexpected answer".into())),
    }
}

/// A pool entry from its JSON and its assignment.
fn pool_entry(json: &[u8], user: Option<String>) -> Result<PoolEntry, StoreError> {
    Ok(PoolEntry {
        token: from_json("pool token", json)?,
        assigned_to: user
            .map(|u| UserName::parse(&u))
            .transpose()
            .map_err(|e| StoreError::Corrupt(format!("pool assignment: {e}")))?,
    })
}

fn parse_u64(what: &str, text: &str) -> Result<u64, StoreError> {
    text.trim()
        .parse()
        .map_err(|_| StoreError::Corrupt(format!("{what} is not a number")))
}

impl StoreBackend for RedisStore {
    async fn ping(&self) -> Result<(), StoreError> {
        let answer: String = self.query("ping", &cmd("PING")).await?;
        if answer == "PONG" {
            Ok(())
        } else {
            Err(StoreError::Corrupt(format!(
                "redis ping: answered {answer:?}"
            )))
        }
    }

    async fn load(&self, user: &UserName, now: Timestamp) -> Result<UserRecord, StoreError> {
        let mut inv = LOAD.prepare_invoke();
        inv.key(self.key(user, keys::ACCOUNT))
            .key(self.key(user, keys::FAILURES))
            .key(self.key(user, keys::LOCK))
            .key(self.key(user, keys::TOTP_STEP))
            .key(self.key(user, keys::TOKEN_STEPS));
        type Row = (
            Option<String>,
            Option<Vec<u8>>,
            Option<String>,
            Option<String>,
            Option<String>,
            Vec<(String, String)>,
        );
        let (version, json, failures, lock, step, token_steps): Row =
            self.script("load", &inv).await?;
        let mut account_digest = None;
        let account = match (version, json) {
            (Some(v), Some(j)) => {
                let mut account: Account = from_json("account", &j)?;
                account.version = parse_u64("account version", &v)?;
                account_digest = Some(account_digest_of(&j));
                Some(account)
            }
            (None, None) => None,
            _ => return Err(StoreError::Corrupt("account hash is incomplete".into())),
        };
        let failures = match failures {
            Some(f) => u32::try_from(parse_u64("failure count", &f)?).unwrap_or(u32::MAX),
            None => 0,
        };
        let locked_until = match lock {
            Some(l) => Some(Timestamp(parse_u64("lock", &l)?)).filter(|t| is_live(*t, now)),
            None => None,
        };
        let last_totp_step = step.map(|s| parse_u64("last TOTP step", &s)).transpose()?;
        let token_steps = token_steps
            .into_iter()
            .map(|(name, s)| Ok((name, parse_u64("last token step", &s)?)))
            .collect::<Result<_, StoreError>>()?;
        Ok(UserRecord {
            account,
            failures,
            locked_until,
            last_totp_step,
            token_steps,
            account_digest,
        })
    }

    async fn save_account(
        &self,
        user: &UserName,
        expected_version: u64,
        account: &Account,
    ) -> Result<bool, StoreError> {
        let new_version = expected_version
            .checked_add(1)
            .ok_or_else(|| StoreError::Corrupt("account version overflow".into()))?;
        let mut record = account.clone();
        record.version = new_version;
        let json = to_json("account", &record)?;
        let mut inv = SAVE_ACCOUNT.prepare_invoke();
        inv.key(self.key(user, keys::ACCOUNT))
            .arg(expected_version.to_string())
            .arg(new_version.to_string())
            .arg(json);
        let saved: i64 = self.script("save account", &inv).await?;
        Ok(saved == 1)
    }

    async fn accept_step(
        &self,
        user: &UserName,
        check: &StepCheck<'_>,
    ) -> Result<StepDecision, StoreError> {
        let mut inv = ACCEPT_STEP.prepare_invoke();
        inv.key(self.key(user, keys::LOCK))
            .key(self.key(
                user,
                check.token.map_or(keys::TOTP_STEP, |_| keys::TOKEN_STEPS),
            ))
            .key(self.key(user, keys::FAILURES))
            .key(self.key(user, keys::ACCOUNT))
            .arg(check.now.0)
            .arg(check.token.unwrap_or(""))
            .arg(check.account.unwrap_or(""))
            .arg(check.steps.len());
        for step in check.steps {
            inv.arg(padded_step(*step));
        }
        // The audit log is in a slot of its own: a Cluster cannot run one script over
        // it and the user's keys, so there the record goes the usual way.
        let cluster = matches!(self.conn.config.target, RedisTarget::Cluster(_));
        if let Some(audit) = check.audit.filter(|_| !cluster) {
            inv.key(keys::audit_log_key(&self.prefix))
                .key(keys::audit_seq_key(&self.prefix))
                .arg(audit.at.0.saturating_sub(audit.keep))
                .arg(audit.keep.max(1))
                .arg(audit.at.0)
                .arg(audit.record);
        }
        step_answer(self.script("accept step", &inv).await?)
    }

    async fn pool_add(
        &self,
        token: &Token,
        serial: &str,
        assigned_to: Option<&UserName>,
    ) -> Result<bool, StoreError> {
        let mut inv = POOL_ADD.prepare_invoke();
        inv.key(keys::pool_key(&self.prefix))
            .key(keys::pool_assigned_key(&self.prefix))
            .arg(serial)
            .arg(to_json("pool token", token)?)
            .arg(assigned_to.map_or("", UserName::as_str));
        let added: i64 = self.script("pool add", &inv).await?;
        Ok(added == 1)
    }

    async fn pool_get(&self, serial: &str) -> Result<Option<PoolEntry>, StoreError> {
        let mut inv = POOL_GET.prepare_invoke();
        inv.key(keys::pool_key(&self.prefix))
            .key(keys::pool_assigned_key(&self.prefix))
            .arg(serial);
        let (json, user): (Option<Vec<u8>>, Option<String>) = self.script("pool get", &inv).await?;
        json.map(|j| pool_entry(&j, user)).transpose()
    }

    async fn pool_list(&self) -> Result<Vec<PoolEntry>, StoreError> {
        let mut inv = POOL_LIST.prepare_invoke();
        inv.key(keys::pool_key(&self.prefix))
            .key(keys::pool_assigned_key(&self.prefix));
        type Rows = (Vec<(String, Vec<u8>)>, Vec<(String, String)>);
        let (tokens, assigned): Rows = self.script("pool list", &inv).await?;
        let assigned: std::collections::HashMap<String, String> = assigned.into_iter().collect();
        let mut out = tokens
            .into_iter()
            .map(|(serial, json)| pool_entry(&json, assigned.get(&serial).cloned()))
            .collect::<Result<Vec<_>, _>>()?;
        out.sort_by(|a, b| a.token.serial.cmp(&b.token.serial));
        Ok(out)
    }

    async fn pool_claim(&self, serial: &str, user: &UserName) -> Result<Claim, StoreError> {
        let mut inv = POOL_CLAIM.prepare_invoke();
        inv.key(keys::pool_key(&self.prefix))
            .key(keys::pool_assigned_key(&self.prefix))
            .arg(serial)
            .arg(user.as_str());
        let (code, value): (i64, Option<Vec<u8>>) = self.script("pool claim", &inv).await?;
        match (code, value) {
            (0, _) => Ok(Claim::Unknown),
            (1, Some(json)) => Ok(Claim::Claimed(from_json("pool token", &json)?)),
            (2, Some(owner)) => Ok(Claim::AssignedTo(
                UserName::parse(&String::from_utf8_lossy(&owner))
                    .map_err(|e| StoreError::Corrupt(format!("pool assignment: {e}")))?,
            )),
            _ => Err(StoreError::Corrupt("pool claim: unexpected answer".into())),
        }
    }

    async fn pool_release(&self, serial: &str, user: &UserName) -> Result<bool, StoreError> {
        let mut inv = POOL_RELEASE.prepare_invoke();
        inv.key(keys::pool_assigned_key(&self.prefix))
            .arg(serial)
            .arg(user.as_str());
        let released: i64 = self.script("pool release", &inv).await?;
        Ok(released == 1)
    }

    async fn pool_remove(&self, serial: &str) -> Result<bool, StoreError> {
        let mut inv = POOL_REMOVE.prepare_invoke();
        inv.key(keys::pool_key(&self.prefix))
            .key(keys::pool_assigned_key(&self.prefix))
            .arg(serial);
        let removed: i64 = self.script("pool remove", &inv).await?;
        Ok(removed == 1)
    }

    async fn record_failure(
        &self,
        user: &UserName,
        now: Timestamp,
        max_failures: u32,
        lock_for: u64,
    ) -> Result<FailureOutcome, StoreError> {
        let lock_for = lock_for.max(1);
        let until = now.0.saturating_add(lock_for);
        let mut inv = RECORD_FAILURE.prepare_invoke();
        inv.key(self.key(user, keys::FAILURES))
            .key(self.key(user, keys::LOCK))
            .arg(now.0)
            .arg(max_failures)
            .arg(until)
            .arg(FAILURES_TTL)
            .arg(lock_for);
        let (count, until): (u64, Option<String>) = self.script("record failure", &inv).await?;
        Ok(FailureOutcome {
            failures: u32::try_from(count).unwrap_or(u32::MAX),
            locked_until: until
                .map(|u| parse_u64("lock", &u).map(Timestamp))
                .transpose()?,
        })
    }

    async fn clear_failures(&self, user: &UserName) -> Result<(), StoreError> {
        let _: i64 = self
            .query(
                "clear failures",
                cmd("DEL")
                    .arg(self.key(user, keys::FAILURES))
                    .arg(self.key(user, keys::LOCK)),
            )
            .await?;
        Ok(())
    }

    async fn put_code(
        &self,
        user: &UserName,
        slot: CodeSlot,
        code: &StoredCode,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let key = keys::code_key(&self.prefix, user, slot);
        match ttl_until(now, code.expires_at) {
            Some(ttl) => {
                let json = to_json("code", code)?;
                let _: () = self
                    .query("put code", cmd("SET").arg(key).arg(json).arg("EX").arg(ttl))
                    .await?;
            }
            // Already expired: the slot ends up empty, as it would a moment later.
            None => {
                let _: i64 = self.query("put code", cmd("DEL").arg(key)).await?;
            }
        }
        Ok(())
    }

    async fn consume_code(
        &self,
        user: &UserName,
        slot: CodeSlot,
        hash: &str,
        now: Timestamp,
    ) -> Result<Option<StoredCode>, StoreError> {
        let mut inv = CONSUME_CODE.prepare_invoke();
        inv.key(keys::code_key(&self.prefix, user, slot))
            .arg(hash)
            .arg(now.0);
        let found: Option<Vec<u8>> = self.script("consume code", &inv).await?;
        found.map(|j| from_json("code", &j)).transpose()
    }

    async fn check_code(
        &self,
        user: &UserName,
        slot: CodeSlot,
        hash: &str,
        now: Timestamp,
        max_failures: u32,
        lock_for: u64,
    ) -> Result<CodeOutcome, StoreError> {
        let lock_for = lock_for.max(1);
        let mut inv = CHECK_CODE.prepare_invoke();
        inv.key(keys::code_key(&self.prefix, user, slot))
            .key(self.key(user, keys::FAILURES))
            .key(self.key(user, keys::LOCK))
            .arg(hash)
            .arg(now.0)
            .arg(max_failures)
            .arg(now.0.saturating_add(lock_for))
            .arg(FAILURES_TTL)
            .arg(lock_for);
        let answer: ::redis::Value = self.script("check code", &inv).await?;
        check_code_answer(answer)
    }

    async fn forget_totp_step(&self, user: &UserName) -> Result<(), StoreError> {
        let _: i64 = self
            .query(
                "forget TOTP step",
                cmd("DEL")
                    .arg(self.key(user, keys::TOTP_STEP))
                    .arg(self.key(user, keys::TOKEN_STEPS)),
            )
            .await?;
        Ok(())
    }

    async fn delete_code(&self, user: &UserName, slot: CodeSlot) -> Result<(), StoreError> {
        let _: i64 = self
            .query(
                "delete code",
                cmd("DEL").arg(keys::code_key(&self.prefix, user, slot)),
            )
            .await?;
        Ok(())
    }

    async fn peek_code(
        &self,
        user: &UserName,
        slot: CodeSlot,
        now: Timestamp,
    ) -> Result<Option<StoredCode>, StoreError> {
        let found: Option<Vec<u8>> = self
            .query(
                "peek code",
                cmd("GET").arg(keys::code_key(&self.prefix, user, slot)),
            )
            .await?;
        let code = found
            .map(|j| from_json::<StoredCode>("code", &j))
            .transpose()?;
        Ok(code.filter(|c| is_live(c.expires_at, now)))
    }

    async fn put_challenge(
        &self,
        user: &UserName,
        id: &str,
        data: &[u8],
        ttl: u64,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let key = keys::challenge_key(&self.prefix, user, id);
        if ttl == 0 {
            let _: i64 = self.query("put challenge", cmd("DEL").arg(key)).await?;
            return Ok(());
        }
        let mut inv = PUT_CHALLENGE.prepare_invoke();
        inv.key(key)
            .arg(data)
            .arg(now.0.saturating_add(ttl))
            .arg(ttl);
        let _: i64 = self.script("put challenge", &inv).await?;
        Ok(())
    }

    async fn answer_challenge(
        &self,
        user: &UserName,
        id: &str,
        max_answers: u32,
        now: Timestamp,
    ) -> Result<Option<ChallengeAnswer>, StoreError> {
        let mut inv = ANSWER_CHALLENGE.prepare_invoke();
        inv.key(keys::challenge_key(&self.prefix, user, id))
            .arg(max_answers)
            .arg(now.0);
        let found: Option<(Vec<u8>, u32)> = self.script("answer challenge", &inv).await?;
        Ok(found.map(|(data, answers)| ChallengeAnswer { data, answers }))
    }

    async fn delete_challenge(&self, user: &UserName, id: &str) -> Result<(), StoreError> {
        let _: i64 = self
            .query(
                "delete challenge",
                cmd("DEL").arg(keys::challenge_key(&self.prefix, user, id)),
            )
            .await?;
        Ok(())
    }

    async fn load_session(
        &self,
        user: &UserName,
        id: &str,
        idle: u64,
        now: Timestamp,
    ) -> Result<Option<StoredSession>, StoreError> {
        if idle == 0 {
            return Ok(None);
        }
        let mut inv = LOAD_SESSION.prepare_invoke();
        inv.key(keys::session_key(&self.prefix, user, id))
            .arg(now.0)
            .arg(idle);
        let found: Option<(Option<String>, Option<Vec<u8>>)> =
            self.script("load session", &inv).await?;
        match found {
            None => Ok(None),
            Some((Some(version), Some(data))) => Ok(Some(StoredSession {
                version: parse_u64("session version", &version)?,
                data,
            })),
            Some(_) => Err(StoreError::Corrupt("session hash is incomplete".into())),
        }
    }

    async fn save_session(
        &self,
        user: &UserName,
        id: &str,
        expected_version: u64,
        data: &[u8],
        idle: u64,
        now: Timestamp,
    ) -> Result<Option<u64>, StoreError> {
        if idle == 0 {
            return Ok(None);
        }
        let mut inv = SAVE_SESSION.prepare_invoke();
        inv.key(keys::session_key(&self.prefix, user, id))
            .arg(expected_version)
            .arg(data)
            .arg(now.0)
            .arg(idle);
        let version: u64 = self.script("save session", &inv).await?;
        Ok((version != 0).then_some(version))
    }

    async fn delete_session(&self, user: &UserName, id: &str) -> Result<(), StoreError> {
        let _: i64 = self
            .query(
                "delete session",
                cmd("DEL").arg(keys::session_key(&self.prefix, user, id)),
            )
            .await?;
        Ok(())
    }

    async fn count_hit(
        &self,
        counter: &Counter<'_>,
        window: u64,
        now: Timestamp,
    ) -> Result<u64, StoreError> {
        let mut inv = COUNT_HIT.prepare_invoke();
        inv.key(keys::counter_key(&self.prefix, counter))
            .arg(now.0)
            .arg(window.max(1));
        self.script("count hit", &inv).await
    }

    async fn add_trusted(
        &self,
        user: &UserName,
        device: &TrustedDevice,
        now: Timestamp,
        account_version: u64,
    ) -> Result<bool, StoreError> {
        let mut inv = ADD_TRUSTED.prepare_invoke();
        inv.key(self.key(user, keys::TRUSTED))
            .key(self.key(user, keys::ACCOUNT))
            .arg(&device.id)
            .arg(to_json("trusted device", device)?)
            .arg(now.0)
            .arg(account_version.to_string());
        let added: i64 = self.script("add trusted device", &inv).await?;
        Ok(added == 1)
    }

    async fn list_trusted(
        &self,
        user: &UserName,
        now: Timestamp,
    ) -> Result<Vec<TrustedDevice>, StoreError> {
        self.trusted_devices(user, now).await
    }

    async fn revoke_trusted(&self, user: &UserName, id: Option<&str>) -> Result<usize, StoreError> {
        let key = self.key(user, keys::TRUSTED);
        let removed: u64 = match id {
            Some(id) => {
                self.query("revoke trusted device", cmd("HDEL").arg(key).arg(id))
                    .await?
            }
            None => {
                let mut inv = REVOKE_ALL.prepare_invoke();
                inv.key(key);
                self.script("revoke trusted devices", &inv).await?
            }
        };
        Ok(usize::try_from(removed).unwrap_or(usize::MAX))
    }

    async fn enqueue_helpdesk(&self, request: &HelpdeskRequest) -> Result<(), StoreError> {
        let ttl = request
            .requested_at
            .seconds_until(request.expires_at)
            .max(1);
        let mut inv = ENQUEUE_HELPDESK.prepare_invoke();
        inv.key(keys::helpdesk_key(&self.prefix))
            .arg(request.user.as_str())
            .arg(to_json("helpdesk request", request)?)
            .arg(ttl);
        let _: i64 = self.script("enqueue helpdesk", &inv).await?;
        Ok(())
    }

    async fn list_helpdesk(&self, now: Timestamp) -> Result<Vec<HelpdeskRequest>, StoreError> {
        let mut inv = LIST_HELPDESK.prepare_invoke();
        inv.key(keys::helpdesk_key(&self.prefix)).arg(now.0);
        let values: Vec<Vec<u8>> = self.script("list helpdesk", &inv).await?;
        let mut out = Vec::with_capacity(values.len());
        for v in values {
            let r: HelpdeskRequest = from_json("helpdesk request", &v)?;
            if is_live(r.expires_at, now) {
                out.push(r);
            }
        }
        out.sort_by(|a, b| (a.requested_at, &a.user).cmp(&(b.requested_at, &b.user)));
        Ok(out)
    }

    async fn remove_helpdesk(&self, user: &UserName) -> Result<bool, StoreError> {
        let removed: i64 = self
            .query(
                "remove helpdesk",
                cmd("HDEL")
                    .arg(keys::helpdesk_key(&self.prefix))
                    .arg(user.as_str()),
            )
            .await?;
        Ok(removed > 0)
    }

    async fn append_audits(
        &self,
        records: &[(Timestamp, &str)],
        keep: u64,
    ) -> Result<(), StoreError> {
        let Some(oldest) = audit_kept_from(records, keep) else {
            return Ok(());
        };
        let mut inv = APPEND_AUDIT.prepare_invoke();
        inv.key(keys::audit_log_key(&self.prefix))
            .key(keys::audit_seq_key(&self.prefix))
            .arg(oldest)
            .arg(keep.max(1));
        for (at, record) in records {
            inv.arg(at.0).arg(*record);
        }
        let _: i64 = self.script("append audit", &inv).await?;
        Ok(())
    }

    async fn read_audit(&self, since: Timestamp, limit: usize) -> Result<Vec<String>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let members: Vec<String> = self
            .query(
                "read audit",
                cmd("ZRANGEBYSCORE")
                    .arg(keys::audit_log_key(&self.prefix))
                    .arg(since.0)
                    .arg("+inf")
                    .arg("LIMIT")
                    .arg(0)
                    .arg(limit),
            )
            .await?;
        members
            .into_iter()
            .map(|m| match m.split_once(':') {
                Some((_, record)) => Ok(record.to_string()),
                None => Err(StoreError::Corrupt(
                    "audit member without its sequence".into(),
                )),
            })
            .collect()
    }
}
