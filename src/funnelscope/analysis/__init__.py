"""Analyses: each a frozen Spec -> an engine -> a typed Result."""
