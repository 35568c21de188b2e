//! Host vectors derived from a tensor's values, shared by the calls of one scope.
//!
//! A dendritic layer runs its neurons and every dendrite copy on the same input. For a
//! convolution that input's column matrix (im2col, ten times the input's size) is the same for
//! all of them: [`scope`] (opened by each forward pass of
//! [`Dendritic`](crate::dendritic::Dendritic)) lets the first call keep what it derived and the
//! next ones find it. An entry is found by a key (the caller's geometry) and by the input's
//! values, compared bit for bit: a hit is correct by construction, whatever happened to the
//! tensor, at the price of one pass over the input. Entries are per thread and end with the
//! scope; outside a scope nothing is kept.

use std::any::Any;
use std::cell::RefCell;
use std::sync::Arc;

use super::shared;
use crate::float::Float;

/// One derived vector: `value`, made from `input` under `key`.
struct Entry {
    key: Vec<usize>,
    /// `Vec<E>`.
    input: Box<dyn Any>,
    /// `Arc<Vec<E>>`.
    value: Box<dyn Any>,
    /// Gives the vectors back to their dtype's pool.
    recycle: fn(Box<dyn Any>, Box<dyn Any>),
}

thread_local! {
    /// `Some` inside a scope.
    static ENTRIES: RefCell<Option<Vec<Entry>>> = const { RefCell::new(None) };
}

/// Ends the outermost scope, also when its body panics.
struct Close;

impl Drop for Close {
    fn drop(&mut self) {
        let entries = ENTRIES.with(|e| e.borrow_mut().take()).unwrap_or_default();
        for e in entries {
            (e.recycle)(e.input, e.value);
        }
    }
}

/// Runs `f` with sharing on; a scope inside another one is part of it.
pub(crate) fn scope<R>(f: impl FnOnce() -> R) -> R {
    let outer = ENTRIES.with(|e| {
        let mut e = e.borrow_mut();
        let outer = e.is_some();
        e.get_or_insert_with(Vec::new);
        outer
    });
    // built only when this scope is the outermost one: dropping a `Close` ends the scope
    let _close = if outer { None } else { Some(Close) };
    f()
}

/// Whether this thread is inside a scope (outside one nothing is kept, so a caller need not
/// build its key).
pub(crate) fn open() -> bool {
    ENTRIES.with(|e| e.borrow().is_some())
}

/// The vector kept under `key` for an input equal to `input`, if any.
pub(crate) fn find<E: Float>(key: &[usize], input: &[E]) -> Option<Arc<Vec<E>>> {
    ENTRIES.with(|e| {
        e.borrow().as_ref()?.iter().find_map(|entry| {
            let kept = entry.input.downcast_ref::<Vec<E>>()?;
            (entry.key == key && E::same_bits(kept, input))
                .then(|| entry.value.downcast_ref::<Arc<Vec<E>>>().cloned())
                .flatten()
        })
    })
}

/// Keeps `value`, derived from `input` under `key`, for the rest of the scope; outside a scope
/// gives `input` back to the pool.
pub(crate) fn keep<E: Float>(key: Vec<usize>, input: Vec<E>, value: &Arc<Vec<E>>) {
    ENTRIES.with(|e| match e.borrow_mut().as_mut() {
        Some(entries) => entries.push(Entry {
            key,
            input: Box::new(input),
            value: Box::new(Arc::clone(value)),
            recycle: recycle::<E>,
        }),
        None => shared::<E>().give([input]),
    });
}

/// Entries kept in this thread's scope now.
#[cfg(test)]
pub(crate) fn kept() -> usize {
    ENTRIES.with(|e| e.borrow().as_ref().map_or(0, Vec::len))
}

/// Gives `value` back to the pool when no one else holds it.
pub(crate) fn release<E: Float>(value: Arc<Vec<E>>) {
    if let Ok(v) = Arc::try_unwrap(value) {
        shared::<E>().give([v]);
    }
}

fn recycle<E: Float>(input: Box<dyn Any>, value: Box<dyn Any>) {
    if let Ok(input) = input.downcast::<Vec<E>>() {
        shared::<E>().give([*input]);
    }
    if let Ok(value) = value.downcast::<Arc<Vec<E>>>() {
        release(*value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kept_vector_is_found_by_key_and_equal_bits_inside_its_scope_only() {
        let value = Arc::new(vec![1.0f32, 2.0]);
        // outside a scope nothing is kept
        keep(vec![1], vec![0.5f32], &value);
        assert!(find::<f32>(&[1], &[0.5]).is_none());
        scope(|| {
            keep(vec![1], vec![0.5f32, -0.0], &value);
            let hit = find::<f32>(&[1], &[0.5, -0.0]).expect("same key and bits");
            assert!(Arc::ptr_eq(&hit, &value));
            // another key, other values, a zero of the other sign, another dtype: misses
            assert!(find::<f32>(&[2], &[0.5, -0.0]).is_none());
            assert!(find::<f32>(&[1], &[0.5, 1.0]).is_none());
            assert!(find::<f32>(&[1], &[0.5, 0.0]).is_none());
            assert!(find::<f64>(&[1], &[0.5, -0.0]).is_none());
            // a nested scope is part of the outer one
            scope(|| assert!(find::<f32>(&[1], &[0.5, -0.0]).is_some()));
            assert!(find::<f32>(&[1], &[0.5, -0.0]).is_some());
        });
        assert!(find::<f32>(&[1], &[0.5, -0.0]).is_none());
        // the scope's copy is gone: only this one is left
        assert_eq!(Arc::strong_count(&value), 1);
    }

    #[test]
    fn a_panic_inside_a_scope_ends_it() {
        let value = Arc::new(vec![1.0f64]);
        let caught = std::panic::catch_unwind(|| {
            scope(|| {
                keep(vec![3], vec![1.0f64], &value);
                panic!("a failing forward pass");
            });
        });
        assert!(caught.is_err());
        assert!(find::<f64>(&[3], &[1.0]).is_none());
    }
}
