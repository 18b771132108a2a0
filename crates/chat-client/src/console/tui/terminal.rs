//! The terminal's lifecycle: raw mode and the alternate screen for the life
//! of the UI ([`Screen`]), put back whatever the way out — return, error or
//! a panic on any thread, whose message must land on the normal screen.

use crossterm::{cursor, execute, terminal};
use ratatui::Frame;
use ratatui::Terminal;
use ratatui::backend::CrosstermBackend;
use std::io::Stdout;
use std::panic::PanicHookInfo;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, TryLockError};
use std::time::Duration;

/// Whether the terminal is in raw mode on the alternate screen; makes
/// restoring idempotent, because a second "leave alternate screen" can move
/// the cursor back over a panic message already printed.
static TERMINAL_TAKEN: AtomicBool = AtomicBool::new(false);
/// Set by the panic hook: once the terminal is restored behind the UI's back
/// the UI cannot go on drawing, so the loop ends.
static PANICKED: AtomicBool = AtomicBool::new(false);
/// Held while drawing, so a panic on another thread (a request task) does
/// not restore the terminal mid-frame and have the rest of the frame paint
/// over its message.
static DRAWING: Mutex<()> = Mutex::new(());

/// How long the panic hook waits for a frame being drawn to finish.
const PANIC_DRAW_WAIT: Duration = Duration::from_millis(200);

type PanicHook = dyn Fn(&PanicHookInfo<'_>) + Sync + Send + 'static;

/// The terminal, taken over for the life of the UI.
pub(super) struct Screen {
    /// What the UI draws on.
    terminal: Terminal<CrosstermBackend<Stdout>>,
    /// Puts everything back. Declared last so it drops after the terminal
    /// (whose drop writes).
    _restore: Restore,
}

impl Screen {
    /// Enters raw mode and the alternate screen, with a panic hook that
    /// restores the terminal before the panic message is printed.
    pub(super) fn enter() -> anyhow::Result<Screen> {
        terminal::enable_raw_mode()?;
        TERMINAL_TAKEN.store(true, Ordering::SeqCst);
        let previous_hook: Arc<PanicHook> = Arc::from(std::panic::take_hook());
        let chained = previous_hook.clone();
        std::panic::set_hook(Box::new(move |info| {
            PANICKED.store(true, Ordering::SeqCst);
            let _drawing = wait_for_frame();
            // Restore first, or the message lands on the alternate screen in
            // raw mode and vanishes.
            restore_terminal();
            chained(info);
        }));
        // From here on every early return restores through `restore`.
        let restore = Restore { previous_hook };
        execute!(std::io::stdout(), terminal::EnterAlternateScreen)?;
        let mut terminal = Terminal::new(CrosstermBackend::new(std::io::stdout()))?;
        terminal.clear()?;
        Ok(Screen {
            terminal,
            _restore: restore,
        })
    }

    /// Draws one frame, unless a panic has given the terminal back: then the
    /// UI cannot go on and this says so.
    pub(super) fn draw(&mut self, render: impl FnOnce(&mut Frame<'_>)) -> anyhow::Result<()> {
        let _drawing = DRAWING.lock().unwrap_or_else(PoisonError::into_inner);
        if PANICKED.load(Ordering::SeqCst) {
            anyhow::bail!("the chat client panicked (see above)");
        }
        self.terminal.draw(render)?;
        Ok(())
    }
}

/// Waits for a frame being drawn to finish, and holds off the next. A
/// panic inside the draw itself holds the lock on this thread: waiting for
/// it would deadlock, hence the deadline (`None`: gave up).
fn wait_for_frame() -> Option<std::sync::MutexGuard<'static, ()>> {
    let deadline = std::time::Instant::now() + PANIC_DRAW_WAIT;
    loop {
        match DRAWING.try_lock() {
            Ok(guard) => return Some(guard),
            Err(TryLockError::Poisoned(p)) => return Some(p.into_inner()),
            Err(TryLockError::WouldBlock) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(TryLockError::WouldBlock) => return None,
        }
    }
}

/// Leaves raw mode and the alternate screen and shows the cursor, once.
fn restore_terminal() {
    if TERMINAL_TAKEN.swap(false, Ordering::SeqCst) {
        let _ = terminal::disable_raw_mode();
        let _ = execute!(
            std::io::stdout(),
            terminal::LeaveAlternateScreen,
            cursor::Show
        );
    }
}

/// Restores the terminal and the previous panic hook when dropped, whatever
/// the way out (return, `?`, panic unwinding through `run`).
struct Restore {
    /// The hook before ours, put back when the UI ends.
    previous_hook: Arc<PanicHook>,
}

impl Drop for Restore {
    fn drop(&mut self) {
        restore_terminal();
        // Changing the hook while panicking would abort the process.
        if !std::thread::panicking() {
            let previous = self.previous_hook.clone();
            let _ours = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| previous(info)));
        }
    }
}
