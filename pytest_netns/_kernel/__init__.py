"""Kernel primitives: namespaces and threads (setns/unshare), netlink (rtnetlink, nftables, tc), AF_PACKET sockets,
processes, the watchdog and the capability probes.

Nothing here knows about ``Namespace`` objects, topologies or pytest.  ``watchdog.py`` and ``packet_closer.py`` are
also run as standalone scripts (``python -I -S <file>``): they import only the standard library at module level.
"""
