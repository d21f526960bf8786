"""The error the segmentation pipeline raises for input it cannot use (files, labels, models)."""


class SegInputError(ValueError):
    """Input the segmentation pipeline cannot use; the message says which input and why."""
