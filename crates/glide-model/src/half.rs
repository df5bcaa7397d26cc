//! Parameters held in f16, computed in f32.
//!
//! A model loaded with [`ParamStorage::F16`](crate::weights::ParamStorage) keeps every parameter
//! in f16 on its device: half the memory (the released base model: ~0.77 GB instead of ~1.5 GB),
//! which is what lets it fit a browser tab's GPU. burn does not promote mixed dtypes (an f16
//! weight meeting an f32 activation panics in `add`/`conv2d`), so each layer is [`widened`] to
//! f32 just before it runs and the copy is dropped after: activations, and so every sample, stay
//! f32, and at any moment only one layer's parameters exist in both dtypes. Widening f16 to f32 is
//! exact, so a model held in f16 computes bit for bit what the same f16 file widened at load time
//! computes (tested below and in `tests/half.rs`).
//!
//! For a model held in f32 (every model the CLI and the trainer use) [`widened`] only checks the
//! dtypes and borrows the module: nothing is copied and autodiff sees the parameters themselves.

use std::borrow::Cow;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::{DType, Tensor, backend::Backend};

/// True while every float parameter visited is f32.
struct AllF32(bool);

impl<B: Backend> ModuleVisitor<B> for AllF32 {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        self.0 = self.0 && param.val().dtype() == DType::F32;
    }
}

/// `tensor` in `dtype` (itself when it already is).
fn in_dtype<B: Backend, const D: usize>(tensor: Tensor<B, D>, dtype: DType) -> Tensor<B, D> {
    if tensor.dtype() == dtype {
        tensor
    } else {
        tensor.cast(dtype)
    }
}

/// Casts every float parameter to `0` (those already in it are kept as they are).
struct CastTo(DType);

impl<B: Backend> ModuleMapper<B> for CastTo {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let (id, tensor, mapper) = param.consume();
        Param::from_mapped_value(id, in_dtype(tensor, self.0), mapper)
    }
}

/// `module` with every float parameter in f32: the module itself when it already is, else a copy
/// whose parameters are widened (dropped when the caller is done with it).
pub fn widened<B: Backend, M: Module<B>>(module: &M) -> Cow<'_, M> {
    let mut all = AllF32(true);
    module.visit(&mut all);
    if all.0 {
        Cow::Borrowed(module)
    } else {
        Cow::Owned(module.clone().map(&mut CastTo(DType::F32)))
    }
}

/// A parameter's value in f32 (widened when it is held in another float dtype).
pub fn f32_val<B: Backend, const D: usize>(param: &Param<Tensor<B, D>>) -> Tensor<B, D> {
    in_dtype(param.val(), DType::F32)
}

/// `module` with every float parameter cast to `dtype` (e.g. a model built in f32 held in f16).
pub fn cast_params<B: Backend, M: Module<B>>(module: M, dtype: DType) -> M {
    module.map(&mut CastTo(dtype))
}

/// The dtypes of `module`'s float parameters, each once, in the order first met.
pub fn param_dtypes<B: Backend, M: Module<B>>(module: &M) -> Vec<DType> {
    struct Dtypes(Vec<DType>);
    impl<B: Backend> ModuleVisitor<B> for Dtypes {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            let d = param.val().dtype();
            if !self.0.contains(&d) {
                self.0.push(d);
            }
        }
    }
    let mut seen = Dtypes(Vec::new());
    module.visit(&mut seen);
    seen.0
}

/// Dtypes as people write them, each once: `[F16, F32, F16]` → "f16 + f32".
pub fn dtype_names(dtypes: &[DType]) -> String {
    let mut names: Vec<String> = Vec::new();
    for name in dtypes.iter().map(|d| format!("{d:?}").to_lowercase()) {
        if !names.contains(&name) {
            names.push(name);
        }
    }
    names.join(" + ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;
    use burn::nn::{Linear, LinearConfig};

    #[test]
    fn a_linear_held_in_f16_computes_what_its_f32_widening_computes() {
        let device = Default::default();
        let wide: Linear<Flex> = LinearConfig::new(8, 4).init(&device);
        let half = cast_params(wide.clone(), DType::F16);
        assert_eq!(param_dtypes::<Flex, _>(&half), vec![DType::F16]);
        // The f32 model the f16 one stands for: the same values, rounded to f16 and widened.
        let rounded = cast_params(half.clone(), DType::F32);
        assert_eq!(param_dtypes::<Flex, _>(&rounded), vec![DType::F32]);
        assert!(matches!(widened::<Flex, _>(&rounded), Cow::Borrowed(_)));
        let x = Tensor::<Flex, 2>::random(
            [3, 8],
            burn::tensor::Distribution::Normal(0.0, 1.0),
            &device,
        );
        let got = widened::<Flex, _>(&half).forward(x.clone()).into_data();
        let want = rounded.forward(x.clone()).into_data();
        assert_eq!(got.dtype, DType::F32);
        assert_eq!(got.as_bytes(), want.as_bytes());
        // …and differs from the unrounded f32 layer (the rounding is real, not skipped).
        assert_ne!(got.as_bytes(), wide.forward(x).into_data().as_bytes());
        // The held parameters stay f16: widening copies, it does not convert in place.
        assert_eq!(param_dtypes::<Flex, _>(&half), vec![DType::F16]);
        assert_eq!(
            dtype_names(&[DType::F16, DType::F32, DType::F16]),
            "f16 + f32"
        );
    }
}
