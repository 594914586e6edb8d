"""Plumbing between namespaces, shared by every model above: veth pairs and readiness, per-namespace hosts files,
impairments (tc / nftables), and the registry of namespaces kept for debugging."""
