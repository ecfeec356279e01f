"""The use cases, one module per flow: install, refresh, token access, uninstall (and a
replaced grant's revoke), the device flow and the admin API.

Import from the submodules: this package imports nothing.
"""
