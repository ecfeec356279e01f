"""The edges: Powertools' router and batch processor, the HttpApi answers, the error table,
the merchant pages and the input checks.

Import from the submodules: this package imports nothing.
"""
