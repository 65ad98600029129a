//! Prints every Flotilla CRD as a multi-document YAML stream:
//! `cargo run -q -p flotilla-crds --example print_crds | kubectl apply -f -`.

fn main() {
    print!("{}", flotilla_crds::crds_yaml());
}
