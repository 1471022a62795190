//! [`Shards`]: the threads partition replicas run on, one per core (shard-per-core). A
//! partition's actor and its Raft group (async-raft's core, its replication streams, the
//! driver) start on one shard and stay there; connections, the metadata service, the
//! coordinators and the controllers stay on the node's main thread.
//!
//! One shard means no thread at all: every start runs inline on the caller's thread, as the
//! simulation needs (one thread, an order fixed by the seed).

use actix_rt::{Arbiter, ArbiterHandle};
use gregor_storage::{PartitionId, TopicId};
use std::future::Future;
use std::sync::Mutex;
use std::thread::ThreadId;
use tokio::sync::oneshot;

/// Where a replica runs: its shard's index and the thread that started it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardPlace {
    pub index: usize,
    pub thread: ThreadId,
}

impl ShardPlace {
    /// The shard the calling code runs on.
    pub fn here(index: usize) -> ShardPlace {
        ShardPlace {
            index,
            thread: std::thread::current().id(),
        }
    }
}

/// The shard's thread stopped before the work it was handed finished (the node is stopping).
#[derive(Debug, thiserror::Error)]
#[error("shard {0} has stopped")]
pub struct ShardStopped(pub usize);

pub struct Shards {
    /// Empty: a single shard, the caller's own thread.
    handles: Vec<ArbiterHandle>,
    /// The threads to stop and join; taken once, by [`Shards::stop`].
    threads: Mutex<Vec<Arbiter>>,
}

impl Shards {
    /// `count` shards, at least one; more than one starts that many threads, which needs a
    /// running actix `System`.
    ///
    /// # Errors
    /// A thread could not be started.
    pub fn new(count: usize) -> std::io::Result<Shards> {
        if count <= 1 {
            return Ok(Shards::inline());
        }
        let threads = (0..count)
            .map(|_| Arbiter::try_new())
            .collect::<std::io::Result<Vec<_>>>()?;
        for (index, thread) in threads.iter().enumerate() {
            thread.spawn_fn(move || name_this_thread(&format!("gregor-shard-{index}")));
        }
        Ok(Shards {
            handles: threads.iter().map(Arbiter::handle).collect(),
            threads: Mutex::new(threads),
        })
    }

    /// One shard: everything on the caller's thread.
    pub fn inline() -> Shards {
        Shards {
            handles: Vec::new(),
            threads: Mutex::new(Vec::new()),
        }
    }

    pub fn count(&self) -> usize {
        self.handles.len().max(1)
    }

    /// The shard a partition runs on. Round-robin by partition index from a start fixed by the
    /// topic id: one topic's partitions spread evenly over the shards (a hash of each partition
    /// would leave some shards with two of a topic's eight and others with none), and the
    /// starts of many small topics spread too. A fixed mixer, not std's seeded hasher: the
    /// same partition lands on the same shard in every run.
    pub fn of(&self, topic: TopicId, partition: PartitionId) -> usize {
        shard_of(self.count(), topic, partition)
    }

    /// Runs `work` on the shard and returns its result. The future is built and polled on the
    /// shard's thread, so whatever it spawns (actors, tokio tasks) lives there; only the closure
    /// and the result cross threads. With one shard it runs here, inline, adding no task and
    /// no turn of the scheduler.
    ///
    /// # Errors
    /// The shard has stopped.
    pub async fn run<W, F, T>(&self, shard: usize, work: W) -> Result<T, ShardStopped>
    where
        W: FnOnce() -> F + Send + 'static,
        F: Future<Output = T> + 'static,
        T: Send + 'static,
    {
        let Some(handle) = self.handles.get(shard) else {
            assert!(self.handles.is_empty(), "shard {shard} of {}", self.count());
            return Ok(work().await);
        };
        let (tx, rx) = oneshot::channel();
        let handed = handle.spawn_fn(move || {
            actix_rt::spawn(async move {
                let _ = tx.send(work().await);
            });
        });
        if !handed {
            return Err(ShardStopped(shard));
        }
        rx.await.map_err(|_| ShardStopped(shard))
    }

    /// Stops the shards' threads and waits for them to end; whatever still runs there is
    /// dropped. Call it once the replicas have stopped.
    pub async fn stop(&self) {
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|p| p.into_inner()));
        for thread in &threads {
            thread.stop();
        }
        for thread in threads {
            // Joining blocks until the thread's runtime has dropped its tasks: not on the
            // actors' thread.
            match tokio::task::spawn_blocking(move || thread.join()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => tracing::error!("a shard thread panicked"),
                Err(error) => tracing::error!(%error, "joining a shard thread failed"),
            }
        }
    }
}

impl Drop for Shards {
    /// A node dropped without shutting down still ends its threads (without waiting).
    fn drop(&mut self) {
        for thread in self
            .threads
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            thread.stop();
        }
    }
}

/// Names the thread as `top -H` and `/proc` show it (actix names every arbiter
/// `actix-rt|system:N|arbiter:M`, which those cut to `actix-rt|system`). Linux only; elsewhere
/// the thread keeps actix's name.
fn name_this_thread(name: &str) {
    let _ = std::fs::write("/proc/thread-self/comm", name);
}

fn shard_of(count: usize, topic: TopicId, partition: PartitionId) -> usize {
    let count = count as u64;
    let index = (mix(topic.0) % count + u64::from(partition.0)) % count;
    usize::try_from(index).expect("a shard index is below the shard count")
}

/// splitmix64's finaliser: consecutive topic ids land on unrelated shards.
fn mix(mut x: u64) -> u64 {
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_topics_partitions_spread_evenly_over_the_shards() {
        assert_eq!(
            Shards::inline().of(TopicId(7), PartitionId(3)),
            0,
            "one shard"
        );
        for count in [2usize, 3, 4] {
            let spread = |topic| {
                let mut per_shard = vec![0; count];
                for p in 0..8 * count as u32 {
                    per_shard[shard_of(count, topic, PartitionId(p))] += 1;
                }
                per_shard
            };
            for topic in [TopicId(1), TopicId(2), TopicId(u64::MAX)] {
                assert_eq!(spread(topic), vec![8; count], "{count} shards, {topic:?}");
            }
        }
    }

    #[test]
    fn single_partition_topics_do_not_all_land_on_one_shard() {
        let on_zero = (1..=64)
            .filter(|t| shard_of(2, TopicId(*t), PartitionId(0)) == 0)
            .count();
        assert!((16..=48).contains(&on_zero), "{on_zero} of 64 on shard 0");
    }

    #[test]
    fn the_same_partition_lands_on_the_same_shard_every_time() {
        // Fixed values: a change of mixer would move partitions between restarts' runs.
        assert_eq!(mix(0), 0);
        assert_eq!(mix(1), 0x5692_161d_100b_05e5);
    }

    #[actix_rt::test]
    async fn work_runs_on_its_shard_and_inline_with_one() {
        let here = std::thread::current().id();
        let one = Shards::new(1).unwrap();
        assert_eq!(
            one.run(0, || async { std::thread::current().id() })
                .await
                .unwrap(),
            here
        );
        let two = Shards::new(2).unwrap();
        let a = two
            .run(0, || async { std::thread::current().id() })
            .await
            .unwrap();
        let b = two
            .run(1, || async { std::thread::current().id() })
            .await
            .unwrap();
        assert!(a != here && b != here && a != b);
        if cfg!(target_os = "linux") {
            let name = two
                .run(1, || async {
                    std::fs::read_to_string("/proc/thread-self/comm")
                })
                .await
                .unwrap()
                .unwrap();
            assert_eq!(name.trim_end(), "gregor-shard-1");
        }
        two.stop().await;
        assert!(matches!(
            two.run(0, || async {}).await,
            Err(ShardStopped(0))
        ));
    }
}
