//! The CNI plugin binary; see `weave_agent::cni`.

fn main() -> std::process::ExitCode {
    weave_agent::cni::main()
}
