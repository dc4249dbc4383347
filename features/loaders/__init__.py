"""Loaders of real data into the data contract, and generic sources (files, SQL).

Each loader returns a validated `features.store.Store` holding the tables its source provides.
"""
