//! A hand-written two-layer perforated model (what `#[perforated]` generates), and helpers.

use perforated::params::{join, Param, ParamVisitor};
use perforated::prelude::*;
use perforated::{DendriteLayer, Float};

/// `fc1 -> relu -> fc2`, both layers converted.
pub struct Mlp<const I: usize, const H: usize, const O: usize, E: Float, D: Device<E>> {
    pub fc1: Dendritic<perforated::dfdx::nn::modules::Linear<I, H, E, D>>,
    pub fc2: Dendritic<perforated::dfdx::nn::modules::Linear<H, O, E, D>>,
}

impl<const I: usize, const H: usize, const O: usize, E: Float, D: Device<E>> Mlp<I, H, O, E, D> {
    pub fn new(dev: &D, config: DendriteConfig) -> Self {
        Self {
            fc1: Dendritic::new(dev, BuildModule::build(dev), config.clone()).unwrap(),
            fc2: Dendritic::new(dev, BuildModule::build(dev), config).unwrap(),
        }
    }
}

impl<const I: usize, const H: usize, const O: usize, E: Float, D: Device<E>, B: Dim, T>
    ModuleMut<Tensor<(B, Const<I>), E, D, T>> for Mlp<I, H, O, E, D>
where
    T: Tape<E, D> + 'static,
    Dendritic<perforated::dfdx::nn::modules::Linear<I, H, E, D>>: ModuleMut<
        Tensor<(B, Const<I>), E, D, T>,
        Output = Tensor<(B, Const<H>), E, D, T>,
        Error = D::Err,
    >,
    Dendritic<perforated::dfdx::nn::modules::Linear<H, O, E, D>>: ModuleMut<
        Tensor<(B, Const<H>), E, D, T>,
        Output = Tensor<(B, Const<O>), E, D, T>,
        Error = D::Err,
    >,
{
    type Output = Tensor<(B, Const<O>), E, D, T>;
    type Error = D::Err;
    fn try_forward_mut(
        &mut self,
        x: Tensor<(B, Const<I>), E, D, T>,
    ) -> Result<Self::Output, D::Err> {
        let h = self.fc1.try_forward_mut(x)?.try_relu()?;
        self.fc2.try_forward_mut(h)
    }
}

impl<const I: usize, const H: usize, const O: usize, E: Float, D: Device<E>, B: Dim>
    Module<Tensor<(B, Const<I>), E, D>> for Mlp<I, H, O, E, D>
{
    type Output = Tensor<(B, Const<O>), E, D>;
    type Error = D::Err;
    fn try_forward(&self, x: Tensor<(B, Const<I>), E, D>) -> Result<Self::Output, D::Err> {
        let h = self.fc1.try_forward(x)?.try_relu()?;
        self.fc2.try_forward(h)
    }
}

impl<const I: usize, const H: usize, const O: usize, E: Float, D: Device<E>> DendriticModel
    for Mlp<I, H, O, E, D>
{
    type Dtype = E;
    type Device = D;
    fn visit_params<V: ParamVisitor<E, D>>(
        &mut self,
        path: &str,
        v: &mut V,
    ) -> perforated::Result<()> {
        self.fc1.visit_params(&join(path, "fc1"), v)?;
        self.fc2.visit_params(&join(path, "fc2"), v)
    }
    fn visit_layers(&self, path: &str, f: &mut dyn FnMut(&str, &dyn DendriteLayer)) {
        self.fc1.visit_layers(&join(path, "fc1"), f);
        self.fc2.visit_layers(&join(path, "fc2"), f);
    }
    fn visit_layers_mut(
        &mut self,
        path: &str,
        f: &mut dyn FnMut(&str, &mut dyn DendriteLayer) -> perforated::Result<()>,
    ) -> perforated::Result<()> {
        self.fc1.visit_layers_mut(&join(path, "fc1"), f)?;
        self.fc2.visit_layers_mut(&join(path, "fc2"), f)
    }
}

/// Every tensor's values by path, with its role.
pub struct Snapshot<E>(pub Vec<(String, Role, Vec<E>)>);

impl<E: Float, D: Device<E>> ParamVisitor<E, D> for Snapshot<E> {
    fn visit<S: Shape>(
        &mut self,
        p: Param<'_, E, D>,
        t: &mut Tensor<S, E, D>,
    ) -> perforated::Result<()> {
        self.0.push((p.path.to_string(), p.role, t.as_vec()));
        Ok(())
    }
}

pub fn snapshot<M: DendriticModel>(model: &mut M) -> Vec<(String, Role, Vec<M::Dtype>)> {
    let mut s = Snapshot(Vec::new());
    model.visit_params("", &mut s).unwrap();
    s.0
}

/// Correlation settings for short tests: a short warm-up.
pub fn quick_config(learning: DendriteLearning) -> DendriteConfig {
    DendriteConfig {
        learning,
        correlation: CorrelationConfig {
            warmup_batches: 5,
            ..Default::default()
        },
        ..Default::default()
    }
}
