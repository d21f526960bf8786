"""The error the pose pipeline raises for input it cannot use (files, boxes, annotations, models)."""


class PoseInputError(ValueError):
    """Input the pose pipeline cannot use; the message says which input and why."""
