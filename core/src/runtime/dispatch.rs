//! Incoming frames: dispatch by message kind, the per-peer request queues, and the work each
//! request does on the receiving process.
//!
//! Only requests that run user code (calls, user channel constructors and operations) take a
//! thread: calls from one peer on that peer's serial queue, so they start in the order they
//! were made. Everything else (Future and built-in channel operations, reference counts,
//! queries) is answered on the thread that read it, at once, whatever user code runs: what has
//! to wait (a `wait` on an unset Future, a `take` on an empty channel, a `put` on a full one)
//! parks on the owner's entry and is answered by the thread that makes it possible; a timed
//! `take` or `put` is also given up by the runtime's timer thread at its deadline. A service
//! call (`Mode::Service`: a core function such as a pool operation, no user code) starts at
//! once on a pool thread of its own, never behind the caller's queued calls.

use super::*;
use crate::runtime::store::{deadline_in, empty_under, ParkOp, Parked};

/// What a channel operation answers.
enum ChanOut {
    Bytes(Vec<u8>),
    Item(Item),
}

/// Replies up to this size go out on the thread that has them (the poller, say); larger ones
/// from a pool thread, so that the poller never waits for room on a socket (or, with MPI, for a
/// receiver to match a large message).
const INLINE_REPLY: usize = 8 * 1024;

thread_local! {
    /// Set while this thread waits for a reply (and may read other frames meanwhile): it may hold
    /// locks, so requests it reads are served from a pool thread instead.
    pub(crate) static AWAITING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    /// The peer whose queue this thread drains, while it waits on that peer's link for the
    /// next request (0: none): a request from that peer it reads goes onto the queue directly.
    static IDLE_FOR: std::cell::Cell<Pid> = const { std::cell::Cell::new(0) };
}

/// Whether an item can be answered from the poller: already encoded, and small.
fn item_inline(i: &Item) -> bool {
    !matches!(i, Item::Local { .. }) && i.encode().is_ok_and(|b| b.len() <= INLINE_REPLY)
}

/// A copy of a channel's next value, for a remote `fetch`: references inside go without weight
/// (see `copy_scope`).
fn copy_item(i: &Item) -> Result<Item> {
    crate::runtime::refs::copy_scope(|| i.encode()).map(|b| Item::Bytes(b.into_vec()))
}

/// A parked request: answered later by whichever thread makes the answer possible. It is listed
/// as running, so that an interrupt answers it (it then stays silent).
struct Parking {
    rt: &'static Runtime,
    from: Pid,
    id: u64,
    job: u64,
    ctl: Arc<JobCtl>,
}

impl Parking {
    fn answer(self, r: Result<Body<'_>>) {
        if self.id != 0 && self.ctl.claim_reply() {
            self.rt.reply_inline(self.from, self.id, r);
        }
    }

    fn answer_item(self, r: Result<Item>) {
        match r {
            Ok(item) if !item_inline(&item) => {
                exec::spawn(Box::new(move || self.answer(item.encode())));
            }
            Ok(item) => self.answer(item.encode()),
            Err(e) => self.answer(Err(e)),
        }
    }

    fn answer_empty(self, r: Result<Item>) {
        self.answer(r.map(|_| Body::Owned(Vec::new())));
    }

    /// The channel's view: whether the answer is still wanted, and what to do with it.
    fn parked(self, done: fn(Parking, Result<Item>)) -> Parked {
        let (rt, from, ctl) = (self.rt, self.from, Arc::clone(&self.ctl));
        Parked {
            live: Box::new(move || !ctl.is_answered() && !rt.is_removed(from)),
            done: Box::new(move |r| done(self, r)),
            tag: 0,
        }
    }
}

impl Drop for Parking {
    fn drop(&mut self) {
        self.rt
            .inflight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.job);
    }
}

impl Runtime {
    fn queue(&'static self, pid: Pid) -> Arc<SerialQueue> {
        let mut qs = self.queues.lock().unwrap_or_else(|e| e.into_inner());
        Arc::clone(qs.entry(pid).or_insert_with(|| {
            SerialQueue::new(Box::new(move |q: &SerialQueue| {
                if let Some(link) = self.link_of(pid) {
                    /// Lowers `IDLE_FOR` however the spin ends.
                    struct Idle;
                    impl Drop for Idle {
                        fn drop(&mut self) {
                            IDLE_FOR.with(|c| c.set(0));
                        }
                    }
                    IDLE_FOR.with(|c| c.set(pid));
                    let _idle = Idle;
                    link.spin(
                        &self.poller,
                        &self,
                        self.spin,
                        &|| q.has_jobs(),
                        false,
                        Leave::ForExecutor,
                    );
                }
            }))
        }))
    }

    pub(crate) fn dispatch(&'static self, from: Pid, frame: Frame) {
        let msg = match decode_msg(frame.meta()) {
            Ok(m) => m,
            Err(e) => {
                crate::log!(
                    warn,
                    peer = from,
                    error = %e,
                    "malformed message from pid {from}"
                );
                let id = frame.header.id;
                if id != 0 {
                    exec::spawn(Box::new(move || {
                        self.reply(
                            from,
                            id,
                            Err(Error::Protocol(format!("malformed message: {e}"))),
                        )
                    }));
                }
                return;
            }
        };
        match msg {
            Msg::Reply { ok } => {
                self.requests
                    .complete(from, frame.header.id, reply_result(ok, frame))
            }
            Msg::DelRef { rrid, weight } => self.release(rrid, from, weight),
            Msg::AddClient {
                rrid,
                from: a,
                to,
                weight,
            } => self.client_moved(rrid, a, to, weight),
            Msg::Interrupt => self.interrupt_local(),
            Msg::Exit => {
                use std::io::Write;
                let _ = std::io::stdout().flush();
                let _ = std::io::stderr().flush();
                // In MPI mode this runs on the progress thread, the only one polling the library.
                if !self.process {
                    return self.stop();
                }
                if let Some(w) = self.world.get() {
                    self.world_stop.store(true, Ordering::Release);
                    w.finalize();
                }
                std::process::exit(0);
            }
            Msg::Config {
                pid: _,
                peers,
                topology,
                allowed,
            } => {
                let mut p = self.peers.write().unwrap_or_else(|e| e.into_inner());
                let existing: Vec<Pid> = peers.iter().map(|i| i.pid).filter(|&q| q != 1).collect();
                for i in peers {
                    p.insert(i.pid, i);
                }
                drop(p);
                let eager = match topology {
                    Topology::AllToAllEager => existing,
                    Topology::Custom => allowed.clone().unwrap_or_default(),
                    _ => Vec::new(),
                };
                *self.allowed.write().unwrap_or_else(|e| e.into_inner()) =
                    allowed.map(|a| a.into_iter().collect());
                *self.topology.write().unwrap_or_else(|e| e.into_inner()) = topology;
                // Eager topologies: the newcomer connects to the workers it will talk to.
                if !eager.is_empty() {
                    exec::spawn(Box::new(move || {
                        for q in eager {
                            if let Err(e) = self.link_to(q) {
                                crate::log!(
                                    error,
                                    peer = q,
                                    error = %e,
                                    "cannot connect to worker {q}"
                                );
                            }
                        }
                    }));
                }
            }
            Msg::Allow(pids) => {
                self.allowed
                    .write()
                    .unwrap_or_else(|e| e.into_inner())
                    .get_or_insert_with(HashSet::new)
                    .extend(pids);
            }
            Msg::PeerAdded(i) => {
                self.peers
                    .write()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(i.pid, i);
            }
            Msg::PeerRemoved(pid) => self.peer_gone(pid),
            Msg::Coll { seq } => self.coll.deposit(seq, from, frame),
            req @ Msg::Call {
                mode: Mode::Service,
                ..
            } => {
                let id = frame.header.id;
                exec::spawn(Box::new(move || {
                    self.run_request(from, id, req, frame, Arc::new(JobCtl::default()))
                }));
            }
            req @ (Msg::Call { .. } | Msg::NewChanFrom { .. }) => {
                // A remotecall's entry exists from here on, in the order of the caller's
                // messages: its holds returned while the call waits or runs then free it.
                if let Msg::Call {
                    mode: Mode::Store { rrid, .. },
                    ..
                } = &req
                {
                    self.value_entry(*rrid, from);
                }
                let id = frame.header.id;
                let ctl = Arc::new(JobCtl::default());
                let job_ctl = Arc::clone(&ctl);
                let job: exec::Job =
                    Box::new(move || self.run_request(from, id, req, frame, job_ctl));
                // Read by the thread that drains `from`'s queue, waiting for it: no lookup.
                let (ctl, job) = if IDLE_FOR.with(|c| c.get()) == from {
                    match exec::push_to_drained(ctl, job) {
                        Ok(()) => return,
                        Err(back) => back,
                    }
                } else {
                    (ctl, job)
                };
                self.queue(from).push(ctl, job);
            }
            req if AWAITING.with(|a| a.get()) => {
                exec::spawn(Box::new(move || self.serve(from, req, frame)));
            }
            req => self.serve(from, req, frame),
        }
    }

    /// Serves a request that runs no user code, on this thread, without blocking; an operation
    /// on a user-defined channel gets a thread of its own.
    fn serve(&'static self, from: Pid, msg: Msg, frame: Frame) {
        let id = frame.header.id;
        if let Some((msg, frame)) = self.serve_now(from, id, msg, frame) {
            exec::spawn(Box::new(move || {
                self.run_request(from, id, msg, frame, Arc::new(JobCtl::default()))
            }));
        }
    }

    /// A reply from a thread that must not wait: large bodies, and replies with no link to use
    /// yet, go from a pool thread.
    fn reply_inline(&'static self, to: Pid, id: u64, r: Result<Body<'_>>) {
        let big = matches!(&r, Ok(b) if b.len() > INLINE_REPLY);
        if !big && self.link_of(to).is_some() {
            return self.reply(to, id, r);
        }
        let r = r.map(|b| b.into_vec());
        exec::spawn(Box::new(move || self.reply(to, id, r.map(Body::Owned))));
    }

    fn parking(&'static self, from: Pid, id: u64) -> Parking {
        let job = self.next_job.fetch_add(1, Ordering::Relaxed);
        let ctl = Arc::new(JobCtl::default());
        self.inflight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(job, (from, id, Arc::clone(&ctl), None));
        Parking {
            rt: self,
            from,
            id,
            job,
            ctl,
        }
    }

    /// Parks a timed put or take on the channel of `e`; once `nanos` have passed, the timer
    /// thread gives it up ([`ErasedChannel::expire`]) unless it was answered first. No thread
    /// waits meanwhile.
    fn park_timed(
        &'static self,
        e: &Arc<Entry>,
        op: ParkOp,
        nanos: u64,
        p: Parking,
        done: fn(Parking, Result<Item>),
    ) {
        let Stored::Channel(ch) = &e.stored else {
            unreachable!("a channel entry");
        };
        let at = deadline_in(Duration::from_nanos(nanos));
        let tag = self.next_job.fetch_add(1, Ordering::Relaxed);
        let key = (at, tag);
        let weak = Arc::downgrade(e);
        // Scheduled before parking, so that an answer's `cancel` always finds it.
        self.timers.at(
            key,
            Box::new(move || {
                if let Some(e) = weak.upgrade() {
                    if let Stored::Channel(ch) = &e.stored {
                        ch.expire(tag);
                    }
                }
            }),
        );
        let mut parked = p.parked(done);
        parked.tag = tag;
        let answer = parked.done;
        parked.done = Box::new(move |r| {
            self.timers.cancel(key);
            answer(r)
        });
        ch.park(op, parked);
        // A deadline that passed before the request was parked found nothing to expire.
        if Instant::now() >= at {
            ch.expire(tag);
        }
    }

    /// Answers a `Fetch` once the Future has its value.
    fn park_fetch(&'static self, p: Parking, e: &Arc<Entry>, rrid: Rrid, from: Pid, release: u64) {
        let Stored::Value(c) = &e.stored else {
            unreachable!("a value entry");
        };
        let weak = Arc::downgrade(e);
        c.when_set(Box::new(move |v| match v {
            Ok(item) if !item_inline(item) => {
                // Encoded and written from a pool thread, from where the value lies.
                exec::spawn(Box::new(move || {
                    match weak.upgrade() {
                        Some(e) => match &e.stored {
                            Stored::Value(c) => {
                                let r = c.with(|v| match v {
                                    Ok(item) => p.answer(item.encode()),
                                    Err(err) => p.answer(Err(err.clone())),
                                });
                                if let Err(err) = r {
                                    crate::log!(warn, error = %err, "fetch of {rrid:?}: {err}");
                                }
                            }
                            Stored::Channel(_) => unreachable!("a value entry"),
                        },
                        None => p.answer(Err(Error::invalid("the Future was freed"))),
                    }
                    self.release(rrid, from, release);
                }));
            }
            Ok(item) => {
                p.answer(item.encode());
                self.release(rrid, from, release);
            }
            Err(err) => {
                p.answer(Err(err.clone()));
                self.release(rrid, from, release);
            }
        }));
    }

    /// [`Runtime::serve`]'s work; hands back a request that needs a thread.
    fn serve_now(
        &'static self,
        from: Pid,
        id: u64,
        msg: Msg,
        frame: Frame,
    ) -> Option<(Msg, Frame)> {
        let now = |r: Result<Body<'_>>| {
            if id != 0 {
                self.reply_inline(from, id, r)
            }
        };
        let empty = || Ok(Body::Owned(Vec::new()));
        match msg {
            Msg::Fetch { rrid, release } => {
                let e = self.value_entry(rrid, from);
                if let Stored::Value(_) = &e.stored {
                    self.park_fetch(self.parking(from, id), &e, rrid, from, release);
                } else {
                    now(Err(Error::invalid("reference is a channel, not a Future")));
                    self.release(rrid, from, release);
                }
            }
            Msg::Wait { rrid } => {
                let e = self.value_entry(rrid, from);
                match &e.stored {
                    // Julia's `wait` on a Future raises the call's error.
                    Stored::Value(c) => {
                        let p = self.parking(from, id);
                        c.when_set(Box::new(move |v| {
                            p.answer(
                                v.as_ref()
                                    .map(|_| Body::Owned(Vec::new()))
                                    .map_err(Error::clone),
                            )
                        }));
                    }
                    Stored::Channel(ch) if ch.parks() => ch.park(
                        ParkOp::Wait,
                        self.parking(from, id).parked(Parking::answer_empty),
                    ),
                    Stored::Channel(_) => return Some((Msg::Wait { rrid }, frame)),
                }
            }
            Msg::IsReady { rrid } => {
                let e = self.value_entry(rrid, from);
                let ready = match &e.stored {
                    Stored::Value(c) => Ok(c.isready()),
                    Stored::Channel(ch) if ch.parks() => ch.isready(Item::Bytes(Vec::new())),
                    Stored::Channel(_) => return Some((Msg::IsReady { rrid }, frame)),
                };
                now(ready.map(|b| Body::Owned(vec![b as u8])));
            }
            Msg::Put { rrid } => {
                let e = self.value_entry(rrid, from);
                let r = match &e.stored {
                    Stored::Value(c) => c.set(Ok(Item::Bytes(frame.body().to_vec()))),
                    Stored::Channel(_) => {
                        Err(Error::invalid("reference is a channel, not a Future"))
                    }
                };
                now(r.map(|_| Body::Owned(Vec::new())));
            }
            Msg::NewChan { rrid, cap } => {
                self.insert_entry(
                    rrid,
                    Stored::Channel(Box::new(ItemChannel::new(cap as usize))),
                    from,
                );
                now(empty());
            }
            Msg::Chan { rrid, op, key } => {
                let e = match self.channel_entry(rrid) {
                    Ok(e) => e,
                    Err(err) => {
                        now(Err(err));
                        return None;
                    }
                };
                let Stored::Channel(ch) = &e.stored else {
                    unreachable!("a channel entry");
                };
                if !ch.parks() {
                    return Some((Msg::Chan { rrid, op, key }, frame));
                }
                let p = || self.parking(from, id);
                match op {
                    ChanOp::Put => ch.park(
                        ParkOp::Put(Item::Bytes(frame.body().to_vec())),
                        p().parked(Parking::answer_empty),
                    ),
                    ChanOp::Take => ch.park(ParkOp::Take, p().parked(Parking::answer_item)),
                    ChanOp::Fetch => {
                        ch.park(ParkOp::Peek(copy_item), p().parked(Parking::answer_item))
                    }
                    ChanOp::Wait => ch.park(ParkOp::Wait, p().parked(Parking::answer_empty)),
                    ChanOp::IsReady => now(ch
                        .isready(Item::Bytes(key))
                        .map(|b| Body::Owned(vec![b as u8]))),
                    ChanOp::Close => {
                        ch.close();
                        now(empty());
                    }
                    ChanOp::IsOpen => now(Ok(Body::Owned(vec![ch.isopen() as u8]))),
                    ChanOp::IsEmpty => now(empty_under(ch.as_ref(), Item::Bytes(key))
                        .map(|b| Body::Owned(vec![b as u8]))),
                    ChanOp::TakeWithin { nanos } => {
                        self.park_timed(&e, ParkOp::Take, nanos, p(), Parking::answer_item)
                    }
                    ChanOp::PutWithin { nanos } => self.park_timed(
                        &e,
                        ParkOp::Put(Item::Bytes(frame.body().to_vec())),
                        nanos,
                        p(),
                        Parking::answer_empty,
                    ),
                }
            }
            Msg::AddWeight { rrid, weight } => match self.add_weight(rrid, from, weight) {
                true => now(empty()),
                false => now(Err(Error::invalid("reference was already freed"))),
            },
            Msg::Query(Query::LiveRefs) => {
                let n = self.live_refs() as u64;
                now(Ok(Body::Owned(n.to_le_bytes().to_vec())));
            }
            other => return Some((other, frame)),
        }
        None
    }

    fn run_request(&'static self, from: Pid, id: u64, msg: Msg, frame: Frame, ctl: Arc<JobCtl>) {
        let job = self.next_job.fetch_add(1, Ordering::Relaxed);
        self.inflight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(job, (from, id, Arc::clone(&ctl), store_target(&msg)));
        let wants_reply = id != 0;
        let reply = |r: Result<Body<'_>>| {
            if wants_reply && ctl.claim_reply() {
                self.reply(from, id, r);
            }
        };
        match msg {
            Msg::Call { func, mode } => {
                let out = match registry::lookup(&func) {
                    None => Err(Error::UnknownFunction {
                        name: func.to_string(),
                        pid: self.myid(),
                    }),
                    Some(entry) => {
                        run_guarded_as(self.myid(), &func, || (entry.call)(&frame.body()))
                            .map(|v| (entry, v))
                    }
                };
                match mode {
                    Mode::Fetch | Mode::Service => match out {
                        Ok((entry, v)) => match (entry.encoder)() {
                            Some(enc) => match enc(v.as_ref()) {
                                Ok(b) => reply(Ok(b)),
                                Err(e) => reply(Err(Error::Codec {
                                    action: "encode",
                                    what: format!("result of {func}"),
                                    pid: self.myid(),
                                    reason: e.to_string(),
                                })),
                            },
                            None => reply(Err(Error::invalid(format!(
                                "the result of {func} is not serializable"
                            )))),
                        },
                        Err(e) => reply(Err(e)),
                    },
                    Mode::Store { rrid, notify } => {
                        let item = out.map(|(entry, v)| match (entry.encoder)() {
                            Some(encode) => Item::Local { value: v, encode },
                            None => Item::Local {
                                value: v,
                                encode: |_| {
                                    Err(crate::wire::codec::CodecError::new(
                                        "the result type is not serializable",
                                    ))
                                },
                            },
                        });
                        // `remotecall_wait` raises the call's error, as Julia's does.
                        let ack = match &item {
                            Ok(_) => Ok(Body::Owned(Vec::new())),
                            Err(e) => Err(e.clone()),
                        };
                        // No entry: every hold was returned meanwhile, and the value goes.
                        if let Some(cell) = self.entry(rrid) {
                            if let Stored::Value(c) = &cell.stored {
                                let _ = c.set(item);
                            }
                        }
                        if notify {
                            reply(ack);
                        }
                    }
                    Mode::Do => {
                        if let Err(e) = out {
                            crate::log!(
                                error,
                                function = %func,
                                error = %e,
                                "error in remote_do of {func}"
                            );
                        }
                    }
                }
            }
            Msg::Wait { rrid } => {
                let e = self.value_entry(rrid, from);
                match &e.stored {
                    // Julia's `wait` on a Future raises the call's error.
                    Stored::Value(c) => {
                        match c.with(|v| v.as_ref().map(|_| ()).map_err(Error::clone)) {
                            Ok(Ok(())) => reply(Ok(Body::Owned(Vec::new()))),
                            Ok(Err(err)) | Err(err) => reply(Err(err)),
                        }
                    }
                    Stored::Channel(ch) => reply(
                        ch.wait(Item::Bytes(Vec::new()))
                            .map(|_| Body::Owned(Vec::new())),
                    ),
                }
            }
            Msg::IsReady { rrid } => {
                let e = self.value_entry(rrid, from);
                let ready = match &e.stored {
                    Stored::Value(c) => Ok(c.isready()),
                    Stored::Channel(ch) => ch.isready(Item::Bytes(Vec::new())),
                };
                reply(ready.map(|b| Body::Owned(vec![b as u8])));
            }
            Msg::NewChanFrom { rrid, func } => {
                let r = self.construct_channel(&func, |entry| (entry.call)(&frame.body()));
                match r {
                    Ok(ch) => {
                        self.insert_entry(rrid, Stored::Channel(ch), from);
                        reply(Ok(Body::Owned(Vec::new())));
                    }
                    Err(e) => reply(Err(e)),
                }
            }
            Msg::Chan { rrid, op, key } => match self.chan_op(rrid, op, key, &frame.body()) {
                Ok(ChanOut::Bytes(b)) => reply(Ok(Body::Owned(b))),
                Ok(ChanOut::Item(i)) => match i.encode() {
                    Ok(b) => reply(Ok(b)),
                    Err(e) => reply(Err(e)),
                },
                Err(e) => reply(Err(e)),
            },
            other => crate::log!(
                warn,
                peer = from,
                "unexpected request {other:?} from pid {from}"
            ),
        }
        self.inflight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&job);
    }

    pub(crate) fn construct_channel(
        &self,
        func: &str,
        call: impl FnOnce(
            &'static registry::RemoteEntry,
        ) -> std::result::Result<registry::AnyBox, CallError>,
    ) -> Result<Box<dyn ErasedChannel>> {
        let entry = registry::lookup(func).ok_or_else(|| Error::UnknownFunction {
            name: func.to_string(),
            pid: self.myid(),
        })?;
        let conv = (entry.as_channel)().ok_or_else(|| {
            Error::invalid(format!(
                "{func} does not return a type implementing AbstractChannel"
            ))
        })?;
        let v = run_guarded_as(self.myid(), func, || call(entry))?;
        Ok(conv(v))
    }

    fn channel_entry(&self, rrid: Rrid) -> Result<Arc<Entry>> {
        let e = self.entry(rrid).ok_or_else(|| {
            Error::invalid(format!(
                "RemoteChannel {rrid:?} does not exist on pid {} (freed?)",
                self.myid()
            ))
        })?;
        match &e.stored {
            Stored::Channel(_) => Ok(e),
            Stored::Value(_) => Err(Error::invalid("reference is a Future, not a channel")),
        }
    }

    fn chan_op(&self, rrid: Rrid, op: ChanOp, key: Vec<u8>, body: &[u8]) -> Result<ChanOut> {
        let e = self.channel_entry(rrid)?;
        let Stored::Channel(ch) = &e.stored else {
            unreachable!("a channel entry");
        };
        let key = Item::Bytes(key);
        let bytes = ChanOut::Bytes;
        match op {
            ChanOp::Put => ch
                .put(key, Item::Bytes(body.to_vec()))
                .map(|_| bytes(Vec::new())),
            ChanOp::Take => ch.take(key).map(ChanOut::Item),
            ChanOp::Fetch => {
                let mut out = Vec::new();
                // A peek sends a copy: references inside go without weight (see `copy_scope`).
                ch.peek(key, &mut |i| {
                    out = crate::runtime::refs::copy_scope(|| i.encode())?.into_vec();
                    Ok(())
                })?;
                Ok(bytes(out))
            }
            ChanOp::IsReady => Ok(bytes(vec![ch.isready(key)? as u8])),
            ChanOp::Wait => ch.wait(key).map(|_| bytes(Vec::new())),
            ChanOp::Close => {
                ch.close();
                Ok(bytes(Vec::new()))
            }
            ChanOp::IsOpen => Ok(bytes(vec![ch.isopen() as u8])),
            ChanOp::IsEmpty => Ok(bytes(vec![empty_under(ch.as_ref(), key)? as u8])),
            ChanOp::TakeWithin { nanos } => ch
                .take_until(key, deadline_in(Duration::from_nanos(nanos)))
                .map(ChanOut::Item),
            ChanOp::PutWithin { nanos } => ch
                .put_until(
                    key,
                    Item::Bytes(body.to_vec()),
                    deadline_in(Duration::from_nanos(nanos)),
                )
                .map(|_| bytes(Vec::new())),
        }
    }
}

fn store_target(msg: &Msg) -> Option<Rrid> {
    match msg {
        Msg::Call {
            mode: Mode::Store { rrid, .. },
            ..
        } => Some(*rrid),
        _ => None,
    }
}
