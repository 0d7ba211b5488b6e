"""Shared pieces of dmulog: the command line and the generated API."""
