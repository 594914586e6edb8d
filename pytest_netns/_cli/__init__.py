"""The ``pytest-netns`` command (``python -m pytest_netns``): ``doctor``, ``list``, ``cleanup``."""
