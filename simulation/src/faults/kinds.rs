//! The kinds of faults, and which ones a run enables (swarm testing: each seed enables a random
//! subset, so that rare combinations get runs where nothing else drowns them out).

use rand::rngs::SmallRng;
use rand::Rng;
use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FaultKind {
    /// A node's process dies; it restarts a few seconds later.
    Crash,
    /// A node loses power: writes not yet fsynced are lost (a seeded prefix survives).
    PowerLoss,
    /// As power loss, with the next write torn half way.
    TornWrite,
    /// An fsync fails: the node must stop serving; it is power-cycled later.
    FsyncFailure,
    /// The nodes split in two groups that cannot reach each other.
    Partition,
    /// One node cannot reach another, while the other still reaches it.
    OneWayPartition,
    /// Every node alone.
    Islands,
    /// The metadata leader cut off from every other node.
    IsolateMetadataLeader,
    /// Messages between nodes are lost.
    MessageLoss,
    /// Messages between nodes arrive twice.
    Duplication,
    /// Messages between nodes overtake each other (jitter).
    Reordering,
    /// Now and then a message takes much longer.
    DelaySpikes,
    /// fsyncs of a node take long, and sometimes stall.
    SlowDisk,
    /// A node's wall clock runs ahead or behind (record timestamps, retention).
    ClockSkew,
    /// Leaders are asked to step down.
    LeadershipChurn,
    /// Nodes are drained and replicas re-placed while other faults strike.
    Membership,
    /// Topics are created and deleted under load.
    TopicChurn,
    /// Stable topics have a short retention, so logs are trimmed while they are read.
    Retention,
    /// Links between clients and nodes are cut.
    ClientLinks,
}

impl FaultKind {
    pub const ALL: [FaultKind; 19] = [
        FaultKind::Crash,
        FaultKind::PowerLoss,
        FaultKind::TornWrite,
        FaultKind::FsyncFailure,
        FaultKind::Partition,
        FaultKind::OneWayPartition,
        FaultKind::Islands,
        FaultKind::IsolateMetadataLeader,
        FaultKind::MessageLoss,
        FaultKind::Duplication,
        FaultKind::Reordering,
        FaultKind::DelaySpikes,
        FaultKind::SlowDisk,
        FaultKind::ClockSkew,
        FaultKind::LeadershipChurn,
        FaultKind::Membership,
        FaultKind::TopicChurn,
        FaultKind::Retention,
        FaultKind::ClientLinks,
    ];

    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Crash => "crash",
            FaultKind::PowerLoss => "power-loss",
            FaultKind::TornWrite => "torn-write",
            FaultKind::FsyncFailure => "fsync-failure",
            FaultKind::Partition => "partition",
            FaultKind::OneWayPartition => "one-way-partition",
            FaultKind::Islands => "islands",
            FaultKind::IsolateMetadataLeader => "isolate-metadata-leader",
            FaultKind::MessageLoss => "loss",
            FaultKind::Duplication => "duplication",
            FaultKind::Reordering => "reordering",
            FaultKind::DelaySpikes => "delay-spikes",
            FaultKind::SlowDisk => "slow-disk",
            FaultKind::ClockSkew => "clock-skew",
            FaultKind::LeadershipChurn => "leadership-churn",
            FaultKind::Membership => "membership",
            FaultKind::TopicChurn => "topic-churn",
            FaultKind::Retention => "retention",
            FaultKind::ClientLinks => "client-links",
        }
    }

    /// Faults that lose unsynced writes: only the model disk can have them.
    pub fn needs_model_disk(self) -> bool {
        matches!(
            self,
            FaultKind::PowerLoss | FaultKind::TornWrite | FaultKind::FsyncFailure
        )
    }

    /// Whether the fault can strike a cluster of `nodes` nodes: faults between nodes, the
    /// metadata leader's isolation and membership changes need two or more (a node alone runs
    /// without the cluster layer's peers); leadership churn needs a group with a leader.
    pub fn applies_to(self, nodes: u32) -> bool {
        match self {
            FaultKind::Partition
            | FaultKind::OneWayPartition
            | FaultKind::Islands
            | FaultKind::MessageLoss
            | FaultKind::Duplication
            | FaultKind::Reordering
            | FaultKind::DelaySpikes
            | FaultKind::IsolateMetadataLeader
            | FaultKind::LeadershipChurn
            | FaultKind::Membership => nodes >= 2,
            _ => true,
        }
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for FaultKind {
    type Err = String;
    fn from_str(name: &str) -> Result<FaultKind, String> {
        FaultKind::ALL
            .into_iter()
            .find(|k| k.name() == name)
            .ok_or_else(|| {
                let known: Vec<&str> = FaultKind::ALL.iter().map(|k| k.name()).collect();
                format!("unknown fault '{name}'; known: {}", known.join(", "))
            })
    }
}

/// Which faults a run may draw from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum FaultChoice {
    /// Swarm testing: each applicable kind is enabled with probability one half.
    #[default]
    Swarm,
    /// Every applicable kind.
    All,
    /// Exactly these (those that apply).
    Only(BTreeSet<FaultKind>),
}

impl FromStr for FaultChoice {
    type Err = String;
    /// `swarm`, `all`, `none`, or a comma-separated list of fault names.
    fn from_str(text: &str) -> Result<FaultChoice, String> {
        match text {
            "swarm" => Ok(FaultChoice::Swarm),
            "all" => Ok(FaultChoice::All),
            "none" | "" => Ok(FaultChoice::Only(BTreeSet::new())),
            list => list
                .split(',')
                .map(|name| name.trim().parse())
                .collect::<Result<BTreeSet<_>, _>>()
                .map(FaultChoice::Only),
        }
    }
}

impl FaultChoice {
    /// The kinds a run of `nodes` nodes enables.
    pub fn draw(&self, nodes: u32, rng: &mut SmallRng) -> BTreeSet<FaultKind> {
        // Every kind costs one draw whatever the choice, so choices do not shift later draws.
        let coin: Vec<bool> = FaultKind::ALL.iter().map(|_| rng.gen_bool(0.5)).collect();
        FaultKind::ALL
            .into_iter()
            .zip(coin)
            .filter(|(kind, _)| kind.applies_to(nodes))
            .filter(|(kind, heads)| match self {
                FaultChoice::Swarm => *heads,
                FaultChoice::All => true,
                FaultChoice::Only(kinds) => kinds.contains(kind),
            })
            .map(|(kind, _)| kind)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn names_round_trip_and_lists_parse() {
        for kind in FaultKind::ALL {
            assert_eq!(kind.name().parse::<FaultKind>(), Ok(kind));
        }
        assert_eq!(
            "crash, loss".parse::<FaultChoice>(),
            Ok(FaultChoice::Only(
                [FaultKind::Crash, FaultKind::MessageLoss].into()
            ))
        );
        assert!("crash,meteor".parse::<FaultChoice>().is_err());
    }

    #[test]
    fn swarm_enables_a_varying_subset_and_all_enables_what_applies() {
        let mut subsets = BTreeSet::new();
        for seed in 0..20 {
            let mut rng = SmallRng::seed_from_u64(seed);
            subsets.insert(FaultChoice::Swarm.draw(3, &mut rng));
        }
        assert!(subsets.len() > 10, "swarm should vary: {subsets:?}");
        let mut rng = SmallRng::seed_from_u64(1);
        let all = FaultChoice::All.draw(1, &mut rng);
        assert!(all.contains(&FaultKind::Crash));
        assert!(
            !all.contains(&FaultKind::Partition),
            "no peers to partition"
        );
    }
}
