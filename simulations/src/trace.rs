//! The run's trace: every observable step (faults, acknowledgements, events received,
//! resets, reconnects), stamped in simulated time. Two runs of one seed must produce the
//! same trace byte for byte.

use std::cell::RefCell;
use std::fmt::Write as _;
use std::rc::Rc;
use std::time::Duration;

/// A shared, append-only trace.
#[derive(Clone, Debug, Default)]
pub struct Trace {
    lines: Rc<RefCell<Vec<String>>>,
    echo: bool,
}

impl Trace {
    /// A trace that also prints each line as it is written (for replays).
    pub fn echoing() -> Trace {
        Trace { echo: true, ..Trace::default() }
    }

    /// Appends one line stamped with `at`.
    pub fn log(&self, at: Duration, who: &str, what: impl std::fmt::Display) {
        let mut line = String::new();
        let _ = write!(line, "{:>10.3}s {who:<12} {what}", at.as_secs_f64());
        if self.echo {
            println!("{line}");
        }
        self.lines.borrow_mut().push(line);
    }

    /// Appends a line stamped with the current host's simulated time.
    pub fn here(&self, who: &str, what: impl std::fmt::Display) {
        self.log(turmoil::sim_elapsed().unwrap_or_default(), who, what);
    }

    /// The whole trace as text.
    pub fn text(&self) -> String {
        let mut out = self.lines.borrow().join("\n");
        out.push('\n');
        out
    }
}
