//! Callbacks on the group's assignment changes.

use super::TopicPartition;

/// Told, from inside [`super::Consumer::poll`], when the group gives this consumer partitions
/// or takes them away. With `commit_on_revoke` (the default) the positions of revoked
/// partitions are committed before `on_revoked` runs, so their next owner starts exactly there.
pub trait RebalanceListener: Send {
    /// These partitions are now this consumer's; their records follow in later polls.
    fn on_assigned(&mut self, partitions: &[TopicPartition]) {
        let _ = partitions;
    }

    /// These partitions were released to the group (after their positions were committed).
    fn on_revoked(&mut self, partitions: &[TopicPartition]) {
        let _ = partitions;
    }

    /// The membership ended without a clean release (session expired, fenced): these
    /// partitions may already be another member's, so nothing was committed.
    fn on_lost(&mut self, partitions: &[TopicPartition]) {
        self.on_revoked(partitions);
    }
}
