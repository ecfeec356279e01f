"""A merchant's installation: the record (``model``), its store and lease (``store``), and the
reads that list many at once (``reads``: the planner's due items, the admin API's pages).

Import from the submodules: this package imports nothing, so a function pays only for the
rooms it uses.
"""
