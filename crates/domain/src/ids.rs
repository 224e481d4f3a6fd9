use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Why an identifier was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct IdError(pub String);

/// A task's identity: a UUIDv7, so ids sort by creation time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TaskId(Uuid);

impl TaskId {
    /// Wraps a UUID that is already known to be a task id.
    pub fn from_uuid(uuid: Uuid) -> Self {
        Self(uuid)
    }

    /// Parses a task id given by a client or an event.
    pub fn parse(text: &str) -> Result<Self, IdError> {
        let uuid = Uuid::parse_str(text).map_err(|_| IdError(format!("`{text}` is not a UUID")))?;
        if uuid.get_version_num() != 7 {
            return Err(IdError(format!("`{text}` is not a UUIDv7")));
        }
        Ok(Self(uuid))
    }

    /// The id of a task created from an upstream message: a UUIDv7 whose time is `at` and whose
    /// random bits come from `seed` (the message's id), so a redelivered message names the same
    /// task and creates nothing twice.
    pub fn derived(seed: &str, at: DateTime<Utc>) -> Self {
        let first = fnv1a(seed.as_bytes(), 0).to_le_bytes();
        let second = fnv1a(seed.as_bytes(), 1).to_le_bytes();
        let mut random = [0u8; 10];
        random[..8].copy_from_slice(&first);
        random[8..].copy_from_slice(&second[..2]);
        let millis = u64::try_from(at.timestamp_millis()).unwrap_or(0);
        Self(uuid::Builder::from_unix_timestamp_millis(millis, &random).into_uuid())
    }

    /// The smallest and largest ids a task created at `at` can have, for key ranges by time.
    pub fn bounds_at(at: DateTime<Utc>) -> (Self, Self) {
        let millis = u64::try_from(at.timestamp_millis()).unwrap_or(0);
        let lowest = uuid::Builder::from_unix_timestamp_millis(millis, &[0; 10]).into_uuid();
        let highest = uuid::Builder::from_unix_timestamp_millis(millis, &[0xff; 10]).into_uuid();
        (Self(lowest), Self(highest))
    }

    /// The underlying UUID.
    pub fn as_uuid(&self) -> &Uuid {
        &self.0
    }

    /// A small stable number derived from the id, used to spread keys over partitions.
    pub fn shard(&self, shards: u8) -> u8 {
        let bytes = self.0.as_bytes();
        bytes[15] % shards.max(1)
    }
}

impl TryFrom<String> for TaskId {
    type Error = IdError;
    fn try_from(text: String) -> Result<Self, IdError> {
        Self::parse(&text)
    }
}

impl From<TaskId> for String {
    fn from(id: TaskId) -> String {
        id.0.to_string()
    }
}

/// FNV-1a over `bytes` with `salt` mixed in first: tiny and stable across builds and platforms.
pub(crate) fn fnv1a(bytes: &[u8], salt: u32) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in salt.to_le_bytes().iter().chain(bytes) {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident, $max:expr, $what:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Parses a name: 1 to the maximum characters of `A-Z a-z 0-9 _ -`.
            pub fn parse(text: &str) -> Result<Self, IdError> {
                if text.is_empty() || text.len() > $max {
                    return Err(IdError(format!("{} must be 1 to {} characters", $what, $max)));
                }
                if !text.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
                    return Err(IdError(format!(
                        "{} may only contain letters, digits, `-` and `_`",
                        $what
                    )));
                }
                Ok(Self(text.to_owned()))
            }

            /// The name as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(text: String) -> Result<Self, IdError> {
                Self::parse(&text)
            }
        }

        impl From<$name> for String {
            fn from(name: $name) -> String {
                name.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

/// The secret that binds a worker's answers to one attempt. Each dispatch draws a new one; it
/// travels in that attempt's `TaskReady` and nowhere else, and a `TaskResult` must carry it back,
/// so only a worker that received the attempt can finish it. Its `Debug` hides it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Lease(String);

impl Lease {
    /// The shortest and longest lease accepted, in characters.
    const LENGTH: std::ops::RangeInclusive<usize> = 16..=128;

    /// A lease made of 16 random bytes (128 bits), as 32 hex digits. The caller draws the bytes
    /// from a cryptographic source: the domain does no I/O.
    pub fn from_random(bytes: [u8; 16]) -> Self {
        Self(bytes.iter().map(|byte| format!("{byte:02x}")).collect())
    }

    /// Parses a lease a worker sent back: 16 to 128 characters of `A-Z a-z 0-9 _ -`.
    pub fn parse(text: &str) -> Result<Self, IdError> {
        let valid = Self::LENGTH.contains(&text.len())
            && text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        match valid {
            true => Ok(Self(text.to_owned())),
            false => Err(IdError(
                "a lease is 16 to 128 characters of letters, digits, `-` and `_`".to_owned(),
            )),
        }
    }

    /// The lease as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `other` is this lease, compared in time that does not depend on where they
    /// differ.
    pub fn matches(&self, other: &Lease) -> bool {
        let (a, b) = (self.0.as_bytes(), other.0.as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
    }
}

impl fmt::Debug for Lease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Lease(…)")
    }
}

impl TryFrom<String> for Lease {
    type Error = IdError;
    fn try_from(text: String) -> Result<Self, IdError> {
        Self::parse(&text)
    }
}

impl From<Lease> for String {
    fn from(lease: Lease) -> String {
        lease.0
    }
}

name_type!(
    /// The owner of a task. Every key begins with it.
    Tenant, 64, "tenant"
);
name_type!(
    /// A group of tasks inside a tenant.
    ProjectId, 64, "project"
);
name_type!(
    /// The kind of worker a task needs; `TaskReady` events are routed by it.
    Tier, 32, "tier"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_task_id_must_be_a_uuid_v7() {
        assert!(TaskId::parse(&Uuid::now_v7().to_string()).is_ok());
        assert!(TaskId::parse("67e55044-10b1-426f-9247-bb680e5fe0c8").is_err());
        assert!(TaskId::parse("nope").is_err());
    }

    #[test]
    fn a_derived_id_is_a_stable_uuid_v7_for_the_same_seed() {
        let at = "2026-01-01T00:00:00Z".parse().unwrap();
        let id = TaskId::derived("event-1", at);
        assert_eq!(id, TaskId::derived("event-1", at));
        assert_ne!(id, TaskId::derived("event-2", at));
        assert!(TaskId::parse(&id.to_string()).is_ok());
    }

    #[test]
    fn ids_of_one_millisecond_lie_within_its_bounds() {
        let at: DateTime<Utc> = "2026-01-01T00:00:00.001Z".parse().unwrap();
        let (lowest, highest) = TaskId::bounds_at(at);
        for seed in ["a", "b", "c"] {
            let id = TaskId::derived(seed, at);
            assert!(lowest <= id && id <= highest);
            assert!(lowest.to_string() <= id.to_string() && id.to_string() <= highest.to_string());
        }
        let (_, before) = TaskId::bounds_at(at - chrono::Duration::milliseconds(1));
        assert!(before < lowest);
    }

    #[test]
    fn a_lease_is_hex_from_random_bytes_hidden_in_debug_and_compared_whole() {
        let lease = Lease::from_random([0xab; 16]);
        assert_eq!(lease.as_str(), "ab".repeat(16));
        assert_eq!(format!("{lease:?}"), "Lease(…)");
        assert_eq!(Lease::parse(lease.as_str()), Ok(lease.clone()));
        assert!(lease.matches(&Lease::parse(&"ab".repeat(16)).unwrap()));
        assert!(!lease.matches(&Lease::from_random([0xac; 16])));
        assert!(!lease.matches(&Lease::parse(&"ab".repeat(17)).unwrap()));
        for bad in ["short", "with space 0123456789", &"x".repeat(129)] {
            assert!(Lease::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn names_refuse_empty_long_and_odd_characters() {
        assert!(Tenant::parse("acme-1_a").is_ok());
        assert!(Tenant::parse("").is_err());
        assert!(Tenant::parse(&"a".repeat(65)).is_err());
        assert!(Tier::parse("gpu#1").is_err());
    }
}
