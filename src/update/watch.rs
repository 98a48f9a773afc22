//! Watching the agent stage an update itself. The agent downloads an
//! update into its download directory (`var/cache/ecs`) as
//! `<hex>.ecs-update.tar`, then writes `desired-image`; an inotify watch on
//! that directory (a thread blocked in `read`: no polling, no wake-up
//! while nothing happens there) tells the main loop of each, so `status`
//! shows the update STAGING, then STAGED, before the agent exits 42.

use std::path::Path;

use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};

/// What the watch saw happen to one name in the directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheNews {
    /// `*.ecs-update.tar` appeared, or `desired-image` was written.
    Appeared(String),
    /// `*.ecs-update.tar` was removed or moved away.
    Gone(String),
}

/// Watch `dir`; each relevant name goes to `tell` (the supervisor maps it
/// to its event) until `tell` returns `false`. A directory that cannot be
/// watched is logged: the agent's update is then seen when it exits 42.
pub fn spawn(dir: &Path, mut tell: impl FnMut(CacheNews) -> bool + Send + 'static) {
    let watched = Inotify::init(InitFlags::IN_CLOEXEC).and_then(|ino| {
        ino.add_watch(
            dir,
            AddWatchFlags::IN_CREATE
                | AddWatchFlags::IN_CLOSE_WRITE
                | AddWatchFlags::IN_MOVED_TO
                | AddWatchFlags::IN_DELETE
                | AddWatchFlags::IN_MOVED_FROM,
        )
        .map(|_| ino)
    });
    let ino = match watched {
        Ok(i) => i,
        Err(e) => {
            log::warn!(
                "cannot watch {} ({e}); an update the agent stages is seen when it exits 42",
                dir.display()
            );
            return;
        }
    };
    let spawned = std::thread::Builder::new()
        .name("cache-watch".into())
        .spawn(move || loop {
            let events = match ino.read_events() {
                Ok(e) => e,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => {
                    log::warn!("watching the agent's download directory: {e}");
                    return;
                }
            };
            for e in events {
                let Some(name) = e.name.as_ref().and_then(|n| n.to_str()) else {
                    continue;
                };
                let gone = e
                    .mask
                    .intersects(AddWatchFlags::IN_DELETE | AddWatchFlags::IN_MOVED_FROM);
                let event = if name == "desired-image" {
                    e.mask
                        .intersects(AddWatchFlags::IN_CLOSE_WRITE | AddWatchFlags::IN_MOVED_TO)
                        .then(|| CacheNews::Appeared(name.to_string()))
                } else if !name.ends_with(".ecs-update.tar") {
                    None
                } else if gone {
                    Some(CacheNews::Gone(name.to_string()))
                } else {
                    e.mask
                        .intersects(AddWatchFlags::IN_CREATE | AddWatchFlags::IN_MOVED_TO)
                        .then(|| CacheNews::Appeared(name.to_string()))
                };
                if event.is_some_and(|news| !tell(news)) {
                    return;
                }
            }
        });
    if let Err(e) = spawned {
        log::warn!("start the cache watch: {e}");
    }
}
