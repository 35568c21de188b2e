//! The floating-point types pai-core computes in.

use dfdx::shapes::Dtype;

/// A dtype dendrites can be computed in: `f32` or `f64`.
///
/// Besides dfdx's [`Dtype`] this gives conversions to and from `f64` (for statistics read back
/// to the host) and the little-endian byte form used by checkpoints.
pub trait Float:
    Dtype + num_traits::Float + rand_distr::uniform::SampleUniform + Send + Sync + 'static
{
    /// The safetensors dtype name of this type.
    const SAFETENSORS: safetensors::Dtype;
    /// Converts from `f64`, rounding to the nearest representable value.
    fn of_f64(v: f64) -> Self;
    /// Converts to `f64` exactly.
    fn as_f64(self) -> f64;
    /// Appends the little-endian bytes of `values` to `out`.
    fn write_le(values: &[Self], out: &mut Vec<u8>);
    /// Reads little-endian values; `bytes.len()` must be a multiple of the size.
    fn read_le(bytes: &[u8]) -> Vec<Self>;
    /// Replaces every value `x` by `1 / (1 + e^-x)`. For `f32` this is a branch-free
    /// polynomial the compiler vectorises (within 2 ulp of the exact value, see the test);
    /// `f64` calls `exp`.
    fn sigmoid_in_place(values: &mut [Self]);
    /// Whether `a` and `b` hold the same values bit for bit (`NaN`s of equal bits are equal,
    /// `0.0` and `-0.0` are not).
    fn same_bits(a: &[Self], b: &[Self]) -> bool;
    /// `values` as a slice of its concrete type (for backends that take either).
    fn concrete(values: &mut [Self]) -> Floats<'_>;
}

/// A mutable slice of `f32` or `f64` (see [`Float::concrete`]).
pub enum Floats<'a> {
    /// `f32` values.
    F32(&'a mut [f32]),
    /// `f64` values.
    F64(&'a mut [f64]),
}

macro_rules! float {
    ($t:ty, $st:ident, $sigmoid:ident) => {
        impl Float for $t {
            const SAFETENSORS: safetensors::Dtype = safetensors::Dtype::$st;
            fn of_f64(v: f64) -> Self {
                v as $t
            }
            // `f64::from` does not take an f64 itself, and this body serves both types
            #[allow(clippy::cast_lossless)]
            fn as_f64(self) -> f64 {
                self as f64
            }
            fn write_le(values: &[Self], out: &mut Vec<u8>) {
                out.reserve(values.len() * std::mem::size_of::<$t>());
                for v in values {
                    out.extend_from_slice(&v.to_le_bytes());
                }
            }
            fn read_le(bytes: &[u8]) -> Vec<Self> {
                bytes
                    .chunks_exact(std::mem::size_of::<$t>())
                    .map(|c| <$t>::from_le_bytes(c.try_into().expect("chunk of exact size")))
                    .collect()
            }
            fn sigmoid_in_place(values: &mut [Self]) {
                $sigmoid(values)
            }
            fn concrete(values: &mut [Self]) -> Floats<'_> {
                Floats::$st(values)
            }
            fn same_bits(a: &[Self], b: &[Self]) -> bool {
                // the differing bits of a block at a time, without a branch per value: the
                // loop vectorises, and a difference still ends the search a block later
                const BLOCK: usize = 64;
                a.len() == b.len()
                    && a.chunks(BLOCK).zip(b.chunks(BLOCK)).all(|(a, b)| {
                        a.iter()
                            .zip(b)
                            .fold(0, |d, (x, y)| d | (x.to_bits() ^ y.to_bits()))
                            == 0
                    })
            }
        }
    };
}
float!(f32, F32, sigmoid_f32);
float!(f64, F64, sigmoid_f64);

fn sigmoid_f32(values: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        if has!("avx512f") {
            // SAFETY: the CPU has the feature `sigmoid_f32_avx512` is compiled for.
            return unsafe { sigmoid_f32_avx512(values) };
        }
        if has!("avx2") && has!("fma") {
            // SAFETY: the CPU has the features `sigmoid_f32_avx2` is compiled for.
            return unsafe { sigmoid_f32_avx2(values) };
        }
    }
    sigmoid_f32_loop(values);
}

/// [`sigmoid_f32_loop`] compiled for 16-wide vectors. The same operations in the same order
/// as the 8-wide one (Rust never fuses a multiply and an add unless told to), so the same bits.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn sigmoid_f32_avx512(values: &mut [f32]) {
    sigmoid_f32_loop(values);
}

/// [`sigmoid_f32_loop`] compiled for 8-wide vectors.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn sigmoid_f32_avx2(values: &mut [f32]) {
    sigmoid_f32_loop(values);
}

// the sigmoid loop must inline into its target-feature callers to be vectorised with them
#[allow(clippy::inline_always)]
#[inline(always)]
fn sigmoid_f32_loop(values: &mut [f32]) {
    for v in values {
        *v = 1.0 / (1.0 + exp_f32(-*v));
    }
}

fn sigmoid_f64(values: &mut [f64]) {
    for v in values {
        *v = 1.0 / (1.0 + (-*v).exp());
    }
}

/// `e^x` without a library call, so that loops over it vectorise: `x = k ln 2 + r` with
/// `|r| <= ln 2 / 2` (Cody-Waite, in two parts), `e^r` by Cephes' `expf` polynomial and `2^k`
/// written into the exponent bits. Inputs are clamped to `[-87, 88]`, where `2^k` stays a
/// normal number; outside that `e^x` under- or overflows anyway.
#[inline(always)]
fn exp_f32(x: f32) -> f32 {
    // 1.5 * 2^23: adding and subtracting it rounds to the nearest integer
    const ROUND: f32 = 12_582_912.0;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let x = x.clamp(-87.0, 88.0);
    // the low mantissa bits of `shifted` hold k (two's complement): no float-to-int
    // conversion, which does not vectorise
    let shifted = x * std::f32::consts::LOG2_E + ROUND;
    let k = shifted - ROUND;
    let r = x - k * LN2_HI - k * LN2_LO;
    let mut p = 1.987_569_1e-4;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let e = p * r * r + r + 1.0;
    e * f32::from_bits(shifted.to_bits().wrapping_add(127) << 23)
}

/// A normal distribution `N(0, std²)` that samples any [`Float`] (dfdx's samplers need
/// `StandardNormal: Distribution<E>`, which generic code cannot name).
#[derive(Debug, Clone, Copy)]
pub(crate) struct ScaledNormal {
    pub std: f64,
}

impl<E: Float> rand_distr::Distribution<E> for ScaledNormal {
    fn sample<R: rand::Rng + ?Sized>(&self, rng: &mut R) -> E {
        let z: f64 = rand_distr::StandardNormal.sample(rng);
        E::of_f64(z * self.std)
    }
}

/// Whether every value is finite, in one pass that vectorises (no early exit): `x - x` is 0
/// for a finite `x` and NaN for NaN or an infinity, and sums of it stay 0 only if all were
/// finite. For the scans on every optimizer step.
// `x - x` on purpose: it is the test itself
#[allow(clippy::eq_op)]
pub(crate) fn all_finite<E: Float>(values: &[E]) -> bool {
    const LANES: usize = 8;
    let mut lanes = [E::zero(); LANES];
    let chunks = values.chunks_exact(LANES);
    let rest = chunks.remainder();
    for chunk in chunks {
        for (lane, x) in lanes.iter_mut().zip(chunk) {
            *lane += *x - *x;
        }
    }
    lanes.iter().all(|l| *l == E::zero()) && rest.iter().all(|x| x.is_finite())
}

#[cfg(test)]
mod tests {
    #[test]
    fn all_finite_finds_any_nan_or_infinity_at_any_place() {
        for len in [0, 1, 7, 8, 9, 64, 67] {
            let clean: Vec<f32> = (0..len).map(|i| i as f32 * 1e30 - 3e31).collect();
            assert!(super::all_finite(&clean), "{len}");
            for at in 0..len {
                for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
                    let mut v = clean.clone();
                    v[at] = bad;
                    assert!(!super::all_finite(&v), "{len} {at} {bad}");
                    let v64: Vec<f64> = v.iter().map(|x| f64::from(*x)).collect();
                    assert!(!super::all_finite(&v64), "f64 {len} {at} {bad}");
                }
            }
        }
    }

    use super::*;

    #[test]
    fn same_bits_compares_every_bit_at_every_place() {
        for len in [0_usize, 1, 63, 64, 65, 200] {
            let a: Vec<f32> = (0..len).map(|i| i as f32 * 0.37 - 20.0).collect();
            assert!(f32::same_bits(&a, &a.clone()), "{len}");
            if len > 0 {
                assert!(!f32::same_bits(&a, &a[..len - 1]), "shorter {len}");
            }
            for at in 0..len {
                let mut b = a.clone();
                b[at] = f32::from_bits(b[at].to_bits() ^ 1);
                assert!(!f32::same_bits(&a, &b), "{len} {at}");
                let a64: Vec<f64> = a.iter().map(|x| f64::from(*x)).collect();
                let mut b64 = a64.clone();
                b64[at] = f64::from_bits(b64[at].to_bits() ^ 1);
                assert!(!f64::same_bits(&a64, &b64), "f64 {len} {at}");
            }
        }
        // bits, not values: 0.0 and -0.0 differ, a NaN equals itself
        assert!(!f32::same_bits(&[0.0], &[-0.0]));
        assert!(f32::same_bits(&[f32::NAN], &[f32::NAN]));
    }

    #[test]
    fn f32_sigmoid_is_within_two_ulp_of_the_exact_value() {
        // every 1/64 from -100 to 100, plus the ends of the clamp and non-finite inputs
        let mut xs: Vec<f32> = (-6400..=6400).map(|i| i as f32 / 64.0).collect();
        xs.extend([
            -87.5,
            -87.0,
            87.0,
            88.5,
            f32::MAX,
            f32::MIN,
            f32::INFINITY,
            f32::NEG_INFINITY,
        ]);
        // the dispatching function (vectorised for the CPU at hand) and the portable loop
        let mut dispatched = xs.clone();
        f32::sigmoid_in_place(&mut dispatched);
        let mut portable = xs.clone();
        sigmoid_f32_loop(&mut portable);
        for got in [dispatched, portable] {
            for (x, got) in xs.iter().zip(got) {
                let want = 1.0 / (1.0 + (-f64::from(*x)).exp());
                let ulp = f64::from(f32::EPSILON) * want.max(f64::from(f32::MIN_POSITIVE));
                assert!(
                    (f64::from(got) - want).abs() <= 2.0 * ulp + 1e-38,
                    "sigmoid({x}) = {got}, want {want}"
                );
            }
        }
    }

    #[test]
    fn f32_sigmoid_gives_the_same_bits_at_every_vector_width() {
        // the width the CPU offers must not change a result: tables reproduce across machines
        let xs: Vec<f32> = (-20_000..=20_000)
            .map(|i| i as f32 / 173.0)
            .chain([
                f32::MAX,
                f32::MIN,
                f32::INFINITY,
                f32::NEG_INFINITY,
                f32::NAN,
            ])
            .collect();
        let mut portable = xs.clone();
        sigmoid_f32_loop(&mut portable);
        let mut widths: Vec<(&str, Vec<f32>)> = Vec::new();
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            if has!("avx2") && has!("fma") {
                let mut v = xs.clone();
                // SAFETY: the CPU has the features it is compiled for.
                unsafe { sigmoid_f32_avx2(&mut v) };
                widths.push(("avx2", v));
            }
            if has!("avx512f") {
                let mut v = xs.clone();
                // SAFETY: the CPU has the feature it is compiled for.
                unsafe { sigmoid_f32_avx512(&mut v) };
                widths.push(("avx512", v));
            }
        }
        for (name, got) in widths {
            assert!(f32::same_bits(&got, &portable), "{name} differs");
        }
    }

    #[test]
    fn exp_f32_is_within_two_ulp_where_it_does_not_saturate() {
        for i in -8700..=8800 {
            let x = i as f32 / 100.0;
            let want = f64::from(x).exp();
            let got = f64::from(exp_f32(x));
            assert!(
                (got - want).abs() <= 2.0 * f64::from(f32::EPSILON) * want,
                "exp({x}) = {got}, want {want}"
            );
        }
    }
}
