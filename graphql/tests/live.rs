//! graphql-transport-ws over in-memory connections and pushes: the protocol's rules, without an
//! emulator. (The same flows run against the emulator in `tests/`.)

use std::sync::Arc;

use baton_app::memory::{
    ManualClock, MemoryBus, MemoryConnections, MemoryPush, MemoryStore, MemoryTimers,
};
use baton_app::{Baton, Caller, Connections, Watch};
use baton_domain::{ProjectId, SubmitRequest, TaskId, Tenant};
use baton_graphql::auth::{Verifier, mint};
use baton_graphql::live::{
    Connect, Handshake, Live, LiveLimits, MAX_MESSAGE_BYTES, MAX_STORED_BYTES,
};
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
    let limits = LiveLimits {
        connections_per_tenant: 3,
        ..LiveLimits::default()
    };
    let live = Live::new(
        baton.clone(),
        schema(baton.clone(), Options::default()),
        connections.clone(),
        push.clone(),
        Some(Verifier::hs256(SECRET, "iss", "aud")),
    )
    .with_limits(limits);
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
    for n in 0..LiveLimits::default().subscriptions {
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

#[tokio::test]
async fn a_batch_of_moves_is_watched_only_when_a_subscription_of_its_tenant_watches_one() {
    let world = world();
    let acme = Tenant::parse("acme").unwrap();
    let other = Tenant::parse("other").unwrap();
    let web = ProjectId::parse("web").unwrap();
    let ops = ProjectId::parse("ops").unwrap();
    let (a, b) = (world.submit("acme").await, world.submit("other").await);
    let moved = [
        (acme.clone(), a, ops.clone()),
        (other.clone(), b, web.clone()),
    ];
    assert!(
        !world.live.watched(&moved).await.unwrap(),
        "no subscription"
    );

    world.open("c1", "acme").await;
    let query = "subscription { projectTasks(projectId: \"web\") { id } }";
    world.say("c1", subscribe("s", query)).await;
    assert!(
        !world.live.watched(&moved).await.unwrap(),
        "acme watches web; the batch moved acme's ops and other's web"
    );
    let moved = [(acme, a, web), (other, b, ops)];
    assert!(world.live.watched(&moved).await.unwrap());
    assert!(!world.live.watched(&[]).await.unwrap());
}

#[tokio::test]
async fn oversized_messages_and_subscriptions_are_refused_with_their_limit() {
    let world = world();
    world.open("c1", "acme").await;
    let padding = "x".repeat(MAX_MESSAGE_BYTES);
    let query = format!("subscription {{ projectTasks(projectId: \"web\") {{ id }} }} # {padding}");
    world.say("c1", subscribe("big", &query)).await;
    let refused = world.heard("c1").pop().unwrap();
    assert_eq!(refused["id"], "big", "{refused}");
    assert_eq!(
        refused["payload"][0]["extensions"]["code"],
        "LIMIT_EXCEEDED"
    );
    assert_eq!(refused["payload"][0]["extensions"]["limit"], "messageBytes");

    // Under the message limit each, together over what a connection may store.
    let comment = "y".repeat(MAX_MESSAGE_BYTES - 200);
    let query = format!("subscription {{ projectTasks(projectId: \"web\") {{ id }} }} # {comment}");
    let fits = MAX_STORED_BYTES / (MAX_MESSAGE_BYTES - 100);
    for n in 0..fits {
        world.say("c1", subscribe(&n.to_string(), &query)).await;
    }
    let held = world.connections.connection("c1").await.unwrap().unwrap();
    assert_eq!(held.subscriptions.len(), fits);
    world.say("c1", subscribe("over", &query)).await;
    let refused = world.heard("c1").pop().unwrap();
    assert_eq!(
        refused["payload"][0]["extensions"]["limit"],
        "subscriptionBytes"
    );
    assert!(!world.push.is_gone("c1"), "the connection stays");

    world.open("c2", "acme").await;
    world
        .live
        .message("c2", &"z".repeat(MAX_MESSAGE_BYTES + 1))
        .await
        .unwrap();
    assert!(
        world.push.is_gone("c2"),
        "4400: too large and no subscription to name"
    );
}

#[tokio::test]
async fn a_tenant_holds_at_most_its_connection_limit_and_a_close_frees_a_place() {
    let world = world();
    for connection in ["a1", "a2", "a3"] {
        world.open(connection, "acme").await;
    }
    let token = token("acme");
    let handshake = |token| Handshake {
        protocols: Some("graphql-transport-ws"),
        token: Some(token),
    };
    let now = chrono::Utc::now();
    let busy = world
        .live
        .connect("a4", handshake(&token), now)
        .await
        .unwrap();
    assert_eq!(busy, Connect::Busy);
    // Another tenant is not held back by this one.
    world.open("g1", "globex").await;
    // Authenticating in connection_init counts the same way.
    let anonymous = Handshake {
        protocols: Some("graphql-transport-ws"),
        token: None,
    };
    let accepted = world.live.connect("a5", anonymous, now).await.unwrap();
    assert_eq!(accepted, Connect::Accept(Some("graphql-transport-ws")));
    world
        .say("a5", json!({"type": "connection_init", "payload": {"Authorization": format!("Bearer {token}")}}))
        .await;
    assert!(world.push.is_gone("a5"), "4429: too many connections");

    world.live.disconnect("a1").await.unwrap();
    let again = world
        .live
        .connect("a6", handshake(&token), now)
        .await
        .unwrap();
    assert_eq!(again, Connect::Accept(Some("graphql-transport-ws")));
}
