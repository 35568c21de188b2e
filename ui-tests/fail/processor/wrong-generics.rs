// A processor is generic over exactly its dtype and device.
use perforated::prelude::*;

#[derive(Processor)]
#[processor(main = 0)]
struct Proc;

fn main() {}
