//! A wake-up flag for one waiting stream: `notify` from publishers, `poll_wait` from
//! the stream. Poll-based (no future to hold), so a stream's state can be a plain struct.
//! A notification given while nobody waits is kept until the next wait, never lost.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::task::{Context, Poll, Waker};

/// One stream's wake-up handle.
#[derive(Debug, Default)]
pub struct Signal {
    pending: AtomicBool,
    waker: Mutex<Option<Waker>>,
}

impl Signal {
    /// Marks the signal and wakes the stream if it is waiting.
    pub fn notify(&self) {
        self.pending.store(true, Ordering::Release);
        let waker = self.waker.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Ready (and cleared) once notified since the last ready; else registers the waker.
    pub fn poll_wait(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.pending.swap(false, Ordering::AcqRel) {
            return Poll::Ready(());
        }
        {
            let mut slot = self.waker.lock().unwrap_or_else(|e| e.into_inner());
            match slot.as_ref() {
                Some(waker) if waker.will_wake(cx.waker()) => {}
                _ => *slot = Some(cx.waker().clone()),
            }
        }
        // A notify between the first check and the registration is seen here.
        if self.pending.swap(false, Ordering::AcqRel) {
            return Poll::Ready(());
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test]
    async fn a_notify_before_the_wait_is_kept_and_a_notify_during_it_wakes() {
        let signal = Arc::new(Signal::default());
        signal.notify();
        std::future::poll_fn(|cx| signal.poll_wait(cx)).await;
        let waiter = {
            let signal = signal.clone();
            tokio::spawn(async move { std::future::poll_fn(|cx| signal.poll_wait(cx)).await })
        };
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        signal.notify();
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter).await.unwrap().unwrap();
        // Consumed: the next wait blocks again.
        let polled = std::future::poll_fn(|cx| Poll::Ready(signal.poll_wait(cx))).await;
        assert!(polled.is_pending());
    }
}
