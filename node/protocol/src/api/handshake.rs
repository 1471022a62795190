//! The handshake: the first request on every connection.

use crate::ids::NodeId;
use serde::{Deserialize, Serialize};

/// The wire protocol version this build speaks. Bumped on any incompatible change.
pub const PROTOCOL_VERSION: u16 = 1;

/// First frame on every connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub protocol_version: u16,
    pub client_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HelloReply {
    pub protocol_version: u16,
    pub node_id: NodeId,
    pub server_version: String,
    pub max_frame_bytes: u32,
}
