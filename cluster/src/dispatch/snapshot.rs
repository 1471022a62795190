//! Which snapshot chunks a follower hands to async-raft. async-raft 0.6.1's follower, with no
//! stream in progress, takes a chunk at any offset as the start of a whole new snapshot (after
//! a restart, the rest of a stream begun before it), and installing the truncated result is a
//! fatal storage error that stops the replica. A chunk is passed on only when it starts a
//! stream (offset 0) or continues, without a gap, the one this node saw begin since it started.

use crate::rpc::InstallSnapshotRequest;

/// Identifies one stream: a leader (in one term) sending one snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct StreamKey {
    term: u64,
    leader: u64,
    last_included: (u64, u64),
}

impl StreamKey {
    fn of(rpc: &InstallSnapshotRequest) -> StreamKey {
        StreamKey {
            term: rpc.term,
            leader: rpc.leader_id,
            last_included: (rpc.last_included_index, rpc.last_included_term),
        }
    }
}

/// Why a chunk was not handed to async-raft.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// It does not start a stream, nor continue without a gap the one in progress.
    OutOfOrder,
    /// It ends a stream whose bytes are not a snapshot of what its header says.
    Malformed(String),
}

/// The stream async-raft is taking, and a copy of its bytes: async-raft installs a snapshot
/// whatever its bytes are, and a failure to install one is fatal, so the final chunk goes on
/// only once the whole is known to decode.
#[derive(Debug, Default)]
pub(crate) struct SnapshotStream {
    current: Option<(StreamKey, Vec<u8>)>,
}

impl SnapshotStream {
    /// Takes `rpc` into the stream if async-raft may have it: a chunk at offset 0 (a new
    /// stream), or one of the stream in progress at an offset it already reached (a resend
    /// lands where it was sent before, and the buffer drops what lay past it, as
    /// `SnapshotBytes` does). A final chunk ends the stream, and is refused unless `check`
    /// accepts the whole.
    pub(crate) fn take(
        &mut self,
        rpc: &InstallSnapshotRequest,
        check: impl FnOnce(&[u8]) -> Result<(), String>,
    ) -> Result<(), Refusal> {
        let key = StreamKey::of(rpc);
        let continues = |(current, bytes): &(StreamKey, Vec<u8>)| {
            *current == key && rpc.offset <= bytes.len() as u64
        };
        if rpc.offset == 0 {
            self.current = Some((key, Vec::new()));
        } else if !self.current.as_ref().is_some_and(continues) {
            return Err(Refusal::OutOfOrder);
        }
        let (_, bytes) = self.current.as_mut().expect("a stream is in progress");
        let offset = usize::try_from(rpc.offset).expect("the offset is within the buffer");
        bytes.truncate(offset);
        bytes.extend_from_slice(&rpc.data);
        if !rpc.done {
            return Ok(());
        }
        let (_, whole) = self.current.take().expect("a stream is in progress");
        check(&whole).map_err(Refusal::Malformed)
    }

    /// async-raft did not take the last chunk (it failed, or ignored an older term's): what
    /// it holds is no longer known, so only a new stream is admitted.
    pub(crate) fn forget(&mut self) {
        self.current = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(term: u64, offset: u64, data: &[u8], done: bool) -> InstallSnapshotRequest {
        InstallSnapshotRequest {
            term,
            leader_id: 5,
            last_included_index: 40,
            last_included_term: 2,
            offset,
            data: data.to_vec(),
            done,
        }
    }

    fn expect(whole: &'static [u8]) -> impl FnOnce(&[u8]) -> Result<(), String> {
        move |got| match got == whole {
            true => Ok(()),
            false => Err(format!("got {got:?}")),
        }
    }

    fn unchecked(_: &[u8]) -> Result<(), String> {
        panic!("only a final chunk is checked")
    }

    #[test]
    fn a_chunk_past_the_start_with_no_stream_begun_is_refused() {
        let mut stream = SnapshotStream::default();
        let tail = chunk(3, 3, b"def", true);
        assert_eq!(stream.take(&tail, expect(b"def")), Err(Refusal::OutOfOrder));
        assert_eq!(stream.take(&chunk(3, 0, b"abc", false), unchecked), Ok(()));
        assert_eq!(stream.take(&tail, expect(b"abcdef")), Ok(()));
    }

    #[test]
    fn resends_are_taken_gaps_and_other_streams_refused() {
        let mut stream = SnapshotStream::default();
        stream.take(&chunk(3, 0, b"abc", false), unchecked).unwrap();
        stream.take(&chunk(3, 0, b"abc", false), unchecked).unwrap();
        let gap = chunk(3, 4, b"ef", false);
        assert_eq!(stream.take(&gap, unchecked), Err(Refusal::OutOfOrder));
        let other_leader = chunk(4, 3, b"def", false);
        assert_eq!(
            stream.take(&other_leader, unchecked),
            Err(Refusal::OutOfOrder)
        );
        stream.take(&chunk(3, 3, b"dxx", false), unchecked).unwrap();
        stream.take(&chunk(3, 3, b"def", false), unchecked).unwrap();
        let last = chunk(3, 6, b"", true);
        assert_eq!(stream.take(&last, expect(b"abcdef")), Ok(()));
        assert_eq!(
            stream.take(&last, expect(b"abcdef")),
            Err(Refusal::OutOfOrder),
            "the stream ended"
        );
    }

    #[test]
    fn a_stream_that_does_not_check_is_refused_and_forgotten() {
        let mut stream = SnapshotStream::default();
        stream.take(&chunk(3, 0, b"abc", false), unchecked).unwrap();
        let last = chunk(3, 3, b"", true);
        assert!(matches!(
            stream.take(&last, expect(b"other")),
            Err(Refusal::Malformed(_))
        ));
        assert_eq!(stream.take(&last, unchecked), Err(Refusal::OutOfOrder));
    }

    #[test]
    fn after_a_failure_only_a_new_stream_is_taken() {
        let mut stream = SnapshotStream::default();
        stream.take(&chunk(3, 0, b"abc", false), unchecked).unwrap();
        stream.forget();
        let next = chunk(3, 3, b"def", false);
        assert_eq!(stream.take(&next, unchecked), Err(Refusal::OutOfOrder));
    }
}
