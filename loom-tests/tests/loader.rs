//! loom models of the single-flight loader (`src/loader.rs`): two model threads per test, one
//! key, a `Mutex<Option<u32>>` standing in for the cache.
#![cfg(loom)]

// Inside `mod loader` so that `.ci/loom.sh loader` selects these models by name.
mod loader {
    use cogwheel::__loom::{LoadError, Loaded, Loader, Origin};
    use loom::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use loom::sync::{Arc, Mutex};
    use loom::thread;
    use std::panic::{self, AssertUnwindSafe};

    const HASH: u64 = 0;
    const KEY: u32 = 1;
    const PLANNED: &str = "planned loader panic";

    struct World {
        loader: Loader<u32, u32>,
        cache: Mutex<Option<u32>>,
        loads: AtomicUsize,
    }

    impl World {
        fn new() -> Arc<World> {
            Arc::new(World {
                loader: Loader::new(),
                cache: Mutex::new(None),
                loads: AtomicUsize::new(0),
            })
        }

        fn cached(&self) -> Option<u32> {
            *self.cache.lock().unwrap()
        }

        /// What the cache's publish must be: insert if absent.
        fn publish(&self, v: &u32) {
            self.cache.lock().unwrap().get_or_insert(*v);
        }

        /// A cache miss that loads `result`.
        fn load(
            &self,
            result: Result<u32, &'static str>,
        ) -> Result<Loaded<u32>, LoadError<&'static str>> {
            self.loader.run(
                HASH,
                &KEY,
                || self.cached(),
                || {
                    self.loads.fetch_add(1, Ordering::SeqCst);
                    result
                },
                |v| self.publish(v),
            )
        }
    }

    /// Silence the panic message of the planned panics (and only those).
    fn quiet_planned_panics() {
        let default = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            let p = info.payload();
            let planned = p.downcast_ref::<&str>() == Some(&PLANNED)
                || p.downcast_ref::<String>().is_some_and(|s| s == PLANNED);
            if !planned {
                default(info);
            }
        }));
    }

    #[test]
    fn leader_completes_while_a_waiter_registers() {
        loom::model(|| {
            let w = World::new();
            let w2 = w.clone();
            let t = thread::spawn(move || w2.load(Ok(42)).unwrap());
            let a = w.load(Ok(42)).unwrap();
            let b = t.join().unwrap();
            assert_eq!((a.value, b.value), (42, 42));
            // A caller that comes after the flight finds the published value through `check`.
            assert_eq!(
                w.loads.load(Ordering::SeqCst),
                1,
                "init ran twice: {a:?} {b:?}"
            );
            assert!([a.origin, b.origin].contains(&Origin::Published));
            assert_eq!(w.cached(), Some(42));
            assert!(w.loader.is_empty());
        });
    }

    #[test]
    fn error_is_shared_or_reloaded_never_cached() {
        loom::model(|| {
            let w = World::new();
            let w2 = w.clone();
            let t = thread::spawn(move || w2.load(Err("down")));
            let a = w.load(Err("down"));
            let b = t.join().unwrap();
            let (Err(LoadError::Failed(a)), Err(LoadError::Failed(b))) = (a, b) else {
                panic!("both callers must see the error");
            };
            let loads = w.loads.load(Ordering::SeqCst);
            // Either the second caller waited on the first flight and shares its error, or it came
            // after and loaded again (the error was not cached).
            assert_eq!(loads == 1, std::sync::Arc::ptr_eq(&a, &b));
            assert!(loads <= 2);
            assert_eq!(w.cached(), None);
            assert!(w.loader.is_empty());
        });
    }

    /// A miss whose init panics if it is the first init to run (`armed`), else loads 7.
    fn attempt(
        w: &World,
        armed: &AtomicBool,
    ) -> std::thread::Result<Result<Loaded<u32>, LoadError<()>>> {
        panic::catch_unwind(AssertUnwindSafe(|| {
            w.loader.run::<(), _, _, _>(
                HASH,
                &KEY,
                || w.cached(),
                || {
                    w.loads.fetch_add(1, Ordering::SeqCst);
                    if armed.swap(false, Ordering::SeqCst) {
                        panic!("{}", PLANNED);
                    }
                    Ok(7)
                },
                |v| w.publish(v),
            )
        }))
    }

    /// Runs `attempt` on `threads` model threads (this one included) and checks the outcome:
    /// exactly one caller sees the panic, exactly one leads the retry, everyone else gets its
    /// value, and the registry is empty afterwards.
    fn panicking_leader(threads: usize) {
        quiet_planned_panics();
        loom::model(move || {
            let w = World::new();
            let armed = Arc::new(AtomicBool::new(true));
            let handles: Vec<_> = (1..threads)
                .map(|_| {
                    let (w, armed) = (w.clone(), armed.clone());
                    thread::spawn(move || attempt(&w, &armed))
                })
                .collect();
            let mut results = vec![attempt(&w, &armed)];
            results.extend(handles.into_iter().map(|h| h.join().unwrap()));
            let panics = results.iter().filter(|r| r.is_err()).count();
            assert_eq!(panics, 1, "exactly the panicking caller sees the panic");
            let loaded: Vec<Loaded<u32>> = results
                .into_iter()
                .filter_map(|r| r.ok())
                .map(|r| r.expect("no error here"))
                .collect();
            assert!(loaded.iter().all(|l| l.value == 7));
            let leaders = loaded
                .iter()
                .filter(|l| l.origin == Origin::Published)
                .count();
            assert_eq!(
                leaders, 1,
                "exactly one survivor leads the retry: {loaded:?}"
            );
            assert_eq!(w.loads.load(Ordering::SeqCst), 2);
            assert_eq!(w.cached(), Some(7));
            assert!(w.loader.is_empty());
        });
    }

    #[test]
    fn leader_panics_while_a_waiter_registers() {
        panicking_leader(2);
    }

    #[test]
    fn leader_panics_with_two_waiters() {
        panicking_leader(3);
    }

    #[test]
    fn remove_after_a_started_load_is_never_undone() {
        loom::model(|| {
            let w = World::new();
            let started = Arc::new(AtomicBool::new(false));
            let (w2, started2) = (w.clone(), started.clone());
            let t = thread::spawn(move || {
                w2.loader.run::<(), _, _, _>(
                    HASH,
                    &KEY,
                    || w2.cached(),
                    || {
                        started2.store(true, Ordering::SeqCst);
                        Ok(1)
                    },
                    |v| w2.publish(v),
                )
            });
            // A `remove` that runs after the load began: invalidate, then change the cache.
            let removed = started.load(Ordering::SeqCst);
            if removed {
                w.loader.invalidate(HASH, &KEY);
                *w.cache.lock().unwrap() = None;
            }
            let loaded = t.join().unwrap().unwrap();
            assert_eq!(loaded.value, 1);
            if removed {
                assert_eq!(
                    w.cached(),
                    None,
                    "a load that started before the remove resurrected the key"
                );
            } else {
                assert_eq!(loaded.origin, Origin::Published);
            }
            assert!(w.loader.is_empty());
        });
    }

    #[test]
    fn remove_during_a_load_with_a_waiter() {
        loom::model(|| {
            let w = World::new();
            let started = Arc::new(AtomicBool::new(false));
            let spawn_load = || {
                let (w, started) = (w.clone(), started.clone());
                thread::spawn(move || {
                    w.loader.run::<(), _, _, _>(
                        HASH,
                        &KEY,
                        || w.cached(),
                        || {
                            w.loads.fetch_add(1, Ordering::SeqCst);
                            started.store(true, Ordering::SeqCst);
                            Ok(1)
                        },
                        |v| w.publish(v),
                    )
                })
            };
            let (a, b) = (spawn_load(), spawn_load());
            let removed = started.load(Ordering::SeqCst);
            if removed {
                w.loader.invalidate(HASH, &KEY);
                *w.cache.lock().unwrap() = None;
            }
            let (a, b) = (a.join().unwrap().unwrap(), b.join().unwrap().unwrap());
            assert_eq!((a.value, b.value), (1, 1));
            let loads = w.loads.load(Ordering::SeqCst);
            assert!(loads <= 2);
            if removed && loads == 1 {
                // One flight served both callers and it started before the remove.
                assert_eq!(w.cached(), None, "{a:?} {b:?}");
            }
            assert!(w.loader.is_empty());
        });
    }
}
