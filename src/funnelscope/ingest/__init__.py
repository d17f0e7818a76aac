"""Parsing of files and SDK wire formats into staging rows, and the pipeline into the store."""
