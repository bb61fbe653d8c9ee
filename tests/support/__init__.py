"""Helpers shared by more than one test directory or file.

Test files import shared code from here (or use a conftest fixture), never from another
test_*.py file or from another directory's private module, so a test file can move or
change without breaking others.
"""
