//! The embedded durable store, on [redb](https://docs.rs/redb) (feature `redb`, on by default).
//!
//! One redb file holds two tables: `cogwheel.data` (encoded key → encoded value with its
//! deadline, see [`codec`](super::codec)) and `cogwheel.meta` (the store's format version and
//! the codec's name, written when the file is created and checked on every open). Each
//! [`write_batch`](BackingStore::write_batch) is one write transaction, committed with redb's
//! default durability (`Immediate`: durable when the commit returns).
//!
//! Expired entries are misses for `load` and are skipped by `scan`; they stay in the file until
//! overwritten, deleted, or removed by [`RedbStore::purge_expired`].

use super::codec::{Codec, PostcardCodec, peek_deadline};
use super::{BackingStore, ScanItem, StoreError, Stored, WriteOp};
use redb::{
    CommitError, Database, ReadableDatabase, ReadableTable, TableDefinition, TableError,
    TransactionError,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fmt;
use std::fs;
use std::io;
use std::marker::PhantomData;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError, RwLock};
use std::time::SystemTime;

/// The layout version of a cogwheel redb file (tables and their meaning). Bumped on any change
/// an older build could not read.
pub const STORE_FORMAT_VERSION: u32 = 1;

const DATA: TableDefinition<&[u8], &[u8]> = TableDefinition::new("cogwheel.data");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("cogwheel.meta");
const META_VERSION: &str = "format_version";
const META_CODEC: &str = "codec";

/// Why [`RedbStore::open`] failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum OpenError {
    /// Another handle (in this or another process) holds the file open.
    Locked {
        /// The file.
        path: PathBuf,
    },
    /// The file is not a readable redb database (bad magic, checksum failure, truncated).
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What redb reported.
        detail: String,
    },
    /// The file is a redb database, but not a cogwheel store (it has other tables and no
    /// cogwheel metadata); it is left untouched.
    NotACogwheelStore {
        /// The file.
        path: PathBuf,
    },
    /// The file was written with a store format this build cannot read.
    IncompatibleVersion {
        /// The file.
        path: PathBuf,
        /// The version recorded in the file.
        found: u32,
        /// The version this build reads ([`STORE_FORMAT_VERSION`]).
        expected: u32,
    },
    /// The file was written with another codec (its values would not decode).
    IncompatibleCodec {
        /// The file.
        path: PathBuf,
        /// The codec recorded in the file.
        found: String,
        /// The codec this store was opened with.
        expected: &'static str,
    },
    /// The file uses an older redb on-disk format that must be upgraded with redb's own tools.
    RedbUpgradeRequired {
        /// The file.
        path: PathBuf,
        /// The redb file format version found.
        version: u8,
    },
    /// An I/O error (permissions, missing directory, disk full, ...).
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// Any other error from redb.
    Redb {
        /// The file.
        path: PathBuf,
        /// The error.
        source: redb::Error,
    },
}

impl fmt::Display for OpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpenError::Locked { path } => write!(
                f,
                "cannot open {}: the file is locked (already open in this or another process)",
                path.display()
            ),
            OpenError::Corrupt { path, detail } => {
                write!(
                    f,
                    "cannot open {}: corrupt or not a redb file: {detail}",
                    path.display()
                )
            }
            OpenError::NotACogwheelStore { path } => write!(
                f,
                "cannot open {}: a redb database, but not a cogwheel store (no cogwheel metadata)",
                path.display()
            ),
            OpenError::IncompatibleVersion {
                path,
                found,
                expected,
            } => write!(
                f,
                "cannot open {}: incompatible store format version {found} (this build reads \
                 version {expected})",
                path.display()
            ),
            OpenError::IncompatibleCodec {
                path,
                found,
                expected,
            } => write!(
                f,
                "cannot open {}: written with codec {found:?}, opened with codec {expected:?}",
                path.display()
            ),
            OpenError::RedbUpgradeRequired { path, version } => write!(
                f,
                "cannot open {}: redb file format {version} needs an upgrade first",
                path.display()
            ),
            OpenError::Io { path, source } => write!(f, "cannot open {}: {source}", path.display()),
            OpenError::Redb { path, source } => {
                write!(f, "cannot open {}: {source}", path.display())
            }
        }
    }
}

impl std::error::Error for OpenError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            OpenError::Io { source, .. } => Some(source),
            OpenError::Redb { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl From<OpenError> for StoreError {
    /// An open error as a store error of kind `Fail`, with the same message.
    fn from(e: OpenError) -> Self {
        StoreError::fail(e.to_string())
    }
}

impl OpenError {
    fn from_redb(path: &Path, e: redb::Error) -> Self {
        let path = path.to_path_buf();
        match e {
            redb::Error::DatabaseAlreadyOpen => OpenError::Locked { path },
            redb::Error::Corrupted(detail) => OpenError::Corrupt { path, detail },
            redb::Error::UpgradeRequired(version) => {
                OpenError::RedbUpgradeRequired { path, version }
            }
            redb::Error::Io(source) if source.kind() == io::ErrorKind::UnexpectedEof => {
                OpenError::Corrupt {
                    path,
                    detail: format!("file too short: {source}"),
                }
            }
            // redb reports a bad magic number (not a redb file at all) as InvalidData.
            redb::Error::Io(source) if source.kind() == io::ErrorKind::InvalidData => {
                OpenError::Corrupt {
                    path,
                    detail: source.to_string(),
                }
            }
            redb::Error::Io(source) => OpenError::Io { path, source },
            source => OpenError::Redb { path, source },
        }
    }
}

// The store owns no K or V; this marker keeps it Send + Sync whatever they are.
type Types<K, V> = fn(K, V) -> (K, V);

/// A durable store in one redb file.
///
/// ```
/// use cogwheel::store::{BackingStore, RedbStore, WriteOp};
///
/// let dir = tempfile::tempdir().unwrap();
/// let path = dir.path().join("profiles.redb");
/// let store: RedbStore<String, Vec<u32>> = RedbStore::open(&path).unwrap();
/// let k = "alice".to_string();
/// store.write_batch(&[WriteOp::Put { key: &k, value: &vec![1, 2], expires_at: None }]).unwrap();
/// drop(store);
///
/// let store: RedbStore<String, Vec<u32>> = RedbStore::open(&path).unwrap();
/// assert_eq!(store.load(&k).unwrap().unwrap().value, vec![1, 2]);
/// // A second handle on the same file is refused while the first is open.
/// let err = RedbStore::<String, Vec<u32>>::open(&path).unwrap_err();
/// assert!(err.to_string().contains("locked"), "{err}");
/// ```
pub struct RedbStore<K, V, C: Codec = PostcardCodec> {
    slot: RwLock<Slot>,
    opener: Opener,
    codec: C,
    path: PathBuf,
    _types: PhantomData<Types<K, V>>,
}

/// How the store (re)opens its database: `Database::create` in production; tests pass a
/// backend that injects I/O errors.
type Opener = Box<dyn Fn(&Path) -> Result<Database, redb::Error> + Send + Sync>;

/// The open database, if any, and how often it has been replaced.
struct Slot {
    db: Option<Database>,
    generation: u64,
    reopens: u64,
}

/// A failed step: the error to report, and whether it came from redb's storage layer (I/O, or
/// the `PreviousIo` latch redb sets after one), after which the handle must be reopened.
struct Failed {
    error: StoreError,
    poisoned: bool,
}

impl From<StoreError> for Failed {
    fn from(error: StoreError) -> Self {
        Failed {
            error,
            poisoned: false,
        }
    }
}

/// Entries `scan` reads per read transaction: bounded memory, and no read transaction stays
/// open while the visitor runs (a long one would pin old pages in the file).
const SCAN_CHUNK: usize = 1024;

impl<K, V, C: Codec> fmt::Debug for RedbStore<K, V, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedbStore")
            .field("path", &self.path)
            .field("codec", &self.codec)
            .finish()
    }
}

impl<K, V> RedbStore<K, V, PostcardCodec> {
    /// Open the store at `path`, creating the file (and its metadata) if it does not exist.
    /// A new file appears at `path` only once it is complete, so a process killed while it
    /// creates one leaves nothing there (see `create_new`).
    ///
    /// Fails with a clear [`OpenError`] when the file is locked by another handle, corrupt, not
    /// a cogwheel store, or written by an incompatible format version or codec.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, OpenError> {
        Self::open_with_codec(path, PostcardCodec::new())
    }
}

fn storage(context: &str, e: impl Into<redb::Error>) -> Failed {
    let e = e.into();
    // Errors after which redb refuses the handle for good and asks to reopen it: an I/O
    // error, and the state a panic inside a commit leaves (the allocator state discarded, or
    // a poisoned lock). Reopening repairs the file if needed.
    let poisoned = match e {
        redb::Error::Io(_) | redb::Error::PreviousIo | redb::Error::LockPoisoned(_) => true,
        // At the start of a write, corruption means the allocator state was discarded and
        // the handle must be reopened; elsewhere it is a bad page, which reopening does not
        // mend (and reopening on every read of it would stall the store).
        redb::Error::Corrupted(_) => context == "begin write",
        _ => false,
    };
    Failed {
        error: StoreError::fail(format!("redb: {context}")).with_source(e),
        poisoned,
    }
}

fn lock_err<T>(_: PoisonError<T>) -> StoreError {
    StoreError::fail("redb: store lock poisoned by a panic")
}

impl<K, V, C: Codec> RedbStore<K, V, C> {
    /// Open (or create) the store at `path` with a given codec. The codec's
    /// [`name`](Codec::name) is recorded in a new file and must match on later opens.
    pub fn open_with_codec(path: impl AsRef<Path>, codec: C) -> Result<Self, OpenError> {
        Self::open_with_opener(path.as_ref(), codec, Box::new(|p| Ok(Database::create(p)?)))
    }

    fn open_with_opener(path: &Path, codec: C, opener: Opener) -> Result<Self, OpenError> {
        create_new(path, &opener, codec.name())?;
        let db = opener(path).map_err(|e| OpenError::from_redb(path, e))?;
        check_or_init_meta(&db, path, codec.name())?;
        Ok(RedbStore {
            slot: RwLock::new(Slot {
                db: Some(db),
                generation: 0,
                reopens: 0,
            }),
            opener,
            codec,
            path: path.to_path_buf(),
            _types: PhantomData,
        })
    }

    /// How many times the store has reopened its file after a storage error.
    ///
    /// After an I/O error redb refuses every later operation on the same handle
    /// (`PreviousIo`, "close and re-open the database"), and after a panic inside a commit
    /// every later write transaction (the allocator state discarded, or a poisoned lock). The
    /// store reopens the file by itself: the call
    /// that hit the error reports it, the handle is dropped and the file reopened (redb repairs
    /// it if needed), and later calls use the new handle. If the reopen fails, every call tries
    /// again, failing with `Fail` until it works.
    pub fn reopens(&self) -> u64 {
        self.slot.read().map(|s| s.reopens).unwrap_or(0)
    }

    /// Run `f` on the open database; after a storage error, reopen it (see
    /// [`reopens`](Self::reopens)).
    fn with_db<T>(&self, f: impl FnOnce(&Database) -> Result<T, Failed>) -> Result<T, StoreError> {
        let slot = self.slot.read().map_err(lock_err)?;
        let slot = if slot.db.is_some() {
            slot
        } else {
            // A previous reopen failed: try again before running `f`.
            let generation = slot.generation;
            drop(slot);
            self.reopen(generation)?;
            self.slot.read().map_err(lock_err)?
        };
        let db = slot
            .db
            .as_ref()
            .ok_or_else(|| StoreError::fail("redb: store is closed"))?;
        let generation = slot.generation;
        let result = f(db);
        drop(slot);
        result.map_err(|Failed { error, poisoned }| {
            if poisoned {
                // The failed call reports its own error; a failed reopen is retried (and
                // reported) by the next call.
                let _ = self.reopen(generation);
            }
            error
        })
    }

    /// Replace the database handle, unless another thread already did since `generation`.
    fn reopen(&self, generation: u64) -> Result<(), StoreError> {
        let mut slot = self.slot.write().map_err(lock_err)?;
        if slot.generation != generation {
            return if slot.db.is_some() {
                Ok(())
            } else {
                Err(StoreError::fail("redb: store unavailable (reopen failed)"))
            };
        }
        slot.generation += 1;
        // Drop the old handle first: it holds the file lock.
        slot.db = None;
        match (self.opener)(&self.path) {
            Ok(db) => {
                slot.db = Some(db);
                slot.reopens += 1;
                Ok(())
            }
            Err(e) => Err(StoreError::fail(format!(
                "redb: cannot reopen {} after a storage error",
                self.path.display()
            ))
            .with_source(e)),
        }
    }

    /// The file this store lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The codec.
    pub fn codec(&self) -> &C {
        &self.codec
    }

    /// Delete every entry whose deadline is at or before `now`; returns how many were removed.
    /// Records whose header cannot be read are kept (and reported by `load`).
    ///
    /// It reads the table a chunk at a time in read transactions (which do not block writers)
    /// and deletes each chunk's expired records in a short write transaction of their own, so
    /// writes to the store wait for one chunk at most, not for a pass over the whole table. A
    /// record rewritten in between is judged again before it is deleted.
    pub fn purge_expired(&self, now: SystemTime) -> Result<usize, StoreError> {
        let expired = |v: &[u8]| matches!(peek_deadline(v), Ok(Some(t)) if t <= now);
        let mut removed = 0;
        let mut after: Option<Vec<u8>> = None;
        loop {
            let (doomed, last, full) = self.with_db(|db| {
                let txn = db.begin_read().map_err(read_err)?;
                let table = txn.open_table(DATA).map_err(|e| storage("open table", e))?;
                let lower = match &after {
                    Some(k) => Bound::Excluded(k.as_slice()),
                    None => Bound::Unbounded,
                };
                let range = table
                    .range::<&[u8]>((lower, Bound::Unbounded))
                    .map_err(|e| storage("iterate", e))?;
                let (mut doomed, mut last, mut seen) = (Vec::new(), None, 0);
                for item in range.take(SCAN_CHUNK) {
                    let (k, v) = item.map_err(|e| storage("iterate", e))?;
                    seen += 1;
                    if expired(v.value()) {
                        doomed.push(k.value().to_vec());
                    }
                    last = Some(k.value().to_vec());
                }
                Ok((doomed, last, seen == SCAN_CHUNK))
            })?;
            if !doomed.is_empty() {
                removed += self.with_db(|db| {
                    let txn = db.begin_write().map_err(|e| storage("begin write", e))?;
                    let mut gone = 0;
                    {
                        let mut table =
                            txn.open_table(DATA).map_err(|e| storage("open table", e))?;
                        for k in &doomed {
                            let still = table
                                .get(k.as_slice())
                                .map_err(|e| storage("read", e))?
                                .is_some_and(|v| expired(v.value()));
                            if still {
                                table
                                    .remove(k.as_slice())
                                    .map_err(|e| storage("purge", e))?;
                                gone += 1;
                            }
                        }
                    }
                    commit(txn)?;
                    Ok(gone)
                })?;
            }
            match last {
                Some(k) if full => after = Some(k),
                _ => return Ok(removed),
            }
        }
    }
}

/// Serializes [`create_new`] within the process (its temporary name is per process).
static CREATING: Mutex<()> = Mutex::new(());

/// If nothing exists at `path`, create a new store there such that a crash at any moment leaves
/// either nothing at `path` or a complete, initialized store.
///
/// redb initializes a new database in place: it grows the empty file, writes the header, and
/// writes the magic number last; a non-empty file without the magic number is refused by every
/// later open ("magic number mismatch"). A process killed in between would leave a store that
/// can never be opened again. So the new database (with its metadata) is built under a
/// temporary name in the same directory, `.<name>.cogwheel-new-<pid>`, and hard-linked to
/// `path` only when complete; the link fails rather than replace a file another process
/// created meanwhile. A temporary file left by a killed process is removed by the next creation
/// from a process with the same id (no live process shares it), or may be deleted by hand.
///
/// An existing file (even an empty one) is left to the caller's open, as before. Where hard
/// links are unavailable the store is created in place, as redb does.
fn create_new(path: &Path, opener: &Opener, codec: &'static str) -> Result<(), OpenError> {
    let io_err = |source| OpenError::Io {
        path: path.to_path_buf(),
        source,
    };
    let exists = |p: &Path| match fs::symlink_metadata(p) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io_err(e)),
    };
    if exists(path)? {
        return Ok(());
    }
    let Some(name) = path.file_name() else {
        return Ok(());
    };
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".cogwheel-new-{}", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    let _one = CREATING.lock().unwrap_or_else(PoisonError::into_inner);
    if exists(path)? {
        return Ok(()); // another thread of this process created it meanwhile
    }
    // Left by a killed process with our id, or a failed creation: never in use.
    match fs::remove_file(&tmp) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(io_err(e)),
        _ => {}
    }
    let built = (|| {
        let db = opener(&tmp).map_err(|e| OpenError::from_redb(path, e))?;
        check_or_init_meta(&db, path, codec)?;
        drop(db); // closed cleanly: the linked file needs no repair
        match fs::hard_link(&tmp, path) {
            Ok(()) => sync_parent(path).map_err(io_err),
            // Another process created it meanwhile: use theirs.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
            // No hard links here (some file systems): create in place, as redb does.
            Err(_) => Ok(()),
        }
    })();
    let _ = fs::remove_file(&tmp);
    built
}

/// Make a new directory entry durable (Unix; elsewhere a no-op).
fn sync_parent(path: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        fs::File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        Ok(())
    }
}

fn commit(txn: redb::WriteTransaction) -> Result<(), Failed> {
    txn.commit().map_err(|e| match e {
        // Storage errors during commit (I/O during write or fsync) may leave the commit on
        // disk: the outcome is unknown until the file is reopened.
        CommitError::Storage(_) => Failed {
            error: StoreError::unknown("redb: commit failed; it may have been applied")
                .with_source(e),
            poisoned: true,
        },
        e => StoreError::fail("redb: commit refused")
            .with_source(e)
            .into(),
    })
}

fn check_or_init_meta(db: &Database, path: &Path, codec: &'static str) -> Result<(), OpenError> {
    let err = |e: redb::Error| OpenError::from_redb(path, e);
    let read = db.begin_read().map_err(|e| err(e.into()))?;
    match read.open_table(META) {
        Ok(meta) => {
            let version = meta.get(META_VERSION).map_err(|e| err(e.into()))?;
            let found = match version.as_ref().map(|g| g.value()) {
                Some(b) if b.len() == 4 => u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
                Some(b) => {
                    return Err(OpenError::Corrupt {
                        path: path.to_path_buf(),
                        detail: format!("format version record has {} bytes, not 4", b.len()),
                    });
                }
                None => {
                    return Err(OpenError::NotACogwheelStore {
                        path: path.to_path_buf(),
                    });
                }
            };
            if found != STORE_FORMAT_VERSION {
                return Err(OpenError::IncompatibleVersion {
                    path: path.to_path_buf(),
                    found,
                    expected: STORE_FORMAT_VERSION,
                });
            }
            let found_codec = meta.get(META_CODEC).map_err(|e| err(e.into()))?;
            let found_codec = found_codec.map(|g| String::from_utf8_lossy(g.value()).into_owned());
            if found_codec.as_deref() != Some(codec) {
                return Err(OpenError::IncompatibleCodec {
                    path: path.to_path_buf(),
                    found: found_codec.unwrap_or_else(|| "<none>".into()),
                    expected: codec,
                });
            }
            Ok(())
        }
        Err(TableError::TableDoesNotExist(_)) => {
            if read
                .list_tables()
                .map_err(|e| err(e.into()))?
                .next()
                .is_some()
            {
                return Err(OpenError::NotACogwheelStore {
                    path: path.to_path_buf(),
                });
            }
            drop(read);
            let txn = db.begin_write().map_err(|e| err(e.into()))?;
            {
                let mut meta = txn.open_table(META).map_err(|e| err(e.into()))?;
                meta.insert(META_VERSION, STORE_FORMAT_VERSION.to_le_bytes().as_slice())
                    .map_err(|e| err(e.into()))?;
                meta.insert(META_CODEC, codec.as_bytes())
                    .map_err(|e| err(e.into()))?;
                txn.open_table(DATA).map_err(|e| err(e.into()))?;
            }
            txn.commit().map_err(|e| err(e.into()))?;
            Ok(())
        }
        Err(e) => Err(err(e.into())),
    }
}

fn read_err(e: TransactionError) -> Failed {
    storage("begin read", e)
}

fn is_live(expires_at: Option<SystemTime>, now: SystemTime) -> bool {
    expires_at.is_none_or(|t| t > now)
}

impl<K, V, C> BackingStore<K, V> for RedbStore<K, V, C>
where
    K: Serialize + DeserializeOwned + 'static,
    V: Serialize + DeserializeOwned + 'static,
    C: Codec,
{
    fn load(&self, key: &K) -> Result<Option<Stored<V>>, StoreError> {
        let k = self.codec.encode_key(key)?;
        self.with_db(|db| {
            let txn = db.begin_read().map_err(read_err)?;
            let table = txn.open_table(DATA).map_err(|e| storage("open table", e))?;
            let Some(guard) = table.get(k.as_slice()).map_err(|e| storage("get", e))? else {
                return Ok(None);
            };
            let bytes = guard.value();
            if !is_live(peek_deadline(bytes)?, SystemTime::now()) {
                return Ok(None);
            }
            Ok(self.codec.decode_value(bytes).map(Some)?)
        })
    }

    fn write_batch(&self, ops: &[WriteOp<'_, K, V>]) -> Result<(), StoreError> {
        // Encode everything first: an encode error then fails the batch before any I/O.
        let mut encoded = Vec::with_capacity(ops.len());
        for op in ops {
            encoded.push(match *op {
                WriteOp::Put {
                    key,
                    value,
                    expires_at,
                } => (
                    self.codec.encode_key(key)?,
                    Some(self.codec.encode_value(value, expires_at)?),
                ),
                WriteOp::Delete { key } => (self.codec.encode_key(key)?, None),
            });
        }
        self.with_db(|db| {
            let txn = db.begin_write().map_err(|e| storage("begin write", e))?;
            {
                let mut table = txn.open_table(DATA).map_err(|e| storage("open table", e))?;
                for (k, v) in &encoded {
                    match v {
                        Some(v) => {
                            table
                                .insert(k.as_slice(), v.as_slice())
                                .map_err(|e| storage("insert", e))?;
                        }
                        None => {
                            table
                                .remove(k.as_slice())
                                .map_err(|e| storage("remove", e))?;
                        }
                    }
                }
            }
            // Until here an error drops (aborts) the transaction: nothing applied, kind Fail.
            commit(txn)
        })
    }

    fn scan(&self, visit: &mut dyn FnMut(ScanItem<K, V>) -> bool) -> Result<(), StoreError> {
        let now = SystemTime::now();
        let mut after: Option<Vec<u8>> = None;
        loop {
            // One chunk of raw records per read transaction; visit them after it has ended.
            let chunk: Vec<(Vec<u8>, Vec<u8>)> = self.with_db(|db| {
                let txn = db.begin_read().map_err(read_err)?;
                let table = txn.open_table(DATA).map_err(|e| storage("open table", e))?;
                let lower = match &after {
                    Some(k) => Bound::Excluded(k.as_slice()),
                    None => Bound::Unbounded,
                };
                let mut chunk = Vec::new();
                let range = table
                    .range::<&[u8]>((lower, Bound::Unbounded))
                    .map_err(|e| storage("iterate", e))?;
                for item in range.take(SCAN_CHUNK) {
                    let (k, v) = item.map_err(|e| storage("iterate", e))?;
                    chunk.push((k.value().to_vec(), v.value().to_vec()));
                }
                Ok(chunk)
            })?;
            let Some((last, _)) = chunk.last() else {
                return Ok(());
            };
            after = Some(last.clone());
            let full = chunk.len() == SCAN_CHUNK;
            for (k, v) in chunk {
                let item = match peek_deadline(&v) {
                    Ok(at) if !is_live(at, now) => continue,
                    Ok(_) => self
                        .codec
                        .decode_key(&k)
                        .and_then(|key| Ok((key, self.codec.decode_value(&v)?))),
                    Err(e) => Err(e),
                };
                if !visit(item) {
                    return Ok(());
                }
            }
            if !full {
                return Ok(());
            }
        }
    }

    fn purge_expired(&self, now: SystemTime) -> Result<usize, StoreError> {
        RedbStore::purge_expired(self, now)
    }
}

#[cfg(test)]
mod tests;
