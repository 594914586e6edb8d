"""The pytest layer: settings (options, ini, marker), fixtures, hook specs, and the topology, cluster, keep and pcap
plugins that ``pytest_netns.plugin`` loads through ``pytest_plugins``."""
