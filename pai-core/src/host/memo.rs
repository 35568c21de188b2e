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
//!
//! Frozen copies can also ask the first call for their whole result ([`want`]): a convolution
//! takes their products beside its own while each batch element's columns are in cache,
//! instead of reading the columns back from memory once per copy. What it made is kept with
//! the columns and found by the copy's weights, compared bit for bit too ([`find`]).

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
    /// `Made<E>`: results made for frozen copies from `value`, each taken once.
    made: Vec<Box<dyn Any>>,
    /// Gives the vectors back to their dtype's pool.
    recycle: fn(Box<dyn Any>, Box<dyn Any>),
}

/// A frozen copy's parameters, as it asked for its result ([`want`]).
pub(crate) struct Wanted<E> {
    pub weight: Vec<E>,
    pub bias: Vec<E>,
}

/// The result made for a request.
pub(crate) struct Made<E> {
    pub wanted: Wanted<E>,
    pub out: Vec<E>,
}

/// One scope's state.
#[derive(Default)]
struct Scope {
    entries: Vec<Entry>,
    /// `Wanted<E>`, not yet served.
    wanted: Vec<Box<dyn Any>>,
}

thread_local! {
    /// `Some` inside a scope.
    static SCOPE: RefCell<Option<Scope>> = const { RefCell::new(None) };
}

/// Ends the outermost scope, also when its body panics.
struct Close;

impl Drop for Close {
    fn drop(&mut self) {
        let scope = SCOPE.with(|e| e.borrow_mut().take()).unwrap_or_default();
        for e in scope.entries {
            (e.recycle)(e.input, e.value);
        }
    }
}

/// Runs `f` with sharing on; a scope inside another one is part of it.
pub(crate) fn scope<R>(f: impl FnOnce() -> R) -> R {
    let outer = SCOPE.with(|e| {
        let mut e = e.borrow_mut();
        let outer = e.is_some();
        e.get_or_insert_with(Scope::default);
        outer
    });
    // built only when this scope is the outermost one: dropping a `Close` ends the scope
    let _close = if outer { None } else { Some(Close) };
    f()
}

/// Whether this thread is inside a scope (outside one nothing is kept, so a caller need not
/// build its key).
pub(crate) fn open() -> bool {
    SCOPE.with(|e| e.borrow().is_some())
}

/// The vector kept under `key` for an input equal to `input`, if any; with it, the result made
/// for the copy with parameters `mine` (weight, bias) beside it, if one was (taken: a result
/// is handed out once).
pub(crate) fn find<E: Float>(
    key: &[usize],
    input: &[E],
    mine: Option<(&[E], &[E])>,
) -> Option<(Arc<Vec<E>>, Option<Vec<E>>)> {
    SCOPE.with(|e| {
        let mut scope = e.borrow_mut();
        let entry = scope.as_mut()?.entries.iter_mut().find(|entry| {
            entry.key == key
                && entry
                    .input
                    .downcast_ref::<Vec<E>>()
                    .is_some_and(|kept| E::same_bits(kept, input))
        })?;
        let value = entry.value.downcast_ref::<Arc<Vec<E>>>()?.clone();
        let made = mine.and_then(|(weight, bias)| {
            let at = entry.made.iter().position(|m| {
                m.downcast_ref::<Made<E>>().is_some_and(|m| {
                    E::same_bits(&m.wanted.weight, weight) && E::same_bits(&m.wanted.bias, bias)
                })
            })?;
            let made = entry.made.swap_remove(at).downcast::<Made<E>>().ok()?;
            Some(made.out)
        });
        Some((value, made))
    })
}

/// Keeps `value`, derived from `input` under `key`, and the results `made` beside it for
/// frozen copies, for the rest of the scope; outside a scope gives `input` back to the pool.
pub(crate) fn keep<E: Float>(
    key: Vec<usize>,
    input: Vec<E>,
    value: &Arc<Vec<E>>,
    made: Vec<Made<E>>,
) {
    SCOPE.with(|e| match e.borrow_mut().as_mut() {
        Some(scope) => scope.entries.push(Entry {
            key,
            input: Box::new(input),
            value: Box::new(Arc::clone(value)),
            made: made
                .into_iter()
                .map(|m| Box::new(m) as Box<dyn Any>)
                .collect(),
            recycle: recycle::<E>,
        }),
        None => shared::<E>().give([input]),
    });
}

/// A frozen copy with parameters `weight` and `bias` asks the next call that makes what it
/// would find (a convolution's columns) to make its result too; outside a scope, nothing.
pub(crate) fn want<E: Float>(weight: Vec<E>, bias: Vec<E>) {
    SCOPE.with(|e| {
        if let Some(scope) = e.borrow_mut().as_mut() {
            scope.wanted.push(Box::new(Wanted { weight, bias }));
        }
    });
}

/// The requests ([`want`]) of dtype `E` whose weight and bias have these lengths, taken.
pub(crate) fn wanted<E: Float>(weight_len: usize, bias_len: usize) -> Vec<Wanted<E>> {
    SCOPE.with(|e| {
        let mut scope = e.borrow_mut();
        let Some(scope) = scope.as_mut() else {
            return Vec::new();
        };
        let (mine, rest): (Vec<_>, Vec<_>) = scope.wanted.drain(..).partition(|w| {
            w.downcast_ref::<Wanted<E>>()
                .is_some_and(|w| w.weight.len() == weight_len && w.bias.len() == bias_len)
        });
        scope.wanted = rest;
        mine.into_iter()
            .filter_map(|w| w.downcast::<Wanted<E>>().ok().map(|w| *w))
            .collect()
    })
}

/// Entries kept in this thread's scope now.
#[cfg(test)]
pub(crate) fn kept() -> usize {
    SCOPE.with(|e| e.borrow().as_ref().map_or(0, |s| s.entries.len()))
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
        keep(vec![1], vec![0.5f32], &value, Vec::new());
        assert!(find::<f32>(&[1], &[0.5], None).is_none());
        scope(|| {
            keep(vec![1], vec![0.5f32, -0.0], &value, Vec::new());
            let (hit, _) = find::<f32>(&[1], &[0.5, -0.0], None).expect("same key and bits");
            assert!(Arc::ptr_eq(&hit, &value));
            // another key, other values, a zero of the other sign, another dtype: misses
            assert!(find::<f32>(&[2], &[0.5, -0.0], None).is_none());
            assert!(find::<f32>(&[1], &[0.5, 1.0], None).is_none());
            assert!(find::<f32>(&[1], &[0.5, 0.0], None).is_none());
            assert!(find::<f64>(&[1], &[0.5, -0.0], None).is_none());
            // a nested scope is part of the outer one
            scope(|| assert!(find::<f32>(&[1], &[0.5, -0.0], None).is_some()));
            assert!(find::<f32>(&[1], &[0.5, -0.0], None).is_some());
        });
        assert!(find::<f32>(&[1], &[0.5, -0.0], None).is_none());
        // the scope's copy is gone: only this one is left
        assert_eq!(Arc::strong_count(&value), 1);
    }

    #[test]
    fn requests_are_taken_by_dtype_and_lengths_once_and_results_by_weight_bits_once() {
        // outside a scope a request is dropped
        want(vec![1.0f32, 2.0], vec![0.5f32]);
        scope(|| {
            want(vec![1.0f32, 2.0], vec![0.5f32]);
            want(vec![1.0f32, 2.0, 3.0], vec![0.5f32]);
            want(vec![1.0f64, 2.0], vec![0.5f64]);
            assert!(wanted::<f32>(4, 1).is_empty());
            let mine = wanted::<f32>(2, 1);
            assert_eq!(mine.len(), 1);
            assert!(wanted::<f32>(2, 1).is_empty(), "taken once");
            assert_eq!(
                wanted::<f64>(2, 1).len(),
                1,
                "the other dtype's is still there"
            );
            let made = Made {
                wanted: mine.into_iter().next().expect("one"),
                out: vec![7.0f32],
            };
            keep(vec![5], vec![0.25f32], &Arc::new(vec![9.0f32]), vec![made]);
            let other = (&[1.0f32, -2.0][..], &[0.5f32][..]);
            let (_, none) = find::<f32>(&[5], &[0.25], Some(other)).expect("columns");
            assert!(none.is_none(), "other weights find no result");
            let mine = (&[1.0f32, 2.0][..], &[0.5f32][..]);
            let (_, out) = find::<f32>(&[5], &[0.25], Some(mine)).expect("columns");
            assert_eq!(out, Some(vec![7.0]));
            let (_, again) = find::<f32>(&[5], &[0.25], Some(mine)).expect("columns");
            assert!(again.is_none(), "a result is handed out once");
        });
        scope(|| {
            assert!(
                wanted::<f32>(2, 1).is_empty(),
                "requests end with their scope"
            );
        });
    }

    #[test]
    fn a_panic_inside_a_scope_ends_it() {
        let value = Arc::new(vec![1.0f64]);
        let caught = std::panic::catch_unwind(|| {
            scope(|| {
                keep(vec![3], vec![1.0f64], &value, Vec::new());
                panic!("a failing forward pass");
            });
        });
        assert!(caught.is_err());
        assert!(find::<f64>(&[3], &[1.0], None).is_none());
    }
}
