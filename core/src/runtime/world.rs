//! MPI mode: the runtime over a fixed message-passing world, where every link exists from the
//! start, frames arrive through polling instead of descriptors, and the library is shut down
//! by the master when the program ends.

use crate::base::error::{Error, Result};
use crate::links::link::Link;
use crate::links::transport::{Listener, Transport};
use crate::runtime::{install_panic_hook, Runtime, RT};
use crate::wire::proto::{Msg, PeerInfo};
use std::io;
use std::os::fd::OwnedFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// A transport for MPI mode, where every link exists from the start and none is a stream.
struct NoStreams;

impl Transport for NoStreams {
    fn name(&self) -> &'static str {
        "mpi"
    }
    fn listen(&self, _: &str) -> io::Result<Box<dyn Listener>> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "MPI mode opens no listener",
        ))
    }
    fn connect(&self, addr: &str, _: Duration) -> io::Result<OwnedFd> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!("MPI mode has no byte-stream links (asked for {addr})"),
        ))
    }
}

impl Runtime {
    fn world_loop(&'static self, w: Arc<dyn crate::links::transport::MessageWorld>) {
        let mut idle = 0u32;
        while !self.world_stop.load(Ordering::Acquire) {
            if crate::links::link::WORLD_SPINNERS.load(Ordering::Acquire) > 0 {
                std::thread::sleep(Duration::from_micros(200));
                continue;
            }
            match crate::links::link::poll_world(w.as_ref(), &mut |rank, frame| {
                self.dispatch(rank + 1, frame)
            }) {
                true => idle = 0,
                false => {
                    // MPI has nothing to block on: poll hot after traffic, then back off.
                    idle = idle.saturating_add(1);
                    if idle < 20_000 {
                        std::thread::yield_now();
                    } else {
                        std::thread::sleep(Duration::from_micros(50));
                    }
                }
            }
        }
    }

    /// MPI mode, on the master: every worker exits, then the library shuts down.
    pub(crate) fn shutdown_world(&self) {
        let Some(w) = self.world.get() else { return };
        self.tell_all(&Msg::Exit);
        self.world_stop.store(true, Ordering::Release);
        if let Some(t) = self
            .world_thread
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            let _ = t.join();
        }
        w.finalize();
    }
}

/// Starts this process in a message-passing world (MPI mode): rank 0 is the master and
/// returns; every other rank serves and never returns.
pub(crate) fn start_world(
    world: Arc<dyn crate::links::transport::MessageWorld>,
) -> Result<&'static Runtime> {
    crate::base::log::check_env()?;
    let me = world.rank();
    let rt = Runtime::new(me == 0, Arc::new(NoStreams))
        .map_err(|e| Error::io("creating the runtime", e))?;
    rt.set_pid(me + 1);
    if RT.set(rt).is_err() {
        return Err(Error::invalid("cohort::init was already called"));
    }
    let rt = RT.get().expect("just set");
    let _ = rt.world.set(Arc::clone(&world));
    let hosts = world.hosts();
    {
        let mut peers = rt.peers.write().unwrap_or_else(|e| e.into_inner());
        for r in 0..world.size() {
            let host = hosts.get(r).cloned().unwrap_or_default();
            peers.insert(
                r + 1,
                PeerInfo {
                    pid: r + 1,
                    addr: String::new(),
                    host,
                },
            );
        }
    }
    {
        let mut links = rt.links.write().unwrap_or_else(|e| e.into_inner());
        for r in (0..world.size()).filter(|&r| r != me) {
            let token = rt.next_token.fetch_add(1, Ordering::Relaxed);
            links.insert(
                r + 1,
                Arc::new(Link::new_message(r + 1, token, Arc::clone(&world), r)),
            );
        }
    }
    install_panic_hook();
    let w = Arc::clone(&world);
    let t = std::thread::Builder::new()
        .name("cohort-mpi".into())
        .spawn(move || rt.world_loop(w))
        .map_err(|e| Error::io("starting the progress thread", e))?;
    *rt.world_thread.lock().unwrap_or_else(|e| e.into_inner()) = Some(t);
    if me != 0 {
        loop {
            std::thread::park();
        }
    }
    Ok(rt)
}
