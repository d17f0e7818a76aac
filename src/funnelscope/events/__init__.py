"""Canonical event model: schema, vocabularies, channels, stages and validation rules."""
