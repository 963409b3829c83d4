"""
Shared fixtures for GopherPost's trial tests.
"""
