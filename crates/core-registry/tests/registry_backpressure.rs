//! A full stream slows only its own session; nothing is dropped.

mod common;

use std::time::Duration;

use core_registry::AgentRegistry;

use common::{Scripted, check_stream, eventually, recv_until_terminals};

const BUFFER: usize = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_consumer_delays_only_its_own_session() {
    let registry = AgentRegistry::builder().register("scripted", || Scripted).event_buffer(BUFFER).build().unwrap();
    let script = "t".repeat(100);
    let (stalled_session, mut stalled_events) = registry.open_session("stalled").unwrap();
    let (busy_session, mut busy_events) = registry.open_session("busy").unwrap();
    stalled_session.run("scripted", script.as_str()).unwrap();

    // The stalled run fills its buffer, then waits.
    eventually(Duration::from_secs(60), || stalled_events.len() == BUFFER).await;

    // Another session's runs go through while the stalled stream is full.
    for _ in 0..10 {
        busy_session.run("scripted", script.as_str()).unwrap();
    }
    let busy = tokio::time::timeout(Duration::from_secs(60), recv_until_terminals(&mut busy_events, 10))
        .await
        .expect("the busy session was held up by the stalled one");
    assert_eq!(busy.len(), 10 * 102);
    check_stream(&busy);

    // Meanwhile the stalled run made no progress past its full buffer, and dropped nothing.
    assert_eq!(stalled_events.len(), BUFFER);
    assert_eq!(stalled_session.live_runs(), 1);
    let stalled = recv_until_terminals(&mut stalled_events, 1).await;
    assert_eq!(stalled.len(), 102, "every event arrives once the consumer resumes");
    check_stream(&stalled);
}
