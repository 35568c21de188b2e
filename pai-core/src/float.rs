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
}

macro_rules! float {
    ($t:ty, $st:ident) => {
        impl Float for $t {
            const SAFETENSORS: safetensors::Dtype = safetensors::Dtype::$st;
            fn of_f64(v: f64) -> Self {
                v as $t
            }
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
        }
    };
}
float!(f32, F32);
float!(f64, F64);

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
