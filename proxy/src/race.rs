//! Race three futures, polling only the ones that were woken.
//!
//! `tokio::select!` polls every branch whenever the task wakes. A relaying session wakes
//! twice per round trip (client readable, then server readable), so each wake-up would
//! also poll the idle direction and the shutdown signal for nothing. Here every branch
//! gets its own waker that marks the branch before waking the task, and a poll visits
//! only the marked branches.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use futures_util::task::AtomicWaker;

/// Which branches were woken since their last poll, and the task to wake.
struct Marks {
    woken: AtomicU8,
    task: AtomicWaker,
}

/// The waker handed to one branch.
struct BranchWaker {
    marks: Arc<Marks>,
    bit: u8,
}

impl Wake for BranchWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.marks.woken.fetch_or(self.bit, Ordering::AcqRel);
        self.marks.task.wake();
    }
}

/// Resolves with the output of whichever of the three futures finishes first; the
/// others are dropped with it. Branches are visited in order, so on a tie the first
/// wins.
pub async fn race3<T, A, B, C>(a: A, b: B, c: C) -> T
where
    A: Future<Output = T>,
    B: Future<Output = T>,
    C: Future<Output = T>,
{
    let marks = Arc::new(Marks {
        woken: AtomicU8::new(0b111),
        task: AtomicWaker::new(),
    });
    let wakers: [Waker; 3] = [1u8, 2, 4].map(|bit| {
        Waker::from(Arc::new(BranchWaker {
            marks: marks.clone(),
            bit,
        }))
    });
    let mut a = std::pin::pin!(a);
    let mut b = std::pin::pin!(b);
    let mut c = std::pin::pin!(c);
    std::future::poll_fn(move |cx| {
        marks.task.register(cx.waker());
        let woken = marks.woken.swap(0, Ordering::AcqRel);
        if woken & 1 != 0 {
            if let Poll::Ready(v) = poll_with(a.as_mut(), &wakers[0]) {
                return Poll::Ready(v);
            }
        }
        if woken & 2 != 0 {
            if let Poll::Ready(v) = poll_with(b.as_mut(), &wakers[1]) {
                return Poll::Ready(v);
            }
        }
        if woken & 4 != 0 {
            if let Poll::Ready(v) = poll_with(c.as_mut(), &wakers[2]) {
                return Poll::Ready(v);
            }
        }
        Poll::Pending
    })
    .await
}

fn poll_with<F: Future>(f: Pin<&mut F>, waker: &Waker) -> Poll<F::Output> {
    f.poll(&mut Context::from_waker(waker))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    /// A future that counts its polls and never finishes.
    fn counting_pending(polls: &AtomicUsize) -> impl Future<Output = u8> + '_ {
        std::future::poll_fn(move |_| {
            polls.fetch_add(1, Ordering::Relaxed);
            Poll::Pending
        })
    }

    #[tokio::test]
    async fn the_first_to_finish_wins() {
        let out = race3(
            async {
                tokio::time::sleep(Duration::from_millis(50)).await;
                1
            },
            async {
                tokio::time::sleep(Duration::from_millis(5)).await;
                2
            },
            std::future::pending(),
        )
        .await;
        assert_eq!(out, 2);
    }

    #[tokio::test]
    async fn a_branch_that_is_not_woken_is_not_polled_again() {
        let idle = AtomicUsize::new(0);
        let (tx, mut rx) = tokio::sync::mpsc::channel::<u8>(4);
        let producer = tokio::spawn(async move {
            for i in 0..3 {
                tokio::time::sleep(Duration::from_millis(2)).await;
                let _ = tx.send(i).await;
            }
        });
        let out = race3(
            async {
                let mut last = 0;
                while let Some(v) = rx.recv().await {
                    last = v;
                }
                last + 10
            },
            counting_pending(&idle),
            std::future::pending(),
        )
        .await;
        let _ = producer.await;
        assert_eq!(out, 12);
        assert_eq!(
            idle.load(Ordering::Relaxed),
            1,
            "polled only once, at the start"
        );
    }

    #[tokio::test]
    async fn a_branch_that_wakes_itself_is_polled_again() {
        let mut left = 3;
        let out = race3(
            std::future::poll_fn(move |cx| {
                if left == 0 {
                    return Poll::Ready(7);
                }
                left -= 1;
                cx.waker().wake_by_ref();
                Poll::Pending
            }),
            std::future::pending(),
            std::future::pending(),
        )
        .await;
        assert_eq!(out, 7);
    }
}
