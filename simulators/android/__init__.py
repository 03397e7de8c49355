"""A faithful simulator of the Google Play EMM notification API (``mdm-broker simulate android``).

See :mod:`simulators.android.server` for the endpoints and the control API.
"""
