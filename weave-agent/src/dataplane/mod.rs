//! The kernel side of the agent: the eBPF programs on the bridge ports.
