"""Ready-made networks over the layers below, usable without pytest.

``simple`` builds the pair behind the ``netns_pair`` fixture, ``cluster`` the Kubernetes network model and
``docker`` Docker's default bridge network.  ``pytest_netns.cluster`` and ``pytest_netns.docker`` re-export the
public names of the last two.
"""
