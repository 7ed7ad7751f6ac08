//! A store on Redis or Redis Cluster (feature `redis`), through the `redis` crate's sync client.
//!
//! - **Keys**: `prefix ++ codec.encode_key(key)`. The prefix (default `cogwheel:`) is the
//!   namespace: two stores on one server never see each other's entries if neither prefix
//!   begins with the other (`app:` and `app:v2:` overlap: the first one's scan would visit the
//!   second one's records, mostly as corrupt ones). A prefix with a `{hash tag}` pins every
//!   key to one cluster slot (one node).
//! - **Values**: the codec's bytes (value + deadline header). A deadline becomes a Redis expiry
//!   (`SET .. PX ms`, the time left on the wall clock, rounded up); a put whose deadline has
//!   already passed is sent as a `DEL`, so the store never holds an expired value.
//! - **Batches**: one pipeline per batch; in cluster mode one per node, the nodes one after
//!   another, each key's commands in order, on connections that neither retry nor follow
//!   redirects (a batch that meets one fails; the write-behind writer retries it). Not a
//!   `MULTI`: a failure mid-batch may leave a prefix applied, which is what
//!   [`StoreErrorKind::Unknown`] allows.
//! - **Connections**: a small pool of idle connections; each call takes one (connecting if the
//!   pool is empty) and returns it only if the call did not break it. A server restart therefore
//!   costs the calls in flight (and those that pick up a connection that died meanwhile) one
//!   error each, and the next call reconnects.
//! - **Errors**: failing to connect is `Fail` (nothing sent). A write that fails after it was
//!   sent (I/O error, timeout, server error reply) is `Unknown`. In cluster mode every failed
//!   write is `Unknown`: the pipeline goes to the nodes one by one, so one node may have applied
//!   its part before another refused. Reads apply nothing, so a
//!   failed `load` or `scan` is always `Fail`.
//! - **TLS and auth** come from the URL: `redis://user:password@host:port/db`, and `rediss://`
//!   with the `redis-tls` feature (native TLS). In cluster mode the first URL's credentials and
//!   TLS mode apply to every node.
//!
//! [`StoreErrorKind::Unknown`]: super::StoreErrorKind::Unknown

use super::codec::{Codec, PostcardCodec};
use super::{BackingStore, ScanItem, StoreError, Stored, WriteOp};
use redis::cluster::{ClusterClient, ClusterConnection, Connect};
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::{ConnectionLike, ErrorKind, IntoConnectionInfo, RedisError, RedisResult, Value};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::HashSet;
use std::fmt;
use std::marker::PhantomData;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime};

/// How to reach Redis, and how the store lays out its keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisConfig {
    /// One URL for a single node, or the seed nodes of a cluster.
    pub urls: Vec<String>,
    /// Whether `urls` name a Redis Cluster.
    pub cluster: bool,
    /// Prepended to every encoded key (the store's namespace).
    pub prefix: Vec<u8>,
    /// Time allowed to open a connection.
    pub connect_timeout: Duration,
    /// Time allowed for a reply (per read/write on the socket). A batch gives up at the first
    /// reply that takes longer.
    pub response_timeout: Duration,
    /// Idle connections kept for reuse (extra ones are closed).
    pub max_idle: usize,
    /// The `COUNT` hint of each `SCAN` step, and how many values `scan` fetches per pipeline.
    pub scan_count: usize,
    /// Cluster mode only: how often the cluster client retries a single command (a load, a
    /// scan step) on redirects and connection errors before giving up. Batches are not
    /// retried here (see the module docs).
    pub cluster_retries: u32,
}

impl RedisConfig {
    /// A single node at `url` (`redis://[user:password@]host:port[/db]`, or `rediss://`).
    pub fn single(url: impl Into<String>) -> Self {
        RedisConfig {
            urls: vec![url.into()],
            cluster: false,
            prefix: b"cogwheel:".to_vec(),
            connect_timeout: Duration::from_secs(1),
            response_timeout: Duration::from_secs(2),
            max_idle: 8,
            scan_count: 512,
            cluster_retries: 3,
        }
    }

    /// A cluster reached through the seed nodes `urls` (any subset of its nodes).
    pub fn cluster<S: Into<String>>(urls: impl IntoIterator<Item = S>) -> Self {
        let mut c = RedisConfig::single(String::new());
        c.urls = urls.into_iter().map(Into::into).collect();
        c.cluster = true;
        c
    }

    /// Set the key prefix (namespace). Stores sharing a server need prefixes of which none
    /// begins with another (see the module docs).
    pub fn prefix(mut self, prefix: impl Into<Vec<u8>>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Set the connect timeout.
    pub fn connect_timeout(mut self, d: Duration) -> Self {
        self.connect_timeout = d;
        self
    }

    /// Set the response timeout.
    pub fn response_timeout(mut self, d: Duration) -> Self {
        self.response_timeout = d;
        self
    }
}

enum Client {
    Single(redis::Client),
    /// Two clients: batches run on connections that neither retry nor follow redirects.
    /// redis-rs routes a node's part of a batch by its first key and, on a redirect, resends
    /// the whole part; after an `ASK` (a slot in migration) only the part's first command
    /// runs under the `ASKING` exception, so that command would write a second copy of its
    /// key on the migration's target while the key still lives on its source. A batch that
    /// meets a redirect fails instead (and retires its connection, see
    /// [`breaks_connection`]); single-key reads and scans follow redirects as usual.
    Cluster {
        reads: ClusterClient,
        batches: Box<ClusterClient>,
    },
}

/// What a pooled connection is for (each kind has its own pool).
#[derive(Clone, Copy)]
enum Use {
    /// Single commands: loads and scans.
    Read = 0,
    /// Pipelines: write batches and chunked reads.
    Batch = 1,
}

enum Conn {
    Single(NodeConn),
    Cluster(Box<ClusterConn>),
}

/// Send a pipeline and read its replies, stopping at the first failed read (see [`NodeConn`]).
fn pipeline_until_failure(
    con: &mut redis::Connection,
    cmd: &[u8],
    offset: usize,
    count: usize,
) -> RedisResult<Vec<Value>> {
    con.send_packed_command(cmd)?;
    let mut replies = Vec::with_capacity(count);
    let mut read = 0;
    while read < offset + count {
        match con.recv_response()? {
            // RESP3 push data is not a reply.
            Value::Push { .. } => continue,
            reply => {
                if read >= offset {
                    replies.push(reply);
                }
                read += 1;
            }
        }
    }
    Ok(replies)
}

/// A connection to one node (the single node, or one of a cluster's) that stops at the first
/// failed read or write.
///
/// redis-rs reads every reply of a pipeline even after a read failed (so that the connection
/// stays in step), and each read waits up to the response timeout: a server that stops
/// answering held a batch of n commands for n timeouts (a write-behind batch of 512 at the
/// default 2 s: 17 minutes, with `flush` waiting behind it); redis-rs's cluster client also
/// retries on the same connection after a timeout. Here the first failed read ends the
/// pipeline, and once a call failed (an I/O or protocol error, not a server's error reply such
/// as MOVED, which redis-rs must see to follow it) the connection is out of step: every later
/// call fails at once with that error without touching the socket, and the store retires the
/// connection (see [`breaks_connection`]). redis-rs 1.8.1 does not consult a cluster node's
/// `is_open`; it is false here anyway. The store never sends `MULTI` pipelines, whose leading
/// replies this does not interpret.
struct NodeConn {
    con: redis::Connection,
    failed: Option<RedisError>,
}

impl NodeConn {
    fn run<T>(
        &mut self,
        f: impl FnOnce(&mut redis::Connection) -> RedisResult<T>,
    ) -> RedisResult<T> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let r = f(&mut self.con);
        if let Err(e) = &r
            && (e.is_io_error() || e.kind() == ErrorKind::Parse)
        {
            self.failed = Some(e.clone());
        }
        r
    }
}

impl Connect for NodeConn {
    fn connect<T: IntoConnectionInfo>(info: T, timeout: Option<Duration>) -> RedisResult<Self> {
        let con = <redis::Connection as Connect>::connect(info, timeout)?;
        // redis-rs sends a PING before it sets the response timeout; unbounded, that PING would
        // hang on a node that accepts connections but does not answer.
        con.set_read_timeout(timeout)?;
        con.set_write_timeout(timeout)?;
        Ok(NodeConn { con, failed: None })
    }

    fn send_packed_command(&mut self, cmd: &[u8]) -> RedisResult<()> {
        self.run(|c| c.send_packed_command(cmd))
    }

    fn set_write_timeout(&self, dur: Option<Duration>) -> RedisResult<()> {
        self.con.set_write_timeout(dur)
    }

    fn set_read_timeout(&self, dur: Option<Duration>) -> RedisResult<()> {
        self.con.set_read_timeout(dur)
    }

    fn recv_response(&mut self) -> RedisResult<Value> {
        self.run(|c| c.recv_response())
    }
}

impl ConnectionLike for NodeConn {
    fn req_packed_command(&mut self, cmd: &[u8]) -> RedisResult<Value> {
        self.run(|c| c.req_packed_command(cmd))
    }

    fn req_packed_commands(
        &mut self,
        cmd: &[u8],
        offset: usize,
        count: usize,
    ) -> RedisResult<Vec<Value>> {
        self.run(|c| pipeline_until_failure(c, cmd, offset, count))
    }

    fn req_command(&mut self, cmd: &redis::Cmd) -> RedisResult<Value> {
        self.run(|c| c.req_command(cmd))
    }

    fn get_db(&self) -> i64 {
        self.con.get_db()
    }

    fn check_connection(&mut self) -> bool {
        redis::cmd("PING").query::<String>(self).is_ok()
    }

    fn is_open(&self) -> bool {
        self.failed.is_none() && self.con.is_open()
    }
}

/// A cluster connection, and the slot map its batches are split by.
///
/// The store sends each node's part of a batch itself, as a plain pipeline through
/// `req_packed_commands`: redis-rs's cluster pipelines (`cluster_pipe`) only run on
/// `ClusterConnection<redis::Connection>`, whose node connections read every reply.
struct ClusterConn {
    con: ClusterConnection<NodeConn>,
    /// Each slot's primary as an index (`NO_OWNER` when no node serves it).
    owners: Vec<u16>,
}

const SLOTS: usize = 16384;
const NO_OWNER: u16 = u16::MAX;

impl ClusterConn {
    /// Run `cmds` (each with its key as first argument) as one pipeline per node, the nodes one
    /// after another, each node's commands in their order; the replies in `cmds`' order.
    /// redis-rs routes each part by its first key; on a batch connection it neither retries
    /// nor follows a redirect (see [`Client::Cluster`]), so a part built from a stale map fails
    /// on the keys its node lost, which retires the connection.
    fn pipeline(&mut self, cmds: &[redis::Cmd]) -> RedisResult<Vec<Value>> {
        let owner = |c: &redis::Cmd| match c.args_iter().nth(1) {
            Some(redis::Arg::Simple(key)) => self.owners[usize::from(key_slot(key))],
            _ => NO_OWNER,
        };
        let mut order: Vec<(u16, usize)> = cmds.iter().map(owner).zip(0..).collect();
        // Stable: a node's commands keep their order.
        order.sort_by_key(|&(node, _)| node);
        let mut replies = vec![Value::Nil; cmds.len()];
        for part in order.chunk_by(|a, b| a.0 == b.0) {
            let mut packed = Vec::new();
            for &(_, i) in part {
                cmds[i].write_packed_command(&mut packed);
            }
            let got = self.con.req_packed_commands(&packed, 0, part.len())?;
            if got.len() != part.len() {
                return Err(RedisError::from((
                    ErrorKind::Client,
                    "redis: a node answered a pipeline with the wrong number of replies",
                )));
            }
            for (&(_, i), reply) in part.iter().zip(got) {
                replies[i] = reply;
            }
        }
        Ok(replies)
    }
}

/// Each slot's primary as an index, from a `CLUSTER SLOTS` reply: ranges of
/// `[start, end, [host, port, ..], replicas..]`.
fn slot_owners(reply: Value) -> Vec<u16> {
    let mut owners = vec![NO_OWNER; SLOTS];
    let mut primaries: Vec<Vec<Value>> = Vec::new();
    let Value::Array(ranges) = reply else {
        return owners;
    };
    for range in ranges {
        let Value::Array(range) = range else { continue };
        let [
            Value::Int(start),
            Value::Int(end),
            Value::Array(primary),
            ..,
        ] = &range[..]
        else {
            continue;
        };
        // Host and port name the node (the id that may follow is missing on old servers).
        let node = primary.iter().take(2).cloned().collect::<Vec<_>>();
        let index = match primaries.iter().position(|p| *p == node) {
            Some(i) => i,
            None => {
                primaries.push(node);
                primaries.len() - 1
            }
        };
        let (Ok(index), Ok(start), Ok(end)) = (
            u16::try_from(index),
            usize::try_from(*start),
            usize::try_from(*end),
        ) else {
            continue;
        };
        for owner in owners.iter_mut().take(end.saturating_add(1)).skip(start) {
            *owner = index;
        }
    }
    owners
}

/// A key's cluster slot: CRC16 (XMODEM) of its hash tag (the bytes between the first `{` and
/// the next `}`, if any) or of the whole key, modulo 16384.
fn key_slot(key: &[u8]) -> u16 {
    let tagged = key.iter().position(|&b| b == b'{').and_then(|open| {
        let rest = &key[open + 1..];
        let close = rest.iter().position(|&b| b == b'}')?;
        (close > 0).then(|| &rest[..close])
    });
    let mut crc = 0u16;
    for &b in tagged.unwrap_or(key) {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc % SLOTS as u16
}

/// A store on Redis or Redis Cluster. Thread-safe; each concurrent call uses its own pooled
/// connection.
///
/// ```no_run
/// use cogwheel::store::{BackingStore, RedisConfig, RedisStore, WriteOp};
///
/// let store: RedisStore<String, String> =
///     RedisStore::open(RedisConfig::single("redis://127.0.0.1:6379").prefix("app:")).unwrap();
/// let (k, v) = ("k".to_string(), "v".to_string());
/// store.write_batch(&[WriteOp::Put { key: &k, value: &v, expires_at: None }]).unwrap();
/// assert_eq!(store.load(&k).unwrap().unwrap().value, v);
/// ```
pub struct RedisStore<K, V, C: Codec = PostcardCodec> {
    client: Client,
    config: RedisConfig,
    codec: C,
    /// Idle connections, by [`Use`].
    idle: [Mutex<Vec<Conn>>; 2],
    _types: PhantomData<Types<K, V>>,
}

// The store owns no K or V; this marker keeps it Send + Sync whatever they are.
type Types<K, V> = fn(K, V) -> (K, V);

impl<K, V, C: Codec> fmt::Debug for RedisStore<K, V, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("urls", &self.config.urls)
            .field("cluster", &self.config.cluster)
            .field("prefix", &String::from_utf8_lossy(&self.config.prefix))
            .finish()
    }
}

impl<K, V> RedisStore<K, V, PostcardCodec> {
    /// Connect with `config` and the default codec. Fails (kind `Fail`) when the URL is invalid
    /// or no connection can be made now; once open, the store reconnects by itself.
    pub fn open(config: RedisConfig) -> Result<Self, StoreError> {
        Self::open_with_codec(config, PostcardCodec::new())
    }

    /// A single node at `url`, default settings.
    pub fn connect(url: &str) -> Result<Self, StoreError> {
        Self::open(RedisConfig::single(url))
    }

    /// A cluster reached through the seed nodes `urls`, default settings.
    pub fn connect_cluster<S: Into<String>>(
        urls: impl IntoIterator<Item = S>,
    ) -> Result<Self, StoreError> {
        Self::open(RedisConfig::cluster(urls))
    }
}

/// What a failed command means for the connection that ran it. A cluster redirect (MOVED,
/// ASK) or a cluster-state error also retires the connection: the store splits batches by its
/// own copy of the slot map, so a connection whose map went stale (after a resharding or a
/// failover) would fail every batch touching the moved slots; a new one reads the current map.
fn breaks_connection(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_timeout()
        || e.is_unrecoverable_error()
        || e.is_cluster_error()
}

fn before_send(e: &RedisError) -> bool {
    e.is_connection_refusal()
        || matches!(e.kind(), ErrorKind::InvalidClientConfig | ErrorKind::Client)
}

fn check_url(url: &str) -> Result<(), StoreError> {
    if url.starts_with("rediss://") && !cfg!(feature = "redis-tls") {
        return Err(StoreError::fail(format!(
            "redis: {} needs TLS; build cogwheel with the `redis-tls` feature",
            redact(url)
        )));
    }
    Ok(())
}

/// A URL with its password replaced, for error messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let userinfo = &url[s + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{}{user}:***{}", &url[..s + 3], &url[at..])
        }
        _ => url.to_string(),
    }
}

/// Escape glob metacharacters so the prefix matches itself literally in `SCAN MATCH`.
fn glob_escape(prefix: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(prefix.len() + 2);
    for &b in prefix {
        if matches!(b, b'*' | b'?' | b'[' | b']' | b'\\') {
            out.push(b'\\');
        }
        out.push(b);
    }
    out.push(b'*');
    out
}

/// The longest `PX` sent: Redis refuses an expiry whose absolute time passes `i64::MAX`
/// milliseconds, so a very long TTL would fail every write of its batch. (Capping changes
/// nothing readers see: the stored record carries its exact deadline.)
const MAX_PX: u64 = 1 << 62;

/// Milliseconds left until `deadline` (rounded up, at most `MAX_PX`), or `None` if it has
/// passed.
fn ttl_millis(deadline: SystemTime, now: SystemTime) -> Option<u64> {
    let left = deadline.duration_since(now).ok().filter(|d| !d.is_zero())?;
    let ms = left.as_nanos().div_ceil(1_000_000);
    Some(u64::try_from(ms).unwrap_or(u64::MAX).clamp(1, MAX_PX))
}

/// The primaries of a cluster, from `CLUSTER NODES`: `(host, port)` of every master that
/// serves slots. A master only suspected by one node (`fail?`) is kept: it may well be
/// serving, and if it is not, scanning it fails. A master the cluster agrees has failed
/// (`fail`) but still holds slots is an error: its records cannot be read, and a scan that
/// skipped them would look complete.
fn parse_primaries(nodes: &str) -> Result<Vec<(String, u16)>, StoreError> {
    let mut out = Vec::new();
    for line in nodes.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 9 {
            continue; // no slots
        }
        let flags = f[2];
        if !flags.split(',').any(|x| x == "master") {
            continue;
        }
        if flags.split(',').any(|x| x == "fail") {
            return Err(StoreError::fail(format!(
                "redis: primary {} has failed and holds slots {}; its records cannot be scanned",
                f[1],
                f[8..].join(" ")
            )));
        }
        let addr = f[1].split(['@', ',']).next().unwrap_or("");
        if let Some((host, port)) = addr.rsplit_once(':')
            && let Ok(port) = port.parse()
        {
            out.push((host.trim_matches(['[', ']']).to_string(), port));
        }
    }
    Ok(out)
}

impl<K, V, C: Codec> RedisStore<K, V, C> {
    /// Connect with `config` and `codec`.
    pub fn open_with_codec(config: RedisConfig, codec: C) -> Result<Self, StoreError> {
        if config.urls.is_empty() {
            return Err(StoreError::fail("redis: no URL given"));
        }
        for u in &config.urls {
            check_url(u)?;
        }
        let bad_url = |e: RedisError| {
            StoreError::fail(format!("redis: invalid URL {}", redact(&config.urls[0])))
                .with_source(e)
        };
        let client = if config.cluster {
            let build = |retries| {
                ClusterClient::builder(config.urls.iter().map(String::as_str))
                    .connection_timeout(config.connect_timeout)
                    .response_timeout(config.response_timeout)
                    .retries(retries)
                    .build()
                    .map_err(bad_url)
            };
            Client::Cluster {
                reads: build(config.cluster_retries)?,
                batches: Box::new(build(0)?),
            }
        } else {
            if config.urls.len() != 1 {
                return Err(StoreError::fail(
                    "redis: a single-node store takes exactly one URL (use RedisConfig::cluster)",
                ));
            }
            Client::Single(redis::Client::open(config.urls[0].as_str()).map_err(bad_url)?)
        };
        let store = RedisStore {
            client,
            config,
            codec,
            idle: [Mutex::new(Vec::new()), Mutex::new(Vec::new())],
            _types: PhantomData,
        };
        let conn = store.new_conn(Use::Read)?;
        store.put_back(Use::Read, conn);
        Ok(store)
    }

    /// The configuration the store was opened with.
    pub fn config(&self) -> &RedisConfig {
        &self.config
    }

    fn new_conn(&self, kind: Use) -> Result<Conn, StoreError> {
        let cfg = &self.config;
        let fail = |e: RedisError| {
            StoreError::fail(format!("redis: cannot connect to {}", redact(&cfg.urls[0])))
                .with_source(e)
        };
        match &self.client {
            Client::Single(c) => {
                let con = c
                    .get_connection_with_timeout(cfg.connect_timeout)
                    .map_err(fail)?;
                con.set_read_timeout(Some(cfg.response_timeout))
                    .map_err(fail)?;
                con.set_write_timeout(Some(cfg.response_timeout))
                    .map_err(fail)?;
                Ok(Conn::Single(NodeConn { con, failed: None }))
            }
            Client::Cluster { reads, batches } => {
                let c = match kind {
                    Use::Read => reads,
                    Use::Batch => batches,
                };
                // `get_generic_connection` is doc(hidden), outside semver: Cargo.toml keeps
                // redis below 1.9; recheck it (and `NodeConn`) on an upgrade.
                let con = c.get_generic_connection::<NodeConn>().map_err(fail)?;
                // redis-rs sets no write timeout on cluster nodes by default.
                con.set_write_timeout(Some(cfg.response_timeout))
                    .map_err(fail)?;
                let mut con = ClusterConn {
                    con,
                    owners: Vec::new(),
                };
                let slots = con
                    .con
                    .route_command(
                        redis::cmd("CLUSTER").arg("SLOTS"),
                        RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random),
                    )
                    .map_err(fail)?;
                con.owners = slot_owners(slots);
                Ok(Conn::Cluster(Box::new(con)))
            }
        }
    }

    /// The pool of `kind`'s idle connections: one for all on a single node, where both kinds
    /// of connection are the same.
    fn pool(&self, kind: Use) -> &Mutex<Vec<Conn>> {
        match self.client {
            Client::Single(_) => &self.idle[0],
            Client::Cluster { .. } => &self.idle[kind as usize],
        }
    }

    fn take(&self, kind: Use) -> Result<Conn, StoreError> {
        let pooled = self
            .pool(kind)
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        match pooled {
            Some(c) => Ok(c),
            None => self.new_conn(kind),
        }
    }

    fn put_back(&self, kind: Use, conn: Conn) {
        let mut idle = self
            .pool(kind)
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if idle.len() < self.config.max_idle {
            idle.push(conn);
        }
    }

    /// Run `f` on a pooled connection; keep the connection unless the error broke it.
    fn with_conn<T>(
        &self,
        kind: Use,
        f: impl FnOnce(&mut Conn) -> Result<T, RedisError>,
    ) -> Result<T, Result<RedisError, StoreError>> {
        let mut conn = self.take(kind).map_err(Err)?;
        match f(&mut conn) {
            Ok(v) => {
                self.put_back(kind, conn);
                Ok(v)
            }
            Err(e) => {
                if !breaks_connection(&e) {
                    self.put_back(kind, conn);
                }
                Err(Ok(e))
            }
        }
    }

    fn key(&self, key: &K) -> Result<Vec<u8>, StoreError>
    where
        K: Serialize,
    {
        let k = self.codec.encode_key(key)?;
        let mut out = Vec::with_capacity(self.config.prefix.len() + k.len());
        out.extend_from_slice(&self.config.prefix);
        out.extend_from_slice(&k);
        Ok(out)
    }

    fn decode(&self, bytes: &[u8], now: SystemTime) -> Result<Option<Stored<V>>, StoreError>
    where
        V: DeserializeOwned,
    {
        let st: Stored<V> = self.codec.decode_value(bytes)?;
        // Redis expires at millisecond resolution; never serve past the exact deadline.
        Ok(if st.expires_at.is_some_and(|t| t <= now) {
            None
        } else {
            Some(st)
        })
    }

    /// One `GET` of a full (prefixed) key, on a pooled connection.
    fn get_raw(&self, k: &[u8]) -> Result<Option<Vec<u8>>, Result<RedisError, StoreError>> {
        self.with_conn(Use::Read, |c| {
            let cmd = redis::cmd("GET").arg(k).clone();
            match c {
                Conn::Single(con) => cmd.query(con),
                Conn::Cluster(con) => cmd.query(&mut con.con),
            }
        })
    }

    /// Read every key (in chunks), in one pipeline per chunk. A key that is not a string
    /// (another client's hash or list under the prefix) is not a record of this store: it
    /// reads as absent, instead of failing the chunk (and the scan) with WRONGTYPE. A single
    /// node reads each key with a one-key `MGET`, which answers nil for such a key; a cluster
    /// reads with `GET` and, if a chunk gets an error reply, reads that chunk again key by key.
    fn get_many(&self, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        let mut out = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(self.config.scan_count.max(1)) {
            let got = self.with_conn(Use::Batch, |c| match c {
                Conn::Single(con) => {
                    let mut p = redis::pipe();
                    for k in chunk {
                        p.cmd("MGET").arg(k);
                    }
                    let got = p.query::<Vec<Vec<Option<Vec<u8>>>>>(con)?;
                    Ok(got
                        .into_iter()
                        .map(|one| one.into_iter().next().flatten())
                        .collect())
                }
                Conn::Cluster(con) => {
                    let gets: Vec<redis::Cmd> = chunk
                        .iter()
                        .map(|k| {
                            let mut c = redis::cmd("GET");
                            c.arg(k);
                            c
                        })
                        .collect();
                    Ok(redis::FromRedisValue::from_redis_values(
                        con.pipeline(&gets)?,
                    )?)
                }
            });
            let got = match got {
                // A server's error reply (not a broken connection): which key? Read again one
                // by one.
                Err(Ok(e)) if !breaks_connection(&e) => chunk
                    .iter()
                    .map(|k| {
                        self.get_raw(k).or_else(|e| match e {
                            Ok(e) if e.code() == Some("WRONGTYPE") => Ok(None),
                            e => Err(e),
                        })
                    })
                    .collect::<Result<Vec<_>, _>>(),
                got => got,
            }
            .map_err(|e| read_error("scan", e))?;
            out.extend(got);
        }
        Ok(out)
    }

    /// Every key under the prefix, from `SCAN` on the node (or on every primary), handed to
    /// `on_page` one page at a time (each key once, though SCAN may repeat it) until it
    /// answers `false`: a scan that stops early (a preload that filled the cache) does not
    /// enumerate the rest of the keyspace first.
    fn scan_pages(
        &self,
        on_page: &mut dyn FnMut(Vec<Vec<u8>>) -> Result<bool, StoreError>,
    ) -> Result<(), StoreError> {
        let pattern = glob_escape(&self.config.prefix);
        let count = self.config.scan_count.max(1);
        let mut seen = HashSet::new();
        let mut page = |batch: Vec<Vec<u8>>| {
            let fresh: Vec<Vec<u8>> = batch
                .into_iter()
                .filter(|k| seen.insert(k.clone()))
                .collect();
            if fresh.is_empty() {
                Ok(true)
            } else {
                on_page(fresh)
            }
        };
        let scan_cmd = |cursor: u64| {
            let mut c = redis::cmd("SCAN");
            c.arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(count);
            c
        };
        // The closure's error is the connection's; what the pages' visitor says (go on,
        // stop, or its own error) is the inner result.
        self.with_conn(Use::Read, |c| {
            match c {
                Conn::Single(con) => {
                    let mut cursor = 0u64;
                    loop {
                        let (next, batch): (u64, Vec<Vec<u8>>) = scan_cmd(cursor).query(con)?;
                        match page(batch) {
                            Ok(true) => {}
                            other => return Ok(other.map(|_| ())),
                        }
                        if next == 0 {
                            break;
                        }
                        cursor = next;
                    }
                }
                Conn::Cluster(con) => {
                    let nodes: String =
                        redis::FromRedisValue::from_redis_value(con.con.route_command(
                            redis::cmd("CLUSTER").arg("NODES"),
                            RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random),
                        )?)?;
                    let primaries = match parse_primaries(&nodes) {
                        Ok(p) => p,
                        Err(e) => return Ok(Err(e)),
                    };
                    for (host, port) in primaries {
                        let mut cursor = 0u64;
                        loop {
                            let route = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                                host: host.clone(),
                                port,
                            });
                            let (next, batch): (u64, Vec<Vec<u8>>) =
                                redis::FromRedisValue::from_redis_value(
                                    con.con.route_command(&scan_cmd(cursor), route)?,
                                )?;
                            match page(batch) {
                                Ok(true) => {}
                                other => return Ok(other.map(|_| ())),
                            }
                            if next == 0 {
                                break;
                            }
                            cursor = next;
                        }
                    }
                }
            }
            Ok(Ok(()))
        })
        .map_err(|e| read_error("scan", e))?
    }
}

fn read_error(what: &str, e: Result<RedisError, StoreError>) -> StoreError {
    match e {
        Ok(e) => StoreError::fail(format!("redis: {what} failed")).with_source(e),
        Err(e) => e,
    }
}

/// How a failed batch left the store. A cluster pipeline is sent node by node, so a refusal
/// from one node may come after another node applied its part: only a single node's refusal
/// proves that nothing was sent.
fn write_error(e: Result<RedisError, StoreError>, cluster: bool) -> StoreError {
    match e {
        Ok(e) if before_send(&e) && !cluster => {
            StoreError::fail("redis: batch not sent").with_source(e)
        }
        Ok(e) => {
            StoreError::unknown("redis: batch failed after it was sent; it may have been applied")
                .with_source(e)
        }
        Err(e) => e,
    }
}

impl<K, V, C> BackingStore<K, V> for RedisStore<K, V, C>
where
    K: Serialize + DeserializeOwned + 'static,
    V: Serialize + DeserializeOwned + 'static,
    C: Codec,
{
    fn load(&self, key: &K) -> Result<Option<Stored<V>>, StoreError> {
        let k = self.key(key)?;
        let bytes = self.get_raw(&k).map_err(|e| read_error("load", e))?;
        match bytes {
            None => Ok(None),
            Some(b) => self.decode(&b, SystemTime::now()),
        }
    }

    fn write_batch(&self, ops: &[WriteOp<'_, K, V>]) -> Result<(), StoreError> {
        if ops.is_empty() {
            return Ok(());
        }
        // Encode everything first: an encode error fails the batch before anything is sent.
        let now = SystemTime::now();
        let mut cmds = Vec::with_capacity(ops.len());
        for op in ops {
            let mut c;
            match *op {
                WriteOp::Put {
                    key,
                    value,
                    expires_at,
                } => {
                    let k = self.key(key)?;
                    match expires_at.map(|t| ttl_millis(t, now)) {
                        Some(None) => {
                            c = redis::cmd("DEL");
                            c.arg(k);
                        }
                        ttl => {
                            c = redis::cmd("SET");
                            c.arg(k).arg(self.codec.encode_value(value, expires_at)?);
                            if let Some(Some(ms)) = ttl {
                                c.arg("PX").arg(ms);
                            }
                        }
                    }
                }
                WriteOp::Delete { key } => {
                    c = redis::cmd("DEL");
                    c.arg(self.key(key)?);
                }
            }
            cmds.push(c);
        }
        self.with_conn(Use::Batch, |c| match c {
            Conn::Single(con) => {
                let mut p = redis::pipe();
                for cmd in &cmds {
                    p.add_command(cmd.clone()).ignore();
                }
                p.exec(con)
            }
            Conn::Cluster(con) => con.pipeline(&cmds).map(drop),
        })
        .map_err(|e| write_error(e, self.config.cluster))
    }

    fn scan(&self, visit: &mut dyn FnMut(ScanItem<K, V>) -> bool) -> Result<(), StoreError> {
        let prefix = &self.config.prefix;
        self.scan_pages(&mut |keys| {
            for chunk in keys.chunks(self.config.scan_count.max(1)) {
                let values = self.get_many(chunk)?;
                let now = SystemTime::now();
                for (k, v) in chunk.iter().zip(values) {
                    // Expired or deleted between SCAN and GET.
                    let Some(v) = v else { continue };
                    let item = match self.decode(&v, now) {
                        Ok(None) => continue, // expired
                        // SCAN matched the prefix; a server (or proxy) that ignores MATCH could
                        // still hand back a shorter key, which is not one of ours.
                        Ok(Some(stored)) => match k.strip_prefix(prefix.as_slice()) {
                            Some(k) => self.codec.decode_key(k).map(|key| (key, stored)),
                            None => continue,
                        },
                        Err(e) => Err(e),
                    };
                    if !visit(item) {
                        return Ok(false);
                    }
                }
            }
            Ok(true)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreErrorKind;

    #[test]
    fn glob_escape_quotes_metacharacters() {
        assert_eq!(
            glob_escape(b"a*b?[c]\\:"),
            b"a\\*b\\?\\[c\\]\\\\:*".to_vec()
        );
    }

    #[test]
    fn ttl_rounds_up_and_drops_the_past() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(100);
        assert_eq!(ttl_millis(now + Duration::from_micros(1), now), Some(1));
        assert_eq!(
            ttl_millis(now + Duration::from_millis(1500), now),
            Some(1500)
        );
        assert_eq!(
            ttl_millis(now + Duration::from_nanos(1_500_000_001), now),
            Some(1501)
        );
        assert_eq!(ttl_millis(now, now), None);
        let aeons = Duration::from_secs(10u64.pow(16));
        assert_eq!(
            ttl_millis(now + aeons, now),
            Some(MAX_PX),
            "capped for Redis"
        );
        assert_eq!(ttl_millis(now - Duration::from_secs(1), now), None);
    }

    #[test]
    fn primaries_come_from_cluster_nodes() {
        let nodes = "\
07c3 127.0.0.1:30001@40001 myself,master - 0 0 1 connected 0-5460
67ed 127.0.0.1:30002@40002,host2 master - 0 1 2 connected 5461-10922
292f 127.0.0.1:30003@40003 master,fail? - 0 1 3 connected 10923-16382
aa11 127.0.0.1:30004@40004 slave 07c3 0 1 1 connected
cc33 127.0.0.1:30006@40006 master,fail - 0 1 5 connected
bb22 [::1]:30005@40005 master - 0 1 4 connected 16383
";
        assert_eq!(
            parse_primaries(nodes).unwrap(),
            vec![
                ("127.0.0.1".to_string(), 30001),
                ("127.0.0.1".to_string(), 30002),
                ("127.0.0.1".to_string(), 30003),
                ("::1".to_string(), 30005)
            ],
            "a suspected master is scanned; a failed one without slots is not"
        );
        let failed = nodes.replace("master,fail?", "master,fail");
        assert!(
            parse_primaries(&failed).is_err(),
            "a failed master holding slots"
        );
    }

    #[test]
    fn a_refused_cluster_batch_may_have_been_partly_applied() {
        let refused = || {
            Ok(RedisError::from(std::io::Error::new(
                std::io::ErrorKind::ConnectionRefused,
                "refused",
            )))
        };
        assert_eq!(write_error(refused(), false).kind(), StoreErrorKind::Fail);
        assert_eq!(write_error(refused(), true).kind(), StoreErrorKind::Unknown);
    }

    #[test]
    fn key_slots_agree_with_redis_rs() {
        use redis::cluster_routing::Slot;
        assert_eq!(
            key_slot(b"123456789"),
            0x31c3,
            "the CRC16/XMODEM check value"
        );
        let keys: [&[u8]; 9] = [
            b"foo",
            b"",
            b"{user1000}.following",
            b"{user1000}.followers",
            b"{}x",
            b"a{}{b}",
            b"{a",
            b"x}{y}z",
            b"cogwheel:\x00\xff{",
        ];
        for key in keys {
            assert_eq!(
                Slot::new(key_slot(key)),
                Some(Slot::for_key(key)),
                "{key:?}"
            );
        }
        assert_eq!(
            key_slot(b"{user1000}.following"),
            key_slot(b"{user1000}.followers")
        );
    }

    #[test]
    fn slot_owners_come_from_cluster_slots() {
        let node = |host: &str, port: i64| {
            Value::Array(vec![
                Value::BulkString(host.into()),
                Value::Int(port),
                Value::BulkString(format!("id-{port}").into()),
            ])
        };
        let range = |start, end, nodes: Vec<Value>| {
            let mut r = vec![Value::Int(start), Value::Int(end)];
            r.extend(nodes);
            Value::Array(r)
        };
        let owners = slot_owners(Value::Array(vec![
            range(0, 99, vec![node("a", 1), node("r", 9)]),
            range(100, 199, vec![node("b", 2)]),
            range(300, 16383, vec![node("a", 1)]),
            Value::Nil,
        ]));
        assert_eq!(owners.len(), SLOTS);
        assert_eq!((owners[0], owners[99], owners[16383]), (0, 0, 0));
        assert_eq!((owners[100], owners[199]), (1, 1));
        assert_eq!((owners[200], owners[299]), (NO_OWNER, NO_OWNER));
        assert!(slot_owners(Value::Nil).iter().all(|&o| o == NO_OWNER));
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(redact("redis://u:secret@h:1/0"), "redis://u:***@h:1/0");
        assert_eq!(redact("redis://h:1"), "redis://h:1");
    }

    #[test]
    fn tls_without_the_feature_is_a_clear_error() {
        let r = check_url("rediss://127.0.0.1:1");
        if cfg!(feature = "redis-tls") {
            assert!(r.is_ok());
        } else {
            assert!(r.unwrap_err().message().contains("redis-tls"));
        }
    }
}
