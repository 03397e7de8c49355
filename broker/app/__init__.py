"""The composition root: settings assembled from the core's and each adapter's, the adapter
registry, the ``mdm-broker`` command line and the broker process (``run``). The only package that
names every vendor; nothing in the core imports it.
"""
