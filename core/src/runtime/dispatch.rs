//! Incoming frames: dispatch by message kind, the per-peer request queues, and the work each
//! request does on the receiving process.

use super::*;

/// What a channel operation answers.
enum ChanOut {
    Bytes(Vec<u8>),
    Item(Item),
}

impl Runtime {
    fn queue(&'static self, pid: Pid) -> Arc<SerialQueue> {
        let mut qs = self.queues.lock().unwrap_or_else(|e| e.into_inner());
        Arc::clone(qs.entry(pid).or_insert_with(|| {
            SerialQueue::new(Box::new(move |q: &SerialQueue| {
                if let Some(link) = self.link_of(pid) {
                    link.spin(&self.ep, self, self.spin, &|| q.has_jobs(), true);
                }
            }))
        }))
    }

    pub(crate) fn dispatch(&'static self, from: Pid, frame: Frame) {
        let msg: Msg = match bincode::deserialize(frame.meta()) {
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
            Msg::Reply { .. } => self.complete(frame.header.id, Ok(frame)),
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
            req => {
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
                self.queue(from).push(
                    ctl,
                    Box::new(move || self.run_request(from, id, req, frame, job_ctl)),
                );
            }
        }
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
                        name: func.clone(),
                        pid: self.myid(),
                    }),
                    Some(entry) => {
                        run_guarded(&func, || (entry.call)(&frame.body())).map(|v| (entry, v))
                    }
                };
                match mode {
                    Mode::Fetch => match out {
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
                                    Err(Box::new(bincode::ErrorKind::Custom(
                                        "the result type is not serializable".into(),
                                    )))
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
            Msg::Fetch { rrid, release } => {
                let e = self.value_entry(rrid, from);
                if let Stored::Value(c) = &e.stored {
                    // Reply from inside the cell: a large value is written from where it lies.
                    let r = c.with(|v| match v {
                        Ok(item) => match item.encode() {
                            Ok(b) => reply(Ok(b)),
                            Err(err) => reply(Err(err)),
                        },
                        Err(err) => reply(Err(err.clone())),
                    });
                    if let Err(err) = r {
                        reply(Err(err));
                    }
                } else {
                    reply(Err(Error::invalid("reference is a channel, not a Future")));
                }
                self.release(rrid, from, release);
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
            Msg::Put { rrid } => {
                let e = self.value_entry(rrid, from);
                let r = match &e.stored {
                    Stored::Value(c) => c.set(Ok(Item::Bytes(frame.body().to_vec()))),
                    Stored::Channel(_) => {
                        Err(Error::invalid("reference is a channel, not a Future"))
                    }
                };
                reply(r.map(|_| Body::Owned(Vec::new())));
            }
            Msg::NewChan { rrid, cap } => {
                self.insert_entry(
                    rrid,
                    Stored::Channel(Box::new(ItemChannel::new(cap as usize))),
                    from,
                );
                reply(Ok(Body::Owned(Vec::new())));
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
            Msg::AddWeight { rrid, weight } => {
                let e = self.entry(rrid);
                match e {
                    Some(e) => {
                        e.clients().add(from, weight);
                        reply(Ok(Body::Owned(Vec::new())));
                    }
                    None => reply(Err(Error::invalid("reference was already freed"))),
                }
            }
            Msg::Query(Query::LiveRefs) => {
                let n = self.stores.lock().unwrap_or_else(|e| e.into_inner()).len() as u64;
                reply(Ok(Body::Owned(n.to_le_bytes().to_vec())));
            }
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
        let v = run_guarded(func, || call(entry))?;
        Ok(conv(v))
    }

    fn chan_op(&self, rrid: Rrid, op: ChanOp, key: Vec<u8>, body: &[u8]) -> Result<ChanOut> {
        let e = self.entry(rrid).ok_or_else(|| {
            Error::invalid(format!(
                "RemoteChannel {rrid:?} does not exist on pid {} (freed?)",
                self.myid()
            ))
        })?;
        let Stored::Channel(ch) = &e.stored else {
            return Err(Error::invalid("reference is a Future, not a channel"));
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
