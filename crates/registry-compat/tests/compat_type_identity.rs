//! Type identity: a value built through any old path *is* the core-registry value, so it is accepted wherever the
//! new type is required, and the other way round.

// This file exercises the deprecated shims on purpose; each use would otherwise warn.
#![allow(deprecated)]

use std::any::TypeId;

use core_registry::{AgentError, RunContext};

/// Fails to compile unless both arguments have the same type.
fn same_type<T>(_: &T, _: &T) {}

fn require_new_registry(registry: &core_registry::AgentRegistry) -> usize {
    registry.live_sessions()
}

#[test]
fn every_alias_is_the_core_registry_type() {
    #[track_caller]
    fn check<Old: 'static, New: 'static>() {
        assert_eq!(TypeId::of::<Old>(), TypeId::of::<New>(), "{}", std::any::type_name::<Old>());
    }
    check::<registry_compat::AgentRegistry, core_registry::AgentRegistry>();
    check::<registry_compat::registry::AgentRegistry, core_registry::AgentRegistry>();
    check::<registry_compat::supervisor::agent_registry::AgentRegistry, core_registry::AgentRegistry>();
    check::<registry_compat::AgentRegistryBuilder, core_registry::AgentRegistryBuilder>();
    check::<registry_compat::Session, core_registry::Session>();
    check::<registry_compat::EventStream, core_registry::EventStream>();
    check::<registry_compat::Event, core_registry::Event>();
    check::<registry_compat::AgentEvent, core_registry::Event>();
    check::<registry_compat::EventKind, core_registry::EventKind>();
    check::<registry_compat::Outcome, core_registry::Outcome>();
    check::<registry_compat::RunId, core_registry::RunId>();
    check::<registry_compat::SessionId, core_registry::SessionId>();
    check::<registry_compat::ToolCallId, core_registry::ToolCallId>();
    check::<registry_compat::RunContext, core_registry::RunContext>();
    check::<registry_compat::AgentContext, core_registry::RunContext>();
    check::<registry_compat::AgentError, core_registry::AgentError>();
    check::<registry_compat::EmitError, core_registry::EmitError>();
    check::<registry_compat::RegistryError, core_registry::RegistryError>();
    check::<registry_compat::TryRecvError, core_registry::TryRecvError>();
    check::<registry_compat::ParseRunIdError, core_registry::ParseRunIdError>();
}

#[test]
fn registries_built_through_each_old_path_pass_as_the_new_type() {
    let top: registry_compat::AgentRegistry = registry_compat::create_registry().build().unwrap();
    let wrapper: registry_compat::registry::AgentRegistry =
        registry_compat::registry::AgentRegistry::builder().build().unwrap();
    let enhanced: registry_compat::supervisor::agent_registry::AgentRegistry =
        registry_compat::supervisor::agent_registry::create_enhanced_registry().build().unwrap();
    let handle = registry_compat::registry::get_agent_registry(&top);

    for registry in [&top, &wrapper, &enhanced, &handle] {
        assert_eq!(require_new_registry(registry), 0);
    }

    // And the other way round: a new value where old code names the old type.
    let new = core_registry::AgentRegistry::builder().build().unwrap();
    let old: &registry_compat::supervisor::agent_registry::AgentRegistry = &new;
    same_type(old, &top);
}

#[test]
fn get_agent_registry_is_a_handle_on_the_same_registry() {
    let registry = registry_compat::create_registry().build().unwrap();
    let handle = registry_compat::registry::get_agent_registry(&registry);
    let (_session, _events) = registry.open_session("alice").unwrap();
    assert_eq!(require_new_registry(&handle), 1);
}

struct Upper;

// The old trait and attribute, fully qualified: the impl is an impl of core_registry::Agent.
#[registry_compat::async_trait]
impl registry_compat::Agent for Upper {
    async fn run(&self, _ctx: &mut registry_compat::AgentContext, input: String) -> Result<String, AgentError> {
        Ok(input.to_uppercase())
    }
}

struct Lower;

// The new trait: its impl is accepted where old code expects the old trait.
#[core_registry::async_trait]
impl core_registry::Agent for Lower {
    async fn run(&self, _ctx: &mut RunContext, input: String) -> Result<String, AgentError> {
        Ok(input.to_lowercase())
    }
}

#[test]
fn the_old_trait_is_the_new_trait() {
    fn require_new<A: core_registry::Agent>(_: &A) {}
    fn require_old<A: registry_compat::Agent>(_: &A) {}
    require_new(&Upper);
    require_old(&Lower);

    let registry = core_registry::AgentRegistry::builder()
        .register("upper", || Upper)
        .register("lower", || Lower)
        .build()
        .unwrap();
    assert_eq!(registry.agent_names().collect::<Vec<_>>(), ["lower", "upper"]);
}

#[test]
fn errors_and_ids_from_old_paths_compare_with_new_values() {
    let old = registry_compat::RegistryError::DuplicateAgent("echo".to_owned());
    assert_eq!(old, core_registry::RegistryError::DuplicateAgent("echo".to_owned()));
    let id: registry_compat::RunId = "run-3".parse().unwrap();
    assert_eq!(id, "run-3".parse::<core_registry::RunId>().unwrap());
    assert_eq!(registry_compat::Outcome::Cancelled, core_registry::Outcome::Cancelled);
}
