//! Lifecycle invariants over random agent scripts, including failure, panic and cancellation.

mod common;

use std::collections::HashMap;

use core_registry::{AgentRegistry, EventKind, Outcome};

use common::{Rng, Scripted, check_stream, expected_names, expected_outcome, outcome_of, recv_until_terminals};

/// When a test cancels a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CancelAt {
    Never,
    /// Right after `run` returns, usually before the run task is first polled.
    Start,
    /// When the consumer has received this many of the run's events (if the run gets that far).
    Event(usize),
}

/// Runs `sessions` x `runs` random scripts concurrently, cancels every run that would wait forever plus some at
/// random (at once or in the middle of the run), and checks every run's events against the script.
async fn check_random_scripts(seed: u64, sessions: usize, runs: usize, buffer: usize) {
    let registry = AgentRegistry::builder().register("scripted", || Scripted).event_buffer(buffer).build().unwrap();
    let mut rng = Rng::new(seed);
    let mut tasks = Vec::new();
    for user in 0..sessions {
        let plans: Vec<(String, CancelAt)> = (0..runs)
            .map(|_| {
                let script = rng.script(10);
                let waits = expected_outcome(&script).is_none();
                let cancel = match rng.below(6) {
                    0 => CancelAt::Start,
                    // A run that waits forever has emitted at least `agent_started`.
                    1 | 2 if waits => CancelAt::Event(1),
                    1 | 2 => CancelAt::Event(1 + rng.below(4) as usize),
                    _ if waits => CancelAt::Start,
                    _ => CancelAt::Never,
                };
                (script, cancel)
            })
            .collect();
        let registry = registry.clone();
        tasks.push(tokio::spawn(async move {
            let (session, mut events) = registry.open_session(&format!("user-{user}")).unwrap();
            let mut plan_by_run = HashMap::new();
            for (script, cancel) in plans {
                let run = session.run("scripted", script.as_str()).unwrap();
                if cancel == CancelAt::Start {
                    // A run that does not wait may have finished already: then there is nothing to cancel.
                    let _ = session.cancel(run);
                }
                plan_by_run.insert(run, (script, cancel));
            }
            let mut received = Vec::new();
            let mut seen: HashMap<_, usize> = HashMap::new();
            let mut terminals = 0;
            while terminals < runs {
                let event = events.recv().await.expect("the stream ended before every run completed");
                let count = seen.entry(event.run_id()).or_default();
                *count += 1;
                terminals += usize::from(event.kind().is_terminal());
                if plan_by_run[&event.run_id()].1 == CancelAt::Event(*count) && !event.kind().is_terminal() {
                    // The run may be emitting its last events already: then it is no longer cancellable.
                    let _ = session.cancel(event.run_id());
                }
                received.push(event);
            }
            drop(session);
            assert!(events.recv().await.is_none(), "events after every run completed");
            (plan_by_run, received)
        }));
    }
    let mut mid_run_cancels = 0;
    for task in tasks {
        let (plan_by_run, received) = task.await.unwrap();
        let runs = check_stream(&received);
        assert_eq!(runs.len(), plan_by_run.len());
        for (run, run_events) in runs {
            let (script, cancel) = &plan_by_run[&run];
            let names: Vec<_> = run_events.iter().map(|event| event.kind().name()).collect();
            let expected = expected_names(script);
            let outcome = outcome_of(&run_events);
            if let Outcome::Cancelled = outcome {
                assert_ne!(*cancel, CancelAt::Never, "seed {seed}: {run} ({script:?}) cancelled without being asked");
                // The script's events up to the cancellation, then the registry's completions of the tool calls
                // it left open (recognised by their `aborted` error), then the end.
                let aborted = run_events[..run_events.len() - 1]
                    .iter()
                    .rev()
                    .take_while(|event| {
                        matches!(event.kind(), EventKind::ToolCompleted { result: Err(error), .. }
                            if error == "aborted: the run was cancelled before the tool completed")
                    })
                    .count();
                let body = &names[..names.len() - 1 - aborted];
                assert_eq!(body, &expected[..body.len()], "seed {seed}: {run} ({script:?}) diverged: {names:?}");
                mid_run_cancels += usize::from(body.len() > 1);
            } else {
                assert_eq!(names, expected, "seed {seed}: {run} ({script:?})");
                assert_eq!(Some(outcome.as_str()), expected_outcome(script), "seed {seed}: {run} ({script:?})");
                if script.contains('P') {
                    assert!(
                        matches!(outcome, Outcome::Failed { error } if error.starts_with("agent panicked: scripted"))
                    );
                }
            }
        }
    }
    assert!(mid_run_cancels > 0, "seed {seed}: no run was cancelled in the middle; the test lost its point");
    assert_eq!((registry.live_sessions(), registry.live_runs()), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_scripts_keep_the_lifecycle_invariants() {
    for seed in 1..=8 {
        check_random_scripts(seed, 16, 12, 1 + seed as usize % 4).await;
    }
}

#[tokio::test]
async fn random_scripts_on_one_thread_with_a_one_event_buffer() {
    check_random_scripts(0x5eed, 8, 24, 1).await;
}

#[tokio::test]
async fn failing_and_panicking_agents_end_with_failed() {
    let registry = AgentRegistry::builder().register("scripted", || Scripted).build().unwrap();
    let (session, mut events) = registry.open_session("alice").unwrap();
    let failed = session.run("scripted", "tuF").unwrap();
    let panicked = session.run("scripted", "otP").unwrap();
    let received = recv_until_terminals(&mut events, 2).await;
    let runs = check_stream(&received);
    assert_eq!(outcome_of(&runs[&failed]), &Outcome::Failed { error: "scripted failure at 2".into() });
    assert_eq!(outcome_of(&runs[&panicked]), &Outcome::Failed { error: "agent panicked: scripted panic at 2".into() });
    let aborted = runs[&failed].iter().find_map(|event| match event.kind() {
        EventKind::ToolCompleted { tool, result: Err(error), .. } if &**tool == "open_tool" => Some(error.clone()),
        _ => None,
    });
    assert_eq!(aborted.as_deref(), Some("aborted: the run was failed before the tool completed"));

    // The session survives both: a new run succeeds.
    session.run("scripted", "t").unwrap();
    let received = recv_until_terminals(&mut events, 1).await;
    assert_eq!(received[0].seq(), 11, "seq continues across runs: 5 + 5 events before");
    assert_eq!(outcome_of(&received.iter().collect::<Vec<_>>()), &Outcome::Succeeded { output: "t".into() });
}
