fn main() {
    std::process::exit(kvmforge::cli::main());
}
