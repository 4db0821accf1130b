//! Lifecycle invariants over random agent scripts, including failure, panic and cancellation.

mod common;

use std::collections::HashMap;

use core_registry::{AgentRegistry, EventKind, Outcome};

use common::{Rng, Scripted, check_stream, expected_names, expected_outcome, outcome_of, recv_until_terminals};

/// Runs `sessions` x `runs` random scripts concurrently, cancels every run that would wait forever plus some at
/// random, and checks every run's events against the script.
async fn check_random_scripts(seed: u64, sessions: usize, runs: usize, buffer: usize) {
    let registry =
        AgentRegistry::builder().register("scripted", || Scripted).unwrap().event_buffer(buffer).build().unwrap();
    let mut rng = Rng::new(seed);
    let mut tasks = Vec::new();
    for user in 0..sessions {
        let scripts: Vec<String> = (0..runs).map(|_| rng.script(10)).collect();
        let cancel_at_random: Vec<bool> = (0..runs).map(|_| rng.below(6) == 0).collect();
        let registry = registry.clone();
        tasks.push(tokio::spawn(async move {
            let (session, mut events) = registry.open_session(&format!("user-{user}")).unwrap();
            let mut scripts_by_run = HashMap::new();
            for (script, cancel) in scripts.into_iter().zip(cancel_at_random) {
                let run = session.run("scripted", script.as_str()).unwrap();
                let must_cancel = expected_outcome(&script).is_none();
                if must_cancel || cancel {
                    session.cancel(run).unwrap_or_else(|err| assert!(!must_cancel, "{err}"));
                }
                scripts_by_run.insert(run, (script, must_cancel || cancel));
            }
            let received = recv_until_terminals(&mut events, runs).await;
            drop(session);
            assert!(events.recv().await.is_none(), "events after every run completed");
            (scripts_by_run, received)
        }));
    }
    for task in tasks {
        let (scripts_by_run, received) = task.await.unwrap();
        let runs = check_stream(&received);
        assert_eq!(runs.len(), scripts_by_run.len());
        for (run, run_events) in runs {
            let (script, cancelled) = &scripts_by_run[&run];
            let names: Vec<_> = run_events.iter().map(|event| event.kind().name()).collect();
            let expected = expected_names(script);
            let outcome = outcome_of(&run_events);
            match outcome {
                Outcome::Cancelled => {
                    assert!(cancelled, "seed {seed}: {run} ({script:?}) cancelled without being asked");
                    // A prefix of the script's events, then registry-completed tool calls, then the end.
                    let tail = names.iter().rev().skip(1).take_while(|name| **name == "tool_completed").count();
                    let body = &names[..names.len() - 1 - tail];
                    assert_eq!(body, &expected[..body.len()], "seed {seed}: {run} ({script:?}) diverged");
                    for event in &run_events[run_events.len() - 1 - tail..run_events.len() - 1] {
                        if let EventKind::ToolCompleted { result, .. } = event.kind() {
                            let Err(error) = result else { panic!("an aborted tool call succeeded") };
                            assert!(error.starts_with("aborted"), "{error}");
                        }
                    }
                }
                _ => {
                    assert_eq!(names, expected, "seed {seed}: {run} ({script:?})");
                    assert_eq!(Some(outcome.as_str()), expected_outcome(script), "seed {seed}: {run} ({script:?})");
                }
            }
            if script.contains('P') && !matches!(outcome, Outcome::Cancelled) {
                assert!(matches!(outcome, Outcome::Failed { error } if error.starts_with("agent panicked: scripted")));
            }
        }
    }
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
    let registry = AgentRegistry::builder().register("scripted", || Scripted).unwrap().build().unwrap();
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
