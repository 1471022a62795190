//! One peer's outbound queue: bounded in bytes (a sender waits for room, up to its deadline),
//! drained a frame at a time by the connection's writer.
//!
//! Coalescing: the writer takes everything queued, up to the frame limit, so whatever arrives
//! while a frame is being written rides in the next one. A heartbeat (an empty AppendEntries,
//! or the answer to one) may wait up to its linger deadline for company: a queue holding only
//! heartbeats is flushed when the oldest one's deadline comes, or at once when anything else
//! is queued. With thousands of groups, their heartbeats to one peer share a few frames.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// A message waiting to be written.
pub(crate) struct Outgoing {
    pub(crate) bytes: Vec<u8>,
    /// Heartbeats wait for company until then; `None` goes out with the next frame.
    pub(crate) linger_until: Option<Instant>,
    /// A request nobody waits for after this is not sent.
    pub(crate) expires: Option<Instant>,
    /// A response belongs to the connection its request came on; on another one its id could
    /// match an unrelated request of a restarted peer.
    pub(crate) connection: Option<u64>,
    /// The message's share of the queue's byte budget, returned when it is written or dropped.
    pub(crate) _room: OwnedSemaphorePermit,
}

pub(crate) struct OutboundQueue {
    items: Mutex<Items>,
    arrived: Notify,
    room: Arc<Semaphore>,
}

#[derive(Default)]
struct Items {
    queue: VecDeque<Outgoing>,
    /// How many queued messages do not linger; any makes the next frame go at once.
    urgent: usize,
}

/// What the writer should do next.
pub(crate) enum Next {
    Write(Vec<Outgoing>),
    WaitUntil(Instant),
    WaitForMessages,
}

impl OutboundQueue {
    pub(crate) fn new(max_bytes: usize) -> OutboundQueue {
        OutboundQueue {
            items: Mutex::new(Items::default()),
            arrived: Notify::new(),
            room: Arc::new(Semaphore::new(max_bytes)),
        }
    }

    /// Waits for room for `bytes`; `None` if `deadline` passes first.
    pub(crate) async fn reserve(
        &self,
        bytes: usize,
        deadline: Instant,
    ) -> Option<OwnedSemaphorePermit> {
        let permits = u32::try_from(bytes).expect("message size checked against the frame limit");
        if let Ok(permit) = self.room.clone().try_acquire_many_owned(permits) {
            return Some(permit);
        }
        // Full: perhaps of requests nobody waits for (no connection has drained them).
        self.lock().drop_expired(Instant::now());
        let acquire = self.room.clone().acquire_many_owned(permits);
        match tokio::time::timeout_at(deadline, acquire).await {
            Ok(Ok(permit)) => Some(permit),
            // The semaphore is never closed.
            Ok(Err(_)) | Err(_) => None,
        }
    }

    pub(crate) fn push(&self, message: Outgoing) {
        {
            let mut items = self.lock();
            if message.linger_until.is_none() {
                items.urgent += 1;
            }
            items.queue.push_back(message);
        }
        self.arrived.notify_one();
    }

    /// Takes the next frame's messages, at most `max_bytes` of them (at least one), if the
    /// queue should be flushed now; otherwise says how long to wait.
    pub(crate) fn take_frame(&self, max_bytes: usize, connection: u64, now: Instant) -> Next {
        let mut items = self.lock();
        items.drop_stale(connection, now);
        let Some(first) = items.queue.front() else {
            return Next::WaitForMessages;
        };
        if items.urgent == 0 {
            let oldest = first
                .linger_until
                .expect("no urgent message, so every one lingers");
            if oldest > now {
                return Next::WaitUntil(oldest);
            }
        }
        let mut frame = Vec::new();
        let mut bytes = 0;
        while let Some(next) = items.queue.front() {
            if !frame.is_empty() && bytes + next.bytes.len() > max_bytes {
                break;
            }
            let message = items.queue.pop_front().expect("front exists");
            bytes += message.bytes.len();
            if message.linger_until.is_none() {
                items.urgent -= 1;
            }
            frame.push(message);
        }
        Next::Write(frame)
    }

    /// Waits until a message is pushed (a push before the wait counts).
    pub(crate) async fn arrival(&self) {
        self.arrived.notified().await;
    }

    /// Drops requests nobody waits for any more, and responses meant for another connection.
    pub(crate) fn purge(&self, connection: u64, now: Instant) {
        self.lock().drop_stale(connection, now);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Items> {
        self.items
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Items {
    fn drop_expired(&mut self, now: Instant) {
        let mut urgent_dropped = 0;
        self.queue.retain(|message| {
            let keep = message.expires.is_none_or(|at| at > now);
            if !keep && message.linger_until.is_none() {
                urgent_dropped += 1;
            }
            keep
        });
        self.urgent -= urgent_dropped;
    }

    fn drop_stale(&mut self, connection: u64, now: Instant) {
        let before = self.queue.len();
        let mut urgent_dropped = 0;
        self.queue.retain(|message| {
            let expired = message.expires.is_some_and(|at| at <= now);
            let foreign = message.connection.is_some_and(|c| c != connection);
            let keep = !expired && !foreign;
            if !keep && message.linger_until.is_none() {
                urgent_dropped += 1;
            }
            keep
        });
        self.urgent -= urgent_dropped;
        debug_assert!(self.queue.len() <= before);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    async fn message(
        queue: &OutboundQueue,
        bytes: usize,
        linger_until: Option<Instant>,
    ) -> Outgoing {
        let far = Instant::now() + Duration::from_secs(60);
        Outgoing {
            bytes: vec![0; bytes],
            linger_until,
            expires: None,
            connection: None,
            _room: queue.reserve(bytes, far).await.unwrap(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn heartbeats_wait_for_their_linger_deadline_unless_something_urgent_comes() {
        let queue = OutboundQueue::new(1 << 20);
        let now = Instant::now();
        let linger = now + Duration::from_millis(5);
        queue.push(message(&queue, 10, Some(linger)).await);
        queue.push(message(&queue, 10, Some(linger + Duration::from_millis(1))).await);
        assert!(matches!(queue.take_frame(1000, 1, now), Next::WaitUntil(at) if at == linger));
        let Next::Write(frame) = queue.take_frame(1000, 1, linger) else {
            panic!("heartbeats past their deadline must go");
        };
        assert_eq!(frame.len(), 2);

        queue.push(message(&queue, 10, Some(linger)).await);
        queue.push(message(&queue, 10, None).await);
        let Next::Write(frame) = queue.take_frame(1000, 1, now) else {
            panic!("an urgent message must go at once, heartbeats with it");
        };
        assert_eq!(frame.len(), 2);
        assert!(matches!(
            queue.take_frame(1000, 1, now),
            Next::WaitForMessages
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn a_frame_stops_at_the_byte_limit_and_the_budget_is_returned_when_written() {
        let queue = OutboundQueue::new(300);
        for _ in 0..3 {
            queue.push(message(&queue, 100, None).await);
        }
        let deadline = Instant::now() + Duration::from_millis(10);
        assert!(
            queue.reserve(1, deadline).await.is_none(),
            "the queue is full"
        );
        let Next::Write(frame) = queue.take_frame(250, 1, Instant::now()) else {
            panic!("urgent messages must go");
        };
        assert_eq!(frame.len(), 2);
        drop(frame);
        assert!(queue.reserve(200, deadline).await.is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_queue_makes_room_by_dropping_requests_past_their_deadline() {
        let queue = OutboundQueue::new(100);
        let mut expired = message(&queue, 100, None).await;
        expired.expires = Some(Instant::now() + Duration::from_millis(5));
        queue.push(expired);
        tokio::time::sleep(Duration::from_millis(10)).await;
        let deadline = Instant::now() + Duration::from_millis(1);
        assert!(queue.reserve(100, deadline).await.is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn expired_requests_and_other_connections_responses_are_dropped() {
        let queue = OutboundQueue::new(1000);
        let now = Instant::now();
        let mut expired = message(&queue, 10, None).await;
        expired.expires = Some(now);
        let mut foreign = message(&queue, 10, None).await;
        foreign.connection = Some(1);
        let mut ours = message(&queue, 10, None).await;
        ours.connection = Some(2);
        for m in [expired, foreign, ours] {
            queue.push(m);
        }
        let Next::Write(frame) = queue.take_frame(1000, 2, now) else {
            panic!("our response must go");
        };
        assert_eq!(frame.len(), 1);
        assert_eq!(frame[0].connection, Some(2));
    }
}
