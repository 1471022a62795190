//! Client requests against the metadata, free of I/O: what command a request becomes on the
//! metadata leader (validated against the applied view, replicas placed), and what the
//! command's outcome answers.

use super::command::{MetadataCommand, MetadataOutcome, Rejection};
use super::records::NodeState;
use super::validate::{resolve_config, validate_partitions, validate_topic_name};
use super::MetadataView;
use crate::api::{ApiError, CreateTopic, ErrorCode};
use crate::placement::{place_topic, Candidate, Load};
use gregor_storage::NodeId;

/// What a creation request needs done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CreatePlan {
    /// Propose this command.
    Propose(MetadataCommand),
    /// The topic exists and an earlier attempt of this very request made it (the same
    /// creation id): answer with it, propose nothing.
    AlreadyMade,
}

/// What creating `request`'s topic takes: the command, its replicas placed on `candidates`
/// (the live `Active` members), or nothing when a lost answer's retry finds its topic made.
///
/// # Errors
/// A typed error when the name, partition count, replication factor or config is invalid, or
/// the topic exists and was made by another request.
pub fn create_topic(
    view: &MetadataView,
    candidates: &[Candidate],
    request: &CreateTopic,
) -> Result<CreatePlan, ApiError> {
    validate_topic_name(&request.name, false)?;
    if let Some(topic) = view.topic(&request.name) {
        let record = &topic.record;
        if record.created_by(
            request.creation_id,
            request.partitions,
            request.replication_factor,
        ) {
            return Ok(CreatePlan::AlreadyMade);
        }
        return Err(topic_exists(&request.name));
    }
    validate_partitions(request.partitions)?;
    let config = resolve_config(&request.config)?;
    let assignment = place_topic(
        &request.name,
        request.partitions,
        request.replication_factor,
        candidates,
        &Load::of_cluster(view),
    )?;
    Ok(CreatePlan::Propose(MetadataCommand::CreateTopic {
        name: request.name.clone(),
        partitions: request.partitions,
        replication_factor: request.replication_factor,
        config,
        internal: false,
        assignment,
        creation_id: request.creation_id,
    }))
}

/// The command that deletes the topic named `name` as it is now.
///
/// # Errors
/// `UNKNOWN_TOPIC`, or `INTERNAL_TOPIC` for internal topics.
pub fn delete_topic(view: &MetadataView, name: &str) -> Result<MetadataCommand, ApiError> {
    let topic = view
        .topic(name)
        .ok_or_else(|| ApiError::unknown_topic(name))?;
    if topic.record.internal {
        return Err(internal_topic(name));
    }
    Ok(MetadataCommand::DeleteTopic {
        name: name.to_string(),
        id: topic.record.id,
    })
}

/// The command that starts draining `node`.
///
/// # Errors
/// `UNKNOWN_NODE` when it is not a registered member, or it was removed.
pub fn drain_node(view: &MetadataView, node: NodeId) -> Result<MetadataCommand, ApiError> {
    match view.node(node) {
        Some(record) if record.state != NodeState::Removed => Ok(MetadataCommand::SetNodeState {
            node,
            state: NodeState::Draining,
        }),
        _ => Err(unknown_node(node)),
    }
}

fn topic_exists(name: &str) -> ApiError {
    ApiError::new(
        ErrorCode::TOPIC_ALREADY_EXISTS,
        format!("topic '{name}' already exists; see it with: gregor topic describe {name}"),
    )
}

fn internal_topic(name: &str) -> ApiError {
    ApiError::new(
        ErrorCode::INTERNAL_TOPIC,
        format!("topic '{name}' is internal to Gregor and cannot be deleted"),
    )
}

fn unknown_node(node: NodeId) -> ApiError {
    ApiError::new(
        ErrorCode::UNKNOWN_NODE,
        format!("node {node} is not a member of this cluster; see the members with: gregor cluster status"),
    )
}

/// What a client is told about a rejected command: the same decision on every node, so the
/// same answer whichever node forwarded the request.
pub fn rejection_error(rejection: &Rejection) -> ApiError {
    match rejection {
        Rejection::TopicExists { name } => topic_exists(name),
        Rejection::UnknownTopic { name } => ApiError::unknown_topic(name),
        Rejection::UnknownTopicId { id } => ApiError::new(
            ErrorCode::UNKNOWN_TOPIC,
            format!("topic id {id} no longer exists"),
        ),
        Rejection::UnknownPartition { partition } => ApiError::new(
            ErrorCode::UNKNOWN_PARTITION,
            format!("partition {partition} does not exist"),
        ),
        Rejection::InternalTopic { name } => internal_topic(name),
        Rejection::Invalid { reason } => ApiError::new(ErrorCode::INVALID_CONFIG, reason.clone()),
        Rejection::InvalidAssignment { reason } => ApiError::new(
            ErrorCode::INVALID_REPLICATION_FACTOR,
            format!("the placement is no longer valid ({reason}); retry"),
        ),
        Rejection::UnknownNode { node } | Rejection::NodeRemoved { node } => unknown_node(*node),
        Rejection::StaleRevision { current } => ApiError::new(
            ErrorCode::UNAVAILABLE,
            format!("the partition's assignment changed (now at revision {current}); retry"),
        ),
        Rejection::NoMoveInProgress => {
            ApiError::new(ErrorCode::UNAVAILABLE, "no move is in progress; retry")
        }
        Rejection::ProducerIdsExhausted => {
            ApiError::new(ErrorCode::INTERNAL, "every producer id has been handed out")
        }
    }
}

/// `Ok` with the outcome unless it is a rejection.
///
/// # Errors
/// The rejection, as a client error.
pub fn accepted(outcome: MetadataOutcome) -> Result<MetadataOutcome, ApiError> {
    match outcome {
        MetadataOutcome::Rejected(rejection) => Err(rejection_error(&rejection)),
        other => Ok(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::test_harness::Harness;

    fn candidates(nodes: &[u64]) -> Vec<Candidate> {
        nodes
            .iter()
            .map(|n| Candidate {
                node: NodeId(*n),
                rack: None,
            })
            .collect()
    }

    fn request(name: &str, partitions: u32, factor: u16) -> CreateTopic {
        CreateTopic {
            name: name.into(),
            partitions,
            replication_factor: factor,
            config: Default::default(),
            creation_id: None,
        }
    }

    fn command_of(plan: CreatePlan) -> MetadataCommand {
        match plan {
            CreatePlan::Propose(command) => command,
            CreatePlan::AlreadyMade => panic!("nothing to propose"),
        }
    }

    #[test]
    fn a_create_is_validated_placed_and_then_applied() {
        let mut harness = Harness::new();
        for line in ["register 1", "register 2", "register 3"] {
            harness.try_run(line);
        }
        let live = candidates(&[1, 2, 3]);
        let command =
            command_of(create_topic(harness.core.view(), &live, &request("t", 6, 3)).unwrap());
        let MetadataCommand::CreateTopic { assignment, .. } = &command else {
            panic!("{command:?}")
        };
        assert_eq!(assignment.len(), 6);
        assert!(assignment.iter().all(|set| set.len() == 3));
        assert!(harness.apply(command).starts_with("TopicCreated"));
        let view = harness.core.view();
        let codes = [
            create_topic(view, &live, &request("t", 1, 1)),
            create_topic(view, &live, &request("u", 1, 4)),
            create_topic(view, &live, &request("u", 0, 1)),
            create_topic(view, &live, &request("__u", 1, 1)),
            create_topic(view, &candidates(&[]), &request("u", 1, 1)),
        ]
        .map(|r| r.unwrap_err().code);
        assert_eq!(
            codes,
            [
                ErrorCode::TOPIC_ALREADY_EXISTS,
                ErrorCode::INVALID_REPLICATION_FACTOR,
                ErrorCode::INVALID_PARTITIONS,
                ErrorCode::INTERNAL_TOPIC,
                ErrorCode::INVALID_REPLICATION_FACTOR,
            ]
        );
    }

    /// Two creations planned against the same view (a client retrying through another node,
    /// say): the second one commits as a rejection, which the client sees as the topic
    /// existing, never as a second topic.
    #[test]
    fn a_create_that_commits_twice_is_rejected_the_second_time() {
        let mut harness = Harness::new();
        harness.try_run("register 1");
        let live = candidates(&[1]);
        let first =
            command_of(create_topic(harness.core.view(), &live, &request("t", 1, 1)).unwrap());
        let second =
            command_of(create_topic(harness.core.view(), &live, &request("t", 1, 1)).unwrap());
        harness.apply(first);
        let mut rows = harness.rows.clone();
        let outcome = harness
            .core
            .apply(harness.index + 1, &second, &mut rows)
            .unwrap();
        assert_eq!(
            accepted(outcome).unwrap_err().code,
            ErrorCode::TOPIC_ALREADY_EXISTS
        );
    }

    /// A client whose create timed out sends it again with the same creation id. Whether the
    /// retry is planned after the first attempt was applied (nothing to propose) or before
    /// (its command commits second), it is answered with the topic the first attempt made;
    /// a create with another id, or none, is still refused.
    #[test]
    fn a_retried_create_finds_the_topic_its_first_attempt_made() {
        let mut harness = Harness::new();
        harness.try_run("register 1");
        let live = candidates(&[1]);
        let ours = CreateTopic {
            creation_id: Some(7),
            ..request("t", 2, 1)
        };
        let first = command_of(create_topic(harness.core.view(), &live, &ours).unwrap());
        let retry_planned_early =
            command_of(create_topic(harness.core.view(), &live, &ours).unwrap());
        assert!(harness.apply(first).starts_with("TopicCreated"));
        let made = harness.core.view().topic("t").unwrap().clone();
        assert_eq!(made.record.creation_id, Some(7));

        assert_eq!(
            create_topic(harness.core.view(), &live, &ours).unwrap(),
            CreatePlan::AlreadyMade
        );
        let outcome = harness.apply(retry_planned_early);
        assert_eq!(
            outcome,
            format!(
                "{:?}",
                MetadataOutcome::TopicCreated {
                    id: made.record.id,
                    revision: made.created_revision
                }
            )
        );
        assert_eq!(
            **harness.core.view().topic("t").unwrap(),
            *made,
            "nothing changed"
        );

        let foreign = [
            CreateTopic {
                creation_id: Some(8),
                ..request("t", 2, 1)
            },
            request("t", 2, 1),
            CreateTopic {
                creation_id: Some(7),
                ..request("t", 3, 1)
            },
        ];
        for other in &foreign {
            assert_eq!(
                create_topic(harness.core.view(), &live, other)
                    .unwrap_err()
                    .code,
                ErrorCode::TOPIC_ALREADY_EXISTS,
                "{other:?}"
            );
        }
        let foreign_command = MetadataCommand::CreateTopic {
            name: "t".into(),
            partitions: 2,
            replication_factor: 1,
            config: Default::default(),
            internal: false,
            assignment: vec![vec![NodeId(1)]; 2],
            creation_id: Some(8),
        };
        assert_eq!(
            harness.apply(foreign_command),
            format!(
                "{:?}",
                MetadataOutcome::Rejected(Rejection::TopicExists { name: "t".into() })
            )
        );
    }

    #[test]
    fn deletes_and_drains_name_what_exists() {
        let mut harness = Harness::new();
        harness.try_run("register 1");
        harness.try_run("create t partitions=1 rf=1 assign=1");
        harness.try_run("create __i partitions=1 rf=1 assign=1 internal");
        let view = harness.core.view();
        assert!(matches!(
            delete_topic(view, "t"),
            Ok(MetadataCommand::DeleteTopic { .. })
        ));
        assert_eq!(
            delete_topic(view, "x").unwrap_err().code,
            ErrorCode::UNKNOWN_TOPIC
        );
        assert_eq!(
            delete_topic(view, "__i").unwrap_err().code,
            ErrorCode::INTERNAL_TOPIC
        );
        assert!(drain_node(view, NodeId(1)).is_ok());
        assert_eq!(
            drain_node(view, NodeId(2)).unwrap_err().code,
            ErrorCode::UNKNOWN_NODE
        );
    }
}
