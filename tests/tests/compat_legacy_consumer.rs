//! Runs the legacy-consumer fixture's own tests (an echo agent through the 0.9 API) inside this workspace's build,
//! so its behaviour is checked without a second build of its dependencies. `compat_warnings.rs` checks the same
//! source as a standalone crate for its warnings.

// The fixture uses the deprecated API on purpose: that is what it proves. Its items are public for the fixture's
// own crate and unused here.
#[allow(deprecated, dead_code, unreachable_pub)]
#[path = "../fixtures/legacy-consumer/src/legacy.rs"]
mod legacy;

#[tokio::test(flavor = "current_thread")]
async fn old_and_new_code_share_one_registry() {
    let app = legacy::app().unwrap();
    // Values from the three old import paths are core-registry registries.
    let registries: [&core_registry::AgentRegistry; 3] = [&app.registry, &app.wrapper, &app.enhanced];
    let (session, mut events) = registries[1].open_session("dave").unwrap();
    session.run("shout", "hey").unwrap();
    // The wrapper is a handle on the top-level registry; the enhanced one is a registry of its own.
    assert_eq!((app.registry.live_sessions(), app.enhanced.live_sessions()), (1, 0));
    assert_eq!(legacy::live_sessions(&app), 2);
    let mut described = Vec::new();
    while let Some(event) = events.recv().await {
        described.push(legacy::describe(&event));
        if event.kind().is_terminal() {
            break;
        }
    }
    assert_eq!(described, ["started: hey", "thinking", "completed: HEY"]);
}
