//! The server's own log lines in the run's trace, stamped in simulated time: a tracing
//! subscriber installed for the duration of one run, writing through a thread-local
//! handle on that run's trace (simulations run on one thread).

use std::cell::RefCell;
use std::io;

use tracing_subscriber::fmt::MakeWriter;

use crate::trace::Trace;

thread_local! {
    static SINK: RefCell<Option<Trace>> = const { RefCell::new(None) };
}

/// Routes `sse_server` log lines at info and above into `trace` until the guard drops.
pub fn capture(trace: &Trace) -> Guard {
    SINK.with(|sink| *sink.borrow_mut() = Some(trace.clone()));
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter("sse_server=info")
        .with_ansi(false)
        .without_time()
        .with_target(false)
        .with_writer(SinkWriter)
        .finish();
    Guard { _default: tracing::subscriber::set_default(subscriber) }
}

/// Ends the capture when dropped.
pub struct Guard {
    _default: tracing::subscriber::DefaultGuard,
}

impl Drop for Guard {
    fn drop(&mut self) {
        SINK.with(|sink| *sink.borrow_mut() = None);
    }
}

#[derive(Clone, Copy)]
struct SinkWriter;

impl<'a> MakeWriter<'a> for SinkWriter {
    type Writer = SinkWriter;

    fn make_writer(&'a self) -> SinkWriter {
        SinkWriter
    }
}

impl io::Write for SinkWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let line = String::from_utf8_lossy(buf);
        SINK.with(|sink| {
            if let Some(trace) = sink.borrow().as_ref() {
                trace.here("server-log", line.trim_end());
            }
        });
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
