//! [`MetadataMachine`]: the metadata group's state machine, plugged into storage's apply. It
//! runs [`MetadataCore`] over the group's rows and publishes the new [`MetadataView`] after
//! every command, on every node, voter or learner.

use super::command::{decode_command, encode_outcome};
use super::core::MetadataCore;
use super::rows::{self, Rows, RowsError};
use super::view::MetadataView;
use bytes::Bytes;
use gregor_storage::{GroupId, RowTxn, StateMachine, StorageError, Store};
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

/// The metadata group's rows as of an apply.
struct TxnRows<'a, 'b>(&'a mut RowTxn<'b>);

impl Rows for TxnRows<'_, '_> {
    fn get(&self, key: &[u8]) -> Result<Option<Bytes>, RowsError> {
        self.0.get(key).map_err(|e| RowsError(e.to_string()))
    }
    fn put(&mut self, key: &[u8], value: Bytes) {
        self.0.put(key, value);
    }
    fn delete(&mut self, key: &[u8]) {
        self.0.delete(key);
    }
    fn scan_prefix(&self, prefix: &[u8]) -> Result<Vec<(Bytes, Bytes)>, RowsError> {
        self.0
            .scan_prefix(prefix)
            .map_err(|e| RowsError(e.to_string()))
    }
}

/// The metadata group's committed rows, read outside an apply.
struct StoredRows<'a>(&'a Store);

impl Rows for StoredRows<'_> {
    fn get(&self, key: &[u8]) -> Result<Option<Bytes>, RowsError> {
        self.0
            .kv_get(GroupId::METADATA, key)
            .map_err(|e| RowsError(e.to_string()))
    }
    fn put(&mut self, _: &[u8], _: Bytes) {
        unreachable!("stored rows are only read")
    }
    fn delete(&mut self, _: &[u8]) {
        unreachable!("stored rows are only read")
    }
    fn scan_prefix(&self, prefix: &[u8]) -> Result<Vec<(Bytes, Bytes)>, RowsError> {
        self.0
            .kv_scan_prefix(GroupId::METADATA, prefix)
            .map_err(|e| RowsError(e.to_string()))
    }
}

/// The core and the watch its view is published on, shared by the machine (inside the
/// group's storage) and the node (which reloads it after a snapshot, see
/// [`MetadataState::refresh`]).
pub struct MetadataState {
    core: Mutex<MetadataCore>,
    view: watch::Sender<Arc<MetadataView>>,
}

impl MetadataState {
    /// Loads the view from the metadata group's rows in `store`.
    ///
    /// # Errors
    /// The rows cannot be read or trusted.
    pub fn load(store: &Store) -> Result<Arc<MetadataState>, RowsError> {
        let core = MetadataCore::load(&StoredRows(store))?;
        let (view, _) = watch::channel(Arc::new(core.view().clone()));
        Ok(Arc::new(MetadataState {
            core: Mutex::new(core),
            view,
        }))
    }

    pub fn subscribe(&self) -> watch::Receiver<Arc<MetadataView>> {
        self.view.subscribe()
    }

    pub fn view(&self) -> Arc<MetadataView> {
        self.view.borrow().clone()
    }

    /// The state machine to start the metadata group with.
    pub fn machine(self: &Arc<Self>) -> Box<dyn StateMachine> {
        Box::new(MetadataMachine {
            state: self.clone(),
        })
    }

    /// Reloads the view if the stored rows are newer than it: a snapshot replaced them, and
    /// no command has been applied since (which would have reloaded it). Call it when the
    /// group's applied index moves.
    ///
    /// # Errors
    /// The rows cannot be read or trusted.
    pub fn refresh(&self, store: &Store) -> Result<bool, RowsError> {
        let mut core = self.lock();
        let stored = StoredRows(store);
        // Commands are applied into the copy before their batch commits, so the copy is never
        // behind the committed rows, except after a snapshot.
        if rows::last_index(&stored)? <= core.view().last_index() {
            return Ok(false);
        }
        *core = MetadataCore::load(&stored)?;
        self.view.send_replace(Arc::new(core.view().clone()));
        Ok(true)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MetadataCore> {
        self.core.lock().unwrap_or_else(|p| p.into_inner())
    }
}

struct MetadataMachine {
    state: Arc<MetadataState>,
}

impl StateMachine for MetadataMachine {
    fn apply(
        &mut self,
        index: u64,
        command: &[u8],
        rows: &mut RowTxn<'_>,
    ) -> Result<Bytes, StorageError> {
        // A command this build cannot read stops the metadata log here: applying it some
        // other way than the nodes that can would split the cluster's view of the truth.
        let command = decode_command(command)
            .map_err(|e| StorageError::Corrupt(format!("metadata entry {index}: {e}")))?;
        let mut core = self.state.lock();
        let outcome = core
            .apply(index, &command, &mut TxnRows(rows))
            .map_err(|e| StorageError::Corrupt(e.to_string()))?;
        tracing::debug!(
            index,
            command = command.name(),
            ?outcome,
            "metadata applied"
        );
        self.state.view.send_replace(Arc::new(core.view().clone()));
        Ok(encode_outcome(&outcome))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::command::{decode_outcome, encode_command, MetadataCommand};
    use crate::metadata::MetadataOutcome;
    use gregor_cluster::{
        ApplyOutcome, ClusterNode, Command, Dispatcher, NoPeers, RaftGroup, RaftTuning, Start,
    };
    use gregor_storage::{FlushPolicy, NodeId, StoreOptions, SyncMode, TopicId};
    use std::time::Duration;

    fn open(dir: &std::path::Path) -> Store {
        let options = StoreOptions {
            flush: FlushPolicy::Always,
            // Paused time runs ahead while a sync thread works: sync inline.
            sync_mode: SyncMode::Inline,
            cache_bytes: 1 << 20,
        };
        Store::open(dir, options).unwrap()
    }

    async fn start(store: &Store, state: &Arc<MetadataState>) -> Arc<RaftGroup> {
        let node = ClusterNode::new(
            NodeId(1),
            store.clone(),
            Arc::new(NoPeers),
            Dispatcher::new(),
            RaftTuning::default(),
        );
        let start = Start::Found {
            members: [NodeId(1)].into(),
        };
        let group = node
            .start_group_with_machine(GroupId::METADATA, start, Some(state.machine()))
            .await
            .unwrap();
        assert!(group.wait_for_leadership(Duration::from_secs(10)).await);
        group
    }

    async fn propose(group: &RaftGroup, command: MetadataCommand) -> MetadataOutcome {
        let proposed = group
            .propose(
                Command::Machine(encode_command(&command)),
                Duration::from_secs(10),
            )
            .await
            .unwrap();
        match proposed.1 {
            ApplyOutcome::Machine(bytes) => decode_outcome(&bytes).unwrap(),
            other => panic!("{other:?}"),
        }
    }

    fn create(name: &str) -> MetadataCommand {
        MetadataCommand::CreateTopic {
            name: name.into(),
            partitions: 1,
            replication_factor: 1,
            config: Default::default(),
            internal: false,
            assignment: vec![vec![NodeId(1)]],
            creation_id: None,
        }
    }

    fn register() -> MetadataCommand {
        MetadataCommand::RegisterNode {
            node: NodeId(1),
            client_addr: "a:1".into(),
            peer_addr: "a:2".into(),
            rack: None,
        }
    }

    /// A creation whose proposer gave up before it committed still commits, with the id it
    /// was given in apply; the next creation gets the next id.
    #[tokio::test(start_paused = true)]
    async fn a_create_that_times_out_and_commits_later_never_shares_an_id() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let state = MetadataState::load(&store).unwrap();
        let mut view = state.subscribe();
        let group = start(&store, &state).await;
        propose(&group, register()).await;
        let late = group
            .propose(
                Command::Machine(encode_command(&create("late"))),
                Duration::ZERO,
            )
            .await;
        assert!(late.is_err(), "the proposer gave up: {late:?}");
        let outcome = propose(&group, create("next")).await;
        let view_now = view.borrow_and_update().clone();
        let late_id = view_now
            .topic("late")
            .expect("the late create committed")
            .record
            .id;
        assert_eq!(late_id, TopicId(1));
        assert_eq!(
            outcome,
            MetadataOutcome::TopicCreated {
                id: TopicId(2),
                revision: view_now.topic("next").unwrap().created_revision
            }
        );
        group.shutdown().await;
    }

    #[tokio::test(start_paused = true)]
    async fn the_view_is_published_after_each_command_and_reloads_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let before = {
            let store = open(dir.path());
            let state = MetadataState::load(&store).unwrap();
            let mut view = state.subscribe();
            let group = start(&store, &state).await;
            propose(&group, register()).await;
            assert!(view.has_changed().unwrap());
            assert_eq!(view.borrow_and_update().nodes().count(), 1);
            propose(&group, create("a")).await;
            assert!(view.borrow_and_update().topic("a").is_some());
            group.shutdown().await;
            state.view()
        };
        let store = open(dir.path());
        let state = MetadataState::load(&store).unwrap();
        assert_eq!(*state.view(), *before);
        // Nothing newer in the rows than in the view: nothing to reload.
        assert!(!state.refresh(&store).unwrap());
        let group = start(&store, &state).await;
        assert_eq!(
            propose(&group, create("a")).await,
            MetadataOutcome::Rejected(crate::metadata::Rejection::TopicExists { name: "a".into() })
        );
        group.shutdown().await;
    }
}
