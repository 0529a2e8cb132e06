"""Finished tables for use elsewhere: export, load, recommend."""
