//! Topic patterns, as `--private-topic` and token claims write them: `chat/room1` names
//! one topic, `chat/*` every topic that starts with `chat/`, and `*` every topic.

use std::fmt;
use std::str::FromStr;

use crate::stream::names::{validate_topic, MAX_TOPIC_LEN};

/// One topic, or every topic under a prefix.
#[derive(Clone, PartialEq, Eq)]
pub struct TopicPattern {
    prefix: String,
    /// `prefix*`: any topic that starts with `prefix` (including `prefix` itself).
    any_suffix: bool,
}

impl TopicPattern {
    /// Whether `topic` is one of the topics this pattern names.
    pub fn matches(&self, topic: &str) -> bool {
        if self.any_suffix {
            topic.starts_with(&self.prefix)
        } else {
            topic == self.prefix
        }
    }
}

impl FromStr for TopicPattern {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (prefix, any_suffix) = match text.strip_suffix('*') {
            Some(prefix) => (prefix, true),
            None => (text, false),
        };
        let valid = if any_suffix {
            // An empty prefix is `*`; otherwise the prefix must be a possible topic start.
            prefix.is_empty() || (prefix.len() < MAX_TOPIC_LEN && validate_topic(prefix).is_ok())
        } else {
            validate_topic(prefix).is_ok()
        };
        if !valid {
            return Err("a topic pattern is a topic name, a topic prefix followed by *, or *".to_owned());
        }
        Ok(TopicPattern { prefix: prefix.to_owned(), any_suffix })
    }
}

impl fmt::Debug for TopicPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.prefix, if self.any_suffix { "*" } else { "" })
    }
}

#[cfg(test)]
mod tests {
    use super::TopicPattern;

    fn pattern(text: &str) -> TopicPattern {
        text.parse().unwrap()
    }

    #[test]
    fn exact_prefix_and_all_patterns_match_what_they_name() {
        assert!(pattern("chat/room1").matches("chat/room1"));
        assert!(!pattern("chat/room1").matches("chat/room10"), "an exact name is not a prefix");
        assert!(pattern("chat/*").matches("chat/room1"));
        assert!(pattern("chat/*").matches("chat/"));
        assert!(!pattern("chat/*").matches("chatter"));
        assert!(pattern("*").matches("anything"));
        // A prefix as long as a topic may be leaves no room for the suffix it promises.
        let longest = "t".repeat(128);
        assert!(pattern(&format!("{}*", &longest[1..])).matches(&longest));
        for bad in ["", "a*b", "**", "sp ace*", "x\n", &"t".repeat(129), &format!("{longest}*")] {
            assert!(bad.parse::<TopicPattern>().is_err(), "{bad:?}");
        }
        assert_eq!(format!("{:?}", pattern("chat/*")), "chat/*");
    }
}
