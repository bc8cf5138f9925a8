//! The JetStream stream behind cluster mode: the settings it is created with, and the
//! check that a stream found in place is at least as durable. A weaker stream is a
//! start-up error, never a silent downgrade.

use std::time::Duration;

use async_nats::jetstream::stream::{Config, PersistenceMode, RetentionPolicy, StorageType};

use super::subject;

/// What the stream must be.
#[derive(Debug, Clone)]
pub struct Wanted {
    /// The stream's name.
    pub name: String,
    /// Replicas (3 on a 3-node cluster: an append is acknowledged once two hold it).
    pub replicas: usize,
    /// Events kept per topic.
    pub events_per_topic: u64,
    /// Age after which an event is removed.
    pub max_age: Duration,
    /// JetStream's dedup window for `Nats-Msg-Id` (the `Idempotency-Key`).
    pub dedup_window: Duration,
}

impl Wanted {
    /// The configuration a new stream is created with: file storage, replicated, limits
    /// retention (events stay until a limit removes them, the oldest first), one subject
    /// per topic. File storage, limits retention and discarding the oldest are
    /// async-nats's defaults, so they are not spelled out (a field equal to its default
    /// is a mutant no test can catch); the cluster tests read all three back from the
    /// stream made.
    pub fn config(&self) -> Config {
        Config {
            name: self.name.clone(),
            subjects: vec![subject::all(&self.name)],
            num_replicas: self.replicas,
            max_messages_per_subject: i64::try_from(self.events_per_topic).unwrap_or(i64::MAX),
            max_age: self.max_age,
            duplicate_window: self.duplicate_window(),
            allow_direct: true,
            description: Some("Server-Sent Events history (sse-server cluster mode)".into()),
            ..Config::default()
        }
    }

    /// JetStream's duplicate window: the dedup window, but no longer than events are kept
    /// (JetStream refuses a longer one).
    pub fn duplicate_window(&self) -> Duration {
        self.dedup_window.min(self.max_age)
    }

    /// Why `found` cannot carry this server's history, if it cannot.
    pub fn refuse(&self, found: &Config) -> Option<String> {
        let name = &found.name;
        if found.storage != StorageType::File {
            return Some(format!("stream {name} keeps its messages in memory; cluster mode needs file storage"));
        }
        if found.num_replicas < self.replicas {
            return Some(format!(
                "stream {name} has {} replica(s), fewer than --nats-replicas {}",
                found.num_replicas, self.replicas
            ));
        }
        if found.persist_mode == Some(PersistenceMode::Async) {
            return Some(format!("stream {name} acknowledges before it persists (persist_mode: async)"));
        }
        if found.retention != RetentionPolicy::Limits {
            return Some(format!(
                "stream {name} removes messages once consumed ({:?} retention); cluster mode needs limits retention",
                found.retention
            ));
        }
        let all = subject::all(&self.name);
        if !found.subjects.contains(&all) {
            return Some(format!("stream {name} does not take the subjects {all} (it has {:?})", found.subjects));
        }
        if found.duplicate_window < self.duplicate_window() {
            return Some(format!(
                "stream {name} remembers message ids for {:?}, less than --dedup-window {:?}",
                found.duplicate_window, self.dedup_window
            ));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wanted() -> Wanted {
        Wanted {
            name: "SSE".into(),
            replicas: 3,
            events_per_topic: 1000,
            max_age: Duration::from_secs(3600),
            dedup_window: Duration::from_secs(120),
        }
    }

    #[test]
    fn the_stream_it_creates_passes_its_own_check_and_weaker_ones_do_not() {
        let wanted = wanted();
        let good = wanted.config();
        assert_eq!(wanted.refuse(&good), None);
        let weaker = [
            Config { storage: StorageType::Memory, ..good.clone() },
            Config { num_replicas: 1, ..good.clone() },
            Config { persist_mode: Some(PersistenceMode::Async), ..good.clone() },
            Config { retention: RetentionPolicy::WorkQueue, ..good.clone() },
            Config { subjects: vec!["other.>".into()], ..good.clone() },
            Config { duplicate_window: Duration::from_secs(1), ..good.clone() },
        ];
        for config in weaker {
            assert!(wanted.refuse(&config).is_some(), "{config:?}");
        }
    }
}
