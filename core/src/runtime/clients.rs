//! Who holds each reference, on its owner: Julia's client set, kept by weight.
//!
//! An owner's entry books its outstanding weight (refs.rs) per holding pid. Weight moves
//! between processes without the owner, so whoever moves it also tells the owner where it went
//! (`Msg::AddClient`: from one pid's share to another's): the sender when it knows where the
//! bytes go (a value put into a channel or a Future), and the process that decodes the
//! reference when it is not the pid the weight was booked to. When a process dies, its share
//! is dropped from every entry, and entries nobody holds any more are freed.
//!
//! Messages from different processes reach the owner in any order, so one share may be below
//! zero for a while (a return booked before the move that gave the weight); the sum of the
//! shares is always the weight outstanding, and the entry is freed when that is zero.
//!
//! # Julia
//! `RemoteValue.clientset`, `add_client`, `del_client`, and `deregister_worker` dropping a dead
//! pid from every client set. Julia's sender adds the destination before sending, as the
//! serializer knows the destination; here an encoding does not, so the sender does it only
//! where the caller tells it (`refs::sent_to`), and otherwise the receiver reports. A reference
//! in flight from a process that dies (sent, not yet reported) is lost with its sender's share.
//! What a dead process did report is booked before its death is, whichever link brings the
//! news first: its frames still unread on this process's links to it are read then.

use crate::base::ids::{Pid, Rrid};
use std::collections::HashMap;
use std::sync::{Arc, MutexGuard};

/// One entry's outstanding weight by holding pid (usually one or two).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Clients {
    shares: Vec<(Pid, i128)>,
}

impl Clients {
    /// A new entry's books: all of `weight` held by `holder` (the reference's creator).
    pub(crate) fn new(holder: Pid, weight: u64) -> Clients {
        Clients {
            shares: vec![(holder, i128::from(weight))],
        }
    }

    fn sum(&self) -> i128 {
        self.shares.iter().map(|&(_, w)| w).sum()
    }

    /// The weight outstanding.
    pub(crate) fn total(&self) -> u64 {
        u64::try_from(self.sum().max(0)).unwrap_or(u64::MAX)
    }

    /// Whether all weight has come back: the entry can be freed.
    pub(crate) fn is_free(&self) -> bool {
        self.sum() <= 0
    }

    fn adjust(&mut self, pid: Pid, by: i128) {
        match self.shares.iter().position(|&(p, _)| p == pid) {
            Some(i) => {
                self.shares[i].1 += by;
                if self.shares[i].1 == 0 {
                    self.shares.swap_remove(i);
                }
            }
            None if by != 0 => self.shares.push((pid, by)),
            None => {}
        }
    }

    /// `pid` was given `weight` more by the owner.
    pub(crate) fn add(&mut self, pid: Pid, weight: u64) {
        self.adjust(pid, i128::from(weight));
    }

    /// `pid` gave `weight` back.
    pub(crate) fn sub(&mut self, pid: Pid, weight: u64) {
        self.adjust(pid, -i128::from(weight));
    }

    /// `weight` that was `from`'s is now `to`'s. Either may be `gone` (dead): weight given to a
    /// dead process died with it; weight from a dead one was dropped with its share, and is
    /// booked to `to` afresh.
    pub(crate) fn moved(&mut self, from: Pid, to: Pid, weight: u64, gone: &dyn Fn(Pid) -> bool) {
        if from == to {
            return;
        }
        match (gone(from), gone(to)) {
            (false, false) => {
                self.sub(from, weight);
                self.add(to, weight);
            }
            (false, true) => self.sub(from, weight),
            (true, false) => self.add(to, weight),
            (true, true) => {}
        }
    }

    /// Forgets `pid`'s share; says whether it had one.
    pub(crate) fn drop_holder(&mut self, pid: Pid) -> bool {
        let before = self.shares.len();
        self.shares.retain(|&(p, _)| p != pid);
        self.shares.len() != before
    }

    /// The pids holding weight, in ascending order.
    #[cfg(test)]
    pub(crate) fn holders(&self) -> Vec<Pid> {
        let mut h: Vec<Pid> = self
            .shares
            .iter()
            .filter(|&&(_, w)| w > 0)
            .map(|&(p, _)| p)
            .collect();
        h.sort_unstable();
        h
    }
}

/// Something stored under a reference that keeps [`Clients`] books.
pub(crate) trait Booked {
    /// The entry's books, locked.
    fn clients(&self) -> MutexGuard<'_, Clients>;
}

/// Drops `pid`'s share on every entry of `stores`; removes and returns the entries that nobody
/// holds any more (the caller closes and drops them outside its lock).
pub(crate) fn drop_holder<E: Booked>(stores: &mut HashMap<Rrid, Arc<E>>, pid: Pid) -> Vec<Arc<E>> {
    let freed: Vec<Rrid> = stores
        .iter()
        .filter(|(_, e)| {
            let mut c = e.clients();
            c.drop_holder(pid) && c.is_free()
        })
        .map(|(r, _)| *r)
        .collect();
    freed.iter().filter_map(|r| stores.remove(r)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    const W: u64 = 1 << 62;

    struct E(Mutex<Clients>);
    impl Booked for E {
        fn clients(&self) -> MutexGuard<'_, Clients> {
            self.0.lock().unwrap()
        }
    }

    fn alive(_: Pid) -> bool {
        false
    }

    #[test]
    fn weight_moves_between_holders() {
        // The master (1) creates it, hands half to 3, then drops its own.
        let mut c = Clients::new(1, W);
        assert_eq!(c.holders(), vec![1]);
        c.moved(1, 3, W / 2, &alive);
        assert_eq!(c.holders(), vec![1, 3]);
        assert_eq!(c.total(), W);
        c.sub(1, W / 2);
        assert_eq!(c.holders(), vec![3]);
        assert!(!c.is_free());
        c.sub(3, W / 2);
        assert!(c.is_free());
        assert_eq!(c.holders(), Vec::<Pid>::new());
        assert_eq!(c, Clients::default(), "no zero shares are kept");
    }

    #[test]
    fn messages_in_any_order() {
        // 3 returns what it got from 1 before the owner hears that 1 gave it.
        let mut c = Clients::new(1, W);
        c.sub(3, W / 2);
        assert_eq!(c.holders(), vec![1]);
        assert_eq!(c.total(), W / 2);
        c.moved(1, 3, W / 2, &alive);
        assert_eq!(c.holders(), vec![1]);
        c.sub(1, W / 2);
        assert!(c.is_free());
        // The reverse order ends the same.
        let mut d = Clients::new(1, W);
        d.moved(1, 3, W / 2, &alive);
        d.sub(3, W / 2);
        d.sub(1, W / 2);
        assert!(d.is_free());
    }

    #[test]
    fn dead_holders() {
        let dead4 = |p: Pid| p == 4;
        // Given to a dead process: gone with it.
        let mut c = Clients::new(1, W);
        c.moved(1, 4, W / 2, &dead4);
        assert_eq!(c.holders(), vec![1]);
        assert_eq!(c.total(), W / 2);
        // From a dead process whose share (which held it) was dropped: booked to the receiver.
        let mut d = Clients::new(4, W);
        assert!(d.drop_holder(4));
        assert!(d.is_free());
        d.moved(4, 2, W / 4, &dead4);
        assert_eq!(d.holders(), vec![2]);
        assert_eq!(d.total(), W / 4);
        assert!(!d.drop_holder(4), "4 holds nothing");
        // Both dead: nothing to book.
        let mut e = Clients::new(1, W);
        e.moved(4, 4, 1, &dead4);
        e.moved(4, 5, 1, &|p| p >= 4);
        assert_eq!(e, Clients::new(1, W));
    }

    #[test]
    fn weight_beyond_the_initial() {
        let mut c = Clients::new(2, W);
        c.add(2, W);
        c.add(2, W);
        c.moved(2, 3, W + W / 2, &alive);
        assert_eq!(c.total(), 3 * W);
        assert!(c.drop_holder(3));
        assert_eq!(c.total(), W + W / 2);
        assert_eq!(c.holders(), vec![2]);
    }

    #[test]
    fn a_death_frees_what_only_it_held() {
        let mut stores: HashMap<Rrid, Arc<E>> = HashMap::new();
        let r = |id| Rrid { whence: 1, id };
        let entry = |c: Clients| Arc::new(E(Mutex::new(c)));
        // 1: held by 3 alone; 2: by 3 and 1; 3: by 1 alone; 4: by 3 with a return from 1 still
        // on its way (1's share below zero).
        let mut only3 = Clients::new(1, W);
        only3.moved(1, 3, W / 2, &alive);
        only3.sub(1, W / 2);
        stores.insert(r(1), entry(only3));
        let mut both = Clients::new(1, W);
        both.moved(1, 3, W / 2, &alive);
        stores.insert(r(2), entry(both));
        stores.insert(r(3), entry(Clients::new(1, W)));
        let mut early = Clients::new(3, W);
        early.sub(1, W / 4);
        stores.insert(r(4), entry(early));

        let freed = drop_holder(&mut stores, 3);
        assert_eq!(freed.len(), 2);
        let mut left: Vec<u64> = stores.keys().map(|k| k.id).collect();
        left.sort_unstable();
        // 4: 1 gave back weight whose move from 3 to 1 died with 3: nobody holds any.
        assert_eq!(left, vec![2, 3]);
        assert_eq!(stores[&r(2)].clients().holders(), vec![1]);
        assert_eq!(stores[&r(2)].clients().total(), W / 2);
        assert_eq!(stores[&r(3)].clients().total(), W);
        assert_eq!(drop_holder(&mut stores, 5).len(), 0, "5 held nothing");
    }
}
