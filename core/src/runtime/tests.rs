//! In-process tests of the runtime: dispatch, the owner store, reference books and client
//! sets, and reply slots, on runtimes joined by socket pairs in this process.

use super::testing::{args, eventually, Local};
use super::*;
use crate::runtime::registry::RemoteFn;
use crate::runtime::store::INITIAL_WEIGHT;
use crate::wire::codec;

#[cohort_macros::remote(crate = crate)]
fn add(a: u64, b: u64) -> u64 {
    a + b
}

#[cohort_macros::remote(crate = crate)]
fn nap(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

#[cohort_macros::remote(crate = crate)]
fn nap_us(us: u64) -> u64 {
    std::thread::sleep(Duration::from_micros(us));
    us
}

#[cohort_macros::remote(crate = crate)]
fn echo_bytes(v: Vec<u8>) -> Vec<u8> {
    v
}

#[cohort_macros::remote(crate = crate)]
fn echo_f64s(v: Vec<f64>) -> Vec<f64> {
    v
}

#[cohort_macros::remote(crate = crate)]
fn refuse(x: u64) -> std::result::Result<u64, String> {
    Err(format!("no {x}"))
}

fn call(f: &str, mode: Mode) -> Msg {
    Msg::Call {
        func: f.to_string().into(),
        mode,
    }
}

fn none() -> Body<'static> {
    Body::Owned(Vec::new())
}

fn value(f: Frame) -> u64 {
    codec::decode_frame::<u64>(f).expect("a u64 reply")
}

fn ready(rt: &'static Runtime, owner: Pid, rrid: Rrid) -> bool {
    let f = rt
        .request(owner, &Msg::IsReady { rrid }, &none())
        .expect("isready is answered");
    f.body()[..] == [1]
}

#[test]
fn a_call_is_answered_by_its_owner() {
    let c = Local::new(2);
    let f = c
        .rt(1)
        .request(2, &call(add.name(), Mode::Fetch), &args(&(2u64, 3u64)))
        .unwrap();
    assert_eq!(value(f), 5);
    // And the other way round: a worker's runtime calls the master's.
    let f = c
        .rt(2)
        .request(1, &call(add.name(), Mode::Fetch), &args(&(40u64, 2u64)))
        .unwrap();
    assert_eq!(value(f), 42);
}

#[test]
fn errors_name_the_owner_and_leave_the_link_usable() {
    let c = Local::new(2);
    let rt = c.rt(1);
    match rt.request(2, &call("no::such_fn", Mode::Fetch), &none()) {
        Err(Error::UnknownFunction { name, pid }) => {
            assert_eq!((name.as_str(), pid), ("no::such_fn", 2))
        }
        other => panic!("expected UnknownFunction, got {other:?}"),
    }
    match rt.request(2, &call(refuse.name(), Mode::Fetch), &args(&(7u64,))) {
        Err(Error::Remote(e)) => assert_eq!((e.pid, e.error.as_str()), (2, "no 7")),
        other => panic!("expected a RemoteException, got {other:?}"),
    }
    // Arguments of the wrong shape: a decode error on the owner, named as such.
    match rt.request(2, &call(add.name(), Mode::Fetch), &args(&(1u8,))) {
        Err(Error::Codec { action, pid, .. }) => assert_eq!((action, pid), ("decode", 2)),
        other => panic!("expected a codec error, got {other:?}"),
    }
    let f = rt
        .request(2, &call(add.name(), Mode::Fetch), &args(&(1u64, 1u64)))
        .unwrap();
    assert_eq!(value(f), 2);
}

#[test]
fn requests_without_user_code_do_not_wait_behind_a_running_call() {
    let c = Local::new(2);
    let rt = c.rt(1);
    let rrid = rt.next_rrid();
    let running = rt
        .request_start(
            2,
            &call(nap.name(), Mode::Store { rrid, notify: true }),
            &args(&(1500u64,)),
        )
        .unwrap();
    let t0 = Instant::now();
    assert!(!ready(rt, 2, rrid));
    let n = rt
        .request(2, &Msg::Query(Query::LiveRefs), &none())
        .unwrap();
    assert_eq!(n.body()[..], 1u64.to_le_bytes());
    // Answered while the 1.5 s call runs (the bound leaves room for a loaded machine).
    assert!(
        t0.elapsed() < Duration::from_millis(700),
        "isready took {:?}",
        t0.elapsed()
    );
    // A second user call from the same caller starts after the first, as calls are ordered.
    let f = rt
        .request(2, &call(add.name(), Mode::Fetch), &args(&(1u64, 2u64)))
        .unwrap();
    assert_eq!(value(f), 3);
    assert!(running.is_done(), "the earlier call finished first");
    rt.request_finish(running).unwrap();
    assert!(ready(rt, 2, rrid));
    // A fetch that returns the caller's whole weight frees the entry.
    let f = rt
        .request(
            2,
            &Msg::Fetch {
                rrid,
                release: INITIAL_WEIGHT,
            },
            &none(),
        )
        .unwrap();
    assert_eq!(value(f), 1500);
    eventually("the entry freed", || c.rt(2).live_refs() == 0);
}

#[test]
fn parked_fetches_from_several_runtimes_all_return() {
    let c = Local::new(3);
    let rrid = c.rt(1).next_rrid();
    let call_msg = call(
        nap.name(),
        Mode::Store {
            rrid,
            notify: false,
        },
    );
    c.rt(1).send(2, &call_msg, &args(&(200u64,))).unwrap();
    let fetchers: Vec<_> = [1, 1, 1, 3, 3]
        .into_iter()
        .map(|p| {
            let rt = c.rt(p);
            std::thread::spawn(move || {
                value(
                    rt.request(2, &Msg::Fetch { rrid, release: 0 }, &none())
                        .unwrap(),
                )
            })
        })
        .collect();
    for f in fetchers {
        assert_eq!(f.join().unwrap(), 200);
    }
    // The value stays while its holder keeps its weight, and goes with it.
    assert_eq!(c.rt(2).live_refs(), 1);
    c.rt(1).del_ref(2, rrid, INITIAL_WEIGHT);
    eventually("the entry freed", || c.rt(2).live_refs() == 0);
}

#[test]
fn an_entry_lives_until_every_share_of_its_weight_is_back() {
    let c = Local::new(2);
    let (rt, owner) = (c.rt(1), c.rt(2));
    let rrid = rt.next_rrid();
    rt.request(2, &Msg::NewChan { rrid, cap: 4 }, &none())
        .unwrap();
    assert_eq!(owner.live_refs(), 1);
    let half = INITIAL_WEIGHT / 2;
    rt.del_ref(2, rrid, half);
    // A request after the return sees its effect: messages of one link arrive in order.
    let n = rt
        .request(2, &Msg::Query(Query::LiveRefs), &none())
        .unwrap();
    assert_eq!(n.body()[..], 1u64.to_le_bytes());
    rt.del_ref(2, rrid, INITIAL_WEIGHT - half);
    eventually("the channel freed", || owner.live_refs() == 0);
    // A freed reference is an error to use, not a hang.
    match rt.request(
        2,
        &Msg::Chan {
            rrid,
            op: ChanOp::IsReady,
            key: Vec::new(),
        },
        &none(),
    ) {
        Err(Error::Invalid(_)) => {}
        other => panic!("expected an error for a freed channel, got {other:?}"),
    }
}

/// A channel on pid 2 that only pid 3 holds: the master moves half its weight to pid 3 (the
/// move told to the owner by `tell`), then returns its own half.
fn held_by_3_alone(c: &Local, tell: impl FnOnce(&Msg)) {
    let rt = c.rt(1);
    let rrid = rt.next_rrid();
    rt.request(2, &Msg::NewChan { rrid, cap: 1 }, &none())
        .unwrap();
    let half = INITIAL_WEIGHT / 2;
    tell(&Msg::AddClient {
        rrid,
        from: 1,
        to: 3,
        weight: half,
    });
    rt.del_ref(2, rrid, INITIAL_WEIGHT - half);
    let n = rt
        .request(2, &Msg::Query(Query::LiveRefs), &none())
        .unwrap();
    assert_eq!(n.body()[..], 1u64.to_le_bytes(), "pid 3 still holds it");
}

/// Pid 2 frees what only the dead pid 3 held.
fn released_by_2(c: &Local) {
    eventually("the dead holder's share released", || {
        c.rt(2).live_refs() == 0
    });
}

#[test]
fn a_dead_holders_share_is_released_on_the_owner() {
    let c = Local::new(3);
    let rt = c.rt(1);
    held_by_3_alone(&c, |moved| rt.send(2, moved, &none()).unwrap());
    c.kill(3);
    released_by_2(&c);
    // The rest of the cluster keeps working.
    let f = rt
        .request(2, &call(add.name(), Mode::Fetch), &args(&(4u64, 5u64)))
        .unwrap();
    assert_eq!(value(f), 9);
}

/// A holder's last message (it took half the master's weight) still waits unread when the
/// owner hears from the master that the holder is gone: the owner reads it first, so the
/// reference is freed once the master returns its own half, and not kept for ever.
#[test]
fn a_dead_peers_last_messages_count_when_the_news_of_its_death_comes_first() {
    let c = Local::with_rings(3);
    let rt = c.rt(1);
    let to_owner = c.rt(3).link_of(2).unwrap();
    held_by_3_alone(&c, |moved| {
        to_owner.publish_unrung(&encode_msg(moved)).unwrap();
    });
    c.rt(2).peer_gone(3);
    released_by_2(&c);
    let f = rt
        .request(2, &call(add.name(), Mode::Fetch), &args(&(2u64, 5u64)))
        .unwrap();
    assert_eq!(value(f), 7);
}

#[test]
fn a_reply_slot_fails_when_its_peer_dies() {
    let c = Local::new(3);
    let rt = c.rt(1);
    let p = rt
        .request_start(3, &call(nap.name(), Mode::Fetch), &args(&(3000u64,)))
        .unwrap();
    let t0 = Instant::now();
    c.kill(3);
    match rt.request_finish(p) {
        Err(Error::ProcessExited(3)) => {}
        other => panic!("expected ProcessExited(3), got {other:?}"),
    }
    assert!(t0.elapsed() < Duration::from_secs(2));
    assert_eq!(rt.requests.open_to(Some(3)), 0);
    match rt.request(3, &Msg::Query(Query::LiveRefs), &none()) {
        Err(Error::ProcessExited(3)) => {}
        other => panic!("expected ProcessExited(3) for a new request, got {other:?}"),
    }
    let f = rt
        .request(2, &call(add.name(), Mode::Fetch), &args(&(1u64, 1u64)))
        .unwrap();
    assert_eq!(value(f), 2);
}

#[test]
fn a_timed_out_slot_drops_its_late_reply() {
    let c = Local::new(2);
    let rt = c.rt(1);
    let p = rt
        .request_start(2, &call(nap.name(), Mode::Fetch), &args(&(300u64,)))
        .unwrap();
    let deadline = Instant::now() + Duration::from_millis(30);
    match rt.request_finish_until(p, Some(deadline)) {
        Err(Error::Timeout(why)) => assert_eq!(why, "no answer from pid 2"),
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert_eq!(rt.requests.open_to(None), 0);
    // The next request gets its own reply, not the late one.
    let f = rt
        .request(2, &call(add.name(), Mode::Fetch), &args(&(20u64, 3u64)))
        .unwrap();
    assert_eq!(value(f), 23);
    assert_eq!(rt.requests.open_to(None), 0);
}

#[test]
fn concurrent_requests_each_get_their_own_reply() {
    let c = Local::new(3);
    let threads: Vec<_> = (0..8u64)
        .map(|t| {
            let rt = c.rt(if t % 2 == 0 { 1 } else { 3 });
            std::thread::spawn(move || {
                for i in 0..50u64 {
                    let f = rt
                        .request(2, &call(add.name(), Mode::Fetch), &args(&(t, i * 100)))
                        .unwrap();
                    assert_eq!(value(f), t + i * 100);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

// ---------- the owner store, without links ----------

use crate::runtime::store::{ErasedChannel, ParkOp, Parked, ValueCell};
use std::sync::mpsc;

fn bytes(i: Item) -> Vec<u8> {
    match i {
        Item::Bytes(b) => b,
        _ => panic!("an encoded item"),
    }
}

/// A parked request that reports its outcome on a channel; `live` says whether it is wanted.
fn parked(live: bool) -> (Parked, mpsc::Receiver<Result<Vec<u8>>>) {
    let (tx, rx) = mpsc::channel();
    let p = Parked {
        live: Box::new(move || live),
        done: Box::new(move |r| {
            let _ = tx.send(r.map(bytes));
        }),
        tag: 0,
    };
    (p, rx)
}

fn answered(rx: &mpsc::Receiver<Result<Vec<u8>>>) -> Option<Result<Vec<u8>>> {
    rx.try_recv().ok()
}

#[test]
fn a_value_cell_is_set_once_and_answers_its_parked_waiters() {
    let cell = ValueCell::default();
    let seen = Arc::new(Mutex::new(Vec::new()));
    for _ in 0..2 {
        let seen = Arc::clone(&seen);
        cell.when_set(Box::new(move |v| {
            let b = match v {
                Ok(Item::Bytes(b)) => b.clone(),
                _ => panic!("the value set"),
            };
            seen.lock().unwrap().push(b);
        }));
    }
    let past = Some(Instant::now());
    match cell.with_until(past, |_| ()) {
        Err(Error::Timeout(why)) => assert_eq!(why, "the Future has no value yet"),
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert!(!cell.isready());
    cell.set(Ok(Item::Bytes(vec![7]))).unwrap();
    assert_eq!(*seen.lock().unwrap(), [vec![7], vec![7]]);
    assert!(matches!(
        cell.set(Ok(Item::Bytes(vec![8]))),
        Err(Error::AlreadySet)
    ));
    // A waiter that comes after the value is answered at once, with the first value.
    let seen2 = Arc::clone(&seen);
    cell.when_set(Box::new(move |v| {
        if let Ok(Item::Bytes(b)) = v {
            seen2.lock().unwrap().push(b.clone());
        }
    }));
    assert_eq!(seen.lock().unwrap().len(), 3);
    assert_eq!(seen.lock().unwrap()[2], [7]);
}

#[test]
fn parked_takers_are_served_in_order_and_a_dropped_one_takes_nothing() {
    let ch = ItemChannel::new(4);
    let (a, ra) = parked(true);
    let (gone, rgone) = parked(false);
    let (b, rb) = parked(true);
    ch.park(ParkOp::Take, a);
    ch.park(ParkOp::Take, gone);
    ch.park(ParkOp::Take, b);
    assert!(answered(&ra).is_none());
    ch.put(Item::Bytes(vec![]), Item::Bytes(vec![1])).unwrap();
    ch.put(Item::Bytes(vec![]), Item::Bytes(vec![2])).unwrap();
    assert_eq!(answered(&ra).unwrap().unwrap(), [1]);
    // The taker nobody waits for any more is skipped: its value goes to the next one.
    assert!(answered(&rgone).is_none());
    assert_eq!(answered(&rb).unwrap().unwrap(), [2]);
    assert_eq!(ch.isempty(), Some(true));
}

#[test]
fn a_parked_putter_waits_for_room_and_a_rendezvous_for_its_taker() {
    let ch = ItemChannel::new(1);
    ch.put(Item::Bytes(vec![]), Item::Bytes(vec![1])).unwrap();
    let (p, rp) = parked(true);
    ch.park(ParkOp::Put(Item::Bytes(vec![2])), p);
    assert!(answered(&rp).is_none(), "no room yet");
    assert_eq!(bytes(ch.take(Item::Bytes(vec![])).unwrap()), [1]);
    assert_eq!(answered(&rp).unwrap().unwrap(), Vec::<u8>::new());
    assert_eq!(bytes(ch.take(Item::Bytes(vec![])).unwrap()), [2]);

    let rv = ItemChannel::new(0);
    let (p, rp) = parked(true);
    rv.park(ParkOp::Put(Item::Bytes(vec![9])), p);
    assert!(answered(&rp).is_none(), "no taker yet");
    assert_eq!(bytes(rv.take(Item::Bytes(vec![])).unwrap()), [9]);
    assert_eq!(answered(&rp).unwrap().unwrap(), Vec::<u8>::new());
}

#[test]
fn closing_answers_parked_requests_and_keeps_what_is_queued() {
    let ch = ItemChannel::new(2);
    let (t, rt_) = parked(true);
    ch.park(ParkOp::Take, t);
    ch.close();
    assert!(matches!(answered(&rt_), Some(Err(Error::ChannelClosed))));
    let (p, rp) = parked(true);
    ch.park(ParkOp::Put(Item::Bytes(vec![1])), p);
    assert!(matches!(answered(&rp), Some(Err(Error::ChannelClosed))));
    assert!(!ch.isopen());

    // Values queued before the close are still taken, then the channel reads as closed.
    let ch = ItemChannel::new(2);
    ch.put(Item::Bytes(vec![]), Item::Bytes(vec![5])).unwrap();
    ch.close();
    assert_eq!(bytes(ch.take(Item::Bytes(vec![])).unwrap()), [5]);
    assert!(matches!(
        ch.take(Item::Bytes(vec![])),
        Err(Error::ChannelClosed)
    ));
}

#[test]
fn a_timed_take_that_runs_out_leaves_the_channel_whole() {
    let ch = ItemChannel::new(1);
    let soon = Instant::now() + Duration::from_millis(20);
    match ch.take_until(Item::Bytes(vec![]), soon) {
        Err(Error::Timeout(why)) => assert_eq!(why, "no value"),
        other => panic!("expected a timeout, got {:?}", other.map(bytes)),
    }
    ch.put(Item::Bytes(vec![]), Item::Bytes(vec![3])).unwrap();
    let soon = Instant::now() + Duration::from_millis(20);
    match ch.put_until(Item::Bytes(vec![]), Item::Bytes(vec![4]), soon) {
        Err(Error::Timeout(why)) => assert_eq!(why, "no room"),
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert_eq!(bytes(ch.take(Item::Bytes(vec![])).unwrap()), [3]);
    assert_eq!(ch.isempty(), Some(true));
}

#[test]
fn parked_remote_takes_are_answered_by_puts_from_another_runtime() {
    let c = Local::new(3);
    let rrid = c.rt(1).next_rrid();
    c.rt(1)
        .request(2, &Msg::NewChan { rrid, cap: 8 }, &none())
        .unwrap();
    let chan = |op| Msg::Chan {
        rrid,
        op,
        key: Vec::new(),
    };
    // 200 takes parked on the owner, none answered yet.
    let takes: Vec<PendingReq> = (0..200)
        .map(|_| {
            c.rt(1)
                .request_start(2, &chan(ChanOp::Take), &none())
                .unwrap()
        })
        .collect();
    assert!(takes.iter().all(|p| !p.is_done()));
    for i in 0..200u64 {
        c.rt(3).request(2, &chan(ChanOp::Put), &args(&i)).unwrap();
    }
    let mut got: Vec<u64> = takes
        .into_iter()
        .map(|p| value(c.rt(1).request_finish(p).unwrap()))
        .collect();
    // Parked takers are served in the order they came, one value each.
    assert!(got.windows(2).all(|w| w[0] < w[1]), "in order");
    got.dedup();
    assert_eq!(got.len(), 200);
    let empty = c.rt(3).request(2, &chan(ChanOp::IsEmpty), &none()).unwrap();
    assert_eq!(empty.body()[..], [1]);
}

#[test]
fn weight_asked_for_is_booked_to_the_asker_and_never_to_a_dead_one() {
    let c = Local::new(3);
    let (rt, owner) = (c.rt(1), c.rt(2));
    let rrid = rt.next_rrid();
    rt.request(2, &Msg::NewChan { rrid, cap: 1 }, &none())
        .unwrap();
    rt.request(2, &Msg::AddWeight { rrid, weight: 10 }, &none())
        .unwrap();
    rt.del_ref(2, rrid, INITIAL_WEIGHT);
    let n = rt
        .request(2, &Msg::Query(Query::LiveRefs), &none())
        .unwrap();
    assert_eq!(n.body()[..], 1u64.to_le_bytes(), "the 10 asked for are out");
    c.kill(3);
    eventually("pid 3 gone", || owner.is_removed(3));
    assert!(
        !owner.add_weight(rrid, 3, 5),
        "nothing is booked to the dead"
    );
    rt.del_ref(2, rrid, 10);
    eventually("the entry freed", || owner.live_refs() == 0);
    match rt.request(2, &Msg::AddWeight { rrid, weight: 1 }, &none()) {
        Err(Error::Invalid(m)) => assert_eq!(m, "reference was already freed"),
        other => panic!("expected an error for a freed reference, got {other:?}"),
    }
}

#[test]
fn a_reply_counts_only_from_the_pid_the_request_went_to() {
    let c = Local::new(3);
    let rt = c.rt(1);
    let p = rt
        .request_start(2, &call(nap.name(), Mode::Fetch), &args(&(200u64,)))
        .unwrap();
    // Pid 3 answers pid 1's request to pid 2, guessing its id.
    let forged = encode_msg(&Msg::Reply { ok: true });
    c.rt(3)
        .link_of(1)
        .unwrap()
        .send(p.id, &forged, &args(&999u64))
        .unwrap();
    assert_eq!(value(rt.request_finish(p).unwrap()), 200);
    // Pid 3's link still works.
    let f = c
        .rt(3)
        .request(1, &call(add.name(), Mode::Fetch), &args(&(1u64, 2u64)))
        .unwrap();
    assert_eq!(value(f), 3);
}

// ---------- the gate: accepted connections and their hellos ----------

use super::testing::listen;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;

fn hello(rt: &Runtime, version: u8, cookie: [u8; COOKIE_LEN], from: Pid) -> [u8; HELLO_LEN] {
    Hello {
        version,
        cookie,
        from,
        assign: 0,
        host: rt.host.clone(),
        ring: None,
    }
    .encode()
}

/// What the listening side answers `bytes` with: the bytes it sent before closing (or before
/// a second of silence).
fn answer(path: &std::path::Path, bytes: &[u8]) -> Vec<u8> {
    let mut s = UnixStream::connect(path).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    s.write_all(bytes).unwrap();
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    got
}

#[test]
fn before_the_cookie_is_checked_nothing_is_said() {
    let c = Local::new(2);
    let path = listen(c.rt(1));
    let right = c.rt(1).cookie();
    let wrong = *b"not-the-cookie!!";
    // A wrong cookie gets no answer, whatever the version.
    assert!(answer(&path, &hello(c.rt(2), 99, wrong, 2)).is_empty());
    assert!(answer(&path, &hello(c.rt(2), PROTOCOL_VERSION, wrong, 2)).is_empty());
    // The right cookie with another version learns the version it should speak.
    let w = answer(&path, &hello(c.rt(2), 99, right, 2));
    let w = Welcome::decode(&w[..WELCOME_LEN].try_into().unwrap()).unwrap();
    assert_eq!((w.status, w.version), (1, PROTOCOL_VERSION));
    assert!(same_cookie_for_tests(&right, &right) && !same_cookie_for_tests(&right, &wrong));
}

fn same_cookie_for_tests(a: &[u8; COOKIE_LEN], b: &[u8; COOKIE_LEN]) -> bool {
    super::handshake::same_cookie(a, b)
}

#[test]
fn waiting_connections_are_bounded_and_a_peer_with_the_cookie_still_gets_in() {
    let c = Local::new(3);
    let rt = c.rt(1);
    let path = listen(rt);
    let limit = rt.gate.limit();
    let idle: Vec<UnixStream> = (0..limit + 20)
        .map(|_| UnixStream::connect(&path).unwrap())
        .collect();
    eventually("the gate full", || rt.gate.waiting() == limit);
    // The oldest were shed: they read the end of the stream.
    let mut first = &idle[0];
    first
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let mut b = [0u8; 1];
    assert_eq!(first.read(&mut b).unwrap(), 0, "the oldest is closed");
    // Pid 2 opens a second link to pid 1 through the listener while the idle ones wait.
    let fd = OwnedFd::from(UnixStream::connect(&path).unwrap());
    let (pid, _, _) = c.rt(2).handshake_out(&fd, 1, 0, "in-process").unwrap();
    assert_eq!(pid, 1);
    eventually("the second link registered", || rt.live_links_of(2) == 2);
    // A third link claiming pid 2 is refused (one each way is all a peer gets).
    let fd = OwnedFd::from(UnixStream::connect(&path).unwrap());
    match c.rt(2).handshake_out(&fd, 1, 0, "in-process") {
        Err(Error::Protocol(m)) => {
            assert_eq!(m, "pid 1 refused the connection (wrong cluster cookie?)")
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(rt.live_links_of(2), 2);
    // The cluster still answers over the links it has.
    let f = c
        .rt(3)
        .request(1, &call(add.name(), Mode::Fetch), &args(&(2u64, 2u64)))
        .unwrap();
    assert_eq!(value(f), 4);
    drop(idle);
}

#[test]
fn rings_are_taken_only_after_the_cookie() {
    let c = Local::with_rings(2);
    let rt = c.rt(1);
    let path = listen(rt);
    // Each hello claims another pid: a link of an earlier one may still be closing.
    let hello_with = |cookie: [u8; COOKIE_LEN], offer, from| {
        Hello {
            version: PROTOCOL_VERSION,
            cookie,
            from,
            assign: 0,
            host: rt.host.clone(),
            ring: Some(offer),
        }
        .encode()
    };
    // A wrong cookie: no answer at all, the offer ignored.
    let (_unused, offer) = crate::links::ring::Rings::create().unwrap();
    assert!(answer(&path, &hello_with(*b"not-the-cookie!!", offer, 2)).is_empty());
    // The cookie: the listener opens the segment (checking its token) and says so.
    let (_mine, offer) = crate::links::ring::Rings::create().unwrap();
    let w = answer(&path, &hello_with(rt.cookie(), offer, 2));
    let w = Welcome::decode(&w[..WELCOME_LEN].try_into().unwrap()).unwrap();
    assert_eq!((w.status, w.ring), (0, true));
    // An offer whose token does not match its segment is not taken; the link uses its socket.
    let (_other, mut forged) = crate::links::ring::Rings::create().unwrap();
    forged.token[3] ^= 0x55;
    let w = answer(&path, &hello_with(rt.cookie(), forged, 5));
    let w = Welcome::decode(&w[..WELCOME_LEN].try_into().unwrap()).unwrap();
    assert_eq!((w.status, w.ring), (0, false));
}

/// On crowded cores a caller waiting for replies sleeps in its rings' futex; the replies wake
/// it, single and fanned out, each exact.
#[test]
fn on_crowded_cores_reply_waits_sleep_in_the_ring_futex_and_wake_with_the_reply() {
    use crate::links::link::FORCE_CROWDED;
    use crate::links::ring::WOKEN;
    struct Restore;
    impl Drop for Restore {
        fn drop(&mut self) {
            FORCE_CROWDED.store(false, Ordering::Relaxed);
        }
    }
    let c = Local::with_rings(3);
    let rt = c.rt(1);
    FORCE_CROWDED.store(true, Ordering::Relaxed);
    let _restore = Restore;
    let before = WOKEN.load(Ordering::Relaxed);
    for i in 0..40u64 {
        let f = rt
            .request(2, &call(nap_us.name(), Mode::Fetch), &args(&(60 + i,)))
            .unwrap();
        assert_eq!(value(f), 60 + i);
        let p2 = rt
            .request_start(2, &call(nap_us.name(), Mode::Fetch), &args(&(50u64,)))
            .unwrap();
        let p3 = rt
            .request_start(3, &call(nap_us.name(), Mode::Fetch), &args(&(90u64,)))
            .unwrap();
        rt.await_all([&p2, &p3]);
        assert_eq!(value(rt.request_finish(p2).unwrap()), 50);
        assert_eq!(value(rt.request_finish(p3).unwrap()), 90);
    }
    assert!(
        WOKEN.load(Ordering::Relaxed) > before,
        "no wait was woken by a reply"
    );
}

/// Values at, just around and far above the ring's size (and its hand-over piece) cross
/// shared-memory rings both ways byte for byte: bytes through the codec, numbers on the raw
/// path into unfilled memory.
#[test]
fn values_around_and_above_the_ring_size_cross_the_rings_exactly() {
    use crate::links::ring::RING_BYTES;
    let c = Local::with_rings(2);
    let rt = c.rt(1);
    assert!(rt.link_to(2).unwrap().has_rings());
    let piece = 128 << 10;
    let mut sizes = vec![
        0,
        1,
        piece - 1,
        piece,
        piece + 1,
        2 * RING_BYTES,
        3 * RING_BYTES + 4097,
    ];
    for d in [-40i64, -33, -1, 0, 1, 8] {
        sizes.push((RING_BYTES as i64 + d) as usize);
    }
    for n in sizes {
        let v: Vec<u8> = (0..n).map(|i| (i * 31 % 253) as u8).collect();
        let f = rt
            .request(
                2,
                &call(echo_bytes.name(), Mode::Fetch),
                &args(&(v.clone(),)),
            )
            .unwrap();
        let back: Vec<u8> = codec::decode_frame(f).unwrap();
        assert!(back == v, "{n} bytes came back changed");
        let w: Vec<f64> = (0..n / 8 + 1).map(|i| i as f64 * 0.5 - 3.0).collect();
        let f = rt
            .request(
                2,
                &call(echo_f64s.name(), Mode::Fetch),
                &args(&(w.clone(),)),
            )
            .unwrap();
        let back: Vec<f64> = codec::decode_frame(f).unwrap();
        assert!(back == w, "{} numbers came back changed", w.len());
    }
}
