"""Bluetooth Low Energy: scanning, connection slots, reconnect and the optional bumble backend.

Everything here speaks bleak's public API.  ``gateway.ble.bumble`` (a bleak backend on Google's
bumble stack) is imported only when a configuration selects it: importing bumble is expensive.
"""
