"""Prompt -> picture: the engine under every rendering command.

session.py loads models onto a device once each; pipeline.py encodes prompts and samples one
stage; engine.py turns jobs into pictures stage after stage. Imports `files` and below.
"""
