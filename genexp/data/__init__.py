from genexp.data.dataset import Dataset
from genexp.data.split import Split, make_split

__all__ = ["Dataset", "Split", "make_split"]
