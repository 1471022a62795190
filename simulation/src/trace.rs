//! The event trace: every event the harness sees, in order, with its virtual time. Its digest
//! (FNV-1a, stable across platforms and releases) identifies a run.

#[derive(Debug, Default)]
pub struct Trace {
    events: Vec<String>,
    digest: u64,
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

impl Trace {
    pub fn new() -> Self {
        Trace {
            events: Vec::new(),
            digest: FNV_OFFSET,
        }
    }

    pub fn record(&mut self, at_ms: u64, event: String) {
        let line = format!("{at_ms:>9} {event}");
        for byte in line.bytes().chain(std::iter::once(b'\n')) {
            self.digest ^= u64::from(byte);
            self.digest = self.digest.wrapping_mul(FNV_PRIME);
        }
        self.events.push(line);
    }

    pub fn digest(&self) -> u64 {
        self.digest
    }

    pub fn events(&self) -> &[String] {
        &self.events
    }
}
