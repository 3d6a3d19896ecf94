"""Drivers: storage (overlay, vfs); network and exec come later."""
