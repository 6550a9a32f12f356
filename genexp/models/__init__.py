from genexp.models.base import GenexpModel

__all__ = ["GenexpModel"]
