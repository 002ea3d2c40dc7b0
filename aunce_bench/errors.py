"""Errors caused by the user's input: the CLI prints them as one line and exits non-zero."""


class UserError(Exception):
    """Bad input (file, field, option): the message names it and says how to fix it."""
