//! The `chat` console's full-screen terminal UI: status, rooms, messages and
//! input. Here, the loop: draw, then wait for a key, a library event, a
//! request's outcome or the tick, and let the [`App`] take it.
//!
//! - [`terminal`]: raw mode and the alternate screen, restored on any exit;
//! - [`state`]: the [`App`] and its rooms and panes ([`pane`]);
//! - [`keys`], [`events`], [`requests`]: what keys, library events and the
//!   user's commands do to it;
//! - [`render`]: drawing it, with [`wrap`] for long lines, [`input`] for
//!   the line editor and [`text`] for the words.

mod events;
mod input;
mod keys;
mod pane;
mod render;
mod requests;
mod state;
mod terminal;
mod text;
mod wrap;

use chat_client::{Client, ConnectionState, Events};
use crossterm::event::EventStream;
use futures::StreamExt;
use pane::Kind;
use requests::Outcome;
use state::{App, Conn};
use std::time::Duration;
use terminal::Screen;
use tokio::sync::mpsc;
use tokio::time::MissedTickBehavior;

/// Redraw period while idle, so the reconnect countdown moves.
const TICK: Duration = Duration::from_millis(250);

/// Runs the full-screen UI until `/quit`, Ctrl-C or the end of input.
pub async fn run(
    client: Client,
    events: Events,
    server: String,
    rooms: Vec<String>,
) -> anyhow::Result<()> {
    let mut screen = Screen::enter()?;
    let (outcomes_tx, outcomes) = mpsc::unbounded_channel();
    let app = App::new(client.clone(), server, rooms, outcomes_tx);
    let result = app.run(&mut screen, events, outcomes).await;
    client.close();
    // Restore before returning so an error is printed on the normal screen.
    drop(screen);
    result
}

impl App {
    /// Draws after everything that happens, until the user quits, the
    /// terminal's input ends or a panic gives the terminal back.
    async fn run(
        mut self,
        screen: &mut Screen,
        mut events: Events,
        mut outcomes: mpsc::UnboundedReceiver<Outcome>,
    ) -> anyhow::Result<()> {
        let mut keys = EventStream::new();
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
        let mut events_open = true;
        loop {
            if self.quit {
                return Ok(());
            }
            screen.draw(|frame| self.draw(frame))?;
            tokio::select! {
                key = keys.next() => match key {
                    Some(Ok(event)) => self.on_terminal(event),
                    Some(Err(e)) => return Err(e.into()),
                    None => return Ok(()),
                },
                event = events.next(), if events_open => match event {
                    Some(event) => self.on_event(event),
                    None => {
                        events_open = false;
                        self.conn = Conn::Closed;
                        self.broadcast(Kind::Notice("the client stopped; /quit to exit".into()));
                    }
                },
                Some(outcome) = outcomes.recv() => self.on_outcome(outcome),
                _ = tick.tick() => {
                    if matches!(self.client.state(), ConnectionState::Closed) {
                        self.conn = Conn::Closed;
                    }
                    self.mark_shown_read();
                }
            }
        }
    }
}
