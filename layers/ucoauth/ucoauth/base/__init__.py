"""The base every room stands on: settings, the wiring, deadlines, retries, the domain
errors, logs and metrics.

Import from the submodules: this package imports nothing.
"""
