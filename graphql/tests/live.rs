//! graphql-transport-ws over in-memory connections and pushes: the protocol's rules, without an
//! emulator. (The same flows run against the emulator in `tests/`.)

use std::sync::Arc;

use baton_app::memory::{
    ManualClock, MemoryBus, MemoryConnections, MemoryPush, MemoryStore, MemoryTimers,
};
use baton_app::{Baton, Caller, Connections, Watch};
use baton_domain::{ProjectId, SubmitRequest, TaskId, Tenant};
use baton_graphql::auth::{Verifier, mint};
use baton_graphql::live::{Connect, Handshake, Live, MAX_SUBSCRIPTIONS};
use baton_graphql::{Options, schema};
use serde_json::{Value, json};

const SECRET: &[u8] = b"unit-secret";

struct World {
    baton: Baton,
    live: Live,
    push: Arc<MemoryPush>,
    connections: Arc<MemoryConnections>,
}

fn world() -> World {
    let clock = Arc::new(ManualClock::new("2026-11-21T10:00:00Z".parse().unwrap()));
    let baton = Baton::new(
        Arc::new(MemoryStore::default()),
        Arc::new(MemoryBus::default()),
        Arc::new(MemoryTimers::default()),
        clock,
    );
    let push = Arc::new(MemoryPush::default());
    let connections = Arc::new(MemoryConnections::default());
    let live = Live::new(
        baton.clone(),
        schema(baton.clone(), Options::default()),
        connections.clone(),
        push.clone(),
        Some(Verifier::hs256(SECRET, "iss", "aud")),
    );
    World {
        baton,
        live,
        push,
        connections,
    }
}

fn token(tenant: &str) -> String {
    let caller = Caller {
        tenant: Tenant::parse(tenant).unwrap(),
        subject: "ada".to_owned(),
        admin: false,
    };
    mint(SECRET, "iss", "aud", &caller, chrono::Duration::hours(1))
}

impl World {
    /// Opens `connection` with a token on the handshake, offering the subprotocol.
    async fn open(&self, connection: &str, tenant: &str) {
        let token = token(tenant);
        let handshake = Handshake {
            protocols: Some("graphql-transport-ws"),
            token: Some(&token),
        };
        let now = chrono::Utc::now();
        let answer = self.live.connect(connection, handshake, now).await.unwrap();
        assert_eq!(answer, Connect::Accept(Some("graphql-transport-ws")));
    }

    async fn say(&self, connection: &str, message: Value) {
        self.live
            .message(connection, &message.to_string())
            .await
            .unwrap();
    }

    fn heard(&self, connection: &str) -> Vec<Value> {
        self.push
            .sent()
            .into_iter()
            .filter(|(c, _)| c == connection)
            .map(|(_, m)| serde_json::from_str(&m).unwrap())
            .collect()
    }

    async fn submit(&self, tenant: &str) -> TaskId {
        let request = SubmitRequest {
            tenant: Some(tenant.to_owned()),
            project: Some("web".to_owned()),
            name: Some("n".to_owned()),
            tier: Some("gpu".to_owned()),
            ..SubmitRequest::default()
        };
        let id = TaskId::from_uuid(uuid::Uuid::now_v7());
        self.baton.submit(&request, id).await.unwrap().task.id
    }
}

fn subscribe(id: &str, query: &str) -> Value {
    json!({"type": "subscribe", "id": id, "payload": {"query": query}})
}

#[tokio::test]
async fn a_token_on_the_handshake_authenticates_and_ping_is_answered() {
    let world = world();
    world.open("c1", "acme").await;
    world.say("c1", json!({"type": "connection_init"})).await;
    world.say("c1", json!({"type": "ping"})).await;
    assert_eq!(
        world.heard("c1"),
        [json!({"type": "connection_ack"}), json!({"type": "pong"})]
    );
    let refused = world
        .live
        .connect(
            "c2",
            Handshake {
                protocols: None,
                token: Some("forged"),
            },
            chrono::Utc::now(),
        )
        .await
        .unwrap();
    assert!(matches!(refused, Connect::Refuse(_)));
}

#[tokio::test]
async fn a_query_over_the_socket_is_answered_once_and_completed() {
    let world = world();
    world.open("c1", "acme").await;
    let id = world.submit("acme").await;
    let query = format!("{{ task(id: \"{id}\") {{ status }} }}");
    world.say("c1", subscribe("q", &query)).await;
    let heard = world.heard("c1");
    assert_eq!(
        heard[0]["payload"]["data"]["task"]["status"], "SCHEDULED",
        "{heard:?}"
    );
    assert_eq!(heard[1], json!({"type": "complete", "id": "q"}));
    assert!(
        world
            .connections
            .connection("c1")
            .await
            .unwrap()
            .unwrap()
            .subscriptions
            .is_empty()
    );
}

#[tokio::test]
async fn duplicate_ids_and_bad_messages_hang_up_and_subscriptions_are_capped() {
    let world = world();
    world.open("c1", "acme").await;
    let project = "subscription { projectTasks(projectId: \"web\") { id } }";
    for n in 0..MAX_SUBSCRIPTIONS {
        world.say("c1", subscribe(&n.to_string(), project)).await;
    }
    world.say("c1", subscribe("one-more", project)).await;
    let refused = world.heard("c1").pop().unwrap();
    assert_eq!(refused["type"], "error");
    assert_eq!(
        refused["payload"][0]["extensions"]["limit"],
        "subscriptions"
    );

    world.say("c1", subscribe("0", project)).await;
    assert!(world.push.is_gone("c1"), "4409: subscriber already exists");
    assert!(world.connections.connection("c1").await.unwrap().is_none());

    world.open("c2", "acme").await;
    world.live.message("c2", "not json").await.unwrap();
    assert!(world.push.is_gone("c2"), "4400: bad message");
}

#[tokio::test]
async fn complete_ends_a_subscription_and_updates_reach_only_matching_ones() {
    let world = world();
    world.open("c1", "acme").await;
    let id = world.submit("acme").await;
    let failed = "subscription { projectTasks(projectId: \"web\", statuses: [FAILED]) { id } }";
    let any = "subscription { projectTasks(projectId: \"web\") { id status } }";
    world.say("c1", subscribe("failed", failed)).await;
    world.say("c1", subscribe("any", any)).await;
    let acme = Tenant::parse("acme").unwrap();
    let web = ProjectId::parse("web").unwrap();
    assert_eq!(
        world.live.notify(&acme, &id, &web).await.unwrap(),
        1,
        "only `any` matches SCHEDULED"
    );
    assert_eq!(world.heard("c1").last().unwrap()["id"], "any");

    world
        .say("c1", json!({"type": "complete", "id": "any"}))
        .await;
    assert_eq!(world.live.notify(&acme, &id, &web).await.unwrap(), 0);
    let watchers = world
        .connections
        .watchers(&acme, &[Watch::Project(web)])
        .await
        .unwrap();
    assert_eq!(watchers, ["c1"], "`failed` still watches");
}
