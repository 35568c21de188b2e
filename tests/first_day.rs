//! What a newcomer meets first: the run-time summary of what got dendrites and what did not.

use perforated::prelude::*;

#[perforated]
struct Normed {
    fc: Linear<8, 8>,
    #[pai(track)]
    norm: LayerNorm1D<8>,
    head: Linear<8, 2>,
}

#[test]
fn the_summary_lists_converted_layers_and_parameters_left_without_dendrites() {
    let dev: Cpu = Default::default();
    let mut model = Normed::<f32, Cpu>::build(&dev).unwrap();
    model
        .visit_layers_mut("", &mut |_, l| l.grow_dendrites(1))
        .unwrap();
    let summary = model.summary().unwrap();
    assert!(
        summary.contains("fc: 8 neurons, 1 dendrite(s), neuron phase"),
        "{summary}"
    );
    assert!(
        summary.contains("head: 2 neurons, 1 dendrite(s)"),
        "{summary}"
    );
    assert!(
        summary.contains("without dendrites (not converted):\n  norm.gamma: 8\n  norm.beta: 8"),
        "{summary}"
    );
    assert!(summary.contains("16 without dendrites"), "{summary}");
}
