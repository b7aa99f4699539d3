//! The seeds' `DictChannel`: a user-defined channel keyed by name, stored on worker 2 behind a
//! `RemoteChannel` and used from the master and from worker 3.
use cohort::prelude::*;
use cohort::AbstractChannel;
use std::collections::HashMap;
use std::sync::{Condvar, Mutex};

/// A dictionary as a channel's store: `put` by key, `take`/`fetch` block until the key is there.
#[derive(Default)]
pub struct DictChannel {
    d: Mutex<HashMap<String, String>>,
    cond_take: Condvar,
}

impl AbstractChannel for DictChannel {
    type Key = String;
    type Item = String;

    fn put(&self, k: String, v: String) -> cohort::Result<()> {
        self.d.lock().unwrap().insert(k, v);
        self.cond_take.notify_all();
        Ok(())
    }
    fn take(&self, k: String) -> cohort::Result<String> {
        let mut d = self.d.lock().unwrap();
        loop {
            if let Some(v) = d.remove(&k) {
                return Ok(v);
            }
            d = self.cond_take.wait(d).unwrap();
        }
    }
    fn fetch(&self, k: String) -> cohort::Result<String> {
        let mut d = self.d.lock().unwrap();
        loop {
            if let Some(v) = d.get(&k) {
                return Ok(v.clone());
            }
            d = self.cond_take.wait(d).unwrap();
        }
    }
    fn isready(&self, k: String) -> bool {
        self.d.lock().unwrap().contains_key(&k)
    }
    fn wait(&self, k: String) -> cohort::Result<()> {
        self.fetch(k).map(drop)
    }
}

/// Runs on the channel's owner: builds the store.
#[cohort::remote]
fn new_dict_channel() -> DictChannel {
    DictChannel::default()
}

/// Runs on another worker: puts under a key.
#[cohort::remote]
fn put_from_worker(d: RemoteChannel<String, String>, k: String) -> cohort::Result<()> {
    d.put_at(k, format!("from worker {}", myid()))
}

fn main() -> cohort::Result<()> {
    let _cluster = cohort::init()?;
    if nworkers() < 2 || workers() == [1] {
        addprocs(2)?;
    }
    let d: RemoteChannel<String, String> = RemoteChannel::from_fn(new_dict_channel, 2, ())?;
    println!("DictChannel on worker {}", d.owner());
    println!("isready(d, :k) = {}", d.isready_at("k".into())?);
    d.put_at("k".into(), "v".into())?;
    println!("isready(d, :k) = {}", d.isready_at("k".into())?);
    println!("fetch(d, :k) = {}", d.fetch_at("k".into())?);
    d.wait_at("k".into())?;
    println!("take!(d, :k) = {}", d.take_at("k".into())?);
    println!("isready(d, :k) = {}", d.isready_at("k".into())?);
    remotecall_fetch(put_from_worker, 3, (d.clone(), "w".to_string()))?;
    println!("take!(d, :w) = {}", d.take_at("w".into())?);
    assert!(!d.isready_at("k".into())? && !d.isready_at("w".into())?);
    Ok(())
}
