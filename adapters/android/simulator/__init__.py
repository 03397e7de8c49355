"""A faithful simulator of the Google Play EMM notification API (``mdm-broker simulate android``).

See :mod:`adapters.android.simulator.server` for the endpoints and the control API.
"""
