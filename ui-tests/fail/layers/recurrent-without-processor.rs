// A recurrent layer needs a processor so each dendrite keeps its own state.
use perforated::prelude::*;

#[perforated]
struct Model {
    gru: Gru<3, 4>,
}

fn main() {}
