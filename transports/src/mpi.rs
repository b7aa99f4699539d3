//! MPI through rsmpi: the message-passing world of a program started by `mpirun`.
//!
//! One frame is one message on a private duplicate of `MPI_COMM_WORLD`; a large frame is two
//! messages to the same rank (its head, then its tail, received straight into an aligned
//! buffer), which MPI's ordering between one sender and one receiver keeps together. The
//! collectives run on a second duplicate, so they never match frame traffic.
//!
//! Frames arrive in a receive posted in advance for any source (testing it costs what a
//! blocking receive does; probing for unexpected messages and receiving the match costs a
//! third of a microsecond more per message). It is posted again only after a large frame's
//! tail has been received, so a tail never lands in it.

use cohort_core::collective::OpKind;
use cohort_core::frame::{self, Frame, Header, HEADER_LEN};
use cohort_core::{DType, MessageWorld, NativeCollectives};
use mpi::collective::SystemOperation;
use mpi::point_to_point::{Destination, Source};
use mpi::request::{Request, StaticScope};
use mpi::topology::{Communicator, SimpleCommunicator};
use mpi::traits::*;
use std::io;
use std::sync::{Mutex, RwLock};

const TAG: i32 = 7;
/// Frames up to this size travel as one message.
const SMALL: usize = 64 * 1024;

/// The receive posted for the next frame, and the buffer it fills.
struct Inbox {
    req: Option<Request<'static, [u8], StaticScope>>,
    buf: Box<[u64]>,
}

impl Inbox {
    fn new(p2p: &SimpleCommunicator) -> Inbox {
        let mut inbox = Inbox {
            req: None,
            buf: vec![0u64; SMALL / 8].into_boxed_slice(),
        };
        inbox.post(p2p);
        inbox
    }

    fn post(&mut self, p2p: &SimpleCommunicator) {
        debug_assert!(self.req.is_none());
        // SAFETY: the heap buffer belongs to this inbox and is neither read, written, moved
        // nor freed while the request is pending: it is read only after `test` reports the
        // receive complete, and `Drop` cancels and completes a pending request before the
        // buffer goes.
        let buf: &'static mut [u8] =
            unsafe { std::slice::from_raw_parts_mut(self.buf.as_mut_ptr().cast::<u8>(), SMALL) };
        self.req = Some(
            p2p.any_process()
                .immediate_receive_into_with_tag(StaticScope, buf, TAG),
        );
    }

    fn bytes(&self, n: usize) -> &[u8] {
        &bytemuck::cast_slice(&self.buf[..])[..n]
    }
}

impl Drop for Inbox {
    fn drop(&mut self) {
        if let Some(r) = self.req.take() {
            r.cancel();
            r.wait();
        }
    }
}

/// Declared first, the inbox is dropped (its receive cancelled) before the communicators.
struct Comms {
    inbox: Mutex<Inbox>,
    p2p: SimpleCommunicator,
    coll: SimpleCommunicator,
}

/// An MPI world, initialised with `MPI_THREAD_MULTIPLE`.
pub struct MpiWorld {
    rank: usize,
    size: usize,
    hosts: Vec<String>,
    comms: RwLock<Option<Comms>>,
    universe: Mutex<Option<mpi::environment::Universe>>,
}

// SAFETY: MPI was initialised with MPI_THREAD_MULTIPLE (checked in `init`), so any thread may
// call MPI on these communicators concurrently; the handles are only freed in `finalize`, under
// the write lock that excludes every other use.
unsafe impl Send for MpiWorld {}
// SAFETY: as for `Send`: concurrent calls are what MPI_THREAD_MULTIPLE allows.
unsafe impl Sync for MpiWorld {}

fn err(what: impl Into<String>) -> io::Error {
    io::Error::other(what.into())
}

impl MpiWorld {
    /// Initialises MPI. Errors when the library cannot give `MPI_THREAD_MULTIPLE`.
    pub fn init() -> io::Result<MpiWorld> {
        let (universe, threading) = mpi::initialize_with_threading(mpi::Threading::Multiple)
            .ok_or_else(|| err("MPI is already initialised"))?;
        if threading != mpi::Threading::Multiple {
            return Err(err(format!(
                "the MPI library gives {threading:?} thread support; cohort needs MPI_THREAD_MULTIPLE"
            )));
        }
        let world = universe.world();
        let rank = world.rank() as usize;
        let size = world.size() as usize;
        // Every rank's host name, for procs(pid) and shared-memory placement.
        let me = nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_else(|| "localhost".into());
        let mut name = [0u8; 64];
        let n = me.len().min(64);
        name[..n].copy_from_slice(&me.as_bytes()[..n]);
        let mut all = vec![0u8; 64 * size];
        world.all_gather_into(&name[..], &mut all[..]);
        let hosts = all
            .chunks(64)
            .map(|c| {
                let end = c.iter().position(|&b| b == 0).unwrap_or(64);
                String::from_utf8_lossy(&c[..end]).into_owned()
            })
            .collect();
        let p2p = world.duplicate();
        let comms = Comms {
            inbox: Mutex::new(Inbox::new(&p2p)),
            p2p,
            coll: world.duplicate(),
        };
        Ok(MpiWorld {
            rank,
            size,
            hosts,
            comms: RwLock::new(Some(comms)),
            universe: Mutex::new(Some(universe)),
        })
    }

    fn with<R>(&self, f: impl FnOnce(&Comms) -> io::Result<R>) -> io::Result<R> {
        let g = self.comms.read().unwrap_or_else(|e| e.into_inner());
        match g.as_ref() {
            Some(c) => f(c),
            None => Err(err("MPI is finalised")),
        }
    }
}

/// The frame whose first message is `data`, receiving its tail from `src` when one follows.
fn receive_frame(c: &Comms, src: i32, data: &[u8]) -> io::Result<Frame> {
    if data.len() < HEADER_LEN {
        return Err(err(format!(
            "a {}-byte message from rank {src} is not a frame",
            data.len()
        )));
    }
    let header = Header::decode(data[..HEADER_LEN].try_into().expect("24 bytes"), u64::MAX)
        .map_err(|e| err(format!("from rank {src}: {e}")))?;
    let have = data.len() - HEADER_LEN;
    if have as u64 == header.len {
        return Ok(Frame::new(header, data[HEADER_LEN..].to_vec()));
    }
    // The tail follows from the same rank: receive it into an aligned buffer.
    let (msg, status) = c.p2p.process_at_rank(src).matched_probe_with_tag(TAG);
    let n = status.count(u8::equivalent_datatype()) as usize;
    let mut tail = frame::tail_buffer(n);
    let bytes: &mut [u8] = bytemuck::cast_slice_mut(&mut tail);
    // Received even when the sizes disagree, so that it never lands in the posted receive.
    msg.matched_receive_into(&mut bytes[..n]);
    if have as u64 + n as u64 != header.len {
        return Err(err(format!(
            "frame from rank {src} announced {} bytes, got {}",
            header.len,
            have + n
        )));
    }
    Ok(Frame::from_parts(
        header,
        data[HEADER_LEN..].to_vec(),
        Some(tail),
    ))
}

fn check_count(n: usize) -> io::Result<()> {
    if n > i32::MAX as usize {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("a {n}-byte MPI message is over 2 GiB"),
        ));
    }
    Ok(())
}

impl MessageWorld for MpiWorld {
    fn name(&self) -> &'static str {
        "mpi"
    }
    fn rank(&self) -> usize {
        self.rank
    }
    fn size(&self) -> usize {
        self.size
    }
    fn hosts(&self) -> Vec<String> {
        self.hosts.clone()
    }

    fn send(&self, rank: usize, parts: &[&[u8]]) -> io::Result<()> {
        let total: usize = parts.iter().map(|p| p.len()).sum();
        self.with(|c| {
            let dest = c.p2p.process_at_rank(rank as i32);
            if total <= SMALL {
                // One reused buffer per thread: small frames are the latency path.
                thread_local!(static BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) });
                BUF.with(|b| {
                    let mut b = b.borrow_mut();
                    b.clear();
                    for p in parts {
                        b.extend_from_slice(p);
                    }
                    dest.send_with_tag(&b[..], TAG);
                });
                return Ok(());
            }
            // Head: header, message, and the first 8 body bytes; tail: the rest, sent in place
            // when it is one piece (a raw numeric vector always is).
            let header = parts[0];
            let hd = Header::decode(header.try_into().map_err(|_| err("bad header"))?, u64::MAX)
                .map_err(|e| err(e.to_string()))?;
            let head_len = HEADER_LEN + hd.meta_len as usize + 8;
            if head_len > SMALL {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "a frame's {}-byte message header is over the {SMALL} bytes an MPI frame head carries",
                        hd.meta_len
                    ),
                ));
            }
            let flat;
            let (head, tail): (Vec<u8>, &[u8]) = if parts.len() == 4 && parts[2].len() == 8 {
                ([parts[0], parts[1], parts[2]].concat(), parts[3])
            } else if parts.len() == 4 && parts[3].is_empty() && parts[2].len() >= 8 {
                (
                    [parts[0], parts[1], &parts[2][..8]].concat(),
                    &parts[2][8..],
                )
            } else {
                flat = parts.concat();
                (flat[..head_len].to_vec(), &flat[head_len..])
            };
            check_count(tail.len())?;
            dest.send_with_tag(&head[..], TAG);
            dest.send_with_tag(tail, TAG);
            Ok(())
        })
    }

    fn poll(&self) -> io::Result<Option<(usize, Frame)>> {
        let g = self.comms.read().unwrap_or_else(|e| e.into_inner());
        // Finalised: the process is on its way out.
        let Some(c) = g.as_ref() else {
            return Ok(None);
        };
        // Another thread is receiving: it delivers what has arrived.
        let Ok(mut inbox) = c.inbox.try_lock() else {
            return Ok(None);
        };
        let Some(req) = inbox.req.take() else {
            inbox.post(&c.p2p);
            return Ok(None);
        };
        let status = match req.test() {
            Ok(s) => s,
            Err(r) => {
                inbox.req = Some(r);
                return Ok(None);
            }
        };
        let src = status.source_rank();
        let n = status.count(u8::equivalent_datatype()) as usize;
        let r = receive_frame(c, src, inbox.bytes(n));
        // Posted again only now: a large frame's tail has been received by then.
        inbox.post(&c.p2p);
        r.map(|f| Some((src as usize, f)))
    }

    fn native(&self) -> Option<&dyn NativeCollectives> {
        Some(self)
    }

    fn abort(&self, code: i32) {
        if let Some(c) = self
            .comms
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            c.p2p.abort(code);
        }
    }

    fn finalize(&self) {
        self.comms.write().unwrap_or_else(|e| e.into_inner()).take();
        // Dropping the universe calls MPI_Finalize.
        self.universe
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
    }
}

macro_rules! with_typed {
    ($dtype:expr, $bytes:expr, |$v:ident: $t:ident| $body:expr) => {
        match $dtype {
            DType::F64 => {
                type $t = f64;
                let $v: &[f64] = bytemuck::cast_slice($bytes);
                $body
            }
            DType::F32 => {
                type $t = f32;
                let $v: &[f32] = bytemuck::cast_slice($bytes);
                $body
            }
            DType::I64 => {
                type $t = i64;
                let $v: &[i64] = bytemuck::cast_slice($bytes);
                $body
            }
            DType::I32 => {
                type $t = i32;
                let $v: &[i32] = bytemuck::cast_slice($bytes);
                $body
            }
            DType::U64 => {
                type $t = u64;
                let $v: &[u64] = bytemuck::cast_slice($bytes);
                $body
            }
            DType::U32 => {
                type $t = u32;
                let $v: &[u32] = bytemuck::cast_slice($bytes);
                $body
            }
            DType::U8 => {
                type $t = u8;
                let $v: &[u8] = bytemuck::cast_slice($bytes);
                $body
            }
            // Every rank has the same element type, so every rank refuses alike.
            other => return Err(err(format!("no MPI reduction for {other:?} elements here"))),
        }
    };
}

fn sys_op(op: OpKind) -> io::Result<SystemOperation> {
    Ok(match op {
        OpKind::Sum => SystemOperation::sum(),
        OpKind::Prod => SystemOperation::product(),
        OpKind::Min => SystemOperation::min(),
        OpKind::Max => SystemOperation::max(),
        OpKind::Custom => return Err(err("a user operation has no MPI equivalent here")),
        other => return Err(err(format!("{other:?} has no MPI equivalent here"))),
    })
}

impl NativeCollectives for MpiWorld {
    fn barrier(&self) -> io::Result<()> {
        self.with(|c| {
            c.coll.barrier();
            Ok(())
        })
    }

    fn broadcast(&self, root: usize, data: &[u8]) -> io::Result<Vec<u8>> {
        self.with(|c| {
            let p = c.coll.process_at_rank(root as i32);
            let mut len = data.len() as u64;
            p.broadcast_into(&mut len);
            let mut buf = if self.rank == root {
                data.to_vec()
            } else {
                vec![0u8; len as usize]
            };
            check_count(buf.len())?;
            p.broadcast_into(&mut buf[..]);
            Ok(buf)
        })
    }

    fn reduce(
        &self,
        root: usize,
        dtype: DType,
        op: OpKind,
        data: &[u8],
        out: Option<&mut [u8]>,
    ) -> io::Result<()> {
        let sop = sys_op(op)?;
        self.with(|c| {
            let p = c.coll.process_at_rank(root as i32);
            with_typed!(dtype, data, |v: T| {
                match out {
                    Some(o) => {
                        let o: &mut [T] = bytemuck::cast_slice_mut(o);
                        p.reduce_into_root(v, o, sop);
                    }
                    None => p.reduce_into(v, sop),
                }
            });
            Ok(())
        })
    }

    fn all_reduce(&self, dtype: DType, op: OpKind, data: &[u8], out: &mut [u8]) -> io::Result<()> {
        let sop = sys_op(op)?;
        self.with(|c| {
            with_typed!(dtype, data, |v: T| {
                let o: &mut [T] = bytemuck::cast_slice_mut(out);
                c.coll.all_reduce_into(v, o, sop);
            });
            Ok(())
        })
    }
}
