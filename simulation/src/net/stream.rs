//! Client connections over the simulated network: a reliable, ordered byte stream (TCP) from a
//! client to a node's client listener, through the real client and server code on both ends.
//!
//! Clients have network ids of their own (the harness numbers them apart from nodes), so links
//! between a client and a node take faults like any other link. A stream only cares whether
//! its link is up and how long it delays: loss and duplication are TCP's to hide. Bytes keep
//! their order (each chunk arrives no sooner than the one before it). A chunk sent over a down
//! link resets the connection, as TCP gives up on a silent peer; a connect over a down link
//! times out; a crash of the node resets all of its connections at once (its kernel closes the
//! sockets), and connects to a node that does not listen are refused.

use super::{Channel, NetMessage, NetOutcome, NetState, SimNetwork};
use bytes::Bytes;
use gregor_storage::NodeId;
use std::io;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, ReadHalf, WriteHalf};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// One end of a simulated connection.
pub type SimStream = DuplexStream;

/// Bytes a stream buffers in each direction before its writer waits.
const STREAM_BUFFER_BYTES: usize = 256 * 1024;
/// Largest chunk a pump moves at once.
const CHUNK_BYTES: usize = 64 * 1024;

pub(super) struct Listener {
    incarnation: u64,
    accept: mpsc::UnboundedSender<SimStream>,
}

pub(super) struct Connection {
    client: NodeId,
    node: NodeId,
    kill: watch::Sender<bool>,
    /// Directions still pumping; the entry goes when both are done.
    pumping: u8,
}

impl NetState {
    /// Resets every connection `node` is an end of (it crashed).
    pub(super) fn reset_connections_of(&mut self, node: NodeId) {
        let dead: Vec<u64> = self
            .connections
            .iter()
            .filter(|(_, c)| c.client == node || c.node == node)
            .map(|(id, _)| *id)
            .collect();
        for id in dead {
            self.reset(id);
        }
        self.listeners.remove(&node);
    }

    fn reset(&mut self, conn: u64) {
        if let Some(connection) = self.connections.remove(&conn) {
            let _ = connection.kill.send(true);
            let message = NetMessage::Stream { conn, bytes: 0 };
            self.record(
                Channel::Client,
                connection.client,
                connection.node,
                message,
                NetOutcome::Reset,
            );
        }
    }
}

impl SimNetwork {
    /// Accepts client connections to `node` until its next crash; each arrives as the server's
    /// end of a stream.
    pub fn listen(&self, node: NodeId) -> mpsc::UnboundedReceiver<SimStream> {
        let (accept, accepted) = mpsc::unbounded_channel();
        let mut state = self.lock();
        let incarnation = state.incarnation(node);
        state.listeners.insert(
            node,
            Listener {
                incarnation,
                accept,
            },
        );
        accepted
    }

    /// Connects `client` to `node`: the client's end of a new stream once the handshake has
    /// crossed the link both ways; `TimedOut` if the link is down (after the connect
    /// timeout); `ConnectionRefused` if nothing listens there.
    pub async fn connect(&self, client: NodeId, node: NodeId) -> io::Result<SimStream> {
        let started = Instant::now();
        let (conn, delay) = {
            let mut state = self.lock();
            let conn = state.next_id();
            let message = NetMessage::Connect { conn };
            state.record(Channel::Client, client, node, message, NetOutcome::Sent);
            let link = state.link(client, node);
            if !link.up {
                state.record(Channel::Client, client, node, message, NetOutcome::Cut);
                (conn, None)
            } else {
                let there = link.sample_delay(&mut state.rng);
                let back = state.link(node, client).sample_delay(&mut state.rng);
                (conn, Some(there + back))
            }
        };
        let Some(delay) = delay else {
            tokio::time::sleep_until(started + self.shared.config.rpc_timeout).await;
            return Err(io::Error::new(io::ErrorKind::TimedOut, "connect timed out"));
        };
        tokio::time::sleep(delay).await;
        match self.open(conn, client, node) {
            Some(stream) => Ok(stream),
            None => {
                tokio::time::sleep_until(started + self.shared.config.failure_delay).await;
                Err(io::Error::new(
                    io::ErrorKind::ConnectionRefused,
                    "connection refused",
                ))
            }
        }
    }

    /// Hands the server's end to `node`'s listener and starts the pumps; `None` if nothing
    /// listens (the node is down, or its current incarnation has not started listening).
    fn open(&self, conn: u64, client: NodeId, node: NodeId) -> Option<SimStream> {
        let mut state = self.lock();
        let message = NetMessage::Connect { conn };
        let running = state.running_incarnation(node);
        let accept = state
            .listeners
            .get(&node)
            .filter(|listener| running == Some(listener.incarnation))
            .map(|listener| listener.accept.clone());
        let Some(accept) = accept else {
            state.record(Channel::Client, client, node, message, NetOutcome::Vanished);
            return None;
        };
        let (client_app, client_net) = tokio::io::duplex(STREAM_BUFFER_BYTES);
        let (server_app, server_net) = tokio::io::duplex(STREAM_BUFFER_BYTES);
        if accept.send(server_app).is_err() {
            state.record(Channel::Client, client, node, message, NetOutcome::Vanished);
            return None;
        }
        state.record(
            Channel::Client,
            client,
            node,
            message,
            NetOutcome::Delivered,
        );
        let (kill, killed) = watch::channel(false);
        state.connections.insert(
            conn,
            Connection {
                client,
                node,
                kill,
                pumping: 2,
            },
        );
        drop(state);
        let (client_read, client_write) = tokio::io::split(client_net);
        let (server_read, server_write) = tokio::io::split(server_net);
        let ends = Ends {
            conn,
            from: client,
            to: node,
        };
        tokio::spawn(pump(
            self.clone(),
            ends,
            client_read,
            server_write,
            killed.clone(),
        ));
        let back = Ends {
            conn,
            from: node,
            to: client,
        };
        tokio::spawn(pump(self.clone(), back, server_read, client_write, killed));
        Some(client_app)
    }

    /// The delay of a chunk sent now from `from` to `to`; `None` (and the connection reset)
    /// if the link is down or the connection is gone.
    fn chunk_delay(&self, ends: Ends, bytes: usize) -> Option<Duration> {
        let mut state = self.lock();
        if !state.connections.contains_key(&ends.conn) {
            return None;
        }
        let message = NetMessage::Stream {
            conn: ends.conn,
            bytes,
        };
        state.record(
            Channel::Client,
            ends.from,
            ends.to,
            message,
            NetOutcome::Sent,
        );
        let link = state.link(ends.from, ends.to);
        if !link.up {
            state.record(
                Channel::Client,
                ends.from,
                ends.to,
                message,
                NetOutcome::Cut,
            );
            state.reset(ends.conn);
            return None;
        }
        Some(link.sample_delay(&mut state.rng))
    }

    fn pump_done(&self, conn: u64) {
        let mut state = self.lock();
        if let Some(connection) = state.connections.get_mut(&conn) {
            connection.pumping -= 1;
            if connection.pumping == 0 {
                state.connections.remove(&conn);
            }
        }
    }
}

#[derive(Clone, Copy)]
struct Ends {
    conn: u64,
    from: NodeId,
    to: NodeId,
}

/// Moves one direction of a connection: chunks read from `source` reach `sink` after their
/// link's delay, in order, until the sender closes (the close is passed on) or the connection
/// is reset (both directions stop and drop their ends, which the applications see as a
/// closed connection).
async fn pump(
    net: SimNetwork,
    ends: Ends,
    mut source: ReadHalf<DuplexStream>,
    mut sink: WriteHalf<DuplexStream>,
    mut killed: watch::Receiver<bool>,
) {
    let (queue, mut queued) = mpsc::unbounded_channel::<(Instant, Bytes)>();
    let reader_net = net.clone();
    let read = async move {
        let mut last = Instant::now();
        let mut buffer = vec![0u8; CHUNK_BYTES];
        loop {
            let n = match source.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let Some(delay) = reader_net.chunk_delay(ends, n) else {
                return;
            };
            last = last.max(Instant::now() + delay);
            if queue
                .send((last, Bytes::copy_from_slice(&buffer[..n])))
                .is_err()
            {
                return;
            }
        }
    };
    let write = async move {
        while let Some((at, chunk)) = queued.recv().await {
            tokio::time::sleep_until(at).await;
            if sink.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = sink.shutdown().await;
    };
    let both = async {
        // The reader drops its queue when the sender closes, which ends the writer in turn.
        tokio::join!(read, write);
    };
    tokio::select! {
        biased;
        _ = killed.wait_for(|killed| *killed) => {}
        () = both => {}
    }
    net.pump_done(ends.conn);
}
