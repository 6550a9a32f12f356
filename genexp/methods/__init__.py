from genexp.methods.base import Batch, Method, StepOutput

__all__ = ["Batch", "Method", "StepOutput"]
