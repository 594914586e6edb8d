"""Plumbing between namespaces, shared by every model above: veth pairs and readiness, bridges and plugging into
them, sysctls, nftables recipes, per-namespace hosts files, impairments (tc / nftables), and the registry of
namespaces kept for debugging."""
