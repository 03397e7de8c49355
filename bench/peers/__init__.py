"""Peers the broker is measured beside (each runs in its own process; see bench/http.py)."""
