"""The kit's error base: anything raised as a KitError is the user's to fix and is shown as one line."""


class KitError(Exception):
    """A problem with the user's input (file, flag, recipe value), reported without a traceback."""
