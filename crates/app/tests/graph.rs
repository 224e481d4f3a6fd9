//! Task graphs on in-memory adapters: release, cascading cancel, rollback and its preview,
//! lineage and the model filter.

mod common;

use baton_app::{Direction, GraphError, Handled, ModelQuery, SubmitError};
use baton_domain::{
    Command, DependencyError, EventKind, Outcome, Provenance, Status, Task, TaskId,
};
use common::{World, failure, lease, request, success, world};
use serde_json::json;

fn ids(tasks: &[&Task]) -> Vec<String> {
    tasks.iter().map(|task| task.id.to_string()).collect()
}

impl World {
    async fn after(&self, dependencies: &[&Task]) -> Task {
        self.submit(json!({"depends_on": ids(dependencies), "retry": {"max_attempts": 1}}))
            .await
    }

    /// A → B, A → C, B + C → D.
    async fn diamond(&self) -> [Task; 4] {
        let a = self.submit(json!({})).await;
        let (b, c) = (self.after(&[&a]).await, self.after(&[&a]).await);
        let d = self.after(&[&b, &c]).await;
        [a, b, c, d]
    }

    /// Dispatches `task` and completes it with `result`.
    async fn finish(&self, task: &Task, result: Command) -> Task {
        self.run(
            task,
            Command::Dispatch {
                attempt: 1,
                lease: lease(),
            },
        )
        .await;
        self.run(task, result).await;
        self.reload(task).await
    }

    fn events_of(&self, task: &Task, kind: EventKind) -> usize {
        self.bus
            .published()
            .iter()
            .filter(|event| event.task_id == task.id && event.kind == kind)
            .count()
    }
}

fn produced_by(model: &str, tokens: u64) -> Command {
    let provenance: Provenance = serde_json::from_value(json!({
        "model": model, "tokens_in": tokens, "tokens_out": tokens / 2, "worker_id": "w-1"
    }))
    .unwrap();
    Command::Complete {
        lease: Some(lease()),
        attempt: 1,
        outcome: Outcome::Succeeded {
            output: json!({"rows": tokens}),
        },
        provenance: Some(provenance),
    }
}

fn releases(task: &Task) -> usize {
    task.history
        .iter()
        .filter(|entry| entry.cause == "released")
        .count()
}

#[tokio::test]
async fn a_diamond_releases_its_join_once_after_both_branches() {
    let w = world();
    let [a, b, c, d] = w.diamond().await;
    assert_eq!((b.status, d.status), (Status::Pending, Status::Pending));
    assert_eq!(w.reload(&a).await.dependents, [b.id, c.id]);

    w.finish(&a, success(1)).await;
    assert_eq!(w.reload(&b).await.status, Status::Scheduled);
    assert_eq!(w.reload(&c).await.status, Status::Scheduled);
    w.finish(&b, success(1)).await;
    assert_eq!(w.reload(&d).await.status, Status::Pending, "C is not done");

    // C's success is committed, then both branches ask for D's release: B's result delivered
    // again, and C's own effects.
    let running_c = w.reload(&c).await;
    w.finish(&c, success(1)).await;
    w.run(&b, success(1)).await;
    w.run(&running_c, success(1)).await;
    let d = w.reload(&d).await;
    assert_eq!(d.status, Status::Scheduled);
    assert_eq!(releases(&d), 1, "one release in D's history");
    assert_eq!(d.version, 2);
    assert!(w.events_of(&d, EventKind::Released) >= 1);
    assert_eq!(w.events_of(&d, EventKind::Submitted), 1);
}

#[tokio::test]
async fn a_success_delivered_again_repeats_what_the_release_of_its_dependent_sent() {
    let w = world();
    let a = w.submit(json!({})).await;
    let b = w.after(&[&a]).await;
    let armed = |w: &World| {
        let armed = w.timers.armed();
        armed
            .iter()
            .filter(|(timer, _)| timer.task_id == b.id)
            .count()
    };
    w.finish(&a, success(1)).await;
    assert_eq!((w.events_of(&b, EventKind::Released), armed(&w)), (1, 1));

    // A function sends a batch's events and timers when the batch is done: if they did not go
    // out, the result comes again and its release of B sends them again.
    w.run(&a, success(1)).await;
    assert_eq!((w.events_of(&b, EventKind::Released), armed(&w)), (2, 2));
    let released = w.reload(&b).await;
    assert_eq!(
        (released.version, releases(&released)),
        (2, 1),
        "released once"
    );

    // Once B has started, there is nothing to repeat.
    let dispatch = Command::Dispatch {
        attempt: 1,
        lease: lease(),
    };
    w.run(&b, dispatch).await;
    w.run(&a, success(1)).await;
    assert_eq!((w.events_of(&b, EventKind::Released), armed(&w)), (2, 2));
}

#[tokio::test]
async fn a_failed_dependency_cancels_its_dependents_transitively() {
    let w = world();
    let [a, b, c, d] = w.diamond().await;
    let e = w.after(&[&d]).await;
    w.finish(&a, success(1)).await;
    w.finish(&b, failure(1)).await;
    assert_eq!(w.pump().await, 2, "D, then E");
    let (d, e) = (w.reload(&d).await, w.reload(&e).await);
    assert_eq!(d.status, Status::Cancelled);
    assert_eq!(d.reason.unwrap(), format!("dependency {} failed", b.id));
    assert_eq!(e.status, Status::Cancelled);
    assert_eq!(
        e.reason.unwrap(),
        format!("dependency {} was cancelled", d.id)
    );
    assert_eq!(w.reload(&c).await.status, Status::Scheduled, "C goes on");
}

#[tokio::test]
async fn a_rollback_walks_the_chain_once_whatever_the_repeats() {
    let w = world();
    let a = w.submit(json!({})).await;
    let b = w.after(&[&a]).await;
    let c = w.after(&[&b]).await;
    let late = w.after(&[&c]).await;
    w.finish(&a, produced_by("m-1", 100)).await;
    w.finish(&b, produced_by("m-1", 10)).await;
    w.finish(&c, produced_by("m-2", 1)).await;
    w.run(
        &late,
        Command::Dispatch {
            attempt: 1,
            lease: lease(),
        },
    )
    .await;

    let preview = w.baton.rollback_preview(&a.tenant, &a.id).await.unwrap();
    let rolled: Vec<TaskId> = preview.rolled_back.iter().map(|t| t.id).collect();
    assert_eq!(rolled, [a.id, b.id, c.id]);
    assert_eq!(preview.cancelled.len(), 1);
    assert_eq!(preview.cancelled[0].id, late.id);
    assert_eq!(preview.tokens(), (111, 55));
    assert_eq!(preview.projects().len(), 1);
    assert_eq!(
        preview.by_status(),
        [(Status::Running, 1), (Status::Succeeded, 3)]
    );
    let before = w.bus.published().len();
    assert_eq!(
        w.baton.rollback_preview(&a.tenant, &a.id).await.unwrap(),
        preview
    );
    assert_eq!(w.bus.published().len(), before, "a preview changes nothing");

    for request in ["req-1", "req-2"] {
        let handled = w
            .baton
            .rollback(&a.tenant, &a.id, "bad model", request)
            .await;
        assert!(matches!(
            handled,
            Ok(Handled::Applied(_) | Handled::AlreadyApplied(_))
        ));
        w.pump().await;
    }
    for task in [&a, &b, &c] {
        let task = w.reload(task).await;
        assert_eq!(task.status, Status::RolledBack);
        let taint = task.taint.as_ref().unwrap();
        assert_eq!((taint.root, taint.request.as_str()), (a.id, "req-1"));
        assert_eq!(w.events_of(&task, EventKind::RolledBack), 1);
        assert!(task.provenance.is_some(), "kept for compensation");
    }
    let late = w.reload(&late).await;
    assert_eq!(late.status, Status::Cancelled);
    assert_eq!(w.events_of(&late, EventKind::Cancelled), 1);
    let event = w
        .bus
        .published()
        .into_iter()
        .find(|e| e.task_id == b.id && e.kind == EventKind::RolledBack)
        .unwrap();
    assert_eq!(event.provenance.unwrap().model.unwrap(), "m-1");
    assert_eq!(event.taint.unwrap().via, Some(a.id));
    let preview = w.baton.rollback_preview(&a.tenant, &a.id).await.unwrap();
    assert_eq!(preview.touched().count(), 0, "nothing left to roll back");
}

#[tokio::test]
async fn unfinished_tasks_cannot_be_rolled_back() {
    let w = world();
    let a = w.submit(json!({})).await;
    assert!(matches!(
        w.baton.rollback(&a.tenant, &a.id, "why", "r").await,
        Ok(Handled::Rejected(_))
    ));
    assert!(matches!(
        w.baton.rollback_preview(&a.tenant, &a.id).await,
        Err(GraphError::Rejected(_))
    ));
}

#[tokio::test]
async fn unknown_cyclic_foreign_and_failed_dependencies_are_refused_by_name() {
    let w = world();
    let a = w.after(&[]).await;
    let missing = TaskId::from_uuid(uuid::Uuid::now_v7());
    let refused = |result: Result<_, SubmitError>| match result {
        Err(SubmitError::Dependency(error)) => error,
        other => panic!("expected a dependency error, got {other:?}"),
    };
    let unknown = request(json!({"depends_on": [a.id.to_string(), missing.to_string()]}));
    let fresh = TaskId::from_uuid(uuid::Uuid::now_v7());
    assert_eq!(
        refused(w.baton.submit(&unknown, fresh).await),
        DependencyError::Unknown(vec![missing])
    );
    let foreign = request(json!({"tenant": "globex", "depends_on": [a.id.to_string()]}));
    assert_eq!(
        refused(w.baton.submit(&foreign, fresh).await),
        DependencyError::Unknown(vec![a.id])
    );
    let own = request(json!({"depends_on": [fresh.to_string()]}));
    let cycle = refused(w.baton.submit(&own, fresh).await);
    assert_eq!(cycle, DependencyError::Cycle(vec![fresh]));
    assert!(cycle.to_string().contains(&fresh.to_string()));
    w.finish(&a, failure(1)).await;
    let after_failure = request(json!({"depends_on": [a.id.to_string()]}));
    assert!(matches!(
        refused(w.baton.submit(&after_failure, fresh).await),
        DependencyError::Finished(_)
    ));
    assert!(w.baton.task(&a.tenant, &fresh).await.unwrap().is_none());
}

#[tokio::test]
async fn a_dependency_that_moves_during_the_submit_is_read_again() {
    let w = world();
    let a = w.submit(json!({})).await;
    // Between the submit's read of A and its write, A starts.
    let Some(baton_domain::Decision::Apply(dispatch)) = baton_domain::decide(
        &a,
        &Command::Dispatch {
            attempt: 1,
            lease: lease(),
        },
        w.baton.now(),
    )
    .ok() else {
        panic!("A is due");
    };
    w.store.race_next_commit(dispatch.task.clone());
    let id = TaskId::from_uuid(uuid::Uuid::now_v7());
    let b = request(json!({"depends_on": [a.id.to_string()]}));
    let created = w.baton.submit(&b, id).await.unwrap().task;
    assert_eq!(created.status, Status::Pending);
    let a = w.reload(&a).await;
    assert_eq!(
        (a.status, a.dependents.as_slice()),
        (Status::Running, &[id][..])
    );
}

#[tokio::test]
async fn lineage_walks_either_way_with_its_edges_and_depth() {
    let w = world();
    let [a, b, c, d] = w.diamond().await;
    let down = w
        .baton
        .lineage(&a.tenant, &a.id, Direction::Downstream, 10)
        .await
        .unwrap();
    assert_eq!(down.nodes.len(), 4);
    assert_eq!(down.nodes[0].id, a.id);
    assert_eq!(down.edges.len(), 4);
    assert!(down.edges.contains(&(c.id, d.id)));
    let up = w
        .baton
        .lineage(&d.tenant, &d.id, Direction::Upstream, 1)
        .await
        .unwrap();
    let mut found: Vec<TaskId> = up.nodes.iter().map(|t| t.id).collect();
    found.sort();
    let mut expected = vec![b.id, c.id, d.id];
    expected.sort();
    assert_eq!(found, expected, "one level up");
    assert_eq!(up.edges, [(b.id, d.id), (c.id, d.id)]);
    assert!(!up.truncated);
}

#[tokio::test]
async fn results_are_found_by_the_model_that_produced_them() {
    let w = world();
    let (a, b, c) = (
        w.submit(json!({})).await,
        w.submit(json!({})).await,
        w.submit(json!({})).await,
    );
    w.finish(&a, produced_by("m-1", 5)).await;
    w.clock.advance(chrono::Duration::minutes(5));
    let since = w.baton.now();
    w.finish(&b, produced_by("m-1", 5)).await;
    w.finish(&c, produced_by("m-2", 5)).await;
    let query = |since| ModelQuery {
        tenant: a.tenant.clone(),
        model: "m-1".into(),
        since,
        until: None,
        first: 10,
        after: None,
    };
    let all = w.baton.produced_by(&query(None)).await.unwrap();
    let found: Vec<TaskId> = all.tasks.iter().map(|t| t.id).collect();
    assert_eq!(found, [b.id, a.id], "newest first");
    let recent = w.baton.produced_by(&query(Some(since))).await.unwrap();
    assert_eq!(recent.tasks.len(), 1);
    let next = ModelQuery {
        first: 1,
        after: Some(b.id),
        ..query(None)
    };
    assert_eq!(w.baton.produced_by(&next).await.unwrap().tasks[0].id, a.id);
}
