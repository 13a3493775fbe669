"""Stages declared outside selectflow, each in one module: what a user's selector or filter looks like."""
