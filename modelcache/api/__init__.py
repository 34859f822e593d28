"""Pydantic models of the contracts (ModelVersion, NodeCache, Manifest); CRDs come from here."""
