"""The rotation core: one rotation under the lease, what a token write stores, and events in
generation order.

Import from the submodules: this package imports nothing.
"""
