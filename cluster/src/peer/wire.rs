//! The bytes on a peer connection.
//!
//! Every frame is a 4-byte big-endian length, then that many bytes of msgpack. The first frame
//! each way is the handshake ([`Hello`], then [`HelloReply`]); every later frame is a msgpack
//! array of [`WireMessage`]s, requests and responses of any group mixed, each encoded once
//! when it is queued and copied into the frame that carries it.

use crate::rpc::{self, RpcError, RpcRequest, RpcResult};
use gregor_storage::NodeId;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Bumped when the frame or message format changes incompatibly; a peer speaking another
/// version is refused at the handshake.
pub(crate) const PROTOCOL_VERSION: u32 = 1;

/// Handshake frames are small; a larger one is not a peer of ours.
pub(crate) const MAX_HANDSHAKE_BYTES: usize = 4096;

const LENGTH_BYTES: usize = 4;

/// The dialer's first frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Hello {
    pub(crate) protocol: u32,
    pub(crate) cluster_id: String,
    pub(crate) from: NodeId,
    pub(crate) to: NodeId,
}

/// The acceptor's answer; a refusal says why and the connection closes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum HelloReply {
    Accepted { node: NodeId, cluster_id: String },
    Refused { reason: String },
}

/// One message of a frame, as sent (borrowing the request it encodes).
#[derive(Serialize)]
pub(crate) enum OutboundMessage<'a> {
    Request { id: u64, request: &'a RpcRequest },
    Response { id: u64, outcome: &'a RpcResult },
}

/// One message of a frame, as received. Same shape as [`OutboundMessage`].
#[derive(Deserialize)]
pub(crate) enum WireMessage {
    Request { id: u64, request: RpcRequest },
    Response { id: u64, outcome: RpcResult },
}

pub(crate) fn encode_message(message: &OutboundMessage<'_>) -> Result<Vec<u8>, RpcError> {
    rpc::encode(message)
}

/// Frame overhead beyond its messages: the length prefix and the largest array header.
pub(crate) const FRAME_OVERHEAD_BYTES: usize = LENGTH_BYTES + 5;

/// Lays out a frame around already encoded messages.
pub(crate) fn build_frame<'a>(messages: impl ExactSizeIterator<Item = &'a [u8]>) -> Vec<u8> {
    let count = messages.len();
    let mut frame = vec![0u8; LENGTH_BYTES];
    write_array_header(&mut frame, count);
    for message in messages {
        frame.extend_from_slice(message);
    }
    let body_len = u32::try_from(frame.len() - LENGTH_BYTES).expect("frame body over 4 GiB");
    frame[..LENGTH_BYTES].copy_from_slice(&body_len.to_be_bytes());
    frame
}

/// msgpack's array header (fixarray, array 16 or array 32).
fn write_array_header(buffer: &mut Vec<u8>, count: usize) {
    if count < 16 {
        buffer.push(0x90 | count as u8);
    } else if let Ok(count) = u16::try_from(count) {
        buffer.push(0xdc);
        buffer.extend_from_slice(&count.to_be_bytes());
    } else {
        let count = u32::try_from(count).expect("over 4 billion messages in a frame");
        buffer.push(0xdd);
        buffer.extend_from_slice(&count.to_be_bytes());
    }
}

pub(crate) fn decode_frame(body: &[u8]) -> Result<Vec<WireMessage>, RpcError> {
    rpc::decode(body)
}

/// Why reading a frame failed; every case closes the connection.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FrameError {
    #[error("connection closed")]
    Closed,
    #[error("frame of {bytes} bytes exceeds the limit of {max_bytes}")]
    TooLarge { bytes: usize, max_bytes: usize },
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

/// Reads one frame body, refusing one longer than `max_bytes` before reading it.
pub(crate) async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    max_bytes: usize,
) -> Result<Vec<u8>, FrameError> {
    let mut length = [0u8; LENGTH_BYTES];
    match reader.read_exact(&mut length).await {
        Ok(_) => {}
        Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => {
            return Err(FrameError::Closed)
        }
        Err(error) => return Err(error.into()),
    }
    let bytes = u32::from_be_bytes(length) as usize;
    if bytes > max_bytes {
        return Err(FrameError::TooLarge { bytes, max_bytes });
    }
    let mut body = vec![0u8; bytes];
    reader.read_exact(&mut body).await?;
    Ok(body)
}

/// Writes a small control frame (the handshake).
pub(crate) async fn write_control<W: AsyncWrite + Unpin, T: Serialize>(
    writer: &mut W,
    value: &T,
) -> std::io::Result<()> {
    let body = rmp_serde::to_vec(value).map_err(std::io::Error::other)?;
    let length = u32::try_from(body.len()).map_err(std::io::Error::other)?;
    writer.write_all(&length.to_be_bytes()).await?;
    writer.write_all(&body).await?;
    writer.flush().await
}

/// Reads a small control frame (the handshake).
pub(crate) async fn read_control<R: AsyncRead + Unpin, T: for<'a> Deserialize<'a>>(
    reader: &mut R,
) -> Result<T, String> {
    let body = read_frame(reader, MAX_HANDSHAKE_BYTES)
        .await
        .map_err(|error| error.to_string())?;
    rmp_serde::from_slice(&body).map_err(|error| format!("malformed handshake: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rpc::RpcResponse;
    use bytes::Bytes;

    #[test]
    fn a_frame_of_separately_encoded_messages_decodes_as_one_array() {
        for count in [0usize, 1, 15, 16, 300, 70_000] {
            let requests: Vec<RpcRequest> = (0..count)
                .map(|i| RpcRequest::NodeMessage(Bytes::from(i.to_string())))
                .collect();
            let outcome: RpcResult = Ok(RpcResponse::NodeMessage(Bytes::from_static(b"r")));
            let mut encoded: Vec<Vec<u8>> = requests
                .iter()
                .enumerate()
                .map(|(id, request)| {
                    let id = id as u64;
                    encode_message(&OutboundMessage::Request { id, request }).unwrap()
                })
                .collect();
            encoded.push(
                encode_message(&OutboundMessage::Response {
                    id: 9,
                    outcome: &outcome,
                })
                .unwrap(),
            );
            let frame = build_frame(encoded.iter().map(Vec::as_slice));
            let length = u32::from_be_bytes(frame[..4].try_into().unwrap()) as usize;
            assert_eq!(length, frame.len() - 4);
            let messages = decode_frame(&frame[4..]).unwrap();
            assert_eq!(messages.len(), count + 1);
            for (i, message) in messages.iter().take(count).enumerate() {
                let WireMessage::Request {
                    id,
                    request: RpcRequest::NodeMessage(body),
                } = message
                else {
                    panic!("message {i} is not the request sent");
                };
                assert_eq!((*id, body.clone()), (i as u64, Bytes::from(i.to_string())));
            }
            assert!(matches!(
                messages.last(),
                Some(WireMessage::Response {
                    id: 9,
                    outcome: Ok(_)
                })
            ));
        }
    }

    #[tokio::test]
    async fn a_frame_over_the_limit_is_refused_before_its_body_is_read() {
        let mut bytes: &[u8] = &[0, 0, 1, 0, 1, 2, 3];
        let error = read_frame(&mut bytes, 255).await.unwrap_err();
        assert!(matches!(
            error,
            FrameError::TooLarge {
                bytes: 256,
                max_bytes: 255
            }
        ));
    }
}
