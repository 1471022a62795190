//! Identifier newtypes shared by every crate.

use serde::{Deserialize, Serialize};
use std::fmt;

macro_rules! id_newtype {
    ($(#[$doc:meta])* $name:ident($inner:ty)) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub $inner);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

id_newtype!(
    /// A node of the cluster (`--node-id`).
    NodeId(u64)
);
id_newtype!(
    /// A partition number inside a topic, 0-based.
    PartitionId(u32)
);
id_newtype!(
    /// A record's position in its partition. Contiguous from 0.
    Offset(u64)
);
id_newtype!(
    /// A topic's identity; never reused, so a re-created topic never sees old data.
    TopicId(u64)
);
