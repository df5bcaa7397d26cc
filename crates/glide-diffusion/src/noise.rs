//! The one seeded noise source. All noise (x_T and every step's z) is drawn here, on the CPU, and
//! uploaded, so flex, wgpu, cuda and the browser see the same numbers for the same seed.

use burn::tensor::{Tensor, TensorData, backend::Backend};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

/// A seeded standard-normal generator (ChaCha8: portable across platforms and wasm).
#[derive(Debug, Clone)]
pub struct NoiseRng {
    rng: ChaCha8Rng,
}

impl NoiseRng {
    pub fn new(seed: u64) -> Self {
        Self {
            rng: ChaCha8Rng::seed_from_u64(seed),
        }
    }

    /// `n` standard-normal f32 values in draw order.
    pub fn randn_vec(&mut self, n: usize) -> Vec<f32> {
        (0..n)
            .map(|_| {
                let z: f64 = StandardNormal.sample(&mut self.rng);
                z as f32
            })
            .collect()
    }

    /// A tensor of standard-normal values (row-major draw order).
    pub fn randn<B: Backend, const D: usize>(
        &mut self,
        shape: [usize; D],
        device: &B::Device,
    ) -> Tensor<B, D> {
        let n = shape.iter().product();
        Tensor::from_data(TensorData::new(self.randn_vec(n), shape), device)
    }

    /// Position of the stream, for checkpoints: `(seed words, word position)` restore it exactly.
    pub fn state(&self) -> ([u8; 32], u128) {
        (self.rng.get_seed(), self.rng.get_word_pos())
    }

    /// Restores a state from [`NoiseRng::state`].
    pub fn from_state(seed: [u8; 32], word_pos: u128) -> Self {
        let mut rng = ChaCha8Rng::from_seed(seed);
        rng.set_word_pos(word_pos);
        Self { rng }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_numbers_and_state_restores() {
        let mut a = NoiseRng::new(7);
        let mut b = NoiseRng::new(7);
        assert_eq!(a.randn_vec(10), b.randn_vec(10));
        let (seed, pos) = a.state();
        let mut c = NoiseRng::from_state(seed, pos);
        assert_eq!(a.randn_vec(5), c.randn_vec(5));
        assert_ne!(NoiseRng::new(8).randn_vec(4), NoiseRng::new(7).randn_vec(4));
        let v = NoiseRng::new(1).randn_vec(20_000);
        let mean = v.iter().sum::<f32>() / v.len() as f32;
        let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f32>() / v.len() as f32;
        assert!(
            mean.abs() < 0.03 && (var - 1.0).abs() < 0.05,
            "{mean} {var}"
        );
    }
}
