//! How a raft group's loop waits: for the next message, or for its tick.

use std::time::Duration;

use futures::future::{select, Either};

/// Why the loop woke.
pub enum Wake<M> {
    Msg(M),
    /// `tick` passed without a message.
    Tick,
    /// Every sender is gone.
    Closed,
}

/// The next message on `rx`, or `Wake::Tick` after `tick` without one.
pub async fn next_or_tick<M>(rx: &flume::Receiver<M>, tick: Duration) -> Wake<M> {
    let recv = rx.recv_async();
    let sleep = glommio::timer::sleep(tick);
    futures::pin_mut!(recv, sleep);
    match select(recv, sleep).await {
        Either::Left((Ok(m), _)) => Wake::Msg(m),
        Either::Left((Err(_), _)) => Wake::Closed,
        Either::Right(_) => Wake::Tick,
    }
}
