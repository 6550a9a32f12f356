"""Tables and figures of recorded runs: `genexp table` (cells, paired comparisons, published
references, renderers) and `genexp plot`."""
