//! The threads backend: `world` replicas as threads of one process, on the CPU.
//!
//! Each replica writes its buffer into its own slot of the group, waits for the others, and
//! sums every slot in rank order (so that every replica computes the same bits); a second
//! wait keeps the slots until everyone has read them. Slots keep their memory from call to
//! call: after the first step a reduce allocates nothing.
//!
//! The waits are a barrier that knows who left: a [`Member`] dropped (its replica returned,
//! failed or panicked) makes every wait fail with [`Error::Collective`] instead of hanging.

use std::sync::{Arc, Condvar, Mutex, RwLock};

use super::Collective;
use crate::error::{Error, Result};
use crate::host::lock;

/// The shared state of one group of thread replicas.
#[derive(Debug)]
pub struct Group {
    world: usize,
    waits: Mutex<Waits>,
    woken: Condvar,
    f64s: RwLock<Vec<Vec<f64>>>,
    f32s: RwLock<Vec<Vec<f32>>>,
}

#[derive(Debug, Default)]
struct Waits {
    arrived: usize,
    generation: u64,
    /// The first replica that left the group.
    left: Option<usize>,
}

impl Group {
    /// A group of `world` replicas and its members, one per rank, in rank order.
    ///
    /// # Errors
    /// [`Error::Config`] when `world` is 0.
    pub fn members(world: usize) -> Result<Vec<Member>> {
        if world == 0 {
            return Err(Error::Config(
                "a data-parallel group needs at least one replica".into(),
            ));
        }
        let group = Arc::new(Group {
            world,
            waits: Mutex::new(Waits::default()),
            woken: Condvar::new(),
            f64s: RwLock::new(vec![Vec::new(); world]),
            f32s: RwLock::new(vec![Vec::new(); world]),
        });
        Ok((0..world)
            .map(|rank| Member {
                group: Arc::clone(&group),
                rank,
            })
            .collect())
    }

    /// Waits until every replica has arrived; fails when one has left.
    fn wait(&self) -> Result<()> {
        let mut w = lock(&self.waits);
        if let Some(rank) = w.left {
            return Err(gone(rank));
        }
        w.arrived += 1;
        if w.arrived == self.world {
            w.arrived = 0;
            w.generation += 1;
            self.woken.notify_all();
            return Ok(());
        }
        let generation = w.generation;
        while w.generation == generation && w.left.is_none() {
            w = self
                .woken
                .wait(w)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        match (w.generation == generation, w.left) {
            (true, Some(rank)) => Err(gone(rank)),
            _ => Ok(()),
        }
    }
}

fn gone(rank: usize) -> Error {
    Error::Collective(format!(
        "replica {rank} stopped while the others waited for it (its own error says why)"
    ))
}

/// One replica's handle on its [`Group`]; dropping it tells the others it left.
#[derive(Debug)]
pub struct Member {
    group: Arc<Group>,
    rank: usize,
}

impl Drop for Member {
    fn drop(&mut self) {
        let mut w = lock(&self.group.waits);
        w.left.get_or_insert(self.rank);
        self.group.woken.notify_all();
    }
}

/// Sums (or, with `broadcast`, copies rank 0's) `values` through `slots`.
fn exchange<T: Copy + std::ops::Add<Output = T>>(
    member: &Member,
    slots: &RwLock<Vec<Vec<T>>>,
    values: &mut [T],
    broadcast: bool,
) -> Result<()> {
    if member.group.world == 1 {
        return Ok(());
    }
    {
        let mut slots = slots
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mine = &mut slots[member.rank];
        mine.clear();
        mine.extend_from_slice(values);
    }
    member.group.wait()?;
    let result = {
        let slots = slots
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(other) = slots.iter().position(|s| s.len() != values.len()) {
            Err(Error::Collective(format!(
                "replica {} reduces {} values, replica {other} {}: the replicas ran different \
                 steps or models",
                member.rank,
                values.len(),
                slots[other].len()
            )))
        } else if broadcast {
            values.copy_from_slice(&slots[0]);
            Ok(())
        } else {
            for (i, v) in values.iter_mut().enumerate() {
                let mut sum = slots[0][i];
                for s in &slots[1..] {
                    sum = sum + s[i];
                }
                *v = sum;
            }
            Ok(())
        }
    };
    // nobody writes a slot again before everyone has read this call's
    member.group.wait()?;
    result
}

impl Collective for Member {
    fn rank(&self) -> usize {
        self.rank
    }
    fn world(&self) -> usize {
        self.group.world
    }
    fn all_reduce_f64(&self, values: &mut [f64]) -> Result<()> {
        exchange(self, &self.group.f64s, values, false)
    }
    fn all_reduce_f32(&self, values: &mut [f32]) -> Result<()> {
        exchange(self, &self.group.f32s, values, false)
    }
    fn broadcast_f64(&self, values: &mut [f64]) -> Result<()> {
        exchange(self, &self.group.f64s, values, true)
    }
    fn broadcast_f32(&self, values: &mut [f32]) -> Result<()> {
        exchange(self, &self.group.f32s, values, true)
    }
    fn barrier(&self) -> Result<()> {
        if self.group.world == 1 {
            return Ok(());
        }
        self.group.wait()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_and_broadcasts_are_the_same_on_every_replica() {
        let members = Group::members(3).unwrap();
        let out: Vec<(Vec<f64>, Vec<f32>)> = std::thread::scope(|s| {
            let handles: Vec<_> = members
                .into_iter()
                .map(|m| {
                    s.spawn(move || {
                        let r = m.rank() as f64;
                        let mut sum = vec![r, 0.1 * r, 1e16 * (r - 1.0)];
                        m.all_reduce_f64(&mut sum).unwrap();
                        let mut b = vec![r as f32 + 1.0; 2];
                        m.broadcast_f32(&mut b).unwrap();
                        m.barrier().unwrap();
                        (sum, b)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        // in rank order: ((0 + 0.1) + 0.2), and -1e16 + 0 + 1e16
        let want = vec![3.0, (0.0 + 0.1) + 0.2, 0.0];
        for (sum, b) in &out {
            assert_eq!(sum, &want);
            assert_eq!(b, &[1.0, 1.0]);
        }
    }

    #[test]
    fn a_replica_that_leaves_fails_the_others_instead_of_hanging() {
        let mut members = Group::members(2).unwrap();
        let second = members.pop().unwrap();
        let first = members.pop().unwrap();
        let waiting = std::thread::spawn(move || first.all_reduce_f64(&mut [1.0]));
        drop(second);
        let err = waiting.join().unwrap().unwrap_err();
        assert!(err.to_string().contains("replica 1 stopped"), "{err}");
    }

    #[test]
    fn buffers_of_different_lengths_are_an_error_on_every_replica() {
        let members = Group::members(2).unwrap();
        let errs: Vec<bool> = std::thread::scope(|s| {
            let handles: Vec<_> = members
                .into_iter()
                .map(|m| s.spawn(move || m.all_reduce_f32(&mut vec![1.0; 2 + m.rank()]).is_err()))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(errs, [true, true]);
    }

    #[test]
    fn an_empty_group_is_refused() {
        assert!(matches!(Group::members(0), Err(Error::Config(_))));
    }
}
